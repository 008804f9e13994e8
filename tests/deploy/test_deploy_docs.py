"""docs/operations.md stays true: every exported metric and every exit code is documented."""

from __future__ import annotations

import re
from pathlib import Path

import phalanx.node.runner as runner
from phalanx.node.metrics import NodeMetrics

DOC = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()


def test_metrics_reference_lists_exactly_the_exported_families() -> None:
    suffix = {"counter": "_total", "info": "_info"}
    exported = {f.name + suffix.get(f.type, "") for f in NodeMetrics("n").registry.collect()}
    documented = set(re.findall(r"^\| `(phalanx_[a-z_]+)`", DOC, flags=re.MULTILINE))
    assert documented == exported


def test_exit_codes_table_matches_the_runner() -> None:
    codes = {v for k, v in vars(runner).items() if k.startswith("EXIT_")}
    documented = {int(c) for c in re.findall(r"^\| (\d+) \|", DOC, flags=re.MULTILINE)}
    assert documented == codes
