"""DP-SGD for local training through Opacus (Abadi et al. 2016).

Each step draws a Poisson sample (every record joins with probability ``q = 1 / ceil(N / B)``, as
Opacus computes it), clips every per-sample gradient to L2 norm ``C`` (``max_grad_norm``), sums,
adds ``N(0, (z C)^2 I)`` and divides by the expected batch size ``q N``; the step is an
instance of the sampled Gaussian mechanism and is recorded in the node's `PrivacyAccountant`.

Determinism: the Poisson sampler and the noise each draw from their own ``torch.Generator`` seeded
from `seed`, so the same model, data and seed give bit-identical weights on the same machine and
torch build. Opacus's ``secure_mode`` (a CSPRNG that cannot be seeded) is therefore off; a
deployment that needs protection against floating-point attacks on the noise (Mironov 2012) must
turn it on and give up reproducibility.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import TensorDataset

from phalanx.defense._validation import require_delta, require_non_negative, require_positive
from phalanx.defense.accounting import ACCOUNTANTS, PrivacyAccountant
from phalanx.learning.train import TrainConfig, TrainResult


@dataclass(frozen=True)
class DPSGDConfig:
    """DP-SGD settings.

    - ``noise_multiplier`` z: noise std divided by the clipping bound (z >= 0; 0 means no noise
      and an infinite eps).
    - ``max_grad_norm`` C: per-sample gradient L2 bound (> 0).
    - ``poisson_sampling``: Poisson batches, which the accountant assumes; False keeps shuffled
      fixed-size batches (the guarantee is then only an approximation, as Opacus warns).
    - ``delta``: the delta at which eps is reported, in (0, 1).
    - ``accountant``: ``"rdp"`` or ``"prv"``.
    """

    noise_multiplier: float = 1.0
    max_grad_norm: float = 1.0
    poisson_sampling: bool = True
    delta: float = 1e-5
    accountant: str = "rdp"

    def __post_init__(self) -> None:
        require_non_negative("noise_multiplier", self.noise_multiplier)
        require_positive("max_grad_norm", self.max_grad_norm)
        require_delta("delta", self.delta)
        if self.accountant not in ACCOUNTANTS:
            raise ValueError(
                f"accountant must be one of {', '.join(ACCOUNTANTS)}, got {self.accountant!r}"
            )


def dpsgd_sample_rate(num_samples: int, batch_size: int) -> float:
    """Opacus's Poisson rate for a loader of `batch_size`: ``1 / ceil(N / B)``."""
    return 1.0 / math.ceil(num_samples / batch_size)


def dp_train_local(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    train_config: TrainConfig,
    dp_config: DPSGDConfig,
    seed: int,
    accountant: PrivacyAccountant | None = None,
) -> tuple[TrainResult, float]:
    """Train `model` in place with DP-SGD; returns (result, eps spent so far at dp_config.delta).

    Pass the node's persistent `accountant` to compose over rounds (it is updated in place); a
    fresh one is used otherwise. The optimiser is SGD with the momentum and weight decay of
    `train_config` wrapped in Opacus's ``DPOptimizer``; ``ceil(N / B)`` steps per epoch.
    """
    # opacus takes seconds to import: only runs that train with DP-SGD pay for it
    from opacus import PrivacyEngine
    from opacus.data_loader import DPDataLoader
    from opacus.validators import ModuleValidator

    if accountant is None:
        accountant = PrivacyAccountant(dp_config.accountant)
    elif accountant.mechanism != dp_config.accountant:
        raise ValueError(
            f"accountant is {accountant.mechanism!r} but dp_config.accountant is "
            f"{dp_config.accountant!r}"
        )
    if len(x) == 0:
        return TrainResult(loss=float("nan"), samples=0, steps=0), accountant.epsilon(
            dp_config.delta
        )
    model.train()
    problems = ModuleValidator.validate(model, strict=False)
    if problems:
        raise ValueError(f"model is not DP-SGD compatible (Opacus): {problems[0]}")

    sampling_generator = torch.Generator().manual_seed(seed)
    noise_generator = torch.Generator().manual_seed(seed + 0x5EED)
    dataset = TensorDataset(
        torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.ascontiguousarray(y))
    )
    sample_rate = dpsgd_sample_rate(len(dataset), train_config.batch_size)
    loader: torch.utils.data.DataLoader
    if dp_config.poisson_sampling:
        loader = DPDataLoader(dataset, sample_rate=sample_rate, generator=sampling_generator)
    else:
        loader = torch.utils.data.DataLoader(
            dataset,
            batch_size=train_config.batch_size,
            shuffle=True,
            generator=sampling_generator,
        )
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=train_config.lr,
        momentum=train_config.momentum,
        weight_decay=train_config.weight_decay,
    )
    with warnings.catch_warnings():
        # Secure RNG is off on purpose (see the module docstring).
        warnings.filterwarnings("ignore", message="Secure RNG turned off")
        engine = PrivacyEngine(accountant=dp_config.accountant)
    engine.accountant = accountant.opacus_accountant
    # Poisson batches come from our seeded DPDataLoader, so Opacus must not rebuild the loader.
    hooks, dp_optimizer, dp_loader = engine.make_private(
        module=model,
        optimizer=optimizer,
        data_loader=loader,
        noise_multiplier=dp_config.noise_multiplier,
        max_grad_norm=dp_config.max_grad_norm,
        poisson_sampling=False,
        noise_generator=noise_generator,
        wrap_model=False,
    )
    loss_fn = nn.CrossEntropyLoss()
    total_loss, steps, loss_steps = 0.0, 0, 0
    try:
        with warnings.catch_warnings():
            # Opacus's hooks fire on the first layer, whose input needs no gradient: harmless.
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            for _epoch in range(train_config.epochs):
                for inputs, targets in dp_loader:
                    dp_optimizer.zero_grad(set_to_none=True)
                    # An empty Poisson batch still takes a (pure-noise) step, as the accountant
                    # assumes; its NaN mean loss never reaches the weights: Opacus replaces each
                    # gradient by the clipped per-sample sum (empty here) plus noise.
                    loss = loss_fn(model(inputs), targets)
                    loss.backward()
                    dp_optimizer.step()
                    steps += 1
                    if len(inputs):
                        total_loss += float(loss.detach())
                        loss_steps += 1
    finally:
        hooks.cleanup()
    result = TrainResult(loss=total_loss / max(loss_steps, 1), samples=len(x), steps=steps)
    return result, accountant.epsilon(dp_config.delta)
