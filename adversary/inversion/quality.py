"""Sample quality of the generative priors: FID, Inception Score, confidence, class coverage.

Both scores are computed with the project's own classifier in place of Inception-v3 (which
does not fit 8x8 or 28x28 grey digits): the ``cnn`` model (`LeNetCNN`) trained 10 epochs on the
whole training split with `experiment.victim_model`'s training (`feature_classifier`), with seed
0 whatever the sampling seed, so that every run measures with the same ruler.

- `frechet_distance`: the Frechet Inception Distance (Heusel et al., NeurIPS 2017) between
  Gaussians fitted to penultimate-layer features,
  ``||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2))``;
- `inception_score`: ``exp(E_x KL(p(y|x) || p(y)))`` (Salimans et al., NeurIPS 2016), on the
  classifier's softmax, over one split;
- the mean max-softmax confidence and the share of samples predicted as each class.

`prior_quality` scores N samples of a prior against the held-out test images, with two
reference rows scored the same way: N real images of the auxiliary split (the floor a perfect
generator would reach) and N uniform-noise images (the ceiling). `record_quality` keeps results in
a JSON report (``attack prior-quality --report``), from which the results page draws its table.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import linalg
from torch import nn

from phalanx.adversary.inversion.experiment import load_prior_for, victim_model
from phalanx.adversary.inversion.names import PRIOR_KINDS
from phalanx.adversary.inversion.priors import DiffusionPrior, GanPrior, auxiliary_split
from phalanx.learning.data import Dataset, load_dataset
from phalanx.learning.train import TrainConfig, evaluate, train_local

FEATURE_MODEL = "cnn"
FEATURE_SEED = 0
FEATURE_EPOCHS = 10
SAMPLE_CHUNK = 250  # images sampled at a time; fixed, so a seed's samples do not depend on it
_IMAG_TOLERANCE = 1e-3

SampleProgress = Callable[[int, int], None]


@dataclass(frozen=True)
class QualityRow:
    """The scores of one set of images against the held-out test images."""

    name: str
    images: int
    fid: float
    inception_score: float
    confidence: float
    class_shares: tuple[float, ...]

    @property
    def classes_covered(self) -> int:
        """Classes predicted for at least one image."""
        return sum(1 for share in self.class_shares if share > 0)


@dataclass(frozen=True)
class PriorQuality:
    """`prior_quality`'s result: the prior's row and the real floor and noise ceiling rows."""

    kind: str
    dataset: str
    samples: int
    seed: int
    diffusion_steps: int | None
    sampling_seconds: float
    classifier_accuracy: float
    prior: QualityRow
    real_floor: QualityRow
    noise_ceiling: QualityRow

    @property
    def rows(self) -> tuple[QualityRow, QualityRow, QualityRow]:
        return (self.prior, self.real_floor, self.noise_ceiling)

    def to_dict(self) -> dict[str, object]:
        out = asdict(self)
        for key in ("prior", "real_floor", "noise_ceiling"):
            row: QualityRow = getattr(self, key)
            out[key] = {**asdict(row), "classes_covered": row.classes_covered}
        return out


def feature_classifier(dataset: Dataset) -> nn.Module:
    """The ``cnn`` trained on all of `dataset`'s training split: `experiment.victim_model`'s
    model and training (`train.train_local`, SGD with momentum, batch 32, lr 0.05, seed 0),
    run for `FEATURE_EPOCHS` epochs instead of one, since one epoch leaves the 8x8 digits
    classifier at 40% test accuracy (10 epochs: 97%; mnist5k 93% and 97%)."""
    model = victim_model(FEATURE_MODEL, dataset, FEATURE_SEED, False, np.arange(0))
    config = TrainConfig(epochs=FEATURE_EPOCHS, batch_size=32, lr=0.05)
    train_local(model, dataset.train_x, dataset.train_y, config, FEATURE_SEED)
    return model.eval()


def _last_linear(model: nn.Module) -> nn.Linear:
    linears = [module for module in model.modules() if isinstance(module, nn.Linear)]
    if not linears:
        raise ValueError("the feature classifier has no linear output layer")
    return linears[-1]


@torch.no_grad()
def classifier_outputs(
    model: nn.Module, images: np.ndarray, batch_size: int = 500
) -> tuple[np.ndarray, np.ndarray]:
    """(penultimate-layer features, softmax probabilities) of `model` on `images`, float64.

    The features are the input of the model's last linear layer (for ``cnn``, the 128 ReLU
    activations before the logits)."""
    head = _last_linear(model)
    captured: list[torch.Tensor] = []
    hook = head.register_forward_pre_hook(lambda _m, inputs: captured.append(inputs[0]))
    model.eval()
    features, probabilities = [], []
    try:
        for start in range(0, len(images), batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size]))
            logits = model(batch.float())
            features.append(captured.pop().flatten(1).double().numpy())
            probabilities.append(torch.softmax(logits.double(), dim=1).numpy())
    finally:
        hook.remove()
    return np.concatenate(features), np.concatenate(probabilities)


def _moments(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"need at least 2 feature vectors (N, D), got shape {features.shape}")
    data = features.astype(np.float64)
    return data.mean(axis=0), np.atleast_2d(np.cov(data, rowvar=False))


def _usable(root: np.ndarray) -> bool:
    return bool(np.isfinite(root).all() and np.abs(np.imag(root)).max() <= _IMAG_TOLERANCE)


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to two feature sets (N, D): the FID of
    Heusel et al., "GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash
    Equilibrium", NeurIPS 2017:

    ``d^2 = ||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2))``

    with ``scipy.linalg.sqrtm`` for the matrix square root. Its real part is kept; when
    rounding leaves it non-finite or with imaginary parts above 1e-3 (near-singular
    covariances, e.g. fewer samples than dimensions), ``1e-6 I`` is added to both
    covariances first. Negative rounding is clamped to 0."""
    mu_a, cov_a = _moments(features_a)
    mu_b, cov_b = _moments(features_b)
    if mu_a.shape != mu_b.shape:
        raise ValueError(f"feature dimensions differ: {mu_a.shape[0]} and {mu_b.shape[0]}")
    with warnings.catch_warnings():  # singular products are handled below
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        root = linalg.sqrtm(cov_a @ cov_b)
        if not _usable(root):
            offset = 1e-6 * np.eye(len(mu_a))
            root = linalg.sqrtm((cov_a + offset) @ (cov_b + offset))
    if not _usable(root):
        raise ValueError("the covariance product has no real square root")
    trace = np.trace(cov_a) + np.trace(cov_b) - 2.0 * np.trace(np.real(root))
    return max(float(np.sum((mu_a - mu_b) ** 2) + trace), 0.0)


def inception_score(probabilities: np.ndarray) -> float:
    """``exp(E_x KL(p(y|x) || p(y)))`` with ``p(y)`` the mean of the rows of `probabilities`
    (N, K) (Salimans et al., "Improved Techniques for Training GANs", NeurIPS 2016), on one
    split. 1 when every row is the same; K for confident predictions spread evenly over K
    classes."""
    if probabilities.ndim != 2 or len(probabilities) < 1:
        raise ValueError(f"probabilities must be (N, K), got shape {probabilities.shape}")
    p = probabilities.astype(np.float64)
    marginal = p.mean(axis=0, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * (np.log(p) - np.log(marginal)), 0.0)
    return float(np.exp(terms.sum(axis=1).mean()))


def score_images(
    name: str,
    model: nn.Module,
    images: np.ndarray,
    reference_features: np.ndarray,
    num_classes: int,
) -> QualityRow:
    """FID of `images` against `reference_features`, IS, confidence and class shares."""
    features, probabilities = classifier_outputs(model, images)
    predicted = probabilities.argmax(axis=1)
    shares = np.bincount(predicted, minlength=num_classes) / len(predicted)
    return QualityRow(
        name=name,
        images=len(images),
        fid=frechet_distance(features, reference_features),
        inception_score=inception_score(probabilities),
        confidence=float(probabilities.max(axis=1).mean()),
        class_shares=tuple(float(share) for share in shares),
    )


@torch.no_grad()
def sample_gan(
    prior: GanPrior, count: int, generator: torch.Generator, progress: SampleProgress | None = None
) -> np.ndarray:
    """``G(z)``, ``z ~ N(0, I)``: `count` images in [0, 1]."""
    prior.eval()
    chunks = []
    for start in range(0, count, SAMPLE_CHUNK):
        size = min(SAMPLE_CHUNK, count - start)
        latent = torch.randn((size, prior.latent_dim), generator=generator)
        chunks.append(prior(latent).float().numpy())
        if progress is not None:
            progress(start + size, count)
    return np.concatenate(chunks)


@torch.no_grad()
def sample_diffusion(
    prior: DiffusionPrior,
    count: int,
    generator: torch.Generator,
    steps: int | None = None,
    progress: SampleProgress | None = None,
) -> np.ndarray:
    """Unconditional DDPM ancestral sampling (Ho et al. 2020, Algorithm 2 / Eq. 11), images in
    [0, 1]:

    ``x_{t-1} = (x_t - beta_t / sqrt(1 - abar_t) eps_theta(x_t, t)) / sqrt(alpha_t) + sigma_t z``

    with ``sigma_t^2 = (1 - abar_{t-1}) / (1 - abar_t) beta_t`` (their ``beta~_t``), from
    ``x_T ~ N(0, I)`` on the prior's own schedule. With `steps` below the schedule's length the
    same update runs on ``steps`` evenly strided timesteps ``t > s``, with ``alpha = abar_t /
    abar_s`` and ``beta = 1 - alpha`` (the respacing of Nichol & Dhariwal 2021, Sec. 4)."""
    prior.eval()
    alphas_cumprod = prior.make_scheduler().alphas_cumprod.double()
    total = len(alphas_cumprod)
    steps = total if steps is None else steps
    if not 1 <= steps <= total:
        raise ValueError(f"diffusion steps must be in [1, {total}], got {steps}")
    timesteps = torch.linspace(total - 1, 0, steps).round().long().tolist()
    chunks = []
    done = 0
    for start in range(0, count, SAMPLE_CHUNK):
        size = min(SAMPLE_CHUNK, count - start)
        shape = (size, *prior.input_shape)
        sample = torch.randn(shape, generator=generator, dtype=torch.float64)
        for index, t in enumerate(timesteps):
            last = index + 1 == steps
            abar_t = alphas_cumprod[t]
            abar_s = abar_t.new_ones(()) if last else alphas_cumprod[timesteps[index + 1]]
            alpha = abar_t / abar_s
            beta = 1 - alpha
            noise = prior.predict_noise(sample.float(), t).double()
            sample = (sample - beta / (1 - abar_t).sqrt() * noise) / alpha.sqrt()
            if not last:
                sigma = ((1 - abar_s) / (1 - abar_t) * beta).sqrt()
                sample = sample + sigma * torch.randn(
                    shape, generator=generator, dtype=torch.float64
                )
            done += size
            if progress is not None:
                progress(done, count * steps)
        chunks.append(((sample.clamp(-1, 1) + 1) / 2).float().numpy())
    return np.concatenate(chunks)


def prior_quality(
    kind: str,
    dataset: Dataset | str,
    samples: int,
    seed: int,
    *,
    prior: nn.Module | None = None,
    diffusion_steps: int | None = None,
    cache_dir: str | Path | None = None,
    progress: SampleProgress | None = None,
) -> PriorQuality:
    """Score `samples` images of the `kind` prior of `dataset` (loaded, or trained and cached,
    by `experiment.load_prior_for` unless `prior` is given) against the held-out test images,
    with the real floor (`samples` auxiliary-split training images, all of them if fewer) and
    the noise ceiling (`samples` images of uniform noise in [0, 1]).

    `seed` drives the latents or the reverse process, the choice of floor images and the
    noise: the same seed gives the same numbers. `diffusion_steps` strides the diffusion
    sampler (`sample_diffusion`; default: its whole schedule)."""
    if kind not in PRIOR_KINDS:
        raise ValueError(f"prior kind {kind!r} unknown; known: {', '.join(PRIOR_KINDS)}")
    if samples < 2:
        raise ValueError(f"samples must be >= 2 (FID needs a covariance), got {samples}")
    data = load_dataset(dataset) if isinstance(dataset, str) else dataset
    if prior is None:
        prior, _, _ = load_prior_for(kind, data, None, cache_dir)
    model = feature_classifier(data)
    reference, _ = classifier_outputs(model, data.test_x)
    accuracy, _ = evaluate(model, data.test_x, data.test_y)
    generator = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    if kind == "gan":
        if not isinstance(prior, GanPrior):
            raise ValueError("kind 'gan' needs a GanPrior")
        images = sample_gan(prior, samples, generator, progress)
        steps = None
    else:
        if not isinstance(prior, DiffusionPrior):
            raise ValueError("kind 'diffusion' needs a DiffusionPrior")
        images = sample_diffusion(prior, samples, generator, diffusion_steps, progress)
        steps = diffusion_steps or prior.timesteps
    seconds = time.perf_counter() - start
    rng = np.random.default_rng(seed)
    aux_index, _ = auxiliary_split(len(data.train_x))
    floor_index = np.sort(rng.permutation(aux_index)[:samples])
    noise = rng.random((samples, *data.input_shape), dtype=np.float32)
    k = data.num_classes
    return PriorQuality(
        kind=kind,
        dataset=data.name,
        samples=samples,
        seed=seed,
        diffusion_steps=steps,
        sampling_seconds=seconds,
        classifier_accuracy=accuracy,
        prior=score_images(kind, model, images, reference, k),
        real_floor=score_images("real (floor)", model, data.train_x[floor_index], reference, k),
        noise_ceiling=score_images("noise (ceiling)", model, noise, reference, k),
    )


def quality_key(quality: PriorQuality, prior_steps: int | None = None) -> str:
    """The entry of a quality report that holds `quality`: ``quality/KIND/n=N``, for a
    diffusion prior ``/steps=S`` (the reverse-process steps it was sampled with), and for a
    prior trained other than by default ``/prior-steps=P``."""
    key = f"quality/{quality.kind}/n={quality.samples}"
    if quality.kind != "gan":
        key += f"/steps={quality.diffusion_steps}"
    return key if prior_steps is None else f"{key}/prior-steps={prior_steps}"


def quality_settings(
    kind: str,
    dataset: str,
    samples: int,
    seed: int,
    diffusion_steps: int | None,
    prior_steps: int | None = None,
) -> dict[str, object]:
    """The settings that decide a `prior_quality` result, as a report entry records them
    (``prior_steps``, the prior's training steps, only when not the default)."""
    settings: dict[str, object] = {
        "kind": kind,
        "dataset": dataset,
        "samples": samples,
        "seed": seed,
        "diffusion_steps": diffusion_steps,
    }
    if prior_steps is not None:
        settings["prior_steps"] = prior_steps
    return settings


def read_quality_report(path: str | Path) -> dict[str, object]:
    """The entries of the quality report at `path` (none if it does not exist yet).

    Raises `ValueError` for a file that is not a JSON object."""
    path = Path(path)
    if not path.exists():
        return {}
    try:
        report = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not a JSON report: {error}") from error
    if not isinstance(report, dict):
        raise ValueError(f"{path} is not a JSON object")
    return report


def recorded_quality(path: str | Path, settings: dict[str, object]) -> dict[str, object] | None:
    """The entry of the report at `path` recorded with exactly `settings`, or None."""
    for entry in read_quality_report(path).values():
        if isinstance(entry, dict) and entry.get("settings") == settings:
            return entry
    return None


def record_quality(
    path: str | Path, quality: PriorQuality, settings: dict[str, object], seconds: float
) -> str:
    """Write `quality` into the report at `path` under `quality_key` (replacing an entry of the
    same key, keeping the others in order), with the `settings` it was asked for and the
    `seconds` the whole run took. The file is replaced atomically, so a killed run leaves the
    previous report whole. Returns the key."""
    path = Path(path)
    report = read_quality_report(path)
    key = quality_key(quality, settings.get("prior_steps"))  # type: ignore[arg-type]
    report[key] = {**quality.to_dict(), "settings": settings, "seconds": round(seconds, 3)}
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(report, indent=2) + "\n")
    partial.replace(path)
    return key
