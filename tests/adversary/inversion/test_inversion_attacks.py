"""Attacks on tiny models and 8x8 digits: labels, PSNR, cluster sums, priors, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from phalanx.adversary.inversion.attacks import invert
from phalanx.adversary.inversion.experiment import ExperimentSpec, load_prior_for, run_experiment
from phalanx.adversary.inversion.knowledge import AttackerKnowledge, InversionConfig
from phalanx.adversary.inversion.labels import recover_labels
from phalanx.adversary.inversion.metrics import psnr
from phalanx.adversary.inversion.priors import PriorSpec, auxiliary_split, load_or_train_prior
from phalanx.adversary.inversion.targets import (
    TargetSpec,
    observe,
    observed_cluster_sum,
    parse_defense,
    parse_target,
)
from phalanx.learning.data import Dataset, load_dataset
from phalanx.learning.models import build_model


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset("digits")


def _model(seed: int, name: str = "lenet-zhu") -> torch.nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return build_model(name, (1, 8, 8), 10).eval()


def _knowledge(batch: int = 1, **kwargs: object) -> AttackerKnowledge:
    return AttackerKnowledge(batch, (1, 8, 8), 10, **kwargs)  # type: ignore[arg-type]


def test_idlg_recovers_every_single_label_exactly(digits: Dataset) -> None:
    _, victims = auxiliary_split(len(digits.train_x))
    for seed, index in enumerate(victims[:10]):
        model = _model(seed)
        x, y = digits.train_x[index : index + 1], digits.train_y[index : index + 1]
        update = observe(model, (x, y), TargetSpec("update")).update
        labels = recover_labels(model, update, _knowledge())
        assert labels.tolist() == y.tolist()


def test_batch_label_recovery_counts_on_an_untrained_model(digits: Dataset) -> None:
    _, victims = auxiliary_split(len(digits.train_x))
    chosen = victims[:4]
    model = _model(1)
    x, y = digits.train_x[chosen], digits.train_y[chosen]
    update = observe(model, (x, y), TargetSpec("update")).update
    labels = recover_labels(model, update, _knowledge(4), torch.Generator().manual_seed(0))
    assert sorted(labels.tolist()) == sorted(y.tolist())


@pytest.mark.parametrize("batch", [8, 16])
def test_batch_label_counts_from_the_bias_gradient(digits: Dataset, batch: int) -> None:
    # repeated classes: 16 images of 10 classes; the sign rule alone cannot count them
    _, victims = auxiliary_split(len(digits.train_x))
    model = _model(3, "cnn")
    for start in (0, batch):
        chosen = victims[start : start + batch]
        x, y = digits.train_x[chosen], digits.train_y[chosen]
        update = observe(model, (x, y), TargetSpec("update")).update
        labels = recover_labels(model, update, _knowledge(batch), torch.Generator().manual_seed(0))
        assert sorted(labels.tolist()) == sorted(y.tolist())


def test_idlg_reaches_30_db_on_an_8x8_digit_quickly(digits: Dataset) -> None:
    model = _model(0)
    x, y = digits.train_x[5:6], digits.train_y[5:6]
    update = observe(model, (x, y), TargetSpec("update")).update
    result = invert("idlg", model, update, _knowledge(), InversionConfig(iterations=60))
    assert result.labels.tolist() == y.tolist()
    assert psnr(x[0], result.images[0].numpy()) >= 30.0


def test_invert_is_deterministic(digits: Dataset) -> None:
    model = _model(0)
    x, y = digits.train_x[7:8], digits.train_y[7:8]
    update = observe(model, (x, y), TargetSpec("update")).update
    runs = [
        invert(
            "ig",
            model,
            update,
            _knowledge(),
            InversionConfig(iterations=20),
            torch.Generator().manual_seed(4),
        ).images
        for _ in range(2)
    ]
    assert torch.equal(runs[0], runs[1])


def test_fedavg_target_is_inverted_by_simulating_local_steps(digits: Dataset) -> None:
    model = _model(2)
    x, y = digits.train_x[9:10], digits.train_y[9:10]
    spec = parse_target("fedavg:3")
    update = observe(model, (x, y), spec, lr=0.1).update
    knowledge = _knowledge(target_kind="fedavg", local_steps=3, lr=0.1)
    result = invert("idlg", model, update, knowledge, InversionConfig(iterations=100))
    assert result.labels.tolist() == y.tolist()
    assert psnr(x[0], result.images[0].numpy()) >= 30.0


def test_cluster_sum_of_8_updates_is_harder_than_one(digits: Dataset) -> None:
    common = dict(method="idlg", model="lenet-zhu", batch=1, images=2, iterations=60)
    single = run_experiment(ExperimentSpec(target="update", **common), digits)  # type: ignore[arg-type]
    summed = run_experiment(ExperimentSpec(target="cluster-sum:8", **common), digits)  # type: ignore[arg-type]
    assert summed.used_secure_sum is not None
    assert single.median_psnr >= 30.0
    assert summed.median_psnr < single.median_psnr - 10.0


def test_observed_cluster_sum_adds_the_updates() -> None:
    updates = np.array([[1.0, 2.0, 3.0], [0.5, -2.0, 1.0]])
    result = observed_cluster_sum(updates)
    assert result.used_secure_sum  # mpc.secure_sum exists now
    np.testing.assert_allclose(result.value, [1.5, 0.0, 4.0], atol=1e-4)


def test_defenses_change_the_update() -> None:
    update = [torch.tensor([0.1, -0.5, 0.3, 0.05])]
    pruned = parse_defense("prune:0.5")(update)  # type: ignore[misc]
    assert pruned[0].tolist() == pytest.approx([0.0, -0.5, 0.3, 0.0])
    noisy = parse_defense("gaussian:0.1", seed=1)(update)  # type: ignore[misc]
    assert not torch.equal(noisy[0], update[0])
    with pytest.raises(ValueError, match="unknown defense 'blur:1'"):
        parse_defense("blur:1")


def test_the_forward_defense_releases_the_nodes_noising_and_the_attacker_rescales() -> None:
    from phalanx.defense.forward_noise import alpha_bar_schedule

    generator = torch.Generator().manual_seed(0)
    update = [torch.randn(300, 100, generator=generator), torch.randn(100, generator=generator)]
    flat = torch.cat([t.reshape(-1) for t in update])
    assert parse_defense("forward:0")(update)[0].equal(update[0])  # type: ignore[misc]
    for level in (300, 700):
        seen = parse_defense(f"forward:{level}", seed=3)(update)  # type: ignore[misc]
        assert [t.shape for t in seen] == [t.shape for t in update]
        error = torch.cat([t.reshape(-1) for t in seen]) - flat
        abar = float(alpha_bar_schedule("cosine", 1000)[level])
        # y / sqrt(abar) = u + sqrt((1 - abar) / abar) RMS(u) eps: unbiased, that noise level
        expected = math.sqrt((1 - abar) / abar) * float(flat.pow(2).mean().sqrt())
        assert float(error.std()) == pytest.approx(expected, rel=0.02)
        assert abs(float(error.mean())) < 0.02 * expected
        again = parse_defense(f"forward:{level}", seed=3)(update)  # type: ignore[misc]
        assert all(a.equal(b) for a, b in zip(seen, again, strict=True))
    for bad in ("forward:1001", "forward:2.5", "forward:x"):
        with pytest.raises(ValueError):
            parse_defense(bad)


def test_update_with_wrong_shapes_is_rejected() -> None:
    model = _model(0)
    wrong = [torch.zeros(3) for _ in model.parameters()]
    with pytest.raises(ValueError, match=r"observed_update\[0\] has shape \(3,\)"):
        invert("idlg", model, wrong, _knowledge())
    with pytest.raises(ValueError, match="observed_update has 1 tensors"):
        invert("idlg", model, [torch.zeros(3)], _knowledge())


def test_unknown_method_is_rejected() -> None:
    model = _model(0)
    update = [torch.zeros_like(p) for p in model.parameters()]
    with pytest.raises(ValueError, match="unknown method 'dlgx'"):
        invert("dlgx", model, update, _knowledge())


def test_batch_larger_than_the_data_is_rejected(digits: Dataset) -> None:
    with pytest.raises(ValueError, match="batch 5000 is larger than the"):
        run_experiment(ExperimentSpec("idlg", "lenet-zhu", batch=5000), digits)


def test_bad_target_and_knowledge_are_rejected() -> None:
    with pytest.raises(ValueError, match="unknown target 'sum:3'"):
        parse_target("sum:3")
    with pytest.raises(ValueError, match="count must be >= 1"):
        parse_target("cluster-sum:0")
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        _knowledge(0)


def test_tiny_gan_prior_is_cached_and_attack_runs(digits: Dataset, tmp_path) -> None:
    aux, _ = auxiliary_split(len(digits.train_x))
    spec = PriorSpec("gan", "digits", (1, 8, 8), steps=20, width=8, latent_dim=8)
    prior, path, cached = load_or_train_prior(spec, digits.train_x[aux], tmp_path)
    assert not cached and path.is_file()
    again, _, cached_again = load_or_train_prior(spec, digits.train_x[aux], tmp_path)
    assert cached_again
    for a, b in zip(prior.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    model = _model(0)
    x, y = digits.train_x[3:4], digits.train_y[3:4]
    update = observe(model, (x, y), TargetSpec("update")).update
    result = invert("gan", model, update, _knowledge(), InversionConfig(iterations=30, prior=prior))
    assert result.images.shape == (1, 1, 8, 8)
    assert result.labels.tolist() == y.tolist()
    assert min(result.history) < result.history[0]


STEPS = 60


def test_gradient_guidance_pulls_the_diffusion_sample_to_the_victim(
    digits: Dataset, tmp_path
) -> None:
    prior, _, _ = load_prior_for("diffusion", digits, steps=400, cache_dir=tmp_path)
    model = _model(0)
    x, y = digits.train_x[3:4], digits.train_y[3:4]
    update = observe(model, (x, y), TargetSpec("update")).update
    scores = {}
    for scale in (0.0, 10.0):
        config = InversionConfig(prior=prior, diffusion_steps=STEPS, guidance_scale=scale)
        result = invert("diffusion", model, update, _knowledge(), config)
        assert result.images.shape == (1, 1, 8, 8) and len(result.history) == STEPS
        scores[scale] = (psnr(x[0], result.images[0].numpy()), result.history[-1])
    guided_history = result.history
    # DPS guidance, not the prior alone, brings the sample to the victim's gradient and image
    assert scores[10.0][1] < 0.5 * scores[0.0][1]
    assert scores[10.0][0] > scores[0.0][0] + 3.0
    refine = InversionConfig(prior=prior, diffusion_steps=STEPS, guidance_scale=10.0)
    refine.refine_iterations = 60
    refined = invert("diffusion-ig", model, update, _knowledge(), refine)
    # the same DPS sample, then IG from it lowers its objective
    assert refined.history[:STEPS] == guided_history
    assert len(refined.history) == STEPS + 60
    assert min(refined.history[STEPS:]) < refined.history[STEPS]


def test_prior_without_model_is_rejected() -> None:
    model = _model(0)
    update = [torch.zeros_like(p) for p in model.parameters()]
    update[-2][0, 0] = -1.0
    with pytest.raises(ValueError, match=r"need config\.prior"):
        invert("diffusion", model, update, _knowledge())
