"""The node's defense hooks: `[defense]` validation, DP-SGD training, update release, reports."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from opacus.accountants import RDPAccountant
from pydantic import ValidationError

from phalanx.defense import client_level_epsilon, dpsgd_sample_rate
from phalanx.learning.data import load_dataset
from phalanx.learning.models import build_model
from phalanx.learning.train import TrainConfig, flatten_parameters
from phalanx.node.defenses import DefenseConfig, NodeDefense, defense_seed

N_SAMPLES, BATCH = 120, 40


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    data = load_dataset("digits")
    return data.train_x[:N_SAMPLES], data.train_y[:N_SAMPLES]


def fresh_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("mlp", (1, 8, 8), 10)


def an_update(dimension: int = 500, seed: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 0.05, dimension).astype(np.float32)


# ------------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("fields", "field_name"),
    [
        ({"noise_multiplier": -0.5}, "noise_multiplier"),
        ({"max_grad_norm": 0.0}, "max_grad_norm"),
        ({"delta": 1.0}, "delta"),
        ({"delta": 1.5}, "delta"),
        ({"delta": 0.0}, "delta"),
        ({"accountant": "moments"}, "accountant"),
        ({"update": "clip-gauss:clip=1,z=-1"}, "update"),
        ({"update": "shuffle"}, "update"),
        ({"sigma": 1.0}, "sigma"),
    ],
)
def test_bad_settings_are_refused_naming_the_field(fields: dict, field_name: str) -> None:
    with pytest.raises(ValidationError) as info:
        DefenseConfig(**fields)
    error = info.value.errors()[0]
    assert error["loc"] == (field_name,)


def test_bad_update_spec_message_names_the_inner_key() -> None:
    with pytest.raises(ValidationError, match=r"z must be >= 0, got -1"):
        DefenseConfig(update="clip-gauss:clip=1,z=-1")


def test_config_is_frozen_and_defaults_are_off() -> None:
    config = DefenseConfig()
    assert not config.enabled
    assert DefenseConfig(update="prune:ratio=0.5").enabled and DefenseConfig(dpsgd=True).enabled
    with pytest.raises(ValidationError):
        config.dpsgd = True  # type: ignore[misc]


def test_node_index_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError, match=r"node_index must be in \[0, 4\), got 4"):
        NodeDefense(DefenseConfig(), node_index=4, seed=0, num_nodes=4)


# ------------------------------------------------------------------------------- training


def test_dpsgd_epsilon_matches_opacus_accountant_over_rounds(digits) -> None:
    x, y = digits
    config = DefenseConfig(dpsgd=True, noise_multiplier=1.3, max_grad_norm=0.8, delta=1e-5)
    node = NodeDefense(config, node_index=1, seed=5, num_nodes=3)
    model = fresh_model()
    train_config = TrainConfig(batch_size=BATCH, epochs=1)
    before = flatten_parameters(model)
    epsilons: list[float] = []
    for round_ in (1, 2):
        result, epsilon = node.train(model, x, y, train_config, seed=round_)
        assert result.steps == math.ceil(N_SAMPLES / BATCH)
        assert epsilon is not None
        epsilons.append(epsilon)
    assert not torch.equal(before, flatten_parameters(model))  # it trained

    reference = RDPAccountant()
    steps = 2 * math.ceil(N_SAMPLES / BATCH)
    reference.history = [(1.3, dpsgd_sample_rate(N_SAMPLES, BATCH), steps)]
    assert epsilons[1] == pytest.approx(reference.get_epsilon(1e-5), rel=1e-12)
    assert 0 < epsilons[0] < epsilons[1] < math.inf
    assert node.privacy_report()["dpsgd_epsilon"] == epsilons[1]
    assert node.privacy_report()["dpsgd_steps"] == steps


def test_without_dpsgd_training_is_plain_and_reports_no_epsilon(digits) -> None:
    from phalanx.learning.train import train_local

    x, y = digits
    node = NodeDefense(DefenseConfig(), node_index=0, seed=0, num_nodes=2)
    ours, theirs = fresh_model(), fresh_model()
    result, epsilon = node.train(ours, x, y, TrainConfig(batch_size=BATCH), seed=9)
    train_local(theirs, x, y, TrainConfig(batch_size=BATCH), seed=9)
    assert epsilon is None
    assert torch.equal(flatten_parameters(ours), flatten_parameters(theirs))
    assert result.samples == N_SAMPLES
    assert node.privacy_report()["epsilon"] is None


# ------------------------------------------------------------------------------- release


@pytest.mark.parametrize(
    "spec",
    [
        "clip-gauss:clip=0.5,z=0.8",
        "forward:t=400",
        "forward-dp:eps=4,rounds=3",
        "gaussian:sigma=0.1",
    ],
)
def test_protect_is_deterministic_per_node_and_round(spec: str) -> None:
    update = an_update()

    def release(node_index: int, round_: int, seed: int = 11) -> np.ndarray:
        node = NodeDefense(DefenseConfig(update=spec), node_index, seed, num_nodes=4)
        return node.protect(update, round_)

    first = release(2, 3)
    assert first.dtype == np.float32 and first.shape == update.shape
    assert np.array_equal(first, release(2, 3))  # bit-identical rerun
    assert not np.array_equal(first, update)
    assert not np.array_equal(first, release(1, 3))  # other node, other noise
    assert not np.array_equal(first, release(2, 4))  # other round, other noise
    assert not np.array_equal(first, release(2, 3, seed=12))


def test_protect_none_releases_the_update_unchanged() -> None:
    update = an_update()
    released = NodeDefense(DefenseConfig(), 0, 0, 2).protect(update, 1)
    assert np.array_equal(released, update)
    assert released is not update


def test_clip_gauss_clips_then_adds_calibrated_noise() -> None:
    update = an_update(dimension=20_000) * 10  # norm about 70, far above the bound
    clip, z = 2.0, 0.01
    released = NodeDefense(DefenseConfig(update=f"clip-gauss:clip={clip},z={z}"), 0, 0, 2).protect(
        update, 1
    )
    clipped = update * (clip / np.linalg.norm(update.astype(np.float64)))
    residual = released.astype(np.float64) - clipped
    # The residual is N(0, (zC)^2): its sample std lies within a few standard errors.
    assert residual.std() == pytest.approx(z * clip, rel=0.05)
    assert abs(residual.mean()) < 5 * z * clip / math.sqrt(update.size)


def test_prune_zeroes_the_smallest_half() -> None:
    update = an_update(dimension=1000)
    released = NodeDefense(DefenseConfig(update="prune:ratio=0.5"), 0, 0, 2).protect(update, 1)
    kept = released != 0
    assert kept.sum() == 500
    assert np.abs(update[kept]).min() >= np.abs(update[~kept]).max()
    assert np.array_equal(released[kept], update[kept])


def test_forward_noising_follows_its_decreasing_schedule() -> None:
    update = an_update(dimension=20_000)
    spec = "forward:t=800,levels=decreasing,t_min=100,rounds=3"
    node = NodeDefense(DefenseConfig(update=spec), 0, 0, 2)
    errors = [
        float(np.mean((node.protect(update, r).astype(np.float64) - update) ** 2)) for r in (1, 3)
    ]
    assert errors[0] > 5 * errors[1]  # round 1 at t=800 is far noisier than round 3 at t=100


def test_protect_refuses_round_zero_and_matrices() -> None:
    node = NodeDefense(DefenseConfig(update="prune:ratio=0.5"), 0, 0, 2)
    with pytest.raises(ValueError, match="round_ must be >= 1, got 0"):
        node.protect(an_update(), 0)
    with pytest.raises(ValueError, match="update must be a flat vector"):
        node.protect(np.zeros((2, 3), dtype=np.float32), 1)


def test_defense_seed_is_stable_and_distinct() -> None:
    assert defense_seed(1, 2, 3) == defense_seed(1, 2, 3)
    assert len({defense_seed(1, n, r) for n in range(5) for r in range(5)}) == 25
    assert 0 <= defense_seed(1, 2, 3) < 2**63


# ------------------------------------------------------------------------------- reports


def test_client_level_epsilon_grows_across_rounds_and_matches_the_accountant() -> None:
    z, delta = 1.2, 1e-5
    node = NodeDefense(DefenseConfig(update=f"clip-gauss:clip=1,z={z}", delta=delta), 0, 0, 4)
    assert node.privacy_report()["update_epsilon"] is None
    reported = []
    for round_ in (1, 2, 3):
        node.protect(an_update(), round_)
        reported.append(node.privacy_report()["update_epsilon"])
    node.protect(an_update(), 3)  # a repeated round is not counted twice
    assert node.privacy_report()["update_rounds"] == 3
    assert reported[0] < reported[1] < reported[2]
    assert reported[2] == pytest.approx(client_level_epsilon(z, 4, 4, 3, delta), rel=1e-12)
    assert node.privacy_report()["epsilon"] == reported[2]


def test_forward_dp_meets_its_target_at_the_calibrated_rounds() -> None:
    node = NodeDefense(DefenseConfig(update="forward-dp:eps=3,rounds=4"), 1, 0, 2)
    for round_ in range(1, 5):
        node.protect(an_update(), round_)
    report = node.privacy_report()
    assert 2.5 < report["update_epsilon"] <= 3.0
    node.protect(an_update(), 5)  # past the calibrated rounds the spend goes beyond the target
    assert node.privacy_report()["update_epsilon"] > 3.0


def test_chained_defense_reports_the_tighter_stage_and_no_dp_specs_report_none() -> None:
    chained = NodeDefense(
        DefenseConfig(update="clip-gauss:clip=1,z=0.6+clip-gauss:clip=1,z=2"), 0, 0, 2
    )
    stronger = NodeDefense(DefenseConfig(update="clip-gauss:clip=1,z=2"), 0, 0, 2)
    plain = NodeDefense(DefenseConfig(update="prune:ratio=0.5+forward:t=300"), 0, 0, 2)
    for node in (chained, stronger, plain):
        node.protect(an_update(), 1)
        node.protect(an_update(), 2)
    assert chained.privacy_report()["update_epsilon"] == stronger.privacy_report()["update_epsilon"]
    assert plain.privacy_report()["update_epsilon"] is None
    assert plain.privacy_report()["update_rounds"] == 2


def test_report_combines_dpsgd_and_client_level(digits) -> None:
    x, y = digits
    config = DefenseConfig(dpsgd=True, noise_multiplier=1.0, update="clip-gauss:clip=1,z=3")
    node = NodeDefense(config, 0, 0, 2)
    model = fresh_model()
    node.train(model, x, y, TrainConfig(batch_size=BATCH), seed=1)
    node.protect(an_update(), 1)
    report = node.privacy_report()
    assert report["epsilon"] == min(report["dpsgd_epsilon"], report["update_epsilon"])
    assert report["dpsgd_accountant"]["history"][0][2] == math.ceil(N_SAMPLES / BATCH)
