"""Client-level DP (DP-FedAvg): clipping, calibrated noise variance, accounting with sampling."""

from __future__ import annotations

import math

import pytest
import torch
from opacus.accountants import RDPAccountant

from phalanx.defense import ClientLevelDP, PrivacyAccountant, client_level_epsilon, clip_l2

DIM = 100_000


def test_clip_bounds_norm_and_keeps_direction() -> None:
    update = torch.arange(1.0, 11.0)
    clipped = clip_l2(update, 2.0)
    assert float(torch.linalg.vector_norm(clipped)) == pytest.approx(2.0, rel=1e-6)
    assert torch.allclose(clipped / clipped.norm(), update / update.norm())
    small = torch.full((4,), 0.1)
    assert torch.equal(clip_l2(small, 2.0), small)


@pytest.mark.parametrize(("clip", "z"), [(1.0, 1.0), (0.5, 0.3), (2.0, 2.5)])
def test_noise_has_calibrated_variance(clip: float, z: float) -> None:
    update = torch.linspace(-3, 3, DIM)
    mechanism = ClientLevelDP(clip_norm=clip, noise_multiplier=z)
    released = mechanism.privatize(update, torch.Generator().manual_seed(7))
    noise = (released - clip_l2(update, clip)).to(torch.float64)
    target = (z * clip) ** 2
    # Sample variance of d Gaussians: relative standard error sqrt(2 / (d - 1)).
    tolerance = 5 * math.sqrt(2 / (DIM - 1))
    assert abs(float(noise.var()) / target - 1) < tolerance
    assert abs(float(noise.mean())) < 5 * math.sqrt(target / DIM)


def test_same_generator_seed_same_release() -> None:
    mechanism = ClientLevelDP(1.0, 1.0)
    update = torch.ones(50)
    a = mechanism.privatize(update, torch.Generator().manual_seed(3))
    b = mechanism.privatize(update, torch.Generator().manual_seed(3))
    c = mechanism.privatize(update, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_rounds_are_accounted_with_participation_rate() -> None:
    mechanism = ClientLevelDP(clip_norm=1.0, noise_multiplier=1.2)
    ledger = PrivacyAccountant("rdp")
    for _ in range(30):
        mechanism.record_round(ledger, participating=10, total=100)
    direct = RDPAccountant()
    for _ in range(30):
        direct.step(noise_multiplier=1.2, sample_rate=0.1)
    assert ledger.epsilon(1e-5) == pytest.approx(direct.get_epsilon(1e-5), rel=1e-12)
    assert ledger.epsilon(1e-5) == pytest.approx(client_level_epsilon(1.2, 10, 100, 30, 1e-5))
    # Subsampling amplifies privacy: everyone taking part costs more.
    assert client_level_epsilon(1.2, 100, 100, 30, 1e-5) > ledger.epsilon(1e-5)


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda: ClientLevelDP(clip_norm=0.0, noise_multiplier=1.0), "clip"),
        (lambda: ClientLevelDP(clip_norm=1.0, noise_multiplier=-1.0), "z"),
        (lambda: client_level_epsilon(1.0, 11, 10, 5, 1e-5), "participating"),
        (lambda: client_level_epsilon(1.0, 5, 10, 5, 1.5), "delta"),
        (lambda: client_level_epsilon(1.0, 0, 10, 5, 1e-5), "participating"),
    ],
)
def test_bad_settings_refused(call, field) -> None:
    with pytest.raises(ValueError, match=field):
        call()
