"""The tolerance map's predicted-against-measured machinery (experiments.metrics, .tolerance).

Summaries are built from the real cluster strategies (`clustering.strategies.compute_assignment`),
round by round as a run records them, so the measured side counts what the system would record.
"""

from __future__ import annotations

import math
import tomllib
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from phalanx.clustering.analysis import corruption_distribution
from phalanx.clustering.strategies import cluster_sizes, compute_assignment
from phalanx.experiments.metrics import (
    cell_metrics,
    colluding_threshold,
    corruption_threshold,
    holder_law,
    round_rows,
)
from phalanx.experiments.report import write_report
from phalanx.experiments.store import CellRecord, ResultStore
from phalanx.experiments.tolerance import (
    binomial_interval,
    build_map,
    clopper_pearson,
    predicted_tolerated,
    prediction_curve,
    tolerances,
)

REPO = Path(__file__).resolve().parents[2]
SPEC = REPO / "experiments" / "specs" / "tolerance-map.toml"


def node_names(count: int) -> list[str]:
    width = max(2, len(str(count - 1)))
    return [f"node-{i:0{width}d}" for i in range(count)]


def scenario_of(
    nodes: int,
    size: int,
    strategy: str,
    faulty: list[str],
    secure: str = "none",
    behaviour: str = "sign-flip",
) -> dict[str, Any]:
    return {
        "nodes": nodes,
        "clustering": {"strategy": strategy, "cluster_size": size},
        "aggregation": {"rule": "median", "secure": secure},
        "byzantine": [{"behaviour": behaviour, "nodes": faulty}] if faulty else [],
    }


def recorded_summary(scenario: dict[str, Any], rounds: int, seed: int) -> dict[str, Any]:
    """What `summary.json` records per round for a clean run of the scenario's clusters."""
    view = node_names(scenario["nodes"])
    clustering = scenario["clustering"]
    records = []
    for round_ in range(1, rounds + 1):
        assignment = compute_assignment(
            view,
            round_,
            f"seed-{seed}".encode(),
            clustering["strategy"],
            clustering["cluster_size"],
        )
        clusters = assignment.as_lists()
        records.append(
            {
                "round": round_,
                "accuracy": 0.5,
                "loss": 1.0,
                "duration_s": 0.0,
                "bytes_sent": {node: 100 for node in view},
                "excluded": [],
                "clusters": clusters,
                "cluster_outputs": {str(i): {"included": c} for i, c in enumerate(clusters)},
                "failed_clusters": [],
                "flagged_clusters": list(range(len(clusters))),  # a verdict, not corruption
                "quarantined_clusters": [],
                "digests_identical": True,
            }
        )
    return {"rounds": records}


def record_of(scenario: dict[str, Any], rounds: int, seed: int, index: int) -> CellRecord:
    metrics = cell_metrics(round_rows(recorded_summary(scenario, rounds, seed), scenario), scenario)
    return CellRecord(
        id=f"c{index:04d}",
        cell_index=index,
        axes={"clustering.strategy": scenario["clustering"]["strategy"]},
        labels={
            "clustering.strategy": scenario["clustering"]["strategy"],
            "clustering.cluster_size": str(scenario["clustering"]["cluster_size"]),
            "byzantine": f"f={sum(len(entry['nodes']) for entry in scenario['byzantine'])}",
        },
        seed=seed,
        status="ok",
        error=None,
        scenario_hash="-",
        final_accuracy=0.5,
        final_digest=None,
        digests_identical=True,
        duration_s=10.0,
        versions={},
        git_commit=None,
        metrics=metrics,
    )


def test_random_rounds_follow_the_exact_law_inside_the_binomial_interval() -> None:
    # 20 peers, clusters of 4 (m = 5, 2 tolerated), 3 faulty: overwhelmed when the three sit in
    # three different clusters, P = (16/19)(12/18)
    faulty = ["node-00", "node-05", "node-10"]
    scenario = scenario_of(20, 4, "random", faulty)
    records = [record_of(scenario, 100, seed, seed) for seed in range(4)]
    (cell,) = build_map(records)
    distribution = corruption_distribution(cluster_sizes(20, 4), (1,) * 5, 3)
    exact = float(distribution.prob_at_least(3))
    assert exact == pytest.approx(16 / 19 * 12 / 18)
    assert cell.law == "exact" and cell.predicted_rate == pytest.approx(exact)
    assert (cell.rounds, cell.seeds) == (400, 4)
    assert cell.inside, (cell.overwhelmed, cell.acceptance())
    assert cell.predicted_fraction == pytest.approx(float(distribution.expected_fraction()))
    half = cell.corrupted.half_width
    assert cell.predicted_fraction is not None
    assert abs(cell.corrupted.mean - cell.predicted_fraction) < max(3 * half, 0.02)
    # the flagged clusters (all of them here) are the rule's verdict and are not counted
    assert cell.measured_rate < 1.0
    # a wrong prediction, e.g. twice the corruption threshold, falls outside the interval
    wrong = float(corruption_distribution(cluster_sizes(20, 4), (2,) * 5, 3).prob_at_least(3))
    low, high = binomial_interval(cell.rounds, wrong)
    assert not low <= cell.overwhelmed <= high
    # and so does a prediction off by a tenth
    low, high = binomial_interval(cell.rounds, exact - 0.1)
    assert not low <= cell.overwhelmed <= high


def test_the_spec_places_faulty_peers_in_static_s_worst_case() -> None:
    """Every fault fraction of the spec, every k: static's measured rate is its worst case."""
    spec = tomllib.loads(SPEC.read_text())
    nodes = spec["base"]["nodes"]
    for size in spec["axes"]["clustering.cluster_size"]:
        for label, entries in spec["axes"]["byzantine"].items():
            faulty = entries[0]["nodes"]
            assert label == f"f/n={len(faulty) / nodes:.2f}"
            scenario = scenario_of(nodes, size, "static", faulty)
            rows = round_rows(recorded_summary(scenario, 2, 1), scenario)
            metrics = cell_metrics(rows, scenario)
            assert metrics["predicted_law"] == "worst case"
            assert metrics["failed_round_rate"] == metrics["predicted_failed_round_rate"]
            assert metrics["corrupted_fraction"] == metrics["predicted_corrupted_fraction"]
            assert rows[0]["corrupted_clusters"] == min(len(faulty), nodes // size)


def test_shamir_corrupts_past_s_minus_t_liars_and_quarantine_leaves_the_rule() -> None:
    # shamir, clusters of 10: t = 4, so 7 lying holders corrupt, 6 do not (BW may detect them)
    faulty = node_names(20)[:7]
    scenario = scenario_of(20, 10, "random", faulty, secure="shamir", behaviour="corrupt-partial")
    assert corruption_threshold(scenario, 10) == 7
    assert cell_metrics([], scenario)["corrupt_thresholds"] == {"10": 7}
    # a poisoned update is an input: MPC hides it, it does not check it; one corrupts a cluster
    poisoned = scenario_of(20, 10, "random", faulty[:1], secure="shamir")
    assert cell_metrics([], poisoned)["corrupt_thresholds"] == {"10": 1}
    one = {"round": 1, "clusters": [node_names(20)[:10], node_names(20)[10:]], "bytes_sent": {}}
    assert round_rows({"rounds": [one]}, poisoned)[0]["corrupted_clusters"] == 1
    assert corruption_threshold({"aggregation": {"secure": "secagg"}}, 10) == 1
    clusters = [node_names(20)[:10], node_names(20)[10:]]
    record = {
        "round": 1,
        "clusters": clusters,
        "failed_clusters": [1],
        "cluster_outputs": {"0": {}},
        "bytes_sent": {},
    }
    (row,) = round_rows({"rounds": [record]}, scenario)
    assert row["corrupted_clusters"] == 2 and row["overwhelmed"]  # 2 bad of 2
    # six liars: below the threshold, and a failed cluster still counts as a bad input
    scenario = scenario_of(
        20, 10, "random", faulty[:6], secure="shamir", behaviour="corrupt-partial"
    )
    (row,) = round_rows({"rounds": [record]}, scenario)
    assert row["corrupted_clusters"] == 1 and row["bad_inputs"] == 1 and row["overwhelmed"]
    # isolate: 4 clusters of 5, the two holding the faulty quarantined and dropped from the step
    faulty = ["node-00", "node-05"]
    scenario = scenario_of(20, 5, "isolate", faulty)
    clusters = [node_names(20)[i : i + 5] for i in range(0, 20, 5)]
    record = {
        "round": 3,
        "clusters": clusters,
        "failed_clusters": [],
        "cluster_outputs": {"2": {}, "3": {}},
        "quarantined_clusters": [0, 1],
        "bytes_sent": {},
    }
    (row,) = round_rows({"rounds": [record]}, scenario)
    assert (row["corrupted_clusters"], row["dropped_clusters"], row["bad_inputs"]) == (2, 2, 0)
    assert not row["overwhelmed"]
    # a quarantine cluster without an output is left out too, not a bad input
    failed_quarantine = {**record, "failed_clusters": [1], "cluster_outputs": {"2": {}, "3": {}}}
    (row,) = round_rows({"rounds": [failed_quarantine]}, scenario)
    assert (row["dropped_clusters"], row["bad_inputs"], row["overwhelmed"]) == (2, 0, False)
    # isolate past round 2 has no law; in rounds 1 and 2 (no scores yet) the random law holds
    assert "predicted_law" not in cell_metrics([row], scenario)
    early = cell_metrics([{**row, "round": 2}], scenario)
    assert early["predicted_law"] == "random law (no scores yet)"


def test_colluding_holders_corrupt_from_s_minus_t_plus_1_minus_r_and_are_scored_as_liars() -> None:
    # clusters of 10, t = 4: BW corrects r = 3; colluders decode wrong from 10 - 4 + 1 - 3 = 4
    names = node_names(20)
    colluders = [*names[:4], *names[10:13]]
    scenario = scenario_of(
        20, 10, "random", colluders, secure="shamir", behaviour="collude-partial"
    )
    assert colluding_threshold(scenario, 10) == 4
    assert holder_law(scenario) is None  # not the random-lie law
    assert cell_metrics([], scenario)["corrupt_thresholds"] == {"10": 4}
    record = {
        "round": 1,
        "clusters": [names[:10], names[10:]],
        "failed_clusters": [],
        "bytes_sent": {},
        "liars": ["node-07", "node-08", "node-09", "node-10", "node-11", "node-12"],
    }
    (row,) = round_rows({"rounds": [record]}, scenario)
    # four colluders: a wrong sum that frames node-07..09; three: corrected and named
    assert row["corrupted_clusters"] == 1 and row["bad_inputs"] == 1
    assert row["lying_faulty"] == sorted(colluders)
    metrics = cell_metrics([row], scenario)
    assert metrics["liar_precision"] == pytest.approx(3 / 6)
    assert metrics["liar_recall"] == pytest.approx(3 / 7)


def test_intervals_and_tolerated_fractions() -> None:
    assert clopper_pearson(0, 10)[1] == pytest.approx(1 - 0.025 ** (1 / 10))
    low, high = clopper_pearson(5, 10)
    assert low == pytest.approx(0.187086, abs=1e-6) and high == pytest.approx(0.812914, abs=1e-6)
    assert binomial_interval(10, 0.0) == (0, 0) and binomial_interval(10, 1.0) == (10, 10)
    # Binomial(10, 1/2): P(X <= 1) = 11/1024 < 0.025 <= P(X <= 2) = 56/1024
    assert binomial_interval(10, 0.5) == (2, 8)
    # n = 100 plaintext, k = 10: five faulty overwhelm the median when they sit in five clusters,
    # P = (90 80 70 60) / (99 98 97 96) = 0.335; four never do
    scenario = scenario_of(100, 10, "random", node_names(100)[:5])
    metrics = cell_metrics(round_rows(recorded_summary(scenario, 1, 1), scenario), scenario)
    assert metrics["predicted_failed_round_rate"] == pytest.approx(
        90 * 80 * 70 * 60 / (99 * 98 * 97 * 96)
    )
    records = [record_of(scenario, 1, 1, 0)]
    (cell,) = build_map(records)
    curve = prediction_curve(cell)
    assert [f for f, p in curve if p == 0.0] == [0, 1, 2, 3, 4]
    assert predicted_tolerated(curve, 100) == 0.04
    (entry,) = tolerances([cell])
    assert entry.predicted == 0.04
    exact = corruption_distribution(cluster_sizes(100, 10), (1,) * 10, 5).prob_at_least(5)
    assert exact == Fraction(exact.numerator, exact.denominator) and math.isclose(
        float(exact), cell.predicted_rate or 0.0
    )


def test_attacks_sharing_their_seeds_are_separate_configurations() -> None:
    """Two attacks on the same seeds share the faulty peers and every round's clusters, so they
    are two configurations of 2 rounds each, not one of 4; one behaviour keeps the facet empty."""
    faulty = node_names(20)[:2]
    records = [
        record_of(scenario_of(20, 4, "random", faulty, behaviour=behaviour), 1, seed, index)
        for index, (behaviour, seed) in enumerate(
            [("sign-flip", 1), ("sign-flip", 2), ("ipm", 1), ("ipm", 2)]
        )
    ]
    cells = build_map(records)
    assert sorted(dict(c.facet)["behaviour"] for c in cells) == ["ipm", "sign-flip"]
    assert [(c.seeds, c.rounds) for c in cells] == [(2, 2), (2, 2)]
    assert cells[0].overwhelmed == cells[1].overwhelmed  # the same clusters, counted per attack
    (pooled,) = build_map(records[:2])
    assert pooled.facet == () and pooled.rounds == 2
    # the clean runs of such a sweep are a configuration of their own, with nothing to tolerate
    clean = record_of(scenario_of(20, 4, "random", []), 1, 1, 4)
    with_clean = build_map([*records, clean])
    assert [dict(c.facet)["behaviour"] for c in with_clean if not c.faulty] == ["none"]
    assert sorted(dict(t.facet)["behaviour"] for t in tolerances(with_clean)) == [
        "ipm",
        "sign-flip",
    ]


def test_report_writes_the_map(tmp_path: Path) -> None:
    records = []
    for index, (strategy, faulty) in enumerate(
        [("random", 2), ("random", 4), ("static", 2), ("static", 4), ("balanced", 4)]
    ):
        scenario = scenario_of(20, 4, strategy, node_names(20)[: 5 * faulty : 5])
        for seed in (1, 2):
            records.append(record_of(scenario, 2, seed, 2 * index + seed - 1))
    with ResultStore(tmp_path) as store:
        store.set_meta(
            {
                "name": "map",
                "kind": "testbed",
                "axes": [["clustering.strategy", ["random", "static", "balanced"]]],
                "seeds": [1, 2],
                "cells": len(records),
            }
        )
        for record in records:
            store.record_cell(record)
    text = write_report(tmp_path).read_text()
    assert "## Tolerance map" in text and "cells with a prediction inside" in text
    for plot in ("tolerance_map.png", "tolerance_predicted_vs_measured.png", "tolerance_cost.png"):
        assert (tmp_path / plot).stat().st_size > 1000 and f"({plot})" in text
    assert (tmp_path / "tolerance.json").is_file()
    # balanced at rounds 1-2 has the random law; static 2 of 5 clusters corrupted: tolerated
    assert "| balanced | 4 | 0.20 | random law (no scores yet) |" in text
    assert "| static | 4 | 0.10 | worst case | 4 | 0 |" in text


def test_named_liars_and_group_testing_are_scored_against_the_faulty() -> None:
    names = node_names(20)
    liars = names[:2]
    scenario = scenario_of(20, 10, "random", liars, secure="shamir", behaviour="corrupt-partial")
    clusters = [names[:10], names[10:]]

    def record(round_: int, named: list[str], suspected: dict[str, float]) -> dict[str, Any]:
        return {
            "round": round_,
            "clusters": clusters,
            "bytes_sent": {},
            "liars": named,
            "detection": suspected,
        }

    summary = {
        "rounds": [
            record(1, ["node-00"], {"precision": 1.0, "recall": 0.5}),
            # one true liar and one honest holder named: precision 2/3 and recall 2/4 overall
            record(2, ["node-01", "node-05"], {"precision": 0.5, "recall": 1.0}),
        ]
    }
    metrics = cell_metrics(round_rows(summary, scenario), scenario)
    assert metrics["liar_precision"] == pytest.approx(2 / 3)
    assert metrics["liar_recall"] == pytest.approx(2 / 4)
    # group testing: the suspected set after the last round, as recorded
    assert (metrics["detection_precision"], metrics["detection_recall"]) == (0.5, 1.0)
    # no liar in force and none named: no liar score at all
    clean = scenario_of(20, 10, "random", [])
    quiet = {"rounds": [{"round": 1, "clusters": clusters, "bytes_sent": {}}]}
    assert "liar_precision" not in cell_metrics(round_rows(quiet, clean), clean)


def test_lying_holders_follow_the_decoder_law_and_their_detection_is_pooled(
    tmp_path: Path,
) -> None:
    """Random lies: Berlekamp-Welch corrects r = floor((s - T)/2); a lying publisher sees one lie
    fewer, so r + 1 liars fail a cluster only when both publishers are honest."""
    from phalanx.experiments.metrics import (
        HolderLaw,
        holder_distribution,
        holder_failure_weights,
        holder_law,
        predict,
    )
    from phalanx.experiments.tolerance import liar_table, plot_liars

    # s = 10, t = 4: r = 3; 4 liars fail with P = C(6, 2)/C(10, 2) = 15/45; 5 always
    assert holder_failure_weights(10, 4, 2) == (0, 0, 0, 0, 15, 45, 45, 45, 45, 45, 45)
    # t = 7: r = 1; 2 liars fail with P = C(8, 2)/C(10, 2)
    assert holder_failure_weights(10, 7, 2)[:4] == (0, 0, 28, 45)
    # two clusters of 3, t = 2 (r = 0), one publisher, one liar: fails unless it publishes
    law = HolderLaw((2, 2), 1)
    assert holder_distribution((3, 3), law, 1) == (Fraction(1, 3), Fraction(2, 3), Fraction(0))
    # two liars: together (prob 2/5) -> that cluster fails for sure; apart -> each fails w.p. 2/3
    together, apart = Fraction(2, 5), Fraction(3, 5)
    pmf = holder_distribution((3, 3), law, 2)
    assert pmf == (apart / 9, together + apart * 4 / 9, apart * 4 / 9)
    overwhelm, fraction = predict((3, 3), (3, 3), 2, "exact", law)
    assert overwhelm == pmf[1] + pmf[2] and fraction == (pmf[1] + 2 * pmf[2]) / 2
    # the scenario's law: t explicit or the mode's default, only when every faulty node lies
    liars = node_names(20)[:3]
    scenario = scenario_of(20, 10, "random", liars, secure="shamir", behaviour="corrupt-partial")
    assert holder_law(scenario) == HolderLaw((4, 4), 2)
    scenario["aggregation"]["threshold"] = 7
    assert holder_law(scenario) == HolderLaw((7, 7), 2)
    assert holder_law(scenario_of(20, 10, "random", liars, secure="shamir")) is None
    metrics = cell_metrics(round_rows(recorded_summary(scenario, 2, 1), scenario), scenario)
    assert metrics["holder_law"] == {"needed": [7, 7], "publishers": 2}
    exact = predict((10, 10), (4, 4), 3, "exact", HolderLaw((7, 7), 2))[0]
    assert metrics["predicted_failed_round_rate"] == pytest.approx(float(exact))
    # nobody named in a clean recording: precision has no denominator, recall is 0 of 6
    assert (metrics["liars_named"], metrics["liars_in_force"]) == (0, 6)
    records = [record_of(scenario, 2, seed, seed) for seed in (1, 2)]
    (cell,) = build_map(records)
    assert cell.holders == HolderLaw((7, 7), 2) and cell.liars_in_force == 12
    assert cell.liar_precision is None and cell.liar_recall == 0.0
    assert prediction_curve(cell)[3][1] == pytest.approx(float(exact))
    (_, _, row) = liar_table([cell])
    assert "| 0.15 | 4 |" in row and "0.00 (0/12)" in row
    plot = plot_liars([cell], tmp_path / "liars.png")
    assert plot is not None and plot.stat().st_size > 1000


def test_colluding_holders_past_the_decoding_radius_move_the_sum_and_frame_honest_ones() -> None:
    """s = 10, t = 4 (r = 3): four liars that add a polynomial vanishing at three honest points
    turn the partial sums into another codeword within distance r, so the decoder returns a
    wrong sum and names the three honest holders; four random lies only fail it."""
    import numpy as np

    from phalanx.mpc.crypto import Csprng
    from phalanx.mpc.field import PRIME
    from phalanx.mpc.shamir import reconstruct_robust, share_vector

    secret = np.array([5, 7, 11], dtype=np.uint32)
    shares = {j + 1: share for j, share in enumerate(share_vector(secret, 4, 10, Csprng(None)))}
    liars = (7, 8, 9, 10)

    def shift(x: int) -> int:  # vanishes at the honest points 1, 2, 3; -6 at 0
        return (x - 1) * (x - 2) * (x - 3) % PRIME

    colluded = dict(shares)
    for x in liars:
        colluded[x] = ((shares[x].astype(np.int64) + shift(x)) % PRIME).astype(np.uint32)
    result = reconstruct_robust(colluded, 4)
    assert not result.failed and result.suspects == (4, 5, 6)
    assert result.value is not None
    assert [int(v) for v in result.value] == [(int(v) - 6) % PRIME for v in secret]
    rng = np.random.default_rng(1)
    garbled = dict(shares)
    for x in liars:
        garbled[x] = rng.integers(0, PRIME, 3, dtype=np.uint32)
    assert reconstruct_robust(garbled, 4).failed


def test_maps_run_past_the_trust_lag_are_split_before_and_after_the_scores(
    tmp_path: Path,
) -> None:
    from phalanx.experiments.metrics import TRUST_LAG
    from phalanx.experiments.tolerance import (
        build_round_series,
        plot_round_series,
        round_series_table,
    )

    faulty = ["node-00", "node-05", "node-10"]
    scenario = scenario_of(20, 4, "random", faulty)
    records = [record_of(scenario, 5, seed, seed) for seed in (1, 2)]
    (series,) = build_round_series(records)
    assert [w.first for w in series.per_round] == [1, 2, 3, 4, 5] and series.seeds == 2
    before, after = series.unscored(), series.scored()
    assert (before.rounds, after.rounds) == (2 * TRUST_LAG, 2 * (5 - TRUST_LAG))
    # the windows add up to what the cells counted, round by round
    counted = sum(r.metrics["overwhelmed_rounds"] for r in records)
    assert before.overwhelmed + after.overwhelmed == counted
    per_round = {int(o["round"]): o["overwhelmed"] for r in records for o in r.metrics["by_round"]}
    assert set(per_round) == {1, 2, 3, 4, 5}
    (_, _, row) = round_series_table([series])
    assert f"| {before.overwhelmed} of 4 |" in row and f"| {after.overwhelmed} of 6 [" in row
    plot = plot_round_series([series], tmp_path / "by_round.png")
    assert plot is not None and plot.stat().st_size > 1000
    # cells that stop within the lag have nothing after the scores to show
    assert build_round_series([record_of(scenario, TRUST_LAG, 1, 1)]) == []


def test_rescore_derives_the_metrics_again_from_the_kept_summaries(tmp_path: Path) -> None:
    """`phalanx experiment rescore`: stale stored metrics are replaced by what the current
    metrics code derives from the cell's own params.json and summary.json; a cell whose files
    no longer match its recorded scenario hash is skipped, not scored from the wrong inputs."""
    import dataclasses
    import json

    from phalanx.experiments.runner import rescore_cells
    from phalanx.experiments.spec import canonical_hash

    scenario = scenario_of(20, 4, "random", ["node-00", "node-05", "node-10"])
    records = []
    for seed in (1, 2):
        stale = dataclasses.replace(
            record_of(scenario, 5, seed, seed),
            scenario_hash=canonical_hash(scenario),
            metrics={"stale": True},
            rounds=[],
        )
        cell_dir = tmp_path / "cells" / stale.id
        cell_dir.mkdir(parents=True)
        params = scenario if seed == 1 else {**scenario, "nodes": 21}
        (cell_dir / "params.json").write_text(json.dumps(params))
        (cell_dir / "summary.json").write_text(json.dumps(recorded_summary(scenario, 5, seed)))
        records.append(stale)
    with ResultStore(tmp_path) as store:
        store.set_meta({"kind": "testbed"})
        for record in records:
            store.record_cell(record)
    result = rescore_cells(tmp_path)
    assert (result.rescored, result.skipped) == (1, [records[1].id])
    with ResultStore(tmp_path) as store:
        fresh, untouched = store.cells()
    expected = record_of(scenario, 5, 1, 1).metrics
    assert fresh.metrics == expected and len(fresh.metrics["by_round"]) == 5
    assert len(fresh.rounds) == 5
    assert untouched.metrics == {"stale": True}
