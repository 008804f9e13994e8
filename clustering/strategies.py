"""Cluster assignment ``C_r = strategy(view, r, public_seed, trust)``: deterministic and verifiable.

Every honest node calls `compute_assignment` with the same round view and gets the same clusters
without talking to anyone: the view is sorted first, all ties are broken by node id or by the
swap-or-not shuffle of `clustering.shuffle` keyed by (public seed, round), and no result depends on
set or dict iteration order.

Cluster sizes: with n nodes and target size k there are ``m = max(1, n // k)`` clusters of sizes
``n // m`` or ``n // m + 1`` (the larger ones first), so sizes differ by at most one.

Strategies (`STRATEGIES`, extendable with `register_strategy`):

* ``static``   contiguous groups of the sorted view; the same every round.
* ``random``   contiguous groups of the view shuffled by swap-or-not per round.
* ``balanced`` nodes ranked by suspicion (ties: shuffled order) and dealt round-robin, so the
  number of suspected nodes per cluster differs by at most one (and clusters still change with r).
* ``isolate``  nodes with suspicion >= `suspicion_threshold` are gathered into the last clusters,
  which are reported in `ClusterAssignment.quarantined`; the aggregation drops or down-weights them.
* ``locality`` greedy grouping by round-trip time: the farthest remaining node seeds a cluster and
  the nodes with the smallest total RTT to its members join it (Gonzalez 1985 farthest-first).
* ``pinned``   an experimenter's placement of known Byzantine ids: ``spread`` (in distinct clusters
  while there are enough clusters, i.e. the worst case when one faulty member corrupts a cluster)
  or ``packed`` (together, filling as few clusters as possible: the best case).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from phalanx.clustering.shuffle import shuffle_sequence

PinMode = Literal["spread", "packed"]
DEFAULT_SUSPICION_THRESHOLD = 0.5


@dataclass(frozen=True)
class PinnedPlacement:
    """Known Byzantine ids and how to place them: ``spread`` apart or ``packed`` together.

    Ids absent from the round's view (e.g. crashed nodes) are ignored.
    """

    byzantine: frozenset[str]
    mode: PinMode = "spread"

    def __init__(self, byzantine: Collection[str], mode: PinMode = "spread") -> None:
        if mode not in ("spread", "packed"):
            raise ValueError(f"pinned mode must be 'spread' or 'packed', got {mode!r}")
        object.__setattr__(self, "byzantine", frozenset(byzantine))
        object.__setattr__(self, "mode", mode)


@dataclass(frozen=True)
class ClusterAssignment:
    """The clusters of one round, and which of them are quarantine clusters (``isolate``)."""

    strategy: str
    round: int
    clusters: tuple[tuple[str, ...], ...]
    quarantined: tuple[int, ...] = ()

    def as_lists(self) -> list[list[str]]:
        return [list(cluster) for cluster in self.clusters]

    def cluster_of(self, node_id: str) -> int:
        """Index of the cluster holding `node_id`."""
        for index, cluster in enumerate(self.clusters):
            if node_id in cluster:
                return index
        raise KeyError(f"node {node_id!r} is in no cluster of round {self.round}")

    def digest(self) -> str:
        """SHA-256 of the canonical JSON of the assignment, to compare nodes' results cheaply."""
        canonical = json.dumps(
            {
                "strategy": self.strategy,
                "round": self.round,
                "clusters": self.as_lists(),
                "quarantined": list(self.quarantined),
            },
            separators=(",", ":"),
        )
        return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class AssignmentRequest:
    """Validated input handed to a strategy: the view is sorted and duplicate-free."""

    view: tuple[str, ...]
    round: int
    public_seed: bytes
    cluster_sizes: tuple[int, ...]
    suspicion: Mapping[str, float] = field(default_factory=dict)
    rtt: Mapping[tuple[str, str], float] | None = None
    pinned: PinnedPlacement | None = None
    suspicion_threshold: float = DEFAULT_SUSPICION_THRESHOLD

    def suspicion_of(self, node_id: str) -> float:
        return self.suspicion.get(node_id, 0.0)

    def shuffled_view(self) -> list[str]:
        return shuffle_sequence(self.view, self.public_seed, self.round)


Strategy = Callable[[AssignmentRequest], ClusterAssignment]


def cluster_sizes(num_nodes: int, cluster_size: int) -> tuple[int, ...]:
    """``m = max(1, n // k)`` sizes, ``n // m + 1`` for the first ``n % m``, else ``n // m``."""
    if num_nodes < 1:
        raise ValueError(f"num_nodes must be >= 1, got {num_nodes}")
    if not 1 <= cluster_size <= num_nodes:
        raise ValueError(f"cluster_size must be in [1, {num_nodes}] (n nodes), got {cluster_size}")
    count = max(1, num_nodes // cluster_size)
    base, extra = divmod(num_nodes, count)
    return tuple(base + (1 if index < extra else 0) for index in range(count))


def _chunk(ordered: Sequence[str], sizes: Sequence[int]) -> tuple[tuple[str, ...], ...]:
    clusters, start = [], 0
    for size in sizes:
        clusters.append(tuple(ordered[start : start + size]))
        start += size
    return tuple(clusters)


def _deal_round_robin(ordered: Sequence[str], count: int) -> tuple[tuple[str, ...], ...]:
    # Rank r goes to cluster r mod m: cluster i < n mod m gets one extra, matching cluster_sizes.
    return tuple(tuple(ordered[start::count]) for start in range(count))


def static_strategy(request: AssignmentRequest) -> ClusterAssignment:
    """Contiguous groups of the sorted view."""
    return ClusterAssignment("static", request.round, _chunk(request.view, request.cluster_sizes))


def random_strategy(request: AssignmentRequest) -> ClusterAssignment:
    """Contiguous groups of the swap-or-not shuffled view (new clusters every round)."""
    clusters = _chunk(request.shuffled_view(), request.cluster_sizes)
    return ClusterAssignment("random", request.round, clusters)


def balanced_strategy(request: AssignmentRequest) -> ClusterAssignment:
    """Rank by decreasing suspicion (ties: shuffled order), deal round-robin over the clusters."""
    shuffled = request.shuffled_view()
    position = {node: index for index, node in enumerate(shuffled)}
    ranked = sorted(shuffled, key=lambda node: (-request.suspicion_of(node), position[node]))
    clusters = _deal_round_robin(ranked, len(request.cluster_sizes))
    return ClusterAssignment("balanced", request.round, clusters)


def isolate_strategy(request: AssignmentRequest) -> ClusterAssignment:
    """Gather nodes with suspicion >= threshold in the last clusters and mark those quarantined.

    The quarantine clusters are the ones holding any suspected node; to keep sizes within one of
    each other, the last partly filled one is topped up with unsuspected nodes chosen by the
    round's shuffle (so the innocents who lose a round's contribution change every round).
    """
    shuffled = request.shuffled_view()
    threshold = request.suspicion_threshold
    trusted = [node for node in shuffled if request.suspicion_of(node) < threshold]
    suspected = [node for node in shuffled if request.suspicion_of(node) >= threshold]
    suspected.sort(key=request.suspicion_of)  # stable: most suspected last, ties keep shuffle
    clusters = _chunk(trusted + suspected, request.cluster_sizes)
    flagged = set(suspected)
    quarantined = tuple(
        index for index, cluster in enumerate(clusters) if any(node in flagged for node in cluster)
    )
    return ClusterAssignment("isolate", request.round, clusters, quarantined)


def _symmetric_rtt(
    view: Sequence[str], rtt: Mapping[tuple[str, str], float]
) -> dict[tuple[str, str], float]:
    """Mean of the measured directions for each pair; unmeasured pairs get the largest RTT seen."""
    members = set(view)
    sums: dict[tuple[str, str], list[float]] = {}
    for (a, b), value in sorted(rtt.items()):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"rtt[{a!r}, {b!r}] must be finite and >= 0, got {value}")
        if a == b or a not in members or b not in members:
            continue
        sums.setdefault((min(a, b), max(a, b)), []).append(value)
    pair_rtt = {pair: sum(values) / len(values) for pair, values in sums.items()}
    missing = max(pair_rtt.values(), default=0.0)
    return {
        (a, b): pair_rtt.get((a, b), missing) for i, a in enumerate(view) for b in view[i + 1 :]
    }


def locality_strategy(request: AssignmentRequest) -> ClusterAssignment:
    """Greedy RTT grouping: farthest-first seed, then nearest-by-total-RTT members; ties by id."""
    if request.rtt is None:
        raise ValueError("strategy 'locality' needs rtt: a mapping (node_a, node_b) -> seconds")
    pair_rtt = _symmetric_rtt(request.view, request.rtt)

    def distance(a: str, b: str) -> float:
        return pair_rtt[(a, b)] if a < b else pair_rtt[(b, a)]

    remaining = list(request.view)  # sorted, so min() over (key, id) breaks ties by id
    total = {a: sum(distance(a, b) for b in remaining if b != a) for a in remaining}
    clusters: list[tuple[str, ...]] = []

    def take(node: str) -> None:
        remaining.remove(node)
        del total[node]
        for other in remaining:
            total[other] -= distance(other, node)

    for size in request.cluster_sizes:
        seed = min(remaining, key=lambda node: (-total[node], node))
        members = [seed]
        take(seed)
        cost = {node: distance(node, seed) for node in remaining}
        while len(members) < size:
            nearest = min(remaining, key=lambda node: (cost[node], node))
            members.append(nearest)
            take(nearest)
            del cost[nearest]
            for node in remaining:
                cost[node] += distance(node, nearest)
        clusters.append(tuple(sorted(members)))
    return ClusterAssignment("locality", request.round, tuple(clusters))


def pinned_strategy(request: AssignmentRequest) -> ClusterAssignment:
    """Place the pinned Byzantine ids ``spread`` (round-robin) or ``packed`` (first clusters).

    Honest nodes fill the remaining places in the round's shuffled order.
    """
    if request.pinned is None:
        raise ValueError("strategy 'pinned' needs pinned=PinnedPlacement(byzantine_ids, mode)")
    byzantine = set(request.pinned.byzantine)
    faulty = [node for node in request.view if node in byzantine]
    honest = [node for node in request.shuffled_view() if node not in byzantine]
    sizes = request.cluster_sizes
    if request.pinned.mode == "packed":
        return ClusterAssignment("pinned", request.round, _chunk(faulty + honest, sizes))
    members: list[list[str]] = [[] for _ in sizes]
    for rank, node in enumerate(faulty):
        members[rank % len(sizes)].append(node)
    honest_iter = iter(honest)
    for index, size in enumerate(sizes):
        while len(members[index]) < size:
            members[index].append(next(honest_iter))
    return ClusterAssignment("pinned", request.round, tuple(tuple(c) for c in members))


STRATEGIES: dict[str, Strategy] = {
    "static": static_strategy,
    "random": random_strategy,
    "balanced": balanced_strategy,
    "isolate": isolate_strategy,
    "locality": locality_strategy,
    "pinned": pinned_strategy,
}


def register_strategy(name: str, strategy: Strategy, *, replace: bool = False) -> None:
    """Add a strategy under `name` (refuses to shadow an existing one unless `replace`)."""
    if not name:
        raise ValueError("strategy name must be non-empty")
    if name in STRATEGIES and not replace:
        raise ValueError(f"strategy {name!r} is already registered")
    STRATEGIES[name] = strategy


def available_strategies() -> list[str]:
    return sorted(STRATEGIES)


def compute_assignment(
    view: Sequence[str],
    round: int,
    public_seed: bytes,
    strategy: str = "random",
    cluster_size: int = 3,
    trust: Mapping[str, float] | None = None,
    rtt: Mapping[tuple[str, str], float] | None = None,
    pinned: PinnedPlacement | None = None,
    suspicion_threshold: float = DEFAULT_SUSPICION_THRESHOLD,
) -> ClusterAssignment:
    """Clusters of round `round` over `view` by `strategy`, with quarantine flags.

    `trust` maps node ids to suspicion scores (higher = more suspected, as produced by
    `clustering.trust.SuspicionTracker.scores`); missing ids count as 0. `rtt` maps ordered
    pairs of node ids to round-trip times (``locality``); `pinned` drives ``pinned``.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose one of {available_strategies()}")
    if isinstance(view, str):
        raise ValueError("view must be a sequence of node ids, not a string")
    if any(not isinstance(node, str) or not node for node in view):
        raise ValueError("view entries must be non-empty strings")
    ordered = sorted(view)
    if not ordered:
        raise ValueError("view must hold at least one node id")
    for node, following in itertools.pairwise(ordered):
        if node == following:
            raise ValueError(f"view holds node id {node!r} more than once")
    if not isinstance(round, int) or round < 0:
        raise ValueError(f"round must be an integer >= 0, got {round!r}")
    if not isinstance(public_seed, bytes | bytearray):
        raise ValueError(f"public_seed must be bytes, got {type(public_seed).__name__}")
    suspicion = dict(trust or {})
    for node, score in suspicion.items():
        if not math.isfinite(score):
            raise ValueError(f"trust[{node!r}] must be finite, got {score}")
    if not math.isfinite(suspicion_threshold):
        raise ValueError(f"suspicion_threshold must be finite, got {suspicion_threshold}")
    request = AssignmentRequest(
        view=tuple(ordered),
        round=round,
        public_seed=bytes(public_seed),
        cluster_sizes=cluster_sizes(len(ordered), cluster_size),
        suspicion=suspicion,
        rtt=rtt,
        pinned=pinned,
        suspicion_threshold=suspicion_threshold,
    )
    return STRATEGIES[strategy](request)


def assign_clusters(
    view: Sequence[str],
    round: int,
    public_seed: bytes,
    strategy: str = "random",
    cluster_size: int = 3,
    trust: Mapping[str, float] | None = None,
    rtt: Mapping[tuple[str, str], float] | None = None,
    pinned: PinnedPlacement | None = None,
    suspicion_threshold: float = DEFAULT_SUSPICION_THRESHOLD,
) -> list[list[str]]:
    """The clusters of `compute_assignment` as plain lists (quarantine flags dropped)."""
    return compute_assignment(
        view, round, public_seed, strategy, cluster_size, trust, rtt, pinned, suspicion_threshold
    ).as_lists()
