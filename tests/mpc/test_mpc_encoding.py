"""Fixed-point encoding: overflow refusal, error bound, unbiased stochastic rounding."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phalanx.mpc import field as gf
from phalanx.mpc.encoding import FixedPointConfig, decode, decode_sum, encode


def test_overflow_refused_with_named_limits() -> None:
    config = FixedPointConfig(clip=1000.0, frac_bits=20)
    with pytest.raises(ValueError) as caught:
        config.check_no_overflow(64)
    message = str(caught.value)
    for fragment in ("clip 1000.0", "frac_bits=20", "cluster size 64", f"p={gf.PRIME}"):
        assert fragment in message


def test_max_cluster_size_is_the_exact_overflow_boundary() -> None:
    config = FixedPointConfig(clip=8.0, frac_bits=16)
    largest = config.max_cluster_size()
    config.check_no_overflow(largest)
    with pytest.raises(ValueError, match="fixed-point overflow"):
        config.check_no_overflow(largest + 1)
    # the worst case actually fits: largest values of one sign all summed
    codes = [encode(np.array([config.clip]), config) for _ in range(largest)]
    total = gf.reduce_u64(np.sum([c.astype(np.uint64) for c in codes], axis=0))
    assert decode(total, config)[0] == pytest.approx(largest * config.clip)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"clip": 0.0}, "clip"), ({"clip": float("nan")}, "clip"), ({"frac_bits": 31}, "frac_bits")],
)
def test_bad_config_rejected(kwargs: dict[str, float], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        FixedPointConfig(**kwargs)  # type: ignore[arg-type]


def test_bad_updates_rejected() -> None:
    config = FixedPointConfig()
    with pytest.raises(ValueError, match="NaN or infinite"):
        encode(np.array([1.0, np.inf]), config)
    with pytest.raises(ValueError, match="1-D"):
        encode(np.zeros((2, 2)), config)
    with pytest.raises(ValueError, match="float32 or float64"):
        encode(np.array([1, 2]), config)
    with pytest.raises(ValueError, match="rng"):
        encode(np.array([0.5]), FixedPointConfig(stochastic_rounding=True))


@settings(max_examples=60, deadline=None)
@given(
    k=st.integers(1, 12),
    d=st.integers(1, 16),
    frac_bits=st.integers(4, 20),
    stochastic=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_decoded_sum_within_bound(
    k: int, d: int, frac_bits: int, stochastic: bool, seed: int
) -> None:
    config = FixedPointConfig(clip=2.0, frac_bits=frac_bits, stochastic_rounding=stochastic)
    rng = np.random.default_rng(seed)
    updates = rng.normal(scale=1.5, size=(k, d)).astype(np.float32)
    codes = [encode(row, config, rng) for row in updates]
    field_sum = gf.reduce_u64(np.sum([c.astype(np.uint64) for c in codes], axis=0))
    decoded = decode_sum(field_sum, config, k)
    exact = np.clip(updates.astype(np.float64), -2.0, 2.0).sum(axis=0)
    assert np.max(np.abs(decoded - exact)) <= config.error_bound(k) * (1 + 1e-9)


def test_stochastic_rounding_is_unbiased_and_nearest_is_not() -> None:
    frac_bits = 8
    value = 0.3 / 2**frac_bits  # 0.3 of one quantum: nearest rounding always gives 0
    updates = np.full(40_000, value)
    stochastic = FixedPointConfig(frac_bits=frac_bits, stochastic_rounding=True)
    decoded = decode(encode(updates, stochastic, np.random.default_rng(1)), stochastic)
    quantum = 2.0**-frac_bits
    standard_error = quantum * np.sqrt(0.3 * 0.7 / updates.size)
    assert abs(decoded.mean() - value) < 5 * standard_error
    nearest = FixedPointConfig(frac_bits=frac_bits)
    assert decode(encode(updates, nearest), nearest).mean() == 0.0


def test_encoding_is_deterministic_for_a_seed() -> None:
    config = FixedPointConfig(stochastic_rounding=True)
    update = np.random.default_rng(0).normal(size=100)
    first = encode(update, config, np.random.default_rng(7))
    second = encode(update, config, np.random.default_rng(7))
    assert np.array_equal(first, second)


def test_decode_centre_lifts_at_the_half_field_boundary() -> None:
    from phalanx.mpc.encoding import HALF_FIELD
    from phalanx.mpc.field import PRIME

    config = FixedPointConfig()
    codes = np.array([0, 1, HALF_FIELD, HALF_FIELD + 1, PRIME - 1], dtype=np.uint32)
    expected = np.array([0, 1, HALF_FIELD, -HALF_FIELD, -1], dtype=np.float64) / config.scale
    decoded = decode(codes, config)
    assert decoded.dtype == np.float64
    assert np.array_equal(decoded, expected)
