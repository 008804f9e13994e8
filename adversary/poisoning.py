"""Model-poisoning attacks: the update a Byzantine learner sends, from what it knows.

Every attack is a pure function::

    attack(own_update, honest_view, n, f, params, generator) -> (d,) tensor

own_update: the ``(d,)`` update the attacker trained honestly.
honest_view: ``(h, d)`` honest updates the colluders legitimately see (or all of them when the
    scenario is omniscient); None when the attacker sees none.
n, f: total number of inputs to the aggregation and how many of them are Byzantine.
params: the attack's frozen parameter dataclass (defaults when None).
generator: a seeded ``torch.Generator`` for the attacks that draw randomness.

``alie-adaptive`` and ``ipm-adaptive`` tune ALIE's z and IPM's epsilon against the configured
outer rule on the colluders' view (:func:`adaptive_alie_z`, :func:`adaptive_ipm_epsilon`).

``POISONING_ATTACKS`` maps names to :class:`PoisoningAttack`; :func:`parse_attack` turns a spec
such as ``alie``, ``scaling:factor=10`` or ``gaussian:std=1.0`` into a ready
:class:`AttackSpec`. Statistics are computed in float64 and the result has own_update's dtype.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import torch

from phalanx.learning.aggregation import SpecValue, get_rule, pairwise_squared_distances, parse_spec

__all__ = [
    "POISONING_ATTACKS",
    "AdaptiveParams",
    "AlieParams",
    "AttackSpec",
    "GaussianParams",
    "IpmParams",
    "MimicParams",
    "MinMaxParams",
    "NoParams",
    "PoisoningAttack",
    "ScalingParams",
    "SignFlipParams",
    "adaptive_alie_z",
    "adaptive_ipm_epsilon",
    "aggregated_inputs",
    "alie",
    "alie_adaptive",
    "alie_z",
    "gaussian_noise",
    "ipm",
    "ipm_adaptive",
    "make_params",
    "mimic",
    "min_max",
    "min_sum",
    "parse_attack",
    "scaling",
    "sign_flip",
]

PERTURBATIONS = ("unit-vector", "std", "sign")


# --------------------------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------------------------


def _finite(owner: str, key: str, value: float) -> None:
    if not math.isfinite(value):
        raise ValueError(f"{owner}: parameter {key!r} must be finite, got {value!r}")


@dataclass(frozen=True)
class NoParams:
    """For attacks without parameters."""


@dataclass(frozen=True)
class SignFlipParams:
    """factor: the sent update is ``-factor * own_update`` (factor > 0)."""

    factor: float = 1.0

    def __post_init__(self) -> None:
        _finite("sign-flip", "factor", self.factor)
        if self.factor <= 0:
            raise ValueError(f"sign-flip: parameter 'factor' must be > 0, got {self.factor}")


@dataclass(frozen=True)
class ScalingParams:
    """factor: the sent update is ``factor * own_update``."""

    factor: float = 10.0

    def __post_init__(self) -> None:
        _finite("scaling", "factor", self.factor)


@dataclass(frozen=True)
class GaussianParams:
    """std, mean: of the Gaussian; additive: add the noise to own_update instead of replacing it."""

    std: float = 1.0
    mean: float = 0.0
    additive: bool = False

    def __post_init__(self) -> None:
        _finite("gaussian", "std", self.std)
        _finite("gaussian", "mean", self.mean)
        if self.std < 0:
            raise ValueError(f"gaussian: parameter 'std' must be >= 0, got {self.std}")


def _check_cluster_size(owner: str, cluster_size: int) -> None:
    if isinstance(cluster_size, bool) or not isinstance(cluster_size, int) or cluster_size < 1:
        raise ValueError(f"{owner}: parameter 'cluster_size' must be an integer >= 1")


@dataclass(frozen=True)
class AlieParams:
    """z: overrides z_max (computed from n and f when None).

    cluster_size: k of the clusters whose means the robust rule aggregates; 1 attacks the
    individual updates as in the paper, k > 1 the cluster means (see :func:`alie`).
    """

    z: float | None = None
    cluster_size: int = 1

    def __post_init__(self) -> None:
        if self.z is not None:
            _finite("alie", "z", self.z)
        _check_cluster_size("alie", self.cluster_size)


@dataclass(frozen=True)
class IpmParams:
    """epsilon: the aggregated input becomes ``-epsilon * mean(honest)`` (epsilon > 0).

    cluster_size: k > 1 aims that at the cluster mean the rule sees (see :func:`ipm`).
    """

    epsilon: float = 0.1
    cluster_size: int = 1

    def __post_init__(self) -> None:
        _finite("ipm", "epsilon", self.epsilon)
        if self.epsilon <= 0:
            raise ValueError(f"ipm: parameter 'epsilon' must be > 0, got {self.epsilon}")
        _check_cluster_size("ipm", self.cluster_size)


@dataclass(frozen=True)
class MinMaxParams:
    """perturbation: unit-vector, std or sign; gamma_init and tolerance of the gamma search."""

    perturbation: str = "std"
    gamma_init: float = 10.0
    tolerance: float = 1e-5

    def __post_init__(self) -> None:
        if self.perturbation not in PERTURBATIONS:
            raise ValueError(
                f"min-max/min-sum: parameter 'perturbation' must be one of {PERTURBATIONS}, "
                f"got {self.perturbation!r}"
            )
        for key in ("gamma_init", "tolerance"):
            value = getattr(self, key)
            _finite("min-max/min-sum", key, value)
            if value <= 0:
                raise ValueError(f"min-max/min-sum: parameter {key!r} must be > 0, got {value}")


@dataclass(frozen=True)
class MimicParams:
    """target: row of honest_view to copy; -1 picks the row furthest along the top variance axis."""

    target: int = -1

    def __post_init__(self) -> None:
        if self.target < -1:
            raise ValueError(f"mimic: parameter 'target' must be >= -1, got {self.target}")


@dataclass(frozen=True)
class AdaptiveParams:
    """Parameters of ``alie-adaptive`` and ``ipm-adaptive`` (see :func:`adaptive_alie_z`).

    rule: the outer aggregation rule the factor is tuned against (a ``get_rule`` name or
        ``NAME:k=v`` spec); a node made Byzantine by config is handed the scenario's rule.
    pre: its pre-aggregators, ``+``-joined (``"clip+nnm"``).
    rule_f: the f the rule runs with: None = the attacked inputs, capped at what the rule
        tolerates (a node's default when ``aggregation.f`` is unset), ``"auto"`` = the most the
        rule tolerates, an integer = that, capped likewise.
    cluster_size: k of the clusters whose means the rule aggregates (as for ``alie``/``ipm``).
    max_factor: the top of the search range: z in [0, max_factor] (ALIE), epsilon in
        [max_factor / 1000, max_factor] (IPM).
    evaluations: how many times the search may run the rule.
    """

    rule: str | None = None
    pre: str = ""
    rule_f: int | str | None = None
    cluster_size: int = 1
    max_factor: float = 10.0
    evaluations: int = 32

    def __post_init__(self) -> None:
        owner = "alie-adaptive/ipm-adaptive"
        if self.rule is not None:
            get_rule(self.rule, pre=self.pre_aggregators or None)
        if isinstance(self.rule_f, bool) or (
            self.rule_f is not None
            and self.rule_f != "auto"
            and not (isinstance(self.rule_f, int) and self.rule_f >= 0)
        ):
            raise ValueError(
                f"{owner}: parameter 'rule_f' must be an integer >= 0 or 'auto', "
                f"got {self.rule_f!r}"
            )
        _check_cluster_size(owner, self.cluster_size)
        _finite(owner, "max_factor", self.max_factor)
        if self.max_factor <= 0:
            raise ValueError(f"{owner}: parameter 'max_factor' must be > 0, got {self.max_factor}")
        if isinstance(self.evaluations, bool) or self.evaluations < 4:
            raise ValueError(
                f"{owner}: parameter 'evaluations' must be an integer >= 4, got {self.evaluations}"
            )

    @property
    def pre_aggregators(self) -> list[str]:
        return [name for name in self.pre.split("+") if name]


# --------------------------------------------------------------------------------------------
# Input checks and shared statistics
# --------------------------------------------------------------------------------------------


def _check_inputs(
    name: str,
    own_update: torch.Tensor,
    honest_view: torch.Tensor | None,
    n: int,
    f: int,
    *,
    min_honest: int = 0,
) -> torch.Tensor | None:
    """Validate the common arguments; return honest_view in float64 (or None)."""
    if not isinstance(own_update, torch.Tensor) or own_update.ndim != 1:
        raise ValueError(f"{name}: own_update must be a 1-D tensor")
    if own_update.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"{name}: own_update must be float32 or float64, got {own_update.dtype}")
    for label, value in (("n", n), ("f", f)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name}: {label} must be an integer, got {value!r}")
    if n < 1 or not 0 <= f <= n:
        raise ValueError(f"{name}: needs n >= 1 and 0 <= f <= n, got n={n}, f={f}")
    if honest_view is None:
        if min_honest:
            raise ValueError(
                f"{name}: needs honest_view with at least {min_honest} honest updates, got none"
            )
        return None
    if not isinstance(honest_view, torch.Tensor) or honest_view.ndim != 2:
        raise ValueError(f"{name}: honest_view must be a 2-D (h, d) tensor")
    h, d = honest_view.shape
    if d != own_update.shape[0]:
        raise ValueError(f"{name}: honest_view has d={d}, own_update has d={own_update.shape[0]}")
    if h < min_honest:
        raise ValueError(
            f"{name}: needs honest_view with at least {min_honest} honest updates, got h={h}"
        )
    return honest_view.to(torch.float64)


def _like(result: torch.Tensor, own_update: torch.Tensor) -> torch.Tensor:
    return result.to(device=own_update.device, dtype=own_update.dtype)


# --------------------------------------------------------------------------------------------
# Attacks
# --------------------------------------------------------------------------------------------


def sign_flip(
    own_update: torch.Tensor,
    honest_view: torch.Tensor | None,
    n: int,
    f: int,
    params: SignFlipParams | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Sign flipping: send ``-factor * own_update`` (Allen-Zhu et al. 2021; Li et al. 2019)."""
    params = params or SignFlipParams()
    _check_inputs("sign-flip", own_update, honest_view, n, f)
    return own_update * (-params.factor)


def scaling(
    own_update: torch.Tensor,
    honest_view: torch.Tensor | None,
    n: int,
    f: int,
    params: ScalingParams | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Scaling (model replacement, Bagdasaryan et al. 2020): send ``factor * own_update``."""
    params = params or ScalingParams()
    _check_inputs("scaling", own_update, honest_view, n, f)
    return own_update * params.factor


def gaussian_noise(
    own_update: torch.Tensor,
    honest_view: torch.Tensor | None,
    n: int,
    f: int,
    params: GaussianParams | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Gaussian attack: send ``mean + std * N(0, I)`` (plus own_update when ``additive``).

    Needs a seeded generator, so that a run is reproducible.
    """
    params = params or GaussianParams()
    _check_inputs("gaussian", own_update, honest_view, n, f)
    if generator is None:
        raise ValueError("gaussian: needs a seeded torch.Generator")
    noise = torch.randn(
        own_update.shape, generator=generator, dtype=torch.float64, device=generator.device
    )
    sent = params.mean + params.std * noise
    if params.additive:
        sent = sent + own_update.to(device=sent.device, dtype=torch.float64)
    return _like(sent, own_update)


def alie_z(n: int, f: int) -> float:
    """Baruch et al. 2019: ``s = floor(n/2 + 1) - f`` and ``z_max = Phi^-1((n - s) / n)``.

    s is the number of honest inputs the attackers must win over for a majority.
    """
    if n < 1 or not 0 <= f <= n:
        raise ValueError(f"alie: needs n >= 1 and 0 <= f <= n, got n={n}, f={f}")
    supporters = (n // 2 + 1) - f
    if supporters <= 0:
        raise ValueError(
            f"alie: f={f} of n={n} already is a majority (s = floor(n/2 + 1) - f = {supporters}); "
            "z_max is undefined"
        )
    return NormalDist().inv_cdf((n - supporters) / n)


def aggregated_inputs(n: int, f: int, cluster_size: int) -> tuple[int, int]:
    """What the robust rule aggregates when n nodes form clusters of about cluster_size.

    ``clustering.strategies`` makes ``max(1, n // k)`` clusters; in the worst case for the
    honest nodes every Byzantine node sits in its own cluster, so ``min(f, clusters)`` of the
    rule's inputs carry an attacker. Returns ``(inputs, byzantine_inputs)``.
    """
    if cluster_size < 1:
        raise ValueError(f"cluster_size must be >= 1, got {cluster_size}")
    inputs = max(1, n // cluster_size)
    return inputs, min(f, inputs)


def _cluster_level_z(inputs: int, byzantine_inputs: int) -> float:
    """alie_z over cluster means; when the attacked clusters already are a majority (no s >= 1
    exists) use the largest defined value, s = 1."""
    return alie_z(inputs, min(byzantine_inputs, inputs // 2))


def _through_cluster(target: torch.Tensor, honest_mean: torch.Tensor, k: int) -> torch.Tensor:
    """The update that moves a k-member cluster mean to ``target``, its k - 1 honest members
    estimated at the honest mean: ``(u + (k - 1) mu) / k = target``, so
    ``u = k * target - (k - 1) * mu``."""
    return k * target - (k - 1) * honest_mean


def alie(
    own_update: torch.Tensor,
    honest_view: torch.Tensor | None,
    n: int,
    f: int,
    params: AlieParams | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """A Little Is Enough (Baruch et al. 2019): ``mu_j - z_max * sigma_j`` per coordinate.

    mu and sigma are the coordinate-wise mean and (unbiased) standard deviation of honest_view;
    z_max comes from :func:`alie_z` unless ``params.z`` overrides it.

    The paper places the attack among the inputs of the aggregation rule. With clusters of
    ``k = params.cluster_size`` those inputs are cluster means: there are ``n' = n // k`` of
    them, ``f' = min(f, n')`` hold an attacker, and their spread is ``sigma / sqrt(k)``
    (means of k independent updates). So z_max is ``alie_z(n', f')``, the cluster mean is aimed
    at ``mu - z_max * sigma / sqrt(k)``, and since the attacker is one of k members the update
    it sends is ``k`` times that deviation: ``mu - sqrt(k) * z_max * sigma``. k = 1 is the paper.
    If f' is already a majority of n' (z_max undefined), the largest defined z_max (s = 1) is used.
    """
    params = params or AlieParams()
    view = _check_inputs("alie", own_update, honest_view, n, f, min_honest=2)
    assert view is not None
    k = params.cluster_size
    if params.z is not None:
        z = params.z
    elif k == 1:
        z = alie_z(n, f)
    else:
        z = _cluster_level_z(*aggregated_inputs(n, f, k))
    mean = view.mean(dim=0)
    cluster_target = mean - z * view.std(dim=0, correction=1) / math.sqrt(k)
    return _like(_through_cluster(cluster_target, mean, k), own_update)


def ipm(
    own_update: torch.Tensor,
    honest_view: torch.Tensor | None,
    n: int,
    f: int,
    params: IpmParams | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Inner-product manipulation (Xie et al. 2020, "Fall of Empires"): ``-epsilon * mean``.

    Small epsilon (0.1) targets Krum-like rules, large epsilon (10) coordinate-wise ones.
    With clusters of ``k = params.cluster_size`` the attack is aimed at the cluster mean the rule
    sees: the update sent is ``-k * epsilon * mu - (k - 1) * mu``, so that the mean of it and
    k - 1 honest updates (estimated at mu) is ``-epsilon * mu``. k = 1 is the paper.
    """
    params = params or IpmParams()
    view = _check_inputs("ipm", own_update, honest_view, n, f, min_honest=1)
    assert view is not None
    mean = view.mean(dim=0)
    return _like(_through_cluster(-params.epsilon * mean, mean, params.cluster_size), own_update)


# Golden-section step: the inner points of [a, b] sit at a + (1 - 1/phi)(b - a) and a + (b - a)/phi.
_INVERSE_PHI = (math.sqrt(5.0) - 1.0) / 2.0


def _largest_damage(
    damage: Callable[[float], float],
    to_factor: Callable[[float], float],
    default: float,
    evaluations: int,
) -> float:
    """Maximise ``damage(factor)`` with factor = to_factor(u), u in [0, 1], in a fixed budget.

    Half the budget scans an even grid in u; the rest runs golden-section steps on the bracket
    around the best grid point (Kiefer 1953). The default factor is evaluated too, so the
    returned factor is never less damaging than it; ties go to the smaller factor.
    """
    seen: dict[float, float] = {}

    def at(factor: float) -> float:
        if factor not in seen:
            seen[factor] = damage(factor)
        return seen[factor]

    at(default)
    steps = max(2, evaluations // 2)
    grid = [index / (steps - 1) for index in range(steps)]
    scores = [at(to_factor(u)) for u in grid]
    best = max(range(steps), key=lambda index: (scores[index], -index))
    low, high = grid[max(best - 1, 0)], grid[min(best + 1, steps - 1)]
    inner_low = high - _INVERSE_PHI * (high - low)
    inner_high = low + _INVERSE_PHI * (high - low)
    for _ in range(max(0, evaluations - steps - 1)):
        if at(to_factor(inner_low)) >= at(to_factor(inner_high)):
            high, inner_high = inner_high, inner_low
            inner_low = high - _INVERSE_PHI * (high - low)
        else:
            low, inner_low = inner_low, inner_high
            inner_high = low + _INVERSE_PHI * (high - low)
    return min(seen, key=lambda factor: (-seen[factor], factor))


def _view_seed(view: torch.Tensor) -> int:
    """A seed fixed by the view's bytes: colluders holding the same view draw the same padding."""
    digest = hashlib.sha256(view.detach().cpu().contiguous().numpy().tobytes()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def _simulated_inputs(
    view: torch.Tensor, n: int, f: int, k: int
) -> tuple[torch.Tensor, int, torch.Tensor]:
    """The honest rule inputs the colluders simulate, how many Byzantine inputs join them, and mu.

    The rule sees ``m = n // k`` inputs (:func:`aggregated_inputs`), ``f'`` of them attacked. Each
    view row x_i stands for one honest input at ``mu + (x_i - mu) / sqrt(k)`` (a mean of k updates
    has spread sigma / sqrt(k)); when the view holds fewer than ``m - f'`` rows the rest are drawn
    from ``N(mu, sigma^2 / k)`` per coordinate, the model Baruch et al. assume, with a generator
    seeded by the view so that every colluder simulates the same inputs.
    """
    inputs, byzantine = aggregated_inputs(n, f, k)
    honest = inputs - byzantine
    mean = view.mean(dim=0)
    spread = view.std(dim=0, correction=1) / math.sqrt(k)
    rows = mean + (view - mean) / math.sqrt(k)
    if rows.shape[0] >= honest:
        return rows[:honest], byzantine, mean
    generator = torch.Generator().manual_seed(_view_seed(view))
    noise = torch.randn(
        (honest - rows.shape[0], view.shape[1]), generator=generator, dtype=torch.float64
    )
    return torch.cat([rows, mean + noise * spread.cpu()]), byzantine, mean


def _search_against_rule(
    name: str,
    honest_view: torch.Tensor | None,
    own_update: torch.Tensor,
    n: int,
    f: int,
    params: AdaptiveParams,
    target: Callable[[float, torch.Tensor, torch.Tensor], torch.Tensor],
    default: float,
    to_factor: Callable[[float], float],
) -> float:
    """The factor maximising ``|rule(honest inputs + f' copies of target(factor)) - mu|_2``."""
    view = _check_inputs(name, own_update, honest_view, n, f, min_honest=2)
    assert view is not None
    if params.rule is None:
        raise ValueError(
            f"{name}: needs the outer aggregation rule it is tuned against (rule=NAME); a node "
            "made Byzantine by config passes the scenario's"
        )
    k = params.cluster_size
    honest, byzantine, mean = _simulated_inputs(view, n, f, k)
    robust = get_rule(params.rule, pre=params.pre_aggregators or None)
    tolerated = robust.max_f(honest.shape[0] + byzantine)
    if tolerated < 0 or honest.shape[0] == 0 or byzantine == 0:
        return default  # the rule cannot run, or nothing to attack with or against: no search
    if params.rule_f is None:
        rule_f = min(byzantine, tolerated)
    elif params.rule_f == "auto":
        rule_f = tolerated
    else:
        rule_f = min(int(params.rule_f), tolerated)
    spread = view.std(dim=0, correction=1) / math.sqrt(k)

    def damage(factor: float) -> float:
        attacked = target(factor, mean, spread).expand(byzantine, -1)
        output = robust(torch.cat([honest, attacked]), rule_f)
        return float(torch.linalg.vector_norm(output - mean))

    return _largest_damage(damage, to_factor, default, params.evaluations)


def adaptive_alie_z(
    honest_view: torch.Tensor | None,
    own_update: torch.Tensor,
    n: int,
    f: int,
    params: AdaptiveParams,
) -> float:
    """ALIE's z tuned against the outer rule, as ByzFL's optimal ALIE does.

    Baruch et al. (NeurIPS 2019) put every attacker at ``mu - z sigma``; here z is the value in
    ``[0, max_factor]`` that maximises ``|R(H + f' copies of (mu - z sigma / sqrt(k))) - mu|_2``
    for the configured rule R and its f, H the honest inputs simulated from the colluders' view
    (:func:`_simulated_inputs`). Baruch's ``z_max`` (:func:`alie_z` over the rule's inputs) is
    a candidate, so the chosen z is at least as damaging on the simulated inputs.
    """
    high = params.max_factor
    return _search_against_rule(
        "alie-adaptive",
        honest_view,
        own_update,
        n,
        f,
        params,
        lambda z, mean, spread: mean - z * spread,
        _cluster_level_z(*aggregated_inputs(n, f, params.cluster_size)),
        lambda u: u * high,
    )


def adaptive_ipm_epsilon(
    honest_view: torch.Tensor | None,
    own_update: torch.Tensor,
    n: int,
    f: int,
    params: AdaptiveParams,
) -> float:
    """IPM's epsilon tuned against the outer rule, as ByzFL's optimal IPM does.

    Xie et al. (UAI 2019) put every attacker at ``-epsilon mu``; here epsilon is the value in
    ``[max_factor / 1000, max_factor]`` (searched on a log scale) that maximises
    ``|R(H + f' copies of (-epsilon mu)) - mu|_2``, H and R as in :func:`adaptive_alie_z`. The
    fixed default, 0.1, is a candidate.
    """
    high = params.max_factor
    return _search_against_rule(
        "ipm-adaptive",
        honest_view,
        own_update,
        n,
        f,
        params,
        lambda epsilon, mean, spread: -epsilon * mean,
        IpmParams().epsilon,
        lambda u: high * 1000.0 ** (u - 1.0),
    )


def alie_adaptive(
    own_update: torch.Tensor,
    honest_view: torch.Tensor | None,
    n: int,
    f: int,
    params: AdaptiveParams | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """ALIE (:func:`alie`, ``mu - z sigma``) with z from :func:`adaptive_alie_z`."""
    params = params or AdaptiveParams()
    z = adaptive_alie_z(honest_view, own_update, n, f, params)
    return alie(own_update, honest_view, n, f, AlieParams(z=z, cluster_size=params.cluster_size))


def ipm_adaptive(
    own_update: torch.Tensor,
    honest_view: torch.Tensor | None,
    n: int,
    f: int,
    params: AdaptiveParams | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """IPM (:func:`ipm`, ``-epsilon mu``) with epsilon from :func:`adaptive_ipm_epsilon`."""
    params = params or AdaptiveParams()
    epsilon = adaptive_ipm_epsilon(honest_view, own_update, n, f, params)
    return ipm(
        own_update,
        honest_view,
        n,
        f,
        IpmParams(epsilon=epsilon, cluster_size=params.cluster_size),
    )


def _perturbation(view: torch.Tensor, mean: torch.Tensor, kind: str) -> torch.Tensor:
    """Shejwalkar & Houmansadr 2021 perturbation p (already negated: the "inverse" directions)."""
    if kind == "unit-vector":
        norm = torch.linalg.vector_norm(mean)
        if float(norm) == 0.0:
            raise ValueError("min-max/min-sum: the honest mean is zero; no unit-vector direction")
        return -mean / norm
    if kind == "std":
        return -view.std(dim=0, correction=1)
    return -torch.sign(mean)


def _largest_passing_gamma(
    passes: Callable[[float], bool], gamma_init: float, tolerance: float
) -> float:
    """Shejwalkar & Houmansadr 2021, Algorithm 1: halving search for the largest passing gamma.

    Start at gamma_init with step gamma_init; move up by step/2 after a pass and down by step/2
    after a failure, halving the step each time, until gamma is within tolerance of the last
    passing value (0 when none passed). The search covers (0, 2 * gamma_init).
    """
    gamma, step, passing = gamma_init, gamma_init, 0.0
    while abs(passing - gamma) > tolerance:
        if passes(gamma):
            passing = gamma
            gamma += step / 2
        else:
            gamma -= step / 2
        step /= 2
    return passing


def _optimised_perturbation(
    name: str,
    own_update: torch.Tensor,
    honest_view: torch.Tensor | None,
    n: int,
    f: int,
    params: MinMaxParams,
    objective: str,
) -> torch.Tensor:
    view = _check_inputs(name, own_update, honest_view, n, f, min_honest=2)
    assert view is not None
    mean = view.mean(dim=0)
    direction = _perturbation(view, mean, params.perturbation)
    # |mean + g p - x_i|^2 = a_i + 2 g b_i + g^2 c, so each gamma test costs O(h).
    offsets = mean[None, :] - view
    a = (offsets * offsets).sum(dim=1)
    b = offsets @ direction
    c = float(direction @ direction)
    honest_squared = pairwise_squared_distances(view)
    if objective == "max":
        bound = float(honest_squared.max())

        def passes(gamma: float) -> bool:
            return float((a + 2 * gamma * b + gamma * gamma * c).max()) <= bound

    else:
        bound = float(honest_squared.sum(dim=1).max())

        def passes(gamma: float) -> bool:
            return float((a + 2 * gamma * b + gamma * gamma * c).sum()) <= bound

    gamma = _largest_passing_gamma(passes, params.gamma_init, params.tolerance)
    return _like(mean + gamma * direction, own_update)


def min_max(
    own_update: torch.Tensor,
    honest_view: torch.Tensor | None,
    n: int,
    f: int,
    params: MinMaxParams | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Min-Max (Shejwalkar & Houmansadr, NDSS 2021): ``mean + gamma * p``.

    gamma is the largest found by the search such that the malicious update is no further from
    any honest update than the two furthest honest updates are from each other:
    ``max_i |m - x_i| <= max_{i,j} |x_i - x_j|``.
    """
    return _optimised_perturbation(
        "min-max", own_update, honest_view, n, f, params or MinMaxParams(), "max"
    )


def min_sum(
    own_update: torch.Tensor,
    honest_view: torch.Tensor | None,
    n: int,
    f: int,
    params: MinMaxParams | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Min-Sum (Shejwalkar & Houmansadr, NDSS 2021): ``mean + gamma * p`` with the largest gamma
    such that ``sum_i |m - x_i|^2 <= max_i sum_j |x_i - x_j|^2``.
    """
    return _optimised_perturbation(
        "min-sum", own_update, honest_view, n, f, params or MinMaxParams(), "sum"
    )


def mimic(
    own_update: torch.Tensor,
    honest_view: torch.Tensor | None,
    n: int,
    f: int,
    params: MimicParams | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Mimic (Karimireddy et al. 2022): all Byzantine nodes copy one honest update.

    Without a fixed ``target``, copy the honest update i* that maximises ``|<z, x_i - mean>|``,
    z being the top principal direction of the honest view (this round's form of the paper's
    running estimate). Computed from the ``(h, h)`` centred Gram matrix; ties go to the lowest
    index.
    """
    params = params or MimicParams()
    view = _check_inputs("mimic", own_update, honest_view, n, f, min_honest=1)
    assert view is not None
    h = view.shape[0]
    if params.target >= h:
        raise ValueError(f"mimic: target={params.target} but honest_view has only h={h} rows")
    if params.target >= 0:
        chosen = params.target
    else:
        centred = view - view.mean(dim=0, keepdim=True)
        gram = centred @ centred.T
        _, eigenvectors = torch.linalg.eigh(gram)
        # <z, x_i - mean> with z = centred^T u equals (gram u)_i = lambda u_i.
        chosen = int(torch.argmax(eigenvectors[:, -1].abs()))
    return _like(view[chosen], own_update)


# --------------------------------------------------------------------------------------------
# Registry and spec parsing
# --------------------------------------------------------------------------------------------

AttackFunction = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class PoisoningAttack:
    """A named attack: its function, parameter dataclass, whether it needs honest_view and the
    fewest honest rows it can work from (``min_honest``)."""

    name: str
    function: AttackFunction
    params_type: type[Any]
    needs_honest_view: bool
    needs_generator: bool = False
    min_honest: int = 0

    def __call__(
        self,
        own_update: torch.Tensor,
        honest_view: torch.Tensor | None,
        n: int,
        f: int,
        params: Any = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        if params is not None and not isinstance(params, self.params_type):
            raise ValueError(
                f"{self.name}: params must be {self.params_type.__name__}, "
                f"got {type(params).__name__}"
            )
        return self.function(own_update, honest_view, n, f, params, generator)


POISONING_ATTACKS: dict[str, PoisoningAttack] = {
    attack.name: attack
    for attack in (
        PoisoningAttack("sign-flip", sign_flip, SignFlipParams, needs_honest_view=False),
        PoisoningAttack("scaling", scaling, ScalingParams, needs_honest_view=False),
        PoisoningAttack(
            "gaussian",
            gaussian_noise,
            GaussianParams,
            needs_honest_view=False,
            needs_generator=True,
        ),
        PoisoningAttack("alie", alie, AlieParams, needs_honest_view=True, min_honest=2),
        PoisoningAttack("ipm", ipm, IpmParams, needs_honest_view=True, min_honest=1),
        PoisoningAttack(
            "alie-adaptive", alie_adaptive, AdaptiveParams, needs_honest_view=True, min_honest=2
        ),
        PoisoningAttack(
            "ipm-adaptive", ipm_adaptive, AdaptiveParams, needs_honest_view=True, min_honest=2
        ),
        PoisoningAttack("min-max", min_max, MinMaxParams, needs_honest_view=True, min_honest=2),
        PoisoningAttack("min-sum", min_sum, MinMaxParams, needs_honest_view=True, min_honest=2),
        PoisoningAttack("mimic", mimic, MimicParams, needs_honest_view=True, min_honest=1),
    )
}


_ALIASES = {
    "signflip": "sign-flip",
    "gaussian-noise": "gaussian",
    "minmax": "min-max",
    "minsum": "min-sum",
}


def _coerce(attack: str, key: str, value: SpecValue, annotation: Any) -> Any:
    allowed = set(typing.get_args(annotation)) or {annotation}
    if isinstance(value, bool):
        if bool in allowed:
            return value
    elif isinstance(value, int):
        if int in allowed:
            return value
        if float in allowed:
            return float(value)
    elif isinstance(value, float):
        if float in allowed:
            return value
    elif str in allowed:
        return value
    names = sorted(t.__name__ for t in allowed if t is not type(None))
    raise ValueError(
        f"attack {attack!r}: parameter {key!r} must be {' or '.join(names)}, got {value!r}"
    )


def make_params(name: str, values: Mapping[str, SpecValue] | None = None) -> Any:
    """Build the parameter dataclass of attack ``name`` from spec values, with clear errors."""
    if name not in POISONING_ATTACKS:
        raise ValueError(
            f"unknown poisoning attack {name!r}; known: {', '.join(sorted(POISONING_ATTACKS))}"
        )
    params_type = POISONING_ATTACKS[name].params_type
    hints = typing.get_type_hints(params_type)
    allowed = [field.name for field in dataclasses.fields(params_type)]
    values = dict(values or {})
    unknown = sorted(set(values) - set(allowed))
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {unknown} for attack {name!r}; allowed: {allowed or 'none'}"
        )
    coerced = {key: _coerce(name, key, value, hints[key]) for key, value in values.items()}
    return params_type(**coerced)


@dataclass(frozen=True)
class AttackSpec:
    """A parsed ``NAME[:k=v,...]`` attack spec, ready to apply."""

    name: str
    params: Any

    @property
    def attack(self) -> PoisoningAttack:
        return POISONING_ATTACKS[self.name]

    def apply(
        self,
        own_update: torch.Tensor,
        honest_view: torch.Tensor | None,
        n: int,
        f: int,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        return self.attack(own_update, honest_view, n, f, self.params, generator)


def parse_attack(spec: str) -> AttackSpec:
    """Parse ``NAME[:k=v,...]``: ``alie``, ``scaling:factor=10``, ``min-max:perturbation=sign``.

    Underscores are accepted for dashes (``min_max`` is ``min-max``), and ``gaussian-noise``
    for ``gaussian``.
    """
    name, values = parse_spec(spec)
    name = name.replace("_", "-").lower()
    name = _ALIASES.get(name, name)
    return AttackSpec(name, make_params(name, values))
