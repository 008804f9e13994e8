"""Coordinate-wise rules (median, trimmed mean, Bulyan) against the full stable sort, bit for bit.

The rules select order statistics instead of sorting rows with their indices; the reference is
the sort-based computation they replaced (``bench.bench_aggregation.sort_reference``). Values,
flagged rows and weights must match exactly, ties and signed zeros included.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import phalanx.learning.aggregation as agg
from phalanx.bench.bench_aggregation import SORT_REFERENCE_RULES, sort_reference
from phalanx.learning.aggregation import AggregationResult, aggregate_with_report, get_rule

BITS = {torch.float32: torch.int32, torch.float64: torch.int64}


def assert_same_bits(result: AggregationResult, reference: AggregationResult) -> None:
    value, expected = result.value, reference.value
    assert value.dtype == expected.dtype and value.shape == expected.shape
    assert torch.equal(value.view(BITS[value.dtype]), expected.view(BITS[expected.dtype]))
    assert result.flagged == reference.flagged
    assert torch.equal(result.weights.view(torch.int64), reference.weights.view(torch.int64))


def inputs(kind: str, m: int, d: int, dtype: torch.dtype, seed: int) -> torch.Tensor:
    """Random rows of one of several kinds, most of them full of ties."""
    g = torch.Generator().manual_seed(seed)
    if kind == "gaussian":
        return torch.randn(m, d, generator=g, dtype=dtype)
    if kind == "integers":  # a handful of values: ties at every rank
        return torch.randint(-3, 4, (m, d), generator=g).to(dtype)
    if kind == "signed-zeros":  # -0.0 and +0.0 mixed with small integers
        x = torch.randint(-1, 2, (m, d), generator=g).to(dtype)
        flip = torch.rand(m, d, generator=g) < 0.5
        return torch.where((x == 0) & flip, torch.tensor(-0.0, dtype=dtype), x)
    if kind == "repeated-rows":  # colluders sending one vector, as ALIE does
        x = torch.randn(m, d, generator=g, dtype=dtype)
        colluders = max(1, m // 3)
        x[:colluders] = x[m - 1]
        return x
    if kind == "subnormal-and-huge":
        tiny = torch.finfo(dtype).tiny
        pool = torch.tensor(
            [-1e30, -3.0, -tiny / 4, 0.0, tiny / 2, tiny / 2, 1.0, 1e30], dtype=dtype
        )
        return pool[torch.randint(0, len(pool), (m, d), generator=g)]
    raise ValueError(kind)


KINDS = ["gaussian", "integers", "signed-zeros", "repeated-rows", "subnormal-and-huge"]


def cases(name: str) -> list[tuple[int, int]]:
    """(m, f) pairs over even and odd m, every f the rule accepts."""
    rule = get_rule(name)
    return [(m, f) for m in (1, 2, 3, 4, 5, 6, 7, 8, 11, 12, 19) for f in range(rule.max_f(m) + 1)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", SORT_REFERENCE_RULES)
def test_selection_matches_the_full_sort_bit_for_bit(
    name: str, kind: str, dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(agg, "_ORDER_CHUNK", 7)  # several blocks, the last one partial
    for seed, (m, f) in enumerate(cases(name)):
        x = inputs(kind, m, 23, dtype, seed)
        assert_same_bits(aggregate_with_report(name, x, f), sort_reference(name, x, f))


@pytest.mark.parametrize("name", SORT_REFERENCE_RULES)
def test_torch_path_matches_the_full_sort_bit_for_bit(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the steps other devices run (torch instead of numpy), exercised on CPU
    monkeypatch.setattr(agg, "_NUMPY_ORDER", False)
    monkeypatch.setattr(agg, "_ORDER_CHUNK", 5)
    for kind in KINDS:
        for seed, (m, f) in enumerate(cases(name)):
            x = inputs(kind, m, 12, torch.float32, seed)
            assert_same_bits(aggregate_with_report(name, x, f), sort_reference(name, x, f))


@pytest.mark.parametrize("name", SORT_REFERENCE_RULES)
def test_full_size_blocks_match_the_full_sort(name: str) -> None:
    # default block size: one full block of columns and a partial one, m = 100 as in the bench
    x = inputs("gaussian", 100, 5000, torch.float32, 0)
    x[:, :100] = torch.round(x[:, :100])  # and columns full of ties
    f = 24
    assert_same_bits(aggregate_with_report(name, x, f), sort_reference(name, x, f))


@pytest.mark.parametrize("name", SORT_REFERENCE_RULES)
def test_uniform_weights_change_nothing(name: str) -> None:
    # these rules take no per-row weights: uniform ones are accepted and ignored, others refused
    x = inputs("integers", 11, 9, torch.float64, 3)
    plain = aggregate_with_report(name, x, 2)
    assert_same_bits(aggregate_with_report(name, x, 2, weights=[4.0] * 11), plain)
    with pytest.raises(ValueError, match="does not use per-row weights"):
        aggregate_with_report(name, x, 2, weights=[1.0] * 10 + [2.0])


POOL = [-2.0, -1.0, -0.0, 0.0, 0.5, 1.0, 1.0 + 2**-20, 3.0, 1e20]


@settings(max_examples=150, deadline=None)
@given(
    name=st.sampled_from(SORT_REFERENCE_RULES),
    m=st.integers(1, 13),
    d=st.integers(1, 9),
    data=st.data(),
)
def test_selection_matches_the_full_sort_on_arbitrary_ties(
    name: str, m: int, d: int, data: st.DataObject
) -> None:
    limit = get_rule(name).max_f(m)
    if limit < 0:
        return
    f = data.draw(st.integers(0, limit))
    values = data.draw(st.lists(st.sampled_from(POOL), min_size=m * d, max_size=m * d))
    dtype = data.draw(st.sampled_from([torch.float32, torch.float64]))
    x = torch.tensor(values, dtype=dtype).reshape(m, d)
    assert_same_bits(aggregate_with_report(name, x, f), sort_reference(name, x, f))


@pytest.mark.parametrize("name", SORT_REFERENCE_RULES)
@pytest.mark.parametrize("d", [1, 2, 9])
def test_inputs_are_left_untouched(name: str, d: int) -> None:
    # one column transposed is already contiguous: the block sorted in place must be a copy
    x = inputs("signed-zeros", 7, d, torch.float32, 5)
    before = x.clone()
    aggregate_with_report(name, x, 1)
    assert torch.equal(x.view(torch.int32), before.view(torch.int32))
