"""Liars are named: a holder whose partial sums Berlekamp-Welch corrects is reported in every
round's record and in `summary.json`, and fed to the trust scores."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.mark.slow
def test_a_lying_shamir_holder_is_named_every_round(tmp_path: Path, phalanx) -> None:
    scenario = tmp_path / "liar.toml"
    scenario.write_text(
        'nodes = 5\nrounds = 3\nnodes_per_process = 5\n[data]\ndataset = "digits"\n'
        '[model]\nname = "mlp"\n[clustering]\ncluster_size = 5\n'
        '[aggregation]\nsecure = "shamir"\nthreshold = 2\n[timeouts]\ncollect_s = 5\n'
        '[[byzantine]]\nbehaviour = "corrupt-partial"\nnodes = ["node-03"]\n'
    )
    out = tmp_path / "run"
    result = phalanx("testbed", "run", str(scenario), "--out", str(out), timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["all_digests_identical"]
    for record in summary["rounds"]:
        assert record["failed_clusters"] == [], record
        assert record["liars"] == ["node-03"], record
    # Named every round, its suspicion score rises past the threshold; nobody else's does.
    assert summary["rounds"][-1]["trust_suspected"] == ["node-03"]
