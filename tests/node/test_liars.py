"""Liars are named: a holder whose partial sums Berlekamp-Welch corrects is reported in every
round's record and in `summary.json`, and fed to the trust scores."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from phalanx.node.peer import pooled_tests, unresponsive_after
from phalanx.node.protocols import ClusterOutput


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


def _simulate_liars(
    tmp_path: Path, phalanx, strategy: str, liars: int = 14, rounds: int = 5
) -> list[dict]:
    """40 peers in clusters of 10 under Shamir (T = 4, so r = 3 lies are corrected), `liars` of
    them lying holders: a cluster that gets more than 3 liars has no output."""
    scenario = tmp_path / f"{strategy}.toml"
    scenario.write_text(
        f'name = "liar-cascade"\nseed = 2\nnodes = 40\nrounds = {rounds}\n'
        '[data]\ndataset = "digits"\n'
        f'[model]\nname = "mlp"\n[clustering]\ncluster_size = 10\nstrategy = "{strategy}"\n'
        'echo = false\n[aggregation]\nsecure = "shamir"\nthreshold = 4\n'
        '[membership]\nprotocol = "off"\n'
        f'[[byzantine]]\nbehaviour = "corrupt-partial"\ncount = {liars}\n'
    )
    rounds: list[dict] = _simulate(phalanx, scenario, tmp_path / strategy)["rounds"]
    return rounds


def _simulate(phalanx, scenario: Path, out: Path, *flags: str) -> dict:
    """`phalanx simulate SCENARIO FLAGS --out OUT`: its `summary.json`, honest models identical."""
    result = phalanx("simulate", str(scenario), *flags, "--out", str(out), timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary: dict = json.loads((out / "summary.json").read_text())
    assert summary["all_digests_identical"]
    return summary


def test_members_of_a_failed_cluster_are_still_waited_for_in_the_next_round(
    tmp_path: Path, phalanx
) -> None:
    """A cluster without an output says nothing about which member answered. Its honest members
    take part in the next round like everyone else: no round waits out a deadline for them, and
    the only peers a round leaves out are the members of that round's failed clusters. (When
    failure meant exclusion, the skipped keys and shares failed more clusters each round, until
    every peer was excluded and every round waited out its deadlines.)"""
    rounds = _simulate_liars(tmp_path, phalanx, "random")
    assert any(record["failed_clusters"] for record in rounds[:-1]), rounds
    for record in rounds:
        failed_members = sorted(
            node for index in record["failed_clusters"] for node in record["clusters"][index]
        )
        assert record["excluded"] == failed_members, record["round"]
        assert record["duration_s"] == 0.0, (record["round"], record["phase_s"])
        assert len(record["failed_clusters"]) <= 2, record["round"]


def test_only_peers_a_published_output_left_out_are_not_waited_for() -> None:
    view = [f"node-{i}" for i in range(7)]
    clusters = [view[0:3], view[3:6]]
    total = np.zeros(2, np.float32)
    outputs = {0: ClusterOutput(0, total, ("node-0", "node-1"), "node-0")}  # cluster 1 failed
    # node-2 sent nothing its publisher used; node-6 is in no cluster; cluster 1's members
    # (node-3..5) are undecided and still waited for
    assert unresponsive_after(view, clusters, outputs) == {"node-2", "node-6"}
    assert unresponsive_after(view, clusters, {}) == {"node-6"}


def test_balanced_clusters_spread_the_named_liars_until_every_cluster_decodes(
    tmp_path: Path, phalanx
) -> None:
    """`node/scenarios/liar-cascade.toml`: 12 liars among 40 peers in 4 clusters of 10, dealt 3
    to a cluster they are all corrected (r = 3). Before any score exists `balanced` draws random
    clusters and some get 4 or more liars. Named liars (weight 1) and members of failed
    clusters (weight 0.5, the default `clustering.missing_output_suspicion`) gain suspicion, so
    the liars soon rank above the honest peers; `balanced` then deals them round-robin and
    every cluster decodes.

    Seed 2 measured: failed clusters in rounds 1-2 only, 3 liars in every cluster from round 4,
    all 12 liars suspected from round 6 (11 at rounds 4-5), never an honest peer."""
    scenario = Path(__file__).resolve().parents[2] / "node" / "scenarios" / "liar-cascade.toml"
    summary = _simulate(phalanx, scenario, tmp_path / "balanced", "--rounds", "6")
    rounds = summary["rounds"]
    assert any(record["failed_clusters"] for record in rounds[:2]), rounds
    liars = sorted(summary["byzantine"])
    for record in rounds:
        assert set(record["liars"]) <= set(liars), record["round"]
        assert set(record["trust_suspected"]) <= set(liars), record["round"]
        if record["round"] >= 3:
            assert record["failed_clusters"] == [], record["round"]
        if record["round"] >= 4:
            per_cluster = [len(set(members) & set(liars)) for members in record["clusters"]]
            assert per_cluster == [3, 3, 3, 3], record["round"]
    assert rounds[-1]["trust_suspected"] == liars


def test_a_cluster_without_an_output_is_a_positive_pooled_test() -> None:
    # cluster 1 flagged by the outer rule, cluster 2 published nothing, 0 and 3 accepted
    assert pooled_tests(4, flagged=[1], published=[0, 1, 3], missing_severity=1.0) == {
        1: 1.0,
        2: 1.0,
    }
    assert pooled_tests(4, flagged=[1], published=[0, 1, 3], missing_severity=0.5) == {
        1: 1.0,
        2: 0.5,
    }
    # a quarantine cluster without output stays at severity 1; 0 turns the missing test off
    assert pooled_tests(3, flagged=[2], published=[0], missing_severity=0.0) == {2: 1.0}


def test_members_of_a_failed_cluster_become_suspected_and_named_liars_more_so(
    tmp_path: Path, phalanx
) -> None:
    """A Shamir cluster past Berlekamp-Welch's radius names nobody, but its lack of an output
    is a positive pooled test: every member's score rises by the learning rate (0.3) times the
    default severity 0.5. Members of a cluster that decoded keep 0 unless named, and a named
    liar's score rises by the full learning rate, so it outranks them."""
    rounds = _simulate_liars(tmp_path, phalanx, "random", rounds=1)
    record = rounds[0]
    assert record["failed_clusters"], record
    byzantine = set(json.loads((tmp_path / "random" / "summary.json").read_text())["byzantine"])
    members = {node for cluster in record["clusters"] for node in cluster}
    honest = min(members - byzantine)
    node_log = tmp_path / "random" / "nodes" / f"{honest}.jsonl"
    events = [json.loads(line) for line in node_log.read_text().splitlines()]
    scores = next(event for event in events if event["event"] == "round")["trust"]["scores"]
    assert len(scores) == 40
    failed = {node for index in record["failed_clusters"] for node in record["clusters"][index]}
    for node, score in scores.items():
        expected = 0.3 if node in record["liars"] else 0.15 if node in failed else 0.0
        assert score == pytest.approx(expected), (node, score)
