"""nyx.mix: the Sphinx packet format, per-hop processing, replay cache and delay policy.

The sans-I/O core is `MixCore.process(packet, now) -> Forward | Deliver | Drop`; senders build
packets with `create_packet`, reply blocks with `create_surb` / `create_reply` / `open_reply`.
`MixNode` is the asyncio shell on a `nyx.transport.Transport`; `python -m nyx.mix` runs one.
"""

from nyx.mix.core import DROP_REASONS, Deliver, Drop, Forward, MixCore
from nyx.mix.delay import BatchQueue, DelayQueue, PoissonDelay, mean_delay_for_budget
from nyx.mix.keys import EpochKey, KeyRing
from nyx.mix.node import MixNode
from nyx.mix.packet import (
    CLASSIC_FORMAT,
    DEFAULT_FORMAT,
    KEM_FORMAT,
    Hop,
    MixPacketError,
    PacketFormat,
    Surb,
    SurbKeys,
    create_packet,
    create_reply,
    create_surb,
    open_reply,
)
from nyx.mix.replay import ReplayCache

__all__ = [
    "CLASSIC_FORMAT",
    "DEFAULT_FORMAT",
    "DROP_REASONS",
    "KEM_FORMAT",
    "BatchQueue",
    "DelayQueue",
    "Deliver",
    "Drop",
    "EpochKey",
    "Forward",
    "Hop",
    "KeyRing",
    "MixCore",
    "MixNode",
    "MixPacketError",
    "PacketFormat",
    "PoissonDelay",
    "ReplayCache",
    "Surb",
    "SurbKeys",
    "create_packet",
    "create_reply",
    "create_surb",
    "mean_delay_for_budget",
    "open_reply",
]
