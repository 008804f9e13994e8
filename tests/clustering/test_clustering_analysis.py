"""Fault-distribution analysis checked against independent computations."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import pytest
from scipy.stats import binom, hypergeom

from phalanx.clustering.analysis import (
    analyze_clusters,
    best_case_placement,
    binomial_shard_corruption_probability,
    corruption_distribution,
    corruption_thresholds,
    expected_corrupted_fraction,
    hypergeometric_tail,
    max_tolerated_corrupted,
    monte_carlo,
    shard_corruption_probability,
    worst_case_placement,
)
from phalanx.clustering.strategies import cluster_sizes


def brute_force_pmf(sizes: tuple[int, ...], thresholds: tuple[int, ...], faulty: int) -> list:
    """Enumerate every faulty set over a fixed partition (equivalent to a random partition)."""
    owner = [j for j, size in enumerate(sizes) for _ in range(size)]
    counts = [0] * (len(sizes) + 1)
    total = 0
    for chosen in itertools.combinations(range(len(owner)), faulty):
        per_cluster = [0] * len(sizes)
        for node in chosen:
            per_cluster[owner[node]] += 1
        counts[sum(1 for f, c in zip(per_cluster, thresholds, strict=True) if f >= c)] += 1
        total += 1
    return [Fraction(count, total) for count in counts]


def textbook_case_expected_fraction() -> float:
    return 1 - math.comb(80, 10) / math.comb(100, 10)


def test_textbook_expected_corrupted_fraction() -> None:
    sizes = cluster_sizes(100, 10)
    thresholds = corruption_thresholds(sizes, 1)
    distribution = corruption_distribution(sizes, thresholds, 20)
    assert float(distribution.expected_fraction()) == pytest.approx(
        textbook_case_expected_fraction(), rel=1e-12
    )
    assert float(distribution.expected_fraction()) == pytest.approx(0.905, abs=5e-4)
    assert expected_corrupted_fraction(sizes, thresholds, 20) == distribution.expected_fraction()


def test_textbook_shard_probability() -> None:
    exact = shard_corruption_probability(10_000, 2_500, 100, Fraction(1, 3))
    assert float(exact) == pytest.approx(hypergeom.sf(33, 10_000, 2_500, 100), rel=1e-9)
    assert float(exact) == pytest.approx(0.027, abs=1e-3)
    limit = binomial_shard_corruption_probability(100, Fraction(1, 4), Fraction(1, 3))
    assert float(limit) == pytest.approx(binom.sf(33, 100, 0.25), rel=1e-9)


@pytest.mark.parametrize(
    ("n", "f", "k", "rule"),
    [
        (6, 2, 2, {"corrupt_threshold": 1}),
        (7, 3, 2, {"corrupt_threshold": 1}),
        (7, 3, 2, {"corrupt_fraction": Fraction(1, 2)}),
        (9, 4, 3, {"corrupt_threshold": 2}),
        (10, 5, 3, {"corrupt_fraction": 0.34}),
        (8, 0, 2, {"corrupt_threshold": 1}),
        (5, 5, 2, {"corrupt_threshold": 1}),
        (11, 6, 4, {"corrupt_threshold": 3}),
    ],
)
def test_distribution_matches_brute_force_enumeration(n: int, f: int, k: int, rule: dict) -> None:
    sizes = cluster_sizes(n, k)
    thresholds = corruption_thresholds(sizes, **({"corrupt_threshold": None} | rule))
    assert list(corruption_distribution(sizes, thresholds, f).pmf) == brute_force_pmf(
        sizes, thresholds, f
    )


def test_distribution_is_normalised_and_consistent_at_larger_scale() -> None:
    for n, f, k in ((257, 60, 7), (300, 100, 2)):
        sizes = cluster_sizes(n, k)
        thresholds = corruption_thresholds(sizes, None, Fraction(1, 3))
        distribution = corruption_distribution(sizes, thresholds, f)
        assert sum(distribution.pmf) == 1
        assert distribution.expected_fraction() == expected_corrupted_fraction(sizes, thresholds, f)


def test_tail_and_overwhelm_probability() -> None:
    sizes = cluster_sizes(9, 2)  # 4 clusters: 3, 2, 2, 2
    thresholds = corruption_thresholds(sizes, 1)
    distribution = corruption_distribution(sizes, thresholds, 3)
    brute = brute_force_pmf(sizes, thresholds, 3)
    assert distribution.prob_at_least(2) == sum(brute[2:])
    assert distribution.tail()[0] == 1
    # median over 4 clusters (b = 1/2) breaks with 2 bad inputs
    assert distribution.overwhelm_probability(0.5) == sum(brute[2:])


@pytest.mark.parametrize(
    ("clusters", "breakdown", "tolerated"),
    [(9, 0.5, 4), (10, 0.5, 4), (10, 0.3, 2), (10, 1, 9), (3, Fraction(1, 3), 0), (1, 0.5, 0)],
)
def test_max_tolerated_follows_the_breakdown_point(clusters, breakdown, tolerated) -> None:
    assert max_tolerated_corrupted(clusters, breakdown) == tolerated


def all_placements(sizes: tuple[int, ...], faulty: int):
    for vector in itertools.product(*(range(s + 1) for s in sizes)):
        if sum(vector) == faulty:
            yield vector


@pytest.mark.parametrize(
    ("sizes", "thresholds"),
    [
        ((3, 2, 2), (1, 1, 1)),
        ((3, 3, 2, 2), (2, 2, 1, 1)),
        ((4, 3, 3), (2, 2, 2)),
        ((2, 2), (3, 1)),
    ],
)
def test_extreme_placements_match_exhaustive_search(sizes, thresholds) -> None:
    for faulty in range(sum(sizes) + 1):
        corrupted = [
            sum(1 for f, c in zip(v, thresholds, strict=True) if f >= c)
            for v in all_placements(sizes, faulty)
        ]
        for placement, optimum in (
            (worst_case_placement(sizes, thresholds, faulty), max(corrupted)),
            (best_case_placement(sizes, thresholds, faulty), min(corrupted)),
        ):
            assert placement.corrupted == optimum
            assert sum(placement.faulty_per_cluster) == faulty
            assert all(
                0 <= f <= s for f, s in zip(placement.faulty_per_cluster, sizes, strict=True)
            )


def test_monte_carlo_agrees_with_exact_figures_and_is_seeded() -> None:
    sizes = cluster_sizes(60, 6)
    thresholds = corruption_thresholds(sizes, None, Fraction(1, 3))
    exact = corruption_distribution(sizes, thresholds, 15)
    estimate = monte_carlo(sizes, thresholds, 15, trials=4000, seed=11)
    p_overwhelmed = float(exact.overwhelm_probability(0.5))
    tolerance = 4 * estimate.standard_error(p_overwhelmed, 4000)
    assert abs(estimate.overwhelm_probability(0.5) - p_overwhelmed) < tolerance
    assert abs(estimate.expected_fraction() - float(exact.expected_fraction())) < 0.02
    assert sum(estimate.corrupted_counts) == 4000
    assert monte_carlo(sizes, thresholds, 15, 4000, 11) == estimate
    assert monte_carlo(sizes, thresholds, 15, 4000, 12) != estimate


def test_static_analysis_is_the_adversarial_worst_case() -> None:
    static = analyze_clusters(100, 20, 10, strategy="static")
    assert static.worst_case.corrupted == 10
    assert static.overwhelm_probability() == 1
    random_layout = analyze_clusters(100, 20, 10, strategy="random")
    assert 0 < random_layout.overwhelm_probability() < 1
    assert random_layout.best_case.corrupted == 2


def test_json_report_carries_exact_rationals() -> None:
    report = analyze_clusters(100, 20, 10, monte_carlo_trials=500, seed=3).to_json()
    exact = Fraction(math.comb(100, 10) - math.comb(80, 10), math.comb(100, 10))
    assert Fraction(report["expected_corrupted_fraction_exact"]) == exact
    assert sum(Fraction(p) for p in report["distribution_exact"]) == 1
    assert report["monte_carlo"]["trials"] == 500


def test_hypergeometric_tail_matches_scipy() -> None:
    for population, successes, draws, at_least in ((50, 10, 7, 2), (30, 30, 5, 5), (30, 0, 5, 1)):
        expected = hypergeom.sf(at_least - 1, population, successes, draws)
        assert float(hypergeometric_tail(population, successes, draws, at_least)) == pytest.approx(
            expected, abs=1e-15
        )


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: analyze_clusters(10, 11, 2), r"faulty must be in \[0, 10\]"),
        (lambda: analyze_clusters(10, -1, 2), "faulty"),
        (lambda: analyze_clusters(10, 2, 11), r"cluster_size must be in \[1, 10\]"),
        (lambda: analyze_clusters(10, 2, 0), "cluster_size"),
        (lambda: analyze_clusters(0, 0, 1), "nodes must be >= 1"),
        (lambda: analyze_clusters(10, 2, 2, strategy="balanced"), "strategy must be one of"),
        (lambda: analyze_clusters(10, 2, 2, breakdown=0), r"breakdown must be in \(0, 1\]"),
        (lambda: analyze_clusters(10, 2, 2, monte_carlo_trials=-5), "monte_carlo_trials"),
        (lambda: corruption_thresholds((3,), 1, 0.5), "exactly one"),
        (lambda: corruption_thresholds((3,), None, 1.5), "corrupt_fraction"),
        (lambda: corruption_thresholds((3,), 0), "corrupt_threshold must be >= 1"),
        (lambda: shard_corruption_probability(10, 2, 11, 0.5), "shard_size"),
        (lambda: monte_carlo((2, 2), (1, 1), 1, 0, 1), "trials"),
    ],
)
def test_impossible_requests_raise_clear_errors(call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()
