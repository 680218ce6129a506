"""`python -m nyx.bench`: benchmarks from the command line.

    python -m nyx.bench micro [--only crypto,fec] [--budget S] [--json FILE]
    python -m nyx.bench list
    python -m nyx.bench run SCL-044 [SCL-003 ...] [--duration S] [--scale F] [--transport sim|quic] [--json FILE]
    python -m nyx.bench run --all [--quick] [--out DIR] [--fail-on-slo] [--slo '<= 3 ms']
    python -m nyx.bench anonymity [--quick] [--json FILE] [--plot FILE]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from nyx.bench import micro


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m nyx.bench", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    micro_cmd = commands.add_parser("micro", help="hot-path figures beside same-run references")
    micro_cmd.add_argument("--only", help="comma-separated sections (default: all)")
    micro_cmd.add_argument(
        "--budget", type=float, default=0.3, help="seconds spent timing each operation (default 0.3)"
    )
    micro_cmd.add_argument("--json", type=Path, help="also write the records to this JSON file")
    commands.add_parser("list", help="the SCL catalogue: id, name, layer, SLO, status")
    run_cmd = commands.add_parser("run", help="replay SCL scenarios in-process and judge them against their SLO")
    run_cmd.add_argument("ids", nargs="*", metavar="SCL-xxx", help="scenarios to run")
    run_cmd.add_argument("--all", action="store_true", help="every replayed scenario")
    run_cmd.add_argument("--quick", action="store_true", help="each replay's short setting (seconds, small scale)")
    run_cmd.add_argument("--duration", type=float, help="seconds of load (default: the replay's own)")
    run_cmd.add_argument("--scale", type=float, help="fraction of the load model's rate to offer (default 1)")
    run_cmd.add_argument("--transport", choices=("sim", "quic"), default="sim", help="network for packet replays")
    run_cmd.add_argument("--seed", type=int, default=1, help="seed of the replay's randomness")
    run_cmd.add_argument(
        "--gateways", type=int, help="SCL-003: gateway processes sharing the load (default 30; 1 puts it all on one)"
    )
    run_cmd.add_argument("--json", type=Path, help="write the result(s) as JSON to this file (plots beside it)")
    run_cmd.add_argument("--out", type=Path, help="write SCL-xxx.json (and SCL-xxx.png for latencies) here")
    run_cmd.add_argument(
        "--slo", help="judge against this SLO instead of the catalogue's, e.g. '<= 1 ms' (probing a replay)"
    )
    run_cmd.add_argument(
        "--fail-on-slo", action="store_true", help="exit 1 unless every verdict is PASS (FAIL or INCONCLUSIVE)"
    )
    anon_cmd = commands.add_parser("anonymity", help="sender entropy and a timing attack vs. latency and cover")
    anon_cmd.add_argument("--quick", action="store_true", help="the small sweep (two seeds, 20 virtual s per run; seconds here)")
    anon_cmd.add_argument("--json", type=Path, help="write the sweep as JSON (full sweep default: anonymity.json)")
    anon_cmd.add_argument("--plot", type=Path, help="write the plot here (default: beside the JSON, .png)")
    return parser


def _anonymity(args: argparse.Namespace) -> int:
    from nyx.bench.anonymity import sweep

    plan = sweep.QUICK if args.quick else sweep.FULL
    rows = sweep.run_sweep(plan)
    print(sweep.format_table(rows))
    print("\n" + sweep.describe(plan, rows))
    json_path = args.json or (None if args.quick else Path("anonymity.json"))
    if json_path is not None:
        sweep.write_json(plan, rows, json_path)
        print(f"wrote {json_path}")
    plot_path = args.plot or (json_path.with_suffix(".png") if json_path is not None else None)
    if plot_path is not None and sweep.write_plot(rows, plot_path):
        print(f"wrote {plot_path}")
    return 0


def _micro(args: argparse.Namespace) -> int:
    names = args.only.split(",") if args.only else None
    try:
        records = micro.run(names, budget_s=args.budget)
    except ValueError as error:
        print(f"nyx.bench: {error}", file=sys.stderr)
        return 2
    print(micro.format_table(records))
    if args.json:
        micro.write_json(records, args.json)
        print(f"\nwrote {len(records)} records to {args.json}")
    return 0


def _list() -> int:
    from nyx.bench import catalogue, report

    scenarios = catalogue.load()
    print(report.catalogue_table(scenarios))
    counts = {status: sum(s.status == status for s in scenarios) for status in ("replayed", "pending", "out-of-scope")}
    print(f"\n{len(scenarios)} scenarios: " + ", ".join(f"{n} {status}" for status, n in counts.items()))
    return 0


def _run(args: argparse.Namespace) -> int:
    from nyx.bench import report, runner

    if args.all == bool(args.ids):
        print("nyx.bench run: name scenarios (SCL-044 ...) or give --all, not both", file=sys.stderr)
        return 2
    try:
        ids = [s.id for s in runner.replayed()] if args.all else [runner.resolve(i).id for i in args.ids]
    except (KeyError, runner.NotReplayedError) as error:
        print(f"nyx.bench run: {error.args[0]}", file=sys.stderr)
        return 2
    slo = None
    if args.slo is not None:
        from nyx.bench.catalogue import parse_slo

        try:
            slo = parse_slo(args.slo)
        except ValueError as error:
            print(f"nyx.bench run: --slo: {error}", file=sys.stderr)
            return 2
    settings = runner.RunSettings(args.duration, args.scale, args.transport, args.quick, args.seed, slo, args.gateways)
    try:
        results = runner.run_all(ids, settings)
    except ValueError as error:
        print(f"nyx.bench run: {error}", file=sys.stderr)
        return 2
    if len(results) > 1:
        print()
        print(report.verdict_table(results))
    for result in results:
        for note in result.notes():
            print(f"  {result.scenario.id}: {note}")
    for path in runner.save(results, args.json, args.out):
        print(f"wrote {path}")
    if args.fail_on_slo and not all(r.passed for r in results):
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "micro":
        return _micro(args)
    if args.command == "list":
        return _list()
    if args.command == "anonymity":
        return _anonymity(args)
    return _run(args)


if __name__ == "__main__":
    sys.exit(main())
