"""How many faulty peers a cluster layout tolerates: exact probabilities, extremes, Monte Carlo.

Model. n nodes, f of them faulty, are split into clusters of the sizes `cluster_sizes(n, k)`
(``m = max(1, n // k)`` clusters whose sizes differ by at most one). Cluster j of size s_j is
*corrupted* when it holds at least c_j faulty members: c_j = 1 for plain (unprotected) sums, or
``c_j = ceil(q * s_j)`` for a fraction q in MPC modes (e.g. q = 1/3 for Shamir sharing with
honest-majority reconstruction). The outer robust aggregation over the m cluster outputs has
breakdown point b (Donoho and Huber 1983): it fails once a fraction b of its inputs is bad, so it
tolerates ``ceil(b * m) - 1`` corrupted clusters (the median, b = 1/2, tolerates floor((m-1)/2)).

Random clusters. A uniformly random partition with fixed sizes puts faulty counts (f_1..f_m) in
the clusters with the multivariate hypergeometric law ``prod_j C(s_j, f_j) / C(n, f)``. Hence the
number X of corrupted clusters has the generating function

    sum_x N_x y^x = [t^f] prod_j (A_j(t) + y B_j(t)),
    A_j(t) = sum_{a < c_j} C(s_j, a) t^a,   B_j(t) = sum_{a >= c_j} C(s_j, a) t^a,

and P(X = x) = N_x / C(n, f) (Vandermonde's identity makes the N_x sum to C(n, f)). Clusters with
the same (s, c) contribute ``sum_x C(m_g, x) A^(m_g - x) B^x y^x``; everything is computed with
Python integers and returned as `fractions.Fraction`, so the figures are exact. The expected
corrupted fraction has the closed form ``(1/m) sum_j P(Hypergeom(n, f, s_j) >= c_j)``; with
n = 100, f = 20, k = 10, c = 1 it is 1 - C(80, 10) / C(100, 10) ≈ 0.905.

Static clusters are public and fixed, so an adversary who chooses whom to corrupt reaches the
worst-case placement (`worst_case_placement`) every round.

Shard sampling. A shard of s members drawn without replacement from N peers of which F are faulty
holds at least a fraction q faulty with probability ``P(Hypergeom(N, F, s) >= ceil(q s))``; with
N = 10000, F = 2500, s = 100, q = 1/3 this is ≈ 0.027 (the binomial limit N -> inf gives ≈ 0.028).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Literal

import numpy as np

from phalanx.clustering.strategies import cluster_sizes

AnalysisStrategy = Literal["random", "static"]
ANALYSIS_STRATEGIES: tuple[str, ...] = ("random", "static")


def as_fraction(value: float | int | str | Fraction, name: str) -> Fraction:
    """Exact rational from a user value; floats go through their shortest decimal repr (0.34)."""
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{name} must be finite, got {value}")
        return Fraction(repr(value))
    try:
        return Fraction(value)
    except (ValueError, ZeroDivisionError) as error:
        raise ValueError(f"{name} must be a number, got {value!r}") from error


def corruption_thresholds(
    sizes: Sequence[int],
    corrupt_threshold: int | None = 1,
    corrupt_fraction: float | Fraction | None = None,
) -> tuple[int, ...]:
    """Faulty members needed to corrupt each cluster: a fixed count, or ``ceil(q * s_j)`` (>= 1).

    Give exactly one of `corrupt_threshold` (count >= 1) and `corrupt_fraction` (q in (0, 1]).
    """
    if (corrupt_threshold is None) == (corrupt_fraction is None):
        raise ValueError("give exactly one of corrupt_threshold and corrupt_fraction")
    if corrupt_fraction is not None:
        fraction = as_fraction(corrupt_fraction, "corrupt_fraction")
        if not 0 < fraction <= 1:
            raise ValueError(f"corrupt_fraction must be in (0, 1], got {corrupt_fraction}")
        return tuple(max(1, math.ceil(fraction * size)) for size in sizes)
    assert corrupt_threshold is not None
    if corrupt_threshold < 1:
        raise ValueError(f"corrupt_threshold must be >= 1, got {corrupt_threshold}")
    return tuple(corrupt_threshold for _ in sizes)


def max_tolerated_corrupted(num_clusters: int, breakdown: float | Fraction) -> int:
    """Corrupted inputs the outer rule survives: ``ceil(b * m) - 1`` for breakdown point b."""
    point = as_fraction(breakdown, "breakdown")
    if not 0 < point <= 1:
        raise ValueError(f"breakdown must be in (0, 1], got {breakdown}")
    if num_clusters < 1:
        raise ValueError(f"num_clusters must be >= 1, got {num_clusters}")
    return math.ceil(point * num_clusters) - 1


def _check_population(num_nodes: int, num_faulty: int) -> None:
    if num_nodes < 1:
        raise ValueError(f"nodes must be >= 1, got {num_nodes}")
    if not 0 <= num_faulty <= num_nodes:
        raise ValueError(f"faulty must be in [0, {num_nodes}] (nodes), got {num_faulty}")


# --- exact distribution ----------------------------------------------------------------------

Poly = list[int]  # coefficient of t^d at index d


def _mul_band(p: Poly, q: Poly, low: int, high: int) -> Poly:
    """Coefficients low..high of p*q (lower ones left 0): only those can still reach t^f."""
    top = min(high, len(p) + len(q) - 2)
    out = [0] * (top + 1)
    for degree in range(max(low, 0), top + 1):
        start, stop = max(0, degree - len(q) + 1), min(degree, len(p) - 1)
        out[degree] = sum(p[i] * q[degree - i] for i in range(start, stop + 1))
    while len(out) > 1 and out[-1] == 0:
        out.pop()
    return out


def _powers(base: Poly, count: int, cap: int) -> list[Poly]:
    powers = [[1]]
    for _ in range(count):
        powers.append(_mul_band(powers[-1], base, 0, cap))
    return powers


@dataclass(frozen=True)
class CorruptionDistribution:
    """Exact law of the number of corrupted clusters under a uniformly random placement."""

    cluster_sizes: tuple[int, ...]
    thresholds: tuple[int, ...]
    num_faulty: int
    pmf: tuple[Fraction, ...]  # pmf[x] = P(X = x), x = 0..m

    @property
    def num_clusters(self) -> int:
        return len(self.cluster_sizes)

    def prob_at_least(self, corrupted: int) -> Fraction:
        """P(X >= corrupted)."""
        if corrupted <= 0:
            return Fraction(1)
        return sum(self.pmf[corrupted:], Fraction(0))

    def tail(self) -> tuple[Fraction, ...]:
        """(P(X >= 0), P(X >= 1), ..., P(X >= m))."""
        return tuple(self.prob_at_least(x) for x in range(self.num_clusters + 1))

    def expected_corrupted(self) -> Fraction:
        return sum((x * p for x, p in enumerate(self.pmf)), Fraction(0))

    def expected_fraction(self) -> Fraction:
        return self.expected_corrupted() / self.num_clusters

    def overwhelm_probability(self, breakdown: float | Fraction) -> Fraction:
        """P(X > ceil(b m) - 1): the outer aggregation's breakdown point is reached."""
        return self.prob_at_least(max_tolerated_corrupted(self.num_clusters, breakdown) + 1)


def corruption_distribution(
    sizes: Sequence[int], thresholds: Sequence[int], num_faulty: int
) -> CorruptionDistribution:
    """Exact P(X = x) by the cluster generating functions of the module docstring.

    Groups of equal (size, threshold) are handled at once through binomial powers; only the
    coefficients that can still reach t^f are computed (largest group first), so n in the low
    thousands is fine.
    """
    if not sizes or any(size < 1 for size in sizes):
        raise ValueError(f"cluster sizes must be >= 1, got {list(sizes)}")
    if len(thresholds) != len(sizes) or any(c < 1 for c in thresholds):
        raise ValueError("thresholds must give one count >= 1 per cluster")
    total = sum(sizes)
    _check_population(total, num_faulty)
    f = num_faulty
    counts: dict[tuple[int, int], int] = {}
    for size, threshold in zip(sizes, thresholds, strict=True):
        counts[(size, threshold)] = counts.get((size, threshold), 0) + 1
    groups = sorted(counts.items(), key=lambda item: (-item[0][0] * item[1], item[0]))
    remaining_nodes, done_nodes = total, 0
    # joint[x] = coefficients (truncated to t^f) over the groups done so far with x corrupted
    joint: dict[int, Poly] = {0: [1]}
    for (size, threshold), multiplicity in groups:
        remaining_nodes -= size * multiplicity
        low = max(0, f - remaining_nodes)  # the groups still to come add at most that many t's
        group_low = max(0, low - done_nodes)  # the groups done so far added at most done_nodes
        done_nodes += size * multiplicity
        a_poly = [math.comb(size, a) if a < threshold else 0 for a in range(min(size, f) + 1)]
        b_poly = [math.comb(size, a) if a >= threshold else 0 for a in range(min(size, f) + 1)]
        max_x = multiplicity if threshold <= min(size, f) else 0
        max_x = min(max_x, f // threshold)
        a_powers = _powers(a_poly, multiplicity, f)
        b_powers = _powers(b_poly, max_x, f)
        group_terms = {
            x: [
                math.comb(multiplicity, x) * coefficient
                for coefficient in _mul_band(a_powers[multiplicity - x], b_powers[x], group_low, f)
            ]
            for x in range(max_x + 1)
        }
        combined: dict[int, Poly] = {}
        for x_before, poly_before in joint.items():
            for x_group, poly_group in group_terms.items():
                product = _mul_band(poly_before, poly_group, low, f)
                total_x = x_before + x_group
                previous = combined.get(total_x)
                if previous is None:
                    combined[total_x] = product
                else:
                    width = max(len(previous), len(product))
                    previous.extend([0] * (width - len(previous)))
                    for degree, coefficient in enumerate(product):
                        previous[degree] += coefficient
        joint = combined
    denominator = math.comb(total, f)
    pmf = tuple(
        Fraction(poly[f] if len(poly) > f else 0, denominator)
        for poly in (joint.get(x, [0]) for x in range(len(sizes) + 1))
    )
    return CorruptionDistribution(tuple(sizes), tuple(thresholds), f, pmf)


def hypergeometric_tail(population: int, successes: int, draws: int, at_least: int) -> Fraction:
    """Exact P(H >= at_least) for H ~ Hypergeom(population, successes, draws)."""
    if population < 1:
        raise ValueError(f"population must be >= 1, got {population}")
    if not 0 <= successes <= population:
        raise ValueError(f"successes must be in [0, {population}], got {successes}")
    if not 0 <= draws <= population:
        raise ValueError(f"draws must be in [0, {population}] (population), got {draws}")
    start = max(at_least, 0, draws - (population - successes))
    favourable = sum(
        math.comb(successes, hits) * math.comb(population - successes, draws - hits)
        for hits in range(start, min(draws, successes) + 1)
    )
    return Fraction(favourable, math.comb(population, draws))


def expected_corrupted_fraction(
    sizes: Sequence[int], thresholds: Sequence[int], num_faulty: int
) -> Fraction:
    """Linearity of expectation: ``(1/m) sum_j P(Hypergeom(n, f, s_j) >= c_j)``."""
    total = sum(sizes)
    _check_population(total, num_faulty)
    probabilities = (
        hypergeometric_tail(total, num_faulty, size, threshold)
        for size, threshold in zip(sizes, thresholds, strict=True)
    )
    return sum(probabilities, Fraction(0)) / len(sizes)


def shard_corruption_probability(
    population: int, faulty: int, shard_size: int, fraction: float | Fraction
) -> Fraction:
    """P(a random shard of `shard_size` from `population` holds >= `fraction` faulty), exactly.

    Hypergeometric tail ``P(H >= ceil(q s))``, H ~ Hypergeom(N=population, K=faulty, s).
    """
    q = as_fraction(fraction, "fraction")
    if not 0 <= q <= 1:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    if not 1 <= shard_size <= population:
        raise ValueError(f"shard_size must be in [1, {population}] (population), got {shard_size}")
    return hypergeometric_tail(population, faulty, shard_size, math.ceil(q * shard_size))


def binomial_shard_corruption_probability(
    shard_size: int, faulty_fraction: float | Fraction, fraction: float | Fraction
) -> Fraction:
    """Infinite-population limit of `shard_corruption_probability`: Binomial(s, p) >= ceil(q s)."""
    p = as_fraction(faulty_fraction, "faulty_fraction")
    q = as_fraction(fraction, "fraction")
    if not 0 <= p <= 1 or not 0 <= q <= 1:
        raise ValueError(f"faulty_fraction and fraction must be in [0, 1], got {p} and {q}")
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    need = math.ceil(q * shard_size)
    return sum(
        (
            math.comb(shard_size, hits) * p**hits * (1 - p) ** (shard_size - hits)
            for hits in range(need, shard_size + 1)
        ),
        Fraction(0),
    )


# --- extreme placements ----------------------------------------------------------------------


@dataclass(frozen=True)
class Placement:
    """Faulty members per cluster and how many clusters that corrupts."""

    faulty_per_cluster: tuple[int, ...]
    corrupted: int


def _count_corrupted(faulty: Sequence[int], thresholds: Sequence[int]) -> int:
    return sum(1 for count, c in zip(faulty, thresholds, strict=True) if count >= c)


def _fill(faulty: list[int], caps: Sequence[int], left: int, order: Sequence[int]) -> int:
    for index in order:
        take = min(left, caps[index] - faulty[index])
        if take > 0:
            faulty[index] += take
            left -= take
    return left


def worst_case_placement(
    sizes: Sequence[int], thresholds: Sequence[int], num_faulty: int
) -> Placement:
    """Adversary's best: corrupt the cheapest clusters first (c_j ascending, then index).

    Greedy is optimal: corrupting x clusters costs at least the sum of the x smallest c_j.
    Left-over faulty nodes go where they corrupt nothing more.
    """
    _check_population(sum(sizes), num_faulty)
    faulty = [0] * len(sizes)
    left = num_faulty
    for index in sorted(range(len(sizes)), key=lambda j: (thresholds[j], j)):
        if thresholds[index] <= sizes[index] and thresholds[index] <= left:
            faulty[index] = thresholds[index]
            left -= thresholds[index]
    corrupted_first = sorted(range(len(sizes)), key=lambda j: (faulty[j] == 0, j))
    safe_caps = [
        sizes[j] if faulty[j] else min(sizes[j], thresholds[j] - 1) for j in range(len(sizes))
    ]
    left = _fill(faulty, safe_caps, left, corrupted_first)
    _fill(faulty, sizes, left, range(len(sizes)))
    return Placement(tuple(faulty), _count_corrupted(faulty, thresholds))


def best_case_placement(
    sizes: Sequence[int], thresholds: Sequence[int], num_faulty: int
) -> Placement:
    """Defender's best: c_j - 1 faulty per cluster, then the overflow packed into the clusters
    that absorb the most (largest ``s_j - c_j + 1`` first), which minimises corrupted clusters."""
    _check_population(sum(sizes), num_faulty)
    safe_caps = [min(size, c - 1) for size, c in zip(sizes, thresholds, strict=True)]
    faulty = [0] * len(sizes)
    left = _fill(faulty, safe_caps, num_faulty, range(len(sizes)))
    by_room = sorted(range(len(sizes)), key=lambda j: (-(sizes[j] - safe_caps[j]), j))
    _fill(faulty, sizes, left, by_room)
    return Placement(tuple(faulty), _count_corrupted(faulty, thresholds))


# --- Monte Carlo -----------------------------------------------------------------------------


@dataclass(frozen=True)
class MonteCarloEstimate:
    """Empirical law of X over `trials` uniformly random placements (numpy PCG64, `seed`)."""

    trials: int
    seed: int
    corrupted_counts: tuple[int, ...]  # corrupted_counts[x] = trials with X = x

    def probability(self, corrupted: int) -> float:
        return self.corrupted_counts[corrupted] / self.trials

    def prob_at_least(self, corrupted: int) -> float:
        return sum(self.corrupted_counts[max(corrupted, 0) :]) / self.trials

    def expected_fraction(self) -> float:
        clusters = len(self.corrupted_counts) - 1
        total = sum(x * count for x, count in enumerate(self.corrupted_counts))
        return total / (self.trials * clusters)

    def overwhelm_probability(self, breakdown: float | Fraction) -> float:
        clusters = len(self.corrupted_counts) - 1
        return self.prob_at_least(max_tolerated_corrupted(clusters, breakdown) + 1)

    @staticmethod
    def standard_error(probability: float, trials: int) -> float:
        """Binomial standard error sqrt(p (1 - p) / T) of an estimated probability."""
        return math.sqrt(probability * (1.0 - probability) / trials)


_MONTE_CARLO_BATCH_CELLS = 1 << 21


def monte_carlo(
    sizes: Sequence[int], thresholds: Sequence[int], num_faulty: int, trials: int, seed: int
) -> MonteCarloEstimate:
    """Shuffle the faulty indicator `trials` times, cut it into clusters, count corrupted ones.

    Batches have a fixed number of rows, so the same (inputs, seed) give the same counts.
    """
    total = sum(sizes)
    _check_population(total, num_faulty)
    if trials < 1:
        raise ValueError(f"trials must be >= 1, got {trials}")
    rng = np.random.default_rng(seed)
    indicator = np.zeros(total, dtype=np.int16)
    indicator[:num_faulty] = 1
    starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    needed = np.asarray(thresholds)
    histogram = np.zeros(len(sizes) + 1, dtype=np.int64)
    rows = max(1, _MONTE_CARLO_BATCH_CELLS // total)
    done = 0
    while done < trials:
        batch = min(rows, trials - done)
        shuffled = rng.permuted(np.broadcast_to(indicator, (batch, total)), axis=1)
        per_cluster = np.add.reduceat(shuffled, starts, axis=1)
        corrupted = (per_cluster >= needed).sum(axis=1)
        histogram += np.bincount(corrupted, minlength=len(sizes) + 1)
        done += batch
    return MonteCarloEstimate(trials, seed, tuple(int(count) for count in histogram))


# --- one-call analysis -----------------------------------------------------------------------


@dataclass(frozen=True)
class ClusterAnalysis:
    """Everything `phalanx analyze clusters` reports for one cluster size."""

    num_nodes: int
    num_faulty: int
    cluster_size: int
    strategy: str
    breakdown: Fraction
    cluster_sizes: tuple[int, ...]
    thresholds: tuple[int, ...]
    max_tolerated: int
    pmf: tuple[Fraction, ...]
    worst_case: Placement
    best_case: Placement
    monte_carlo: MonteCarloEstimate | None

    @property
    def num_clusters(self) -> int:
        return len(self.cluster_sizes)

    def prob_at_least(self, corrupted: int) -> Fraction:
        return sum(self.pmf[max(corrupted, 0) :], Fraction(0))

    def expected_fraction(self) -> Fraction:
        expected = sum((x * p for x, p in enumerate(self.pmf)), Fraction(0))
        return expected / self.num_clusters

    def overwhelm_probability(self) -> Fraction:
        return self.prob_at_least(self.max_tolerated + 1)

    def to_json(self) -> dict[str, Any]:
        """Floats for reading, exact rationals as "p/q" strings beside them."""

        def exact(value: Fraction) -> str:
            return f"{value.numerator}/{value.denominator}"

        tail = [self.prob_at_least(x) for x in range(self.num_clusters + 1)]
        result: dict[str, Any] = {
            "cluster_size": self.cluster_size,
            "num_clusters": self.num_clusters,
            "cluster_sizes": list(self.cluster_sizes),
            "corrupt_thresholds": list(self.thresholds),
            "max_tolerated_corrupted": self.max_tolerated,
            "expected_corrupted_fraction": float(self.expected_fraction()),
            "expected_corrupted_fraction_exact": exact(self.expected_fraction()),
            "prob_any_corrupted": float(self.prob_at_least(1)),
            "prob_any_corrupted_exact": exact(self.prob_at_least(1)),
            "prob_overwhelmed": float(self.overwhelm_probability()),
            "prob_overwhelmed_exact": exact(self.overwhelm_probability()),
            "distribution": [float(p) for p in self.pmf],
            "distribution_exact": [exact(p) for p in self.pmf],
            "prob_at_least": [float(p) for p in tail],
            "prob_at_least_exact": [exact(p) for p in tail],
            "worst_case": {
                "corrupted": self.worst_case.corrupted,
                "corrupted_fraction": self.worst_case.corrupted / self.num_clusters,
                "faulty_per_cluster": list(self.worst_case.faulty_per_cluster),
            },
            "best_case": {
                "corrupted": self.best_case.corrupted,
                "corrupted_fraction": self.best_case.corrupted / self.num_clusters,
                "faulty_per_cluster": list(self.best_case.faulty_per_cluster),
            },
            "monte_carlo": None,
        }
        if self.monte_carlo is not None:
            estimate = self.monte_carlo
            overwhelmed = estimate.overwhelm_probability(self.breakdown)
            result["monte_carlo"] = {
                "trials": estimate.trials,
                "seed": estimate.seed,
                "expected_corrupted_fraction": estimate.expected_fraction(),
                "prob_any_corrupted": estimate.prob_at_least(1),
                "prob_overwhelmed": overwhelmed,
                "prob_overwhelmed_stderr": estimate.standard_error(overwhelmed, estimate.trials),
                "corrupted_counts": list(estimate.corrupted_counts),
            }
        return result


def analyze_clusters(
    num_nodes: int,
    num_faulty: int,
    cluster_size: int,
    *,
    strategy: str = "random",
    corrupt_threshold: int | None = 1,
    corrupt_fraction: float | Fraction | None = None,
    breakdown: float | Fraction = Fraction(1, 2),
    monte_carlo_trials: int = 0,
    seed: int = 0,
) -> ClusterAnalysis:
    """Exact law (``random``) or adversarial worst case (``static``) of the corrupted clusters.

    For ``static`` the law is the point mass at the worst-case count: the groups are public and
    fixed, so an adversary who picks whom to corrupt places them optimally. The Monte-Carlo check
    (`monte_carlo_trials` > 0) samples random placements and is only run for ``random``.
    """
    if strategy not in ANALYSIS_STRATEGIES:
        raise ValueError(f"strategy must be one of {list(ANALYSIS_STRATEGIES)}, got {strategy!r}")
    _check_population(num_nodes, num_faulty)
    if not 1 <= cluster_size <= num_nodes:
        raise ValueError(f"cluster_size must be in [1, {num_nodes}] (nodes), got {cluster_size}")
    if monte_carlo_trials < 0:
        raise ValueError(f"monte_carlo_trials must be >= 0, got {monte_carlo_trials}")
    sizes = cluster_sizes(num_nodes, cluster_size)
    thresholds = corruption_thresholds(sizes, corrupt_threshold, corrupt_fraction)
    point = as_fraction(breakdown, "breakdown")
    tolerated = max_tolerated_corrupted(len(sizes), point)
    worst = worst_case_placement(sizes, thresholds, num_faulty)
    best = best_case_placement(sizes, thresholds, num_faulty)
    estimate = None
    if strategy == "random":
        pmf = corruption_distribution(sizes, thresholds, num_faulty).pmf
        if monte_carlo_trials:
            estimate = monte_carlo(sizes, thresholds, num_faulty, monte_carlo_trials, seed)
    else:
        pmf = tuple(Fraction(int(x == worst.corrupted)) for x in range(len(sizes) + 1))
    return ClusterAnalysis(
        num_nodes=num_nodes,
        num_faulty=num_faulty,
        cluster_size=cluster_size,
        strategy=strategy,
        breakdown=point,
        cluster_sizes=sizes,
        thresholds=thresholds,
        max_tolerated=tolerated,
        pmf=pmf,
        worst_case=worst,
        best_case=best,
        monte_carlo=estimate,
    )
