"""Shamir sharing: exact reconstruction, robust decoding within the bound, failure beyond it,
and perfect privacy of any t - 1 shares."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from phalanx.mpc import field as gf
from phalanx.mpc.crypto import Csprng
from phalanx.mpc.shamir import (
    berlekamp_welch,
    partial_sum,
    reconstruct,
    reconstruct_robust,
    share_vector,
)


def _field_sum(vectors: list[gf.FieldVector]) -> gf.FieldVector:
    return np.asarray(
        np.sum([v.astype(object) for v in vectors], axis=0) % gf.PRIME, dtype=np.uint32
    )


@st.composite
def sharing_case(draw: st.DrawFn) -> dict[str, object]:
    holders = draw(st.integers(1, 9))
    threshold = draw(st.integers(1, holders))
    missing = draw(st.sets(st.integers(1, holders), max_size=holders - threshold))
    received = holders - len(missing)
    present = sorted(set(range(1, holders + 1)) - missing)
    liars = draw(st.sets(st.sampled_from(present), max_size=(received - threshold) // 2))
    return {
        "holders": holders,
        "threshold": threshold,
        "missing": missing,
        "liars": liars,
        "dealers": draw(st.integers(1, 5)),
        "length": draw(st.integers(1, 6)),
        "seed": draw(st.integers(0, 2**31)),
    }


def _partial_sums(case: dict, rng: Csprng) -> tuple[dict[int, gf.FieldVector], gf.FieldVector]:
    secrets = [rng.field_elements(case["length"]) for _ in range(case["dealers"])]
    dealt = [share_vector(s, case["threshold"], case["holders"], rng) for s in secrets]
    sums = {
        j + 1: partial_sum([shares[j] for shares in dealt])
        for j in range(case["holders"])
        if j + 1 not in case["missing"]
    }
    return sums, _field_sum(secrets)


@settings(max_examples=80, deadline=None)
@given(sharing_case())
def test_robust_reconstruction_exact_within_bound(case: dict) -> None:
    rng = Csprng(case["seed"])
    sums, expected = _partial_sums(case, rng)
    for liar in case["liars"]:
        delta = rng.field_elements(case["length"])
        delta[0] = delta[0] or 1  # make sure the liar really lies
        sums[liar] = gf.add(sums[liar], delta)
    result = reconstruct_robust(sums, case["threshold"])
    assert not result.failed, result.reason
    assert result.value is not None and np.array_equal(result.value, expected)
    # every liar is wrong on coordinate 0, so a verified decode must have excluded exactly them
    assert set(result.suspects) == case["liars"]


@settings(max_examples=80, deadline=None)
@given(
    holders=st.integers(3, 10),
    data=st.data(),
)
def test_beyond_correction_but_within_detection_always_fails(
    holders: int, data: st.DataObject
) -> None:
    """With max_errors=e and e < liars <= n - t - e, every decode must fail, whatever the lies."""
    threshold = data.draw(st.integers(1, holders - 2))
    max_errors = data.draw(st.integers(0, (holders - threshold - 1) // 2))
    liar_count = data.draw(st.integers(max_errors + 1, holders - threshold - max_errors))
    liars = data.draw(st.sets(st.integers(1, holders), min_size=liar_count, max_size=liar_count))
    length = data.draw(st.integers(1, 4))
    deltas = data.draw(st.lists(st.integers(1, gf.PRIME - 1), min_size=1, max_size=1))
    rng = Csprng(data.draw(st.integers(0, 1000)))
    shares = dict(enumerate(share_vector(rng.field_elements(length), threshold, holders, rng), 1))
    for liar in liars:  # colluding liars: all add the same structured delta
        shares[liar] = gf.add(shares[liar], np.full(length, deltas[0], dtype=np.uint32))
    result = reconstruct_robust(shares, threshold, max_errors=max_errors)
    assert result.failed and result.value is None


def test_random_garbage_beyond_radius_fails_and_too_few_fails() -> None:
    rng = Csprng(3)
    secret = rng.field_elements(1000)
    shares = dict(enumerate(share_vector(secret, 4, 10, rng), 1))
    for liar in (1, 4, 6, 9):  # 4 liars, radius floor((10 - 4) / 2) = 3
        shares[liar] = rng.field_elements(1000)
    result = reconstruct_robust(shares, 4)
    assert result.failed and result.value is None and result.reason
    few = reconstruct_robust({1: secret, 2: secret}, 3)
    assert few.failed and "threshold is 3" in few.reason


def test_liar_on_few_coordinates_found_by_iterating() -> None:
    rng = Csprng(4)
    secret = rng.field_elements(5000)
    shares = dict(enumerate(share_vector(secret, 3, 9, rng), 1))
    shares[2] = shares[2].copy()
    shares[2][17] ^= 5
    shares[7] = shares[7].copy()
    shares[7][4000] ^= 9  # a second liar on a different single coordinate
    result = reconstruct_robust(shares, 3, locator_samples=1)
    assert not result.failed
    assert result.suspects == (2, 7)
    assert result.value is not None and np.array_equal(result.value, secret)


def test_plain_lagrange_and_threshold_one() -> None:
    rng = Csprng(5)
    secret = rng.field_elements(50)
    shares = share_vector(secret, 3, 5, rng)
    assert np.array_equal(reconstruct({2: shares[1], 4: shares[3], 5: shares[4]}, 3), secret)
    assert all(np.array_equal(s, secret) for s in share_vector(secret, 1, 3, rng))
    with pytest.raises(ValueError, match="threshold"):
        share_vector(secret, 6, 5, rng)
    with pytest.raises(ValueError, match="at least threshold"):
        reconstruct({1: shares[0]}, 2)


def test_berlekamp_welch_scalar() -> None:
    polynomial = [11, 22, 33]
    points = list(range(1, 8))
    values = [sum(c * x**k for k, c in enumerate(polynomial)) % gf.PRIME for x in points]
    values[1] += 5
    values[5] += 7
    decoded = berlekamp_welch(points, values, 3, 2)
    assert decoded is not None
    assert decoded[0] == polynomial and decoded[1] == [1, 5]
    values[3] += 1
    assert berlekamp_welch(points, values, 3, 2) is None


def test_wrong_length_share_rejected() -> None:
    with pytest.raises(ValueError, match="shape"):
        reconstruct_robust({1: np.zeros(3, np.uint32), 2: np.zeros(4, np.uint32)}, 1)
    with pytest.raises(ValueError, match="shape"):
        partial_sum([np.zeros(3, np.uint32), np.zeros(4, np.uint32)])


def test_any_t_minus_1_shares_identically_distributed() -> None:
    """Shares at points {2, 5} (t = 3) of secret 0 vs secret p-1: same joint distribution.

    One call shares 20,000 independent coordinates, i.e. 20,000 independent draws. The joint
    projection (share mod 4, share mod 4) is compared by a chi-square contingency test and each
    coordinate's marginal by a two-sample KS test. Control: with t = 2 the same two shares
    determine the secret exactly.
    """
    draws = 20_000
    rng = Csprng(11)

    def joint(secret_value: int, threshold: int) -> tuple[np.ndarray, np.ndarray]:
        secret = np.full(draws, secret_value, dtype=np.uint32)
        shares = share_vector(secret, threshold, 5, rng)
        return shares[1], shares[4]

    def cells(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.bincount((a % 4) * 4 + (b % 4), minlength=16)

    zero, top = joint(0, 3), joint(gf.PRIME - 1, 3)
    table = np.vstack([cells(*zero), cells(*top)])
    assert stats.chi2_contingency(table).pvalue > 1e-4
    for a, b in zip(zero, top, strict=True):
        assert stats.ks_2samp(a / gf.PRIME, b / gf.PRIME).pvalue > 1e-4

    # Negative control: with t = 2, the two shares f(2), f(5) determine the secret, so the
    # combination (5 f(2) - 2 f(5)) / 3 = f(0) separates the secrets perfectly.
    inverse_three = gf.inverse(3)
    for value, (s2, s5) in ((0, joint(0, 2)), (7, joint(7, 2))):
        recovered = gf.scale(gf.sub(gf.scale(s2, 5), gf.scale(s5, 2)), inverse_three)
        assert np.all(recovered == value)


@given(st.integers(1, 6), st.integers(1, 14), st.integers(0, 2**32 - 1))
@settings(max_examples=40, deadline=None)
def test_forward_difference_shares_equal_direct_polynomial_evaluation(
    degree_plus_one: int, points: int, seed: int
) -> None:
    from phalanx.mpc.shamir import evaluate_at_points

    rng = Csprng(seed)
    terms = [rng.field_elements(50) for _ in range(degree_plus_one)]
    direct = [
        gf.linear_combination([pow(x, k, gf.PRIME) for k in range(degree_plus_one)], terms)
        for x in range(1, points + 1)
    ]
    fast = evaluate_at_points(terms, points)
    assert len(fast) == points
    assert all(np.array_equal(a, b) for a, b in zip(direct, fast, strict=True))
