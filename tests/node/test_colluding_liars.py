"""Colluding Shamir holders (`collude-partial`) on the memory engine, which runs the node code.

One cluster of s = 10 holders, threshold T = 4, so Berlekamp-Welch corrects r = 3 wrong partial
sums. Colluders shift their partial sums onto the codeword that vanishes at the first T - 1 = 3
honest holders' points. Within the radius they are corrected and named; from s - T + 1 - r = 4
colluders on the decoder lands on the shifted codeword: the sum is wrong and the honest holders
outside those three points are the ones named.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import tomli_w

from tests.conftest import run_phalanx


def _simulate(tmp_path: Path, colluders: list[str]) -> dict[str, Any]:
    scenario: dict[str, Any] = {
        "name": "colluding-liars",
        "seed": 3,
        "nodes": 10,
        "rounds": 2,
        "data": {"dataset": "digits", "partition": "iid"},
        "model": {"name": "mlp"},
        "clustering": {"cluster_size": 10},
        "aggregation": {"secure": "shamir", "threshold": 4},
        "timeouts": {"collect_s": 5.0, "rpc_s": 2.0, "startup_s": 60.0},
    }
    if colluders:
        scenario["byzantine"] = [{"behaviour": "collude-partial", "nodes": colluders}]
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "scenario.toml"
    path.write_text(tomli_w.dumps(scenario))
    out = tmp_path / "out"
    result = run_phalanx("simulate", str(path), "--out", str(out), timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary: dict[str, Any] = json.loads((out / "summary.json").read_text())
    assert summary["all_digests_identical"], summary["rounds"]
    return summary


def _digests(record: dict[str, Any]) -> set[str]:
    return set(record["honest_digests"].values())


def test_colluding_holders_are_corrected_within_the_radius_and_frame_honest_ones_past_it(
    tmp_path: Path,
) -> None:
    clean = _simulate(tmp_path / "clean", [])
    within = _simulate(tmp_path / "two", ["node-08", "node-09"])
    past = _simulate(tmp_path / "four", ["node-06", "node-07", "node-08", "node-09"])
    rounds = zip(clean["rounds"], within["rounds"], past["rounds"], strict=True)
    for honest, corrected, framed in rounds:
        assert honest["liars"] == []
        # 2 <= r: the true sum, the same models as the clean run, the colluders named
        assert corrected["failed_clusters"] == [], corrected
        assert _digests(corrected) == _digests(honest)
        assert corrected["liars"] == ["node-08", "node-09"]
        # 4 = s - T + 1 - r: a wrong sum that decodes cleanly, and three honest holders named
        assert framed["failed_clusters"] == [], framed
        assert _digests(framed) != _digests(honest)
        assert framed["liars"] == ["node-03", "node-04", "node-05"]
