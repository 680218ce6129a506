"""Shared by SCL-005 and SCL-032: one client's cover traffic on nyx.cover's virtual-clock simulator.

`nyx.cover.simulate.run_client` drives the real `ClientCover` event by event on a virtual clock
(timer lateness, bursty real traffic and the mix path modelled as nyx.cover documents), so hours
of cover take seconds. For these replays `--duration` is *simulated* seconds and `--scale`
multiplies the scenario's cover load; the configuration mirrors `python -m nyx.cover.simulate`'s
defaults except where the scenario's bench configuration says otherwise.
"""

from __future__ import annotations

from nyx.cover.budget import per_hop_mean_delay
from nyx.cover.client import CoverConfig
from nyx.cover.rate import RatePolicy
from nyx.cover.simulate import NORMAL_BASE_PPS, NORMAL_DROP_PPS, NORMAL_LOOP_PPS, Lateness, MixPath, RealTraffic, Report, run_client


def simulate(
    *, load: float, cover_ratio: float, latency_budget_s: float, adjust_s: float, duration_s: float, seed: int, hops: int = 3
) -> Report:
    policy = RatePolicy(base_pps=NORMAL_BASE_PPS * load, cover_ratio=cover_ratio, tick_s=adjust_s, window_s=max(5.0, adjust_s))
    config = CoverConfig(
        policy=policy,
        loop_pps=NORMAL_LOOP_PPS * load,
        drop_pps=NORMAL_DROP_PPS * load,
        window_s=10.0,
        tolerance=0.1,
        drift_period_s=900.0,
    )
    path = MixPath(per_hop_mean_delay(latency_budget_s, hops), layers=hops)
    return run_client(config, duration_s, seed, RealTraffic(), Lateness(), path)
