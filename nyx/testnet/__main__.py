"""`python -m nyx.testnet`: a whole Nyx network on this machine, ready to use in seconds.

    python -m nyx.testnet                         # 3 mixes, 2 gateways, SOCKS5 on 127.0.0.1:1080
    python -m nyx.testnet --allow 127.0.0.1:8000  # the exits may dial this (curl through it)
    python -m nyx.testnet --check-only            # start, check, stop: exit 0 if it all works
    python -m nyx.testnet --static-directory      # no directory service: the nodes read directory.json
    python -m nyx.testnet --sim --mixes-per-layer 10 --gateways 10   # one process, simulated links

Real mode runs `nyx.testnet.Testnet` (every node a process, real QUIC on 127.0.0.1) and a
`python -m nyx.stream client --socks5` in front of it, prints how to use it, and runs until Ctrl-C
or SIGTERM, then stops every child (each drains) and exits 0. The nodes register with a
directory service process the testnet starts with them (`python -m nyx.directory serve`) and
follow its signed documents, as do the clients (`--directory-service`, the default); with
`--static-directory` they read a `directory.json` written before they start instead (one process
fewer, no HTTP, about 2 s faster to start). `--sim` runs `SimTestnet` (the
same node classes in this process over SimTransport): N clients echo through it, the results
are printed, and it stays up until Ctrl-C (or exits at once with `--check-only`).
Exit codes: 0 ok, 1 a check failed or a node failed (crashed, was killed: `ChildExit.failed`;
a node that drained incompletely is reported but is no failure), 2 bad arguments; never 130
(Ctrl-C is the normal way to stop).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import shutil
import signal
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nyx.stream.socks import SocksReply
from nyx.testnet.layout import HOST, TestnetOptions
from nyx.testnet.local import Testnet, TestnetError
from nyx.testnet.probe import EchoResult, echo_once, echo_with_retries, socks5_connect_reply
from nyx.testnet.processes import CODE_ROOT
from nyx.testnet.sim import SimTestnet

PROG = "python -m nyx.testnet"
DEFAULT_SOCKS5 = f"{HOST}:1080"
# What the SOCKS check asks for: TEST-NET-1 (RFC 5737), a reserved address that only `*` with
# --allow-private would let an exit dial; so the answer proves a round trip to the exit and back.
REFUSED_TARGET = ("192.0.2.1", 9)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Run a local Nyx testnet: mixes, gateways, a SOCKS5 client.")
    p.add_argument("--layers", type=int, default=3, help="mix layers (default 3)")
    p.add_argument("--mixes-per-layer", type=int, default=1, help="mixes in each layer (default 1)")
    p.add_argument("--gateways", type=int, default=2, help="gateways, each entry and exit (default 2)")
    p.add_argument("--allow", action="append", default=[], metavar="PATTERN",
                   help="a TCP destination the exits may dial, HOST:PORT (repeatable; default none: "
                        "the echo and discard services only)")
    p.add_argument("--allow-private", action="store_true",
                   help="let allowed names resolve to private addresses (an IP pattern needs no flag)")
    p.add_argument("--dir", type=Path, help="working directory (keys, configs, logs; kept, and reused by "
                                            "a later run). Default: a temporary one, removed at exit")
    p.add_argument("--socks5", metavar="HOST:PORT",
                   help=f"where the SOCKS5 client listens (default {DEFAULT_SOCKS5}, or a free port if it "
                        "is taken); 'off' for none")
    p.add_argument("--cover-rate", type=float, help="the SOCKS5 client's cover rate, packets/s (default 5)")
    p.add_argument("--mean-delay", type=float, help="mean delay per mix hop, seconds (default 0.005)")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--directory-service", dest="directory_service", action="store_true", default=True,
                        help="run `python -m nyx.directory serve` with the nodes; they register with it, and the "
                             "clients follow its signed documents (the default)")
    source.add_argument("--static-directory", dest="directory_service", action="store_false",
                        help="no directory service: write a directory.json that every node and client reads")
    p.add_argument("--sim", action="store_true", help="one process over simulated links (no SOCKS5 front)")
    p.add_argument("--check-only", action="store_true", help="start, run the self-check, stop")
    p.add_argument("--clients", type=int, default=3, help="clients in the self-check (default 3)")
    p.add_argument("--check-bytes", type=int, default=10_000, help="bytes each self-check client echoes")
    p.add_argument("--log-level", default="WARNING", help="this program's log level (nodes log to files)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s testnet %(name)s: %(message)s")
    try:
        options = TestnetOptions(layers=args.layers, mixes_per_layer=args.mixes_per_layer, gateways=args.gateways,
                                 allow=tuple(args.allow), allow_private=args.allow_private,
                                 **({"mean_delay_s": args.mean_delay} if args.mean_delay is not None else {}))
    except ValueError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    runner = run_sim(args, options) if args.sim else run_real(args, options)
    try:
        return asyncio.run(runner)
    except KeyboardInterrupt:  # a signal before the handlers were installed
        return 0


def stop_event() -> asyncio.Event:
    """Set on SIGINT or SIGTERM: both mean "stop everything cleanly"."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    return stop


async def until(stop: asyncio.Event, work: asyncio.Future[Any]) -> bool:
    """Wait for `work` unless `stop` comes first (then cancel it); whether `work` finished."""
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait([work, stopping], return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
    if not work.done():
        work.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await work
        return False
    return True


# -- real processes -------------------------------------------------------------------------------


def socks5_address(arg: str | None) -> str | None:
    """The address to give the SOCKS5 client: as given, none for "off", or 1080 when free."""
    if arg is not None:
        return None if arg.lower() == "off" else arg
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((HOST, 1080))
        except OSError:
            return f"{HOST}:0"
    return DEFAULT_SOCKS5


async def run_real(args: argparse.Namespace, options: TestnetOptions) -> int:
    stop = stop_event()
    net = Testnet(options=options, workdir=args.dir, check_exit=False, directory_service=args.directory_service)
    where = "kept" if args.dir else "removed at exit; --dir DIR keeps them"
    count = options.layers * options.mixes_per_layer + options.gateways
    service = " and a directory service" if args.directory_service else ""
    print(f"starting {count} nodes{service} in {net.workdir} ({where}) ...", flush=True)
    starting = asyncio.ensure_future(net.start())
    try:
        if not await until(stop, starting):
            print("stopped before the testnet was up", flush=True)
            await net.stop(quiet=True)
            if net.temporary:
                shutil.rmtree(net.workdir, ignore_errors=True)
            return 0
        starting.result()
    except TestnetError as exc:
        print(f"{PROG}: the testnet did not start: {exc}", file=sys.stderr)
        return 1
    ok = True
    try:
        socks = socks5_address(args.socks5)
        if socks is not None:
            await net.start_socks5(socks, cover_rate=args.cover_rate)
        print_usage(net, args)
        if args.check_only:
            ok = await real_check(net, args)
        else:
            print("running; Ctrl-C (or SIGTERM) stops every node", flush=True)
            died = asyncio.ensure_future(net.wait_for_exit())
            if await until(stop, died):
                child = died.result()
                print(f"{PROG}: {child.name} ended on its own (exit code {child.returncode}); "
                      f"see {net.log_path(child.name)}", file=sys.stderr)
                ok = False
    except (TestnetError, RuntimeError, OSError) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        ok = False
    finally:
        print("stopping ...", flush=True)
        exits = await net.stop()
    failed = [e for e in exits if e.failed]
    for child_exit in exits:
        if not child_exit.ok:
            print(f"{PROG}: {child_exit.describe()}; see {net.log_path(child_exit.name)}",
                  file=sys.stderr if child_exit.failed else sys.stdout, flush=True)
    clean = sum(e.ok for e in exits)
    print(f"stopped: {clean} of {len(exits)} processes exited 0"
          + (f", {len(failed)} failed" if failed else "")
          + (f", {len(exits) - clean - len(failed)} drained incompletely" if len(exits) - clean - len(failed) else ""),
          flush=True)
    if not failed and ok and net.temporary:
        shutil.rmtree(net.workdir, ignore_errors=True)
    return 0 if ok and not failed else 1


async def real_check(net: Testnet, args: argparse.Namespace) -> bool:
    """The self-check over real processes: every probe (already made), `--clients` clients at
    once on the other entry/exit pairs, and the SOCKS5 front answering a CONNECT."""
    gateways = net.gateway_ids
    pairs = [(gateways[i % len(gateways)], gateways[(i + 1) % len(gateways)]) for i in range(args.clients)]
    async with asyncio.TaskGroup() as tg:
        checks = [tg.create_task(echo_with_retries(
            lambda entry=entry, exit=exit: echo_once(net.client, entry, exit, args.check_bytes, 30.0, cover=None),
            3)) for entry, exit in pairs]
    results = [c.result() for c in checks]
    ok = print_results("clients", results)
    if net.socks5_address is not None:
        started = time.perf_counter()
        host, port = net.socks5_address
        try:
            reply = await socks5_connect_reply(host, port, *REFUSED_TARGET)
        except (OSError, ConnectionError, TimeoutError, asyncio.IncompleteReadError) as exc:
            print(f"  socks5 {host}:{port}: FAILED: {type(exc).__name__}: {exc}", flush=True)
            return False
        try:
            name = SocksReply(reply).name
        except ValueError:
            name = f"0x{reply:02x}"
        good = reply == SocksReply.NOT_ALLOWED
        print(f"  socks5 {host}:{port}: CONNECT {REFUSED_TARGET[0]}:{REFUSED_TARGET[1]} answered {name} through "
              f"the exit in {time.perf_counter() - started:.2f} s: {'ok' if good else 'FAILED (expected NOT_ALLOWED)'}",
              flush=True)
        ok = ok and good
    print("check: " + ("ok" if ok else "FAILED"), flush=True)
    return ok


def print_results(what: str, results: Sequence[EchoResult]) -> bool:
    print(f"{what}:", flush=True)
    for result in results:
        print(f"  {result.line()}", flush=True)
    return all(r.ok for r in results)


def example_url(allow: Sequence[str]) -> tuple[str, str]:
    """(a URL curl may fetch, a note) from the allowlist: its first concrete pattern, if any."""
    for pattern in allow:
        host, _, port = pattern.rpartition(":")
        if "*" not in host and port.isdigit():
            scheme = "https" if port == "443" else "http"
            return f"{scheme}://{host}:{port}/", ""
    if allow:
        return "http://HOST:PORT/", "   # HOST:PORT matching the allowlist"
    return "http://127.0.0.1:8000/", "   # after restarting with --allow 127.0.0.1:8000 (none is allowed now)"


def print_usage(net: Testnet, args: argparse.Namespace) -> None:
    options = net.options
    directory = net.directory_path
    if directory is not None:
        where = [f"  directory:  {directory}"]
    else:
        where = [f"  directory:  {net.directory_url} (a directory service, log {net.log_path('directory')}), "
                 f"documents signed by",
                 f"              {net.directory_authority}",
                 f"              python -m nyx.directory show --url {net.directory_url} --authority {net.directory_authority}"]
    lines = [
        "",
        f"nyx testnet up in {net.startup_s:.1f} s: {options.layers} layers x {options.mixes_per_layer} mixes, "
        f"{options.gateways} gateways ({', '.join(net.gateway_ids)}), each a process on {HOST} over QUIC",
        *where,
        f"  node logs:  {net.logs_dir}/<node>.log (stderr of each; configs in {net.workdir}/<node>.toml)",
        f"  exits may dial: {', '.join(options.allow) if options.allow else 'nothing but the echo and discard services'}",
        *(f"  probe:      {r.line()}" for r in net.probe_results),
    ]
    if net.socks5_address is not None:
        host, port = net.socks5_address
        url, note = example_url(options.allow)
        lines += [
            "",
            f"SOCKS5 front (python -m nyx.stream client, log {net.log_path('socks5-client')}): {host}:{port}",
            f"  curl --socks5-hostname {host}:{port} {url}{note}",
        ]
    use = [
        "            reader, writer = await client.open_connection(\"echo\")",
        "            writer.write(b\"hello, mixnet\")",
        "            writer.write_eof()",
        "            print(await reader.read())",
    ]
    if directory is not None:
        snippet = ["    import asyncio", "    import nyx", "", "    async def main() -> None:",
                   f"        async with nyx.Client({json.dumps(str(directory))}) as client:", *use]
    else:
        snippet = [
            "    import asyncio",
            "    import nyx",
            "    from nyx.directory.agent import DirectoryClient",
            "    from nyx.directory.document import TrustPolicy",
            "",
            f"    POLICY = TrustPolicy(frozenset({{bytes.fromhex({json.dumps(net.directory_authority)})}}), 1)",
            "",
            "    async def main() -> None:",
            f"        async with DirectoryClient([{json.dumps(net.directory_url)}], POLICY) as directory:",
            "            async with await nyx.Client.from_directory_service(directory) as client:",
            *("    " + line for line in use),
        ]
    lines += ["", f"From Python (with {CODE_ROOT} on PYTHONPATH):", "", *snippet, "", "    asyncio.run(main())", ""]
    print("\n".join(lines), flush=True)


# -- one process, simulated links -------------------------------------------------------------------


async def run_sim(args: argparse.Namespace, options: TestnetOptions) -> int:
    stop = stop_event()
    if args.socks5 is not None and args.socks5.lower() != "off":
        print(f"{PROG}: --sim runs no SOCKS5 front (its nodes are not on a real network); ignoring --socks5",
              file=sys.stderr)
    net = SimTestnet(options.layers, options.mixes_per_layer, options.gateways, options.allow,
                     **({"mean_delay_s": args.mean_delay} if args.mean_delay is not None else {}))
    async with net:
        print(f"nyx sim testnet up in {net.startup_s:.2f} s: {options.layers} layers x {options.mixes_per_layer} "
              f"mixes, {options.gateways} gateways, in this process over SimTransport", flush=True)
        check = asyncio.ensure_future(net.check(clients=args.clients, size=args.check_bytes))
        if not await until(stop, check):
            return 0
        ok = print_results("check", check.result()) and not net.crashed
        print("check: " + ("ok" if ok else "FAILED"), flush=True)
        if args.check_only:
            return 0 if ok else 1
        print("running; Ctrl-C (or SIGTERM) stops it", flush=True)
        await stop.wait()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
