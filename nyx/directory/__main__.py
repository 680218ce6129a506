"""`python -m nyx.directory`: run a directory authority, read a document, co-sign one.

    python -m nyx.directory serve [--data-dir D] [--listen HOST:PORT] [--cache-ttl-s S]
                                  [--period-s S] [--validity-s S] [--heartbeat-s S] [--probe-s S]
                                  [--threshold K --authority HEX ...]
    python -m nyx.directory show --url URL [--url MIRROR ...] --authority HEX [...] [--threshold K]
    python -m nyx.directory cosign --url URL --data-dir D --authority HEX [...] [--threshold K]

`serve` with no flags is the embedded default: one authority (threshold 1), its key and SQLite
store in a temporary directory removed at exit, on 127.0.0.1:43250 or a free port. It prints one
JSON line on stdout once it listens: {"url": ..., "authority": "<Ed25519 public key hex>",
"threshold": k}; nodes and clients pin that key. SIGTERM or SIGINT stops it (exit 0).
Exit codes: 78 configuration (bad flag value, unusable key file), 75 the port is taken.

`show` fetches, verifies and summarises the current document (exit 1 if none verifies);
`cosign` adds this authority's signature (key in --data-dir) to the document the URL serves.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import json
import logging
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import aiohttp

from nyx.directory.agent import DirectoryClient, DirectoryUnavailable
from nyx.directory.authority import AuthoritySettings, public_bytes
from nyx.directory.document import SignedDocument, TrustPolicy, decode_body, sign_body
from nyx.directory.keys import load_or_create_authority_key
from nyx.directory.records import DirectoryError
from nyx.directory.service import DirectoryService, ServiceSettings

PROG = "python -m nyx.directory"
DEFAULT_PORT = 43250
EXIT_OK, EXIT_FAILED, EXIT_CONFIG, EXIT_CANNOT_LISTEN = 0, 1, 78, 75

log = logging.getLogger("nyx.directory")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Nyx directory: signed network documents.")
    sub = p.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run a directory authority (embedded default with no flags)")
    serve.add_argument("--data-dir", type=Path, help="authority key and SQLite store (default: a temporary directory)")
    serve.add_argument("--listen", help=f"HOST:PORT (default 127.0.0.1:{DEFAULT_PORT}, or a free port)")
    serve.add_argument("--cache-ttl-s", type=float, default=10.0, help="max-age of documents and lookups; 0 = no cache")
    serve.add_argument("--period-s", type=float, default=60.0, help="a fresh document at least this often")
    serve.add_argument("--validity-s", type=float, default=300.0, help="how long a document may be used")
    serve.add_argument("--heartbeat-s", type=float, default=10.0, help="nodes heartbeat this often; 3 missed = down")
    serve.add_argument("--probe-s", type=float, default=30.0,
                       help="probe each node's QUIC address this often (3 failures = down); 0 = never")
    for name in ("show", "cosign"):
        other = sub.add_parser(name)
        other.add_argument("--url", action="append", required=True, help="directory or mirror URL (repeatable)")
        if name == "cosign":
            other.add_argument("--data-dir", type=Path, required=True, help="this authority's key directory")
    for command in sub.choices.values():
        command.add_argument("--authority", action="append", default=[], help="trusted authority key, hex (repeatable)")
        command.add_argument("--threshold", type=int, default=1, help="signatures a document needs (k of n)")
        command.add_argument("--log-level", default="INFO")
    return p


def _authorities(values: Sequence[str]) -> frozenset[bytes]:
    keys = set()
    for value in values:
        try:
            key = bytes.fromhex(value)
        except ValueError:
            raise DirectoryError(f"--authority {value!r}: expected 64 hex digits (an Ed25519 public key)") from None
        if len(key) != 32:
            raise DirectoryError(f"--authority {value!r}: expected 64 hex digits (an Ed25519 public key)")
        keys.add(key)
    return frozenset(keys)


def _listen(value: str | None) -> tuple[str, int, bool]:
    """(host, port, explicit). The default port falls back to a free one; an explicit one does not."""
    if value is None:
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", DEFAULT_PORT))
                return "127.0.0.1", DEFAULT_PORT, False
            except OSError:
                return "127.0.0.1", 0, False
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise DirectoryError(f"--listen {value!r}: expected HOST:PORT")
    return host or "127.0.0.1", int(port), True


async def _serve(args: argparse.Namespace, data_dir: Path) -> int:
    try:
        host, port, _ = _listen(args.listen)
        authority = AuthoritySettings(
            period_s=args.period_s,
            validity_s=args.validity_s,
            heartbeat_interval_s=args.heartbeat_s,
            min_interval_s=min(1.0, args.period_s),
            threshold=args.threshold,
            extra_authorities=_authorities(args.authority),
        )
        if args.cache_ttl_s < 0:
            raise DirectoryError("--cache-ttl-s: 0 or more")
        if args.probe_s < 0:
            raise DirectoryError("--probe-s: 0 or more")
        settings = ServiceSettings(host=host, port=port, cache_ttl_s=args.cache_ttl_s, authority=authority,
                                   probe_interval_s=args.probe_s)
        service = DirectoryService(data_dir, settings)
    except DirectoryError as exc:
        print(f"{PROG}: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        await service.start()
    except DirectoryError as exc:
        print(f"{PROG}: cannot start: {exc}", file=sys.stderr)
        await service.close()
        return EXIT_CONFIG
    except OSError as exc:
        await service.close()
        if exc.errno in (errno.EADDRINUSE, errno.EACCES):
            print(f"{PROG}: cannot listen on {host}:{port}: {exc.strerror}", file=sys.stderr)
            return EXIT_CANNOT_LISTEN
        raise
    assert service.authority is not None
    print(json.dumps({"url": service.url, "authority": service.authority.public_key.hex(),
                      "threshold": args.threshold}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        async with asyncio.TaskGroup() as tg:
            runner = tg.create_task(service.run())
            await stop.wait()
            runner.cancel()
    finally:
        await service.close()
    log.info("directory stopped")
    return EXIT_OK


async def _show(args: argparse.Namespace) -> int:
    policy = TrustPolicy(_authorities(args.authority), args.threshold)
    async with DirectoryClient(args.url, policy) as client:
        try:
            await client.refresh()
        except DirectoryUnavailable as exc:
            print(f"{PROG}: {exc}", file=sys.stderr)
            return EXIT_FAILED
        body = client.holder.current
        assert body is not None
        directory = body.directory()
        print(json.dumps({
            "epoch": body.epoch, "valid_after": body.valid_after, "valid_until": body.valid_until,
            "nodes": len(body.nodes), "layers": {str(n): len(directory.layer(n)) for n in directory.layers()},
            "gateways": len(directory.gateways()),
        }))
    return EXIT_OK


async def _cosign(args: argparse.Namespace) -> int:
    key = load_or_create_authority_key(args.data_dir, create=False)
    url = args.url[0].rstrip("/")
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        async with session.get(f"{url}/v1/document/newest") as response:
            if response.status != 200:
                print(f"{PROG}: {url} has no document (HTTP {response.status})", file=sys.stderr)
                return EXIT_FAILED
            document = SignedDocument.decode(await response.read())
        body = decode_body(document.body_bytes)  # a co-signer reads what it signs
        if abs(time.time() - body.valid_after) > 600:
            print(f"{PROG}: document {body.epoch} is not current; not signing", file=sys.stderr)
            return EXIT_FAILED
        pub, signature = sign_body(document.body_bytes, key)
        async with session.post(f"{url}/v1/document/{body.epoch}/signatures",
                                json={"authority": pub.hex(), "signature": signature.hex()}) as response:
            text = await response.text()
            if response.status != 200:
                print(f"{PROG}: signature refused: {text.strip()}", file=sys.stderr)
                return EXIT_FAILED
    print(json.dumps({"epoch": body.epoch, "authority": public_bytes(key.public_key()).hex()}))
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=getattr(logging, str(args.log_level).upper(), logging.INFO), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "serve":
            if args.data_dir is None:
                with tempfile.TemporaryDirectory(prefix="nyx-directory-") as scratch:
                    return asyncio.run(_serve(args, Path(scratch)))
            return asyncio.run(_serve(args, args.data_dir))
        if args.command == "show":
            return asyncio.run(_show(args))
        return asyncio.run(_cosign(args))
    except DirectoryError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return EXIT_OK


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
