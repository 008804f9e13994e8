"""`make run`'s scenario (node/scenarios/demo.toml) shows the point, and its report says what
each part did: the liar that Berlekamp-Welch corrected, the poisoned cluster output that the
robust rule flagged, and the bytes that secret sharing cost. Run on the memory engine
(bit-identical to the daemons) with a smaller model and data set, so that it is quick."""

from __future__ import annotations

import json
from pathlib import Path

DEMO = Path(__file__).resolve().parents[2] / "node" / "scenarios" / "demo.toml"


def test_the_demo_run_reports_what_mpc_byzantine_peers_and_the_rule_did(
    tmp_path: Path, phalanx
) -> None:
    out = tmp_path / "run"
    result = phalanx(
        "simulate",
        str(DEMO),
        "--rounds",
        "2",
        "--dataset",
        "digits",
        "--model",
        "mlp",
        "--out",
        str(out),
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["all_digests_identical"]
    for record in summary["rounds"]:
        assert record["liars"] == ["node-03"]
        assert 2 in record["flagged_clusters"]  # the cluster that holds node-12
    printed = " ".join(result.stdout.split())
    assert "liars named" in printed and "node-03 in 2 of 2 rounds" in printed
    assert "cluster 2 (holds node-12) in 2 of 2 rounds" in printed
    assert "shamir inside each cluster of 5" in printed
    report = (out / "report.md").read_text()
    assert "## What happened" in report and "node-03 in 2 of 2 rounds" in report
