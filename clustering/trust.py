"""Suspicion across rounds: group testing over reshuffled clusters.

Each round the robust outer aggregation flags some clusters (rejects or down-weights their
output). A flagged cluster is a positive pooled test in the sense of group testing (Dorfman,
"The detection of defective members of large populations", 1943): at least one member is probably
faulty, but which one is unknown. Reshuffling changes the pools every round, so a Byzantine node is
in a flagged cluster every round while an honest one only when it happens to share a cluster with
a Byzantine node.

`SuspicionTracker` keeps an exponentially weighted moving average per node,

    s_i <- (1 - a) * s_i + a * w_c(i),

where ``w_c(i)`` in [0, 1] is the severity with which node i's cluster was flagged this round
(1 = rejected, 0 = accepted; accepted clusters therefore decay their members' suspicion) and ``a``
is `learning_rate`. s_i estimates the probability that node i's cluster is flagged: close to 1 for
a Byzantine node that is always caught, and ``1 - C(n-1-f, k-1) / C(n-1, k-1)`` for an honest node
under random clusters of size k (n nodes, f Byzantine). Nodes absent from a round keep their score.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

DEFAULT_LEARNING_RATE = 0.3


@dataclass(frozen=True)
class DetectionQuality:
    """Precision and recall of a suspected set against the true Byzantine set.

    By convention precision is 1.0 when nothing is suspected (no false accusation) and recall is
    1.0 when there is no Byzantine node (nothing to find).
    """

    precision: float
    recall: float
    true_positives: int
    false_positives: int
    false_negatives: int


def detection_quality(suspected: Collection[str], byzantine: Collection[str]) -> DetectionQuality:
    """precision = |S ∩ B| / |S|, recall = |S ∩ B| / |B| for suspected S and Byzantine B."""
    suspected_set, byzantine_set = set(suspected), set(byzantine)
    hits = len(suspected_set & byzantine_set)
    false_positives = len(suspected_set) - hits
    false_negatives = len(byzantine_set) - hits
    return DetectionQuality(
        precision=hits / len(suspected_set) if suspected_set else 1.0,
        recall=hits / len(byzantine_set) if byzantine_set else 1.0,
        true_positives=hits,
        false_positives=false_positives,
        false_negatives=false_negatives,
    )


class SuspicionTracker:
    """Per-node suspicion scores in [0, 1], updated once per round from the flagged clusters."""

    def __init__(self, learning_rate: float = DEFAULT_LEARNING_RATE) -> None:
        if not 0.0 < learning_rate <= 1.0:
            raise ValueError(f"learning_rate must be in (0, 1], got {learning_rate}")
        self.learning_rate = learning_rate
        self._scores: dict[str, float] = {}
        self._observations: dict[str, int] = {}
        self.last_round: int | None = None

    def update(
        self,
        round: int,
        clusters: Sequence[Sequence[str]],
        flagged: Collection[int] | Mapping[int, float],
        named: Collection[str] = (),
    ) -> None:
        """Record round `round`: `flagged` holds cluster indices, or index -> severity in [0, 1];
        `named` holds members caught individually (a holder corrected by Berlekamp-Welch, a
        dealer whose shares failed their checks): an individual positive test, weight 1 whatever
        their cluster's severity.

        Rounds must be strictly increasing, so a round cannot be counted twice.
        """
        if self.last_round is not None and round <= self.last_round:
            raise ValueError(f"round must be > last recorded round {self.last_round}, got {round}")
        severity: dict[int, float] = (
            dict(flagged) if isinstance(flagged, Mapping) else dict.fromkeys(flagged, 1.0)
        )
        for index, weight in severity.items():
            if not 0 <= index < len(clusters):
                raise ValueError(
                    f"flagged cluster index must be in [0, {len(clusters)}), got {index}"
                )
            if not (math.isfinite(weight) and 0.0 <= weight <= 1.0):
                raise ValueError(f"severity of cluster {index} must be in [0, 1], got {weight}")
        seen: set[str] = set()
        for cluster in clusters:
            for node in cluster:
                if node in seen:
                    raise ValueError(f"node {node!r} appears in more than one cluster")
                seen.add(node)
        rate = self.learning_rate
        for index, cluster in enumerate(clusters):
            for node in cluster:
                weight = 1.0 if node in named else severity.get(index, 0.0)
                previous = self._scores.get(node, 0.0)
                self._scores[node] = (1.0 - rate) * previous + rate * weight
                self._observations[node] = self._observations.get(node, 0) + 1
        self.last_round = round

    def score(self, node_id: str) -> float:
        return self._scores.get(node_id, 0.0)

    def observations(self, node_id: str) -> int:
        """Number of recorded rounds in which `node_id` belonged to a cluster."""
        return self._observations.get(node_id, 0)

    @property
    def scores(self) -> dict[str, float]:
        """Scores by node id in sorted order (pass as `trust` to the assignment strategies)."""
        return {node: self._scores[node] for node in sorted(self._scores)}

    def suspected(self, threshold: float, min_observations: int = 1) -> frozenset[str]:
        """Nodes with score >= `threshold` observed in at least `min_observations` rounds."""
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        if min_observations < 0:
            raise ValueError(f"min_observations must be >= 0, got {min_observations}")
        return frozenset(
            node
            for node, value in self._scores.items()
            if value >= threshold and self._observations[node] >= min_observations
        )

    def quality(self, threshold: float, byzantine: Collection[str]) -> DetectionQuality:
        """`detection_quality` of `suspected(threshold)` against the true Byzantine set."""
        return detection_quality(self.suspected(threshold), byzantine)
