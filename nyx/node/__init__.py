"""nyx.node: the runtime every node process shares (config, keys, logging, signals, metrics).

`NodeRuntime` (runtime.py) is what `python -m nyx.mix` and `python -m nyx.stream` build on;
`python -m nyx.node` runs it bare. See docs/transport.md, "Running a node".
"""

from nyx.node.config import ConfigError, NodeConfig, load_config, parse_config, with_overrides
from nyx.node.runtime import EXIT_CONFIG, EXIT_DRAIN_INCOMPLETE, EXIT_INTERRUPTED, EXIT_OK, NodeRuntime

__all__ = [
    "EXIT_CONFIG",
    "EXIT_DRAIN_INCOMPLETE",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "ConfigError",
    "NodeConfig",
    "NodeRuntime",
    "load_config",
    "parse_config",
    "with_overrides",
]
