"""`python -m nyx.mix`: run one mix node.

With no flags it starts on an embedded default (node `mix-1`, layer 1, fresh keys in a temporary
directory removed at exit unless `--data-dir` names one, 127.0.0.1:43300 or a free port) so that trying it needs nothing. Either way it prints
its directory record as one JSON line on stdout once it listens (logs go to stderr), serves until
SIGTERM (drain: stop accepting, flush the delay queue, exit 0) or SIGINT (exit 130). When its
keys rotate it prints the updated record (now listing the next epoch's key) the same way.
Its replay tables are saved periodically and on every stop, and a start after a crash replaces
the keys it cannot vouch for (`nyx.mix.restart`, docs/mix.md "Restarts").

The node runtime (`nyx.node`: TOML config, TLS identity, metrics, signals) is shared with every
node kind; the mix adds a `[mix]` table:

    [mix]
    layer = 1
    mean_delay_s = 0.05          # or: latency_budget_s = 0.5, path_hops = 3 (Erlang 95% quantile)
    # batch_size = 100           # batch mode: N packets or batch_timeout_s, shuffled
    # batch_timeout_s = 0.5
    directory = "directory.json" # every node in it becomes a peer (next hops, destinations)
    epoch_s = 3600               # Sphinx key epochs, accepted overlap_s either side
    overlap_s = 300
    max_rate_pps = 1000          # peak packets/s: sizes the replay table (8 bytes per tag),
    # replay_capacity = ...      # or give the tags per epoch directly
    loop_rate_pps = 1.0          # loop cover through the other layers and back (0: none);
                                 # needs a directory listing every layer, this node included
    directory_refresh_s = 5.0    # re-read the directory file (or fetch the document) this often
    replay_save_s = 60.0         # save the replay tables this often (and on every stop);
                                 # see docs/mix.md, "Restarts": a start without a clean stop
                                 # replaces the keys of every epoch already valid

Or, instead of `directory`, the directory service (`python -m nyx.directory serve`; see
`nyx.mix.registration`): the mix registers its record there, heartbeats, registers again when
its keys rotate, takes its peers from each verified document and, on SIGTERM, posts a drain so
that the next document leaves it out at once. A directory that is down is retried, not fatal.

    directory_url = "http://127.0.0.1:43250"   # or a list: authorities and mirrors
    directory_authorities = ["<64 hex digits>"]  # the keys that sign documents (required)
    directory_threshold = 1                      # k of those keys must sign
    directory_heartbeat_s = 3.3                  # at most the service's --heartbeat-s

Flags: `--directory-url URL` and `--authority HEX` (repeatable), `--threshold K`.

This module is a program, not part of the mix layer's library: it composes the mix layer with
the cover layer above it (a mix's loop cover, `nyx.cover.MixLoopEmitter`).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nyx.cover.emitter import MixLoopEmitter
from nyx.cover.packets import MixCoverPackets
from nyx.mix.core import Forward, MixCore
from nyx.mix.delay import BatchQueue, PoissonDelay, mean_delay_for_budget
from nyx.mix.directory import Directory, DirectoryError, NodeRecord, watch_directory
from nyx.mix.keystore import KeyStoreError, read_keyring, save_keyring
from nyx.mix.node import MixNode
from nyx.mix.registration import LINK_KEYS, DirectoryLink, LinkSettings, add_link_arguments, link_settings, with_link_flags
from nyx.mix.restart import ReplaySaver, recover
from nyx.node.__main__ import argument_parser, resolve_config, run_runtime
from nyx.node.config import ConfigError, NodeConfig, check_keys, parse_config, resolve_auto, with_overrides
from nyx.node.logs import configure_logging
from nyx.node.runtime import EXIT_CONFIG, NodeRuntime, Service
from nyx.transport.certs import CertificateError

log = logging.getLogger("nyx.mix")

PROG = "python -m nyx.mix"
DEFAULT_PORT = 43300


@dataclass(frozen=True, slots=True)
class MixSettings:
    """The `[mix]` table, validated."""

    layer: int = 1
    mean_delay_s: float = 0.05
    batch_size: int | None = None
    batch_timeout_s: float | None = None
    directory: Path | None = None
    epoch_s: float = 3600.0
    overlap_s: float = 300.0
    replay_capacity: int = 1 << 20
    region: str | None = None
    weight: float = 1.0
    loop_rate_pps: float = 1.0
    directory_refresh_s: float = 5.0
    replay_save_s: float = 60.0
    service: LinkSettings | None = None  # the directory service, when directory_url is given


MIX_KEYS = frozenset({
    "layer", "mean_delay_s", "latency_budget_s", "path_hops", "quantile", "batch_size", "batch_timeout_s",
    "directory", "epoch_s", "overlap_s", "max_rate_pps", "replay_capacity", "region", "weight",
    "loop_rate_pps", "directory_refresh_s", "replay_save_s",
}) | LINK_KEYS
"""Every key of the `[mix]` table; any other is refused (a typo would silently keep a default)."""


def _number(table: dict[str, Any], key: str, kind: type, default: Any) -> Any:
    value = table.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else kind):
        raise ConfigError(f"mix.{key}: expected {kind.__name__}, got {value!r}")
    return kind(value)


def mix_settings(config: NodeConfig, args: argparse.Namespace) -> MixSettings:
    table = config.extra.get("mix", {})
    if not isinstance(table, dict):
        raise ConfigError("mix: expected a table")
    check_keys(table, MIX_KEYS, "mix.")
    for cli, key in (("layer", "layer"), ("mean_delay", "mean_delay_s"), ("latency_budget", "latency_budget_s"),
                     ("batch_size", "batch_size"), ("batch_timeout", "batch_timeout_s"), ("directory", "directory"),
                     ("loop_rate", "loop_rate_pps")):
        if getattr(args, cli) is not None:
            table = {**table, key: getattr(args, cli)}
            if cli == "latency_budget":
                table.pop("mean_delay_s", None)
    table = with_link_flags(table, args)
    mean = _number(table, "mean_delay_s", float, 0.05)
    budget = _number(table, "latency_budget_s", float, None)
    if budget is not None:
        if "mean_delay_s" in table:
            raise ConfigError("mix: give mean_delay_s or latency_budget_s, not both")
        hops = _number(table, "path_hops", int, 3)
        mean = mean_delay_for_budget(budget, hops, _number(table, "quantile", float, 0.95))
    if mean < 0:
        raise ConfigError(f"mix.mean_delay_s: >= 0, got {mean}")
    batch_size = _number(table, "batch_size", int, None)
    batch_timeout = _number(table, "batch_timeout_s", float, None)
    if (batch_size is None) != (batch_timeout is None):
        raise ConfigError("mix: batch mode needs both batch_size and batch_timeout_s")
    if batch_size is not None and (batch_size < 1 or batch_timeout <= 0):
        raise ConfigError("mix: batch_size >= 1 and batch_timeout_s > 0")
    layer = _number(table, "layer", int, 1)
    if layer < 1:
        raise ConfigError(f"mix.layer: >= 1, got {layer}")
    directory = table.get("directory")
    if directory is not None and not isinstance(directory, str):
        raise ConfigError(f"mix.directory: expected a file name, got {directory!r}")
    region = table.get("region")
    if region is not None and not isinstance(region, str):
        raise ConfigError(f"mix.region: expected str, got {region!r}")
    settings = MixSettings(
        layer=layer,
        mean_delay_s=mean,
        batch_size=batch_size,
        batch_timeout_s=batch_timeout,
        directory=Path(directory) if directory else None,
        epoch_s=_number(table, "epoch_s", float, 3600.0),
        overlap_s=_number(table, "overlap_s", float, 300.0),
        replay_capacity=_replay_capacity(table),
        region=region,
        weight=_number(table, "weight", float, 1.0),
        loop_rate_pps=_number(table, "loop_rate_pps", float, 1.0),
        directory_refresh_s=_number(table, "directory_refresh_s", float, 5.0),
        replay_save_s=_number(table, "replay_save_s", float, 60.0),
    )
    if not settings.replay_save_s > 0:
        raise ConfigError(f"mix.replay_save_s: > 0, got {settings.replay_save_s}")
    if settings.loop_rate_pps < 0:
        raise ConfigError(f"mix.loop_rate_pps: >= 0, got {settings.loop_rate_pps}")
    if settings.directory_refresh_s <= 0:
        raise ConfigError(f"mix.directory_refresh_s: > 0, got {settings.directory_refresh_s}")
    service = link_settings(table, "mix", settings.directory_refresh_s)
    if service is not None:
        if service.linger_s >= config.drain_timeout_s:
            raise ConfigError(
                f"mix.directory_linger_s: {service.linger_s} s must be below runtime.drain_timeout_s "
                f"({config.drain_timeout_s} s): the node lingers inside its drain"
            )
        settings = dataclasses.replace(settings, service=service)
    if not 0 <= settings.overlap_s < settings.epoch_s:
        raise ConfigError("mix: 0 <= overlap_s < epoch_s")
    if settings.replay_capacity < 1:
        raise ConfigError("mix.replay_capacity: >= 1")
    return settings


def _replay_capacity(table: dict[str, Any]) -> int:
    """Tags one epoch's table must hold: every packet while the epoch's key is accepted, at the
    peak rate (8 bytes each: the default 1,000 pps over 3600 + 2 x 300 s is 34 MB per epoch)."""
    explicit = _number(table, "replay_capacity", int, None)
    if explicit is not None:
        return explicit
    max_rate_pps = _number(table, "max_rate_pps", float, 1000.0)
    accepted_s = _number(table, "epoch_s", float, 3600.0) + 2 * _number(table, "overlap_s", float, 300.0)
    if max_rate_pps <= 0:
        raise ConfigError(f"mix.max_rate_pps: > 0, got {max_rate_pps}")
    return max(1, int(max_rate_pps * accepted_s))


def check_layer(settings: MixSettings, directory: Directory) -> None:
    """Refuse a layer beyond the directory's last mix layer: such a mix would never be chosen on a
    route and its packets would have nowhere to go. A directory that lists no mix yet (a network
    being assembled) cannot say, so it is not checked."""
    layers = directory.layers()
    if layers and settings.layer > max(layers):
        raise ConfigError(
            f"mix.layer: {settings.layer}, but directory {settings.directory} has {max(layers)} layers"
            f" (mixes in layers {', '.join(map(str, layers))})"
        )


def embedded_default(data_dir: str) -> NodeConfig:
    """Node `mix-1`, layer 1, keys in `data_dir`, port 43300 if it is free."""
    port = DEFAULT_PORT
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind(("127.0.0.1", DEFAULT_PORT))
        except OSError:
            port = 0
    return parse_config({"node_id": "mix-1", "role": "mix", "data_dir": data_dir, "transport": {"port": port}})


def parser() -> argparse.ArgumentParser:
    p = argument_parser(PROG)
    p.description = "Run a Nyx mix node. With no flags: an embedded default (mix-1, layer 1, fresh keys)."
    p.add_argument("--layer", type=int, help="overrides mix.layer")
    p.add_argument("--mean-delay", type=float, help="overrides mix.mean_delay_s (seconds per hop)")
    p.add_argument("--latency-budget", type=float, help="derive the mean delay from a path budget (seconds)")
    p.add_argument("--batch-size", type=int, help="batch mode: release after N packets ...")
    p.add_argument("--batch-timeout", type=float, help="... or this many seconds after the first")
    p.add_argument("--directory", help="directory JSON file; its nodes become peers")
    p.add_argument("--loop-rate", type=float, help="overrides mix.loop_rate_pps (loop cover packets/s; 0: none)")
    add_link_arguments(p, "mix")
    return p


def record_of(runtime: NodeRuntime, settings: MixSettings, node: MixNode) -> NodeRecord:
    address = runtime.address  # what listen() returned: on the Transport interface, any transport
    if address is None:
        raise RuntimeError("the mix's record is published only once its transport listens")
    return NodeRecord(
        node_id=runtime.config.node_id,
        role="mix",
        layer=settings.layer,
        host=address.host,
        port=address.port,
        fingerprint=address.fingerprint,
        sphinx_keys={epoch: key.public_key for epoch, key in node.core.keyring.keys.items()},
        region=settings.region,
        weight=settings.weight,
    )


def make_service(settings: MixSettings) -> Service:
    async def service(runtime: NodeRuntime) -> None:
        data_dir = runtime.config.data_dir
        # Before any packet is accepted: keys, restored replay tables, the restart rule.
        recovered = await asyncio.to_thread(recover, data_dir, settings.epoch_s, settings.overlap_s, time.time())
        ring = recovered.ring
        core = MixCore(
            ring,
            delay=PoissonDelay(settings.mean_delay_s) if settings.batch_size is None else None,
            replay_capacity=settings.replay_capacity,
        )
        for epoch, table in recovered.tables.items():
            core.replay.install(epoch, table)
        saver = ReplaySaver(core, data_dir, settings.replay_save_s)
        batch = None
        if settings.batch_size is not None and settings.batch_timeout_s is not None:
            batch = BatchQueue[Forward](settings.batch_size, settings.batch_timeout_s)
        node = MixNode(core, runtime.transport, batch=batch)

        async def stop_and_save() -> None:
            # Stop accepting first: the final save must hold every tag this run accepted, since
            # its marker tells the next start to trust it. Held packets are flushed after it.
            node.accepting = False
            await saver.save_final()

        try:  # from here on, however the service ends, it ends on a final save
            def on_rotate(retired: list[int]) -> None:
                # Keep the new key across restarts, and publish the record that now lists it.
                save_keyring(ring, data_dir)
                print(json.dumps(record_of(runtime, settings, node).to_json()), flush=True)

            node.on_rotate = on_rotate
            node_id = runtime.config.node_id
            loops: MixLoopEmitter | None = None
            if settings.directory is not None or settings.service is not None:
                # From the service, the first document comes after the start: until then loops
                # have no route and are counted as build failures.
                directory = (_adopt_directory(runtime, Directory.load(settings.directory))
                             if settings.directory is not None else Directory({}))
                if settings.loop_rate_pps > 0:
                    loops = MixLoopEmitter(node, _loop_factory(directory, node_id, ring), settings.loop_rate_pps)
                    loops.attach()
                    runtime.registry.add_source("mix-loop-cover", loops.metric_values)
            link = None
            if settings.service is not None:
                link = DirectoryLink(settings.service, runtime.identity, lambda: record_of(runtime, settings, node),
                                     _adopter(runtime, loops, ring))
            for reason in node.drop_counts():
                runtime.registry.add_source(
                    f"mix-drop-{reason}", lambda r=reason: {"mix_packet_drop": node.drop_counts()[r]}, {"reason": reason}
                )
            runtime.registry.add_source("mix-keys", lambda: {"key_reload_duration": node.key_reload_s})
            async with asyncio.TaskGroup() as tg:
                extras: list[asyncio.Task[None]] = []
                if loops is not None:
                    extras.append(tg.create_task(loops.run(), name="mix-loop-cover"))
                if settings.directory is not None:
                    extras.append(tg.create_task(_refresh_directory(runtime, settings, loops, ring), name="directory-refresh"))
                if link is not None:
                    extras.append(tg.create_task(link.run(), name="directory-link"))
                    runtime.on_drain(link.leave)  # first: out of the next document while it flushes
                tg.create_task(saver.run(), name="mix-replay-save")

                async def stop_extras() -> None:  # a draining mix sends no new loops
                    for task in extras:
                        task.cancel()

                runtime.on_drain(stop_extras)
                runtime.on_drain(stop_and_save)
                runtime.on_drain(node.drain)
                print(json.dumps(record_of(runtime, settings, node).to_json()), flush=True)
                log.info(
                    "mix layer %d: %s, loop cover %s, data in %s", settings.layer,
                    f"batches of {settings.batch_size} or {settings.batch_timeout_s} s" if batch
                    else f"mean delay {settings.mean_delay_s * 1000:.1f} ms",
                    f"{settings.loop_rate_pps:g}/s" if loops is not None else "off", data_dir,
                )
                await node.run()
                for task in extras:
                    task.cancel()
        finally:
            # SIGINT, a cancelled service or an error: still end on a complete, vouched-for state.
            # (Only a process killed outright, or a failed write, leaves no marker.)
            if not saver.final:
                await stop_and_save()

    return service


def _adopt_directory(runtime: NodeRuntime, directory: Directory) -> Directory:
    """Make every other node of `directory` a peer (a changed address or certificate replaces the
    old one)."""
    for record in directory.nodes.values():
        if record.node_id != runtime.config.node_id and record.fingerprint:
            runtime.transport.add_peer(record.node_id, record.address())
    return directory


def _loop_factory(directory: Directory, node_id: str, ring: Any) -> MixCoverPackets:
    return MixCoverPackets(directory, node_id, lambda: ring.epoch_at(time.time()))


def _adopter(runtime: NodeRuntime, loops: MixLoopEmitter | None, ring: Any) -> Callable[[Directory], None]:
    """What a new directory (file or document) changes: peers, and the routes of loop cover."""

    def adopt(directory: Directory) -> None:
        _adopt_directory(runtime, directory)
        if loops is not None:
            loops.factory = _loop_factory(directory, runtime.config.node_id, ring)

    return adopt


def _refresh_directory(runtime: NodeRuntime, settings: MixSettings, loops: MixLoopEmitter | None,
                       ring: Any) -> Coroutine[Any, Any, None]:
    """Re-read the directory file whenever it changes."""
    assert settings.directory is not None
    return watch_directory(settings.directory, settings.directory_refresh_s, _adopter(runtime, loops, ring))


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.config is None and args.node_id is None and args.data_dir is None:
        # A try-out node: its keys live only as long as the process, so nothing is left behind.
        with tempfile.TemporaryDirectory(prefix="nyx-mix-1-") as scratch:
            return _run(args, scratch)
    return _run(args, args.data_dir)


def _run(args: argparse.Namespace, default_data_dir: str | None) -> int:
    try:
        if args.config is None and args.node_id is None:
            assert default_data_dir is not None
            config = with_overrides(
                embedded_default(default_data_dir), host=args.host, port=args.port, data_dir=args.data_dir, backend=args.backend,
                metrics_host=args.metrics_host, metrics_port=args.metrics_port, log_format=args.log_format,
                log_level=args.log_level, drain_timeout_s=args.drain_timeout_s, uvloop=args.uvloop,
            )
        else:
            config = resolve_config(args, tables=("mix",))
        config = resolve_auto(with_overrides(config, role="mix"))
        settings = mix_settings(config, args)
    except ConfigError as exc:
        print(f"{PROG}: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    configure_logging(config.node_id, config.log_format, config.log_level)
    try:
        if settings.directory is not None:  # before any key is generated for a refused config
            check_layer(settings, Directory.load(settings.directory))
        runtime = NodeRuntime(config)
        read_keyring(config.data_dir, settings.epoch_s, settings.overlap_s)  # fail before listening
    except (CertificateError, ConfigError, KeyStoreError, DirectoryError, ValueError) as exc:
        log.error("cannot start: %s", exc)
        return EXIT_CONFIG
    return run_runtime(runtime, make_service(settings), "mix node")


if __name__ == "__main__":
    sys.exit(main())
