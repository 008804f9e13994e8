"""Robust aggregation rules on small inputs whose answer follows from each rule's definition."""

from __future__ import annotations

import argparse

import pytest
import torch

import phalanx.learning.aggregation as agg
from phalanx.bench.bench_aggregation import register_bench, run_aggregation_bench
from phalanx.learning.aggregation import (
    AGGREGATION_RULES,
    aggregate,
    aggregate_with_report,
    get_pre,
    get_rule,
    parse_spec,
)


def t(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def column(values: list[float]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)[:, None]


# ---------------------------------------------------------------------------------------------
# mean
# ---------------------------------------------------------------------------------------------


def test_mean_plain_and_weighted() -> None:
    x = t([[1, 2], [3, 4], [5, 9]])
    assert torch.equal(aggregate("mean", x, 0), column([3, 5]).flatten())
    # weights are cluster sizes: (1*1 + 1*3 + 2*5) / 4 and (2 + 4 + 18) / 4
    result = aggregate_with_report("mean", x, 0, weights=[1, 1, 2])
    assert torch.allclose(result.value, column([3.5, 6]).flatten())
    assert torch.allclose(result.weights, column([0.25, 0.25, 0.5]).flatten())
    assert result.flagged == []


def test_mean_refuses_any_byzantine_row() -> None:
    with pytest.raises(ValueError, match=r"'mean'.*f=0.*m=3.*got f=1"):
        aggregate("mean", t([[1], [2], [3]]), 1)


# ---------------------------------------------------------------------------------------------
# coordinate-wise median and trimmed mean
# ---------------------------------------------------------------------------------------------


def test_median_odd_and_even_counts() -> None:
    assert torch.equal(
        aggregate("median", t([[3, -1], [1, 5], [2, 0]]), 1), column([2, 0]).flatten()
    )
    # even m: the two middle values 2 and 4 are averaged
    assert torch.equal(aggregate("median", column([1, 4, 2, 10]), 1), column([3]).flatten())


def test_median_ties_at_the_limit_lowest_index_first() -> None:
    # m = 5, f = 2 is the largest f with m > 2f. Equal values keep row order, so the two
    # "smallest" are rows 0 and 1, the median position goes to row 2.
    result = aggregate_with_report("median", column([1, 1, 1, 7, 9]), 2)
    assert result.value.item() == 1.0
    assert result.flagged == [0, 1, 3, 4]
    assert result.weights.tolist() == [0, 0, 1, 0, 0]


@pytest.mark.parametrize(("m", "f"), [(5, 3), (6, 3), (1, 1)])
def test_median_refuses_f_without_honest_majority(m: int, f: int) -> None:
    with pytest.raises(ValueError, match=rf"'median'.*m={m}.*got f={f}"):
        aggregate("median", torch.zeros(m, 2), f)


def test_trimmed_mean_drops_f_from_each_side() -> None:
    x = column([10, 1, 2, 6, -50])
    assert aggregate("trimmed-mean", x, 1).item() == pytest.approx(3.0)  # mean(1, 2, 6)
    assert aggregate("trimmed-mean", x, 2).item() == pytest.approx(2.0)  # f = 2 at the limit
    assert aggregate("trimmed-mean", x, 1, trim=2).item() == pytest.approx(2.0)
    with pytest.raises(ValueError, match=r"'trimmed-mean'.*m=5.*got f=3"):
        aggregate("trimmed-mean", x, 3)
    with pytest.raises(ValueError, match=r"'trimmed-mean'.*at most f=1.*got f=2"):
        aggregate("trimmed-mean", x, 2, trim=1)


def test_trimmed_mean_per_coordinate_and_flags() -> None:
    x = t([[0, 100], [1, 1], [2, 2], [100, 0]])
    result = aggregate_with_report("trimmed-mean", x, 1)
    assert torch.equal(result.value, column([1.5, 1.5]).flatten())
    assert result.flagged == [0, 3]  # trimmed in both coordinates
    assert result.weights.tolist() == [0, 0.5, 0.5, 0]


# ---------------------------------------------------------------------------------------------
# Krum and Multi-Krum
# ---------------------------------------------------------------------------------------------

# m = 6, f = 1: each score sums the m - f - 2 = 3 smallest squared distances to the others:
# 0 -> 1+4+9 = 14, 1 -> 1+1+4 = 6, 2 -> 6, 3 -> 6, 4 -> 14, 100 -> huge.
KRUM_POINTS = column([0, 1, 2, 3, 4, 100])


def test_krum_picks_lowest_score_lowest_index_on_ties() -> None:
    result = aggregate_with_report("krum", KRUM_POINTS, 1)
    assert result.value.item() == 1.0  # rows 1, 2, 3 tie at 6: row 1 wins
    assert result.flagged == [0, 2, 3, 4, 5]
    assert result.weights.tolist() == [0, 1, 0, 0, 0, 0]


def test_krum_limit_is_m_greater_than_2f_plus_2() -> None:
    assert aggregate("krum", KRUM_POINTS, 1).item() == 1.0  # m = 6 = 2f + 4
    with pytest.raises(ValueError, match=r"'krum'.*at most f=1.*m=6.*m > 2f \+ 2.*got f=2"):
        aggregate("krum", KRUM_POINTS, 2)


def test_multi_krum_averages_the_q_best() -> None:
    result = aggregate_with_report("multi-krum", KRUM_POINTS, 1)  # q = m - f = 5
    assert result.value.item() == pytest.approx(2.0)  # mean(0, 1, 2, 3, 4)
    assert result.flagged == [5]
    two = aggregate_with_report("multi-krum", KRUM_POINTS, 1, q=2)
    assert two.value.item() == pytest.approx(1.5)  # rows 1 and 2 (stable among the tie)
    assert two.flagged == [0, 3, 4, 5]
    with pytest.raises(ValueError, match=r"'multi-krum'.*q=6.*m - f = 5"):
        aggregate("multi-krum", KRUM_POINTS, 1, q=6)


# ---------------------------------------------------------------------------------------------
# geometric median
# ---------------------------------------------------------------------------------------------


def test_geometric_median_known_points() -> None:
    square = t([[0, 0], [2, 0], [0, 2], [2, 2]])
    assert torch.allclose(aggregate("geometric-median", square, 1), column([1, 1]).flatten())
    # in one dimension the geometric median is the median
    result = aggregate_with_report("geometric-median", column([0, 1, 10]), 1)
    assert result.value.item() == pytest.approx(1.0, abs=1e-5)
    assert result.flagged == [0, 2]  # the Weiszfeld weight concentrates on row 1


def test_geometric_median_weights_are_the_objective_weights() -> None:
    # minimise 1|v| + 1|v - 1| + 5|v - 10|: the weight 5 exceeds half of 7, so v = 10
    value = aggregate("geometric-median", column([0, 1, 10]), 1, weights=[1, 1, 5])
    assert value.item() == pytest.approx(10.0, abs=1e-5)


def test_geometric_median_minimises_the_sum_of_distances() -> None:
    x = torch.randn(9, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    v = aggregate("geometric-median", x, 2)

    def objective(point: torch.Tensor) -> float:
        return float(torch.linalg.vector_norm(x - point, dim=1).sum())

    probe = torch.Generator().manual_seed(4)
    for _ in range(20):
        step = 1e-3 * torch.randn(4, generator=probe, dtype=torch.float64)
        assert objective(v) <= objective(v + step) + 1e-12


# ---------------------------------------------------------------------------------------------
# centered clipping
# ---------------------------------------------------------------------------------------------


def test_centered_clipping_one_step_by_hand() -> None:
    # center 0, radius 1: norms 5, 1, 0.5 give clip factors 0.2, 1, 1
    x = t([[3, 4], [0.6, 0.8], [0, 0.5]])
    expected = (torch.tensor([0.6, 0.8]) + torch.tensor([0.6, 0.8]) + torch.tensor([0, 0.5])) / 3
    for radius in (1.0, None):  # None: the lower median of the norms, which is 1 here
        result = aggregate_with_report("centered-clipping", x, 1, radius=radius, iterations=1)
        assert torch.allclose(result.value, expected.double())
        assert result.flagged == [0]
        assert torch.allclose(result.weights, torch.tensor([0.2, 1, 1], dtype=torch.float64) / 2.2)


def test_centered_clipping_from_a_given_center() -> None:
    x = t([[3, 4], [0.6, 0.8], [0, 0.5]])
    center = torch.tensor([0.6, 0.8], dtype=torch.float64)
    # x - c: (2.4, 3.2) of norm 4 -> factor 0.25; (0, 0); (-0.6, -0.3) of norm < 1
    value = aggregate("centered-clipping", x, 1, radius=1.0, iterations=1, center=center)
    assert torch.allclose(value, center + torch.tensor([0.0, 0.5], dtype=torch.float64) / 3)


def test_centered_clipping_fixed_point_balances_clipped_deviations() -> None:
    x = torch.randn(7, 3, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    x[0] += 50.0
    radius = 0.8
    v = aggregate("centered-clipping", x, 3, radius=radius, iterations=500)
    deviations = x - v
    norms = torch.linalg.vector_norm(deviations, dim=1, keepdim=True)
    clipped = deviations * torch.clamp(radius / norms, max=1.0)
    assert torch.allclose(clipped.sum(dim=0), torch.zeros(3, dtype=torch.float64), atol=1e-9)


def paper_centered_clipping(
    rounds: list[torch.Tensor], tau: float, iterations: int
) -> list[torch.Tensor]:
    """Karimireddy, He & Jaggi (2021), Algorithm 2's aggregation, transcribed: each round starts
    from the previous round's output (zero before the first) and repeats
    v <- v + (1/n) sum_i (x_i - v) min(1, tau / |x_i - v|)."""
    v = torch.zeros(rounds[0].shape[1], dtype=torch.float64)
    outputs = []
    for x in rounds:
        for _ in range(iterations):
            deviations = x - v
            norms = torch.linalg.vector_norm(deviations, dim=1, keepdim=True)
            v = v + (deviations * torch.clamp(tau / norms, max=1.0)).mean(dim=0)
        outputs.append(v.clone())
    return outputs


def test_centered_clipping_carries_its_center_across_rounds_by_hand() -> None:
    rule = get_rule("centered-clipping:carry_center=true,radius=1,iterations=1")
    # round 1 from 0: norms 5, 1, 0.5 give factors 0.2, 1, 1 -> v1 = (0.4, 0.7)
    v1 = rule(t([[3, 4], [0.6, 0.8], [0, 0.5]]), 1)
    assert torch.allclose(v1, torch.tensor([0.4, 0.7], dtype=torch.float64), rtol=0, atol=1e-15)
    # round 2 from v1: deviations (3, 4), (0, 0.5), (-0.6, 0) clip to (0.6, 0.8), (0, 0.5),
    # (-0.6, 0); their mean (0, 1.3 / 3) moves v1
    second = t([[3.4, 4.7], [0.4, 1.2], [-0.2, 0.7]])
    v2 = rule(second, 1)
    assert torch.allclose(v2, torch.tensor([0.4, 0.7 + 1.3 / 3], dtype=torch.float64), atol=1e-15)
    assert torch.equal(rule.center, v2)
    # without carrying, the same second round starts from zero again: a different answer
    stateless = get_rule("centered-clipping:radius=1,iterations=1")
    assert not torch.allclose(stateless(second, 1), v2)
    assert torch.equal(stateless(second, 1), stateless(second, 1))
    assert stateless.center is None


def test_centered_clipping_with_carried_center_is_the_papers_rule() -> None:
    g = torch.Generator().manual_seed(11)
    rounds = [1.0 + torch.randn(7, 5, generator=g, dtype=torch.float64) for _ in range(4)]
    for x in rounds:
        x[0] = 40.0  # one Byzantine row, far away every round
    expected = paper_centered_clipping(rounds, tau=0.7, iterations=2)
    rule = get_rule("centered-clipping", carry_center=True, radius=0.7, iterations=2)
    for x, v in zip(rounds, expected, strict=True):
        assert torch.allclose(rule(x, 3), v, rtol=0, atol=1e-12)
    # restarting: center = None makes the next call start from zero again
    rule.center = None
    assert torch.allclose(rule(rounds[0], 3), expected[0], rtol=0, atol=1e-12)


def test_centered_clipping_refuses_a_center_of_another_length() -> None:
    rule = get_rule("centered-clipping", carry_center=True)
    rule(torch.ones(3, 4, dtype=torch.float64), 1)
    with pytest.raises(ValueError, match=r"center has shape \(4,\), expected \(5,\)"):
        rule(torch.ones(3, 5, dtype=torch.float64), 1)
    with pytest.raises(ValueError, match="carry_center must be true or false"):
        get_rule("centered-clipping", carry_center="yes")


# ---------------------------------------------------------------------------------------------
# Bulyan
# ---------------------------------------------------------------------------------------------


def test_bulyan_by_hand() -> None:
    # m = 7, f = 1: theta = 5 rows chosen by repeated Krum, then per coordinate the
    # beta = 3 values closest to the median are averaged.
    # Krum rounds (neighbours 4, 3, 2, 1, 1) pick rows 0, 1 (tie with 0's twin), 4, 2, 3;
    # row 5 ([5, 5]) and the outlier are left out.
    x = t([[0, 0], [0, 0], [1, 0], [0, 1], [1, 1], [5, 5], [100, -100]])
    result = aggregate_with_report("bulyan", x, 1)
    # coordinate 0: values 0 0 1 0 1, median 0, closest rows 0 1 3; coordinate 1: rows 0 1 2
    assert torch.equal(result.value, torch.zeros(2, dtype=torch.float64))
    assert torch.allclose(
        result.weights, torch.tensor([2, 2, 1, 1, 0, 0, 0], dtype=torch.float64) / 6
    )
    assert result.flagged == [4, 5, 6]  # row 4 is never among the closest three


def test_bulyan_limit_is_m_at_least_4f_plus_3() -> None:
    x = torch.randn(11, 3, generator=torch.Generator().manual_seed(0))
    assert aggregate("bulyan", x, 2).shape == (3,)  # 11 = 4 * 2 + 3
    with pytest.raises(ValueError, match=r"'bulyan'.*at most f=1.*m=7.*4f \+ 3.*got f=2"):
        aggregate("bulyan", x[:7], 2)


def test_bulyan_without_byzantine_rows_is_the_mean() -> None:
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert torch.allclose(aggregate("bulyan", x, 0), x.mean(dim=0))


# ---------------------------------------------------------------------------------------------
# all rules
# ---------------------------------------------------------------------------------------------

ROBUST_RULES = [name for name in AGGREGATION_RULES if name != "mean"]


def honest_with_outlier(m: int = 11, d: int = 5) -> torch.Tensor:
    x = 1.0 + 0.1 * torch.randn(m, d, generator=torch.Generator().manual_seed(1))
    x[3] = 1e6
    return x


def test_one_scaled_outlier_breaks_the_mean() -> None:
    x = honest_with_outlier()
    honest_mean = torch.cat([x[:3], x[4:]]).mean(dim=0)
    assert float((aggregate("mean", x, 0) - honest_mean).abs().max()) > 1e4


@pytest.mark.parametrize("name", ROBUST_RULES)
def test_robust_rules_resist_one_scaled_outlier(name: str) -> None:
    x = honest_with_outlier()
    honest_mean = torch.cat([x[:3], x[4:]]).mean(dim=0)
    result = aggregate_with_report(name, x, 2)
    assert float((result.value - honest_mean).abs().max()) < 0.5
    assert 3 in result.flagged
    assert float(result.weights[3]) < 0.01


@pytest.mark.parametrize("name", list(AGGREGATION_RULES))
def test_every_rule_refuses_f_beyond_its_limit(name: str) -> None:
    rule = get_rule(name)
    limit = rule.max_f(9)
    x = torch.randn(9, 3, generator=torch.Generator().manual_seed(0))
    assert rule(x, limit).shape == (3,)  # the limit itself is accepted
    with pytest.raises(ValueError, match=rf"'{name}'.*at most f={limit}.*m=9.*got f={limit + 1}"):
        rule(x, limit + 1)
    with pytest.raises(ValueError, match="non-negative integer"):
        rule(x, -1)


@pytest.mark.parametrize("name", list(AGGREGATION_RULES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_every_rule_is_bit_deterministic_and_keeps_dtype(name: str, dtype: torch.dtype) -> None:
    x = torch.randn(11, 37, generator=torch.Generator().manual_seed(2), dtype=dtype)
    f = 0 if name == "mean" else 2
    first = aggregate_with_report(name, x, f)
    second = aggregate_with_report(name, x.clone(), f)
    assert first.value.dtype == dtype and first.value.shape == (37,)
    assert torch.equal(first.value, second.value)
    assert first.flagged == second.flagged
    assert torch.equal(first.weights, second.weights)
    assert float(first.weights.sum()) == pytest.approx(1.0)


@pytest.mark.parametrize("name", list(AGGREGATION_RULES))
def test_column_chunking_does_not_change_results(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    x = torch.randn(11, 10, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    f = 0 if name == "mean" else 2
    whole = aggregate_with_report(name, x, f)
    monkeypatch.setattr(agg, "_COLUMN_CHUNK", 4)
    chunked = aggregate_with_report(name, x, f)
    assert torch.allclose(whole.value, chunked.value, rtol=0, atol=1e-12)
    assert whole.flagged == chunked.flagged


def test_bad_inputs_are_refused_with_the_reason() -> None:
    x = torch.ones(4, 3)
    x[1, 2] = float("nan")
    with pytest.raises(ValueError, match=r"rows \[1\] contain NaN or inf"):
        aggregate("median", x, 1)
    with pytest.raises(ValueError, match=r"shape \(m, d\)"):
        aggregate("median", torch.ones(3), 1)
    with pytest.raises(ValueError, match="float32 or float64"):
        aggregate("median", torch.ones(3, 2, dtype=torch.int64), 1)
    with pytest.raises(ValueError, match=r"'median' does not use per-row weights"):
        aggregate("median", torch.ones(3, 2), 1, weights=[1, 2, 3])
    assert torch.equal(aggregate("median", torch.ones(3, 2), 1, weights=[2, 2, 2]), torch.ones(2))
    with pytest.raises(ValueError, match=r"weights must have shape \(3,\)"):
        aggregate("mean", torch.ones(3, 2), 0, weights=[1, 2])
    with pytest.raises(ValueError, match="finite and > 0"):
        aggregate("mean", torch.ones(3, 2), 0, weights=[1, 0, 2])


# ---------------------------------------------------------------------------------------------
# pre-aggregators and composition
# ---------------------------------------------------------------------------------------------


def test_nnm_averages_the_m_minus_f_nearest() -> None:
    # m = 4, f = 1: each row becomes the mean of its 3 nearest rows, itself included
    mixed = get_pre("nnm").apply(column([0, 1, 2, 10]), 1)
    assert torch.allclose(mixed.vectors.flatten(), torch.tensor([1, 1, 1, 13 / 3]).double())
    # m = 3, f = 1: row 1 has rows 0 and 2 at equal distance; the lowest index joins it
    tie = get_pre("nnm").apply(column([0, 1, 2]), 1)
    assert tie.vectors.flatten().tolist() == [0.5, 0.5, 1.5]


def test_bucketing_is_seeded_and_averages_its_buckets() -> None:
    x = torch.randn(8, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    first = get_pre("bucketing", bucket_size=3, seed=7).apply(x, 1)
    again = get_pre("bucketing:bucket_size=3,seed=7").apply(x, 1)
    other = get_pre("bucketing", bucket_size=3, seed=8).apply(x, 1)
    assert [len(b) for b in first.origin] == [3, 3, 2]
    assert sorted(i for b in first.origin for i in b) == list(range(8))
    for row, members in zip(first.vectors, first.origin, strict=True):
        assert torch.allclose(row, x[members].mean(dim=0))
    assert torch.equal(first.vectors, again.vectors) and first.origin == again.origin
    assert first.origin != other.origin


def test_static_clipping_scales_long_rows_only() -> None:
    clipped = get_pre("clip", threshold=1.0).apply(t([[3, 4], [0.3, 0.4]]), 0)
    assert torch.allclose(clipped.vectors, t([[0.6, 0.8], [0.3, 0.4]]))
    with pytest.raises(ValueError, match="'clip' needs threshold"):
        get_pre("clip")


def test_arc_clips_the_k_largest_to_the_next_norm_by_hand() -> None:
    # m = 5, f = 1: k = floor(2 * (1/5) * 4) = 1; norms 10, 5, 3, 2, 1 -> the largest is
    # clipped to 5, the rest are unchanged
    x = t([[6, 8], [0, 2], [3, 4], [0, -1], [0, 3]])
    arc = get_pre("arc")
    out = arc.apply(x, 1)
    assert torch.allclose(out.vectors, t([[3, 4], [0, 2], [3, 4], [0, -1], [0, 3]]))
    assert (out.f, out.origin) == (1, [[0], [1], [2], [3], [4]])
    # f = 2: k = floor(2 * (2/5) * 3) = 2; the two largest (10 and 5) go to the third, 3
    two = arc.apply(x, 2).vectors
    assert torch.allclose(two, t([[1.8, 2.4], [0, 2], [1.8, 2.4], [0, -1], [0, 3]]))
    # f = 0 clips nothing
    assert torch.equal(arc.apply(x, 0).vectors, x)


@pytest.mark.parametrize(
    ("m", "f", "k"), [(5, 1, 1), (5, 2, 2), (10, 3, 4), (9, 3, 4), (12, 5, 5), (3, 1, 1), (1, 0, 0)]
)
def test_arc_count_is_floor_of_2f_over_m_times_m_minus_f(m: int, f: int, k: int) -> None:
    assert get_pre("arc").clipped_count(m, f) == k  # e.g. 10, 3: 2 * 0.3 * 7 = 4.2 -> 4


def test_arc_keeps_weights_and_composes_before_a_rule() -> None:
    x = honest_with_outlier()  # row 3 is 1e6 in every coordinate
    out = get_pre("arc").apply(x, 2, weights=[1.0] * 10 + [2.0])
    assert float(torch.linalg.vector_norm(out.vectors[3])) < 5  # clipped to an honest norm
    assert out.weights is not None and float(out.weights[-1]) == pytest.approx(2 / 12)
    rule = get_rule("trimmed-mean", pre=["arc"])
    assert rule.name == "arc+trimmed-mean"
    honest_mean = torch.cat([x[:3], x[4:]]).mean(dim=0)
    assert float((rule(x, 2) - honest_mean).abs().max()) < 0.5


def test_composed_rule_maps_flags_back_to_bucket_members() -> None:
    x = torch.randn(10, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x[6] = 1e6
    rule = get_rule("multi-krum", pre="bucketing:seed=3")
    assert rule.name == "bucketing+multi-krum"
    result = rule.aggregate_with_report(x, 1)  # 5 buckets, q = 4 kept
    bucket = next(b for b in get_pre("bucketing:seed=3").apply(x, 1).origin if 6 in b)
    assert result.flagged == bucket
    assert float(result.weights[bucket].sum()) == 0.0
    assert float(result.weights.sum()) == pytest.approx(1.0)
    assert float(result.value.abs().max()) < 10


def test_composed_rule_checks_f_on_the_rows_left_after_pre_aggregation() -> None:
    # 12 rows -> 6 buckets; Krum on 6 rows needs 6 > 2f + 2, so f = 2 is refused
    rule = get_rule("krum", pre=["bucketing"])
    x = torch.randn(12, 2, generator=torch.Generator().manual_seed(0))
    assert rule(x, 1).shape == (2,)
    with pytest.raises(ValueError, match=r"'bucketing\+krum'.*m=12.*leave 6 rows.*got f=2"):
        rule(x, 2)


def test_nnm_then_trimmed_mean_resists_an_outlier() -> None:
    x = honest_with_outlier()
    honest_mean = torch.cat([x[:3], x[4:]]).mean(dim=0)
    result = aggregate_with_report("trimmed-mean", x, 2, pre=["clip:threshold=10", "nnm"])
    assert float((result.value - honest_mean).abs().max()) < 0.5


# ---------------------------------------------------------------------------------------------
# registry and specs
# ---------------------------------------------------------------------------------------------


def test_specs_and_registry_errors() -> None:
    assert parse_spec("trimmed-mean:trim=3,flag_fraction=0.25") == (
        "trimmed-mean",
        {"trim": 3, "flag_fraction": 0.25},
    )
    assert get_rule("multi-krum:q=2").name == "multi-krum"
    with pytest.raises(ValueError, match=r"unknown aggregation rule 'krumm'; known: .*krum"):
        get_rule("krumm")
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['tau'\].*'trimmed-mean'"):
        get_rule("trimmed-mean", tau=1)
    with pytest.raises(ValueError, match="not key=value"):
        parse_spec("krum:q")
    with pytest.raises(ValueError, match="given twice"):
        parse_spec("multi-krum:q=1,q=2")
    with pytest.raises(ValueError, match="must be an integer"):
        get_rule("multi-krum:q=1.5")
    with pytest.raises(ValueError, match=r"unknown pre-aggregator 'mix'"):
        get_pre("mix")


# ---------------------------------------------------------------------------------------------
# bench
# ---------------------------------------------------------------------------------------------


def test_bench_reports_every_rule_as_a_ratio_to_the_mean() -> None:
    result = run_aggregation_bench(m=11, d=64, repeats=1)
    assert result["f"] == 2  # (11 - 3) // 4
    assert set(result["rules"]) == set(AGGREGATION_RULES)
    assert result["rules"]["mean"]["ratio_to_mean"] == 1.0 and result["rules"]["mean"]["f"] == 0
    assert all(entry["ratio_to_mean"] > 0 for entry in result["rules"].values())
    assert set(result["pre"]) == {"nnm", "bucketing", "clip", "arc"}

    parser = argparse.ArgumentParser()
    register_bench(parser.add_subparsers())
    args = parser.parse_args(["aggregation", "--m", "9", "--d", "20", "--repeats", "1", "--json"])
    assert (args.m, args.d, args.f, args.repeats, args.json) == (9, 20, None, 1, True)
    assert args.func(args) == 0


def test_bench_times_a_selection_against_the_sort_path() -> None:
    result = run_aggregation_bench(
        m=11, d=64, repeats=1, rules=["median"], pres=[], sort_reference_rules=["median", "bulyan"]
    )
    assert set(result["rules"]) == {"mean", "median"} and result["pre"] == {}
    assert set(result["sort_reference"]) == {"median", "bulyan"}
    assert result["rules"]["median"]["ratio_to_sort_reference"] > 0
    assert "ratio_to_sort_reference" not in result["rules"]["mean"]
    with pytest.raises(ValueError, match="no sort reference for 'krum'"):
        run_aggregation_bench(m=11, d=8, repeats=1, sort_reference_rules=["krum"])
    with pytest.raises(ValueError, match="unknown pre-aggregator 'mix'"):
        run_aggregation_bench(m=11, d=8, repeats=1, pres=["mix"])

    parser = argparse.ArgumentParser()
    register_bench(parser.add_subparsers())
    argv = ["aggregation", "--m", "7", "--d", "9", "--repeats", "1", "--rules", "trimmed-mean"]
    args = parser.parse_args([*argv, "--pre", "", "--sort-reference", "trimmed-mean"])
    assert args.func(args) == 0


@pytest.mark.parametrize(
    ("name", "m", "f"),
    [("median", 10, 4), ("trimmed-mean", 10, 4), ("median", 10, 1), ("bulyan", 11, 2)],
)
def test_coordinate_wise_flags_are_chance_corrected(name: str, m: int, f: int) -> None:
    """Among exchangeable honest rows nobody is flagged, even when the rule drops most rows in
    every coordinate (median, f = 4 of 10: 8 extremes per coordinate); one shifted row is."""
    generator = torch.Generator().manual_seed(5)
    honest = torch.randn(m, 2000, generator=generator, dtype=torch.float64)
    # Bulyan also flags the 2f rows its Krum step leaves out, whatever they hold
    expected = 2 * f if name == "bulyan" else 0
    assert len(get_rule(name).aggregate_with_report(honest, f).flagged) == expected
    # a fixed 1/2 would flag (nearly) every honest row here when 2f/m > 1/2
    if 2 * f / m > 0.5:
        assert (
            len(get_rule(name, flag_fraction=0.5).aggregate_with_report(honest, f).flagged) >= m - 1
        )
    shifted = honest.clone()
    shifted[3] += 4.0
    assert 3 in get_rule(name).aggregate_with_report(shifted, f).flagged
    assert agg.chance_corrected_flag_fraction(8, 10) == pytest.approx(0.9)
