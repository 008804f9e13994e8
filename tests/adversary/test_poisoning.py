"""Model-poisoning attacks checked against their defining formulas on small inputs."""

from __future__ import annotations

import math

import pytest
import torch

from phalanx.adversary.poisoning import (
    POISONING_ATTACKS,
    AlieParams,
    GaussianParams,
    IpmParams,
    MimicParams,
    MinMaxParams,
    ScalingParams,
    SignFlipParams,
    alie,
    alie_z,
    gaussian_noise,
    ipm,
    mimic,
    min_max,
    min_sum,
    parse_attack,
    scaling,
    sign_flip,
)

OWN = torch.tensor([1.0, -2.0, 0.5])
VIEW = torch.tensor([[1.0, 2.0], [3.0, 2.0], [5.0, 8.0]], dtype=torch.float64)


def test_sign_flip_and_scaling() -> None:
    assert torch.equal(sign_flip(OWN, None, 10, 2), -OWN)
    assert torch.equal(sign_flip(OWN, None, 10, 2, SignFlipParams(factor=3.0)), -3.0 * OWN)
    assert torch.equal(scaling(OWN, None, 10, 2), 10.0 * OWN)
    assert torch.equal(scaling(OWN, None, 10, 2, ScalingParams(factor=-0.5)), -0.5 * OWN)


def test_gaussian_is_mean_plus_std_times_seeded_normal() -> None:
    params = GaussianParams(std=2.0, mean=0.5)
    sent = gaussian_noise(OWN, None, 10, 2, params, torch.Generator().manual_seed(11))
    draw = torch.randn(3, generator=torch.Generator().manual_seed(11), dtype=torch.float64)
    assert torch.allclose(sent, (0.5 + 2.0 * draw).float())
    additive = GaussianParams(std=2.0, mean=0.5, additive=True)
    sent_additive = gaussian_noise(OWN, None, 10, 2, additive, torch.Generator().manual_seed(11))
    assert torch.allclose(sent_additive, sent + OWN)
    again = gaussian_noise(OWN, None, 10, 2, params, torch.Generator().manual_seed(11))
    assert torch.equal(sent, again)
    with pytest.raises(ValueError, match=r"seeded torch\.Generator"):
        gaussian_noise(OWN, None, 10, 2, params)


def test_alie_z_follows_baruch_et_al() -> None:
    # n = 50, f = 10: s = floor(26) - 10 = 16, z = Phi^-1(34 / 50) = Phi^-1(0.68) ~ 0.4677
    assert alie_z(50, 10) == pytest.approx(0.46770, abs=1e-4)
    # n = 10, f = 4: s = 6 - 4 = 2, z = Phi^-1(0.8) ~ 0.8416
    assert alie_z(10, 4) == pytest.approx(0.84162, abs=1e-4)
    with pytest.raises(ValueError, match=r"f=6 of n=10 already is a majority"):
        alie_z(10, 6)


def test_alie_is_mean_minus_z_std() -> None:
    # columns: mean 3 and 4; unbiased std 2 and sqrt(12)
    own = torch.zeros(2, dtype=torch.float64)
    sent = alie(own, VIEW, 10, 4, AlieParams(z=0.5))
    assert torch.allclose(sent, torch.tensor([3 - 0.5 * 2, 4 - 0.5 * math.sqrt(12)]).double())
    default = alie(own, VIEW, 10, 4)
    z = alie_z(10, 4)
    assert torch.allclose(default, torch.tensor([3 - z * 2, 4 - z * math.sqrt(12)]).double())
    with pytest.raises(ValueError, match="alie: needs honest_view"):
        alie(own, None, 10, 4)


def test_ipm_is_minus_epsilon_times_the_honest_mean() -> None:
    own = torch.zeros(2, dtype=torch.float32)
    sent = ipm(own, VIEW, 10, 4)
    assert sent.dtype == torch.float32
    assert torch.allclose(sent, torch.tensor([-0.3, -0.4]))
    assert torch.allclose(
        ipm(own, VIEW, 10, 4, IpmParams(epsilon=10.0)), torch.tensor([-30.0, -40.0])
    )


# Honest 0, 1, 3 (mean 4/3): the attack sends 4/3 - t for the largest admissible shift t.
# min-max: |m - 3| = 5/3 + t <= max pairwise distance 3, so t = 4/3 and m = 0.
# min-sum: sum_i (m - x_i)^2 = 42/9 + 3 t^2 <= max_i sum_j (x_i - x_j)^2 = 13, so t = 5/3, m = -1/3.
LINE = torch.tensor([[0.0], [1.0], [3.0]], dtype=torch.float64)


@pytest.mark.parametrize("perturbation", ["unit-vector", "std", "sign"])
def test_min_max_and_min_sum_reach_their_bounds(perturbation: str) -> None:
    own = torch.zeros(1, dtype=torch.float64)
    params = MinMaxParams(perturbation=perturbation)
    assert min_max(own, LINE, 10, 2, params).item() == pytest.approx(0.0, abs=1e-4)
    assert min_sum(own, LINE, 10, 2, params).item() == pytest.approx(-1 / 3, abs=1e-4)


@pytest.mark.parametrize("perturbation", ["unit-vector", "std", "sign"])
def test_min_max_moves_along_the_inverse_perturbation_to_the_boundary(perturbation: str) -> None:
    view = 1.0 + torch.randn(6, 5, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    mean = view.mean(dim=0)
    direction = {
        "unit-vector": -mean / torch.linalg.vector_norm(mean),
        "std": -view.std(dim=0),
        "sign": -torch.sign(mean),
    }[perturbation]
    sent = min_max(torch.zeros(5, dtype=torch.float64), view, 10, 4, MinMaxParams(perturbation))
    gamma = float((sent - mean) @ direction / (direction @ direction))
    assert gamma > 0
    assert torch.allclose(sent, mean + gamma * direction)
    bound = float(torch.cdist(view, view).max())

    def furthest(point: torch.Tensor) -> float:
        return float(torch.linalg.vector_norm(view - point, dim=1).max())

    assert furthest(sent) <= bound + 1e-12
    assert furthest(mean + (gamma + 1e-3) * direction) > bound


def test_mimic_copies_the_honest_update_furthest_along_the_top_variance_axis() -> None:
    view = torch.tensor([[0.0, 0.0], [1.0, 0.0], [-1.0, 0.1], [10.0, 0.2]])
    own = torch.zeros(2)
    assert torch.equal(mimic(own, view, 10, 3), view[3])
    assert torch.equal(mimic(own, view, 10, 3, MimicParams(target=1)), view[1])
    with pytest.raises(ValueError, match=r"target=4 but honest_view has only h=4"):
        mimic(own, view, 10, 3, MimicParams(target=4))


def test_inputs_are_checked() -> None:
    with pytest.raises(ValueError, match="honest_view has d=2, own_update has d=3"):
        ipm(OWN, VIEW, 10, 2)
    with pytest.raises(ValueError, match=r"n=3, f=4"):
        sign_flip(OWN, None, 3, 4)
    with pytest.raises(ValueError, match="1-D tensor"):
        scaling(VIEW, None, 10, 2)


def test_parse_attack_specs() -> None:
    assert parse_attack("alie").params == AlieParams()
    spec = parse_attack("scaling:factor=10")
    assert spec.params == ScalingParams(factor=10.0) and isinstance(spec.params.factor, float)
    assert parse_attack("gaussian:std=1.0,additive=true").params == GaussianParams(
        std=1.0, additive=True
    )
    assert parse_attack("min_max:perturbation=sign").name == "min-max"
    assert parse_attack("min-sum:perturbation=unit-vector").params.perturbation == "unit-vector"
    assert torch.equal(spec.apply(OWN, None, 10, 2), 10.0 * OWN)
    assert set(POISONING_ATTACKS) == {
        "sign-flip",
        "scaling",
        "gaussian",
        "alie",
        "ipm",
        "alie-adaptive",
        "ipm-adaptive",
        "min-max",
        "min-sum",
        "mimic",
    }


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("label-flip", r"unknown poisoning attack 'label-flip'; known: alie"),
        ("scaling:size=2", r"unknown parameter\(s\) \['size'\] for attack 'scaling'"),
        ("scaling:factor=abc", r"'factor' must be float"),
        ("ipm:epsilon=-1", r"'epsilon' must be > 0"),
        ("min-max:perturbation=cosine", r"'perturbation' must be one of"),
        ("mimic:target=1.5", r"'target' must be int"),
        ("alie:z", r"not key=value"),
    ],
)
def test_parse_attack_rejects_bad_specs(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_attack(spec)
