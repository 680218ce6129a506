"""`python -m nyx.directory` as a real process: the embedded default, operator errors, show, and
a second authority co-signing a threshold document."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from nyx.directory.authority import public_bytes
from nyx.directory.keys import load_or_create_authority_key

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
CMD = [sys.executable, "-m", "nyx.directory"]


def start(*args: str) -> tuple[subprocess.Popen[str], dict[str, object]]:
    process = subprocess.Popen([*CMD, "serve", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=ENV, cwd=ROOT)
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        process.wait(10)
        raise AssertionError(f"no record line; stderr: {process.stderr.read() if process.stderr else ''}")
    return process, json.loads(line)


def stop(process: subprocess.Popen[str]) -> int:
    process.send_signal(signal.SIGTERM)
    return process.wait(15)


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CMD, *args], capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=30)


def test_the_embedded_default_serves_a_document_that_show_verifies() -> None:
    process, record = start("--listen", "127.0.0.1:0")
    try:
        assert str(record["url"]).startswith("http://127.0.0.1:") and record["threshold"] == 1
        shown = run("show", "--url", str(record["url"]), "--authority", str(record["authority"]))
        assert shown.returncode == 0, shown.stderr
        assert json.loads(shown.stdout)["epoch"] >= 1
        wrong = run("show", "--url", str(record["url"]), "--authority", "11" * 32)
        assert wrong.returncode == 1 and "refused" in wrong.stderr
    finally:
        assert stop(process) == 0


def test_a_taken_port_exits_75_and_a_bad_authority_key_exits_78() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = run("serve", "--listen", f"127.0.0.1:{port}")
    assert busy.returncode == 75 and "cannot listen" in busy.stderr and "Traceback" not in busy.stderr
    bad = run("serve", "--authority", "not-hex")
    assert bad.returncode == 78 and "--authority" in bad.stderr and "Traceback" not in bad.stderr
    over = run("serve", "--threshold", "2")
    assert over.returncode == 78 and "threshold" in over.stderr


def test_a_readable_authority_key_file_is_refused(tmp_path: Path) -> None:
    load_or_create_authority_key(tmp_path)
    (tmp_path / "authority.key").chmod(0o644)
    refused = run("serve", "--data-dir", str(tmp_path), "--listen", "127.0.0.1:0")
    assert refused.returncode == 78 and "chmod 600" in refused.stderr


def test_a_second_authority_cosigns_and_a_two_of_two_client_accepts(tmp_path: Path) -> None:
    second = load_or_create_authority_key(tmp_path / "second")
    second_hex = public_bytes(second.public_key()).hex()
    process, record = start("--listen", "127.0.0.1:0", "--threshold", "2", "--authority", second_hex,
                            "--data-dir", str(tmp_path / "first"))
    try:
        url, first_hex = str(record["url"]), str(record["authority"])
        both = ["--authority", first_hex, "--authority", second_hex, "--threshold", "2"]
        assert run("show", "--url", url, *both).returncode == 1  # only one signature so far
        assert run("cosign", "--url", url, "--data-dir", str(tmp_path / "nobody")).returncode == 78  # no key there
        outsider = tmp_path / "outsider"
        assert isinstance(load_or_create_authority_key(outsider), Ed25519PrivateKey)
        refused = run("cosign", "--url", url, "--data-dir", str(outsider))
        assert refused.returncode == 1 and "not one of this directory's authorities" in refused.stderr
        cosigned = run("cosign", "--url", url, "--data-dir", str(tmp_path / "second"))
        assert cosigned.returncode == 0, cosigned.stderr
        shown = run("show", "--url", url, *both)
        assert shown.returncode == 0, shown.stderr
    finally:
        assert stop(process) == 0
