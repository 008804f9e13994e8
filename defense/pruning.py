"""Gradient pruning: keep only the largest-magnitude entries of an update.

Zhu, Liu, Han (NeurIPS 2019, "Deep Leakage from Gradients", Sec. 6) found that zeroing the
smallest entries of a shared gradient defeats DLG once more than about 20 % are pruned. Here
``ratio`` is the pruned fraction: the ``floor(ratio * d)`` entries of smallest ``|u_i|`` are set to
zero and the rest kept (ties broken by position, so the result is deterministic).
"""

from __future__ import annotations

import math

import torch

from phalanx.defense._validation import require_fraction_below_one


def prune_top_k(update: torch.Tensor, ratio: float) -> torch.Tensor:
    """Zero the `ratio` fraction (0 <= ratio < 1) of entries with the smallest magnitude."""
    require_fraction_below_one("ratio", ratio)
    flat = update.reshape(-1)
    keep = flat.numel() - math.floor(ratio * flat.numel())
    if keep >= flat.numel():
        return update.clone()
    order = torch.argsort(flat.abs(), descending=True, stable=True)
    mask = torch.zeros(flat.numel(), dtype=torch.bool)
    mask[order[:keep]] = True
    return torch.where(mask, flat, torch.zeros_like(flat)).reshape(update.shape)
