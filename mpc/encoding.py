"""Fixed-point encoding of float updates into GF(p), p = 2^31 - 1.

A real x is clipped to [-clip, clip] and mapped to the integer q = round(x * 2^f) (f =
``frac_bits``), stored as q mod p (negatives wrap to p - |q|). A sum of K encodings decodes
correctly when the integer sum never leaves the centred interval [-(p-1)/2, (p-1)/2], i.e. when

    K * (clip * 2^f + 1) <= (p - 1) / 2,

the "+1" covering rounding up. :meth:`FixedPointConfig.check_no_overflow` enforces exactly this
inequality. Rounding to nearest errs by at most 2^-(f+1) per value and unbiased stochastic
rounding (q = floor(x 2^f + U), U ~ Uniform[0, 1), so E[q] = x 2^f) by less than 2^-f, hence the
decoded cluster sum is within K * 2^-f of the float sum of the clipped inputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from phalanx.mpc.field import PRIME, FieldVector

HALF_FIELD: int = (PRIME - 1) // 2
"""Largest magnitude an encoded (signed) sum may reach without wrapping."""


@dataclass(frozen=True)
class FixedPointConfig:
    """Clipping bound and precision of the fixed-point code.

    Attributes:
        clip: every coordinate is clipped to [-clip, clip] before encoding (> 0).
        frac_bits: fractional bits f; resolution is 2^-f.
        stochastic_rounding: round x 2^f up with probability equal to its fractional part
            (unbiased), instead of to nearest.
    """

    clip: float = 4.0
    frac_bits: int = 16
    stochastic_rounding: bool = False

    def __post_init__(self) -> None:
        if not (math.isfinite(self.clip) and self.clip > 0):
            raise ValueError(f"clip must be a finite number > 0, got {self.clip}")
        if not (0 <= self.frac_bits <= 30):
            raise ValueError(f"frac_bits must be in [0, 30], got {self.frac_bits}")
        if self.max_abs_encoded + 1 > HALF_FIELD:
            raise ValueError(
                f"a single value cannot be encoded: clip={self.clip} * 2^{self.frac_bits} "
                f"exceeds half the field size (p-1)/2={HALF_FIELD}"
            )

    @property
    def scale(self) -> float:
        """2^frac_bits, the factor between a real value and its integer code."""
        return float(2**self.frac_bits)

    @property
    def max_abs_encoded(self) -> int:
        """Largest |q| a clipped value can round to before the stochastic "+1"."""
        return math.ceil(self.clip * self.scale)

    def max_cluster_size(self) -> int:
        """Largest K with K * (clip 2^f + 1) <= (p - 1) / 2: sums of K values never wrap."""
        return HALF_FIELD // (self.max_abs_encoded + 1)

    def check_no_overflow(self, max_cluster_size: int) -> None:
        """Refuse a config whose sum over ``max_cluster_size`` clipped values could wrap mod p."""
        if max_cluster_size < 1:
            raise ValueError(f"max_cluster_size must be >= 1, got {max_cluster_size}")
        worst_sum = max_cluster_size * (self.max_abs_encoded + 1)
        if worst_sum > HALF_FIELD:
            raise ValueError(
                f"fixed-point overflow: cluster size {max_cluster_size} x clip {self.clip} "
                f"x 2^frac_bits (frac_bits={self.frac_bits}) gives |sum| up to {worst_sum}, "
                f"above (p-1)/2={HALF_FIELD} for field size p={PRIME}; "
                f"lower clip or frac_bits, or keep clusters at most {self.max_cluster_size()}"
            )

    def error_bound(self, cluster_size: int) -> float:
        """Guaranteed bound on |decoded sum - float sum of clipped inputs|: K * 2^-f."""
        return cluster_size / self.scale


def _as_float_vector(update: npt.ArrayLike) -> npt.NDArray[np.floating]:
    values = np.asarray(update)
    if values.ndim != 1:
        raise ValueError(f"update must be a 1-D vector, got shape {values.shape}")
    if not np.issubdtype(values.dtype, np.floating):
        raise ValueError(f"update must be float32 or float64, got {values.dtype}")
    # One float64 reduction instead of an isfinite pass: any NaN or +-inf makes the sum
    # non-finite, and float32 inputs cannot overflow a float64 sum.
    if not np.isfinite(np.sum(values, dtype=np.float64)):
        raise ValueError("update contains NaN or infinite values")
    return values


def clip_update(update: npt.ArrayLike, config: FixedPointConfig) -> npt.NDArray[np.float64]:
    """Clip each coordinate to [-clip, clip] in float64; refuse NaN and infinities."""
    values = _as_float_vector(update).astype(np.float64)
    return np.clip(values, -config.clip, config.clip, out=values)


def encode(
    update: npt.ArrayLike,
    config: FixedPointConfig,
    rng: np.random.Generator | None = None,
) -> FieldVector:
    """Encode a float vector as field elements: clip, scale by 2^f, round, wrap negatives.

    ``rng`` is required when ``config.stochastic_rounding`` is on (a seeded Generator keeps the
    encoding reproducible). Negative codes q become p + q: adding p in float64 (exact below
    2^53) makes every code positive and below 2^32, and one wrap-around ``minimum`` reduces.
    """
    if config.stochastic_rounding and rng is None:
        raise ValueError("stochastic_rounding needs rng (a seeded numpy Generator)")
    scaled = clip_update(update, config)
    scaled *= config.scale
    if config.stochastic_rounding:
        assert rng is not None
        scaled += rng.random(scaled.shape)
        np.floor(scaled, out=scaled)
    else:
        np.rint(scaled, out=scaled)
    scaled += PRIME
    codes = scaled.astype(np.uint32)
    np.minimum(codes, codes - np.uint32(PRIME), out=codes)
    return codes


def decode(field_values: FieldVector, config: FixedPointConfig) -> npt.NDArray[np.float64]:
    """Map field elements back to reals: centre-lift to (-(p-1)/2, (p-1)/2], divide by 2^f.

    Field elements are below 2^31, so they read as non-negative int32 and the lift v - p of
    the upper half fits int32 as well; the division converts to float64 as it goes.
    """
    values = np.asarray(field_values, dtype=np.uint32).view(np.int32)
    signed = values - np.int32(PRIME)
    np.copyto(signed, values, where=values <= HALF_FIELD)
    return np.divide(signed, config.scale, dtype=np.float64)


def decode_sum(
    field_sum: FieldVector, config: FixedPointConfig, cluster_size: int
) -> npt.NDArray[np.float64]:
    """Decode a cluster sum after checking that a sum of ``cluster_size`` values cannot wrap."""
    config.check_no_overflow(cluster_size)
    return decode(field_sum, config)
