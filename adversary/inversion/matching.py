"""Simulating the victim's update on dummy data and comparing it with the observed one.

The attacker replays the victim's computation on dummy inputs ``x'`` (Zhu et al. 2019, Eq. 4):

- FedSGD: ``g(x') = grad_w (1/B) sum_b CE(f_w(x'_b), y'_b)``;
- FedAvg after ``S`` plain-SGD steps with rate ``eta`` on the same batch (Geiping et al. 2020,
  Sec. 5): unroll ``w_{s+1} = w_s - eta g_{w_s}(x')`` with the graph kept, and compare the
  pseudo-gradient ``(w_0 - w_S) / (eta S)`` with the observed ``-delta / (eta S)``;
- a cluster sum of ``k`` gradients is divided by ``k`` (the cluster size is public).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call

from phalanx.adversary.inversion.knowledge import AttackerKnowledge


def validate_observed_update(model: nn.Module, observed_update: list[torch.Tensor]) -> None:
    """Raise ValueError unless `observed_update` has one tensor per parameter, same shapes."""
    named = list(model.named_parameters())
    if len(observed_update) != len(named):
        raise ValueError(
            f"observed_update has {len(observed_update)} tensors but the model has "
            f"{len(named)} parameters"
        )
    for index, (tensor, (name, param)) in enumerate(zip(observed_update, named, strict=True)):
        if tuple(tensor.shape) != tuple(param.shape):
            raise ValueError(
                f"observed_update[{index}] has shape {tuple(tensor.shape)} but model parameter "
                f"{name!r} has shape {tuple(param.shape)}"
            )
        if not torch.isfinite(tensor).all():
            raise ValueError(f"observed_update[{index}] ({name!r}) holds NaN or infinite values")


def observed_pseudo_gradient(
    observed_update: list[torch.Tensor], knowledge: AttackerKnowledge, dtype: torch.dtype
) -> list[torch.Tensor]:
    """Map the observed update to the gradient scale the simulation produces."""
    tensors = [t.detach().to(dtype) for t in observed_update]
    if knowledge.target_kind == "fedavg":
        scale = -1.0 / (knowledge.lr * knowledge.local_steps)
        return [scale * t for t in tensors]
    if knowledge.target_kind == "cluster-sum":
        return [t / knowledge.cluster_size for t in tensors]
    return tensors


def batch_loss(
    model: nn.Module,
    params: dict[str, torch.Tensor],
    inputs: torch.Tensor,
    labels: torch.Tensor,
) -> torch.Tensor:
    """Mean cross-entropy; `labels` are class indices (B,) or soft-label logits (B, K)."""
    logits = functional_call(model, params, (inputs,))
    if labels.dim() == 1:
        return nn.functional.cross_entropy(logits, labels)
    soft = torch.softmax(labels, dim=-1)
    return -(soft * torch.log_softmax(logits, dim=-1)).sum(dim=-1).mean()


def simulate_update(
    model: nn.Module,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    knowledge: AttackerKnowledge,
) -> list[torch.Tensor]:
    """Differentiable pseudo-gradient the victim would send for (inputs, labels)."""
    names = [name for name, _ in model.named_parameters()]
    start: list[torch.Tensor] = [p for _, p in model.named_parameters()]
    steps = knowledge.local_steps if knowledge.target_kind == "fedavg" else 1
    current = list(start)
    for _ in range(steps):
        params = dict(zip(names, current, strict=True))
        loss = batch_loss(model, params, inputs, labels)
        grads = torch.autograd.grad(loss, current, create_graph=True)
        if steps == 1:
            return list(grads)
        current = [p - knowledge.lr * g for p, g in zip(current, grads, strict=True)]
    scale = 1.0 / (knowledge.lr * steps)
    return [(p0 - p) * scale for p0, p in zip(start, current, strict=True)]


def l2_distance(simulated: list[torch.Tensor], observed: list[torch.Tensor]) -> torch.Tensor:
    """DLG objective ``sum_l ||g'_l - g_l||^2`` (Zhu et al. 2019, Eq. 4)."""
    return sum(
        (((s - o) ** 2).sum() for s, o in zip(simulated, observed, strict=True)),
        torch.zeros((), dtype=observed[0].dtype),
    )


def cosine_distance(simulated: list[torch.Tensor], observed: list[torch.Tensor]) -> torch.Tensor:
    """Inverting-Gradients objective ``1 - <g', g> / (||g'|| ||g||)`` over all layers
    (Geiping et al. 2020, Eq. 4)."""
    dot = torch.zeros((), dtype=observed[0].dtype)
    norm_s = torch.zeros((), dtype=observed[0].dtype)
    norm_o = torch.zeros((), dtype=observed[0].dtype)
    for s, o in zip(simulated, observed, strict=True):
        dot = dot + (s * o).sum()
        norm_s = norm_s + (s * s).sum()
        norm_o = norm_o + (o * o).sum()
    return 1.0 - dot / (norm_s.sqrt() * norm_o.sqrt() + 1e-20)


def total_variation(images: torch.Tensor) -> torch.Tensor:
    """Anisotropic TV ``mean|x_{i+1,j}-x_{i,j}| + mean|x_{i,j+1}-x_{i,j}|`` (Rudin et al. 1992)."""
    dy = (images[:, :, 1:, :] - images[:, :, :-1, :]).abs().mean()
    dx = (images[:, :, :, 1:] - images[:, :, :, :-1]).abs().mean()
    return dx + dy
