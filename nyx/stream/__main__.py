"""`python -m nyx.stream gateway | client`: run a gateway node, or a client with a SOCKS5 front.

    python -m nyx.stream gateway                 # embedded default: gw-1, echo and discard, no TCP
    python -m nyx.stream gateway --config gw.toml --directory directory.json --allow 'example.org:443'
    python -m nyx.stream client --directory directory.json --socks5 127.0.0.1:1080
    curl --socks5-hostname 127.0.0.1:1080 http://example.org/

**gateway**: the node runtime (`nyx.node`: TOML config, TLS identity, metrics, SIGTERM drain)
around `nyx.stream.gateway.Gateway`. Like `python -m nyx.mix` it prints its directory record as
one JSON line on stdout once it listens (role "gateway", its Sphinx keys and its static
handshake keys by suite), and again when its Sphinx keys rotate. Its `[gateway]` table:

    [gateway]
    directory = "directory.json"   # every node in it becomes a peer; re-read when it changes
    allow = ["example.org:443", "*.example.net:80-90", "127.0.0.1:8080"]   # TCP targets (default none)
    allow_private = false          # may allowed names resolve to loopback/private addresses?
    suites = ["hybrid"]            # handshake suites served: hybrid, pq, pq-alt, classic
    client_rate_per_min = 30.0     # new client handshakes per source address (SCL-002's seed)
    max_clients = 100000
    max_sessions = 100000
    mean_delay_s = 0.0             # the entry hop's Poisson delay (the mixes delay)
    epoch_s = 3600                 # Sphinx key epochs, as for mixes
    overlap_s = 300
    max_rate_pps = 1000            # sizes the replay table, as for mixes
    # replay_capacity = ...
    replay_save_s = 60.0
    directory_refresh_s = 5.0
    region = "eu"                  # published in the record
    weight = 1.0

Instead of `directory`, the directory service, as for mixes (`nyx.mix.registration`): the gateway
registers its record (with its stream keys) there, heartbeats, takes its peers from each
verified document and posts a drain on SIGTERM. A directory that is down is retried, not fatal.

    directory_url = "http://127.0.0.1:43250"   # or a list: authorities and mirrors
    directory_authorities = ["<64 hex digits>"]  # the keys that sign documents (required)
    directory_threshold = 1
    directory_heartbeat_s = 3.3                  # at most the service's --heartbeat-s

Flags: `--directory-url URL` and `--authority HEX` (repeatable), `--threshold K`.

**client**: `nyx.Client` on the directory, and `serve_socks5` in front of it: every CONNECT
becomes a stream to `host:port` through the mixnet, resolved and checked against the allowlist
at the exit. It prints one JSON line once the front listens (`{"socks5": "127.0.0.1:1080", ...}`)
and runs until SIGINT or SIGTERM. The directory is a file (`--directory`) or, instead, the
directory service: `--directory-url URL` (repeatable: authorities and mirrors) with `--authority
HEX` (repeatable, required) and `--threshold K`; the client starts on the verified document and
adopts each newer one (`Client.from_directory_service`).

    python -m nyx.stream client --directory-url http://127.0.0.1:43250 --authority <hex> --socks5 127.0.0.1:1080

This module is a program: it composes the stream layer with the node runtime.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nyx.cover.client import CoverConfig
from nyx.cover.rate import RatePolicy
from nyx.crypto.suites import Suite
from nyx.directory.agent import DirectoryClient
from nyx.mix.directory import Directory, DirectoryError, NodeRecord, watch_directory
from nyx.mix.keystore import KeyStoreError, read_keyring, save_keyring
from nyx.mix.registration import LINK_KEYS, DirectoryLink, LinkSettings, add_link_arguments, link_settings, with_link_flags
from nyx.mix.restart import ReplaySaver, recover
from nyx.node.__main__ import argument_parser, resolve_config, run_runtime
from nyx.node.config import ConfigError, NodeConfig, check_keys, parse_config, resolve_auto, with_overrides
from nyx.node.logs import configure_logging
from nyx.node.runtime import EXIT_CONFIG, EXIT_INTERRUPTED, EXIT_OK, NodeRuntime, Service
from nyx.stream.client import Client, ClientError
from nyx.stream.client_admission import ClientAdmission
from nyx.stream.gateway import Gateway, build_gateway
from nyx.stream.handshake import Responder
from nyx.stream.services import Allowlist, ExitServices, ServiceRegistry
from nyx.stream.socks import ConnectRequest, serve_socks5
from nyx.stream.static_keys import StaticKeyError, load_or_create_stream_keys
from nyx.stream.target import Target
from nyx.transport.certs import CertificateError

log = logging.getLogger("nyx.stream")

PROG = "python -m nyx.stream"
DEFAULT_PORT = 43400

GATEWAY_KEYS = frozenset({
    "directory", "allow", "allow_private", "suites", "client_rate_per_min", "max_clients", "max_sessions",
    "mean_delay_s", "epoch_s", "overlap_s", "max_rate_pps", "replay_capacity", "replay_save_s",
    "directory_refresh_s", "region", "weight",
}) | LINK_KEYS
"""Every key of the `[gateway]` table; any other is refused (a typo would silently keep a default)."""


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    """The `[gateway]` table, validated."""

    directory: Path | None = None
    allow: tuple[str, ...] = ()
    allow_private: bool = False
    suites: tuple[Suite, ...] = (Suite.HYBRID,)
    client_rate_per_min: float = 30.0
    max_clients: int = 100_000
    max_sessions: int = 100_000
    mean_delay_s: float = 0.0
    epoch_s: float = 3600.0
    overlap_s: float = 300.0
    replay_capacity: int = 1 << 20
    replay_save_s: float = 60.0
    directory_refresh_s: float = 5.0
    region: str | None = None
    weight: float = 1.0
    service: LinkSettings | None = None  # the directory service, when directory_url is given


def _number(table: dict[str, Any], key: str, kind: type, default: Any) -> Any:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else kind):
        raise ConfigError(f"gateway.{key}: expected {kind.__name__}, got {value!r}")
    return kind(value)


def gateway_settings(config: NodeConfig, args: argparse.Namespace) -> GatewaySettings:
    table = dict(config.extra.get("gateway", {}))
    check_keys(table, GATEWAY_KEYS, "gateway.")
    if args.directory is not None:
        table["directory"] = args.directory
    if args.allow:
        table["allow"] = list(table.get("allow", [])) + list(args.allow)
    if args.allow_private:
        table["allow_private"] = True
    if args.suites is not None:
        table["suites"] = [s.strip() for s in args.suites.split(",") if s.strip()]
    if args.client_rate is not None:
        table["client_rate_per_min"] = args.client_rate
    table = with_link_flags(table, args)
    allow = table.get("allow", [])
    if not isinstance(allow, list) or not all(isinstance(p, str) for p in allow):
        raise ConfigError("gateway.allow: expected a list of \"host:port\" patterns")
    try:
        Allowlist(allow)
    except ValueError as exc:
        raise ConfigError(f"gateway.allow: {exc}") from exc
    labels = table.get("suites", ["hybrid"])
    if not isinstance(labels, list) or not labels:
        raise ConfigError("gateway.suites: expected a non-empty list of suite names")
    try:
        suites = tuple(Suite.from_label(label) for label in labels)
    except ValueError as exc:
        raise ConfigError(f"gateway.suites: {exc}") from exc
    directory = table.get("directory")
    if directory is not None and not isinstance(directory, str):
        raise ConfigError(f"gateway.directory: expected a file name, got {directory!r}")
    region = table.get("region")
    if region is not None and not isinstance(region, str):
        raise ConfigError(f"gateway.region: expected str, got {region!r}")
    allow_private = table.get("allow_private", False)
    if not isinstance(allow_private, bool):
        raise ConfigError(f"gateway.allow_private: expected true or false, got {allow_private!r}")
    epoch_s = _number(table, "epoch_s", float, 3600.0)
    overlap_s = _number(table, "overlap_s", float, 300.0)
    rate = _number(table, "max_rate_pps", float, 1000.0)
    capacity = table.get("replay_capacity")
    settings = GatewaySettings(
        directory=Path(directory) if directory else None,
        allow=tuple(allow),
        allow_private=allow_private,
        suites=suites,
        client_rate_per_min=_number(table, "client_rate_per_min", float, 30.0),
        max_clients=_number(table, "max_clients", int, 100_000),
        max_sessions=_number(table, "max_sessions", int, 100_000),
        mean_delay_s=_number(table, "mean_delay_s", float, 0.0),
        epoch_s=epoch_s,
        overlap_s=overlap_s,
        replay_capacity=_number(table, "replay_capacity", int, 0) if capacity is not None
        else max(1, int(rate * (epoch_s + 2 * overlap_s))),
        replay_save_s=_number(table, "replay_save_s", float, 60.0),
        directory_refresh_s=_number(table, "directory_refresh_s", float, 5.0),
        region=region,
        weight=_number(table, "weight", float, 1.0),
        service=link_settings(table, "gateway", _number(table, "directory_refresh_s", float, 5.0)),
    )
    for name, value in (("client_rate_per_min", settings.client_rate_per_min), ("max_clients", settings.max_clients),
                        ("max_sessions", settings.max_sessions), ("replay_capacity", settings.replay_capacity),
                        ("replay_save_s", settings.replay_save_s), ("directory_refresh_s", settings.directory_refresh_s),
                        ("weight", settings.weight), ("max_rate_pps", rate)):
        if not value > 0:
            raise ConfigError(f"gateway.{name}: > 0, got {value}")
    if settings.mean_delay_s < 0:
        raise ConfigError(f"gateway.mean_delay_s: >= 0, got {settings.mean_delay_s}")
    if not 0 <= settings.overlap_s < settings.epoch_s:
        raise ConfigError("gateway: 0 <= overlap_s < epoch_s")
    return settings


def record_of(runtime: NodeRuntime, settings: GatewaySettings, gateway: Gateway, responder_keys: dict[str, bytes]) -> NodeRecord:
    address = runtime.address
    if address is None:
        raise RuntimeError("the gateway's record is published only once its transport listens")
    return NodeRecord(
        node_id=runtime.config.node_id,
        role="gateway",
        layer=0,
        host=address.host,
        port=address.port,
        fingerprint=address.fingerprint,
        sphinx_keys={epoch: key.public_key for epoch, key in gateway.node.core.keyring.keys.items()},
        region=settings.region,
        weight=settings.weight,
        stream_keys=responder_keys,
    )


class _Peers:
    """The directory's node ids (a peer not among them is a client), refreshed with the file."""

    def __init__(self) -> None:
        self.ids: frozenset[str] = frozenset()

    def adopt(self, runtime: NodeRuntime, directory: Directory) -> None:
        for record in directory.nodes.values():
            if record.node_id != runtime.config.node_id and record.fingerprint:
                runtime.transport.add_peer(record.node_id, record.address())
        self.ids = frozenset(directory.nodes)

    def __call__(self, peer: str) -> bool:
        return peer in self.ids


def make_gateway_service(settings: GatewaySettings) -> Service:
    async def service(runtime: NodeRuntime) -> None:
        data_dir = runtime.config.data_dir
        recovered = await asyncio.to_thread(recover, data_dir, settings.epoch_s, settings.overlap_s, time.time())
        static = await asyncio.to_thread(load_or_create_stream_keys, data_dir, settings.suites)
        responder = Responder(static)
        services = ExitServices(ServiceRegistry(), Allowlist(settings.allow, allow_private=settings.allow_private))
        peers = _Peers()
        if settings.directory is not None:
            peers.adopt(runtime, Directory.load(settings.directory))
        gateway = build_gateway(
            runtime.config.node_id, runtime.transport, recovered.ring, responder, services.serve, peers,
            mean_delay_s=settings.mean_delay_s, replay_capacity=settings.replay_capacity,
            max_sessions=settings.max_sessions, admission=ClientAdmission(settings.client_rate_per_min),
            max_clients=settings.max_clients,
        )
        core = gateway.node.core
        for epoch, table in recovered.tables.items():
            core.replay.install(epoch, table)
        saver = ReplaySaver(core, data_dir, settings.replay_save_s)
        public_keys = {suite.label: key.public_key for suite, key in static.items()}

        def publish() -> None:
            print(json.dumps(record_of(runtime, settings, gateway, public_keys).to_json()), flush=True)

        def on_rotate(retired: list[int]) -> None:
            save_keyring(recovered.ring, data_dir)
            publish()

        gateway.node.on_rotate = on_rotate
        link = None
        if settings.service is not None:
            link = DirectoryLink(settings.service, runtime.identity,
                                 lambda: record_of(runtime, settings, gateway, public_keys),
                                 lambda directory: peers.adopt(runtime, directory))
        runtime.registry.add_source("gateway", gateway.metric_values)
        for reason in gateway.node.drop_counts():
            runtime.registry.add_source(
                f"gateway-mix-drop-{reason}", lambda r=reason: {"mix_packet_drop": gateway.node.drop_counts()[r]},
                {"reason": reason},
            )

        async def drain() -> None:
            await gateway.drain(max(0.5, runtime.config.drain_timeout_s - 1.0))
            await saver.save_final()

        try:
            async with asyncio.TaskGroup() as tg:
                refresh = None
                if settings.directory is not None:
                    refresh = tg.create_task(
                        watch_directory(settings.directory, settings.directory_refresh_s,
                                        lambda directory: peers.adopt(runtime, directory)),
                        name="directory-refresh",
                    )
                following = None
                if link is not None:
                    following = tg.create_task(link.run(), name="directory-link")
                    runtime.on_drain(link.leave)  # first: out of the next document while it drains
                tg.create_task(saver.run(), name="gateway-replay-save")
                runtime.on_drain(drain)
                publish()
                log.info(
                    "gateway: suites %s, TCP allowlist %s, %g client handshakes/min per address, data in %s",
                    ",".join(s.label for s in settings.suites),
                    f"{len(settings.allow)} patterns" if settings.allow else "empty (services only)",
                    settings.client_rate_per_min, data_dir,
                )
                await gateway.run()
                for task in (refresh, following):
                    if task is not None:
                        task.cancel()
        finally:
            if not saver.final:
                gateway.node.accepting = False
                await saver.save_final()

    return service


def embedded_default(data_dir: str) -> NodeConfig:
    """Node `gw-1`, keys in `data_dir`, port 43400 if it is free."""
    port = DEFAULT_PORT
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind(("127.0.0.1", DEFAULT_PORT))
        except OSError:
            port = 0
    return parse_config({"node_id": "gw-1", "role": "gateway", "data_dir": data_dir, "transport": {"port": port}})


# -- the command line ------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog=PROG, description="Run a Nyx stream node: a gateway, or a client.")
    sub = top.add_subparsers(dest="command", required=True)
    gw = sub.add_parser("gateway", parents=[argument_parser(PROG + " gateway")], add_help=False,
                        help="run a gateway (with no flags: an embedded default, gw-1)")
    gw.add_argument("--directory", help="directory JSON file; its nodes become peers")
    gw.add_argument("--allow", action="append", default=[], metavar="HOST:PORT",
                    help="allow TCP streams to this pattern (repeatable; adds to gateway.allow)")
    gw.add_argument("--allow-private", action="store_true",
                    help="let allowed names resolve to loopback or private addresses")
    gw.add_argument("--suites", help="comma-separated handshake suites (default hybrid)")
    gw.add_argument("--client-rate", type=float, help="client handshakes per minute per address (default 30)")
    add_link_arguments(gw, "gateway")
    cl = sub.add_parser("client", help="run a client with a SOCKS5 front")
    source = cl.add_mutually_exclusive_group(required=True)
    source.add_argument("--directory", help="directory JSON file")
    source.add_argument("--directory-url", action="append", metavar="URL",
                        help="directory service or mirror (repeatable; instead of --directory)")
    cl.add_argument("--authority", action="append", default=[], metavar="HEX",
                    help="trusted directory authority key (repeatable; required with --directory-url)")
    cl.add_argument("--threshold", type=int, default=1, help="signatures a document needs (default 1)")
    cl.add_argument("--socks5", required=True, metavar="HOST:PORT", help="where the SOCKS5 front listens")
    cl.add_argument("--gateway", help="entry gateway id (default: drawn from the directory)")
    cl.add_argument("--exit", help="exit gateway id (default: drawn, other than the entry)")
    cl.add_argument("--cover-rate", type=float, default=None, help="payload slots per second (default 5)")
    cl.add_argument("--no-cover", action="store_true", help="send at once, no cover traffic (testing only)")
    cl.add_argument("--log-level", default="INFO")
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "client":
        return client_main(args)
    if args.config is None and args.node_id is None and args.data_dir is None:
        with tempfile.TemporaryDirectory(prefix="nyx-gw-1-") as scratch:
            return _run_gateway(args, scratch)
    return _run_gateway(args, args.data_dir)


def _run_gateway(args: argparse.Namespace, default_data_dir: str | None) -> int:
    try:
        if args.config is None and args.node_id is None:
            assert default_data_dir is not None
            config = with_overrides(
                embedded_default(default_data_dir), host=args.host, port=args.port, data_dir=args.data_dir,
                backend=args.backend, metrics_host=args.metrics_host, metrics_port=args.metrics_port,
                log_format=args.log_format, log_level=args.log_level, drain_timeout_s=args.drain_timeout_s,
                uvloop=args.uvloop,
            )
        else:
            config = resolve_config(args, tables=("gateway",))
        config = resolve_auto(with_overrides(config, role="gateway"))
        settings = gateway_settings(config, args)
    except ConfigError as exc:
        print(f"{PROG} gateway: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    configure_logging(config.node_id, config.log_format, config.log_level)
    try:
        if settings.directory is not None:
            Directory.load(settings.directory)
        runtime = NodeRuntime(config)
        read_keyring(config.data_dir, settings.epoch_s, settings.overlap_s)
        load_or_create_stream_keys(config.data_dir, settings.suites)  # fail before listening
    except (CertificateError, ConfigError, KeyStoreError, DirectoryError, StaticKeyError, ValueError) as exc:
        log.error("cannot start: %s", exc)
        return EXIT_CONFIG
    return run_runtime(runtime, make_gateway_service(settings), "gateway")


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def client_main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s client %(name)s: %(message)s")
    try:
        host, port = _host_port(args.socks5)
        directory: Directory | LinkSettings
        if args.directory_url:
            directory = _client_link(args)
        else:
            directory = Directory.load(Path(args.directory))
        cover = None
        if not args.no_cover:
            rate = args.cover_rate if args.cover_rate is not None else RatePolicy().base_pps
            cover = CoverConfig(policy=RatePolicy(base_pps=rate))
    except (ValueError, DirectoryError) as exc:
        print(f"{PROG} client: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        return asyncio.run(_client(directory, host, port, args, cover))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def _client_link(args: argparse.Namespace) -> LinkSettings:
    """The directory service the client follows (`--directory-url`, `--authority`, `--threshold`)."""
    urls = tuple(url.rstrip("/") for url in args.directory_url)
    bad = [url for url in urls if not url.startswith(("http://", "https://"))]
    if bad:
        raise ValueError(f"--directory-url {bad[0]!r}: expected an http(s) URL")
    if not args.authority:
        raise ValueError("--directory-url needs --authority HEX (the key `python -m nyx.directory serve` prints): "
                         "documents nobody can verify are never followed")
    keys = set()
    for value in args.authority:
        try:
            key = bytes.fromhex(value)
        except ValueError:
            key = b""
        if len(key) != 32:
            raise ValueError(f"--authority {value!r}: expected 64 hex digits (an Ed25519 public key)")
        keys.add(key)
    if not 1 <= args.threshold <= len(keys):
        raise ValueError(f"--threshold: 1 to {len(keys)} (the distinct authority keys given), got {args.threshold}")
    return LinkSettings(urls, frozenset(keys), args.threshold)


async def _client(directory: Directory | LinkSettings, host: str, port: int, args: argparse.Namespace,
                  cover: CoverConfig | None) -> int:
    if isinstance(directory, Directory):
        return await _client_on(directory, None, host, port, args, cover)
    async with DirectoryClient(directory.urls, directory.policy) as service:
        try:
            await service.refresh()
        except DirectoryError as exc:
            log.error("cannot start: %s", exc)
            return EXIT_CONFIG
        body = service.holder.current
        assert body is not None  # refresh raises otherwise
        log.info("directory: epoch %d from %s, %d nodes", body.epoch, ", ".join(directory.urls), len(body.nodes))
        return await _client_on(body.directory(), service, host, port, args, cover)


async def _client_on(directory: Directory, service: DirectoryClient | None, host: str, port: int,
                     args: argparse.Namespace, cover: CoverConfig | None) -> int:
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, lambda s=signum: stop.done() or stop.set_result(s))
    try:
        client = Client(directory, gateway=args.gateway, exit=args.exit, cover=cover, directory_service=service)
        await client.start()
    except ClientError as exc:
        log.error("cannot start: %s", exc)
        return EXIT_CONFIG

    async def connect(request: ConnectRequest) -> Any:
        return await client.open_connection(Target.tcp(request.host, request.port))

    def listening(address: tuple[str, int]) -> None:
        print(json.dumps({"socks5": f"{address[0]}:{address[1]}", "client_id": client.client_id,
                          "entry": client.entry.node_id, "exit": client.choose_exit()}), flush=True)

    try:
        async with asyncio.TaskGroup() as tg:
            front = tg.create_task(serve_socks5(host, port, connect, on_listening=listening))
            await asyncio.wait([front, stop], return_when=asyncio.FIRST_COMPLETED)
            front.cancel()
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", host, port, exc)
        return EXIT_CONFIG
    finally:
        await client.close()
    return EXIT_OK if not stop.done() or stop.result() == signal.SIGTERM else EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
