"""Defenses named by a short spec, shared by the attack CLI and the node.

Grammar: ``name[:key=value[,key=value...]]``, several joined by ``+`` apply left to right
(``"prune:ratio=0.5+clip-gauss:clip=1,z=1"``). Every defense is a callable on a flat update tensor
(``defense(update, generator=g, round_index=r)``) and, through `apply_to_parameters`, on a list of
parameter tensors (flattened together, so clipping sees the norm of the whole update).

- ``none``: ``u`` unchanged.
- ``gaussian:sigma=S`` (S >= 0): ``u + N(0, S^2 I)``, no clipping and no DP guarantee.
- ``clip:clip=C`` (C > 0): ``u * min(1, C / ||u||)``.
- ``clip-gauss:clip=C,z=Z`` (C > 0, Z >= 0): DP-FedAvg's ``clip(u, C) + N(0, (Z C)^2 I)``.
- ``prune:ratio=R`` (0 <= R < 1): zero the fraction R of smallest-magnitude entries.
- ``forward:t=T0[,schedule=cosine|linear][,steps=1000][,levels=decreasing|constant|increasing]
  [,t_min=T0/2][,rounds=1][,scale=rms|clip|NUMBER][,clip=C]``: diffusion forward noising. The
  default ``decreasing`` (T0 in round 1 down to t_min in round ``rounds``) is the schedule that
  ``phalanx bench forward-schedule`` supports (docs/defenses.md); with ``rounds=1`` every
  schedule keeps T0.
- ``forward-dp:eps=E,rounds=R[,delta=1e-5][,clip=1][,schedule=cosine][,steps=1000]
  [,levels=decreasing][,span=100][,sample_rate=1]``: hybrid forward noising calibrated to
  (E, delta).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from phalanx.defense._validation import require_non_negative, require_positive
from phalanx.defense.client_dp import ClientLevelDP, add_gaussian_noise, clip_l2
from phalanx.defense.forward_noise import (
    ForwardNoising,
    NoiseLevelSchedule,
    calibrate_forward_noising,
)
from phalanx.defense.pruning import prune_top_k


class UpdateDefense(Protocol):
    """A transformation of one flat update; randomness only from `generator`."""

    def __call__(
        self, update: torch.Tensor, *, generator: torch.Generator, round_index: int = 0
    ) -> torch.Tensor: ...


@dataclass(frozen=True)
class NoDefense:
    def __call__(
        self, update: torch.Tensor, *, generator: torch.Generator, round_index: int = 0
    ) -> torch.Tensor:
        return update.clone()


@dataclass(frozen=True)
class GaussianNoiseDefense:
    """``u + N(0, sigma^2 I)`` without clipping (no DP guarantee: the sensitivity is unbounded)."""

    sigma: float

    def __post_init__(self) -> None:
        require_non_negative("sigma", self.sigma)

    def __call__(
        self, update: torch.Tensor, *, generator: torch.Generator, round_index: int = 0
    ) -> torch.Tensor:
        return add_gaussian_noise(update, self.sigma, generator)


@dataclass(frozen=True)
class ClipDefense:
    clip_norm: float

    def __post_init__(self) -> None:
        require_positive("clip", self.clip_norm)

    def __call__(
        self, update: torch.Tensor, *, generator: torch.Generator, round_index: int = 0
    ) -> torch.Tensor:
        return clip_l2(update, self.clip_norm)


@dataclass(frozen=True)
class ClientLevelDPDefense:
    mechanism: ClientLevelDP

    def __call__(
        self, update: torch.Tensor, *, generator: torch.Generator, round_index: int = 0
    ) -> torch.Tensor:
        return self.mechanism.privatize(update, generator)


@dataclass(frozen=True)
class PruneDefense:
    ratio: float

    def __post_init__(self) -> None:
        prune_top_k(torch.zeros(1), self.ratio)  # validates ratio

    def __call__(
        self, update: torch.Tensor, *, generator: torch.Generator, round_index: int = 0
    ) -> torch.Tensor:
        return prune_top_k(update, self.ratio)


@dataclass(frozen=True)
class ChainDefense:
    """Defenses applied left to right, all drawing from the same generator."""

    stages: tuple[UpdateDefense, ...]

    def __call__(
        self, update: torch.Tensor, *, generator: torch.Generator, round_index: int = 0
    ) -> torch.Tensor:
        for stage in self.stages:
            update = stage(update, generator=generator, round_index=round_index)
        return update


def apply_to_parameters(
    defense: UpdateDefense,
    tensors: Sequence[torch.Tensor],
    *,
    generator: torch.Generator,
    round_index: int = 0,
) -> list[torch.Tensor]:
    """Apply `defense` to the concatenation of `tensors` and split the result back."""
    if not tensors:
        return []
    flat = torch.cat([t.detach().reshape(-1) for t in tensors])
    defended = defense(flat, generator=generator, round_index=round_index)
    out, offset = [], 0
    for tensor in tensors:
        n = tensor.numel()
        out.append(defended[offset : offset + n].reshape(tensor.shape).to(tensor.dtype))
        offset += n
    return out


# ---------------------------------------------------------------------------------------------
# Parsing


def _number(name: str, raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {raw!r}") from None


def _integer(name: str, raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from None


def _text(name: str, raw: str) -> str:
    return raw


def _scale(name: str, raw: str) -> str | float:
    if raw in ("rms", "clip"):
        return raw
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{name} must be rms, clip or a number > 0, got {raw!r}") from None


_Field = tuple[Callable[[str, str], Any], Any]  # (converter, default; _REQUIRED if none)
_REQUIRED = object()


def _build_forward(v: dict[str, Any]) -> UpdateDefense:
    kind = v["levels"]
    # Default span: t down to t/2, the setting measured by bench/forward_schedule.py.
    t_min = v["t"] // 2 if v["t_min"] is None else v["t_min"]
    if kind == "constant":
        t_min = v["t"]
    return ForwardNoising(
        levels=NoiseLevelSchedule(kind=kind, t_max=v["t"], t_min=t_min, rounds=v["rounds"]),
        diffusion=v["schedule"],
        num_steps=v["steps"],
        scale=v["scale"],
        clip_norm=v["clip"],
    )


def _build_forward_dp(v: dict[str, Any]) -> UpdateDefense:
    return calibrate_forward_noising(
        target_epsilon=v["eps"],
        delta=v["delta"],
        rounds=v["rounds"],
        clip_norm=v["clip"],
        diffusion=v["schedule"],
        num_steps=v["steps"],
        levels=v["levels"],
        span=v["span"],
        sample_rate=v["sample_rate"],
    )


_SPECS: dict[str, tuple[dict[str, _Field], Callable[[dict[str, Any]], UpdateDefense]]] = {
    "none": ({}, lambda v: NoDefense()),
    "gaussian": ({"sigma": (_number, _REQUIRED)}, lambda v: GaussianNoiseDefense(v["sigma"])),
    "clip": (
        {"clip": (_number, _REQUIRED)},
        lambda v: ClipDefense(v["clip"]),
    ),
    "clip-gauss": (
        {"clip": (_number, _REQUIRED), "z": (_number, _REQUIRED)},
        lambda v: ClientLevelDPDefense(ClientLevelDP(v["clip"], v["z"])),
    ),
    "prune": ({"ratio": (_number, _REQUIRED)}, lambda v: PruneDefense(v["ratio"])),
    "forward": (
        {
            "t": (_integer, _REQUIRED),
            "schedule": (_text, "cosine"),
            "steps": (_integer, 1000),
            "levels": (_text, "decreasing"),
            "t_min": (_integer, None),
            "rounds": (_integer, 1),
            "scale": (_scale, "rms"),
            "clip": (_number, None),
        },
        _build_forward,
    ),
    "forward-dp": (
        {
            "eps": (_number, _REQUIRED),
            "delta": (_number, 1e-5),
            "rounds": (_integer, _REQUIRED),
            "clip": (_number, 1.0),
            "schedule": (_text, "cosine"),
            "steps": (_integer, 1000),
            "levels": (_text, "decreasing"),
            "span": (_integer, 100),
            "sample_rate": (_number, 1.0),
        },
        _build_forward_dp,
    ),
}

DEFENSES = tuple(_SPECS)


def _parse_one(spec: str) -> UpdateDefense:
    name, _, body = spec.strip().partition(":")
    name = name.strip()
    if name not in _SPECS:
        raise ValueError(f"unknown defense {name!r}; known: {', '.join(DEFENSES)}")
    fields, build = _SPECS[name]
    raw: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in body.split(","))):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep:
            raise ValueError(f"{name}: expected key=value, got {item!r}")
        if key not in fields:
            known = ", ".join(fields) or "none"
            raise ValueError(f"{name}: unknown key {key!r}; known keys: {known}")
        if key in raw:
            raise ValueError(f"{name}: key {key!r} given twice")
        raw[key] = value.strip()
    values: dict[str, Any] = {}
    for key, (convert, default) in fields.items():
        if key in raw:
            values[key] = convert(key, raw[key])
        elif default is _REQUIRED:
            raise ValueError(f"{name}: missing required key {key!r}")
        else:
            values[key] = default
    return build(values)


def parse_defense(spec: str) -> UpdateDefense:
    """Build the defense described by `spec` (see the module docstring); bad settings raise
    ValueError naming the field and its bound."""
    parts = spec.split("+")
    if not spec.strip() or any(not part.strip() for part in parts):
        raise ValueError(f"empty defense spec in {spec!r}")
    stages = tuple(_parse_one(part) for part in parts)
    return stages[0] if len(stages) == 1 else ChainDefense(stages)
