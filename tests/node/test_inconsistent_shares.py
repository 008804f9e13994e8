"""A Shamir dealer whose validly encrypted shares lie on two polynomials, in real node processes:
within the Berlekamp-Welch radius the cluster sum is exactly the honest run's, and the holder it
gave the off-polynomial share is the one named (the dealer cannot be told apart from it)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

SCENARIO = (
    'nodes = 5\nrounds = 2\nnodes_per_process = 5\n[data]\ndataset = "digits"\n'
    '[model]\nname = "mlp"\n[clustering]\ncluster_size = 5\n'
    '[aggregation]\nsecure = "shamir"\nthreshold = 2\n[timeouts]\ncollect_s = 5\n'
)


def _run(tmp_path: Path, phalanx, name: str, byzantine: str) -> dict:
    scenario = tmp_path / f"{name}.toml"
    scenario.write_text(SCENARIO + byzantine)
    out = tmp_path / name
    result = phalanx("testbed", "run", str(scenario), "--out", str(out), timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    summary: dict = json.loads((out / "summary.json").read_text())
    assert summary["all_digests_identical"], summary["rounds"]
    return summary


def _byzantine(behaviour: str) -> str:
    return f'[[byzantine]]\nbehaviour = "{behaviour}"\nnodes = ["node-03"]\n'


@pytest.mark.slow
def test_inconsistent_shares_to_one_holder_are_corrected_and_frame_that_holder(
    tmp_path: Path, phalanx
) -> None:
    # 5 partial sums, T = 2: Berlekamp-Welch corrects floor((5 - 2) / 2) = 1 wrong one.
    honest = _run(tmp_path, phalanx, "honest", "")
    # node-03 deals node-04 a share of the negated update, everyone else a share of its own.
    attacked = _run(tmp_path, phalanx, "attacked", _byzantine("inconsistent-shares:holders=1"))
    assert attacked["byzantine"] == {"node-03": "inconsistent-shares:holders=1"}
    for clean, record in zip(honest["rounds"], attacked["rounds"], strict=True):
        assert record["failed_clusters"] == [], record
        # the reconstructed sums, hence the models, are bit for bit the honest run's
        assert set(record["honest_digests"].values()) == set(clean["honest_digests"].values())
        assert record["liars"] == ["node-04"], record
        assert clean["liars"] == []
    # Named every round, the honest holder is the one the trust scores come to suspect.
    assert attacked["rounds"][-1]["trust_suspected"] == ["node-04"]


@pytest.mark.slow
def test_inconsistent_shares_beyond_the_radius_fail_the_cluster_never_a_wrong_sum(
    tmp_path: Path, phalanx
) -> None:
    # Two off-polynomial holders of five: 2 > 1 errors and 5 - 2 > 1, so no codeword is in reach.
    attacked = _run(tmp_path, phalanx, "attacked", _byzantine("inconsistent-shares:holders=2"))
    for record in attacked["rounds"]:
        assert record["failed_clusters"] == [0], record
