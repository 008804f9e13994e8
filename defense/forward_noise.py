"""Diffusion-style forward noising of model updates, its DP calibration and an adaptive attacker.

An update ``u`` is released as one forward step of a variance-preserving diffusion (Ho, Jain,
Abbeel 2020, eq. 4):

    y = sqrt(abar_t) * u + sqrt(1 - abar_t) * s * eps,      eps ~ N(0, I)

with ``abar_t = prod_{i<=t} (1 - beta_i)`` from the linear-beta DDPM schedule
(``beta`` linear from 1e-4 to 0.02 over T steps, Ho et al. 2020) or the cosine schedule
(``abar_t = f(t)/f(0)``, ``f(t) = cos^2(((t/T + 0.008) / 1.008) * pi/2)``, betas capped at
0.999; Nichol & Dhariwal 2021). ``t = 0`` releases ``u`` unchanged. ``s`` is the update's RMS
(``"rms"``: then ``E||y||^2 = ||u||^2``, the variance-preserving property), the clipping bound
(``"clip"``) or a fixed number. The level ``t`` may change per round: ``constant``,
``decreasing`` (high to low: strong protection early, when gradients of a fresh model leak the
most, and less distortion as training converges) or ``increasing``.

Hybrid mode: clip ``u`` to L2 norm ``C`` and take ``s = C``. Dividing by ``sqrt(abar_t)`` shows
the release is the Gaussian mechanism with sensitivity ``C`` and noise multiplier
``z_t = sqrt((1 - abar_t) / abar_t)``; `calibrate_forward_noising` picks the smallest levels whose
composition over the rounds meets a target (eps, delta) with Opacus's RDP accountant.

`denoise_forward` is the adaptive attacker who knows the schedule (cf. Mjölnir, AAAI 2025):
it undoes the shrinkage by ``1 / sqrt(abar_t)`` and, optionally, applies the Wiener (posterior
mean) shrinkage for a Gaussian prior ``u ~ N(0, v I)`` with ``v`` estimated from ``y``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from phalanx.defense._validation import (
    require_delta,
    require_int_at_least,
    require_positive,
    require_rate,
)
from phalanx.defense.accounting import PrivacyAccountant
from phalanx.defense.client_dp import clip_l2

DIFFUSION_SCHEDULES = ("linear", "cosine")
LEVEL_SCHEDULES = ("constant", "decreasing", "increasing")
SCALE_MODES = ("rms", "clip")


@lru_cache(maxsize=16)
def _alpha_bar_table(diffusion: str, num_steps: int) -> tuple[float, ...]:
    if diffusion == "linear":
        betas = np.linspace(1e-4, 0.02, num_steps, dtype=np.float64)
    elif diffusion == "cosine":
        offset = 0.008
        grid = np.arange(num_steps + 1, dtype=np.float64) / num_steps
        f = np.cos((grid + offset) / (1 + offset) * math.pi / 2) ** 2
        betas = np.minimum(1 - f[1:] / f[:-1], 0.999)
    else:
        raise ValueError(
            f"schedule must be one of {', '.join(DIFFUSION_SCHEDULES)}, got {diffusion!r}"
        )
    return (1.0, *np.cumprod(1 - betas).tolist())


def alpha_bar_schedule(diffusion: str = "cosine", num_steps: int = 1000) -> np.ndarray:
    """``abar_t`` for ``t = 0 .. T`` (``abar_0 = 1``), strictly decreasing in ``t``."""
    require_int_at_least("steps", num_steps, 1)
    return np.array(_alpha_bar_table(diffusion, num_steps))


def noise_multiplier_at(alpha_bar: float) -> float:
    """``z = sqrt((1 - abar) / abar)``: noise std over sensitivity once rescaled by 1/sqrt(abar)."""
    if not 0 < alpha_bar <= 1:
        raise ValueError(f"alpha_bar must be in (0, 1], got {alpha_bar}")
    return math.sqrt((1 - alpha_bar) / alpha_bar)


@dataclass(frozen=True)
class NoiseLevelSchedule:
    """The diffusion step ``t_r`` used in round ``r``.

    ``constant``: ``t_r = t_max``. ``decreasing``: linear from ``t_max`` (round 0) to ``t_min``
    (round ``rounds - 1``). ``increasing``: linear from ``t_min`` to ``t_max``. Rounds past the
    last keep the last level.
    """

    kind: str = "constant"
    t_max: int = 100
    t_min: int = 0
    rounds: int = 1

    def __post_init__(self) -> None:
        if self.kind not in LEVEL_SCHEDULES:
            raise ValueError(
                f"levels must be one of {', '.join(LEVEL_SCHEDULES)}, got {self.kind!r}"
            )
        require_int_at_least("t", self.t_max, 0)
        require_int_at_least("t_min", self.t_min, 0)
        require_int_at_least("rounds", self.rounds, 1)
        if self.t_min > self.t_max:
            raise ValueError(f"t_min must be <= t ({self.t_max}), got {self.t_min}")

    def level(self, round_index: int) -> int:
        require_int_at_least("round_index", round_index, 0)
        if self.kind == "constant" or self.rounds == 1:
            return self.t_max if self.kind != "increasing" else self.t_min
        progress = min(round_index, self.rounds - 1) / (self.rounds - 1)
        if self.kind == "increasing":
            progress = 1 - progress
        return round(self.t_max - (self.t_max - self.t_min) * progress)


@dataclass(frozen=True)
class ForwardNoising:
    """Release ``sqrt(abar_t) u + sqrt(1 - abar_t) s eps`` with ``t`` from `levels`.

    - ``diffusion``: ``"linear"`` (DDPM) or ``"cosine"`` (improved DDPM) ``abar`` schedule;
    - ``num_steps``: T, the length of that schedule; every level must be <= T;
    - ``scale``: ``"rms"`` (s = RMS of the, possibly clipped, update), ``"clip"`` (s = C) or a
      positive number;
    - ``clip_norm``: if set, the update is first clipped to this L2 norm (needed by ``"clip"``).
    """

    levels: NoiseLevelSchedule
    diffusion: str = "cosine"
    num_steps: int = 1000
    scale: str | float = "rms"
    clip_norm: float | None = None

    def __post_init__(self) -> None:
        alpha_bar_schedule(self.diffusion, self.num_steps)  # validates both
        top = max(self.levels.t_max, self.levels.t_min)
        if top > self.num_steps:
            raise ValueError(f"t must be <= steps ({self.num_steps}), got {top}")
        if isinstance(self.scale, str):
            if self.scale not in SCALE_MODES:
                raise ValueError(
                    f"scale must be one of {', '.join(SCALE_MODES)} or a number > 0, "
                    f"got {self.scale!r}"
                )
            if self.scale == "clip" and self.clip_norm is None:
                raise ValueError("scale=clip needs clip (the L2 clipping bound) > 0")
        else:
            require_positive("scale", self.scale)
        if self.clip_norm is not None:
            require_positive("clip", self.clip_norm)

    def alpha_bar(self, round_index: int) -> float:
        return float(
            alpha_bar_schedule(self.diffusion, self.num_steps)[self.levels.level(round_index)]
        )

    def noise_multiplier(self, round_index: int) -> float:
        """z of round `round_index` when the release is read as a Gaussian mechanism on C."""
        return noise_multiplier_at(self.alpha_bar(round_index))

    def noise_scale(self, update: torch.Tensor) -> float:
        if self.scale == "clip":
            assert self.clip_norm is not None
            return self.clip_norm
        if self.scale == "rms":
            return float(torch.sqrt(torch.mean(update.to(torch.float64) ** 2)))
        return float(self.scale)

    def __call__(
        self, update: torch.Tensor, *, generator: torch.Generator, round_index: int = 0
    ) -> torch.Tensor:
        if self.clip_norm is not None:
            update = clip_l2(update, self.clip_norm)
        alpha_bar = self.alpha_bar(round_index)
        if alpha_bar == 1.0:
            return update.clone()
        noise = torch.randn(update.shape, generator=generator, dtype=update.dtype)
        std = math.sqrt(1 - alpha_bar) * self.noise_scale(update)
        return math.sqrt(alpha_bar) * update + std * noise

    def record_round(
        self, accountant: PrivacyAccountant, round_index: int, sample_rate: float = 1.0
    ) -> None:
        """Add round `round_index` to `accountant` (valid in hybrid mode: clip set, scale=clip)."""
        if self.scale != "clip" or self.clip_norm is None:
            raise ValueError("only the hybrid mode (clip set and scale=clip) has a DP guarantee")
        accountant.step(self.noise_multiplier(round_index), sample_rate)

    def epsilon(self, rounds: int, delta: float, sample_rate: float = 1.0) -> float:
        """eps after rounds ``0 .. rounds-1`` in hybrid mode (Opacus RDP accountant)."""
        require_int_at_least("rounds", rounds, 1)
        accountant = PrivacyAccountant("rdp")
        for round_index in range(rounds):
            self.record_round(accountant, round_index, sample_rate)
        return accountant.epsilon(delta)


def calibrate_forward_noising(
    target_epsilon: float,
    delta: float,
    rounds: int,
    clip_norm: float,
    diffusion: str = "cosine",
    num_steps: int = 1000,
    levels: str = "decreasing",
    span: int = 100,
    sample_rate: float = 1.0,
) -> ForwardNoising:
    """Hybrid forward noising with the least noise that is (target_epsilon, delta)-DP.

    The shape is fixed by `levels` (a non-constant schedule spans ``t_min = t_max - span``) and the
    whole profile is shifted: ``t_max`` is the smallest integer in ``[1, T]`` whose composition
    over `rounds` (sampled Gaussian, rate `sample_rate`) has ``eps <= target_epsilon``. eps falls
    as ``t_max`` grows because ``abar_t`` is decreasing in ``t``.
    """
    require_positive("eps", target_epsilon)
    require_delta("delta", delta)
    require_int_at_least("rounds", rounds, 1)
    require_positive("clip", clip_norm)
    require_int_at_least("span", span, 0)
    require_rate("sample_rate", sample_rate)

    def build(t_max: int) -> ForwardNoising:
        return ForwardNoising(
            levels=NoiseLevelSchedule(
                kind=levels,
                t_max=t_max,
                t_min=t_max if levels == "constant" else max(t_max - span, 0),
                rounds=rounds,
            ),
            diffusion=diffusion,
            num_steps=num_steps,
            scale="clip",
            clip_norm=clip_norm,
        )

    def meets(t_max: int) -> bool:
        return build(t_max).epsilon(rounds, delta, sample_rate) <= target_epsilon

    if not meets(num_steps):
        raise ValueError(
            f"eps={target_epsilon} at delta={delta} over {rounds} rounds is out of reach even at "
            f"t={num_steps}: raise eps or steps, or use the cosine schedule"
        )
    low, high = 0, num_steps  # meets(high) holds, meets(0) fails (t = 0 adds no noise)
    while high - low > 1:
        middle = (low + high) // 2
        if meets(middle):
            high = middle
        else:
            low = middle
    return build(high)


def denoise_forward(
    released: torch.Tensor,
    alpha_bar: float,
    noise_scale: float | None = None,
    wiener: bool = True,
) -> torch.Tensor:
    """The adaptive attacker's estimate of ``u`` from ``y`` when it knows ``abar_t``.

    Rescaling gives the unbiased ``y / sqrt(abar)``. With ``wiener`` it returns the posterior mean
    under ``u ~ N(0, v I)``: ``sqrt(abar) v / (abar v + (1 - abar) s^2) * y``, where
    ``v = max(mean(y^2) - (1 - abar) s^2, 0) / abar``. ``noise_scale`` s defaults to
    ``RMS(y)``, the right guess for ``scale="rms"`` since the release preserves the RMS.
    """
    if not 0 < alpha_bar <= 1:
        raise ValueError(f"alpha_bar must be in (0, 1], got {alpha_bar}")
    y = released.to(torch.float64)
    mean_square = float(torch.mean(y**2))
    s_sq = mean_square if noise_scale is None else require_positive("noise_scale", noise_scale) ** 2
    if not wiener:
        return (y / math.sqrt(alpha_bar)).to(released.dtype)
    noise_var = (1 - alpha_bar) * s_sq
    signal_var = max(mean_square - noise_var, 0.0) / alpha_bar
    denominator = alpha_bar * signal_var + noise_var
    gain = math.sqrt(alpha_bar) * signal_var / denominator if denominator > 0 else 0.0
    return (gain * y).to(released.dtype)
