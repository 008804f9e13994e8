"""Reconstruction quality: MSE, PSNR, SSIM, label accuracy, optimal matching, a PNG grid.

- ``MSE = mean (x - x_hat)^2``; ``PSNR = 10 log10(R^2 / MSE)`` with data range ``R = 1``.
- SSIM (Wang et al. 2004, Eq. 13) with ``C1 = (0.01 R)^2``, ``C2 = (0.03 R)^2`` over a 7x7
  uniform window (smaller on tiny images), averaged over the image: scikit-image's
  ``structural_similarity``.
- For a batch, reconstructions are matched to originals by the assignment minimising the summed
  MSE (Kuhn 1955, ``scipy.optimize.linear_sum_assignment``); labels are compared as multisets.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment

MAX_PSNR_DB = 200.0


def _check_pair(original: np.ndarray, reconstruction: np.ndarray) -> None:
    if original.shape != reconstruction.shape:
        raise ValueError(
            f"original has shape {original.shape} but reconstruction has {reconstruction.shape}"
        )


def mse(original: np.ndarray, reconstruction: np.ndarray) -> float:
    """Mean squared error of two equally shaped images."""
    _check_pair(original, reconstruction)
    diff = np.asarray(original, np.float64) - np.asarray(reconstruction, np.float64)
    return float(np.mean(diff**2))


def psnr(original: np.ndarray, reconstruction: np.ndarray, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB, capped at 200 dB for identical images."""
    error = mse(original, reconstruction)
    if error == 0.0:
        return MAX_PSNR_DB
    return min(MAX_PSNR_DB, 10.0 * math.log10(data_range**2 / error))


def ssim(original: np.ndarray, reconstruction: np.ndarray, data_range: float = 1.0) -> float:
    """Mean SSIM of (C, H, W) or (H, W) images (Wang et al. 2004), channels averaged."""
    from skimage.metrics import structural_similarity

    _check_pair(original, reconstruction)
    a = np.asarray(original, np.float64)
    b = np.asarray(reconstruction, np.float64)
    if a.ndim == 2:
        a, b = a[None], b[None]
    if a.ndim != 3:
        raise ValueError(f"ssim takes (C, H, W) or (H, W) images, got shape {original.shape}")
    side = min(a.shape[1:])
    if side < 3:
        raise ValueError(f"ssim needs images of at least 3x3 pixels, got {a.shape[1:]}")
    window = min(7, side if side % 2 else side - 1)
    scores = [
        structural_similarity(a[c], b[c], data_range=data_range, win_size=window)
        for c in range(a.shape[0])
    ]
    return float(np.mean(scores))


def label_accuracy(true_labels: np.ndarray, recovered_labels: np.ndarray) -> float:
    """Fraction of the batch whose labels were recovered, compared as multisets."""
    true_list = [int(v) for v in np.asarray(true_labels).reshape(-1)]
    found_list = [int(v) for v in np.asarray(recovered_labels).reshape(-1)]
    if len(true_list) != len(found_list):
        raise ValueError(f"{len(true_list)} true labels but {len(found_list)} recovered labels")
    if not true_list:
        raise ValueError("label_accuracy needs at least one label")
    overlap = Counter(true_list) & Counter(found_list)
    return sum(overlap.values()) / len(true_list)


def match_reconstructions(originals: np.ndarray, reconstructions: np.ndarray) -> np.ndarray:
    """``order`` such that ``reconstructions[order[i]]`` is matched to ``originals[i]``,
    minimising the total MSE (optimal assignment)."""
    _check_pair(originals, reconstructions)
    a = np.asarray(originals, np.float64).reshape(len(originals), -1)
    b = np.asarray(reconstructions, np.float64).reshape(len(reconstructions), -1)
    cost = ((a[:, None, :] - b[None, :, :]) ** 2).mean(axis=2)
    rows, cols = linear_sum_assignment(cost)
    order = np.empty(len(rows), dtype=np.int64)
    order[rows] = cols
    return order


def save_grid(
    originals: np.ndarray, reconstructions: np.ndarray, path: str | Path, title: str
) -> Path:
    """Write a PNG with originals on the top row and matched reconstructions below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    _check_pair(originals, reconstructions)
    count = len(originals)
    figure, axes = plt.subplots(2, count, figsize=(1.2 * count + 0.4, 2.8), squeeze=False)
    for column in range(count):
        for row, images in enumerate((originals, reconstructions)):
            image = np.asarray(images[column], np.float64)
            axis = axes[row][column]
            if image.shape[0] == 1:
                axis.imshow(image[0], cmap="gray", vmin=0, vmax=1)
            else:
                axis.imshow(np.clip(image.transpose(1, 2, 0), 0, 1))
            axis.set_xticks([])
            axis.set_yticks([])
        axes[1][column].set_xlabel(f"{psnr(originals[column], reconstructions[column]):.1f} dB")
    axes[0][0].set_ylabel("original")
    axes[1][0].set_ylabel("recon.")
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(target, dpi=100)
    plt.close(figure)
    return target
