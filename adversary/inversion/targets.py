"""What the aggregator observes: a gradient, a FedAvg delta, a cluster sum, or a defended one.

- ``update``: the FedSGD gradient of the mean cross-entropy on the victim's batch;
- ``fedavg:S``: the delta ``w_S - w_0`` after ``S`` plain-SGD steps on the victim's batch
  (`learning.train.train_local`, momentum 0, the batch as one mini-batch);
- ``cluster-sum:K``: the victim's gradient plus those of ``K - 1`` other clients, added by
  ``mpc.secure_sum`` (fixed-point secret sharing) when that module is available, else summed in
  the clear (`ObservedClusterSum.used_secure_sum` says which).

Built-in defenses applied to the observed update: ``gaussian:SIGMA`` (add N(0, SIGMA^2) noise,
the DP-style defense of Zhu et al. 2019, Sec. 5), ``prune:RATIO`` (zero the RATIO smallest
magnitudes of each tensor, gradient sparsification of Zhu et al. 2019, Sec. 5) and
``forward:T`` (the node's forward noising, `defense.forward_noise.ForwardNoising`, at level T
of the cosine schedule over 1,000 steps with ``s`` = the update's RMS, applied to the whole
flattened update as a node releases it; the attacker knows the schedule and inverts the
unbiased estimate ``y / sqrt(abar_T)``, `denoise_forward` without Wiener shrinkage).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from phalanx.adversary.inversion.knowledge import Defense, TargetKind
from phalanx.learning.train import TrainConfig, train_local

DEFENSES = ("none", "gaussian:SIGMA", "prune:RATIO", "forward:T")


@dataclass(frozen=True)
class TargetSpec:
    """A parsed ``--target``: its kind, local steps (fedavg) and cluster size (cluster-sum)."""

    kind: TargetKind
    local_steps: int = 1
    cluster_size: int = 1


def parse_target(text: str) -> TargetSpec:
    """Parse ``update``, ``fedavg:STEPS`` or ``cluster-sum:K``."""
    name, _, argument = text.partition(":")
    if name == "update" and not argument:
        return TargetSpec("update")
    if name in ("fedavg", "cluster-sum"):
        try:
            count = int(argument)
        except ValueError:
            raise ValueError(f"target {text!r} needs an integer after ':'") from None
        if count < 1:
            raise ValueError(f"target {text!r}: the count must be >= 1, got {count}")
        if name == "fedavg":
            return TargetSpec("fedavg", local_steps=count)
        return TargetSpec("cluster-sum", cluster_size=count)
    raise ValueError(f"unknown target {text!r}; known: update, fedavg:STEPS, cluster-sum:K")


def gradient_update(model: nn.Module, images: np.ndarray, labels: np.ndarray) -> list[torch.Tensor]:
    """FedSGD update: the gradient of the mean cross-entropy at the current weights."""
    dtype = next(model.parameters()).dtype
    inputs = torch.from_numpy(np.ascontiguousarray(images)).to(dtype)
    targets = torch.from_numpy(np.ascontiguousarray(labels)).long()
    model.eval()
    loss = nn.functional.cross_entropy(model(inputs), targets)
    return [g.detach() for g in torch.autograd.grad(loss, list(model.parameters()))]


def fedavg_update(
    model: nn.Module, images: np.ndarray, labels: np.ndarray, steps: int, lr: float
) -> list[torch.Tensor]:
    """FedAvg update ``w_S - w_0`` after `steps` full-batch SGD steps with rate `lr`."""
    local = copy.deepcopy(model)
    config = TrainConfig(epochs=steps, batch_size=len(images), lr=lr, momentum=0.0)
    train_local(local, images, labels, config, seed=0)
    return [
        (after.detach() - before.detach())
        for after, before in zip(local.parameters(), model.parameters(), strict=True)
    ]


@dataclass(frozen=True)
class ObservedClusterSum:
    """The decoded cluster sum and whether `mpc.secure_sum` produced it."""

    value: np.ndarray
    used_secure_sum: bool


def observed_cluster_sum(updates: np.ndarray, mode: str | None = None) -> ObservedClusterSum:
    """Sum the (k, d) `updates` through ``mpc.secure_sum`` when it exists, else in the clear.

    A cluster of one is its member's update: `mpc.secure_sum` refuses it, so it passes through.
    """
    updates = np.asarray(updates, dtype=np.float64)
    if updates.ndim != 2 or updates.shape[0] < 1:
        raise ValueError(f"updates must be a (k, d) array with k >= 1, got shape {updates.shape}")
    if updates.shape[0] == 1:
        return ObservedClusterSum(updates[0].copy(), used_secure_sum=False)
    try:
        from phalanx.mpc import secure_sum as secure_sum_fn
    except ImportError:
        return ObservedClusterSum(updates.sum(axis=0), used_secure_sum=False)
    kwargs: dict[str, Any] = {} if mode is None else {"mode": mode}
    result = secure_sum_fn(updates, **kwargs)
    value = np.asarray(getattr(result, "value", result), dtype=np.float64).reshape(-1)
    if value.shape[0] != updates.shape[1]:
        raise ValueError(
            f"mpc.secure_sum returned {value.shape[0]} values, expected {updates.shape[1]}"
        )
    return ObservedClusterSum(value, used_secure_sum=True)


def flatten(tensors: list[torch.Tensor]) -> np.ndarray:
    return np.concatenate([t.detach().double().reshape(-1).numpy() for t in tensors])


def unflatten(vector: np.ndarray, like: list[torch.Tensor]) -> list[torch.Tensor]:
    out, offset = [], 0
    for tensor in like:
        n = tensor.numel()
        out.append(
            torch.from_numpy(vector[offset : offset + n].copy())
            .reshape(tensor.shape)
            .to(tensor.dtype)
        )
        offset += n
    return out


@dataclass(frozen=True)
class Observation:
    update: list[torch.Tensor]
    used_secure_sum: bool | None


def observe(
    model: nn.Module,
    victim: tuple[np.ndarray, np.ndarray],
    spec: TargetSpec,
    lr: float = 0.1,
    others: list[tuple[np.ndarray, np.ndarray]] | None = None,
    mpc_mode: str | None = None,
    defense: Defense | None = None,
) -> Observation:
    """The update the aggregator sees for the victim's batch under target `spec`."""
    images, labels = victim
    used: bool | None = None
    if spec.kind == "fedavg":
        update = fedavg_update(model, images, labels, spec.local_steps, lr)
    else:
        update = gradient_update(model, images, labels)
    if spec.kind == "cluster-sum":
        others = others or []
        if len(others) != spec.cluster_size - 1:
            raise ValueError(
                f"cluster-sum:{spec.cluster_size} needs {spec.cluster_size - 1} other clients' "
                f"batches, got {len(others)}"
            )
        stacked = [flatten(update)] + [flatten(gradient_update(model, x, y)) for x, y in others]
        summed = observed_cluster_sum(np.stack(stacked), mpc_mode)
        update, used = unflatten(summed.value, update), summed.used_secure_sum
    if defense is not None:
        update = defense(update)
    return Observation(update, used)


def parse_defense(text: str | None, seed: int = 0) -> Defense | None:
    """Build a built-in defense from ``none``, ``gaussian:SIGMA``, ``prune:RATIO`` or
    ``forward:T``; `seed` drives its noise."""
    if text is None or text == "none":
        return None
    name, _, argument = text.partition(":")
    try:
        value = float(argument)
    except ValueError:
        raise ValueError(f"defense {text!r} needs a number after ':'") from None
    if name == "gaussian":
        if value < 0:
            raise ValueError(f"defense gaussian sigma must be >= 0, got {value}")
        generator = torch.Generator().manual_seed(seed)

        def gaussian(update: list[torch.Tensor]) -> list[torch.Tensor]:
            return [
                t
                + value * torch.randn(t.shape, generator=generator, dtype=torch.float64).to(t.dtype)
                for t in update
            ]

        return gaussian
    if name == "prune":
        if not 0.0 <= value < 1.0:
            raise ValueError(f"defense prune ratio must be in [0, 1), got {value}")

        def prune(update: list[torch.Tensor]) -> list[torch.Tensor]:
            pruned = []
            for t in update:
                k = int(value * t.numel())
                if k == 0:
                    pruned.append(t.clone())
                    continue
                threshold = t.abs().reshape(-1).kthvalue(k).values
                pruned.append(torch.where(t.abs() > threshold, t, torch.zeros_like(t)))
            return pruned

        return prune
    if name == "forward":
        return _forward_defense(text, value, seed)
    raise ValueError(f"unknown defense {text!r}; known: {', '.join(DEFENSES)}")


def _forward_defense(text: str, level: float, seed: int) -> Defense:
    """``forward:T``: release ``y = sqrt(abar_T) u + sqrt(1 - abar_T) RMS(u) eps`` (Ho et al.
    2020, Eq. 4, on the flattened update) and hand the attacker ``y / sqrt(abar_T)``."""
    from phalanx.defense.forward_noise import ForwardNoising, NoiseLevelSchedule, denoise_forward

    if level != int(level) or level < 0:
        raise ValueError(f"defense {text!r}: the level T must be a whole number >= 0")
    noising = ForwardNoising(NoiseLevelSchedule("constant", t_max=int(level), t_min=int(level)))
    alpha_bar = noising.alpha_bar(0)
    generator = torch.Generator().manual_seed(seed)

    def forward(update: list[torch.Tensor]) -> list[torch.Tensor]:
        released = noising(torch.from_numpy(flatten(update)), generator=generator)
        estimate = denoise_forward(released, alpha_bar, wiener=False)
        return unflatten(estimate.numpy(), update)

    return forward
