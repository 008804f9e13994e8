"""What the attacker knows, how it configures an attack, and what an attack returns."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from phalanx.adversary.inversion.names import DEFAULT_LABEL_METHOD

TargetKind = Literal["update", "fedavg", "cluster-sum"]
TARGET_KINDS: tuple[str, ...] = ("update", "fedavg", "cluster-sum")

Defense = Callable[[list[torch.Tensor]], list[torch.Tensor]]


@dataclass(frozen=True)
class AttackerKnowledge:
    """The threat model: what an honest-but-curious aggregator knows about the victim's update.

    - ``batch_size``: images behind the update (the attacker optimises that many dummies);
    - ``local_steps`` and ``lr``: plain-SGD steps the victim took on its batch (``fedavg``);
    - ``target_kind``: ``update`` (a FedSGD gradient), ``fedavg`` (the model delta
      ``w_after - w_before``) or ``cluster-sum`` (the sum of ``cluster_size`` gradients);
    - ``input_shape`` (C, H, W) and ``num_classes`` of the task.
    """

    batch_size: int
    input_shape: tuple[int, int, int]
    num_classes: int
    target_kind: TargetKind = "update"
    local_steps: int = 1
    lr: float = 0.1
    cluster_size: int = 1

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.target_kind not in TARGET_KINDS:
            raise ValueError(
                f"target_kind {self.target_kind!r} unknown; known: {', '.join(TARGET_KINDS)}"
            )
        if self.local_steps < 1:
            raise ValueError(f"local_steps must be >= 1, got {self.local_steps}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.cluster_size < 1:
            raise ValueError(f"cluster_size must be >= 1, got {self.cluster_size}")
        if len(self.input_shape) != 3 or min(self.input_shape) < 1:
            raise ValueError(f"input_shape must be (C, H, W) positive, got {self.input_shape}")
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {self.num_classes}")


@dataclass
class InversionConfig:
    """Optimisation settings shared by the attacks; ``None`` picks each method's default.

    ``prior`` is a trained generative prior (`GanPrior` or `DiffusionPrior`) for the methods
    ``gan``, ``diffusion`` and ``diffusion-ig``. ``diffusion_steps``, ``guidance_scale``
    (DPS's ``zeta'``) and ``guidance_loss`` (``cosine`` or ``l2``) set the guided sampler;
    ``refine_iterations`` and ``refine_tv_weight`` the IG refinement of ``diffusion-ig``.
    ``labels`` is the label-recovery rule of every method but ``dlg`` (`labels.LABEL_METHODS`).
    """

    iterations: int | None = None
    lr: float | None = None
    tv_weight: float = 1e-2
    restarts: int = 1
    prior: nn.Module | None = None
    gan_l1_ratio: float = 0.05
    diffusion_steps: int = 500
    guidance_scale: float = 5.0
    guidance_loss: str = "cosine"
    refine_iterations: int | None = None
    refine_tv_weight: float = 1e-4
    dtype: torch.dtype = torch.float64
    labels: str = DEFAULT_LABEL_METHOD


@dataclass
class Reconstruction:
    """Reconstructed images (B, C, H, W) in [0, 1], recovered labels (B,), loss history."""

    images: torch.Tensor
    labels: torch.Tensor
    history: list[float] = field(default_factory=list)
