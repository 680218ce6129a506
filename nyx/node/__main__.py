"""`python -m nyx.node --config node.toml [overrides]`: run a bare node.

The bare node is the shared runtime with no service: it holds its identity, listens for QUIC
links, counts what it receives and serves /metrics and /healthz. Mix and gateway nodes run the
same runtime with their service (`python -m nyx.mix`, `python -m nyx.stream`).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from nyx.node.config import ConfigError, NodeConfig, load_config, parse_config, with_overrides
from nyx.node.logs import configure_logging
from nyx.node.runtime import EXIT_CONFIG, EXIT_SOFTWARE, NodeRuntime, Service
from nyx.transport.certs import CertificateError

log = logging.getLogger("nyx.node")


def argument_parser(prog: str = "python -m nyx.node") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Run a Nyx node.")
    parser.add_argument("--config", type=Path, help="TOML configuration file")
    parser.add_argument("--node-id", help="overrides node_id")
    parser.add_argument("--data-dir", help="overrides data_dir (where keys live)")
    parser.add_argument("--host", help="overrides transport.host")
    parser.add_argument("--port", type=int, help="overrides transport.port (0 = any)")
    parser.add_argument("--backend", choices=("aioquic", "qh3"), help="overrides transport.backend")
    parser.add_argument("--metrics-host", help="overrides metrics.host")
    parser.add_argument("--metrics-port", type=int, help="overrides metrics.port (0 = any, -1 = off)")
    parser.add_argument("--log-format", choices=("plain", "json"), help="overrides log.format")
    parser.add_argument("--log-level", help="overrides log.level")
    parser.add_argument("--drain-timeout", type=float, dest="drain_timeout_s", help="overrides runtime.drain_timeout_s")
    parser.add_argument("--no-uvloop", action="store_false", dest="uvloop", default=None, help="use the asyncio loop")
    return parser


def resolve_config(args: argparse.Namespace) -> NodeConfig:
    if args.config is not None:
        config = load_config(args.config)
    elif args.node_id:
        config = parse_config({"node_id": args.node_id})
    else:
        raise ConfigError("give --config FILE or at least --node-id")
    return with_overrides(
        config,
        node_id=args.node_id,
        data_dir=args.data_dir,
        host=args.host,
        port=args.port,
        backend=args.backend,
        metrics_host=args.metrics_host,
        metrics_port=args.metrics_port,
        log_format=args.log_format,
        log_level=args.log_level,
        drain_timeout_s=args.drain_timeout_s,
        uvloop=args.uvloop,
    )


def run_node(argv: Sequence[str] | None = None, service: Service | None = None, prog: str = "python -m nyx.node") -> int:
    """Parse arguments, set up logging, run the node on uvloop when available; return exit code."""
    args = argument_parser(prog).parse_args(argv)
    try:
        config = resolve_config(args)
    except ConfigError as exc:
        print(f"{prog}: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    configure_logging(config.node_id, config.log_format, config.log_level)
    try:
        runtime = NodeRuntime(config)
    except (CertificateError, ConfigError, ValueError) as exc:
        log.error("cannot start: %s", exc)
        return EXIT_CONFIG
    return run_runtime(runtime, service)


def run_runtime(runtime: NodeRuntime, service: Service | None, what: str = "node") -> int:
    """Run `runtime` with `service` to its exit code, on uvloop when configured and installed."""
    loop_factory = None
    if runtime.config.uvloop:
        try:
            import uvloop
        except ImportError:
            log.info("uvloop not installed; using the asyncio event loop")
        else:
            loop_factory = uvloop.new_event_loop
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            return runner.run(runtime.run(service))
    except Exception:
        log.exception("%s failed", what)
        return EXIT_SOFTWARE


if __name__ == "__main__":
    sys.exit(run_node())
