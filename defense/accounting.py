"""Privacy accounting on top of Opacus's accountants, with state a node can report.

The sampled Gaussian mechanism (Abadi et al. 2016; Mironov, Talwar, Zhang 2019) releases
``f(batch) + N(0, (z * C)^2 I)`` where each record (or client) joins the batch with probability
``q``; ``z`` is the noise multiplier and ``C`` the L2 sensitivity. Opacus composes such steps with
its RDP accountant (Mironov 2017, conversion of Balle et al. 2020) or its PRV accountant (Gopi,
Lee, Wutschitz 2021). `PrivacyAccountant` keeps one history of ``(z, q, steps)`` per node across
rounds and serialises it to a JSON-safe dict so that a node can report eps after every round and
resume after a restart.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from phalanx.defense._validation import (
    require_delta,
    require_int_at_least,
    require_non_negative,
    require_rate,
)

if TYPE_CHECKING:  # opacus costs seconds to import: loaded where an accountant is made
    from opacus.accountants.accountant import IAccountant

ACCOUNTANTS = ("rdp", "prv")

#: Integer Rényi orders for mechanisms whose RDP bound holds at integer orders only
#: (the discrete Gaussian and Skellam bounds of Kairouz et al. 2021 and Agarwal et al. 2021).
INTEGER_RDP_ORDERS: tuple[int, ...] = (*range(2, 128), 128, 160, 192, 256, 384, 512, 1024)


def _new_opacus_accountant(mechanism: str) -> IAccountant:
    from opacus.accountants import PRVAccountant, RDPAccountant

    if mechanism == "rdp":
        return RDPAccountant()
    if mechanism == "prv":
        return PRVAccountant()
    raise ValueError(f"accountant must be one of {', '.join(ACCOUNTANTS)}, got {mechanism!r}")


class PrivacyAccountant:
    """One node's privacy ledger: every sampled Gaussian step it released, composed by Opacus.

    ``mechanism`` is ``"rdp"`` (Rényi DP, Mironov 2017) or ``"prv"`` (privacy random variables,
    Gopi et al. 2021, tighter). The history is Opacus's own list of ``(z, q, steps)``.
    """

    def __init__(self, mechanism: str = "rdp") -> None:
        self.mechanism = mechanism
        self.opacus_accountant: IAccountant = _new_opacus_accountant(mechanism)

    @property
    def history(self) -> list[tuple[float, float, int]]:
        return [(float(z), float(q), int(n)) for z, q, n in self.opacus_accountant.history]

    @property
    def steps(self) -> int:
        return sum(n for _, _, n in self.history)

    def step(self, noise_multiplier: float, sample_rate: float, steps: int = 1) -> None:
        """Record `steps` releases of the sampled Gaussian mechanism with (z, q)."""
        require_non_negative("noise_multiplier", noise_multiplier)
        require_rate("sample_rate", sample_rate)
        require_int_at_least("steps", steps, 0)
        if steps == 0:
            return
        history = self.opacus_accountant.history
        if history and history[-1][0] == noise_multiplier and history[-1][1] == sample_rate:
            z, q, n = history.pop()
            history.append((z, q, n + steps))
        else:
            history.append((float(noise_multiplier), float(sample_rate), int(steps)))

    def epsilon(self, delta: float) -> float:
        """The eps of (eps, delta)-DP spent so far (0 before any step, inf if z = 0 was used)."""
        require_delta("delta", delta)
        if not self.opacus_accountant.history:
            return 0.0
        if any(z == 0 for z, _, _ in self.opacus_accountant.history):
            return float("inf")
        with warnings.catch_warnings():
            # An optimum at the edge of Opacus's orders is still a valid (if loose) bound.
            warnings.filterwarnings("ignore", message="Optimal order is the")
            return float(self.opacus_accountant.get_epsilon(delta=delta))

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe state: ``{"mechanism": ..., "history": [[z, q, steps], ...]}``."""
        return {"mechanism": self.mechanism, "history": [list(entry) for entry in self.history]}

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> PrivacyAccountant:
        try:
            mechanism, history = state["mechanism"], state["history"]
        except (KeyError, TypeError):
            raise ValueError(
                "accountant state must be a dict with 'mechanism' and 'history'"
            ) from None
        accountant = cls(str(mechanism))
        for entry in history:
            if len(entry) != 3:
                raise ValueError(f"accountant history entry must be [z, q, steps], got {entry}")
            z, q, n = entry
            accountant.step(float(z), float(q), int(n))
        return accountant


def gaussian_epsilon(
    noise_multiplier: float,
    sample_rate: float,
    steps: int,
    delta: float,
    accountant: str = "rdp",
) -> float:
    """eps after `steps` sampled Gaussian releases with (z, q), from Opacus's accountant."""
    ledger = PrivacyAccountant(accountant)
    ledger.step(noise_multiplier, sample_rate, steps)
    return ledger.epsilon(delta)


def epsilon_from_rdp(
    rdp: Sequence[float] | np.ndarray, orders: Sequence[float], delta: float
) -> tuple[float, float]:
    """(eps, best order) from an RDP curve, by Opacus's conversion (Balle et al. 2020, Thm 21)."""
    from opacus.accountants.analysis import rdp as opacus_rdp

    require_delta("delta", delta)
    with warnings.catch_warnings():
        # An optimum at the smallest order is still a valid (if loose) bound.
        warnings.filterwarnings("ignore", message="Optimal order is the")
        eps, best_order = opacus_rdp.get_privacy_spent(
            orders=list(orders), rdp=np.asarray(rdp, dtype=np.float64), delta=delta
        )
    return float(eps), float(best_order)
