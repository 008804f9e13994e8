"""ALIE and IPM aimed at the cluster means the robust rule aggregates (cluster_size k > 1)."""

from __future__ import annotations

import asyncio
import math
from statistics import NormalDist

import numpy as np
import pytest
import torch

from phalanx.adversary.behaviours import UpdatePoisoner, parse_behaviour
from phalanx.adversary.poisoning import (
    AlieParams,
    IpmParams,
    aggregated_inputs,
    alie,
    alie_z,
    ipm,
    parse_attack,
)

# columns: mean 3 and 4; unbiased std 2 and sqrt(12)
VIEW = torch.tensor([[1.0, 2.0], [3.0, 2.0], [5.0, 8.0]], dtype=torch.float64)
MEAN = torch.tensor([3.0, 4.0], dtype=torch.float64)
STD = torch.tensor([2.0, math.sqrt(12.0)], dtype=torch.float64)
OWN = torch.zeros(2, dtype=torch.float64)


def test_aggregated_inputs_follow_the_cluster_count() -> None:
    # clustering.strategies makes max(1, n // k) clusters; each Byzantine node in its own one
    assert aggregated_inputs(12, 2, 1) == (12, 2)
    assert aggregated_inputs(12, 2, 2) == (6, 2)
    assert aggregated_inputs(13, 3, 2) == (6, 3)
    assert aggregated_inputs(4, 3, 2) == (2, 2)
    assert aggregated_inputs(3, 1, 5) == (1, 1)


def test_alie_with_clusters_moves_the_cluster_mean_to_mu_minus_z_sigma_c() -> None:
    k = 2
    sent = alie(OWN, VIEW, 12, 2, AlieParams(cluster_size=k))
    # 6 cluster means, 2 attacked: s = 4 - 2 = 2, z = Phi^-1(4/6) ~ 0.4307
    z = NormalDist().inv_cdf(4 / 6)
    assert z == pytest.approx(alie_z(6, 2))
    assert torch.allclose(sent, MEAN - math.sqrt(k) * z * STD)
    # the cluster mean (attacker + one honest member at mu) sits z cluster-stds below mu
    cluster_mean = (sent + MEAN) / k
    assert torch.allclose(cluster_mean, MEAN - z * STD / math.sqrt(k))
    # k = 1 is the paper's attack with z from all n inputs
    assert torch.allclose(alie(OWN, VIEW, 12, 2), MEAN - alie_z(12, 2) * STD)
    # a fixed z keeps the sqrt(k) compensation
    fixed = alie(OWN, VIEW, 12, 2, AlieParams(z=1.0, cluster_size=3))
    assert torch.allclose(fixed, MEAN - math.sqrt(3) * STD)


def test_alie_with_clusters_uses_s_equal_one_when_attacked_clusters_are_a_majority() -> None:
    # 8 nodes in 4 clusters, 3 attackers: alie_z(4, 3) is undefined, so f' = 4 // 2 = 2 (s = 1)
    with pytest.raises(ValueError, match="already is a majority"):
        alie_z(4, 3)
    sent = alie(OWN, VIEW, 8, 3, AlieParams(cluster_size=2))
    z = NormalDist().inv_cdf(3 / 4)
    assert torch.allclose(sent, MEAN - math.sqrt(2) * z * STD)


def test_ipm_with_clusters_makes_the_cluster_mean_minus_epsilon_mu() -> None:
    for k in (2, 3):
        sent = ipm(OWN, VIEW, 12, 2, IpmParams(epsilon=0.5, cluster_size=k))
        assert torch.allclose(sent, -k * 0.5 * MEAN - (k - 1) * MEAN)
        assert torch.allclose((sent + (k - 1) * MEAN) / k, -0.5 * MEAN)
    assert torch.allclose(ipm(OWN, VIEW, 12, 2, IpmParams(epsilon=0.5)), -0.5 * MEAN)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("alie:cluster_size=0", r"'cluster_size' must be an integer >= 1"),
        ("ipm:cluster_size=-2", r"'cluster_size' must be an integer >= 1"),
        ("alie:cluster_size=1.5", r"'cluster_size' must be int"),
    ],
)
def test_bad_cluster_size_is_refused(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_attack(spec)


def _poison(spec: str, cluster_size: int) -> np.ndarray:
    rows = [row.numpy().astype(np.float32) for row in VIEW]

    async def colluder_view(round_: int, benign: np.ndarray) -> list[np.ndarray]:
        return rows

    poisoner = UpdatePoisoner(
        parse_behaviour(spec), 12, 2, colluder_view, seed=3, cluster_size=cluster_size
    )
    return asyncio.run(poisoner(np.zeros(2, dtype=np.float32), 1))


def test_update_poisoner_hands_the_scenario_cluster_size_to_alie_and_ipm() -> None:
    clustered = torch.from_numpy(_poison("alie", 2)).double()
    expected = MEAN - math.sqrt(2) * alie_z(6, 2) * STD
    assert torch.allclose(clustered, expected, atol=1e-5)
    paper = torch.from_numpy(_poison("alie", 1)).double()
    assert torch.allclose(paper, MEAN - alie_z(12, 2) * STD, atol=1e-5)
    # an explicit cluster_size in the behaviour spec wins over the scenario's
    explicit = torch.from_numpy(_poison("alie:cluster_size=1", 2)).double()
    assert torch.allclose(explicit, paper, atol=1e-6)
    ipm_sent = torch.from_numpy(_poison("ipm", 2)).double()
    assert torch.allclose(ipm_sent, -0.2 * MEAN - MEAN, atol=1e-5)
    # attacks without a cluster_size parameter are unchanged
    assert np.array_equal(_poison("sign-flip", 2), np.zeros(2, dtype=np.float32))


def test_update_poisoner_sends_the_benign_update_when_the_view_is_too_small() -> None:
    # one colluder's update missed the deadline: ALIE needs 2 rows, so the node stays honest
    async def short_view(round_: int, benign: np.ndarray) -> list[np.ndarray]:
        return [benign]

    benign = np.array([0.5, -1.5], dtype=np.float32)
    alie_poisoner = UpdatePoisoner(parse_behaviour("alie"), 12, 2, short_view, seed=3)
    assert np.array_equal(asyncio.run(alie_poisoner(benign, 1)), benign)
    # IPM works from one row: -0.1 * benign
    ipm_poisoner = UpdatePoisoner(parse_behaviour("ipm"), 12, 2, short_view, seed=3)
    assert np.allclose(asyncio.run(ipm_poisoner(benign, 1)), -0.1 * benign)
