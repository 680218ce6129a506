"""The layer rule of docs/architecture.md, checked on the source: no layer imports one above it.

Order: crypto, fec, transport, node, directory, mix, cover, stream. `nyx.telemetry` may be imported by any
layer (and imports only itself); nothing but `nyx.bench` imports `nyx.bench`. A `__main__.py`
is a program (`python -m nyx.mix`), not part of its layer's library: it may compose any layers
but `nyx.bench`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "nyx"
ORDER = ["crypto", "fec", "transport", "node", "directory", "mix", "cover", "stream"]


def _imported_layers(path: Path) -> set[str]:
    layers = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "nyx" and len(parts) > 1:
                layers.add(parts[1])
    return layers


def _modules(layer: str) -> list[Path]:
    return sorted(p for p in (PACKAGE / layer).rglob("*.py") if p.name != "__main__.py")


@pytest.mark.parametrize("layer", ORDER + ["telemetry"])
def test_layer_imports_only_layers_below_it(layer: str) -> None:
    allowed = {"telemetry", layer}
    if layer != "telemetry":
        allowed |= set(ORDER[: ORDER.index(layer)])
    for path in _modules(layer):
        above = _imported_layers(path) - allowed
        assert not above, f"{path.relative_to(PACKAGE.parent)} imports {sorted(above)}, above {layer}"


def test_nothing_outside_bench_imports_bench() -> None:
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.is_relative_to(PACKAGE / "bench"):
            continue
        assert "bench" not in _imported_layers(path), f"{path} imports nyx.bench"
