"""Node configuration: a TOML file, then command-line overrides, validated into one frozen value.

Every node kind (mix, gateway, the bare node) shares this shape; a kind adds its own table
(e.g. `[mix]`) that it names in `parse_config(..., tables=("mix",))` and reads from
`NodeConfig.extra`. Errors name the offending key, since an operator reading them has the file
open beside the message. A key nobody reads is refused (with the closest known key as a hint):
a misspelt `prot = 4433` would otherwise run the node on the default the operator meant to change.

    node_id = "mix-1-03"
    role = "mix"
    data_dir = "/var/lib/nyx/mix-1-03"   # keys live here (0700 dir, 0600 key)

    [transport]
    host = "0.0.0.0"
    port = 4433
    backend = "auto"                     # qh3 when installed, else aioquic; or name one
    queue_packets = 1024

    [metrics]
    host = "127.0.0.1"
    port = 9464                          # 0 = chosen by the OS; -1 = disabled

    [log]
    format = "plain"                     # or "json"
    level = "INFO"

    [runtime]
    uvloop = "auto"                      # uvloop when installed; true requires it, false: asyncio
    drain_timeout_s = 10.0

    [[peers]]
    id = "mix-2-01"
    host = "10.0.0.7"
    port = 4433
    fingerprint = "3b1f...64 hex digits"
"""

from __future__ import annotations

import difflib
import tomllib
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from nyx.transport import backends
from nyx.transport.base import PeerAddress
from nyx.transport.certs import CertificateError, normalize_fingerprint


class ConfigError(ValueError):
    """The configuration is invalid; the message names the key and the expected value."""


AUTO = "auto"
"""`transport.backend` and `runtime.uvloop`: the fastest configuration whose packages are
installed, chosen at start (docs/transport.md, "A node's forwarding rate")."""
BACKEND_CHOICES = (AUTO, "aioquic", "qh3")


@dataclass(frozen=True, slots=True)
class NodeConfig:
    node_id: str
    data_dir: Path
    role: str = "node"
    host: str = "127.0.0.1"
    port: int = 0
    backend: str = AUTO
    queue_packets: int = 1024
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 0
    log_format: str = "plain"
    log_level: str = "INFO"
    uvloop: bool | str = AUTO  # True, False or "auto"
    drain_timeout_s: float = 10.0
    peers: dict[str, PeerAddress] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


def _get(table: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str, default: Any = None) -> Any:
    value = table.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) and kind in (int, float, (int, float)):
        raise ConfigError(f"{where}{key}: expected a number, got {value!r}")
    if not isinstance(value, kind):
        name = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ConfigError(f"{where}{key}: expected {name}, got {value!r}")
    return value


def check_keys(table: Mapping[str, Any], known: Collection[str], where: str = "") -> None:
    """Refuse any key of `table` not in `known`, naming it (with its `where` prefix, e.g.
    "transport.") and the closest known key when one is close enough to be a typo."""
    unknown = [key for key in table if key not in known]
    if not unknown:
        return
    key = unknown[0]
    close = difflib.get_close_matches(str(key), sorted(known), n=1, cutoff=0.6)
    hint = f"did you mean {where}{close[0]}?" if close else f"known keys: {', '.join(sorted(known))}"
    also = f" (also unknown: {', '.join(where + str(k) for k in unknown[1:])})" if unknown[1:] else ""
    raise ConfigError(f"{where}{key}: unknown key; {hint}{also}")


_KNOWN = {"node_id", "data_dir", "role", "transport", "metrics", "log", "runtime", "peers"}
_TABLE_KEYS = {
    "transport": {"host", "port", "backend", "queue_packets"},
    "metrics": {"host", "port"},
    "log": {"format", "level"},
    "runtime": {"uvloop", "drain_timeout_s"},
}
_PEER_KEYS = {"id", "host", "port", "fingerprint"}


def parse_config(document: dict[str, Any], base_dir: Path | None = None, tables: Collection[str] = ()) -> NodeConfig:
    """Validate a parsed TOML document into a NodeConfig.

    `tables` names the node kind's own top-level tables (e.g. "mix"): they are kept in
    `NodeConfig.extra` for the kind to validate; any other unknown key is a ConfigError.
    """
    check_keys(document, _KNOWN | set(tables))
    node_id = _get(document, "node_id", str, "")
    if not node_id:
        raise ConfigError("node_id: required (the node's id in the directory, e.g. 'mix-1-03')")
    data_dir = Path(_get(document, "data_dir", str, "", f"./{node_id}-data"))
    if base_dir is not None and not data_dir.is_absolute():
        data_dir = base_dir / data_dir
    transport = _get(document, "transport", dict, "", {})
    metrics = _get(document, "metrics", dict, "", {})
    log = _get(document, "log", dict, "", {})
    runtime = _get(document, "runtime", dict, "", {})
    for name, table in (("transport", transport), ("metrics", metrics), ("log", log), ("runtime", runtime)):
        check_keys(table, _TABLE_KEYS[name], f"{name}.")
    peers: dict[str, PeerAddress] = {}
    for i, peer in enumerate(_get(document, "peers", list, "", [])):
        where = f"peers[{i}]."
        if not isinstance(peer, dict):
            raise ConfigError(f"peers[{i}]: expected a table with id, host, port, fingerprint")
        check_keys(peer, _PEER_KEYS, where)
        pid = _get(peer, "id", str, where)
        if not pid:
            raise ConfigError(f"{where}id: required")
        try:
            fp = normalize_fingerprint(_get(peer, "fingerprint", str, where, ""))
        except CertificateError as exc:
            raise ConfigError(f"{where}fingerprint: {exc}") from exc
        peers[pid] = PeerAddress(_get(peer, "host", str, where, "127.0.0.1"), _get(peer, "port", int, where, 0), fp)
    config = NodeConfig(
        node_id=node_id,
        data_dir=data_dir,
        role=_get(document, "role", str, "", "node"),
        host=_get(transport, "host", str, "transport.", "127.0.0.1"),
        port=_get(transport, "port", int, "transport.", 0),
        backend=_get(transport, "backend", str, "transport.", AUTO),
        queue_packets=_get(transport, "queue_packets", int, "transport.", 1024),
        metrics_host=_get(metrics, "host", str, "metrics.", "127.0.0.1"),
        metrics_port=_get(metrics, "port", int, "metrics.", 0),
        log_format=_get(log, "format", str, "log.", "plain"),
        log_level=_get(log, "level", str, "log.", "INFO"),
        uvloop=_get(runtime, "uvloop", (bool, str), "runtime.", AUTO),
        drain_timeout_s=float(_get(runtime, "drain_timeout_s", (int, float), "runtime.", 10.0)),
        peers=peers,
        extra={k: v for k, v in document.items() if k in tables},
    )
    return validate(config)


def validate(config: NodeConfig) -> NodeConfig:
    if config.backend not in BACKEND_CHOICES:
        raise ConfigError(f"transport.backend: 'auto', 'aioquic' or 'qh3', got {config.backend!r}")
    if config.uvloop not in (True, False, AUTO):
        raise ConfigError(f"runtime.uvloop: true, false or 'auto', got {config.uvloop!r}")
    if not 0 <= config.port <= 65535:
        raise ConfigError(f"transport.port: 0..65535, got {config.port}")
    if not -1 <= config.metrics_port <= 65535:
        raise ConfigError(f"metrics.port: -1 (off) or 0..65535, got {config.metrics_port}")
    if config.queue_packets < 1:
        raise ConfigError(f"transport.queue_packets: >= 1, got {config.queue_packets}")
    if config.log_format not in ("plain", "json"):
        raise ConfigError(f"log.format: 'plain' or 'json', got {config.log_format!r}")
    if config.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(f"log.level: DEBUG, INFO, WARNING or ERROR, got {config.log_level!r}")
    if config.drain_timeout_s < 0:
        raise ConfigError(f"runtime.drain_timeout_s: >= 0, got {config.drain_timeout_s}")
    return config


def load_config(path: Path, tables: Collection[str] = ()) -> NodeConfig:
    """Read and validate a TOML file; relative data_dir is taken relative to the file. `tables`
    as for `parse_config`."""
    try:
        document = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    return parse_config(document, base_dir=path.parent, tables=tables)


def with_overrides(config: NodeConfig, **overrides: Any) -> NodeConfig:
    """Apply command-line values (None means "not given") on top of the file."""
    given = {k: v for k, v in overrides.items() if v is not None}
    if "data_dir" in given:
        given["data_dir"] = Path(given["data_dir"])
    return validate(replace(config, **given))


def resolve_backend(backend: str) -> str:
    """The QUIC backend a node runs: "auto" is qh3 when it is importable (60-80k DATAGRAMs/s with
    uvloop) and aioquic otherwise (the baseline that always works); a named one is itself, and
    one that is not installed is a ConfigError."""
    if backend == AUTO:
        return "qh3" if backends.available("qh3") else "aioquic"
    if backend == "qh3" and not backends.available("qh3"):
        raise ConfigError("transport.backend: 'qh3' is not installed (pip install 'nyx[qh3]'), or use 'auto'")
    return backend


def resolve_uvloop(uvloop: bool | str) -> bool:
    """Whether a node runs on uvloop: "auto" when it is importable; true requires it (a
    ConfigError if it is missing); false is the asyncio loop."""
    if uvloop == AUTO:
        return backends.available("uvloop")
    if uvloop is True and not backends.available("uvloop"):
        raise ConfigError("runtime.uvloop: true, but uvloop is not installed (pip install 'nyx[uvloop]'), or use 'auto'")
    return bool(uvloop)


def resolve_auto(config: NodeConfig) -> NodeConfig:
    """`config` with `backend` and `uvloop` resolved to what this process will run (at start, so
    the log and /metrics name the real configuration). An explicit value is kept as given."""
    return replace(config, backend=resolve_backend(config.backend), uvloop=resolve_uvloop(config.uvloop))
