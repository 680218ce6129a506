"""The replays: one module per SCL scenario, each built from the real layer classes.

Each module defines

    DEFAULT_DURATION_S: float            # a full run
    QUICK: tuple[float, float]           # (duration_s, scale) for `run --quick`
    async def replay(options: RunOptions) -> Measurement

and returns its main metric in the unit of the scenario's SLO. `REPLAYS` is the registry; the
catalogue's `status = "replayed"` must name exactly these (a test checks).
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Literal

from nyx.bench.report import Measurement

TransportKind = Literal["sim", "quic"]

#: scenario id -> module in this package
REPLAYS: dict[str, str] = {
    "SCL-001": "scl_001",
    "SCL-002": "scl_002",
    "SCL-003": "scl_003",
    "SCL-004": "scl_004",
    "SCL-005": "scl_005",
    "SCL-006": "scl_006",
    "SCL-011": "scl_011",
    "SCL-012": "scl_012",
    "SCL-013": "scl_013",
    "SCL-014": "scl_014",
    "SCL-016": "scl_016",
    "SCL-025": "scl_025",
    "SCL-030": "scl_030",
    "SCL-032": "scl_032",
    "SCL-035": "scl_035",
    "SCL-036": "scl_036",
    "SCL-037": "scl_037",
    "SCL-038": "scl_038",
    "SCL-039": "scl_039",
    "SCL-044": "scl_044",
    "SCL-045": "scl_045",
    "SCL-046": "scl_046",
    "SCL-050": "scl_050",
}


@dataclass(frozen=True, slots=True)
class RunOptions:
    """How to run one replay. `scale` multiplies the load model's rate; `tick(elapsed_s)` reports
    progress; `transport` picks the network for replays that carry packets."""

    duration_s: float
    scale: float = 1.0
    transport: TransportKind = "sim"
    tick: Callable[[float], None] | None = None
    seed: int = 1
    gateways: int | None = None  # SCL-003: gateway processes to spread the load over (None: its default)


Replay = Callable[[RunOptions], Awaitable[Measurement]]


def module(scenario_id: str) -> ModuleType:
    """The replay module of `scenario_id` (imported on demand: each pulls in its layers)."""
    try:
        name = REPLAYS[scenario_id]
    except KeyError:
        raise KeyError(f"{scenario_id} has no replay") from None
    return importlib.import_module(f"nyx.bench.scenarios.{name}")
