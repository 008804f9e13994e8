"""alie-adaptive and ipm-adaptive: the papers' attacks with the factor tuned against the outer rule.

Hand-checkable case: honest values -1, 0, 1, 2, 3 (mu = 1, unbiased sigma = sqrt(2.5)), n = 7
inputs of which f = 2 are the attackers' copies. Baruch et al.'s z_max = Phi^-1(5/7) = 0.566 puts
them at 1 - 0.566 sqrt(2.5) = 0.105; Xie et al.'s default epsilon = 0.1 at -0.1.
"""

from __future__ import annotations

import asyncio
import math

import numpy as np
import pytest
import torch

from phalanx.adversary.behaviours import UpdatePoisoner, parse_behaviour
from phalanx.adversary.poisoning import (
    AdaptiveParams,
    AlieParams,
    IpmParams,
    adaptive_alie_z,
    adaptive_ipm_epsilon,
    alie,
    alie_z,
    ipm,
    parse_attack,
)
from phalanx.learning.aggregation import get_rule
from phalanx.node.config import AggregationConfig

HONEST = torch.tensor([[-1.0], [0.0], [1.0], [2.0], [3.0]], dtype=torch.float64)
MU, SIGMA = 1.0, math.sqrt(2.5)
OWN = torch.zeros(1, dtype=torch.float64)
N, F = 7, 2


def _damage(rule: str, sent: torch.Tensor, honest: torch.Tensor = HONEST, f: int = F) -> float:
    """|rule(honest + f copies of sent) - honest mean|_2, the rule run with its f capped."""
    robust = get_rule(rule)
    rows = torch.cat([honest, sent.expand(f, -1)])
    rule_f = min(f, robust.max_f(rows.shape[0]))
    return float(torch.linalg.vector_norm(robust(rows, rule_f) - honest.mean(dim=0)))


def _adaptive(name: str, rule: str, honest: torch.Tensor = HONEST, n: int = N, f: int = F):
    return parse_attack(f"{name}:rule={rule}").apply(OWN, honest, n, f)


def test_fixed_factors_of_the_hand_case() -> None:
    assert alie_z(N, F) == pytest.approx(0.56595, abs=1e-5)
    assert float(alie(OWN, HONEST, N, F)) == pytest.approx(MU - 0.56595 * SIGMA, abs=1e-5)
    assert float(ipm(OWN, HONEST, N, F)) == pytest.approx(-0.1)


# (rule, default ALIE damage, adaptive ALIE damage, default IPM damage, adaptive IPM damage)
HAND = [
    # mean: (5 + 2b)/7 - 1 = 2(b - 1)/7, unbounded in the factor: the search ends at max_factor
    ("mean", 2 / 7 * 0.56595 * SIGMA, 2 / 7 * 10 * SIGMA, 2.2 / 7, 22 / 7),
    # median of 7: b <= 0 makes it 0 (distance 1); the default b = 0.105 gives 1 - 0.105
    ("median", 0.56595 * SIGMA, 1.0, 1.0, 1.0),
    # trimmed mean (trim 2): b <= -1 keeps -1, 0, 1 (distance 1); b = 0.105 keeps b, b, 1
    ("trimmed-mean", MU - (2 * (MU - 0.56595 * SIGMA) + 1) / 3, 1.0, 0.7, 1.0),
]


@pytest.mark.parametrize(("rule", "alie_fixed", "alie_best", "ipm_fixed", "ipm_best"), HAND)
def test_adaptive_factor_is_at_least_as_damaging_as_the_default(
    rule: str, alie_fixed: float, alie_best: float, ipm_fixed: float, ipm_best: float
) -> None:
    assert _damage(rule, alie(OWN, HONEST, N, F)) == pytest.approx(alie_fixed, abs=1e-4)
    assert _damage(rule, _adaptive("alie-adaptive", rule)) == pytest.approx(alie_best, abs=1e-4)
    assert _damage(rule, ipm(OWN, HONEST, N, F)) == pytest.approx(ipm_fixed, abs=1e-9)
    assert _damage(rule, _adaptive("ipm-adaptive", rule)) == pytest.approx(ipm_best, abs=1e-9)
    assert alie_best > alie_fixed and ipm_best >= ipm_fixed


def test_adaptive_factors_of_the_hand_case() -> None:
    params = {rule: AdaptiveParams(rule=rule) for rule in ("mean", "median", "trimmed-mean")}
    assert adaptive_alie_z(HONEST, OWN, N, F, params["mean"]) == 10.0
    assert adaptive_ipm_epsilon(HONEST, OWN, N, F, params["mean"]) == pytest.approx(10.0)
    # the smallest damaging factor of a plateau: b = 0 (median) and b = -1 (trimmed mean)
    assert adaptive_alie_z(HONEST, OWN, N, F, params["median"]) == pytest.approx(
        MU / SIGMA, abs=1e-3
    )
    assert adaptive_alie_z(HONEST, OWN, N, F, params["trimmed-mean"]) == pytest.approx(
        2 * MU / SIGMA, abs=1e-3
    )
    assert adaptive_ipm_epsilon(HONEST, OWN, N, F, params["trimmed-mean"]) == pytest.approx(
        1.0, abs=1e-3
    )


def test_adaptive_attacks_are_the_papers_formulas_with_the_chosen_factor() -> None:
    honest = torch.tensor([[1.0, 2.0], [3.0, 2.0], [5.0, 8.0], [0.0, 1.0]], dtype=torch.float64)
    mean, std = honest.mean(dim=0), honest.std(dim=0, correction=1)
    for rule in ("median", "krum", "geometric-median"):
        params = AdaptiveParams(rule=rule)
        z = adaptive_alie_z(honest, OWN.repeat(2), 6, 2, params)
        sent = parse_attack(f"alie-adaptive:rule={rule}").apply(OWN.repeat(2), honest, 6, 2)
        assert torch.allclose(sent, mean - z * std)  # Baruch et al.: mu - z sigma
        epsilon = adaptive_ipm_epsilon(honest, OWN.repeat(2), 6, 2, params)
        sent = parse_attack(f"ipm-adaptive:rule={rule}").apply(OWN.repeat(2), honest, 6, 2)
        assert torch.allclose(sent, -epsilon * mean)  # Xie et al.: -epsilon mu


@pytest.mark.parametrize("rule", ["median", "trimmed-mean", "krum", "geometric-median"])
def test_never_less_damaging_than_the_default_when_the_view_is_every_honest_update(
    rule: str,
) -> None:
    generator = torch.Generator().manual_seed(3)
    for _ in range(5):
        honest = torch.randn((8, 5), generator=generator, dtype=torch.float64) + 0.5
        n, f = 11, 3
        for name, fixed in (
            ("alie-adaptive", alie(OWN.repeat(5), honest, n, f)),
            ("ipm-adaptive", ipm(OWN.repeat(5), honest, n, f)),
        ):
            adaptive = parse_attack(f"{name}:rule={rule}").apply(OWN.repeat(5), honest, n, f)
            assert _damage(rule, adaptive, honest, f) >= _damage(rule, fixed, honest, f) - 1e-12


def test_colluders_with_the_same_small_view_pick_the_same_factor() -> None:
    # two colluders' benign updates stand for 8 honest inputs: the other 6 are drawn from
    # N(mu, sigma^2), seeded by the view, so every colluder holding it sends the same update
    view = torch.tensor([[0.5, -1.0, 2.0], [1.5, 0.0, 1.0]], dtype=torch.float64)
    spec = parse_attack("alie-adaptive:rule=trimmed-mean")
    first = spec.apply(OWN.repeat(3), view, 10, 2)
    assert torch.equal(first, spec.apply(OWN.repeat(3), view.clone(), 10, 2))
    z = adaptive_alie_z(view, OWN.repeat(3), 10, 2, spec.params)
    assert 0.0 <= z <= 10.0
    assert torch.allclose(first, alie(OWN.repeat(3), view, 10, 2, AlieParams(z=z)))


def test_cluster_means_are_aimed_at_as_in_alie_and_ipm() -> None:
    view = torch.tensor([[1.0, 2.0], [3.0, 2.0], [5.0, 8.0]], dtype=torch.float64)
    params = AdaptiveParams(rule="median", cluster_size=2)
    z = adaptive_alie_z(view, OWN.repeat(2), 12, 2, params)
    sent = parse_attack("alie-adaptive:rule=median,cluster_size=2").apply(
        OWN.repeat(2), view, 12, 2
    )
    assert torch.allclose(sent, alie(OWN.repeat(2), view, 12, 2, AlieParams(z=z, cluster_size=2)))
    epsilon = adaptive_ipm_epsilon(view, OWN.repeat(2), 12, 2, params)
    sent = parse_attack("ipm-adaptive:rule=median,cluster_size=2").apply(OWN.repeat(2), view, 12, 2)
    expected = ipm(OWN.repeat(2), view, 12, 2, IpmParams(epsilon=epsilon, cluster_size=2))
    assert torch.allclose(sent, expected)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("alie-adaptive:rule=nope", "unknown aggregation rule"),
        ("ipm-adaptive:rule=median,pre=nope", "pre-aggregator"),
        ("alie-adaptive:rule=median,rule_f=-1", "rule_f"),
        ("alie-adaptive:rule=median,rule_f=some", "rule_f"),
        ("ipm-adaptive:max_factor=0", "max_factor"),
        ("ipm-adaptive:evaluations=2", "evaluations"),
    ],
)
def test_bad_adaptive_specs_are_refused(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_behaviour(spec)


def test_without_a_rule_the_attack_refuses_to_guess() -> None:
    with pytest.raises(ValueError, match="needs the outer aggregation rule"):
        parse_attack("alie-adaptive").apply(OWN, HONEST, N, F)
    with pytest.raises(ValueError, match="tunes its factor against the outer aggregation rule"):
        UpdatePoisoner(parse_behaviour("ipm-adaptive"), N, F, None, 0)


def test_update_poisoner_takes_the_scenario_rule_and_the_spec_wins() -> None:
    rows = [row.numpy().astype(np.float32) for row in HONEST]

    async def view(round_: int, benign: np.ndarray) -> list[np.ndarray]:
        return rows

    aggregation = AggregationConfig(rule="trimmed-mean", pre=["clip:threshold=5", "nnm"], f="auto")
    poisoner = UpdatePoisoner(parse_behaviour("alie-adaptive"), N, F, view, 0, 1, aggregation)
    assert poisoner.attack.params == AdaptiveParams(
        rule="trimmed-mean", pre="clip:threshold=5+nnm", rule_f="auto"
    )
    explicit = UpdatePoisoner(
        parse_behaviour("alie-adaptive:rule=median"), N, F, view, 0, 1, aggregation
    )
    assert explicit.attack.params.rule == "median"
    sent = asyncio.run(
        UpdatePoisoner(parse_behaviour("alie-adaptive:rule=median"), N, F, view, 0)(
            np.zeros(1, np.float32), 1
        )
    )
    # against the median the search lands at b = 0 (z = mu / sigma, to its tolerance)
    assert float(sent[0]) == pytest.approx(0.0, abs=2e-3)
    clustered = UpdatePoisoner(parse_behaviour("ipm-adaptive"), 12, 2, view, 0, 2, aggregation)
    assert clustered.attack.params.cluster_size == 2
