"""Shared helpers: run the real `phalanx` command in a subprocess, find free ports."""

from __future__ import annotations

import os
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


@pytest.fixture
def phalanx():
    return run_phalanx
