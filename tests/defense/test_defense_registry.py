"""Gradient pruning, the defense spec parser and the curated public API."""

from __future__ import annotations

import math

import pytest
import torch

from phalanx import defense
from phalanx.defense import (
    DEFENSES,
    ForwardNoising,
    apply_to_parameters,
    parse_defense,
    prune_top_k,
)


def test_prune_keeps_the_largest_entries() -> None:
    update = torch.tensor([0.1, -5.0, 0.3, 2.0, -0.2, 0.0, 4.0, -0.05, 1.0, 0.4])
    pruned = prune_top_k(update, 0.7)  # zero floor(0.7 * 10) = 7
    assert torch.equal(pruned, torch.tensor([0, -5.0, 0, 2.0, 0, 0, 4.0, 0, 0, 0]))
    assert torch.equal(prune_top_k(update, 0.0), update)
    big = torch.randn(1000, generator=torch.Generator().manual_seed(0))
    kept = prune_top_k(big, 0.9)
    assert int((kept != 0).sum()) == 1000 - math.floor(0.9 * 1000)
    assert float(kept.abs()[kept != 0].min()) >= float(big.abs()[kept == 0].max())


def test_every_spec_parses_to_a_working_defense() -> None:
    update = torch.linspace(-2, 2, 400)
    examples = {
        "none": "none",
        "gaussian": "gaussian:sigma=0.1",
        "clip": "clip:clip=1",
        "clip-gauss": "clip-gauss:clip=1,z=0.5",
        "prune": "prune:ratio=0.5",
        "forward": "forward:t=200,schedule=linear,levels=decreasing,t_min=50,rounds=5",
        "forward-dp": "forward-dp:eps=5,rounds=10,clip=2",
    }
    assert set(examples) == set(DEFENSES)
    for spec in examples.values():
        defended = parse_defense(spec)(update, generator=torch.Generator().manual_seed(1))
        again = parse_defense(spec)(update, generator=torch.Generator().manual_seed(1))
        assert defended.shape == update.shape and torch.equal(defended, again)
    assert torch.equal(parse_defense("none")(update, generator=torch.Generator()), update)
    clipped = parse_defense("clip:clip=1")(update, generator=torch.Generator())
    assert float(clipped.norm()) == pytest.approx(1.0, rel=1e-6)
    assert int((parse_defense("prune:ratio=0.5")(update, generator=torch.Generator()) == 0).sum())


def test_chain_applies_left_to_right() -> None:
    update = torch.linspace(-2, 2, 400)
    chained = parse_defense("prune:ratio=0.75+clip:clip=1")(update, generator=torch.Generator())
    assert int((chained != 0).sum()) == 100
    assert float(chained.norm()) == pytest.approx(1.0, rel=1e-6)


def test_parameters_are_clipped_as_one_vector() -> None:
    tensors = [torch.full((3, 4), 1.0), torch.full((5,), 1.0)]
    out = apply_to_parameters(parse_defense("clip:clip=1"), tensors, generator=torch.Generator())
    assert [t.shape for t in out] == [t.shape for t in tensors]
    total = math.sqrt(sum(float(t.pow(2).sum()) for t in out))
    assert total == pytest.approx(1.0, rel=1e-6)
    assert float(out[0][0, 0]) == pytest.approx(1 / math.sqrt(17), rel=1e-6)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("gaussian:sigma=-0.1", "sigma must be >= 0"),
        ("clip-gauss:clip=1,z=-1", "z must be >= 0"),
        ("clip-gauss:clip=0,z=1", "clip must be > 0"),
        ("prune:ratio=1.0", r"ratio must be in \[0, 1\)"),
        ("prune:ratio=-0.1", r"ratio must be in \[0, 1\)"),
        ("forward-dp:eps=2,rounds=5,delta=1", r"delta must be in \(0, 1\)"),
        ("forward-dp:eps=-2,rounds=5", "eps must be > 0"),
        ("forward:t=5000", "t must be <= steps"),
        ("forward:t=10,scale=loud", "scale must be rms, clip or a number"),
        ("forward:t=ten", "t must be an integer"),
        ("gaussian:sigma=0.1,mu=2", "unknown key 'mu'"),
        ("gaussian", "missing required key 'sigma'"),
        ("gaussian:sigma", "key=value"),
        ("blur:radius=2", "unknown defense 'blur'"),
        ("prune:ratio=0.5+", "empty defense spec"),
    ],
)
def test_bad_specs_are_refused(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_defense(spec)


def test_public_api_is_what_all_lists() -> None:
    for name in defense.__all__:
        assert hasattr(defense, name), name
    public = {name for name in vars(defense) if not name.startswith("_")}
    submodules = {"accounting", "client_dp", "distributed_dp", "dpsgd", "forward_noise",
                  "pruning", "registry"}  # fmt: skip
    assert public - submodules == set(defense.__all__)


def test_forward_defaults_to_the_measured_decreasing_schedule() -> None:
    """docs/defenses.md (bench forward-schedule): decreasing from t to t/2 unless told otherwise."""
    defense = parse_defense("forward:t=800,rounds=10")
    assert isinstance(defense, ForwardNoising)
    assert [defense.levels.level(r) for r in (0, 9)] == [800, 400]
    single = parse_defense("forward:t=800")
    assert isinstance(single, ForwardNoising) and single.levels.level(5) == 800  # t throughout
    constant = parse_defense("forward:t=800,rounds=10,levels=constant")
    assert isinstance(constant, ForwardNoising) and constant.levels.level(9) == 800
    calibrated = parse_defense("forward-dp:eps=8,rounds=10")
    assert isinstance(calibrated, ForwardNoising) and calibrated.levels.kind == "decreasing"
    assert calibrated.levels.level(0) > calibrated.levels.level(9)
