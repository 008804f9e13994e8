"""Forward noising follows its schedule; the hybrid mode meets its (eps, delta); the adaptive
denoiser behaves as its formula says."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from phalanx.defense import (
    ForwardNoising,
    NoiseLevelSchedule,
    alpha_bar_schedule,
    calibrate_forward_noising,
    denoise_forward,
    noise_multiplier_at,
)


@pytest.mark.parametrize("diffusion", ["linear", "cosine"])
def test_alpha_bar_is_monotone_and_starts_at_one(diffusion: str) -> None:
    abar = alpha_bar_schedule(diffusion, 1000)
    assert abar.shape == (1001,) and abar[0] == 1.0
    assert np.all(np.diff(abar) < 0) and abar[-1] > 0


def test_alpha_bar_matches_closed_forms() -> None:
    betas = np.linspace(1e-4, 0.02, 1000)
    linear = alpha_bar_schedule("linear", 1000)
    for t in (1, 10, 400, 1000):
        assert linear[t] == pytest.approx(np.prod(1 - betas[:t]), rel=1e-12)
    cosine = alpha_bar_schedule("cosine", 1000)

    def f(t: float) -> float:
        return math.cos((t / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2

    for t in (1, 250, 500, 900):  # below the beta cap of 0.999
        assert cosine[t] == pytest.approx(f(t) / f(0), rel=1e-9)


def test_release_is_the_forward_diffusion_step() -> None:
    update = torch.linspace(-1, 1, 5000, dtype=torch.float64)
    noising = ForwardNoising(NoiseLevelSchedule("constant", t_max=300), diffusion="linear")
    released = noising(update, generator=torch.Generator().manual_seed(9))
    eps = torch.randn(5000, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    abar = alpha_bar_schedule("linear", 1000)[300]
    rms = float(torch.sqrt(torch.mean(update**2)))
    expected = math.sqrt(abar) * update + math.sqrt(1 - abar) * rms * eps
    assert torch.allclose(released, expected, rtol=0, atol=1e-12)


def test_rms_scale_preserves_the_energy() -> None:
    update = torch.randn(200_000, generator=torch.Generator().manual_seed(1)) * 0.01 + 0.003
    noising = ForwardNoising(NoiseLevelSchedule("constant", t_max=600))
    released = noising(update, generator=torch.Generator().manual_seed(2))
    ratio = float(released.pow(2).sum() / update.pow(2).sum())
    assert abs(ratio - 1) < 0.02


def test_level_schedules() -> None:
    rounds = 11
    decreasing = NoiseLevelSchedule("decreasing", t_max=500, t_min=100, rounds=rounds)
    increasing = NoiseLevelSchedule("increasing", t_max=500, t_min=100, rounds=rounds)
    constant = NoiseLevelSchedule("constant", t_max=300, t_min=300, rounds=rounds)
    down = [decreasing.level(r) for r in range(rounds + 3)]
    up = [increasing.level(r) for r in range(rounds + 3)]
    assert down[0] == 500 and down[rounds - 1] == 100 and down[-1] == 100
    assert all(a >= b for a, b in itertools.pairwise(down))
    assert up[0] == 100 and up[rounds - 1] == 500
    assert up[:rounds] == down[:rounds][::-1]
    assert {constant.level(r) for r in range(rounds)} == {300}
    # Noise grows with the level: abar decreasing, so z increasing along `up`.
    noising = ForwardNoising(increasing)
    zs = [noising.noise_multiplier(r) for r in range(rounds)]
    assert all(a < b for a, b in itertools.pairwise(zs))


def test_hybrid_noise_is_gaussian_mechanism_with_z() -> None:
    noising = ForwardNoising(NoiseLevelSchedule("constant", t_max=700), scale="clip", clip_norm=0.5)
    update = torch.zeros(100_000, dtype=torch.float64)
    released = noising(update, generator=torch.Generator().manual_seed(4))
    abar = noising.alpha_bar(0)
    z = noise_multiplier_at(abar)
    rescaled_std = float((released / math.sqrt(abar)).std())
    assert abs(rescaled_std / (z * 0.5) - 1) < 5 * math.sqrt(1 / (2 * 100_000))


@pytest.mark.parametrize("levels", ["constant", "decreasing", "increasing"])
def test_calibration_meets_target_with_least_noise(levels: str) -> None:
    noising = calibrate_forward_noising(4.0, 1e-5, rounds=20, clip_norm=1.0, levels=levels)
    assert noising.epsilon(20, 1e-5) <= 4.0
    shifted = NoiseLevelSchedule(
        levels,
        t_max=noising.levels.t_max - 1,
        t_min=max(noising.levels.t_min - 1, 0),
        rounds=20,
    )
    one_less = ForwardNoising(shifted, scale="clip", clip_norm=1.0)
    assert one_less.epsilon(20, 1e-5) > 4.0


def test_denoiser_rescales_and_shrinks() -> None:
    generator = torch.Generator().manual_seed(3)
    update = torch.randn(50_000, generator=generator, dtype=torch.float64)
    noising = ForwardNoising(NoiseLevelSchedule("constant", t_max=500))
    released = noising(update, generator=generator)
    abar = noising.alpha_bar(0)
    rescaled = denoise_forward(released, abar, wiener=False)
    wiener = denoise_forward(released, abar)

    def mse(estimate: torch.Tensor) -> float:
        return float(((estimate - update) ** 2).mean())

    assert torch.allclose(rescaled, released / math.sqrt(abar))
    assert float((rescaled * update).sum() / (update * update).sum()) == pytest.approx(1, abs=0.02)
    # Posterior-mean MSE under the prior is abar-weighted: (1 - abar) v for v = s^2 = 1.
    assert mse(wiener) == pytest.approx(1 - abar, rel=0.05)
    assert mse(wiener) < mse(released) < mse(rescaled)


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda: ForwardNoising(NoiseLevelSchedule(t_max=1200)), "steps"),
        (lambda: ForwardNoising(NoiseLevelSchedule(t_max=-1)), "t must"),
        (lambda: ForwardNoising(NoiseLevelSchedule(), diffusion="sigmoid"), "schedule"),
        (lambda: ForwardNoising(NoiseLevelSchedule(), scale="clip"), "clip"),
        (lambda: ForwardNoising(NoiseLevelSchedule(), scale=-2.0), "scale"),
        (lambda: NoiseLevelSchedule("zigzag"), "levels"),
        (lambda: NoiseLevelSchedule("decreasing", t_max=10, t_min=20, rounds=3), "t_min"),
        (lambda: calibrate_forward_noising(0.01, 1e-5, 500, 1.0, diffusion="linear"), "reach"),
        (lambda: calibrate_forward_noising(1.0, 2.0, 5, 1.0), "delta"),
        (lambda: ForwardNoising(NoiseLevelSchedule()).epsilon(3, 1e-5), "hybrid"),
    ],
)
def test_bad_settings_refused(call, field) -> None:
    with pytest.raises(ValueError, match=field):
        call()
