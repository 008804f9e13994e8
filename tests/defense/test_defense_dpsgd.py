"""DP-SGD wiring: eps agrees with Opacus's own accounting; training is seeded, leaves no hooks."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch
from opacus import PrivacyEngine
from opacus.accountants import PRVAccountant, RDPAccountant

from phalanx.defense import DPSGDConfig, PrivacyAccountant, dp_train_local, dpsgd_sample_rate
from phalanx.learning.data import load_dataset
from phalanx.learning.models import build_model
from phalanx.learning.train import TrainConfig, evaluate, flatten_parameters, train_local

N_SAMPLES, BATCH = 240, 40


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    data = load_dataset("digits")
    return data.train_x[:N_SAMPLES], data.train_y[:N_SAMPLES], data.test_x, data.test_y


def fresh_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("mlp", (1, 8, 8), 10)


def test_epsilon_matches_opacus_privacy_engine(digits) -> None:
    x, y, _, _ = digits
    dp = DPSGDConfig(noise_multiplier=1.1, max_grad_norm=1.0, delta=1e-5)
    _, ours = dp_train_local(fresh_model(), x, y, TrainConfig(batch_size=BATCH), dp, seed=1)

    # Opacus used the textbook way: its own Poisson loader built from a plain DataLoader.
    model = fresh_model()
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y)), batch_size=BATCH
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        engine = PrivacyEngine(accountant="rdp")
        model, optimizer, loader = engine.make_private(
            module=model,
            optimizer=torch.optim.SGD(model.parameters(), lr=0.05),
            data_loader=loader,
            noise_multiplier=1.1,
            max_grad_norm=1.0,
        )
        for inputs, targets in loader:
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(inputs), targets).backward()
            optimizer.step()
    assert ours == pytest.approx(engine.get_epsilon(1e-5), rel=1e-12)
    assert 0 < ours < math.inf


@pytest.mark.parametrize(
    ("mechanism", "opacus_cls"), [("rdp", RDPAccountant), ("prv", PRVAccountant)]
)
def test_accountant_persists_across_rounds(digits, mechanism, opacus_cls) -> None:
    x, y, _, _ = digits
    dp = DPSGDConfig(noise_multiplier=1.0, max_grad_norm=1.0, accountant=mechanism)
    ledger = PrivacyAccountant(mechanism)
    config = TrainConfig(batch_size=BATCH)
    model = fresh_model()
    _, eps_round1 = dp_train_local(model, x, y, config, dp, seed=1, accountant=ledger)
    _, eps_round2 = dp_train_local(model, x, y, config, dp, seed=2, accountant=ledger)

    direct = opacus_cls()
    steps_per_round = math.ceil(N_SAMPLES / BATCH)
    for _ in range(2 * steps_per_round):
        direct.step(noise_multiplier=1.0, sample_rate=dpsgd_sample_rate(N_SAMPLES, BATCH))
    assert ledger.steps == 2 * steps_per_round
    assert eps_round2 > eps_round1
    assert eps_round2 == pytest.approx(direct.get_epsilon(delta=1e-5), rel=1e-9)

    restored = PrivacyAccountant.from_dict(json.loads(json.dumps(ledger.to_dict())))
    assert restored.epsilon(1e-5) == pytest.approx(eps_round2, rel=1e-12)


def test_same_seed_same_weights_and_hooks_removed(digits) -> None:
    x, y, _, _ = digits
    dp = DPSGDConfig(noise_multiplier=0.8, max_grad_norm=1.0)
    runs = []
    for seed in (5, 5, 6):
        model = fresh_model()
        dp_train_local(model, x, y, TrainConfig(batch_size=BATCH), dp, seed=seed)
        runs.append(flatten_parameters(model))
        assert all(not module._forward_hooks for module in model.modules())
        assert all(not hasattr(p, "grad_sample") for p in model.parameters())
        train_local(model, x[:10], y[:10], TrainConfig(batch_size=5), seed=0)  # still plain
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2])


def test_dp_sgd_learns_with_little_noise(digits) -> None:
    x, y, test_x, test_y = digits
    model = fresh_model()
    before, _ = evaluate(model, test_x, test_y)
    config = TrainConfig(epochs=4, batch_size=BATCH, lr=0.5, momentum=0.0)
    result, eps = dp_train_local(model, x, y, config, DPSGDConfig(noise_multiplier=0.3), seed=0)
    after, _ = evaluate(model, test_x, test_y)
    assert result.steps == 4 * math.ceil(N_SAMPLES / BATCH)
    assert after > before + 0.2
    assert eps > 10  # little noise, weak guarantee


def test_no_noise_means_infinite_epsilon(digits) -> None:
    x, y, _, _ = digits
    _, eps = dp_train_local(
        fresh_model(), x, y, TrainConfig(batch_size=BATCH), DPSGDConfig(noise_multiplier=0.0), 0
    )
    assert eps == math.inf


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"noise_multiplier": -0.5}, "noise_multiplier"),
        ({"max_grad_norm": 0.0}, "max_grad_norm"),
        ({"delta": 1.0}, "delta"),
        ({"delta": 0.0}, "delta"),
        ({"accountant": "moments"}, "accountant"),
    ],
)
def test_bad_config_refused(kwargs, field) -> None:
    with pytest.raises(ValueError, match=field):
        DPSGDConfig(**kwargs)


def test_mismatched_accountant_refused(digits) -> None:
    x, y, _, _ = digits
    with pytest.raises(ValueError, match="accountant"):
        dp_train_local(
            fresh_model(), x, y, TrainConfig(), DPSGDConfig(), 0, PrivacyAccountant("prv")
        )
