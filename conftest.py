"""Shared test settings: a hypothesis profile that is deterministic and has no deadline.

CI machines are noisy (2 cores, other jobs), so per-example deadlines would only add flakes;
speed is measured in `bench/`, not here.
"""

from hypothesis import HealthCheck, settings

settings.register_profile(
    "nyx",
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("nyx")
