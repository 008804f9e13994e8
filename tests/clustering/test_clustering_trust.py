"""Suspicion across rounds: group testing singles out Byzantine nodes when clusters reshuffle."""

from __future__ import annotations

import pytest

from phalanx.clustering.strategies import assign_clusters
from phalanx.clustering.trust import SuspicionTracker, detection_quality

VIEW = [f"node{i:02d}" for i in range(12)]
BYZANTINE = {"node03", "node08"}


def run_rounds(strategy: str, rounds: int, learning_rate: float = 0.3) -> SuspicionTracker:
    """Flag every cluster that holds a Byzantine member (a perfect outer detector)."""
    tracker = SuspicionTracker(learning_rate)
    for round_number in range(rounds):
        clusters = assign_clusters(VIEW, round_number, b"seed", strategy, 3)
        flagged = [i for i, cluster in enumerate(clusters) if BYZANTINE & set(cluster)]
        tracker.update(round_number, clusters, flagged)
    return tracker


def test_reshuffled_clusters_single_out_the_byzantine_nodes() -> None:
    tracker = run_rounds("random", 30)
    scores = tracker.scores
    lowest_byzantine = min(scores[node] for node in BYZANTINE)
    highest_honest = max(score for node, score in scores.items() if node not in BYZANTINE)
    assert lowest_byzantine > highest_honest
    quality = tracker.quality(0.9, BYZANTINE)
    assert (quality.precision, quality.recall) == (1.0, 1.0)


def test_static_clusters_cannot_tell_members_apart() -> None:
    tracker = run_rounds("static", 30)
    suspected = tracker.suspected(0.9)
    assert suspected >= BYZANTINE  # caught...
    assert tracker.quality(0.9, BYZANTINE).precision < 1.0  # ...with their cluster mates


def test_flagged_members_rise_and_unflagged_members_decay() -> None:
    tracker = SuspicionTracker(learning_rate=0.5)
    clusters = [["a", "b"], ["c", "d"]]
    tracker.update(0, clusters, [0])
    assert tracker.score("a") == tracker.score("b") == 0.5
    assert tracker.score("c") == 0.0
    tracker.update(1, clusters, [])
    assert tracker.score("a") == 0.25
    tracker.update(2, [["a", "c"]], {0: 0.5})  # down-weighted, not rejected
    assert tracker.score("a") == pytest.approx(0.375)
    assert tracker.score("b") == 0.25  # absent: unchanged
    assert tracker.observations("a") == 3 and tracker.observations("b") == 2


def test_suspected_respects_threshold_and_minimum_observations() -> None:
    tracker = SuspicionTracker(learning_rate=1.0)
    tracker.update(0, [["a"], ["b"]], [0])
    assert tracker.suspected(0.5) == {"a"}
    assert tracker.suspected(0.5, min_observations=2) == frozenset()


def test_detection_quality_counts() -> None:
    quality = detection_quality({"a", "b", "c"}, {"a", "d"})
    assert quality.precision == pytest.approx(1 / 3)
    assert quality.recall == pytest.approx(1 / 2)
    assert (quality.true_positives, quality.false_positives, quality.false_negatives) == (1, 2, 1)
    assert detection_quality(set(), {"a"}).precision == 1.0
    assert detection_quality(set(), {"a"}).recall == 0.0
    assert detection_quality({"a"}, set()).recall == 1.0


@pytest.mark.parametrize(
    ("round_number", "clusters", "flagged", "message"),
    [
        (5, [["a"]], [], "round must be > last recorded round 5"),
        (6, [["a"]], [1], r"flagged cluster index must be in \[0, 1\)"),
        (6, [["a"]], {0: 1.5}, r"severity of cluster 0 must be in \[0, 1\]"),
        (6, [["a"], ["a"]], [], "more than one cluster"),
    ],
)
def test_bad_updates_are_rejected(round_number, clusters, flagged, message) -> None:
    tracker = SuspicionTracker()
    tracker.update(5, [["a"]], [])
    with pytest.raises(ValueError, match=message):
        tracker.update(round_number, clusters, flagged)


def test_bad_parameters_are_rejected() -> None:
    with pytest.raises(ValueError, match=r"learning_rate must be in \(0, 1\]"):
        SuspicionTracker(0.0)
    with pytest.raises(ValueError, match=r"threshold must be in \[0, 1\]"):
        SuspicionTracker().suspected(1.5)
