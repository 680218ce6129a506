"""The SCL scenario catalogue: all 50 scenarios of ../shared/spec/scalability.md as data.

`scenarios.toml` (package data) holds every field of the source verbatim, so a reader can see the
scenario exactly as the specification states it, plus our fields: whether it belongs to the data
plane (`in_scope`, and why not in one line), and its `status` here: `replayed` (a replay exists in
`nyx.bench.scenarios`), `pending` (in scope; `waits_for` names the layer it needs) or
`out-of-scope`. `tests/test_bench_catalogue.py` re-parses the source and fails on any drift.

The SLO text is parsed when loaded (`parse_slo`) rather than stored twice, so the verbatim text
and the threshold a verdict uses cannot disagree.
"""

from __future__ import annotations

import operator
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Literal

Status = Literal["replayed", "pending", "out-of-scope"]

#: The eleven fields of a source scenario, in source order (SCL-xxx-01 .. SCL-xxx-11).
SOURCE_FIELDS = (
    "load_model",
    "target_layer",
    "bench_config",
    "main_metric",
    "slo",
    "metric",
    "precondition",
    "procedure",
    "fallback",
    "escalation",
    "follow_up",
)

_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    ">=": operator.ge,
    "<": operator.lt,
    ">": operator.gt,
    "==": operator.eq,
}
_OPERATOR_SPELLINGS = {"≤": "<=", "≥": ">=", "<=": "<=", ">=": ">=", "<": "<", ">": ">", "=": "=="}
# Units as the source writes them, normalised. In an SLO, "m" after a number means minutes
# ("freshness<5m", "alert detection ≤ 1m"), never metres or milli-anything.
_UNITS = {"ms": "ms", "s": "s", "m": "min", "分": "min", "min": "min", "h": "h", "%": "%", "x": "x", "": ""}
_THRESHOLD = re.compile(
    r"^(?P<subject>.*?)\s*(?P<op>≤|≥|<=|>=|<|>|=)\s*(?P<number>\d+(?:\.\d+)?)\s*(?P<unit>ms|min|s|m|h|%|x|分)?$"
)
_COUNT_ONLY = re.compile(r"^(?P<number>\d+(?:\.\d+)?)(?:\s+(?P<subject>\w+))?$")  # "0", "0 missing"


@dataclass(frozen=True, slots=True)
class Threshold:
    """An SLO threshold: `value op number unit` must hold. `unit` "" means a plain count."""

    text: str
    op: str
    number: float
    unit: str
    subject: str = ""

    def holds(self, value: float) -> bool:
        """Whether a measured value (in this threshold's unit) meets the SLO."""
        return _OPERATORS[self.op](value, self.number)

    def __str__(self) -> str:
        number = f"{self.number:g}"
        unit = "" if not self.unit else self.unit if self.unit in ("%", "x") else f" {self.unit}"
        subject = f"{self.subject} " if self.subject else ""
        return f"{subject}{self.op} {number}{unit}"

    def as_json(self) -> dict[str, str | float]:
        return {"text": self.text, "op": self.op, "number": self.number, "unit": self.unit}


def parse_slo(text: str) -> Threshold:
    """Parse an SLO cell of the source ("≤ 3ms", "Error rate < 0.05%", "drift<3%", "0 missing").

    Raises ValueError naming the text when it has no comparison we can read.
    """
    stripped = text.strip()
    match = _THRESHOLD.match(stripped)
    if match:
        return Threshold(
            text=text,
            op=_OPERATOR_SPELLINGS[match["op"]],
            number=float(match["number"]),
            unit=_UNITS[match["unit"] or ""],
            subject=match["subject"].strip(),
        )
    match = _COUNT_ONLY.match(stripped)
    if match:  # a bare count is an exact target: "0" compatibility errors, "0 missing"
        return Threshold(text=text, op="==", number=float(match["number"]), unit="", subject=match["subject"] or "")
    raise ValueError(f"SLO {text!r} has no operator, number and unit we can read")


@dataclass(frozen=True, slots=True)
class Scenario:
    """One SCL scenario: the source's fields verbatim, the parsed SLO, and our scope and status."""

    id: str
    name: str
    load_model: str
    target_layer: str
    bench_config: str
    main_metric: str
    slo: str
    metric: str
    precondition: str
    procedure: str
    fallback: str
    escalation: str
    follow_up: str
    in_scope: bool
    out_of_scope_reason: str
    status: Status
    waits_for: str

    @property
    def threshold(self) -> Threshold:
        return parse_slo(self.slo)

    def source_fields(self) -> dict[str, str]:
        """The eleven source fields, keyed as in SOURCE_FIELDS."""
        return {name: getattr(self, name) for name in SOURCE_FIELDS}


def _check(scenario: Scenario) -> None:
    if scenario.status not in ("replayed", "pending", "out-of-scope"):
        raise ValueError(f"{scenario.id}: unknown status {scenario.status!r}")
    if scenario.in_scope == (scenario.status == "out-of-scope"):
        raise ValueError(f"{scenario.id}: status {scenario.status} contradicts in_scope={scenario.in_scope}")
    if not scenario.in_scope and not scenario.out_of_scope_reason:
        raise ValueError(f"{scenario.id}: out of scope without a reason")
    if scenario.status == "pending" and not scenario.waits_for:
        raise ValueError(f"{scenario.id}: pending without the layer it waits for")
    parse_slo(scenario.slo)


@cache
def load() -> tuple[Scenario, ...]:
    """Every scenario, in id order (read once per process; the data is immutable)."""
    raw = tomllib.loads(resources.files("nyx.bench").joinpath("scenarios.toml").read_text(encoding="utf-8"))
    scenarios = tuple(Scenario(**entry) for entry in raw["scenario"])
    for scenario in scenarios:
        _check(scenario)
    return scenarios


def by_id(scenario_id: str) -> Scenario:
    """The scenario `SCL-044` (also accepts `scl-44`, `44`); KeyError that lists the form."""
    digits = re.sub(r"^(?:scl-?)?", "", scenario_id.strip(), flags=re.IGNORECASE)
    if not digits.isdigit():
        raise KeyError(f"{scenario_id!r} is not a scenario id (SCL-001 .. SCL-050)")
    wanted = f"SCL-{int(digits):03d}"
    for scenario in load():
        if scenario.id == wanted:
            return scenario
    raise KeyError(f"no scenario {wanted} in the catalogue (SCL-001 .. SCL-050)")
