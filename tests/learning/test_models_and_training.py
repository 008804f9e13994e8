"""Models build for every input shape; training learns; parameters flatten and load back."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import phalanx.learning.train as train_module
from phalanx.learning.data import load_dataset
from phalanx.learning.models import MODELS, build_model, count_parameters
from phalanx.learning.train import (
    TrainConfig,
    evaluate,
    flatten_parameters,
    load_flat_parameters,
    train_local,
    warm_up_training,
)


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("shape", [(1, 28, 28), (1, 8, 8), (3, 32, 32)])
def test_every_model_maps_images_to_class_logits(name: str, shape: tuple[int, int, int]) -> None:
    model = build_model(name, shape, 10)
    assert model(torch.zeros(3, *shape)).shape == (3, 10)
    assert count_parameters(model) > 1000


def test_same_seed_same_initial_model() -> None:
    torch.manual_seed(4)
    a = flatten_parameters(build_model("cnn", (1, 28, 28), 10))
    torch.manual_seed(4)
    b = flatten_parameters(build_model("cnn", (1, 28, 28), 10))
    assert torch.equal(a, b)


def test_lenet_zhu_uses_uniform_half_initialisation() -> None:
    weights = flatten_parameters(build_model("lenet-zhu", (1, 28, 28), 10))
    assert float(weights.min()) >= -0.5 and float(weights.max()) <= 0.5
    assert float(weights.abs().mean()) > 0.2  # uniform on [-0.5, 0.5] has mean |w| = 0.25


def test_unknown_model_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown model 'vit'"):
        build_model("vit", (1, 28, 28), 10)


def test_flatten_and_load_round_trip_and_shape_check() -> None:
    model = build_model("mlp", (1, 8, 8), 10)
    flat = flatten_parameters(model)
    load_flat_parameters(model, torch.zeros_like(flat))
    assert float(flatten_parameters(model).abs().sum()) == 0.0
    with pytest.raises(ValueError, match="model needs"):
        load_flat_parameters(model, torch.zeros(flat.numel() + 1))


def test_local_training_learns_digits_and_is_deterministic() -> None:
    data = load_dataset("digits", seed=0)
    config = TrainConfig(epochs=3, batch_size=32, lr=0.1, momentum=0.9)
    results = []
    for _ in range(2):
        torch.manual_seed(0)
        model = build_model("mlp", data.input_shape, 10)
        before, _ = evaluate(model, data.test_x, data.test_y)
        train_local(model, data.train_x, data.train_y, config, seed=11)
        after, _ = evaluate(model, data.test_x, data.test_y)
        results.append((before, after, flatten_parameters(model)))
    assert results[0][1] > 0.85 > results[0][0]
    assert torch.equal(results[0][2], results[1][2])


def test_training_on_no_data_returns_nan_loss_without_steps() -> None:
    model = build_model("mlp", (1, 8, 8), 10)
    result = train_local(
        model, np.zeros((0, 1, 8, 8), np.float32), np.zeros(0, np.int64), TrainConfig(), seed=0
    )
    assert result.steps == 0 and np.isnan(result.loss)


def test_warm_up_runs_once_per_model_class_and_leaves_the_model_and_rngs_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(train_module, "_WARMED_UP", set())
    data = load_dataset("digits")
    x, y = data.train_x[:200], data.train_y[:200]
    torch.manual_seed(5)
    model = build_model("mlp", data.input_shape, data.num_classes)
    twin = build_model("mlp", data.input_shape, data.num_classes)
    load_flat_parameters(twin, flatten_parameters(model))
    before = flatten_parameters(model).clone()
    config = TrainConfig(epochs=1)
    train_local(twin, x, y, config, seed=9)
    rng_before = torch.get_rng_state()
    assert warm_up_training(model, x, y, config) is True
    assert torch.equal(flatten_parameters(model), before)
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert warm_up_training(model, x, y, config) is False
    assert warm_up_training(model, x[:0], y[:0], config) is False
    # Training after the warm-up gives the very bits its twin got before it.
    train_local(model, x, y, config, seed=9)
    assert torch.equal(flatten_parameters(model), flatten_parameters(twin))
