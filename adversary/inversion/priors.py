"""Generative image priors for the attacks, trained on an auxiliary split and cached on disk.

- `GanPrior`: a small DCGAN-style generator (Radford et al. 2016) trained with the non-saturating
  GAN loss (Goodfellow et al. 2014): ``max_D log D(x) + log(1 - D(G(z)))``,
  ``max_G log D(G(z))``. Its stages are kept separate so that GIFD (Fang et al. 2023) can
  optimise intermediate features.
- `DiffusionPrior`: a DDPM (Ho et al. 2020) with a tiny ``diffusers`` U-Net trained on the
  simple loss ``E ||eps - eps_theta(sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, t)||^2``.

The auxiliary split (`auxiliary_split`) is disjoint from the images that victims hold, so a prior
never saw the images it helps reconstruct. Cached priors are keyed by data set, image shape and
every hyper-parameter (`PriorSpec.cache_key`).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from phalanx.adversary.inversion.names import PRIOR_KINDS as PRIOR_KINDS

DEFAULT_CACHE_DIR = Path("~/.cache/phalanx/priors")
CACHE_ENV = "PHALANX_PRIOR_CACHE"

ProgressCallback = Callable[[int, int], None]


def auxiliary_split(num_images: int, fraction: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Fixed (auxiliary, victim) index split of a training set: a permutation seeded with 0.

    The auxiliary part trains priors (and the "trained" victim model); victims draw only from
    the other part.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"auxiliary fraction must be in (0, 1), got {fraction}")
    order = np.random.default_rng(0).permutation(num_images)
    cut = round(num_images * fraction)
    if cut < 1 or cut >= num_images:
        raise ValueError(f"{num_images} images are too few to split with fraction {fraction}")
    return np.sort(order[:cut]), np.sort(order[cut:])


@dataclass(frozen=True)
class PriorSpec:
    """Every hyper-parameter that changes a trained prior."""

    kind: str
    dataset: str
    input_shape: tuple[int, int, int]
    steps: int = 1500
    batch_size: int = 64
    lr: float = 2e-3
    width: int = 32
    latent_dim: int = 32
    timesteps: int = 1000
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in PRIOR_KINDS:
            raise ValueError(f"prior kind {self.kind!r} unknown; known: {', '.join(PRIOR_KINDS)}")
        if self.steps < 1:
            raise ValueError(f"prior steps must be >= 1, got {self.steps}")
        if self.width < 8 or self.width % 8:
            raise ValueError(f"prior width must be a positive multiple of 8, got {self.width}")
        _, h, w = self.input_shape
        if h % 4 or w % 4:
            raise ValueError(f"prior image height and width must be multiples of 4, got {h}x{w}")

    def cache_key(self) -> str:
        digest = hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()
        c, h, w = self.input_shape
        return f"{self.kind}-{self.dataset}-{c}x{h}x{w}-{digest[:16]}"


class GanPrior(nn.Module):
    """Generator ``z -> [0, 1]^(C, H, W)`` in three stages: dense, upsample-conv, upsample-conv."""

    def __init__(self, input_shape: tuple[int, int, int], latent_dim: int, width: int) -> None:
        super().__init__()
        c, h, w = input_shape
        self.input_shape = input_shape
        self.latent_dim = latent_dim
        self.stages = nn.ModuleList(
            [
                nn.Sequential(
                    nn.Linear(latent_dim, 2 * width * (h // 4) * (w // 4)),
                    nn.Unflatten(1, (2 * width, h // 4, w // 4)),
                    nn.LeakyReLU(0.2),
                ),
                nn.Sequential(
                    nn.Upsample(scale_factor=2),
                    nn.Conv2d(2 * width, width, 3, padding=1),
                    nn.LeakyReLU(0.2),
                ),
                nn.Sequential(
                    nn.Upsample(scale_factor=2), nn.Conv2d(width, c, 3, padding=1), nn.Sigmoid()
                ),
            ]
        )

    def forward_from(self, stage: int, features: torch.Tensor) -> torch.Tensor:
        """Run stages ``stage, stage+1, ...`` on `features` (stage 0 takes the latent)."""
        for module in self.stages[stage:]:
            features = module(features)
        return features

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return self.forward_from(0, latent)


def _discriminator(input_shape: tuple[int, int, int], width: int) -> nn.Module:
    c, h, w = input_shape
    return nn.Sequential(
        nn.Conv2d(c, width, 3, stride=2, padding=1),
        nn.LeakyReLU(0.2),
        nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
        nn.LeakyReLU(0.2),
        nn.Flatten(),
        nn.Linear(2 * width * (h // 4) * (w // 4), 1),
    )


class DiffusionPrior(nn.Module):
    """A DDPM: a tiny ``diffusers.UNet2DModel`` and the length of its noise schedule."""

    def __init__(self, input_shape: tuple[int, int, int], width: int, timesteps: int) -> None:
        super().__init__()
        from diffusers import UNet2DModel

        c, h, w = input_shape
        self.input_shape = input_shape
        self.timesteps = timesteps
        self.unet = UNet2DModel(
            sample_size=(h, w),
            in_channels=c,
            out_channels=c,
            layers_per_block=1,
            block_out_channels=(width, 2 * width),
            down_block_types=("DownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "UpBlock2D"),
            norm_num_groups=8,
            add_attention=False,
        )

    def make_scheduler(self) -> Any:
        """A fresh ``diffusers.DDPMScheduler`` with the schedule the U-Net was trained on."""
        from diffusers import DDPMScheduler

        return DDPMScheduler(num_train_timesteps=self.timesteps)

    def predict_noise(self, noisy: torch.Tensor, timestep: torch.Tensor | int) -> torch.Tensor:
        output = self.unet(noisy, timestep)  # type: ignore[operator]
        return output.sample


def _build(spec: PriorSpec) -> nn.Module:
    if spec.kind == "gan":
        return GanPrior(spec.input_shape, spec.latent_dim, spec.width)
    return DiffusionPrior(spec.input_shape, spec.width, spec.timesteps)


def train_prior(
    spec: PriorSpec, images: np.ndarray, progress: ProgressCallback | None = None
) -> nn.Module:
    """Train the prior `spec` describes on `images` (N, C, H, W) in [0, 1]; deterministic."""
    if images.ndim != 4 or tuple(images.shape[1:]) != tuple(spec.input_shape):
        raise ValueError(
            f"prior images have shape {images.shape}, expected (N, *{spec.input_shape})"
        )
    if len(images) < 2:
        raise ValueError(f"a prior needs at least 2 auxiliary images, got {len(images)}")
    data = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    generator = torch.Generator().manual_seed(spec.seed)
    with torch.random.fork_rng():
        torch.manual_seed(spec.seed)
        prior = _build(spec)
        discriminator = _discriminator(spec.input_shape, spec.width) if spec.kind == "gan" else None
    batch = min(spec.batch_size, len(data))
    if isinstance(prior, GanPrior):
        assert discriminator is not None
        _train_gan(prior, discriminator, data, spec, batch, generator, progress)
    else:
        assert isinstance(prior, DiffusionPrior)
        _train_diffusion(prior, data, spec, batch, generator, progress)
    prior.eval()
    return prior


def _train_gan(
    generator_net: GanPrior,
    discriminator: nn.Module,
    data: torch.Tensor,
    spec: PriorSpec,
    batch: int,
    rng: torch.Generator,
    progress: ProgressCallback | None,
) -> None:
    opt_g = torch.optim.Adam(generator_net.parameters(), lr=spec.lr / 4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=spec.lr / 4, betas=(0.5, 0.999))
    bce = nn.functional.binary_cross_entropy_with_logits
    for step in range(spec.steps):
        real = data[torch.randint(len(data), (batch,), generator=rng)]
        latent = torch.randn((batch, spec.latent_dim), generator=rng)
        fake = generator_net(latent)
        ones, zeros = torch.ones(batch, 1), torch.zeros(batch, 1)
        opt_d.zero_grad(set_to_none=True)
        loss_d = bce(discriminator(real), ones) + bce(discriminator(fake.detach()), zeros)
        loss_d.backward()
        opt_d.step()
        opt_g.zero_grad(set_to_none=True)
        loss_g = bce(discriminator(fake), ones)
        loss_g.backward()
        opt_g.step()
        if progress is not None:
            progress(step + 1, spec.steps)


def _train_diffusion(
    prior: DiffusionPrior,
    data: torch.Tensor,
    spec: PriorSpec,
    batch: int,
    rng: torch.Generator,
    progress: ProgressCallback | None,
) -> None:
    scheduler = prior.make_scheduler()
    optimizer = torch.optim.Adam(prior.parameters(), lr=spec.lr)
    lr_decay = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=spec.steps)
    prior.train()
    for step in range(spec.steps):
        clean = data[torch.randint(len(data), (batch,), generator=rng)] * 2.0 - 1.0
        noise = torch.randn(clean.shape, generator=rng)
        timesteps = torch.randint(spec.timesteps, (batch,), generator=rng)
        noisy = scheduler.add_noise(clean, noise, timesteps)
        loss = nn.functional.mse_loss(prior.predict_noise(noisy, timesteps), noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        lr_decay.step()
        if progress is not None:
            progress(step + 1, spec.steps)


def resolve_cache_dir(cache_dir: str | Path | None) -> Path:
    """`cache_dir`, else ``$PHALANX_PRIOR_CACHE``, else ``~/.cache/phalanx/priors``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    return Path(os.environ.get(CACHE_ENV, str(DEFAULT_CACHE_DIR))).expanduser()


def load_or_train_prior(
    spec: PriorSpec,
    images: np.ndarray,
    cache_dir: str | Path | None = None,
    progress: ProgressCallback | None = None,
) -> tuple[nn.Module, Path, bool]:
    """(prior, cache file, loaded-from-cache?) for `spec`; trains and saves it when missing."""
    path = resolve_cache_dir(cache_dir) / f"{spec.cache_key()}.pt"
    if path.is_file():
        state = torch.load(path, map_location="cpu", weights_only=True)
        with torch.random.fork_rng():
            torch.manual_seed(spec.seed)
            prior = _build(spec)
        prior.load_state_dict(state)
        prior.eval()
        return prior, path, True
    prior = train_prior(spec, images, progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".tmp")
    torch.save(prior.state_dict(), partial)
    partial.replace(path)
    return prior, path, False
