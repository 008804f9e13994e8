"""Held-out check: Phalanx's rules against ByzFL's (LPD-EPFL's ``byzfl`` package) on random rows.

Runs where byzfl is importable and skips otherwise. byzfl 0.0.11's full install pulls torchvision
(pip then picks torch 2.14 or, pinned to torch 2.13.0, a CUDA torchvision that fails to load
against torch+cpu), so install it without dependencies: ``pip install --no-deps byzfl==0.0.11``.
Only ``byzfl.aggregators`` is loaded (it needs torch, numpy and scipy); the package's
``__init__`` would import its benchmark and with it torchvision and seaborn.

ByzFL computes in float32, so the inputs are float32 and values agree to 1e-6. Where the two
libraries define a rule differently, the test maps one onto the other and says how.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from collections.abc import Iterator
from typing import Any

import pytest
import torch

from phalanx.learning.aggregation import aggregate, get_pre, get_rule

TOLERANCE = {"rtol": 1e-6, "atol": 1e-6}


@pytest.fixture(scope="module")
def byzfl() -> Iterator[Any]:
    """``byzfl.aggregators``, loaded without running ``byzfl/__init__.py``."""
    spec = importlib.util.find_spec("byzfl")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip(
            "byzfl is not installed; `pip install --no-deps byzfl==0.0.11` enables this "
            "held-out check (its dependencies would replace torch 2.13.0 or add a torchvision "
            "that cannot load against it)"
        )
    saved = {name: module for name, module in sys.modules.items() if name.split(".")[0] == "byzfl"}
    package = types.ModuleType("byzfl")
    package.__path__ = list(spec.submodule_search_locations)
    sys.modules["byzfl"] = package
    try:
        yield importlib.import_module("byzfl.aggregators")
    finally:
        for name in [name for name in sys.modules if name.split(".")[0] == "byzfl"]:
            del sys.modules[name]
        sys.modules.update(saved)


def rows(m: int, d: int, seed: int, outliers: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = 1.0 + torch.randn(m, d, generator=g)
    if outliers:
        x[:outliers] = -4.0 + 10.0 * torch.randn(outliers, d, generator=g)
    return x


SHAPES = [(7, 1), (8, 2), (11, 2), (12, 3), (15, 3)]  # (m, f): odd and even m


def assert_close(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    assert ours.dtype == torch.float32 and ours.shape == theirs.shape
    assert torch.allclose(ours, theirs.to(torch.float32), **TOLERANCE), (ours - theirs).abs().max()


@pytest.mark.parametrize(("m", "f"), SHAPES)
def test_mean_median_and_trimmed_mean(byzfl: Any, m: int, f: int) -> None:
    x = rows(m, 50, seed=m, outliers=f)
    assert_close(aggregate("mean", x, 0), byzfl.Average()(x.clone()))
    assert_close(aggregate("median", x, f), byzfl.Median()(x.clone()))
    for trim in range(f + 1):  # ByzFL's TrMean(0) is the mean
        assert_close(aggregate("trimmed-mean", x, trim), byzfl.TrMean(f=trim)(x.clone()))


@pytest.mark.parametrize(("m", "f"), SHAPES)
def test_krum_and_multi_krum(byzfl: Any, m: int, f: int) -> None:
    # ByzFL scores a row over its n - f - 1 nearest others, Blanchard et al. (and Phalanx) over
    # n - f - 2: Phalanx at f is ByzFL at f + 1 (the mean instead of the sum ranks alike).
    # ByzFL's MultiKrum averages n - f rows: Phalanx's q = m - (f + 1).
    x = rows(m, 50, seed=100 + m, outliers=f)
    assert_close(aggregate("krum", x, f), byzfl.Krum(f=f + 1)(x.clone()))
    assert_close(aggregate("multi-krum", x, f, q=m - f - 1), byzfl.MultiKrum(f=f + 1)(x.clone()))


@pytest.mark.parametrize(("m", "f"), SHAPES)
def test_geometric_median(byzfl: Any, m: int, f: int) -> None:
    # ByzFL runs T Weiszfeld steps from zero (3 by default); run it to convergence. Both smooth
    # distances below nu, far below the distances here, so both reach the same minimiser.
    x = rows(m, 20, seed=200 + m, outliers=f)
    theirs = byzfl.GeometricMedian(nu=1e-6, T=3000)(x.clone())
    assert_close(aggregate("geometric-median", x, f), theirs)


def test_centered_clipping_carries_the_center_like_byzfl(byzfl: Any) -> None:
    # ByzFL's CenteredClipping keeps its output as the next call's centre (uniform a_i = 1/n)
    theirs = byzfl.CenteredClipping(L=2, tau=1.5)
    ours = get_rule("centered-clipping", carry_center=True, radius=1.5, iterations=2)
    for seed in range(4):
        x = rows(11, 30, seed=300 + seed, outliers=3)
        assert_close(ours(x, 3), theirs(x.clone()))


@pytest.mark.parametrize(("m", "f"), SHAPES)
def test_pre_aggregators_nnm_clip_arc(byzfl: Any, m: int, f: int) -> None:
    x = rows(m, 40, seed=400 + m, outliers=f)
    assert_close(get_pre("nnm").apply(x, f).vectors, byzfl.NNM(f=f)(x.clone()))
    # ByzFL's Clipping and ARC rescale their input in place: give them a copy
    assert_close(
        get_pre("clip", threshold=2.0).apply(x, f).vectors, byzfl.Clipping(c=2.0)(x.clone())
    )
    assert_close(get_pre("arc").apply(x, f).vectors, byzfl.ARC(f=f)(x.clone()))


def test_byzfl_example_pipeline_clip_nnm_trimmed_mean(byzfl: Any) -> None:
    # ByzFL's MNIST example: static clipping (c = 2), then NNM, then the trimmed mean
    x = rows(13, 64, seed=500, outliers=3)
    theirs = byzfl.TrMean(f=3)(byzfl.NNM(f=3)(byzfl.Clipping(c=2.0)(x.clone())))
    ours = aggregate("trimmed-mean", x, 3, pre=["clip:threshold=2.0", "nnm"])
    assert_close(ours, theirs)
