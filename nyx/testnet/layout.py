"""A testnet's layout on disk, made before any node starts: data dirs, keys, configs, directory.

Why everything is made up front: a node started on an empty data dir makes its own keys, so its
directory record is known only once it prints it, and every other node (and every client) must
then learn it from a rewritten directory, one refresh later. Making each node's TLS identity,
Sphinx keys and (for gateways) static handshake keys here, with the very functions the node
calls on start (`load_or_create_identity`, `recover`, `load_or_create_stream_keys`), means the
complete `directory.json` exists before the first process runs: all of them start at once, each
already knows every peer, and the record a node prints can be checked against the one written.

One detail makes that work: a mix (or gateway) that finds keys without a clean-shutdown marker
assumes it was killed and replaces every key already valid (`nyx.mix.restart`). So the keys made
here are followed by the same final save a stopping node makes (`ReplaySaver.save_final`: empty
replay tables, and the marker that vouches for them), and the node's first start is "clean".
"""

from __future__ import annotations

import json
import os
import random
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from nyx.crypto.suites import Suite
from nyx.mix.core import MixCore
from nyx.mix.directory import Directory, NodeRecord
from nyx.mix.keys import KeyRing
from nyx.mix.restart import ReplaySaver, recover
from nyx.node.keys import load_or_create_identity
from nyx.stream.static_keys import load_or_create_stream_keys

__all__ = [
    "DIRECTORY_FILE",
    "DirectoryEndpoint",
    "HOST",
    "NodePlan",
    "Role",
    "SUITES",
    "TestnetOptions",
    "free_tcp_port",
    "free_udp_ports",
    "node_names",
    "prepare_keys",
    "seal_keys",
    "write_config",
    "write_directory",
]

HOST = "127.0.0.1"
DIRECTORY_FILE = "directory.json"
SUITES = (Suite.HYBRID,)

Role = Literal["mix", "gateway"]


@dataclass(frozen=True, slots=True)
class DirectoryEndpoint:
    """A directory service, as `python -m nyx.directory serve` announces itself: its URL and the
    hex Ed25519 key its documents are signed with (what nodes and clients pin), and its
    `--heartbeat-s` (nodes heartbeat three times as often; a node also retries its registration
    that often while the service is not up yet)."""

    url: str
    authority: str
    heartbeat_s: float = 2.0


@dataclass(frozen=True, slots=True)
class TestnetOptions:
    """What a testnet runs, and the node settings it writes into every config.

    The defaults are small on purpose (a laptop with 2 cores runs 3 mixes, 2 gateways and a
    client comfortably): short mix delays (5 ms a hop instead of 50, so a round trip through 3
    layers costs tens of milliseconds, not a second), rare loop cover, replay tables of 2 MB
    per epoch instead of 32, a directory re-read every second, and a client handshake limit
    far above the production 30/min because every local client shares the address 127.0.0.1.
    """

    __test__ = False  # not a pytest test class, despite the name

    layers: int = 3
    mixes_per_layer: int = 1
    gateways: int = 2
    allow: tuple[str, ...] = ()
    allow_private: bool = False
    mean_delay_s: float = 0.005
    loop_rate_pps: float = 0.2
    epoch_s: float = 3600.0
    overlap_s: float = 300.0
    replay_capacity: int = 1 << 18
    directory_refresh_s: float = 1.0
    client_rate_per_min: float = 6000.0
    drain_timeout_s: float = 3.0
    metrics: bool = False
    log_level: str = "INFO"

    def __post_init__(self) -> None:
        if self.layers < 1 or self.mixes_per_layer < 1:
            raise ValueError("a testnet needs at least one layer of at least one mix")
        if self.gateways < 1:
            raise ValueError("a testnet needs at least one gateway (entry and exit)")
        if self.layers > 9 or self.mixes_per_layer > 99 or self.gateways > 99:
            raise ValueError("node ids hold 16 bytes: at most 9 layers, 99 mixes a layer, 99 gateways")


@dataclass(frozen=True, slots=True)
class NodePlan:
    """One node of the testnet: where its files are and the record the directory lists for it."""

    node_id: str
    role: Role
    layer: int  # 0 for gateways
    data_dir: Path
    config_path: Path
    log_path: Path
    record: NodeRecord

    def command(self) -> list[str]:
        """The module arguments that run this node (after `python -m`)."""
        if self.role == "mix":
            return ["nyx.mix", "--config", str(self.config_path)]
        return ["nyx.stream", "gateway", "--config", str(self.config_path)]


def node_names(options: TestnetOptions) -> list[tuple[str, Role, int]]:
    """(node_id, role, layer) of every node: `mix-L-I` by layer, then `gw-N`."""
    names: list[tuple[str, Role, int]] = [
        (f"mix-{layer}-{i}", "mix", layer)
        for layer in range(1, options.layers + 1) for i in range(1, options.mixes_per_layer + 1)
    ]
    names += [(f"gw-{n}", "gateway", 0) for n in range(1, options.gateways + 1)]
    return names


@dataclass(frozen=True, slots=True)
class PreparedKeys:
    """What `prepare_keys` made for one node (the private halves stay in its data dir)."""

    fingerprint: str
    ring: KeyRing
    stream_keys: dict[str, bytes]


def prepare_keys(data_dir: Path, node_id: str, role: Role, options: TestnetOptions, now: float) -> PreparedKeys:
    """Make (or load) the node's keys in `data_dir` exactly as its own start would. Blocking."""
    identity = load_or_create_identity(data_dir, node_id)
    ring = recover(data_dir, options.epoch_s, options.overlap_s, now).ring
    stream_keys: dict[str, bytes] = {}
    if role == "gateway":
        static = load_or_create_stream_keys(data_dir, SUITES)
        stream_keys = {suite.label: key.public_key for suite, key in static.items()}
    return PreparedKeys(identity.fingerprint, ring, stream_keys)


async def seal_keys(data_dir: Path, ring: KeyRing) -> None:
    """Write the final save a cleanly stopped node leaves (empty replay tables and the
    clean-shutdown marker), so that the node's start keeps the keys just made (module doc)."""
    saver = ReplaySaver(MixCore(ring, replay_capacity=1), data_dir, 60.0)
    if not await saver.save_final():
        raise OSError(f"could not write the replay state in {data_dir}")


def free_udp_ports(count: int, host: str = HOST) -> list[int]:
    """`count` distinct UDP ports free on `host` right now. All sockets are held until every
    port is drawn, so no port comes twice; another program may still take one before the node
    binds it (the node then exits 75, and the testnet draws it another)."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sockets.append(s)
            s.bind((host, 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def free_tcp_port(host: str = HOST) -> int:
    """A TCP port free on `host` right now, for a listener whose address must be known before it
    starts (the directory service's URL goes into every config). Drawn below the kernel's
    ephemeral range: outgoing connections take their ports from that range, so on a busy machine
    one could take a port drawn from it before the listener binds; below it only an explicit
    bind can. (Port 0 where the range leaves no room below it.)"""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    rng = random.SystemRandom()
    for _ in range(100):
        port = rng.randrange(10000, low) if low > 11000 else 0
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise OSError(f"no free TCP port on {host}")


def _toml(value: object) -> str:
    """A TOML value for the few kinds a config holds (a JSON string is a TOML basic string)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    raise TypeError(f"no TOML for {value!r}")


def config_text(plan: NodePlan, options: TestnetOptions, directory: Path | DirectoryEndpoint) -> str:
    """The node's TOML config: the runtime's tables, then its kind's table. `directory`: the
    static file the node re-reads, or the directory service it registers with and follows."""
    tables: dict[str, dict[str, object]] = {
        "transport": {"host": HOST, "port": plan.record.port},
        "metrics": {"host": HOST, "port": 0 if options.metrics else -1},
        "log": {"level": options.log_level},
        "runtime": {"drain_timeout_s": options.drain_timeout_s},
    }
    source: dict[str, object] = (
        {"directory_url": directory.url, "directory_authorities": [directory.authority],
         "directory_heartbeat_s": directory.heartbeat_s / 3}
        if isinstance(directory, DirectoryEndpoint) else {"directory": str(directory)}
    )
    common: dict[str, object] = {
        **source,
        "epoch_s": options.epoch_s,
        "overlap_s": options.overlap_s,
        "replay_capacity": options.replay_capacity,
        "directory_refresh_s": options.directory_refresh_s,
    }
    if plan.role == "mix":
        tables["mix"] = {"layer": plan.layer, "mean_delay_s": options.mean_delay_s,
                         "loop_rate_pps": options.loop_rate_pps, **common}
    else:
        tables["gateway"] = {"allow": list(options.allow), "allow_private": options.allow_private,
                             "client_rate_per_min": options.client_rate_per_min, **common}
    lines = [f"# {plan.node_id}: written by nyx.testnet", f"node_id = {_toml(plan.node_id)}",
             f"role = {_toml(plan.role)}", f"data_dir = {_toml(str(plan.data_dir))}"]
    for name, table in tables.items():
        lines += ["", f"[{name}]", *(f"{key} = {_toml(value)}" for key, value in table.items())]
    return "\n".join(lines) + "\n"


def write_config(plan: NodePlan, options: TestnetOptions, directory: Path | DirectoryEndpoint) -> None:
    plan.config_path.write_text(config_text(plan, options, directory))


def write_directory(path: Path, records: Sequence[NodeRecord]) -> None:
    """Replace the directory file atomically: nodes re-read it when its mtime changes, and one
    that read a half-written file would skip that version until the next change."""
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(Directory.of(records).to_json(), indent=2) + "\n")
    os.replace(temporary, path)
