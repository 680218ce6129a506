"""nyx.telemetry: metric names (catalogue.py), cheap recorders (window.py), the registry that
publishes plain counters to prometheus about once a second (registry.py), and the /metrics and
/healthz endpoint (http.py). Any layer may import it; it imports no other nyx layer.
"""

from nyx.telemetry.catalogue import BY_NAME, CATALOGUE, MetricSpec
from nyx.telemetry.http import MetricsServer
from nyx.telemetry.registry import MetricRegistry, UnknownMetricError
from nyx.telemetry.window import SampleWindow

__all__ = ["BY_NAME", "CATALOGUE", "MetricRegistry", "MetricSpec", "MetricsServer", "SampleWindow", "UnknownMetricError"]
