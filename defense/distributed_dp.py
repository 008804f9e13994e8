"""Distributed differential privacy in the integer domain of secure aggregation.

Each of the ``k`` members of a cluster adds integer noise of variance ``sigma^2 / k`` to its
fixed-point encoded update before secret-sharing it; the reconstructed cluster sum then carries
noise of variance ``sigma^2`` and no single member ever holds the whole noise (Kairouz, Liu,
Steinke, ICML 2021, "The Distributed Discrete Gaussian Mechanism"; Agarwal, Kairouz, Liu,
NeurIPS 2021, "The Skellam Mechanism").

Integration with ``mpc`` (the owner's side)::

    encoded = fixed_point_encode(update)          # int64, scale gamma
    noise = distributed_noise_share(encoded.size, cluster_size, target_sigma_int, "skellam", rng)
    shares = share((encoded + noise) % p)         # added in the field mod p, before sharing

``target_sigma_int`` is the std of the noise in the *sum*, in integer (fixed-point) units, i.e.
``sigma_real * gamma``. The field must leave room for the noise: ``p / 2`` above
``k * max|encoded| + ~ 8 * target_sigma_int`` avoids wrap-around with overwhelming probability.

Mechanisms:

- ``"dgauss"``: the discrete Gaussian ``N_Z(0, s^2)``, ``P(x) ∝ exp(-x^2 / (2 s^2))`` on the
  integers, sampled by the rejection sampler of Canonne, Kamath, Steinke (NeurIPS 2020, Alg. 3):
  discrete Laplace proposals with scale ``t = floor(s) + 1`` accepted with probability
  ``exp(-(|Y| - s^2/t)^2 / (2 s^2))``. A sum of discrete Gaussians is not exactly a discrete
  Gaussian; the accounting below includes the correction of Kairouz et al.
- ``"skellam"``: ``Sk = Pois(v/2) - Pois(v/2)`` with variance ``v``; sums of independent Skellams
  are exactly Skellam, so k shares of ``v = sigma^2/k`` sum to variance ``sigma^2``.

Byzantine members that add no noise: with ``b`` of ``k`` silent, the sum carries only
``(k - b) / k * sigma^2``; `distributed_dp_guarantee` reports eps for that honest noise and the
effective noise multiplier ``sqrt((k - b) / k) * sigma / Delta_2``. Privacy amplification by
subsampling is *not* claimed here (every round is counted as a full release), which is
conservative.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from phalanx.defense._validation import (
    require_delta,
    require_int_at_least,
    require_non_negative,
    require_positive,
)
from phalanx.defense.accounting import INTEGER_RDP_ORDERS, epsilon_from_rdp

MECHANISMS = ("dgauss", "skellam")


# ---------------------------------------------------------------------------------------------
# Samplers


def _uniform_below(bound: int, generator: np.random.Generator) -> int:
    """Exact uniform integer in [0, bound) for any positive Python int (rejection on bytes)."""
    if bound < 2**62:
        return int(generator.integers(0, bound))
    nbytes = (bound.bit_length() + 7) // 8
    limit = (256**nbytes // bound) * bound
    while True:
        candidate = int.from_bytes(generator.bytes(nbytes), "little")
        if candidate < limit:
            return candidate % bound


def _bernoulli_fraction(p: Fraction, generator: np.random.Generator) -> bool:
    return _uniform_below(p.denominator, generator) < p.numerator


def _bernoulli_exp_neg(gamma: Fraction, generator: np.random.Generator) -> bool:
    """Exact Bernoulli(exp(-gamma)) for rational gamma >= 0 (Canonne et al. 2020, Alg. 1)."""
    while gamma > 1:
        if not _bernoulli_exp_neg(Fraction(1), generator):
            return False
        gamma -= 1
    k = 1
    while _bernoulli_fraction(gamma / k, generator):
        k += 1
    return k % 2 == 1


def _discrete_gaussian_exact_one(sigma_sq: Fraction, t: int, generator: np.random.Generator) -> int:
    while True:
        u = _uniform_below(t, generator)
        if not _bernoulli_exp_neg(Fraction(u, t), generator):
            continue
        v = 0
        while _bernoulli_exp_neg(Fraction(1), generator):
            v += 1
        magnitude = u + t * v
        negative = _uniform_below(2, generator) == 1
        if negative and magnitude == 0:
            continue
        y = -magnitude if negative else magnitude
        gamma = (abs(y) - sigma_sq / t) ** 2 / (2 * sigma_sq)
        if _bernoulli_exp_neg(gamma, generator):
            return y


def sample_discrete_gaussian(
    size: int, sigma_sq: float, generator: np.random.Generator, exact: bool = False
) -> np.ndarray:
    """`size` draws of ``N_Z(0, sigma_sq)`` as int64 (Canonne, Kamath, Steinke 2020, Alg. 3).

    ``exact=True`` runs the paper's sampler in exact rational arithmetic (only integer
    randomness, no floating point; tens of microseconds per draw). The default runs the same
    rejection scheme vectorised in float64: discrete Laplace proposals as a difference of two
    geometric variables and a floating-point acceptance test, fast enough for model-sized vectors
    but subject to the floating-point caveats the exact sampler avoids.
    """
    require_int_at_least("size", size, 0)
    require_non_negative("sigma_sq", sigma_sq)
    if sigma_sq == 0 or size == 0:
        return np.zeros(size, dtype=np.int64)
    t = math.floor(math.sqrt(sigma_sq)) + 1
    if exact:
        exact_sigma_sq = Fraction(sigma_sq)
        return np.array(
            [_discrete_gaussian_exact_one(exact_sigma_sq, t, generator) for _ in range(size)],
            dtype=np.int64,
        )
    out = np.empty(size, dtype=np.int64)
    pending = np.arange(size)
    geometric_p = -math.expm1(-1.0 / t)  # P(stop) for a geometric with ratio exp(-1/t)
    while pending.size:
        n = pending.size
        proposal = generator.geometric(geometric_p, n) - generator.geometric(geometric_p, n)
        accept_prob = np.exp(-((np.abs(proposal) - sigma_sq / t) ** 2) / (2 * sigma_sq))
        accepted = generator.random(n) < accept_prob
        out[pending[accepted]] = proposal[accepted]
        pending = pending[~accepted]
    return out


def sample_skellam(size: int, variance: float, generator: np.random.Generator) -> np.ndarray:
    """`size` draws of the symmetric Skellam ``Pois(v/2) - Pois(v/2)`` (variance v) as int64."""
    require_int_at_least("size", size, 0)
    require_non_negative("variance", variance)
    if variance == 0:
        return np.zeros(size, dtype=np.int64)
    half = variance / 2
    return generator.poisson(half, size).astype(np.int64) - generator.poisson(half, size).astype(
        np.int64
    )


def distributed_noise_share(
    dim: int,
    cluster_size: int,
    target_sigma_int: float,
    mechanism: str,
    generator: np.random.Generator,
) -> np.ndarray:
    """One member's integer noise: variance ``target_sigma_int^2 / cluster_size`` per coordinate.

    Add it to the member's fixed-point integers (mod p) before sharing; the sum over the
    ``cluster_size`` members then carries variance ``target_sigma_int^2``.
    """
    require_int_at_least("dim", dim, 0)
    require_int_at_least("cluster_size", cluster_size, 1)
    require_non_negative("target_sigma_int", target_sigma_int)
    share_variance = target_sigma_int**2 / cluster_size
    if mechanism == "dgauss":
        return sample_discrete_gaussian(dim, share_variance, generator)
    if mechanism == "skellam":
        return sample_skellam(dim, share_variance, generator)
    raise ValueError(f"mechanism must be one of {', '.join(MECHANISMS)}, got {mechanism!r}")


# ---------------------------------------------------------------------------------------------
# Accounting


def integer_l2_sensitivity(clip_norm: float, scale: float, dim: int) -> float:
    """L2 bound of a clipped update after fixed-point encoding ``round(scale * u)``.

    ``||round(g u)||_2 <= g C + sqrt(d) / 2`` for nearest rounding (triangle inequality; each
    coordinate moves by at most 1/2).
    """
    require_positive("clip", clip_norm)
    require_positive("scale", scale)
    require_int_at_least("dim", dim, 1)
    return clip_norm * scale + math.sqrt(dim) / 2


def _ddg_rdp(order: int, l2_scale: float, l1_scale: float, tau: float, dim: int) -> float:
    """RDP of the distributed discrete Gaussian (Kairouz, Liu, Steinke 2021, Prop. 14)."""
    return min(
        order / 2 * l2_scale**2 + tau * dim,
        order / 2 * (l2_scale**2 + 2 * l1_scale * tau + tau**2 * dim),
        order / 2 * (l2_scale + math.sqrt(dim) * tau) ** 2,
    )


def _skellam_rdp(order: int, l2: float, l1: float, variance: float) -> float:
    """RDP of the Skellam mechanism with variance ``mu`` per coordinate (Agarwal et al. 2021):

    ``alpha D2^2 / (2 mu) + min(((2 alpha - 1) D2^2 + 6 D1) / (4 mu^2), 3 D1 / (2 mu))``.
    """
    return order * l2**2 / (2 * variance) + min(
        ((2 * order - 1) * l2**2 + 6 * l1) / (4 * variance**2), 3 * l1 / (2 * variance)
    )


@dataclass(frozen=True)
class DistributedDPGuarantee:
    """What the cluster sum guarantees after `rounds` releases.

    ``honest_variance`` is the noise variance that reaches the sum when the ``byzantine``
    members add none; ``effective_noise_multiplier`` = ``sqrt(honest_variance) / l2``.
    """

    mechanism: str
    epsilon: float
    delta: float
    rounds: int
    cluster_size: int
    byzantine: int
    target_variance: float
    honest_variance: float
    effective_noise_multiplier: float
    best_order: float


def _default_l1(l2: float, dim: int, l1: float | None) -> float:
    if l1 is None:
        return min(math.sqrt(dim) * l2, l2**2)
    return require_positive("l1_sensitivity_int", l1)


def distributed_dp_round_rdp(
    mechanism: str,
    target_sigma_int: float,
    l2_sensitivity_int: float,
    dim: int,
    cluster_size: int,
    byzantine: int = 0,
    l1_sensitivity_int: float | None = None,
) -> list[float]:
    """RDP curve (at `INTEGER_RDP_ORDERS`) of one cluster sum, each of the ``cluster_size``
    members adding ``sigma^2 / k``, ``byzantine`` of them adding none.

    RDP composes by addition (Mironov 2017, Prop. 1), so rounds with different cluster sizes are
    accounted by summing their curves. Returns ``inf`` everywhere when no noise reaches the sum.
    """
    if mechanism not in MECHANISMS:
        raise ValueError(f"mechanism must be one of {', '.join(MECHANISMS)}, got {mechanism!r}")
    require_non_negative("target_sigma_int", target_sigma_int)
    require_positive("l2_sensitivity_int", l2_sensitivity_int)
    require_int_at_least("dim", dim, 1)
    require_int_at_least("cluster_size", cluster_size, 1)
    require_int_at_least("byzantine", byzantine, 0)
    if byzantine > cluster_size:
        raise ValueError(f"byzantine must be <= cluster_size ({cluster_size}), got {byzantine}")
    l2 = l2_sensitivity_int
    l1 = _default_l1(l2, dim, l1_sensitivity_int)
    honest = cluster_size - byzantine
    member_variance = target_sigma_int**2 / cluster_size
    honest_variance = honest * member_variance
    if honest_variance == 0:
        return [math.inf] * len(INTEGER_RDP_ORDERS)
    if mechanism == "dgauss":
        if member_variance < 0.25:
            raise ValueError(
                "dgauss needs each member's std >= 1/2 (Kairouz et al. 2021, Thm 1), got "
                f"{math.sqrt(member_variance):.3g}: raise target_sigma_int or the encoding scale"
            )
        tau = 10 * sum(
            math.exp(-2 * math.pi**2 * member_variance * j / (j + 1)) for j in range(1, honest)
        )
        central_std = math.sqrt(honest_variance)
        return [
            _ddg_rdp(order, l2 / central_std, l1 / central_std, tau, dim)
            for order in INTEGER_RDP_ORDERS
        ]
    return [_skellam_rdp(order, l2, l1, honest_variance) for order in INTEGER_RDP_ORDERS]


def distributed_dp_guarantee(
    mechanism: str,
    target_sigma_int: float,
    l2_sensitivity_int: float,
    dim: int,
    cluster_size: int,
    rounds: int,
    delta: float,
    byzantine: int = 0,
    l1_sensitivity_int: float | None = None,
) -> DistributedDPGuarantee:
    """(eps, delta) of `rounds` cluster sums, each member adding ``sigma^2 / k`` noise.

    Sensitivities are in integer units (see `integer_l2_sensitivity`); the L1 bound defaults to
    ``min(sqrt(d) D2, D2^2)`` (Cauchy-Schwarz, and ``|x| <= x^2`` on the integers).
    ``byzantine`` members are assumed to add no noise at all.
    """
    require_int_at_least("rounds", rounds, 1)
    require_delta("delta", delta)
    one_round = distributed_dp_round_rdp(
        mechanism,
        target_sigma_int,
        l2_sensitivity_int,
        dim,
        cluster_size,
        byzantine,
        l1_sensitivity_int,
    )
    honest_variance = (cluster_size - byzantine) * target_sigma_int**2 / cluster_size
    if honest_variance == 0:
        epsilon, best_order = math.inf, math.nan
    else:
        epsilon, best_order = epsilon_from_rdp(
            [rounds * value for value in one_round], INTEGER_RDP_ORDERS, delta
        )
    return DistributedDPGuarantee(
        mechanism=mechanism,
        epsilon=epsilon,
        delta=delta,
        rounds=rounds,
        cluster_size=cluster_size,
        byzantine=byzantine,
        target_variance=target_sigma_int**2,
        honest_variance=honest_variance,
        effective_noise_multiplier=math.sqrt(honest_variance) / l2_sensitivity_int,
        best_order=best_order,
    )


def composed_distributed_epsilon(
    mechanism: str,
    target_sigma_int: float,
    l2_sensitivity_int: float,
    dim: int,
    cluster_sizes: Sequence[int],
    delta: float,
    byzantine: int = 0,
) -> float:
    """eps at `delta` of one release per entry of `cluster_sizes` (that round's k), with
    ``min(byzantine, k)`` silent members in each; ``inf`` when some round carries no noise."""
    require_delta("delta", delta)
    if not cluster_sizes:
        raise ValueError("cluster_sizes must list at least one round")
    total = np.zeros(len(INTEGER_RDP_ORDERS))
    for size in cluster_sizes:
        total += distributed_dp_round_rdp(
            mechanism, target_sigma_int, l2_sensitivity_int, dim, size, min(byzantine, size)
        )
    if not np.all(np.isfinite(total)):
        return math.inf
    return epsilon_from_rdp(total, INTEGER_RDP_ORDERS, delta)[0]


def calibrate_distributed_sigma(
    mechanism: str,
    target_epsilon: float,
    delta: float,
    l2_sensitivity_int: float,
    dim: int,
    cluster_size: int,
    rounds: int,
    byzantine: int = 0,
) -> float:
    """Smallest ``target_sigma_int`` (to 0.1 %) whose guarantee meets `target_epsilon`.

    Tolerating ``byzantine`` silent members costs a factor ``sqrt(k / (k - b))`` in sigma.
    """
    require_positive("epsilon", target_epsilon)
    if byzantine >= cluster_size:
        raise ValueError(f"byzantine must be < cluster_size ({cluster_size}), got {byzantine}")

    def eps_at(sigma: float) -> float:
        return distributed_dp_guarantee(
            mechanism, sigma, l2_sensitivity_int, dim, cluster_size, rounds, delta, byzantine
        ).epsilon

    low = math.sqrt(cluster_size) / 2  # each member's std >= 1/2
    high = max(2 * low, l2_sensitivity_int)
    while eps_at(high) > target_epsilon:
        high *= 2
        if high > 1e15:
            raise ValueError(f"epsilon={target_epsilon} is out of reach for these settings")
    if eps_at(low) <= target_epsilon:
        return low
    while high / low > 1.001:
        middle = math.sqrt(low * high)
        if eps_at(middle) <= target_epsilon:
            high = middle
        else:
            low = middle
    return high
