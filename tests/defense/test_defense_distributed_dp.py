"""Distributed DP: per-member shares of sigma^2/k, the cluster sum carries sigma^2, and the
accounting (with silent Byzantine members) agrees with the Gaussian limit."""

from __future__ import annotations

import math

import numpy as np
import pytest
from opacus.accountants.analysis import rdp as opacus_rdp

from phalanx.defense import (
    calibrate_distributed_sigma,
    composed_distributed_epsilon,
    distributed_dp_guarantee,
    distributed_noise_share,
    epsilon_from_rdp,
    integer_l2_sensitivity,
    sample_discrete_gaussian,
)
from phalanx.defense.accounting import INTEGER_RDP_ORDERS

DIM = 60_000
REL_SE = math.sqrt(2 / (DIM - 1))  # relative standard error of a sample variance


@pytest.mark.parametrize("mechanism", ["dgauss", "skellam"])
@pytest.mark.parametrize("cluster_size", [1, 4, 8])
def test_member_shares_and_cluster_sum(mechanism: str, cluster_size: int) -> None:
    sigma = 40.0
    rng = np.random.default_rng(11)
    shares = [
        distributed_noise_share(DIM, cluster_size, sigma, mechanism, rng)
        for _ in range(cluster_size)
    ]
    assert all(share.dtype == np.int64 for share in shares)
    member_target = sigma**2 / cluster_size
    for share in shares[:2]:
        assert abs(share.var() / member_target - 1) < 5 * REL_SE
    total = np.sum(shares, axis=0)
    assert abs(total.var() / sigma**2 - 1) < 5 * REL_SE
    assert abs(total.mean()) < 5 * sigma / math.sqrt(DIM)


def test_shares_are_seeded() -> None:
    a = distributed_noise_share(100, 4, 10.0, "dgauss", np.random.default_rng(1))
    b = distributed_noise_share(100, 4, 10.0, "dgauss", np.random.default_rng(1))
    c = distributed_noise_share(100, 4, 10.0, "dgauss", np.random.default_rng(2))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_exact_sampler_matches_discrete_gaussian_pmf() -> None:
    sigma_sq = 2.0
    draws = sample_discrete_gaussian(3000, sigma_sq, np.random.default_rng(5), exact=True)
    support = np.arange(-15, 16)
    pmf = np.exp(-(support**2) / (2 * sigma_sq))
    pmf /= pmf.sum()
    variance = float((pmf * support**2).sum())
    assert abs(draws.var() / variance - 1) < 5 * math.sqrt(2 / 3000)
    for value in (0, 1, -1, 2):
        expected = pmf[value + 15]
        observed = float(np.mean(draws == value))
        assert abs(observed - expected) < 5 * math.sqrt(expected * (1 - expected) / 3000)


def test_discrete_gaussian_tends_to_gaussian_accounting() -> None:
    # With a large sigma the correction tau vanishes and eps is that of the Gaussian mechanism
    # with z = sigma / Delta_2 at the same Rényi orders.
    sigma, l2, dim, rounds = 5000.0, 500.0, 1000, 20
    guarantee = distributed_dp_guarantee("dgauss", sigma, l2, dim, 4, rounds, 1e-5)
    z = sigma / l2
    gaussian_rdp = opacus_rdp.compute_rdp(
        q=1.0, noise_multiplier=z, steps=rounds, orders=list(INTEGER_RDP_ORDERS)
    )
    expected, _ = epsilon_from_rdp(gaussian_rdp, INTEGER_RDP_ORDERS, 1e-5)
    assert guarantee.epsilon == pytest.approx(expected, rel=1e-9)
    skellam = distributed_dp_guarantee("skellam", sigma, l2, dim, 4, rounds, 1e-5)
    assert expected <= skellam.epsilon < expected * 1.01


@pytest.mark.parametrize("mechanism", ["dgauss", "skellam"])
def test_byzantine_members_who_add_no_noise(mechanism: str) -> None:
    sigma, l2, dim, k = 3000.0, 400.0, 500, 8
    honest = distributed_dp_guarantee(mechanism, sigma, l2, dim, k, 10, 1e-5)
    with_byzantine = distributed_dp_guarantee(mechanism, sigma, l2, dim, k, 10, 1e-5, byzantine=2)
    assert with_byzantine.honest_variance == pytest.approx(6 / 8 * sigma**2)
    assert with_byzantine.effective_noise_multiplier == pytest.approx(math.sqrt(6 / 8) * sigma / l2)
    assert with_byzantine.epsilon > honest.epsilon
    # The guarantee is that of a fully honest sum with the reduced variance.
    reduced = distributed_dp_guarantee(mechanism, sigma * math.sqrt(6 / 8), l2, dim, 1, 10, 1e-5)
    assert with_byzantine.epsilon == pytest.approx(reduced.epsilon, rel=1e-6)
    nobody = distributed_dp_guarantee(mechanism, sigma, l2, dim, k, 10, 1e-5, byzantine=k)
    assert nobody.epsilon == math.inf


def test_calibration_meets_target_tightly() -> None:
    l2 = integer_l2_sensitivity(clip_norm=1.0, scale=2**10, dim=1000)
    sigma = calibrate_distributed_sigma("skellam", 3.0, 1e-5, l2, 1000, 4, 20, byzantine=1)
    at = distributed_dp_guarantee("skellam", sigma, l2, 1000, 4, 20, 1e-5, byzantine=1).epsilon
    below = distributed_dp_guarantee(
        "skellam", sigma / 1.002, l2, 1000, 4, 20, 1e-5, byzantine=1
    ).epsilon
    assert at <= 3.0 < below


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda: distributed_noise_share(10, 4, -1.0, "dgauss", np.random.default_rng()), "sigma"),
        (lambda: distributed_noise_share(10, 0, 1.0, "dgauss", np.random.default_rng()), "cluster"),
        (lambda: distributed_noise_share(10, 2, 1.0, "laplace", np.random.default_rng()), "mech"),
        (lambda: distributed_dp_guarantee("dgauss", 100.0, 10.0, 5, 4, 3, 1.0), "delta"),
        (lambda: distributed_dp_guarantee("dgauss", 100.0, 10.0, 5, 4, 3, 1e-5, 5), "byzantine"),
        (lambda: distributed_dp_guarantee("dgauss", 0.5, 10.0, 5, 4, 3, 1e-5), "std >= 1/2"),
    ],
)
def test_bad_settings_refused(call, field) -> None:
    with pytest.raises(ValueError, match=field):
        call()


@pytest.mark.parametrize("mechanism", ["dgauss", "skellam"])
def test_composition_over_rounds_of_different_cluster_sizes(mechanism: str) -> None:
    """Equal sizes reproduce `distributed_dp_guarantee`; mixing sizes lands between the two."""
    l2 = integer_l2_sensitivity(1.0, 2.0**10, 1000)
    sigma = 2 * l2
    same = composed_distributed_epsilon(mechanism, sigma, l2, 1000, [4, 4, 4], 1e-5, byzantine=1)
    reference = distributed_dp_guarantee(mechanism, sigma, l2, 1000, 4, 3, 1e-5, byzantine=1)
    assert same == pytest.approx(reference.epsilon, rel=1e-9)
    small = composed_distributed_epsilon(mechanism, sigma, l2, 1000, [2, 2, 2], 1e-5, byzantine=1)
    mixed = composed_distributed_epsilon(mechanism, sigma, l2, 1000, [2, 4, 4], 1e-5, byzantine=1)
    assert same < mixed < small  # one silent member of 2 leaves half the noise, of 4 three quarters
    assert composed_distributed_epsilon(mechanism, sigma, l2, 1000, [2], 1e-5, 2) == math.inf
