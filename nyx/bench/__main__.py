"""`python -m nyx.bench`: benchmarks from the command line.

    python -m nyx.bench micro [--only crypto,fec] [--budget S] [--json FILE]
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "micro":
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


if __name__ == "__main__":
    sys.exit(main())
