"""The context of a benchmark run, recorded beside its figures so a JSON file can be compared
with another later: what ran (nyx version, git commit), on what (Python, QUIC backends, event
loop, cores), how (seed, transport, duration, scale) and when."""

from __future__ import annotations

import datetime
import functools
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

_PACKAGES = ("aioquic", "qh3", "uvloop", "cryptography", "numpy")


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


@functools.cache
def git_commit() -> str | None:
    """The commit of the checkout nyx runs from, or None when it is not a git work tree (an
    installed wheel) or git is missing."""
    source = Path(__file__).resolve().parents[2]
    if not (source / ".git").exists():
        return None
    try:
        done = subprocess.run(
            ["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = done.stdout.strip()
    if done.returncode != 0 or not commit:
        return None
    dirty = subprocess.run(
        ["git", "-C", str(source), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True, text=True, timeout=5, check=False,
    ).stdout.strip()
    return commit + ("+dirty" if dirty else "")


def run_context(seed: int, transport: str, quick: bool, duration_s: float, scale: float) -> dict[str, Any]:
    return {
        "nyx": _version("nyx"),
        "commit": git_commit(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "packages": {name: _version(name) for name in _PACKAGES},
        "cpus": os.cpu_count(),
        "transport": transport,
        "seed": seed,
        "quick": quick,
        "duration_s": duration_s,
        "scale": scale,
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
