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

Distributed DP inside the MPC sum (``distributed = "skellam:sigma=S,clip=C"`` or ``"dgauss:..."``;
Kairouz, Liu, Steinke 2021; Agarwal, Kairouz, Liu 2021): `DistributedNoise.encode` clips the
member's update to L2 norm C, encodes it in fixed point (scale ``2^f``) and adds, in GF(p), integer
noise of variance ``(S 2^f)^2 / k`` (k = the member's cluster size that round), so the
reconstructed cluster sum carries variance ``(S 2^f)^2``, i.e. std S in model units, and no member
ever holds the whole noise. The MPC protocols call it in place of `mpc.encode`; the accountant
composes the rounds' RDP curves (`defense.composed_distributed_epsilon`) and also reports the
degraded eps when b members of a cluster are Byzantine (or drop out) and add no noise.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import nn

from phalanx.defense import (
    MECHANISMS,
    DPSGDConfig,
    ForwardNoising,
    PrivacyAccountant,
    UpdateDefense,
    composed_distributed_epsilon,
    distributed_noise_share,
    dp_train_local,
    integer_l2_sensitivity,
    parse_defense,
    participation_rate,
)
from phalanx.defense.registry import ChainDefense, ClientLevelDPDefense
from phalanx.learning.train import TrainConfig, TrainResult, train_local

if TYPE_CHECKING:
    from phalanx.mpc import FixedPointConfig
    from phalanx.mpc.field import FieldVector

NOISE_TAIL_STDS = 10.0
"""Field headroom kept for the summed noise, in its standard deviations: a Gaussian exceeds 10
std with probability about 1.5e-23 per coordinate (Skellam tails are no heavier at the variances
used here), so a wrap-around mod p is practically impossible."""


@dataclass(frozen=True)
class DistributedDPSpec:
    """``MECHANISM:sigma=S,clip=C`` (or ``z=Z`` for ``sigma = Z * C``): the noise std S of the
    cluster sum in model units and the L2 bound C of each member's update."""

    mechanism: str
    sigma: float
    clip: float

    def sigma_int(self, fixed_point: FixedPointConfig) -> float:
        """Std of the summed noise in integer (fixed-point) units: ``S * 2^f``."""
        return self.sigma * fixed_point.scale

    @property
    def noise_multiplier(self) -> float:
        return self.sigma / self.clip


def parse_distributed(spec: str) -> DistributedDPSpec | None:
    """Parse the ``distributed`` option; ``none`` gives None. Bad input raises a ValueError that
    names the key and its bound."""
    text = spec.strip()
    if text == "none":
        return None
    mechanism, _, rest = text.partition(":")
    if mechanism not in MECHANISMS:
        raise ValueError(
            f"distributed must be 'none' or one of {', '.join(MECHANISMS)} with "
            f"':sigma=S,clip=C', got {spec!r}"
        )
    values: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, equals, value = item.partition("=")
        if not equals or key not in ("sigma", "z", "clip"):
            raise ValueError(f"distributed: unknown setting {item!r} (use sigma=S or z=Z, clip=C)")
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"distributed: {key} must be a number, got {value!r}") from None
        if not math.isfinite(number) or number <= 0:
            raise ValueError(
                f"distributed: {key} must be > 0 (a negative or zero noise is refused; "
                f"use distributed = 'none' to turn it off), got {value}"
            )
        values[key] = number
    if "clip" not in values:
        raise ValueError("distributed: clip=C (the L2 bound of each member's update) is required")
    if ("sigma" in values) == ("z" in values):
        raise ValueError("distributed: give exactly one of sigma=S or z=Z")
    sigma = values["sigma"] if "sigma" in values else values["z"] * values["clip"]
    return DistributedDPSpec(mechanism, sigma, values["clip"])


def noise_headroom(
    spec: DistributedDPSpec, fixed_point: FixedPointConfig, cluster_size: int
) -> tuple[float, int]:
    """(worst |noisy sum| in integer units, the largest magnitude that does not wrap mod p).

    The coordinates of a member's code are at most ``min(C, clip) 2^f + 1`` in magnitude (after
    L2 clipping to C no coordinate exceeds C; `mpc.encode` also clips each to ``clip``), so
    ``k (min(C, clip) 2^f + 1) + 10 S 2^f`` must stay within ``(p - 1) / 2``.
    """
    from phalanx.mpc.encoding import HALF_FIELD

    per_value = math.ceil(min(spec.clip, fixed_point.clip) * fixed_point.scale) + 1
    worst = cluster_size * per_value + NOISE_TAIL_STDS * spec.sigma_int(fixed_point)
    return worst, HALF_FIELD


def check_distributed_dp(
    spec: DistributedDPSpec, fixed_point: FixedPointConfig, cluster_size: int
) -> None:
    """Refuse settings whose noisy cluster sum could wrap mod p, and dgauss shares below the
    std of 1/2 that its accounting assumes (Kairouz et al. 2021, Thm 1)."""
    worst, limit = noise_headroom(spec, fixed_point, cluster_size)
    if worst > limit:
        raise ValueError(
            f"defense.distributed: a cluster of {cluster_size} with sigma={spec.sigma:g} at "
            f"frac_bits={fixed_point.frac_bits} gives |noisy sum| up to {worst:.4g} (members plus "
            f"{NOISE_TAIL_STDS:g} noise std), above (p-1)/2={limit}: lower sigma, clip or "
            "aggregation.frac_bits"
        )
    member_std = spec.sigma_int(fixed_point) / math.sqrt(cluster_size)
    if spec.mechanism == "dgauss" and member_std < 0.5:
        raise ValueError(
            f"defense.distributed: dgauss needs each member's integer std >= 1/2, got "
            f"{member_std:.3g} (sigma * 2^frac_bits / sqrt(k)): raise sigma or frac_bits"
        )


def distributed_seed(seed: int, node_index: int, round_: int) -> int:
    """Seed of the integer noise a node adds inside the MPC sum in round `round_` (63 bits)."""
    text = f"phalanx-distributed-dp/{seed}/{node_index}/{round_}"
    digest = hashlib.sha256(text.encode()).digest()
    return int.from_bytes(digest[:8], "big") & ((1 << 63) - 1)


class DistributedNoise:
    """One node's share of the distributed noise, and the ledger of the rounds it noised.

    Deterministic in (scenario seed, node index, round): a rerun adds the same integers.
    """

    def __init__(self, spec: DistributedDPSpec, seed: int, node_index: int, delta: float) -> None:
        self.spec = spec
        self.seed = seed
        self.node_index = node_index
        self.delta = delta
        self.cluster_sizes: dict[int, int] = {}
        self._accounting: tuple[float, float, int] | None = None  # scale, sigma_int, dim

    def noise_share(
        self, dim: int, fixed_point: FixedPointConfig, cluster_size: int, round_: int
    ) -> np.ndarray:
        """This member's int64 noise of round `round_`: variance ``(S 2^f)^2 / k``."""
        generator = np.random.default_rng(distributed_seed(self.seed, self.node_index, round_))
        return distributed_noise_share(
            dim, cluster_size, self.spec.sigma_int(fixed_point), self.spec.mechanism, generator
        )

    def encode(
        self, update: np.ndarray, fixed_point: FixedPointConfig, cluster_size: int, round_: int
    ) -> FieldVector:
        """Clip to L2 norm C, encode in fixed point, add this member's noise share mod p."""
        from phalanx.mpc import encode
        from phalanx.mpc.field import PRIME, add

        check_distributed_dp(self.spec, fixed_point, cluster_size)
        values = np.asarray(update, dtype=np.float64)
        norm = float(np.linalg.norm(values))
        if norm > self.spec.clip:
            values = values * (self.spec.clip / norm)
        codes = encode(values, fixed_point)
        noise = self.noise_share(values.size, fixed_point, cluster_size, round_)
        self.cluster_sizes[round_] = cluster_size
        self._accounting = (fixed_point.scale, self.spec.sigma_int(fixed_point), values.size)
        return add(codes, (noise % PRIME).astype(np.uint32))

    def epsilon(self, byzantine: int = 0) -> float | None:
        """eps at `delta` over the rounds noised so far, ``byzantine`` silent members per
        cluster; None before the first round or when no noise reaches some sum."""
        if not self.cluster_sizes or self._accounting is None:
            return None
        scale, sigma_int, dim = self._accounting
        sizes: Sequence[int] = [self.cluster_sizes[r] for r in sorted(self.cluster_sizes)]
        epsilon = composed_distributed_epsilon(
            self.spec.mechanism,
            sigma_int,
            integer_l2_sensitivity(self.spec.clip, scale, dim),
            dim,
            sizes,
            self.delta,
            byzantine,
        )
        return _finite_or_none(epsilon)

    def report(self) -> dict[str, Any]:
        largest = max(self.cluster_sizes.values(), default=0)
        return {
            "mechanism": self.spec.mechanism,
            "sigma": self.spec.sigma,
            "clip": self.spec.clip,
            "noise_multiplier": self.spec.noise_multiplier,
            "rounds": len(self.cluster_sizes),
            "cluster_sizes": [self.cluster_sizes[r] for r in sorted(self.cluster_sizes)],
            "epsilon": self.epsilon(0),
            "epsilon_if_byzantine": {str(b): self.epsilon(b) for b in range(1, largest)},
        }


class DefenseConfig(BaseModel):
    """The scenario's ``[defense]`` table.

    - ``dpsgd``: train locally with DP-SGD (example-level DP) instead of plain SGD;
    - ``noise_multiplier`` z (>= 0) and ``max_grad_norm`` C (> 0): DP-SGD's noise std over C and
      per-sample clipping bound;
    - ``delta`` in (0, 1): the delta at which every eps is reported;
    - ``accountant``: Opacus's ``rdp`` or ``prv`` accountant for DP-SGD;
    - ``update``: a `defense.parse_defense` spec applied to each node's update before it leaves
      the node (``none``, ``clip-gauss:clip=C,z=Z``, ``forward:t=T``, ``forward-dp:eps=E,
      rounds=R``, ``prune:ratio=R``, ``gaussian:sigma=S``, ``clip:clip=C``, joined by ``+``);
    - ``distributed``: ``none``, or distributed DP inside the MPC cluster sum,
      ``skellam:sigma=S,clip=C`` or ``dgauss:sigma=S,clip=C`` (``z=Z`` instead of ``sigma``
      means ``S = Z C``); needs ``aggregation.secure`` on (see `check_distributed_dp`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    dpsgd: bool = False
    noise_multiplier: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 1.0
    max_grad_norm: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 1.0
    delta: Annotated[float, Field(gt=0, lt=1)] = 1e-5
    accountant: Literal["rdp", "prv"] = "rdp"
    update: str = "none"
    distributed: str = "none"

    @field_validator("update")
    @classmethod
    def _known_spec(cls, spec: str) -> str:
        parse_defense(spec)  # raises ValueError naming the bad key and its bound
        return spec

    @field_validator("distributed")
    @classmethod
    def _known_distributed(cls, spec: str) -> str:
        parse_distributed(spec)
        return spec

    @property
    def enabled(self) -> bool:
        return self.dpsgd or self.update.strip() != "none" or self.distributed_spec is not None

    @property
    def distributed_spec(self) -> DistributedDPSpec | None:
        return parse_distributed(self.distributed)

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
        spec = config.distributed_spec
        self.distributed: DistributedNoise | None = (
            DistributedNoise(spec, seed, node_index, config.delta) if spec is not None else None
        )

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
        ``distributed``: the distributed-DP ledger (None when off): eps of the cluster sums so
        far with every member noising, and ``epsilon_if_byzantine[b]`` with b silent members;
        ``epsilon``: the example-level bound, the smallest of these (a client-level guarantee
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
        distributed = self.distributed.report() if self.distributed is not None else None
        distributed_epsilon = distributed["epsilon"] if distributed is not None else None
        known = [e for e in (dpsgd_epsilon, update_epsilon, distributed_epsilon) if e is not None]
        return {
            "delta": delta,
            "epsilon": min(known) if known else None,
            "dpsgd_epsilon": dpsgd_epsilon,
            "dpsgd_steps": self.dpsgd_accountant.steps if self.dpsgd_accountant else 0,
            "update_epsilon": update_epsilon,
            "update_rounds": len(self._protected_rounds),
            "update_defense": self.config.update,
            "distributed": distributed,
            "dpsgd_accountant": (
                self.dpsgd_accountant.to_dict() if self.dpsgd_accountant is not None else None
            ),
        }
