"""The SCL catalogue (nyx/bench/scenarios.toml) against its source, field by field."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from nyx.bench import catalogue
from nyx.bench.catalogue import SOURCE_FIELDS, parse_slo

# A copy of the project's source document (spec/scalability.md in the shared folder), so the
# tests need only this repository; refresh it when the source changes.
SOURCE = Path(__file__).parent / "spec" / "scalability.md"
# Fields whose source text is wrapped in backticks; the catalogue keeps the text inside them.
BACKTICKED = {"metric", "follow_up"}


def _source_scenarios() -> dict[str, dict[str, str]]:
    """Parse the appendix: `#### シナリオ SCL-xxx: name`, then eleven `- **label SCL-xxx-NN**: value`."""
    text = SOURCE.read_text(encoding="utf-8")
    found: dict[str, dict[str, str]] = {}
    for block in re.split(r"^#### シナリオ ", text, flags=re.M)[1:]:
        head, *lines = block.splitlines()
        scenario_id, name = head.split(": ", 1)
        fields: dict[str, str] = {"name": name}
        for line in lines:
            match = re.match(r"- \*\*\S+ (SCL-\d{3})-(\d{2})\*\*: (.*)$", line)
            if not match:
                continue
            assert match[1] == scenario_id, f"{line!r} sits under {scenario_id}"
            key = SOURCE_FIELDS[int(match[2]) - 1]
            fields[key] = match[3].strip("`") if key in BACKTICKED else match[3]
        found[scenario_id] = fields
    return found


@pytest.fixture(scope="module")
def source() -> dict[str, dict[str, str]]:
    return _source_scenarios()


def test_the_copy_of_the_source_is_whole() -> None:
    assert SOURCE.stat().st_size > 40_000


def test_the_source_has_fifty_scenarios_of_eleven_fields(source: dict[str, dict[str, str]]) -> None:
    assert list(source) == [f"SCL-{n:03d}" for n in range(1, 51)]
    assert all(len(fields) == 12 for fields in source.values())  # name + 11


def test_every_field_of_every_scenario_matches_the_source(source: dict[str, dict[str, str]]) -> None:
    ours = {s.id: s for s in catalogue.load()}
    assert list(ours) == list(source)
    drift = [
        f"{sid} {key}: catalogue {getattr(ours[sid], key)!r} != source {value!r}"
        for sid, fields in source.items()
        for key, value in fields.items()
        if getattr(ours[sid], key) != value
    ]
    assert not drift, "\n".join(drift)


def test_every_slo_parses_into_operator_number_and_unit() -> None:
    for scenario in catalogue.load():
        threshold = scenario.threshold
        assert threshold.op in ("<=", ">=", "<", ">", "==")
        assert threshold.unit in ("ms", "s", "min", "h", "%", "x", "")


@pytest.mark.parametrize(
    ("text", "op", "number", "unit"),
    [
        ("≤ 3ms", "<=", 3.0, "ms"),
        ("Error rate < 0.05%", "<", 0.05, "%"),
        ("≥ 99.95%", ">=", 99.95, "%"),
        ("≤ 15分", "<=", 15.0, "min"),
        ("freshness<5m", "<", 5.0, "min"),
        ("Burn rate < 2x", "<", 2.0, "x"),
        ("429 occurrence=0", "==", 0.0, ""),
        ("0 missing", "==", 0.0, ""),
        ("connection success率≥99.9%", ">=", 99.9, "%"),
    ],
)
def test_slo_text_becomes_a_threshold(text: str, op: str, number: float, unit: str) -> None:
    threshold = parse_slo(text)
    assert (threshold.op, threshold.number, threshold.unit, threshold.text) == (op, number, unit, text)


def test_an_slo_without_a_comparison_is_refused_with_its_text() -> None:
    with pytest.raises(ValueError, match="fast enough"):
        parse_slo("fast enough")


def test_scope_and_status_agree() -> None:
    for scenario in catalogue.load():
        if scenario.in_scope:
            assert scenario.status in ("replayed", "pending"), scenario.id
            assert not scenario.out_of_scope_reason, scenario.id
        else:
            assert scenario.status == "out-of-scope", scenario.id
            assert scenario.out_of_scope_reason and "\n" not in scenario.out_of_scope_reason, scenario.id
        if scenario.status == "pending":
            assert scenario.waits_for.startswith("nyx."), scenario.id


def test_threshold_holds_compares_in_its_own_unit() -> None:
    assert catalogue.by_id("SCL-044").threshold.holds(2.9)
    assert not catalogue.by_id("SCL-044").threshold.holds(3.1)
    assert catalogue.by_id("scl-36").threshold.holds(99.8)
    assert catalogue.by_id("25").threshold.holds(0)
    with pytest.raises(KeyError, match="SCL-051"):
        catalogue.by_id("SCL-051")
