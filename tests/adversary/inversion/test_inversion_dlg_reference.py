"""DLG against an independent DLG: the same objective, Zhu et al.'s plain L-BFGS loop."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from phalanx.adversary.inversion.attacks import invert
from phalanx.adversary.inversion.experiment import victim_model
from phalanx.adversary.inversion.knowledge import AttackerKnowledge
from phalanx.adversary.inversion.metrics import psnr
from phalanx.adversary.inversion.priors import auxiliary_split
from phalanx.adversary.inversion.targets import TargetSpec, observe
from phalanx.learning.data import Dataset, load_dataset


@pytest.fixture(scope="module")
def mnist() -> Dataset:
    return load_dataset("mnist5k")


def _victim(mnist: Dataset, number: int) -> tuple[torch.nn.Module, np.ndarray, list[torch.Tensor]]:
    """The `number`-th single-image victim of ``run_experiment`` with seed 0 (lenet-zhu)."""
    _, victims = auxiliary_split(len(mnist.train_x))
    pool = victims[np.random.default_rng(0).permutation(len(victims))]
    model = victim_model("lenet-zhu", mnist, 0, False, victims)
    chosen = pool[number : number + 1]
    x, y = mnist.train_x[chosen], mnist.train_y[chosen]
    return model, x, observe(model, (x, y), TargetSpec("update")).update


def reference_dlg(
    model: torch.nn.Module, update: list[torch.Tensor], seed: int, steps: int = 300
) -> tuple[np.ndarray, float]:
    """Zhu et al. 2019's loop: ``LBFGS([x', y'])`` with torch's defaults (lr 1, 20 iterations a
    step, no line search), `steps` steps on ``||grad_w CE(f(x'), softmax(y')) - g||^2``."""
    net = copy.deepcopy(model).double()
    params = list(net.parameters())
    target = [t.double() for t in update]
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn((1, 1, 28, 28), generator=generator, dtype=torch.float64).requires_grad_()
    y = torch.randn((1, 10), generator=generator, dtype=torch.float64).requires_grad_()
    optimizer = torch.optim.LBFGS([x, y])

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        soft = torch.softmax(y, dim=-1)
        loss = -(soft * torch.log_softmax(net(x), dim=-1)).sum(dim=-1).mean()
        grads = torch.autograd.grad(loss, params, create_graph=True)
        distance = sum(((g - t) ** 2).sum() for g, t in zip(grads, target, strict=True))
        assert isinstance(distance, torch.Tensor)
        distance.backward()
        return distance

    loss = torch.zeros(())
    for _ in range(steps):
        loss = optimizer.step(closure)
    return x.detach().clamp(0, 1)[0].numpy(), float(loss.detach())


def converged_reference_dlg(
    model: torch.nn.Module, update: list[torch.Tensor], seed: int, restarts: int = 8
) -> tuple[np.ndarray, float]:
    """`reference_dlg` from fresh initialisations until one converges (loss < 1e-5).

    Plain L-BFGS without a line search stalls from some starting points: on image 1 the seed-1
    start stops at a loss of 321 with one thread and 1237 with two, while seed 101 reaches 1e-7.
    Zhu et al. restart such runs; the first converged one is the reference."""
    best: tuple[np.ndarray, float] | None = None
    for attempt in range(restarts):
        image, loss = reference_dlg(model, update, seed=seed + 100 * attempt)
        if best is None or loss < best[1]:
            best = (image, loss)
        if loss < 1e-5:
            break
    assert best is not None
    return best


def test_dlg_default_budget_gets_past_the_fast_phase(mnist: Dataset) -> None:
    # 300 L-BFGS iterations stopped this image at 53.5 dB
    model, x, update = _victim(mnist, 3)
    knowledge = AttackerKnowledge(1, (1, 28, 28), 10)
    result = invert("dlg", model, update, knowledge, None, torch.Generator().manual_seed(3))
    assert psnr(x[0], result.images[0].numpy()) >= 75.0


@pytest.mark.slow
@pytest.mark.parametrize("number", [1, 3])
def test_dlg_reaches_the_reference_dlg_psnr(mnist: Dataset, number: int) -> None:
    model, x, update = _victim(mnist, number)
    reference, loss = converged_reference_dlg(model, update, seed=number)
    assert loss < 1e-5, "the reference must converge on the images compared"
    reference_psnr = psnr(x[0], reference)
    assert reference_psnr > 65.0
    knowledge = AttackerKnowledge(1, (1, 28, 28), 10)
    result = invert("dlg", model, update, knowledge, None, torch.Generator().manual_seed(number))
    assert psnr(x[0], result.images[0].numpy()) >= reference_psnr - 1.0
