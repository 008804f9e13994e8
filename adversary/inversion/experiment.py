"""One attack experiment end to end: pick victims, build what the aggregator sees, invert, score.

Victim images come from the non-auxiliary part of the training split (`auxiliary_split`); priors
and the ``trained`` victim model use only the auxiliary part.
"""

from __future__ import annotations

import hashlib
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from phalanx.adversary.inversion.attacks import METHODS, PRIOR_OF, invert
from phalanx.adversary.inversion.knowledge import AttackerKnowledge, Defense, InversionConfig
from phalanx.adversary.inversion.metrics import (
    label_accuracy,
    match_reconstructions,
    mse,
    psnr,
    save_grid,
    ssim,
)
from phalanx.adversary.inversion.names import DEFAULT_LABEL_METHOD
from phalanx.adversary.inversion.names import DEFAULT_PRIOR_STEPS as DEFAULT_PRIOR_STEPS
from phalanx.adversary.inversion.names import DEFAULT_TORCH_THREADS as DEFAULT_TORCH_THREADS
from phalanx.adversary.inversion.priors import (
    PriorSpec,
    ProgressCallback,
    auxiliary_split,
    load_or_train_prior,
)
from phalanx.adversary.inversion.targets import observe, parse_target
from phalanx.learning.data import Dataset
from phalanx.learning.models import build_model
from phalanx.learning.train import TrainConfig, train_local


@contextmanager
def pinned_torch(threads: int = DEFAULT_TORCH_THREADS) -> Iterator[None]:
    """Run the block with a fixed intra-op thread count and deterministic kernels, then restore.

    Parallel CPU reductions split their sums by thread count, so torch's default (one thread per
    core) changes the rounding from one machine to the next and an L-BFGS attack amplifies
    those last bits; a fixed count makes a seed's reconstruction the same bytes on any machine
    and under any load.
    """
    if threads < 1:
        raise ValueError(f"torch threads must be >= 1, got {threads}")
    before = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled())
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(before[0])
        torch.use_deterministic_algorithms(before[1])


DEFAULT_PRIOR_WIDTH = {"gan": 32, "diffusion": 16}


@dataclass
class ExperimentSpec:
    """Everything ``phalanx attack invert`` takes."""

    method: str
    model: str
    batch: int
    images: int | None = None
    target: str = "update"
    defense: Defense | None = None
    trained: bool = False
    iterations: int | None = None
    seed: int = 0
    lr: float = 0.1
    restarts: int = 1
    prior_steps: int | None = None
    prior_cache_dir: str | Path | None = None
    out_dir: Path | None = None
    mpc_mode: str | None = None
    labels: str = DEFAULT_LABEL_METHOD


@dataclass
class ImageResult:
    index: int
    true_label: int
    recovered_label: int
    mse: float
    psnr: float
    ssim: float


@dataclass
class ExperimentResult:
    rows: list[ImageResult]
    label_accuracy: float
    seconds_per_image: float
    used_secure_sum: bool | None
    grid_path: Path | None = None
    extra: dict[str, object] = field(default_factory=dict)
    digest: str = ""
    torch_threads: int = 0

    @property
    def median_psnr(self) -> float:
        return statistics.median(r.psnr for r in self.rows)

    @property
    def median_ssim(self) -> float:
        return statistics.median(r.ssim for r in self.rows)

    @property
    def median_mse(self) -> float:
        return statistics.median(r.mse for r in self.rows)

    def summary(self) -> dict[str, object]:
        return {
            "median_psnr": self.median_psnr,
            "median_ssim": self.median_ssim,
            "median_mse": self.median_mse,
            "label_accuracy": self.label_accuracy,
            "seconds_per_image": self.seconds_per_image,
            "images": len(self.rows),
            "used_secure_sum": self.used_secure_sum,
            "grid": str(self.grid_path) if self.grid_path else None,
            "reconstruction_sha256": self.digest,
            "torch_threads": self.torch_threads,
            "per_image": [vars(r) for r in self.rows],
        }


def victim_model(
    name: str, dataset: Dataset, seed: int, trained: bool, aux_index: np.ndarray
) -> nn.Module:
    """The global model under attack; ``trained`` runs one epoch on the auxiliary split."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = build_model(name, dataset.input_shape, dataset.num_classes)
    if trained:
        config = TrainConfig(epochs=1, batch_size=32, lr=0.05 if name != "lenet-zhu" else 0.01)
        train_local(model, dataset.train_x[aux_index], dataset.train_y[aux_index], config, seed)
    return model.eval()


def load_prior_for(
    kind: str,
    dataset: Dataset,
    steps: int | None,
    cache_dir: str | Path | None,
    progress: ProgressCallback | None = None,
    seed: int = 0,
) -> tuple[nn.Module, Path, bool]:
    """Load (or train and cache) the `kind` prior (or the prior of method `kind`) for `dataset`
    on its auxiliary split."""
    kind = PRIOR_OF.get(kind, kind)
    aux_index, _ = auxiliary_split(len(dataset.train_x))
    spec = PriorSpec(
        kind,
        dataset.name,
        dataset.input_shape,
        steps=steps or DEFAULT_PRIOR_STEPS[kind],
        width=DEFAULT_PRIOR_WIDTH[kind],
        batch_size=64 if kind == "gan" else 32,
        seed=seed,
    )
    return load_or_train_prior(spec, dataset.train_x[aux_index], cache_dir, progress)


def run_experiment(
    spec: ExperimentSpec,
    dataset: Dataset,
    prior: nn.Module | None = None,
    on_batch: Callable[[int, int], None] | None = None,
) -> ExperimentResult:
    """Attack ``images / batch`` victim batches and score each reconstruction."""
    if spec.method not in METHODS:
        raise ValueError(f"unknown method {spec.method!r}; known: {', '.join(METHODS)}")
    target = parse_target(spec.target)
    images = spec.images if spec.images is not None else spec.batch
    if spec.batch < 1:
        raise ValueError(f"batch must be >= 1, got {spec.batch}")
    if images < spec.batch or images % spec.batch:
        raise ValueError(f"images ({images}) must be a positive multiple of batch ({spec.batch})")
    aux_index, victim_index = auxiliary_split(len(dataset.train_x))
    pool = victim_index[np.random.default_rng(spec.seed).permutation(len(victim_index))]
    batches = images // spec.batch
    needed = images + batches * (target.cluster_size - 1) * spec.batch
    if spec.batch > len(pool):
        raise ValueError(f"batch {spec.batch} is larger than the {len(pool)} victim images")
    if needed > len(pool):
        raise ValueError(
            f"{images} images with {spec.target} need {needed} victim images, "
            f"only {len(pool)} exist"
        )
    if spec.method in PRIOR_OF and prior is None:
        raise ValueError(f"method {spec.method!r} needs a trained prior")
    model = victim_model(spec.model, dataset, spec.seed, spec.trained, aux_index)
    knowledge = AttackerKnowledge(
        batch_size=spec.batch,
        input_shape=dataset.input_shape,
        num_classes=dataset.num_classes,
        target_kind=target.kind,
        local_steps=target.local_steps,
        lr=spec.lr,
        cluster_size=target.cluster_size,
    )
    config = InversionConfig(
        iterations=spec.iterations, restarts=spec.restarts, prior=prior, labels=spec.labels
    )
    rows: list[ImageResult] = []
    originals: list[np.ndarray] = []
    recons: list[np.ndarray] = []
    labels_right = 0.0  # each batch's label multiset is scored on its own
    used: bool | None = None
    elapsed = 0.0
    cursor = images
    for batch_number in range(batches):
        chosen = pool[batch_number * spec.batch : (batch_number + 1) * spec.batch]
        victim = (dataset.train_x[chosen], dataset.train_y[chosen])
        others = []
        for _ in range(target.cluster_size - 1):
            other = pool[cursor : cursor + spec.batch]
            cursor += spec.batch
            others.append((dataset.train_x[other], dataset.train_y[other]))
        observation = observe(model, victim, target, spec.lr, others, spec.mpc_mode, spec.defense)
        used = observation.used_secure_sum
        generator = torch.Generator().manual_seed(spec.seed * 100_003 + batch_number)
        start = time.perf_counter()
        result = invert(spec.method, model, observation.update, knowledge, config, generator)
        elapsed += time.perf_counter() - start
        recon = result.images.numpy()
        order = match_reconstructions(victim[0], recon)
        labels_right += spec.batch * label_accuracy(victim[1], result.labels.numpy())
        for i in range(spec.batch):
            original, matched = victim[0][i], recon[order[i]]
            rows.append(
                ImageResult(
                    index=int(chosen[i]),
                    true_label=int(victim[1][i]),
                    recovered_label=int(result.labels[order[i]]),
                    mse=mse(original, matched),
                    psnr=psnr(original, matched),
                    ssim=ssim(original, matched),
                )
            )
            originals.append(original)
            recons.append(matched)
        if on_batch is not None:
            on_batch(batch_number + 1, batches)
    accuracy = labels_right / images
    digest = hashlib.sha256(np.ascontiguousarray(np.stack(recons), np.float32).tobytes())
    grid = None
    if spec.out_dir is not None:
        name = f"{spec.method}-{dataset.name}-{spec.model}-b{spec.batch}-{spec.target}".replace(
            ":", "_"
        )
        grid = save_grid(
            np.stack(originals),
            np.stack(recons),
            Path(spec.out_dir) / f"{name}.png",
            f"{spec.method} on {dataset.name}/{spec.model}, batch {spec.batch}, {spec.target}",
        )
    return ExperimentResult(
        rows,
        accuracy,
        elapsed / images,
        used,
        grid,
        digest=digest.hexdigest(),
        torch_threads=torch.get_num_threads(),
    )
