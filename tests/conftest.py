"""Shared helpers: run the real `phalanx` command in a subprocess, find free ports."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def phalanx_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO)
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def run_phalanx(
    *args: str, timeout: float = 600, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `phalanx ARGS` as a real process; returns the completed process (text output)."""
    return subprocess.run(
        [sys.executable, "-m", "phalanx.node", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=phalanx_env(),
        cwd=cwd or REPO,
    )


PIP_WHEEL = (sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q")


def build_wheel(source: Path, into: Path) -> Path:
    """`pip wheel` of the project at `source` (no dependencies, no build isolation)."""
    subprocess.run(
        [*PIP_WHEEL, str(source), "-w", str(into)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = into.glob("phalanx-*.whl")
    return wheel


def checkout_wheel(base: Path) -> Path:
    """A wheel built under `base` from a copy of the checkout's files (tracked and untracked, not
    ignored; tests left out), links such as ``phalanx/node -> ../node`` kept as links."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    source = base / "source"
    for name in filter(None, (entry.decode() for entry in listed)):
        if name.startswith("tests/") or not os.path.lexists(REPO / name):
            continue
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        if (REPO / name).is_symlink():
            (source / name).symlink_to(os.readlink(REPO / name))
        else:
            shutil.copyfile(REPO / name, source / name)
    return build_wheel(source, base / "dist")


@pytest.fixture
def phalanx():
    return run_phalanx
