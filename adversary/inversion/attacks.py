"""Gradient-inversion attacks behind one entry point, `invert`.

Every method optimises dummy images so that the update they would produce matches the observed
one (`adversary.inversion.matching`); they differ in the objective, the optimiser and the prior:

- ``dlg`` (Zhu et al. 2019): L-BFGS on images and soft labels jointly,
  ``min_{x', y'} ||g(x', softmax(y')) - g||^2``; the budget counts L-BFGS iterations
  (`_lbfgs`).
- ``idlg`` (Zhao et al. 2020): labels read analytically from the last layers
  (`labels.recover_labels`, rule ``InversionConfig.labels``), then L-BFGS on the images with the
  same L2 objective; the methods below use the same labels.
- ``ig`` (Geiping et al. 2020): ``min_x 1 - cos(g(x), g) + alpha TV(x)`` with Adam on the signed
  gradient, projection onto the box [0, 1], step decay by 10 at 3/8, 5/8, 7/8 of the budget, and
  restarts keeping the best objective.
- ``gan``: latent search ``min_z 1 - cos(g(G(z)), g)`` (GGL, Li et al. 2022; GIAS, Jeon et al.
  2021), then GIFD (Fang et al. 2023): optimise each intermediate feature ``h_l`` of the
  generator inside the l1 ball ``||h_l - h_l^0||_1 <= r ||h_l^0||_1`` (projection of Duchi et
  al. 2008), keeping the stage with the best objective.
- ``diffusion``: diffusion posterior sampling (DPS, Chung et al. 2023) with the observed
  gradient as the measurement: Tweedie's ``x0_hat`` at every reverse step, the guidance
  ``grad_{x_t} ||g - g(x0_hat)||^2`` (`_diffusion_posterior_sampling`); the sample alone.
- ``diffusion-ig``: the same sample refined by ``ig`` in pixel space.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch
from torch import nn

from phalanx.adversary.inversion.knowledge import AttackerKnowledge, InversionConfig, Reconstruction
from phalanx.adversary.inversion.labels import recover_labels
from phalanx.adversary.inversion.matching import (
    cosine_distance,
    l2_distance,
    observed_pseudo_gradient,
    simulate_update,
    total_variation,
    validate_observed_update,
)
from phalanx.adversary.inversion.names import LABEL_METHODS
from phalanx.adversary.inversion.names import METHODS as METHODS
from phalanx.adversary.inversion.names import PRIOR_OF as PRIOR_OF
from phalanx.adversary.inversion.priors import DiffusionPrior, GanPrior

DEFAULT_ITERATIONS = {"dlg": 1000, "idlg": 1000, "ig": 1000, "gan": 600, "diffusion-ig": 300}
LBFGS_CHUNK = 20
STALL_CHUNKS = 5
STALL_RATIO = 0.99


def _check_model(model: nn.Module, knowledge: AttackerKnowledge) -> None:
    probe = torch.zeros((1, *knowledge.input_shape), dtype=next(model.parameters()).dtype)
    try:
        with torch.no_grad():
            out = model(probe)
    except RuntimeError as error:
        raise ValueError(
            f"input_shape {knowledge.input_shape} does not fit the model: {error}"
        ) from None
    if tuple(out.shape) != (1, knowledge.num_classes):
        raise ValueError(
            f"model outputs shape {tuple(out.shape)[1:]} but num_classes is {knowledge.num_classes}"
        )


def _lbfgs(
    variables: list[torch.Tensor],
    objective: Callable[[], torch.Tensor],
    iterations: int,
    history: list[float],
) -> float:
    """L-BFGS (strong-Wolfe line search) for `iterations` iterations; returns the final loss.

    The budget counts L-BFGS iterations: Zhu et al. run 300 ``LBFGS.step`` calls of up to 20
    iterations each (up to 6,000), so a 300-iteration budget stops an attack in its fast
    phase (about 54 dB on 28x28 digits). The run ends early on divergence (a non-finite loss),
    on an exact zero, or on a stall: less than 1% progress over `STALL_CHUNKS` chunks of
    `LBFGS_CHUNK` iterations. `history` gets the loss at the start of every chunk.
    """
    optimizer = torch.optim.LBFGS(
        variables,
        lr=1.0,
        max_iter=LBFGS_CHUNK,
        history_size=100,
        tolerance_grad=1e-14,
        tolerance_change=1e-16,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        loss = objective()
        grads = torch.autograd.grad(loss, variables)
        for variable, grad in zip(variables, grads, strict=True):
            variable.grad = grad
        return loss.detach()

    done = 0
    starts: list[float] = []
    while done < iterations:
        optimizer.param_groups[0]["max_iter"] = min(LBFGS_CHUNK, iterations - done)
        loss = float(optimizer.step(closure))  # the loss where this chunk starts
        done += LBFGS_CHUNK
        starts.append(loss)
        history.append(loss)
        if not math.isfinite(loss) or loss < 1e-28:
            return loss if math.isfinite(loss) else math.inf
        if len(starts) > STALL_CHUNKS and loss > STALL_RATIO * starts[-1 - STALL_CHUNKS]:
            break
    final = float(objective().detach())
    return final if math.isfinite(final) else math.inf


def _dlg(
    model: nn.Module,
    target: list[torch.Tensor],
    knowledge: AttackerKnowledge,
    config: InversionConfig,
    generator: torch.Generator,
    labels: torch.Tensor | None,
) -> Reconstruction:
    dtype = config.dtype
    shape = (knowledge.batch_size, *knowledge.input_shape)
    iterations = config.iterations or DEFAULT_ITERATIONS["idlg" if labels is not None else "dlg"]
    history: list[float] = []
    best: tuple[float, torch.Tensor, torch.Tensor] | None = None
    for _ in range(max(1, config.restarts)):
        images = torch.randn(shape, generator=generator, dtype=dtype).requires_grad_(True)
        variables = [images]
        if labels is None:
            soft = torch.randn(
                (knowledge.batch_size, knowledge.num_classes), generator=generator, dtype=dtype
            ).requires_grad_(True)
            variables.append(soft)
        current = labels if labels is not None else variables[-1]

        def objective(
            images: torch.Tensor = images, current: torch.Tensor = current
        ) -> torch.Tensor:
            return l2_distance(simulate_update(model, images, current, knowledge), target)

        final = _lbfgs(variables, objective, iterations, history)
        found = labels if labels is not None else current.detach().argmax(dim=-1)
        if best is None or final < best[0]:
            best = (final, images.detach().clone(), found)
    assert best is not None
    return Reconstruction(best[1].clamp(0, 1).float(), best[2], history)


def _cosine_objective(
    model: nn.Module,
    target: list[torch.Tensor],
    knowledge: AttackerKnowledge,
    labels: torch.Tensor,
    tv_weight: float,
) -> Callable[[torch.Tensor], torch.Tensor]:
    def objective(images: torch.Tensor) -> torch.Tensor:
        simulated = simulate_update(model, images, labels, knowledge)
        loss = cosine_distance(simulated, target)
        if tv_weight > 0:
            loss = loss + tv_weight * total_variation(images)
        return loss

    return objective


def _signed_adam_on_images(
    start: torch.Tensor,
    objective: Callable[[torch.Tensor], torch.Tensor],
    iterations: int,
    lr: float,
    history: list[float],
) -> tuple[float, torch.Tensor]:
    """Geiping et al.'s optimiser: Adam fed sign(grad), box projection, step decay."""
    images = start.detach().clone().clamp(0, 1).requires_grad_(True)
    optimizer = torch.optim.Adam([images], lr=lr)
    milestones = [int(iterations * f) for f in (3 / 8, 5 / 8, 7 / 8)]
    decay = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=0.1)
    best_loss, best_images = math.inf, images.detach().clone()
    for _ in range(iterations):
        loss = objective(images)
        (grad,) = torch.autograd.grad(loss, [images])
        value = float(loss.detach())
        if value < best_loss:
            best_loss, best_images = value, images.detach().clone()
        images.grad = grad.sign()
        optimizer.step()
        decay.step()
        with torch.no_grad():
            images.clamp_(0, 1)
        history.append(value)
    final = float(objective(images).detach())
    if final < best_loss:
        best_loss, best_images = final, images.detach().clone()
    return best_loss, best_images


def _ig(
    model: nn.Module,
    target: list[torch.Tensor],
    knowledge: AttackerKnowledge,
    config: InversionConfig,
    generator: torch.Generator,
    labels: torch.Tensor,
) -> Reconstruction:
    shape = (knowledge.batch_size, *knowledge.input_shape)
    iterations = config.iterations or DEFAULT_ITERATIONS["ig"]
    objective = _cosine_objective(model, target, knowledge, labels, config.tv_weight)
    history: list[float] = []
    best_loss, best_images = math.inf, torch.zeros(shape)
    for _ in range(max(1, config.restarts)):
        start = torch.rand(shape, generator=generator, dtype=config.dtype)
        loss, images = _signed_adam_on_images(
            start, objective, iterations, config.lr or 0.01, history
        )
        if loss < best_loss:
            best_loss, best_images = loss, images
    return Reconstruction(best_images.float(), labels, history)


def project_l1_ball(vectors: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """Euclidean projection of each row of `vectors` onto ``{v : ||v||_1 <= radius_row}``.

    Duchi et al. 2008, Fig. 1: with ``u`` the sorted magnitudes and ``rho`` the largest ``j``
    such that ``u_j > (sum_{i<=j} u_i - r) / j``, shrink by ``theta = (sum_{i<=rho} u_i - r)/rho``.
    """
    flat = vectors.reshape(vectors.shape[0], -1)
    radius = radius.reshape(-1, 1).to(flat.dtype)
    magnitudes = flat.abs()
    inside = magnitudes.sum(dim=1, keepdim=True) <= radius
    sorted_mag, _ = magnitudes.sort(dim=1, descending=True)
    cumulative = sorted_mag.cumsum(dim=1)
    ranks = torch.arange(1, flat.shape[1] + 1, dtype=flat.dtype)
    condition = sorted_mag > (cumulative - radius) / ranks
    rho = condition.to(torch.int64).cumsum(dim=1).argmax(dim=1, keepdim=True)
    theta = (cumulative.gather(1, rho) - radius) / (rho + 1).to(flat.dtype)
    projected = flat.sign() * (magnitudes - theta).clamp_min(0)
    return torch.where(inside, flat, projected).reshape(vectors.shape)


def _adam_loop(
    variable: torch.Tensor,
    loss_of: Callable[[torch.Tensor], torch.Tensor],
    iterations: int,
    lr: float,
    history: list[float],
    project: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[float, torch.Tensor]:
    variable = variable.detach().clone().requires_grad_(True)
    optimizer = torch.optim.Adam([variable], lr=lr)
    decay = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, iterations))
    best_loss, best_value = math.inf, variable.detach().clone()
    for _ in range(iterations):
        loss = loss_of(variable)
        (grad,) = torch.autograd.grad(loss, [variable])
        value = float(loss.detach())
        history.append(value)
        if value < best_loss:
            best_loss, best_value = value, variable.detach().clone()
        variable.grad = grad
        optimizer.step()
        decay.step()
        if project is not None:
            with torch.no_grad():
                variable.copy_(project(variable))
    final = float(loss_of(variable).detach())
    if final < best_loss:
        best_loss, best_value = final, variable.detach().clone()
    return best_loss, best_value


def _gan(
    model: nn.Module,
    target: list[torch.Tensor],
    knowledge: AttackerKnowledge,
    config: InversionConfig,
    generator: torch.Generator,
    labels: torch.Tensor,
) -> Reconstruction:
    if not isinstance(config.prior, GanPrior):
        raise ValueError("method 'gan' needs config.prior, a trained GanPrior")
    prior = copy.deepcopy(config.prior).to(config.dtype).eval()
    for param in prior.parameters():
        param.requires_grad_(False)
    iterations = config.iterations or DEFAULT_ITERATIONS["gan"]
    stages = len(prior.stages)
    per_phase = max(1, iterations // stages)
    objective = _cosine_objective(model, target, knowledge, labels, 0.0)
    history: list[float] = []
    best_loss, best_latent = math.inf, torch.zeros(0)
    for _ in range(max(1, config.restarts)):
        latent = torch.randn(
            (knowledge.batch_size, prior.latent_dim), generator=generator, dtype=config.dtype
        )
        loss, found = _adam_loop(
            latent, lambda z: objective(prior(z)), per_phase, config.lr or 0.05, history
        )
        if loss < best_loss:
            best_loss, best_latent = loss, found
    with torch.no_grad():
        features = prior.stages[0](best_latent)
        best_images = prior.forward_from(1, features)
    for stage in range(1, stages):
        anchor = features.detach()
        radius = config.gan_l1_ratio * anchor.reshape(anchor.shape[0], -1).abs().sum(dim=1)

        def loss_of(
            offset: torch.Tensor, stage: int = stage, anchor: torch.Tensor = anchor
        ) -> torch.Tensor:
            return objective(prior.forward_from(stage, anchor + offset))

        def project(offset: torch.Tensor, radius: torch.Tensor = radius) -> torch.Tensor:
            return project_l1_ball(offset, radius)

        loss, offset = _adam_loop(
            torch.zeros_like(anchor), loss_of, per_phase, 0.01, history, project=project
        )
        with torch.no_grad():
            features = anchor + offset
            if loss < best_loss:
                best_loss, best_images = loss, prior.forward_from(stage, features)
            features = prior.stages[stage](features)
    return Reconstruction(best_images.detach().clamp(0, 1).float(), labels, history)


def _guidance_residual(
    model: nn.Module,
    target: list[torch.Tensor],
    knowledge: AttackerKnowledge,
    labels: torch.Tensor,
    images: torch.Tensor,
    loss: str,
) -> torch.Tensor:
    """DPS's measurement residual ``||y - A(x)||`` for the observed gradient ``y = g``.

    ``l2``: ``A(x) = g(x)``, relative to ``||g||``; ``cosine``: ``A(x) = g(x) / ||g(x)||`` and
    ``y = g / ||g||``, whose squared residual is ``2 (1 - cos(g(x), g))``, the IG distance.
    """
    simulated = simulate_update(model, images, labels, knowledge)
    if loss == "cosine":
        return (2.0 * cosine_distance(simulated, target)).clamp_min(0).sqrt()
    norm = sum((t.pow(2).sum() for t in target), torch.zeros((), dtype=target[0].dtype)).sqrt()
    return l2_distance(simulated, target).sqrt() / norm.clamp_min(1e-30)


def _diffusion_posterior_sampling(
    model: nn.Module,
    target: list[torch.Tensor],
    knowledge: AttackerKnowledge,
    config: InversionConfig,
    generator: torch.Generator,
    labels: torch.Tensor,
    history: list[float],
) -> torch.Tensor:
    """Gradient-guided DDPM sampling (DPS, Chung et al. 2023, Algorithm 1); images in [0, 1].

    On ``config.diffusion_steps`` evenly strided steps ``t > s`` of the prior's schedule:

    - Tweedie's formula (DPS Eq. 10): ``x0_hat = (x_t - sqrt(1 - abar_t) eps_theta(x_t, t))
      / sqrt(abar_t)``;
    - the DDPM ancestral step (Ho et al. 2020, Eqs. 6-7, with ``alpha = abar_t / abar_s``,
      ``beta = 1 - alpha``): ``x'_s = sqrt(abar_s) beta / (1 - abar_t) clip(x0_hat)
      + sqrt(alpha) (1 - abar_s) / (1 - abar_t) x_t + sigma z``,
      ``sigma^2 = (1 - abar_s) / (1 - abar_t) beta``;
    - the guidance (DPS Algorithm 1, line 7, with the step ``zeta_t = zeta' / ||y - A(x0_hat)||``
      of their experiments): ``x_s = x'_s - zeta_t grad_{x_t} ||y - A(x0_hat(x_t))||^2``,
      with ``y`` the observed gradient and ``A(x) = g(x)`` the update the victim would send
      for ``x`` (`_guidance_residual`; the gradient passes through eps_theta), and
      ``zeta' = config.guidance_scale``.

    The gradient-inversion use of this sampler follows the gradient-guided diffusion attacks
    (GG-CDM, Meng et al. 2025, arXiv:2511.10423). Returns ``x0_hat`` of the last step.
    """
    if not isinstance(config.prior, DiffusionPrior):
        raise ValueError("the diffusion methods need config.prior, a trained DiffusionPrior")
    if config.diffusion_steps < 1:
        raise ValueError(f"diffusion_steps must be >= 1, got {config.diffusion_steps}")
    prior = copy.deepcopy(config.prior).to(config.dtype).eval()
    for param in prior.parameters():
        param.requires_grad_(False)
    alphas_cumprod = prior.make_scheduler().alphas_cumprod.to(config.dtype)
    total = len(alphas_cumprod)
    steps = min(config.diffusion_steps, total)
    timesteps = torch.linspace(total - 1, 0, steps).round().long().tolist()
    shape = (knowledge.batch_size, *knowledge.input_shape)
    sample = torch.randn(shape, generator=generator, dtype=config.dtype)
    clean = sample
    for index, t in enumerate(timesteps):
        abar_t = alphas_cumprod[t]
        abar_s = alphas_cumprod[timesteps[index + 1]] if index + 1 < steps else abar_t.new_ones(())
        noisy = sample.detach().requires_grad_(True)
        noise = prior.predict_noise(noisy, t)
        clean = (noisy - (1 - abar_t).sqrt() * noise) / abar_t.sqrt()
        residual = _guidance_residual(
            model, target, knowledge, labels, (clean + 1) / 2, config.guidance_loss
        )
        (grad,) = torch.autograd.grad(residual.pow(2), [noisy])
        value = float(residual.detach())
        history.append(value)
        with torch.no_grad():
            alpha = abar_t / abar_s
            beta = 1 - alpha
            mean = (abar_s.sqrt() * beta / (1 - abar_t)) * clean.clamp(-1, 1) + (
                alpha.sqrt() * (1 - abar_s) / (1 - abar_t)
            ) * noisy
            if index + 1 < steps:
                variance = (1 - abar_s) / (1 - abar_t) * beta
                z = torch.randn(shape, generator=generator, dtype=config.dtype)
                mean = mean + variance.sqrt() * z
            zeta = config.guidance_scale / max(value, 1e-30)
            sample = mean - zeta * grad
    return ((clean.detach().clamp(-1, 1) + 1) / 2).to(config.dtype)


def _diffusion(
    model: nn.Module,
    target: list[torch.Tensor],
    knowledge: AttackerKnowledge,
    config: InversionConfig,
    generator: torch.Generator,
    labels: torch.Tensor,
) -> Reconstruction:
    """``diffusion``: the DPS sample alone, so the prior's own contribution is visible."""
    history: list[float] = []
    images = _diffusion_posterior_sampling(
        model, target, knowledge, config, generator, labels, history
    )
    return Reconstruction(images.float(), labels, history)


def _diffusion_ig(
    model: nn.Module,
    target: list[torch.Tensor],
    knowledge: AttackerKnowledge,
    config: InversionConfig,
    generator: torch.Generator,
    labels: torch.Tensor,
) -> Reconstruction:
    """``diffusion-ig``: the DPS sample, then Inverting-Gradients (`_ig`'s signed Adam) started
    from it for ``refine_iterations`` steps with TV weight ``refine_tv_weight``.

    The prior already supplies what TV stands for in IG; with IG's own weight (1e-2) the TV
    term outweighs the cosine distance near a good sample and flattens it (8x8 digits,
    lenet-zhu: 34 dB DPS samples ended at 11 dB)."""
    history: list[float] = []
    start = _diffusion_posterior_sampling(
        model, target, knowledge, config, generator, labels, history
    )
    refine = config.refine_iterations
    if refine is None:
        refine = config.iterations or DEFAULT_ITERATIONS["diffusion-ig"]
    if refine < 1:
        return Reconstruction(start.float(), labels, history)
    objective = _cosine_objective(model, target, knowledge, labels, config.refine_tv_weight)
    _, images = _signed_adam_on_images(start, objective, refine, config.lr or 0.01, history)
    return Reconstruction(images.clamp(0, 1).float(), labels, history)


def invert(
    method: str,
    model: nn.Module,
    observed_update: list[torch.Tensor],
    knowledge: AttackerKnowledge,
    config: InversionConfig | None = None,
    generator: torch.Generator | None = None,
) -> Reconstruction:
    """Reconstruct the batch behind `observed_update` with attack `method` (see `METHODS`).

    `observed_update` lists one tensor per ``model.parameters()`` entry: a gradient
    (``update``, ``cluster-sum``) or the model delta ``w_after - w_before`` (``fedavg``).
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; known: {', '.join(METHODS)}")
    config = config or InversionConfig()
    if config.restarts < 1:
        raise ValueError(f"restarts must be >= 1, got {config.restarts}")
    if config.labels not in LABEL_METHODS:
        raise ValueError(
            f"unknown label method {config.labels!r}; known: {', '.join(LABEL_METHODS)}"
        )
    if config.iterations is not None and config.iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {config.iterations}")
    validate_observed_update(model, observed_update)
    generator = generator or torch.Generator().manual_seed(0)
    attack_model = copy.deepcopy(model).to(config.dtype).eval()
    _check_model(attack_model, knowledge)
    target = observed_pseudo_gradient(observed_update, knowledge, config.dtype)
    if method == "dlg":
        return _dlg(attack_model, target, knowledge, config, generator, None)
    labels = recover_labels(attack_model, target, knowledge, generator, config.labels)
    if method == "idlg":
        return _dlg(attack_model, target, knowledge, config, generator, labels)
    if method == "ig":
        return _ig(attack_model, target, knowledge, config, generator, labels)
    if method == "gan":
        return _gan(attack_model, target, knowledge, config, generator, labels)
    if method == "diffusion":
        return _diffusion(attack_model, target, knowledge, config, generator, labels)
    return _diffusion_ig(attack_model, target, knowledge, config, generator, labels)
