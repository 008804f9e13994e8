"""Metrics checked against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from phalanx.adversary.inversion.attacks import project_l1_ball
from phalanx.adversary.inversion.metrics import (
    label_accuracy,
    match_reconstructions,
    mse,
    psnr,
    save_grid,
    ssim,
)


def test_mse_and_psnr_hand_values() -> None:
    original = np.zeros((1, 2, 2))
    recon = np.array([[[0.1, 0.1], [0.1, 0.1]]])
    assert mse(original, recon) == pytest.approx(0.01)
    assert psnr(original, recon) == pytest.approx(20.0)  # 10 log10(1 / 0.01)
    recon[0, 0, 0] = 0.5  # errors 0.25, 0.01, 0.01, 0.01 -> MSE 0.07
    assert mse(original, recon) == pytest.approx(0.07)
    assert psnr(original, recon) == pytest.approx(10 * math.log10(1 / 0.07))
    assert psnr(original, original) == 200.0


def test_ssim_of_a_constant_shift_matches_wang_formula() -> None:
    # 7x7 image, 7x7 window: one window; sigma = 0 so SSIM = (2 mx my + C1) / (mx^2 + my^2 + C1)
    original = np.full((1, 7, 7), 0.5)
    shifted = original + 0.1
    c1 = (0.01 * 1.0) ** 2
    expected = (2 * 0.5 * 0.6 + c1) / (0.5**2 + 0.6**2 + c1)
    assert ssim(original, shifted) == pytest.approx(expected, rel=1e-9)
    assert ssim(original, original) == pytest.approx(1.0)


def test_ssim_of_a_negated_pattern_matches_wang_formula() -> None:
    # y = 1 - x around mean 0.5: means equal, sigma_xy = -sigma^2
    # SSIM = (2 m^2 + C1)/(2 m^2 + C1) * (-2 s^2 + C2) / (2 s^2 + C2)
    rng = np.random.default_rng(3)
    x = rng.uniform(0.2, 0.8, size=(7, 7))
    x = x - x.mean() + 0.5
    y = 1.0 - x
    var = x.var(ddof=1)  # scikit-image's default sample covariance
    c2 = (0.03 * 1.0) ** 2
    assert ssim(x, y) == pytest.approx((-2 * var + c2) / (2 * var + c2), rel=1e-9)


def test_label_accuracy_compares_multisets() -> None:
    assert label_accuracy(np.array([1, 2, 2, 3]), np.array([2, 1, 3, 2])) == 1.0
    assert label_accuracy(np.array([1, 2, 2, 3]), np.array([2, 2, 2, 2])) == 0.5
    assert label_accuracy(np.array([7]), np.array([4])) == 0.0
    with pytest.raises(ValueError, match="3 true labels but 2"):
        label_accuracy(np.array([1, 2, 3]), np.array([1, 2]))


def test_matching_undoes_a_permutation() -> None:
    rng = np.random.default_rng(0)
    originals = rng.uniform(size=(5, 1, 4, 4))
    permutation = np.array([3, 0, 4, 1, 2])
    noisy = originals[permutation] + 0.01 * rng.normal(size=originals.shape)
    order = match_reconstructions(originals, noisy)
    # reconstructions[order[i]] must be the noisy copy of originals[i]
    assert [int(permutation[o]) for o in order] == [0, 1, 2, 3, 4]


def test_shape_mismatch_is_rejected() -> None:
    with pytest.raises(ValueError, match="original has shape"):
        mse(np.zeros((1, 2, 2)), np.zeros((1, 3, 3)))


def test_l1_projection_hand_value() -> None:
    # Project (3, 1) onto the l1 ball of radius 2: theta = (3 + 1 - 2) / 2 = 1 -> (2, 0)
    projected = project_l1_ball(torch.tensor([[3.0, -1.0], [0.5, 0.5]]), torch.tensor([2.0, 2.0]))
    assert torch.allclose(projected, torch.tensor([[2.0, 0.0], [0.5, 0.5]]))


def test_grid_is_written(tmp_path) -> None:
    images = np.random.default_rng(0).uniform(size=(3, 1, 8, 8))
    path = save_grid(images, images, tmp_path / "grid.png", "test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_median_interval_order_statistics() -> None:
    from phalanx.bench.bench_inversion import median_interval

    # n = 4: only the range qualifies, coverage 1 - 2/16
    assert median_interval([3.0, 1.0, 4.0, 2.0]) == (2.5, 1.0, 4.0, 0.875)
    # n = 10: k = 2 covers 1 - 2 * 11/1024 = 97.9%, k = 3 only 89.1%
    median, low, high, coverage = median_interval([float(v) for v in range(10, 0, -1)])
    assert (median, low, high) == (5.5, 2.0, 9.0)
    assert coverage == pytest.approx(1 - 22 / 1024)
    with pytest.raises(ValueError, match="at least one value"):
        median_interval([])
