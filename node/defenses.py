"""A node's privacy defenses: the ``[defense]`` scenario table and the hooks the node calls.

`DefenseConfig` is the validated table; `NodeDefense` holds one node's state across rounds:

- `NodeDefense.train` runs local training, with DP-SGD (Abadi et al. 2016, through Opacus:
  per-sample clipping to ``max_grad_norm`` C, noise ``N(0, (z C)^2 I)``, Poisson rate
  ``q = 1 / ceil(N / B)``) when ``dpsgd`` is on, composing every round in one persistent
  `defense.PrivacyAccountant`;
- `NodeDefense.protect` applies the ``update`` spec of `defense.parse_defense` to the update before
  it leaves the node, with a generator seeded by (scenario seed, node index, round), so that a
  rerun releases bit-identical updates;
- `NodeDefense.privacy_report` gives the (eps, delta) spent so far. Client-level mechanisms
  (``clip-gauss``: DP-FedAvg, McMahan et al. 2018; hybrid ``forward``/``forward-dp``: the Gaussian
  mechanism with ``z_t = sqrt((1 - abar_t) / abar_t)``) are composed per round with sampling rate
  ``q = participating / total = 1`` (every Phalanx node trains and releases every round).
"""

from __future__ import annotations

import hashlib
import math
from typing import Annotated, Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import nn

from defense import (
    DPSGDConfig,
    ForwardNoising,
    PrivacyAccountant,
    UpdateDefense,
    dp_train_local,
    parse_defense,
    participation_rate,
)
from defense.registry import ChainDefense, ClientLevelDPDefense
from learning.train import TrainConfig, TrainResult, train_local


class DefenseConfig(BaseModel):
    """The scenario's ``[defense]`` table.

    - ``dpsgd``: train locally with DP-SGD (example-level DP) instead of plain SGD;
    - ``noise_multiplier`` z (>= 0) and ``max_grad_norm`` C (> 0): DP-SGD's noise std over C and
      per-sample clipping bound;
    - ``delta`` in (0, 1): the delta at which every eps is reported;
    - ``accountant``: Opacus's ``rdp`` or ``prv`` accountant for DP-SGD;
    - ``update``: a `defense.parse_defense` spec applied to each node's update before it leaves
      the node (``none``, ``clip-gauss:clip=C,z=Z``, ``forward:t=T``, ``forward-dp:eps=E,
      rounds=R``, ``prune:ratio=R``, ``gaussian:sigma=S``, ``clip:clip=C``, joined by ``+``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    dpsgd: bool = False
    noise_multiplier: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 1.0
    max_grad_norm: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 1.0
    delta: Annotated[float, Field(gt=0, lt=1)] = 1e-5
    accountant: Literal["rdp", "prv"] = "rdp"
    update: str = "none"

    @field_validator("update")
    @classmethod
    def _known_spec(cls, spec: str) -> str:
        parse_defense(spec)  # raises ValueError naming the bad key and its bound
        return spec

    @property
    def enabled(self) -> bool:
        return self.dpsgd or self.update.strip() != "none"

    def dpsgd_config(self) -> DPSGDConfig:
        return DPSGDConfig(
            noise_multiplier=self.noise_multiplier,
            max_grad_norm=self.max_grad_norm,
            delta=self.delta,
            accountant=self.accountant,
        )


def defense_seed(seed: int, node_index: int, round_: int) -> int:
    """The seed of the noise a node adds to its round-`round_` update (63 bits, process-stable)."""
    digest = hashlib.sha256(f"phalanx-defense/{seed}/{node_index}/{round_}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & ((1 << 63) - 1)


def _stages(defense: UpdateDefense) -> tuple[UpdateDefense, ...]:
    return defense.stages if isinstance(defense, ChainDefense) else (defense,)


def _is_hybrid_forward(stage: UpdateDefense) -> bool:
    return (
        isinstance(stage, ForwardNoising) and stage.scale == "clip" and stage.clip_norm is not None
    )


def _finite_or_none(epsilon: float) -> float | None:
    return epsilon if math.isfinite(epsilon) else None


class NodeDefense:
    """One node's defenses and privacy ledgers for a whole run.

    `num_nodes` is the number of nodes that take part in every round (the client-level sampling
    rate is ``participating / total``; every node releases an update every round, so ``q = 1``).
    """

    def __init__(self, config: DefenseConfig, node_index: int, seed: int, num_nodes: int) -> None:
        if node_index < 0 or node_index >= num_nodes:
            raise ValueError(f"node_index must be in [0, {num_nodes}), got {node_index}")
        self.config = config
        self.node_index = node_index
        self.seed = seed
        self.num_nodes = num_nodes
        self.update_defense: UpdateDefense = parse_defense(config.update)
        self.dpsgd_accountant: PrivacyAccountant | None = (
            PrivacyAccountant(config.accountant) if config.dpsgd else None
        )
        # Each clipping-and-noising stage bounds the node's contribution on its own (it clips its
        # input), and later stages are post-processing, so every such stage gets a ledger and the
        # reported client-level eps is the smallest of them.
        self._dp_stages = [
            stage
            for stage in _stages(self.update_defense)
            if isinstance(stage, ClientLevelDPDefense) or _is_hybrid_forward(stage)
        ]
        self.update_accountants = [PrivacyAccountant("rdp") for _ in self._dp_stages]
        self._protected_rounds: set[int] = set()

    # ------------------------------------------------------------------------- training
    def train(
        self,
        model: nn.Module,
        x: np.ndarray,
        y: np.ndarray,
        train_config: TrainConfig,
        seed: int,
    ) -> tuple[TrainResult, float | None]:
        """Train `model` in place; returns (result, cumulative DP-SGD eps, None without DP-SGD)."""
        if self.dpsgd_accountant is None:
            return train_local(model, x, y, train_config, seed), None
        result, epsilon = dp_train_local(
            model,
            x,
            y,
            train_config,
            self.config.dpsgd_config(),
            seed,
            accountant=self.dpsgd_accountant,
        )
        return result, epsilon

    # ------------------------------------------------------------------------- release
    def protect(self, update: np.ndarray, round_: int) -> np.ndarray:
        """The defended copy of the flat float32 `update` of round `round_` (1-based, as the node
        counts rounds); the level schedule of forward noising is indexed by ``round_ - 1``.

        Deterministic in (seed, node index, round); each round is accounted once even if the
        update is protected again (a retried round releases the same bits).
        """
        if round_ < 1:
            raise ValueError(f"round_ must be >= 1, got {round_}")
        flat = np.asarray(update)
        if flat.ndim != 1:
            raise ValueError(f"update must be a flat vector, got shape {flat.shape}")
        generator = torch.Generator().manual_seed(defense_seed(self.seed, self.node_index, round_))
        tensor = torch.from_numpy(np.array(flat, dtype=np.float32))
        released = self.update_defense(tensor, generator=generator, round_index=round_ - 1)
        if round_ not in self._protected_rounds:
            self._protected_rounds.add(round_)
            self._account_round(round_ - 1)
        return released.detach().to(torch.float32).numpy()

    def _account_round(self, round_index: int) -> None:
        rate = participation_rate(self.num_nodes, self.num_nodes)
        for stage, accountant in zip(self._dp_stages, self.update_accountants, strict=True):
            if isinstance(stage, ClientLevelDPDefense):
                stage.mechanism.record_round(accountant, self.num_nodes, self.num_nodes)
            else:
                assert isinstance(stage, ForwardNoising)
                stage.record_round(accountant, round_index, rate)

    # ------------------------------------------------------------------------- reporting
    def privacy_report(self) -> dict[str, Any]:
        """JSON-safe (eps, delta) spent so far, for the node's per-round record.

        ``dpsgd_epsilon``: example-level eps of DP-SGD (None when off or z = 0);
        ``update_epsilon``: client-level eps of the update defense (None when the spec has no DP
        guarantee, e.g. ``none``, ``prune``, ``gaussian``, ``forward`` with ``scale=rms``);
        ``epsilon``: the example-level bound, the smaller of the two (a client-level guarantee
        covers every example of the client).
        """
        delta = self.config.delta
        dpsgd_epsilon: float | None = None
        if self.dpsgd_accountant is not None and self.dpsgd_accountant.steps:
            dpsgd_epsilon = _finite_or_none(self.dpsgd_accountant.epsilon(delta))
        update_epsilon: float | None = None
        if self.update_accountants and self._protected_rounds:
            update_epsilon = _finite_or_none(
                min(accountant.epsilon(delta) for accountant in self.update_accountants)
            )
        known = [e for e in (dpsgd_epsilon, update_epsilon) if e is not None]
        return {
            "delta": delta,
            "epsilon": min(known) if known else None,
            "dpsgd_epsilon": dpsgd_epsilon,
            "dpsgd_steps": self.dpsgd_accountant.steps if self.dpsgd_accountant else 0,
            "update_epsilon": update_epsilon,
            "update_rounds": len(self._protected_rounds),
            "update_defense": self.config.update,
            "dpsgd_accountant": (
                self.dpsgd_accountant.to_dict() if self.dpsgd_accountant is not None else None
            ),
        }
