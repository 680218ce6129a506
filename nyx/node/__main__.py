"""`python -m nyx.node --config node.toml [overrides]`: run a bare node.

The bare node is the shared runtime with no service: it holds its identity, listens for QUIC
links, counts what it receives and serves /metrics and /healthz. Mix and gateway nodes run the
same runtime with their service (`python -m nyx.mix`, `python -m nyx.stream`).

Exit codes (beside the runtime's: 0 ok, 3 drain incomplete, 70 a bug, 78 bad configuration,
130 interrupted): 75 (EXIT_CANNOT_LISTEN, sysexits EX_TEMPFAIL) when the transport's UDP port or
the metrics TCP port is already in use or needs privileges: the configuration is valid, the
machine is not ready for it, and a supervisor may retry. A host that is not an address of this
machine is a configuration error (78). Each is one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import sys
from collections.abc import Collection, Sequence
from pathlib import Path

from nyx.node.config import (
    BACKEND_CHOICES,
    ConfigError,
    NodeConfig,
    load_config,
    parse_config,
    resolve_auto,
    resolve_uvloop,
    with_overrides,
)
from nyx.node.logs import configure_logging
from nyx.node.runtime import EXIT_CONFIG, EXIT_SOFTWARE, NodeRuntime, Service
from nyx.transport.certs import CertificateError

log = logging.getLogger("nyx.node")

EXIT_CANNOT_LISTEN = 75  # sysexits EX_TEMPFAIL: a port is taken (or privileged); retry later
_LISTEN_ERRNOS = {errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL}
_LOOPS: dict[str, bool | str] = {"auto": "auto", "asyncio": False, "uvloop": True}


def _loop(text: str) -> bool | str:
    """`--loop` to a `runtime.uvloop` value."""
    try:
        return _LOOPS[text]
    except KeyError:
        raise argparse.ArgumentTypeError(f"choose auto, asyncio or uvloop, not {text!r}") from None


def argument_parser(prog: str = "python -m nyx.node") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Run a Nyx node.")
    parser.add_argument("--config", type=Path, help="TOML configuration file")
    parser.add_argument("--node-id", help="overrides node_id")
    parser.add_argument("--data-dir", help="overrides data_dir (where keys live)")
    parser.add_argument("--host", help="overrides transport.host")
    parser.add_argument("--port", type=int, help="overrides transport.port (0 = any)")
    parser.add_argument("--backend", choices=BACKEND_CHOICES,
                        help="overrides transport.backend (auto: qh3 when installed, else aioquic)")
    parser.add_argument("--metrics-host", help="overrides metrics.host")
    parser.add_argument("--metrics-port", type=int, help="overrides metrics.port (0 = any, -1 = off)")
    parser.add_argument("--log-format", choices=("plain", "json"), help="overrides log.format")
    parser.add_argument("--log-level", help="overrides log.level")
    parser.add_argument("--drain-timeout", type=float, dest="drain_timeout_s", help="overrides runtime.drain_timeout_s")
    parser.add_argument("--loop", dest="uvloop", type=_loop, default=None, metavar="{auto,asyncio,uvloop}",
                        help="overrides runtime.uvloop (auto: uvloop when installed)")
    parser.add_argument("--no-uvloop", action="store_false", dest="uvloop", help="use the asyncio loop (--loop asyncio)")
    return parser


def resolve_config(args: argparse.Namespace, tables: Collection[str] = ()) -> NodeConfig:
    """The config file (or a bare `--node-id`) with the command line on top; `tables` names the
    node kind's own TOML tables (e.g. "mix"), every other unknown key is refused."""
    if args.config is not None:
        config = load_config(args.config, tables)
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
        config = resolve_auto(resolve_config(args))
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
    """Run `runtime` with `service` to its exit code, on uvloop when configured (`runtime.uvloop`
    true, or "auto" and installed)."""
    loop_factory = None
    try:
        use_uvloop = resolve_uvloop(runtime.config.uvloop)
    except ConfigError as exc:
        log.error("cannot start: %s", exc)
        return EXIT_CONFIG
    if use_uvloop:
        import uvloop

        loop_factory = uvloop.new_event_loop
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            return runner.run(runtime.run(service))
    except Exception as exc:
        failure = listen_failure(exc)
        if failure is None:
            log.exception("%s failed", what)
            return EXIT_SOFTWARE
        message, code = describe_listen_failure(runtime, failure)
        log.error("cannot start: %s", message)
        return code


def listen_failure(exc: BaseException) -> OSError | None:
    """The socket error that stopped a listen, found in `exc`, in the exception groups a
    TaskGroup wraps it in, or as the cause of uvloop's errno-less "could not bind to local_addr";
    None for anything else. A bind error carries no file name, which tells it apart from a file
    the service could not open (also EACCES)."""
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = listen_failure(inner)
            if found is not None:
                return found
        return None
    if isinstance(exc, OSError):
        if exc.errno in _LISTEN_ERRNOS and exc.filename is None:
            return exc
        if exc.errno is None and exc.__cause__ is not None:
            return listen_failure(exc.__cause__)
    return None


def describe_listen_failure(runtime: NodeRuntime, exc: OSError) -> tuple[str, int]:
    """(one-line message, exit code) for a failed listen. The runtime listens on its transport
    first and sets `runtime.address` once that worked, so a failure after it is the metrics port."""
    config = runtime.config
    if runtime.address is None:
        where, host, port, keys = "udp", config.host, config.port, ("transport.host", "transport.port")
    else:
        where, host, port, keys = "tcp", config.metrics_host, config.metrics_port, ("metrics.host", "metrics.port")
    socket = f"{where} {host}:{port} ({keys[1]})"
    if exc.errno == errno.EADDRINUSE:
        return f"{socket} is already in use by another process; stop it or choose another port (0 = any)", EXIT_CANNOT_LISTEN
    if exc.errno == errno.EACCES:
        return f"{socket}: permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE)", EXIT_CANNOT_LISTEN
    return f"{where} {host}:{port} ({keys[0]}): {host!r} is not an address of this machine", EXIT_CONFIG


if __name__ == "__main__":
    sys.exit(run_node())
