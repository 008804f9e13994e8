"""Packed Shamir sharing (Franklin & Yung 1992): exact sums within the bound, failure beyond it,
l-fold shorter shares, and privacy of any t - 1 shares whatever the packed secrets are."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from phalanx import mpc
from phalanx.mpc import field as gf
from phalanx.mpc.crypto import Csprng
from phalanx.mpc.encoding import FixedPointConfig, encode
from phalanx.mpc.session import ClusterSession
from phalanx.mpc.shamir import (
    SHARE_BLOCK,
    interpolate_at,
    packed_length,
    reconstruct_robust,
    secret_points,
    share_packed,
    share_vector,
)


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_packed_shares_lie_on_one_low_degree_polynomial_through_the_secrets(
    data: st.DataObject,
) -> None:
    """Each coordinate's shares interpolate (from t + l - 1 of them) to the secrets at 0, -1, ...,
    and every further share lies on the same polynomial, in every block of coordinates."""
    holders = data.draw(st.integers(2, 10))
    packing = data.draw(st.integers(1, holders))
    threshold = data.draw(st.integers(1, holders - packing + 1))
    # a long secret spans several of the blocks the shares are computed in
    length = data.draw(st.one_of(st.integers(1, 9), st.just(3 * SHARE_BLOCK + 5)))
    rng = Csprng(data.draw(st.integers(0, 2**31)))
    secret = rng.field_elements(length)
    shares = share_packed(secret, threshold, holders, packing, rng)
    assert len(shares) == holders
    assert all(share.shape == (packed_length(length, packing),) for share in shares)
    degree_plus_one = threshold + packing - 1
    basis = {x: shares[x - 1] for x in range(1, degree_plus_one + 1)}
    blocks = np.concatenate([interpolate_at(basis, point) for point in secret_points(packing)])
    assert np.array_equal(blocks[:length], secret)
    assert not blocks[length:].any()  # the padding is zero
    for x in range(degree_plus_one + 1, holders + 1):
        assert np.array_equal(interpolate_at(basis, x), shares[x - 1])


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_packed_secure_sum_is_exact_within_the_bound(data: st.DataObject) -> None:
    """Random clusters, thresholds, packings, silent holders and lying holders within
    received >= t + l - 1 and liars <= floor((received - t - l + 1) / 2): the field sum equals
    the exact sum of the encoded updates, and only liars are blamed."""
    k = data.draw(st.integers(2, 9))
    packing = data.draw(st.integers(1, k - 1))
    threshold = data.draw(st.integers(2, k - packing + 1))
    needed = threshold + packing - 1
    drop = data.draw(st.sets(st.integers(0, k - 1), max_size=k - needed))
    alive = sorted(set(range(k)) - drop)
    lie = data.draw(st.sets(st.sampled_from(alive), max_size=(len(alive) - needed) // 2))
    d = data.draw(st.integers(1, 13))
    seed = data.draw(st.integers(0, 1000))
    config = FixedPointConfig(clip=3.0, frac_bits=16)
    updates = np.random.default_rng(seed).normal(size=(k, d)).astype(np.float32)
    result = mpc.secure_sum(updates, "shamir", threshold, drop, lie, seed, config, packing=packing)
    assert not result.failed, result.reason
    exact = gf.reduce_u64(np.sum([encode(u, config).astype(np.uint64) for u in updates], axis=0))
    assert result.field_sum is not None and np.array_equal(result.field_sum, exact)
    assert result.max_abs_error <= config.error_bound(k)
    assert set(result.suspects) <= lie


def test_packed_sum_fails_beyond_the_bound_never_wrong() -> None:
    """k = 8, t = 3, l = 2: 4 partial sums are needed. Five silent holders leave 3: failed.
    With all 8 received the radius is floor((8 - 4) / 2) = 2: two liars are corrected; three
    liars sending independent garbage leave no degree-3 polynomial within 2 errors: failed."""
    updates = np.random.default_rng(3).normal(size=(8, 40))
    silent = mpc.secure_sum(updates, "shamir", 3, drop={0, 1, 2, 3, 4}, seed=1, packing=2)
    assert silent.failed and silent.value is None and "threshold is 4" in silent.reason
    corrected = mpc.secure_sum(updates, "shamir", 3, lie={1, 6}, seed=1, packing=2)
    assert not corrected.failed and set(corrected.suspects) == {1, 6}
    too_many = mpc.secure_sum(updates, "shamir", 3, lie={1, 4, 6}, seed=1, packing=2)
    assert too_many.failed and too_many.value is None


def test_packing_cuts_bytes_and_the_share_count_stays() -> None:
    updates = np.random.default_rng(4).normal(scale=0.1, size=(8, 10_000))
    plain = mpc.secure_sum(updates, "shamir", seed=2)
    packed = mpc.secure_sum(updates, "shamir", seed=2, packing=2)
    assert plain.threshold == packed.threshold == 3
    assert plain.field_sum is not None and packed.field_sum is not None
    assert np.array_equal(plain.field_sum, packed.field_sum)
    ratio = sum(packed.bytes_sent) / sum(plain.bytes_sent)
    assert 0.49 < ratio < 0.51


def test_any_t_minus_1_packed_shares_identically_distributed() -> None:
    """t = 3, l = 2, m = 6: holders {2, 5} see the same joint distribution whether the packed
    pair of secrets is (0, 0) or (p-1, 12345) (chi-square on the residues mod 4, KS on each
    marginal, 20,000 independent coordinates). Control: with t = 1 holders 2 and 5 alone
    determine the degree-1 polynomial, hence both secrets."""
    draws = 20_000
    rng = Csprng(12)

    def holders_2_and_5(first: int, second: int, threshold: int) -> tuple[np.ndarray, np.ndarray]:
        secret = np.empty(2 * draws, dtype=np.uint32)
        secret[:draws], secret[draws:] = first, second
        shares = share_packed(secret, threshold, 6, 2, rng)
        return shares[1], shares[4]

    def cells(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.bincount((a % 4) * 4 + (b % 4), minlength=16)

    zero, other = holders_2_and_5(0, 0, 3), holders_2_and_5(gf.PRIME - 1, 12345, 3)
    assert stats.chi2_contingency(np.vstack([cells(*zero), cells(*other)])).pvalue > 1e-4
    for a, b in zip(zero, other, strict=True):
        assert stats.ks_2samp(a / gf.PRIME, b / gf.PRIME).pvalue > 1e-4
    s2, s5 = holders_2_and_5(7, 9, 1)
    assert np.all(interpolate_at({2: s2, 5: s5}, 0) == 7)
    assert np.all(interpolate_at({2: s2, 5: s5}, gf.PRIME - 1) == 9)


def test_packing_one_is_plain_shamir_bit_for_bit() -> None:
    secret = Csprng(1).field_elements(33)
    assert all(
        np.array_equal(a, b)
        for a, b in zip(
            share_packed(secret, 3, 7, 1, Csprng(9)),
            share_vector(secret, 3, 7, Csprng(9)),
            strict=True,
        )
    )
    shares = {x: s for x, s in enumerate(share_vector(secret, 3, 7, Csprng(9)), start=1)}
    value = reconstruct_robust(shares, 3).value
    assert value is not None and np.array_equal(value, secret)


def test_bad_packing_is_refused_with_the_numbers() -> None:
    secret = np.zeros(10, dtype=np.uint32)
    with pytest.raises(ValueError, match=r"t \+ l - 1 = 6 shares to reconstruct, more than the 5"):
        share_packed(secret, 3, 5, 4, Csprng(0))
    with pytest.raises(ValueError, match="packing must be >= 1"):
        secret_points(0)
    with pytest.raises(ValueError, match=r"t \+ l - 1 = 5 holders .* cluster size 4"):
        ClusterSession(("a", "b", "c", "d"), 0, "c0", 2, 10, packing=4)
    with pytest.raises(ValueError, match="packing applies to mode 'shamir' only"):
        mpc.secure_sum(np.zeros((3, 4)), "secagg", packing=2)
