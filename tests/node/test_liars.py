"""Liars are named: a holder whose partial sums Berlekamp-Welch corrects is reported in every
round's record and in `summary.json`, and fed to the trust scores."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from phalanx.node.peer import unresponsive_after
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
    out = tmp_path / strategy
    result = phalanx("simulate", str(scenario), "--out", str(out), timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["all_digests_identical"]
    rounds: list[dict] = summary["rounds"]
    return rounds


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
    """12 liars among 40 peers in 4 clusters of 10: dealt 3 to a cluster they are all corrected
    (r = 3). Before any score exists (rounds 1-2) `balanced` draws random clusters and some get
    4 or more liars; once the named liars' scores rank them above the honest peers, it deals
    them round-robin and every cluster decodes and names its liars."""
    rounds = _simulate_liars(tmp_path, phalanx, "balanced", liars=12, rounds=7)
    assert any(record["failed_clusters"] for record in rounds[:2]), rounds
    liars = sorted(json.loads((tmp_path / "balanced" / "summary.json").read_text())["byzantine"])
    # Liars in a cluster without an output are not named, so the scores fill in over rounds;
    # by round 7 (seed 2) every liar has been named and ranks above every honest peer.
    last = rounds[-1]
    assert last["failed_clusters"] == [] and last["liars"] == liars, last["round"]
    per_cluster = [len(set(members) & set(liars)) for members in last["clusters"]]
    assert per_cluster == [3, 3, 3, 3]
