"""Local training and evaluation, deterministic by seed.

Local training is mini-batch SGD with heavy-ball momentum (Polyak 1964):
``v <- mu * v + g;  w <- w - lr * v``, over `epochs` passes of a seeded shuffle.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class TrainConfig:
    """What local training does in one round."""

    epochs: int = 1
    batch_size: int = 32
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 0.0


@dataclass(frozen=True)
class TrainResult:
    loss: float
    samples: int
    steps: int


def flatten_parameters(model: nn.Module) -> torch.Tensor:
    """All parameters of `model` as one float32 vector, in `model.parameters()` order."""
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).to(torch.float32)


def load_flat_parameters(model: nn.Module, flat: torch.Tensor) -> None:
    """Write vector `flat` (as produced by `flatten_parameters`) back into `model`."""
    expected = sum(p.numel() for p in model.parameters())
    if flat.numel() != expected:
        raise ValueError(f"parameter vector has {flat.numel()} entries, model needs {expected}")
    offset = 0
    with torch.no_grad():
        for param in model.parameters():
            n = param.numel()
            param.copy_(flat[offset : offset + n].view_as(param))
            offset += n


def train_local(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    config: TrainConfig,
    seed: int,
) -> TrainResult:
    """Train `model` in place on (x, y) with SGD + momentum; returns the mean training loss."""
    if len(x) == 0:
        return TrainResult(loss=float("nan"), samples=0, steps=0)
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.from_numpy(np.ascontiguousarray(x))
    targets = torch.from_numpy(np.ascontiguousarray(y))
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=config.lr,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
    )
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    total_loss, steps = 0.0, 0
    for _epoch in range(config.epochs):
        order = torch.randperm(len(inputs), generator=generator)
        for start in range(0, len(order), config.batch_size):
            batch = order[start : start + config.batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(inputs[batch]), targets[batch])
            loss.backward()
            optimizer.step()
            total_loss += float(loss.detach())
            steps += 1
    return TrainResult(loss=total_loss / max(steps, 1), samples=len(x), steps=steps)


_WARMED_UP: set[type[nn.Module]] = set()


def warm_up_training(model: nn.Module, x: np.ndarray, y: np.ndarray, config: TrainConfig) -> bool:
    """Pay torch's one-off first-step costs (kernel selection, autograd engine start-up, about a
    second on a CPU) once per process and model class, on a throwaway copy of `model` and two
    batches of (x, y), so that a node's first round is as fast as the rest and a first-round
    deadline measures the network rather than start-up. `model` and every RNG are left as they
    were (the copy trains with its own seeded generator). True when it did the work."""
    if type(model) in _WARMED_UP or len(x) == 0:
        return False
    count = min(len(x), 2 * config.batch_size)
    throwaway = copy.deepcopy(model)
    train_local(throwaway, x[:count], y[:count], TrainConfig(batch_size=config.batch_size), 0)
    evaluate(throwaway, x[:count], y[:count])
    _WARMED_UP.add(type(model))
    return True


@torch.no_grad()
def evaluate(
    model: nn.Module, x: np.ndarray, y: np.ndarray, batch_size: int = 1000
) -> tuple[float, float]:
    """(accuracy, mean cross-entropy loss) of `model` on (x, y)."""
    model.eval()
    correct, total_loss = 0, 0.0
    inputs, targets = torch.from_numpy(x), torch.from_numpy(y)
    for start in range(0, len(inputs), batch_size):
        logits = model(inputs[start : start + batch_size])
        batch_targets = targets[start : start + batch_size]
        total_loss += float(nn.functional.cross_entropy(logits, batch_targets, reduction="sum"))
        correct += int((logits.argmax(dim=1) == batch_targets).sum())
    n = max(len(inputs), 1)
    return correct / n, total_loss / n
