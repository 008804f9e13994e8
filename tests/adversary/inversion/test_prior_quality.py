"""`quality`: FID and Inception Score against closed forms, the DDPM sampler against Ho et al.
Eq. 11, the real floor below the noise ceiling, and ``phalanx attack prior-quality``."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from phalanx.adversary.inversion.priors import DiffusionPrior, GanPrior
from phalanx.adversary.inversion.quality import (
    frechet_distance,
    inception_score,
    prior_quality,
    sample_diffusion,
)
from phalanx.learning.data import Dataset, load_dataset


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset("digits")


def _untrained_gan(dataset: Dataset) -> GanPrior:
    torch.manual_seed(0)
    return GanPrior(dataset.input_shape, latent_dim=8, width=8).eval()


def _axis_points(mean: np.ndarray, spread: np.ndarray) -> np.ndarray:
    """2D points ``mean +- spread_i e_i``: mean `mean`, diagonal sample covariance
    ``2 spread_i^2 / (2D - 1)``."""
    dims = len(mean)
    offsets = np.concatenate([np.diag(spread), -np.diag(spread)])
    assert offsets.shape == (2 * dims, dims)
    return mean + offsets


def test_frechet_distance_of_identical_sets_is_zero() -> None:
    features = np.random.default_rng(0).normal(size=(300, 6))
    assert frechet_distance(features, features) == pytest.approx(0.0, abs=1e-8)


def test_frechet_distance_is_symmetric() -> None:
    rng = np.random.default_rng(1)
    a = rng.normal(size=(200, 5))
    b = rng.normal(loc=0.5, scale=2.0, size=(300, 5)) @ rng.normal(size=(5, 5))
    assert frechet_distance(a, b) == pytest.approx(frechet_distance(b, a), rel=1e-9)
    assert frechet_distance(a, b) > 0


def test_frechet_distance_matches_the_diagonal_closed_form() -> None:
    mean_a, mean_b = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.5])
    spread_a, spread_b = np.array([1.0, 2.0, 0.5]), np.array([3.0, 0.25, 0.5])
    a, b = _axis_points(mean_a, spread_a), _axis_points(mean_b, spread_b)
    var_a = 2 * spread_a**2 / (len(a) - 1)
    var_b = 2 * spread_b**2 / (len(b) - 1)
    expected = np.sum((mean_a - mean_b) ** 2) + np.sum((np.sqrt(var_a) - np.sqrt(var_b)) ** 2)
    assert np.allclose(np.cov(a, rowvar=False), np.diag(var_a))
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_needs_two_vectors_of_one_dimension() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        frechet_distance(np.zeros((1, 3)), np.zeros((5, 3)))
    with pytest.raises(ValueError, match="dimensions differ"):
        frechet_distance(np.zeros((4, 3)), np.zeros((4, 2)))


def test_inception_score_is_one_for_identical_predictions() -> None:
    row = np.array([0.1, 0.2, 0.3, 0.4])
    assert inception_score(np.tile(row, (50, 1))) == pytest.approx(1.0)


@pytest.mark.parametrize("classes", [2, 10])
def test_inception_score_is_the_class_count_for_confident_even_predictions(classes: int) -> None:
    one_hot = np.tile(np.eye(classes), (7, 1))
    assert inception_score(one_hot) == pytest.approx(classes)
    softened = 0.999 * one_hot + 0.001 / classes
    assert inception_score(softened) == pytest.approx(classes, rel=0.02)


def test_full_schedule_sampler_is_ho_et_al_eq_11() -> None:
    torch.manual_seed(0)
    prior = DiffusionPrior((1, 8, 8), width=8, timesteps=12).eval()
    images = sample_diffusion(prior, 3, torch.Generator().manual_seed(5))
    generator = torch.Generator().manual_seed(5)
    betas = prior.make_scheduler().betas.double()
    alphas = 1 - betas
    abar = torch.cumprod(alphas, 0)
    x = torch.randn((3, 1, 8, 8), generator=generator, dtype=torch.float64)
    with torch.no_grad():
        for t in range(11, -1, -1):
            eps = prior.predict_noise(x.float(), t).double()
            x = (x - betas[t] / (1 - abar[t]).sqrt() * eps) / alphas[t].sqrt()
            if t > 0:
                sigma = ((1 - abar[t - 1]) / (1 - abar[t]) * betas[t]).sqrt()
                x = x + sigma * torch.randn(x.shape, generator=generator, dtype=torch.float64)
    expected = ((x.clamp(-1, 1) + 1) / 2).float().numpy()
    assert images.shape == (3, 1, 8, 8)
    np.testing.assert_allclose(images, expected, atol=1e-5)


def test_noise_ceiling_is_above_the_real_floor_and_seeded(digits: Dataset) -> None:
    prior = _untrained_gan(digits)
    first = prior_quality("gan", digits, 64, seed=3, prior=prior)
    again = prior_quality("gan", digits, 64, seed=3, prior=prior)
    assert first.noise_ceiling.fid > first.real_floor.fid
    assert first.real_floor.confidence > 0.8
    assert sum(first.prior.class_shares) == pytest.approx(1.0)
    assert first.to_dict() == {**again.to_dict(), "sampling_seconds": first.sampling_seconds}
    assert json.loads(json.dumps(first.to_dict()))["real_floor"]["classes_covered"] == 10


def test_prior_quality_scores_a_diffusion_prior(digits: Dataset) -> None:
    torch.manual_seed(0)
    prior = DiffusionPrior(digits.input_shape, width=8, timesteps=50).eval()
    quality = prior_quality("diffusion", digits, 8, seed=0, prior=prior, diffusion_steps=5)
    assert quality.diffusion_steps == 5
    assert quality.prior.images == 8
    assert math.isfinite(quality.prior.fid)
    assert 1.0 <= quality.prior.inception_score <= digits.num_classes


def test_prior_quality_rejects_bad_input(digits: Dataset) -> None:
    with pytest.raises(ValueError, match="unknown"):
        prior_quality("vae", digits, 8, seed=0)
    with pytest.raises(ValueError, match="samples must be >= 2"):
        prior_quality("gan", digits, 1, seed=0)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--kind", "vae"], "unknown prior kind 'vae'"),
        (["--kind", "gan", "--samples", "1"], "--samples must be >= 2"),
        (["--kind", "gan", "--dataset", "imagenet"], "unknown dataset 'imagenet'"),
        (["--kind", "gan", "--prior-steps", "0"], "--prior-steps must be >= 1"),
    ],
)
def test_cli_bad_input_exits_2(phalanx, extra: list[str], message: str) -> None:
    args = ["attack", "prior-quality", "--dataset", "digits", "--samples", "4", *extra]
    if "--dataset" in extra:
        args = ["attack", "prior-quality", "--samples", "4", *extra]
    result = phalanx(*args, timeout=120)
    assert result.returncode == 2
    assert message in result.stderr
    assert result.stderr.startswith("error: ")


def test_cli_prints_the_table(phalanx) -> None:
    result = phalanx(
        "attack",
        "prior-quality",
        "--kind",
        "gan",
        "--dataset",
        "digits",
        "--samples",
        "16",
        "--seed",
        "1",
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    for text in ("gan prior on digits: 16 samples", "FID", "real (floor)", "noise (ceiling)"):
        assert text in result.stdout


def test_cli_records_its_result_and_resume_takes_it_over(phalanx, tmp_path) -> None:
    report = tmp_path / "inversion" / "quality.json"
    args = ["attack", "prior-quality", "--kind", "gan", "--dataset", "digits", "--samples", "16"]
    args += ["--report", str(report)]
    first = phalanx(*args, "--seed", "1", "--json", timeout=300)
    assert first.returncode == 0, first.stderr
    recorded = json.loads(report.read_text())
    assert list(recorded) == ["quality/gan/n=16"]
    entry = recorded["quality/gan/n=16"]
    assert entry["settings"] == {
        "kind": "gan",
        "dataset": "digits",
        "samples": 16,
        "seed": 1,
        "diffusion_steps": None,
    }
    assert {k: v for k, v in entry.items() if k not in ("settings", "seconds")} == json.loads(
        first.stdout
    )
    assert entry["seconds"] >= entry["sampling_seconds"] > 0

    again = phalanx(*args, "--seed", "1", "--resume", timeout=300)
    assert again.returncode == 0, again.stderr
    assert "taken over from" in again.stdout
    assert json.loads(report.read_text()) == recorded

    other_seed = phalanx(*args, "--seed", "2", "--resume", timeout=300)
    assert other_seed.returncode == 0, other_seed.stderr
    replaced = json.loads(report.read_text())["quality/gan/n=16"]
    assert replaced["settings"]["seed"] == 2
    assert replaced["prior"]["fid"] != entry["prior"]["fid"]
    assert not list(report.parent.glob("*.partial"))


def test_cli_refuses_a_bad_report_before_sampling(phalanx, tmp_path) -> None:
    args = ["attack", "prior-quality", "--kind", "gan", "--dataset", "digits", "--samples", "4"]
    alone = phalanx(*args, "--resume", timeout=120)
    assert alone.returncode == 2
    assert "--resume needs --report" in alone.stderr
    report = tmp_path / "quality.json"
    report.write_text("{not json")
    broken = phalanx(*args, "--report", str(report), timeout=120)
    assert broken.returncode == 2
    assert "is not a JSON report" in broken.stderr
    assert "sampling" not in broken.stdout
    assert report.read_text() == "{not json"


def test_a_prior_trained_other_than_by_default_gets_its_own_entry(
    digits: Dataset, tmp_path
) -> None:
    from phalanx.adversary.inversion.quality import quality_settings, record_quality

    quality = prior_quality("gan", digits, 8, seed=0, prior=_untrained_gan(digits))
    default = quality_settings("gan", "digits", 8, 0, None)
    assert "prior_steps" not in default  # reports recorded before the option still match
    longer = quality_settings("gan", "digits", 8, 0, None, prior_steps=3000)
    report = tmp_path / "q.json"
    assert record_quality(report, quality, default, 1.0) == "quality/gan/n=8"
    assert record_quality(report, quality, longer, 1.0) == "quality/gan/n=8/prior-steps=3000"
    recorded = json.loads(report.read_text())
    assert list(recorded) == ["quality/gan/n=8", "quality/gan/n=8/prior-steps=3000"]
    assert recorded["quality/gan/n=8/prior-steps=3000"]["settings"]["prior_steps"] == 3000
