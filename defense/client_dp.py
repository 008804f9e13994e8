"""Client-level differential privacy for federated updates.

DP-FedAvg (McMahan, Ramage, Talwar, Zhang 2018; Geyer, Klein, Nabi 2017): a client's whole
update ``u`` is the unit of privacy. It is clipped to L2 norm ``C``,
``u_clip = u * min(1, C / ||u||_2)``, so that adding or removing one client moves the sum by at
most ``C``, and released with Gaussian noise ``u_clip + N(0, (z C)^2 I)``. When ``m`` of ``n``
clients take part in a round, the round is the sampled Gaussian mechanism with ``q = m / n``
(Poisson participation assumed, as in the DP-FedAvg analysis), composed over rounds by Opacus's
RDP (or PRV) accountant.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from phalanx.defense._validation import (
    require_delta,
    require_int_at_least,
    require_non_negative,
    require_positive,
)
from phalanx.defense.accounting import PrivacyAccountant


def clip_l2(update: torch.Tensor, clip_norm: float) -> torch.Tensor:
    """``u * min(1, C / ||u||_2)``: the update scaled into the L2 ball of radius C."""
    require_positive("clip", clip_norm)
    norm = float(torch.linalg.vector_norm(update.to(torch.float64)))
    if norm <= clip_norm:
        return update.clone()
    return update * (clip_norm / norm)


def add_gaussian_noise(
    update: torch.Tensor, std: float, generator: torch.Generator
) -> torch.Tensor:
    """``u + N(0, std^2 I)`` drawn from `generator` (std >= 0)."""
    require_non_negative("sigma", std)
    if std == 0:
        return update.clone()
    noise = torch.randn(update.shape, generator=generator, dtype=update.dtype)
    return update + std * noise


@dataclass(frozen=True)
class ClientLevelDP:
    """Clip-then-noise release of one client's update (DP-FedAvg's Gaussian mechanism).

    ``clip_norm`` C > 0 bounds each client's contribution; ``noise_multiplier`` z >= 0 sets the
    noise std to ``z * C``.
    """

    clip_norm: float
    noise_multiplier: float

    def __post_init__(self) -> None:
        require_positive("clip", self.clip_norm)
        require_non_negative("z", self.noise_multiplier)

    @property
    def noise_std(self) -> float:
        return self.noise_multiplier * self.clip_norm

    def privatize(self, update: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """``clip(u, C) + N(0, (z C)^2 I)``."""
        return add_gaussian_noise(clip_l2(update, self.clip_norm), self.noise_std, generator)

    def record_round(self, accountant: PrivacyAccountant, participating: int, total: int) -> None:
        """Add one round with sampling rate ``participating / total`` to `accountant`."""
        accountant.step(self.noise_multiplier, participation_rate(participating, total))


def participation_rate(participating: int, total: int) -> float:
    """``q = m / n``: the fraction of clients that take part in a round."""
    require_int_at_least("total", total, 1)
    require_int_at_least("participating", participating, 1)
    if participating > total:
        raise ValueError(f"participating must be <= total ({total}), got {participating}")
    return participating / total


def client_level_epsilon(
    noise_multiplier: float,
    participating: int,
    total: int,
    rounds: int,
    delta: float,
    accountant: str = "rdp",
) -> float:
    """eps after `rounds` DP-FedAvg rounds with z and ``q = participating / total``."""
    require_delta("delta", delta)
    ledger = PrivacyAccountant(accountant)
    ledger.step(noise_multiplier, participation_rate(participating, total), rounds)
    return ledger.epsilon(delta)
