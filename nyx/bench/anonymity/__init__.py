"""Measured anonymity: what a global passive adversary learns from a running Nyx mixnet.

The network is real (`MixNode`s with Sphinx packets and Poisson delays, clients with a real
`CoverEmitter`, over `SimTransport` on a virtual clock: `simulation.py`); the adversary sees
every link's packets and times through `SimNetwork.add_tap` (`observer.py`) and knows the public
parameters. The analyses are plain functions over what it saw:

- `entropy.py`: sender entropy by the Loopix method (a mix's pool is the candidate set);
- `correlation.py`: a timing-correlation attack ranking senders by how well their send times
  explain each delivery;
- `measure.py`: one point (run, then analyse); `sweep.py`: the latency/bandwidth trade-off
  as a table, JSON and a plot (`python -m nyx.bench anonymity`).

    from nyx.bench.anonymity import MixnetSettings, measure
    result = measure(MixnetSettings(clients=10, mean_delay_s=0.05, cover_pps=4.0))
    result.sender_entropy.mean, result.ceiling_bits, result.attack.top1

Method, figures and what the model leaves out: docs/anonymity.md.
"""

from nyx.bench.anonymity.correlation import AttackResult, DelayModel, rank_senders, score_attack
from nyx.bench.anonymity.entropy import (
    PoolStep, Summary, entropy_bits, output_distribution, pool_timeline, sender_distributions,
)
from nyx.bench.anonymity.measure import AnonymityResult, analyse, measure, steady_window
from nyx.bench.anonymity.observer import LinkEvent, LinkObserver, Topology
from nyx.bench.anonymity.simulation import Delivery, MixnetSettings, Observation, simulate
from nyx.bench.anonymity.sweep import (
    BASELINE, FULL, QUICK, SweepPlan, SweepRow, format_table, run_sweep, write_json, write_plot,
)
from nyx.bench.anonymity.virtual_time import VirtualClockError, VirtualClockLoop, run_virtual

__all__ = [
    "BASELINE",
    "FULL",
    "QUICK",
    "AnonymityResult",
    "AttackResult",
    "DelayModel",
    "Delivery",
    "LinkEvent",
    "LinkObserver",
    "MixnetSettings",
    "Observation",
    "PoolStep",
    "Summary",
    "SweepPlan",
    "SweepRow",
    "Topology",
    "VirtualClockError",
    "VirtualClockLoop",
    "analyse",
    "entropy_bits",
    "format_table",
    "measure",
    "output_distribution",
    "pool_timeline",
    "rank_senders",
    "run_sweep",
    "run_virtual",
    "score_attack",
    "sender_distributions",
    "simulate",
    "steady_window",
    "write_json",
    "write_plot",
]
