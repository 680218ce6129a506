"""`SimTestnet`: the testnet's node classes in this one process, over `SimTransport`.

Real processes cost an interpreter each (about 40 MB and a second of start-up); forty nodes on a
laptop are then a minute of waiting and most of its memory. The simulated testnet runs the very
classes the node programs run (`MixNode` around `MixCore` with a `KeyRing`, and
`nyx.stream.gateway.build_gateway` with `ExitServices`) on one `SimNetwork`, so forty nodes start
in well under a second and a `nyx.Client` crosses them with the real handshake, real Sphinx
packets and SURB replies. What it leaves out is everything between a node and the wire: QUIC,
the node runtime (configs, key files, signals), and separate processes. That is what `Testnet`
is for.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
import time
from collections.abc import Coroutine, Sequence
from types import TracebackType
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from nyx.mix.core import MixCore
from nyx.mix.delay import PoissonDelay
from nyx.mix.directory import Directory, NodeRecord
from nyx.mix.keys import KeyRing
from nyx.mix.node import MixNode
from nyx.stream.client import Client
from nyx.stream.gateway import Gateway, build_gateway
from nyx.stream.handshake import Responder
from nyx.stream.services import Allowlist, ExitServices, ServiceRegistry
from nyx.testnet.layout import SUITES, TestnetOptions, node_names
from nyx.testnet.probe import EchoResult, echo_once, echo_with_retries
from nyx.transport import LinkProfile, SimNetwork

__all__ = ["SimTestnet"]

log = logging.getLogger(__name__)

# Tags a node's one epoch holds (8 bytes each, allocated on a node's first packet): 1 MB a node.
# A full table drops every packet, and keys never rotate here, so this bounds what one simulated
# testnet carries: about 130,000 packets through each mix, some 30 MiB of echoes without cover.
SIM_REPLAY_CAPACITY = 1 << 17
DEFAULT_LINK = LinkProfile(latency_s=0.002, jitter_s=0.001)


class SimTestnet:
    """Mixes and gateways as tasks of this process on one `SimNetwork` (module docstring).

    Keys never rotate (`KeyRing.single`, epoch 0): a simulated testnet lives minutes, not hours.
    The node ids are those of `Testnet` (`mix-L-I`, `gw-N`).
    """

    def __init__(
        self,
        layers: int = 3,
        mixes_per_layer: int = 1,
        gateways: int = 2,
        allow: Sequence[str] = (),
        *,
        mean_delay_s: float = 0.001,
        link: LinkProfile = DEFAULT_LINK,
        seed: int = 1,
        replay_capacity: int = SIM_REPLAY_CAPACITY,
    ) -> None:
        self.options = TestnetOptions(layers=layers, mixes_per_layer=mixes_per_layer, gateways=gateways,
                                      allow=tuple(allow), mean_delay_s=mean_delay_s)
        self.link = link
        self.seed = seed
        self.replay_capacity = replay_capacity
        self.network: SimNetwork | None = None
        self.directory = Directory({})
        self.mixes: dict[str, MixNode] = {}
        self.gateways: dict[str, Gateway] = {}
        self.startup_s = 0.0
        self._tasks: list[asyncio.Task[None]] = []
        self.crashed: list[str] = []

    async def __aenter__(self) -> SimTestnet:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()

    @property
    def gateway_ids(self) -> list[str]:
        return list(self.gateways)

    async def start(self) -> None:
        """Keys, the directory, then every node listening and running (as tasks this owns)."""
        started = time.perf_counter()
        names = node_names(self.options)
        sphinx = {node_id: X25519PrivateKey.generate() for node_id, _, _ in names}
        static = {node_id: {suite: suite.kem().generate() for suite in SUITES}
                  for node_id, role, _ in names if role == "gateway"}
        self.directory = Directory.of(
            NodeRecord(node_id, role, layer, "sim", 0, None, {0: sphinx[node_id].public_key().public_bytes_raw()},
                       stream_keys={suite.label: pair[1] for suite, pair in static.get(node_id, {}).items()})
            for node_id, role, layer in names
        )
        self.network = network = SimNetwork(self.link, seed=self.seed)
        try:
            for node_id, role, _ in names:
                transport = network.transport(node_id)
                await transport.listen()
                ring = KeyRing.single(sphinx[node_id])
                if role == "mix":
                    delay = PoissonDelay(self.options.mean_delay_s, random.Random(f"{self.seed}/{node_id}"))
                    node = self.mixes[node_id] = MixNode(MixCore(ring, delay=delay, replay_capacity=self.replay_capacity),
                                                         transport)
                    self._own(node_id, node.run())
                else:
                    services = ExitServices(ServiceRegistry(), Allowlist(self.options.allow))
                    responder = Responder({suite: pair[0] for suite, pair in static[node_id].items()})
                    gateway = self.gateways[node_id] = build_gateway(
                        node_id, transport, ring, responder, services.serve, self._is_node,
                        replay_capacity=self.replay_capacity)
                    self._own(node_id, gateway.run())
        except BaseException:
            await self.stop()
            raise
        self.startup_s = time.perf_counter() - started

    def _is_node(self, peer: str) -> bool:
        return peer in self.directory.nodes

    def _own(self, node_id: str, run: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(run, name=f"sim {node_id}")
        self._tasks.append(task)

        def ended(t: asyncio.Task[None]) -> None:
            if not t.cancelled() and t.exception() is not None:
                self.crashed.append(node_id)
                log.error("sim node %s failed", node_id, exc_info=t.exception())

        task.add_done_callback(ended)

    def client(self, gateway: str, exit: str, **options: Any) -> Client:
        """A `nyx.Client` attached to the simulated network (its own `SimTransport`)."""
        return Client(self.directory, gateway=gateway, exit=exit, **self._client_options(), **options)

    def _client_options(self) -> dict[str, Any]:
        assert self.network is not None, "start the testnet first"
        client_id = "c" + secrets.token_hex(8)[:15]  # 16 bytes: a node id on the wire
        return {"client_id": client_id, "transport": self.network.transport(client_id)}

    async def check(self, clients: int = 4, size: int = 20_000, timeout_s: float = 30.0, attempts: int = 2,
                    **client_options: Any) -> list[EchoResult]:
        """`clients` clients at once, each on a random entry/exit pair (distinct when there are
        two gateways or more), each echoing `size` bytes: the simulated network's self-check."""
        rng = random.Random(self.seed)
        gateways = self.gateway_ids
        pairs = [tuple(rng.sample(gateways, 2)) if len(gateways) > 1 else (gateways[0], gateways[0])
                 for _ in range(clients)]
        client_options = {"cover": None, **client_options}
        async with asyncio.TaskGroup() as tg:
            checks = [
                tg.create_task(echo_with_retries(
                    lambda entry=entry, exit=exit: echo_once(self.directory, entry, exit, size, timeout_s,
                                                             **self._client_options(), **client_options),
                    attempts))
                for entry, exit in pairs
            ]
        return [check.result() for check in checks]

    async def stop(self) -> None:
        """Cancel every node task, wait for them, close the network. Idempotent."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self.network is not None:
            await self.network.close()
            self.network = None
