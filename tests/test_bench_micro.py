"""`python -m nyx.bench micro` sections: a missing reference library skips a section with a note;
a broken nyx import is never hidden."""

from __future__ import annotations

import sys

import pytest

from nyx.bench import micro


def test_an_import_error_from_nyx_itself_propagates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "nyx.bench.micro_mix", raising=False)
    monkeypatch.setitem(sys.modules, "nyx.mix.node", None)  # the mix layer exists but fails to import
    with pytest.raises(ImportError) as raised:
        micro.sections()
    assert raised.value.name == "nyx.mix.node"


def test_a_broken_dependency_propagates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "nyx.bench.micro_mix", raising=False)
    monkeypatch.setitem(sys.modules, "cryptography.hazmat.primitives.asymmetric.x25519", None)
    with pytest.raises(ImportError, match="x25519"):
        micro.sections()


def test_a_missing_reference_library_skips_its_section_with_a_note(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delitem(sys.modules, "nyx.bench.micro_fec", raising=False)
    monkeypatch.setitem(sys.modules, "reedsolo", None)  # as if not installed
    found = micro.sections()
    assert "fec" not in found and {"crypto", "transport", "mix"} <= set(found)
    assert "micro fec: reedsolo is not installed" in capsys.readouterr().err


def test_every_section_imports_when_everything_is_installed() -> None:
    assert list(micro.sections()) == [name for name, _ in micro.SECTIONS]


def test_only_the_reference_libraries_are_optional() -> None:
    assert micro.missing_reference(ModuleNotFoundError("x", name="zfec")) == "zfec"
    assert micro.missing_reference(ModuleNotFoundError("x", name="sphinxmix.SphinxClient")) == "sphinxmix"
    assert micro.missing_reference(ModuleNotFoundError("x", name="nyx.fec")) is None
    assert micro.missing_reference(ImportError("no name")) is None
