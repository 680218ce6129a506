"""nyx.cover: Loopix-style cover traffic.

Sans-I/O core: `PoissonSchedule` (poisson.py), the client's payload/loop/drop streams
(`ClientSlots`, slots.py), the adaptive slot-rate controller (`RateController`, rate.py), the
latency budget (`per_hop_mean_delay`, budget.py), and the compliance, drift and loop figures
(figures.py), joined for a client by `ClientCover` (client.py). `python -m nyx.cover.simulate`
runs them on a virtual clock.

Shells: `CoverEmitter` (a client's cover on a `Transport`) and `MixLoopEmitter` (a `MixNode`'s
loop cover), with cover packets built as real mix packets by `MixCoverPackets` (packets.py).
Definitions and measured figures: docs/cover.md.
"""

from nyx.cover.budget import LatencyBudget, per_hop_mean_delay
from nyx.cover.client import ClientCover, CoverConfig
from nyx.cover.emitter import CoverEmitter, EmitterStoppedError, MixLoopEmitter
from nyx.cover.figures import ComplianceMeter, DriftMeter, LoopTracker, poisson_central_interval
from nyx.cover.packets import CoverPacket, MixCoverPackets, PacketFactory
from nyx.cover.poisson import PoissonSchedule
from nyx.cover.rate import RateController, RatePolicy
from nyx.cover.slots import ClientSlots, Kind, Send

__all__ = [
    "ClientCover",
    "ClientSlots",
    "ComplianceMeter",
    "CoverConfig",
    "CoverEmitter",
    "CoverPacket",
    "DriftMeter",
    "EmitterStoppedError",
    "Kind",
    "LatencyBudget",
    "LoopTracker",
    "MixCoverPackets",
    "MixLoopEmitter",
    "PacketFactory",
    "PoissonSchedule",
    "RateController",
    "RatePolicy",
    "Send",
    "per_hop_mean_delay",
    "poisson_central_interval",
]
