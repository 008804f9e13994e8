"""Batch label recovery: iLRG and per-instance peeling against LLG+ on mnist5k victims."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from phalanx.adversary.inversion.experiment import victim_model
from phalanx.adversary.inversion.knowledge import AttackerKnowledge, Defense
from phalanx.adversary.inversion.labels import present_classes, recover_labels, round_counts
from phalanx.adversary.inversion.metrics import label_accuracy
from phalanx.adversary.inversion.priors import auxiliary_split
from phalanx.adversary.inversion.targets import TargetSpec, observe, parse_defense
from phalanx.learning.data import Dataset, load_dataset


@pytest.fixture(scope="module")
def mnist() -> Dataset:
    return load_dataset("mnist5k")


def _batch(dataset: Dataset, batch: int, number: int) -> tuple[np.ndarray, np.ndarray]:
    """Victim batch `number` of size `batch`, drawn as `run_experiment` draws them (seed 0)."""
    _, victims = auxiliary_split(len(dataset.train_x))
    pool = victims[np.random.default_rng(0).permutation(len(victims))]
    chosen = pool[number * batch : (number + 1) * batch]
    return dataset.train_x[chosen], dataset.train_y[chosen]


def _labels(
    model: nn.Module,
    dataset: Dataset,
    batch: int,
    number: int,
    method: str,
    defense: Defense | None = None,
) -> tuple[list[int], list[int]]:
    """(recovered, true) label multisets, sorted, for one victim batch."""
    x, y = _batch(dataset, batch, number)
    update = observe(model, (x, y), TargetSpec("update"), defense=defense).update
    knowledge = AttackerKnowledge(batch, dataset.input_shape, dataset.num_classes)
    found = recover_labels(model, update, knowledge, torch.Generator().manual_seed(0), method)
    return sorted(found.tolist()), sorted(y.tolist())


def _model(dataset: Dataset, name: str, trained: bool) -> nn.Module:
    aux, _ = auxiliary_split(len(dataset.train_x))
    return victim_model(name, dataset, 0, trained, aux)


def _head_gradient(
    classes: int, labels: list[int], generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """dL/dW (C, m) of a linear head over ReLU features for a batch with these labels, in
    float32 as a client sends it, and the labels."""
    weight = 0.1 * torch.randn(classes, 64, generator=generator)
    features = torch.relu(torch.randn(len(labels), 64, generator=generator))
    y = torch.tensor(labels)
    error = torch.softmax(features @ weight.T, dim=1) - nn.functional.one_hot(y, classes)
    return (error.T @ features / len(labels)).float(), y


def test_the_svd_test_finds_exactly_the_classes_of_a_small_batch() -> None:
    """Dang et al. (2021): with B << C distinct labels each -g_b in the span of dL/dW is the only
    kind of vector positive at one class and nowhere else."""
    generator = torch.Generator().manual_seed(3)
    for _ in range(10):
        labels = torch.randperm(20, generator=generator)[:4].tolist()
        gradient, y = _head_gradient(20, labels, generator)
        assert present_classes(gradient, 4).tolist() == sorted(set(y.tolist()))
    # rank reaching the classes, or a sample hidden below rounding: no verdict, every class
    gradient, _ = _head_gradient(5, [0, 1, 2, 3, 4, 0], generator)
    assert present_classes(gradient, 6).tolist() == [0, 1, 2, 3, 4]
    gradient, _ = _head_gradient(20, [2, 7], generator)
    assert present_classes(gradient, 3).tolist() == list(range(20))


def test_ilrg_is_exact_on_untrained_models_where_llg_errs(mnist: Dataset) -> None:
    model = _model(mnist, "lenet-zhu", trained=False)
    for number in (8, 10):  # batches of 8 with repeated classes that LLG+ miscounts
        found, true = _labels(model, mnist, 8, number, "ilrg")
        assert found == true
        assert _labels(model, mnist, 8, number, "llg")[0] != true
    cnn = _model(mnist, "cnn", trained=False)
    for batch in (4, 8):
        for method in ("ilrg", "peel"):
            found, true = _labels(cnn, mnist, batch, 0, method)
            assert found == true


@pytest.mark.parametrize(("name", "batch", "number"), [("cnn", 4, 1), ("cnn", 8, 0), ("mlp", 8, 1)])
def test_peeling_is_exact_on_a_trained_model_where_llg_and_ilrg_err(
    mnist: Dataset, name: str, batch: int, number: int
) -> None:
    model = _model(mnist, name, trained=True)
    found, true = _labels(model, mnist, batch, number, "peel")
    assert found == true
    assert _labels(model, mnist, batch, number, "llg")[0] != true
    assert _labels(model, mnist, batch, number, "ilrg")[0] != true


def test_peeling_reads_every_sample_of_a_trained_cnn_at_batch_16(mnist: Dataset) -> None:
    model = _model(mnist, "cnn", trained=True)
    for number in (0, 1):
        found, true = _labels(model, mnist, 16, number, "peel")
        assert found == true


def test_noise_on_the_update_makes_peeling_give_way_to_llg(mnist: Dataset) -> None:
    # noise breaks the exact label equation: no unit may pass for a sample, so peel gives at
    # least what llg gives (a unit holding only noise saturates p and once matched any W_yk)
    model = _model(mnist, "cnn", trained=True)
    for number in range(4):
        found = {
            method: _labels(model, mnist, 8, number, method, parse_defense("gaussian:1e-4", number))
            for method in ("peel", "llg")
        }
        true = np.array(found["peel"][1])
        peel, llg = (label_accuracy(true, np.array(found[m][0])) for m in ("peel", "llg"))
        assert peel >= llg


def test_without_a_hidden_relu_layer_peel_falls_back_to_llg(mnist: Dataset) -> None:
    # lenet-zhu: sigmoid convolutions feed the output layer directly
    model = _model(mnist, "lenet-zhu", trained=True)
    for number in range(3):
        assert _labels(model, mnist, 8, number, "peel") == _labels(model, mnist, 8, number, "llg")


def test_without_an_output_bias_ilrg_falls_back_to_llg() -> None:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 3, False))
    x = torch.rand(6, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 0, 1, 2, 2, 2])
    loss = nn.functional.cross_entropy(model(x), y)
    update = list(torch.autograd.grad(loss, list(model.parameters())))
    knowledge = AttackerKnowledge(6, (1, 4, 4), 3)
    found = {
        method: recover_labels(model, update, knowledge, torch.Generator().manual_seed(0), method)
        for method in ("peel", "ilrg", "llg")
    }
    assert torch.equal(found["ilrg"], found["llg"])
    assert torch.equal(found["peel"], found["llg"])


def test_round_counts_sum_to_the_batch() -> None:
    estimate = torch.tensor([1.4, 1.4, 1.4, -0.2], dtype=torch.float64)
    assert round_counts(estimate, 4).tolist() == [2, 1, 1, 0]
    assert round_counts(torch.tensor([2.6, 2.6], dtype=torch.float64), 4).tolist() == [2, 2]
    assert round_counts(torch.tensor([9.0, -3.0], dtype=torch.float64), 4).tolist() == [4, 0]


def test_unknown_label_method_is_rejected() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    update = [torch.zeros(2, 4), torch.zeros(2)]
    with pytest.raises(ValueError, match="unknown label method"):
        recover_labels(model, update, AttackerKnowledge(2, (1, 2, 2), 2), method="bogus")
