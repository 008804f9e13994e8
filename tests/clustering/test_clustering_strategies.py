"""Cluster assignment strategies: partitions, sizes, determinism and each strategy's promise."""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Callable

import pytest

from phalanx.clustering.analysis import Placement, best_case_placement, worst_case_placement
from phalanx.clustering.shuffle import round_key, shuffle_permutation
from phalanx.clustering.strategies import (
    STRATEGIES,
    ClusterAssignment,
    PinMode,
    PinnedPlacement,
    assign_clusters,
    available_strategies,
    cluster_sizes,
    compute_assignment,
    register_strategy,
)

SEED = b"testbed-seed"
VIEW = [f"node{i:02d}" for i in range(12)]


def rtt_for(view: list[str]) -> dict[tuple[str, str], float]:
    # nodes sit on a line; RTT grows with distance
    return {(a, b): abs(i - j) * 0.001 for i, a in enumerate(view) for j, b in enumerate(view)}


def options(strategy: str, view: list[str]) -> dict:
    extra: dict = {}
    if strategy == "locality":
        extra["rtt"] = rtt_for(view)
    if strategy == "pinned":
        extra["pinned"] = PinnedPlacement(view[:3], "spread")
    if strategy in ("balanced", "isolate"):
        extra["trust"] = {view[1]: 0.9, view[-1]: 0.7}
    return extra


def test_cluster_sizes_differ_by_at_most_one_and_sum_to_n() -> None:
    for n in range(1, 41):
        for k in range(1, n + 1):
            sizes = cluster_sizes(n, k)
            assert sum(sizes) == n
            assert len(sizes) == max(1, n // k)
            assert max(sizes) - min(sizes) <= 1
            assert list(sizes) == sorted(sizes, reverse=True)


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
@pytest.mark.parametrize(("n", "k"), [(12, 3), (13, 3), (7, 2), (5, 5), (4, 1)])
def test_every_strategy_partitions_the_view_with_balanced_sizes(
    strategy: str, n: int, k: int
) -> None:
    view = VIEW[:n] if n <= 12 else [*VIEW, "node12"]
    result = compute_assignment(view, 3, SEED, strategy, k, **options(strategy, view))
    members = [node for cluster in result.clusters for node in cluster]
    assert sorted(members) == sorted(view)
    assert sorted((len(c) for c in result.clusters), reverse=True) == list(cluster_sizes(n, k))


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_result_does_not_depend_on_view_order(strategy: str) -> None:
    shuffled = VIEW[:]
    random.Random(5).shuffle(shuffled)
    first = compute_assignment(VIEW, 9, SEED, strategy, 3, **options(strategy, VIEW))
    second = compute_assignment(shuffled, 9, SEED, strategy, 3, **options(strategy, VIEW))
    assert first == second
    assert first.digest() == second.digest()


def test_static_is_contiguous_over_sorted_ids_and_fixed_across_rounds() -> None:
    clusters = assign_clusters(list(reversed(VIEW)), 0, SEED, "static", 4)
    assert clusters == [VIEW[0:4], VIEW[4:8], VIEW[8:12]]
    assert assign_clusters(VIEW, 17, b"other", "static", 4) == clusters


def test_random_changes_per_round_and_anyone_can_recompute_it() -> None:
    per_round = [assign_clusters(VIEW, r, SEED, "random", 3) for r in range(6)]
    assert len({str(c) for c in per_round}) == 6
    # a third party recomputes round 4 from the public seed with the shuffle alone
    order = [VIEW[i] for i in shuffle_permutation(12, round_key(SEED, 4))]
    assert per_round[4] == [order[0:3], order[3:6], order[6:9], order[9:12]]
    assert assign_clusters(VIEW, 4, b"another seed", "random", 3) != per_round[4]


def test_balanced_spreads_suspected_nodes_evenly() -> None:
    view = [f"n{i:02d}" for i in range(20)]
    for suspects in (2, 4, 5, 7):
        trust = {node: 1.0 for node in view[-suspects:]}
        for round_number in range(4):
            clusters = assign_clusters(view, round_number, SEED, "balanced", 4, trust=trust)
            per_cluster = [sum(1 for node in c if node in trust) for c in clusters]
            assert max(per_cluster) - min(per_cluster) <= 1
            if suspects <= len(clusters):
                assert max(per_cluster) == 1


def test_balanced_still_reshuffles_across_rounds() -> None:
    rounds = {str(assign_clusters(VIEW, r, SEED, "balanced", 3)) for r in range(4)}
    assert len(rounds) == 4


def test_isolate_gathers_suspected_into_quarantine_clusters() -> None:
    view = [f"n{i:02d}" for i in range(15)]
    trust = {"n03": 0.9, "n07": 0.6, "n11": 0.55, "n14": 0.2}
    result = compute_assignment(view, 2, SEED, "isolate", 3, trust=trust, suspicion_threshold=0.5)
    suspected = {"n03", "n07", "n11"}
    quarantined_members = {n for i in result.quarantined for n in result.clusters[i]}
    assert suspected <= quarantined_members
    assert len(result.quarantined) == math.ceil(len(suspected) / 3)
    for index, cluster in enumerate(result.clusters):
        if index not in result.quarantined:
            assert not suspected & set(cluster)
    # innocents only pad the last quarantine cluster: fewer than one cluster's worth
    assert len(quarantined_members - suspected) < min(len(c) for c in result.clusters)
    nobody = compute_assignment(view, 2, SEED, "isolate", 3, trust={"n03": 0.1})
    assert nobody.quarantined == ()


def test_locality_groups_nodes_by_round_trip_time() -> None:
    sites = {"eu": ["a1", "a2", "a3"], "us": ["b1", "b2", "b3"], "asia": ["c1", "c2", "c3"]}
    site_of = {node: site for site, nodes in sites.items() for node in nodes}
    nodes = sorted(site_of)
    rtt = {
        (a, b): 0.002 if site_of[a] == site_of[b] else 0.150 for a in nodes for b in nodes if a != b
    }
    clusters = assign_clusters(nodes, 0, SEED, "locality", 3, rtt=rtt)
    assert sorted(map(sorted, clusters)) == sorted(sorted(group) for group in sites.values())


def test_locality_uses_one_direction_when_only_one_is_measured() -> None:
    nodes = ["a", "b", "c", "d"]
    rtt = {("a", "b"): 0.001, ("d", "c"): 0.001, ("a", "c"): 0.5, ("b", "d"): 0.5}
    clusters = assign_clusters(nodes, 0, SEED, "locality", 2, rtt=rtt)
    assert sorted(clusters) == [["a", "b"], ["c", "d"]]


def test_pinned_spread_and_packed_reach_the_analytic_extremes() -> None:
    view = [f"n{i:02d}" for i in range(23)]
    sizes = cluster_sizes(23, 4)
    ones = (1,) * len(sizes)
    for faulty in range(0, 24):
        byzantine = view[3 : 3 + faulty]
        extremes: tuple[tuple[PinMode, Callable[..., Placement]], ...] = (
            ("spread", worst_case_placement),
            ("packed", best_case_placement),
        )
        for mode, reference in extremes:
            clusters = assign_clusters(
                view, 1, SEED, "pinned", 4, pinned=PinnedPlacement(byzantine, mode)
            )
            corrupted = sum(1 for c in clusters if set(c) & set(byzantine))
            assert corrupted == reference(sizes, ones, faulty).corrupted, (mode, faulty)


def test_pinned_ignores_ids_outside_the_view() -> None:
    clusters = assign_clusters(VIEW, 0, SEED, "pinned", 3, pinned=PinnedPlacement(["ghost"]))
    assert sorted(n for c in clusters for n in c) == VIEW


def test_registry_accepts_new_strategies() -> None:
    def reverse_static(request):
        return ClusterAssignment("reverse", request.round, ((request.view[-1],), request.view[:-1]))

    register_strategy("reverse-test", reverse_static)
    try:
        assert "reverse-test" in available_strategies()
        assert assign_clusters(["a", "b", "c"], 0, SEED, "reverse-test", 2) == [["c"], ["a", "b"]]
        with pytest.raises(ValueError, match="already registered"):
            register_strategy("reverse-test", reverse_static)
    finally:
        STRATEGIES.pop("reverse-test")


def test_digest_distinguishes_assignments() -> None:
    first = compute_assignment(VIEW, 0, SEED, "random", 3)
    assert first.digest() != compute_assignment(VIEW, 1, SEED, "random", 3).digest()
    assert first.cluster_of(first.clusters[2][0]) == 2
    with pytest.raises(KeyError):
        first.cluster_of("stranger")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cluster_size": 0}, r"cluster_size must be in \[1, 12\]"),
        ({"cluster_size": 13}, r"cluster_size must be in \[1, 12\]"),
        ({"strategy": "magic"}, "unknown strategy 'magic'; choose one of"),
        ({"view": []}, "at least one"),
        ({"view": ["a", "b", "a"]}, "more than once"),
        ({"view": ["a", ""]}, "non-empty strings"),
        ({"view": "abc"}, "not a string"),
        ({"round": -1}, "round must be"),
        ({"public_seed": "seed"}, "public_seed must be bytes"),
        ({"trust": {"node01": math.nan}}, "finite"),
        ({"strategy": "locality"}, "needs rtt"),
        ({"strategy": "pinned"}, "needs pinned"),
        ({"strategy": "locality", "rtt": {("node00", "node01"): -1.0}}, "finite and >= 0"),
    ],
)
def test_bad_input_is_rejected_clearly(kwargs: dict, message: str) -> None:
    arguments = {
        "view": VIEW,
        "round": 0,
        "public_seed": SEED,
        "strategy": "random",
        "cluster_size": 3,
        **kwargs,
    }
    with pytest.raises(ValueError, match=message):
        assign_clusters(**arguments)


def test_pinned_mode_is_validated() -> None:
    with pytest.raises(ValueError, match="'spread' or 'packed'"):
        PinnedPlacement(["a"], "scattered")  # type: ignore[arg-type]


def test_cluster_membership_counts_are_fair_under_random() -> None:
    # over many rounds every pair of nodes shares a cluster about equally often
    together: Counter[tuple[str, str]] = Counter()
    view = VIEW[:6]
    for round_number in range(300):
        for cluster in assign_clusters(view, round_number, SEED, "random", 2):
            together[tuple(sorted(cluster))] += 1  # type: ignore[index]
    expected = 300 * 3 / 15  # 3 pairs per round, 15 possible pairs
    assert len(together) == 15
    assert all(abs(count - expected) < 5 * math.sqrt(expected) for count in together.values())
