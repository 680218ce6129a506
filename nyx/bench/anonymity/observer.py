"""The global passive adversary's view: every link's packets with their times, and the public
parameters of the network.

What it sees is exactly what `SimNetwork.add_tap` shows: for each packet, the link (sender,
receiver) and when it left and arrived. Every Sphinx packet has the same size and its bytes
change at every hop, so the size and the bytes tell it nothing and are not recorded. It sees
nothing inside a node: not which input a mix sent out, not whether a client's packet is real or
cover. It knows the public parameters (`Topology`): who is a client, which mixes form which
layer, the providers and recipients, and the per-hop mean delay.
"""

from __future__ import annotations

from dataclasses import dataclass

from nyx.transport.sim import SimNetwork, Transmission
from nyx.transport.simnet import Fate


@dataclass(frozen=True, slots=True)
class LinkEvent:
    """One packet the adversary saw cross a link: it left `src` at `sent_at` and reached `dst`
    at `arrives_at`."""

    src: str
    dst: str
    sent_at: float
    arrives_at: float


@dataclass(frozen=True, slots=True)
class Topology:
    """The public parameters the adversary knows: node roles, the layers in path order, and the
    mixes' exponential delay mean (`mean_delay_s`, the same at every mix)."""

    clients: tuple[str, ...]
    layers: tuple[tuple[str, ...], ...]
    providers: tuple[str, ...]
    recipients: tuple[str, ...]
    mean_delay_s: float

    def mixes(self) -> frozenset[str]:
        return frozenset(mix for layer in self.layers for mix in layer)


class LinkObserver:
    """Records every delivered packet on a `SimNetwork` as a `LinkEvent`, in send order.

    A lost packet (the sim's `loss`) was on the wire but never arrives; this observer records only
    packets that arrive, which is what an adversary matching a mix's inputs to its outputs uses.
    """

    def __init__(self) -> None:
        self.events: list[LinkEvent] = []
        self._network: SimNetwork | None = None

    def attach(self, network: SimNetwork) -> None:
        network.add_tap(self._see)
        self._network = network

    def detach(self) -> None:
        if self._network is not None:
            self._network.remove_tap(self._see)
            self._network = None

    def _see(self, sent: Transmission) -> None:
        if sent.fate is Fate.DELIVER:
            self.events.append(LinkEvent(sent.src, sent.dst, sent.sent_at, sent.arrives_at))
