"""A defended update lowers the quality of an analytic gradient inversion.

For a linear classifier ``logits = W x + b`` trained with cross-entropy on one image, the
gradient is ``dW = (p - e_y) x^T`` and ``db = p - e_y``, so every row with ``db_i != 0`` gives the
input exactly: ``x = dW_i / db_i`` (the observation behind iDLG, Zhao et al. 2020, and
Phong et al. 2017). The attack below reads the row with the largest ``|db_i|``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from phalanx.defense import apply_to_parameters, denoise_forward, parse_defense
from phalanx.defense.forward_noise import ForwardNoising
from phalanx.learning.data import load_dataset

IMAGES = 8


@pytest.fixture(scope="module")
def gradients() -> list[tuple[torch.Tensor, list[torch.Tensor]]]:
    data = load_dataset("digits")
    torch.manual_seed(0)
    model = torch.nn.Linear(64, 10)
    out = []
    for index in range(IMAGES):
        x = torch.from_numpy(data.train_x[index]).reshape(1, 64)
        model.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), torch.tensor([int(data.train_y[index])]))
        loss.backward()
        assert model.weight.grad is not None and model.bias.grad is not None
        out.append((x.reshape(64), [model.weight.grad.clone(), model.bias.grad.clone()]))
    return out


def invert(grad_weight: torch.Tensor, grad_bias: torch.Tensor) -> torch.Tensor:
    row = int(torch.argmax(grad_bias.abs()))
    return (grad_weight[row] / grad_bias[row]).clamp(0, 1)  # pixels live in [0, 1]


def psnr(estimate: torch.Tensor, truth: torch.Tensor) -> float:
    mse = float(((estimate - truth) ** 2).mean())
    return 10 * math.log10(1 / max(mse, 1e-12))


def median_psnr(gradients, spec: str, denoise: bool = False) -> float:
    defense = parse_defense(spec)
    scores = []
    for index, (image, grads) in enumerate(gradients):
        defended = apply_to_parameters(
            defense, grads, generator=torch.Generator().manual_seed(index)
        )
        if denoise:
            assert isinstance(defense, ForwardNoising)
            flat = torch.cat([g.reshape(-1) for g in defended])
            flat = denoise_forward(flat, defense.alpha_bar(0))
            defended = [flat[:640].reshape(10, 64), flat[640:]]
        scores.append(psnr(invert(*defended), image))
    return float(np.median(scores))


def test_undefended_gradient_gives_the_image_back(gradients) -> None:
    assert median_psnr(gradients, "none") > 60


@pytest.mark.parametrize(
    "spec",
    ["clip-gauss:clip=1,z=0.1", "forward-dp:eps=8,rounds=50", "forward:t=700"],
)
def test_defenses_push_psnr_below_15_db(gradients, spec: str) -> None:
    undefended = median_psnr(gradients, "none")
    defended = median_psnr(gradients, spec)
    assert defended < 15 < undefended


def test_more_noise_less_leakage(gradients) -> None:
    scores = [median_psnr(gradients, f"gaussian:sigma={sigma}") for sigma in (1e-4, 1e-2, 1e-1)]
    assert scores[0] > scores[1] > scores[2]


def test_adaptive_denoiser_does_not_undo_forward_noise(gradients) -> None:
    # The ratio attack is scale-invariant, so knowing abar_t (rescaling, Wiener shrinkage by a
    # scalar) cannot bring the image back: the noise, not the shrinkage, protects it.
    plain = median_psnr(gradients, "forward:t=700")
    adaptive = median_psnr(gradients, "forward:t=700", denoise=True)
    assert adaptive < 15
    assert adaptive == pytest.approx(plain, abs=1e-6)
