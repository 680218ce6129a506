"""`python -m nyx.bench micro`: hot-path figures, each beside a reference from the same run.

Each layer contributes a section: a function `(budget_s) -> list[MicroRecord]`. A layer's section
lives in its own module here (`micro_crypto.py`, `micro_fec.py`, ...) so that layers can grow
their records independently.
"""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from nyx.bench.timing import MicroRecord

Section = Callable[[float], list[MicroRecord]]

SECTIONS = (
    ("crypto", "nyx.bench.micro_crypto"),
    ("fec", "nyx.bench.micro_fec"),
    ("transport", "nyx.bench.micro_transport"),
    ("mix", "nyx.bench.micro_mix"),
    ("stream", "nyx.bench.micro_stream"),
    ("gateway", "nyx.bench.micro_gateway"),  # memory of 100,000 idle sessions: minutes, not a timing
    ("e2e", "nyx.bench.micro_e2e"),  # overhead per hop beyond mix delays; gateway processes forwarding
    ("multipath", "nyx.bench.micro_multipath"),  # one stream over 1, 3, 5 routes: no loss, 5% per link, a failed mix
)
"""Every section and its module, in the order the table prints them."""

OPTIONAL_REFERENCES = frozenset({"sphinxmix", "zfec", "reedsolo"})
"""Reference libraries a section compares against but nyx does not need. A section whose import
fails on one of these is skipped with a note; any other ImportError (nyx itself, a dependency)
is a broken build and propagates: a silently missing section would read as "not measured"."""


def missing_reference(exc: ImportError) -> str | None:
    """The optional reference library whose absence raised `exc`, or None if it is anything else."""
    top = (exc.name or "").partition(".")[0]
    return top if top in OPTIONAL_REFERENCES else None


def sections() -> dict[str, Section]:
    """Every section, by name, in the order the table prints them (imported lazily)."""
    found: dict[str, Section] = {}
    for name, module_name in SECTIONS:
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            library = missing_reference(exc)
            if library is None:
                raise
            print(f"micro {name}: {library} is not installed ({exc}); skipping the section", file=sys.stderr)
            continue
        found[name] = module.records
    return found


def run(names: Sequence[str] | None = None, budget_s: float = 0.3) -> list[MicroRecord]:
    """Run the named sections (all when None) and return their records."""
    available = sections()
    unknown = [name for name in names or () if name not in available]
    if unknown:
        raise ValueError(f"unknown micro section(s) {unknown}; known: {sorted(available)}")
    records: list[MicroRecord] = []
    for name, section in available.items():
        if names is None or name in names:
            records.extend(section(budget_s))
    return records


def format_table(records: Sequence[MicroRecord]) -> str:
    """A fixed-width table: operation, ops/s, reference, reference ops/s, ratio."""
    width = max([44, *(len(r.name) for r in records)])
    header = f"{'operation':<{width}} {'ops/s':>12}  {'reference':<40} {'ref ops/s':>12} {'ratio':>7}"
    lines = [header, "-" * len(header)]
    for r in records:
        lines.append(
            f"{r.name:<{width}} {r.ops_per_s:>12,.1f}  {r.reference:<40} "
            f"{r.reference_ops_per_s:>12,.1f} {r.ratio:>7.3f}"
        )
    return "\n".join(lines)


def write_json(records: Sequence[MicroRecord], path: Path) -> None:
    """Write the records as a JSON list of {name, ops_per_s, reference, reference_ops_per_s, ratio}."""
    path.write_text(json.dumps([r.as_json() for r in records], indent=2) + "\n")
