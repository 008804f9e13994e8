"""``phalanx attack``: ``invert`` runs a gradient-inversion attack, ``train-prior`` caches a prior,
``prior-quality`` scores a prior's samples (FID, Inception Score, confidence, class coverage).

All pin torch to ``--torch-threads`` intra-op threads (default 1) with deterministic kernels
(`pinned_torch`), so a seed gives the same reconstruction, byte for byte, on any machine and load.
Exit codes: 0 success, 2 bad input (one line on stderr).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from phalanx.adversary.inversion.names import (
    DEFAULT_LABEL_METHOD,
    DEFAULT_PRIOR_STEPS,
    DEFAULT_TORCH_THREADS,
    LABEL_METHODS,
    METHODS,
    PRIOR_KINDS,
    PRIOR_OF,
)
from phalanx.learning.data import DATASETS

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress

    from phalanx.adversary.inversion.experiment import ExperimentResult, ExperimentSpec
    from phalanx.adversary.inversion.quality import PriorQuality

# Parsing needs only the names above: torch, rich and the attacks load in the handlers.
_PRIOR_STEPS = ", ".join(f"{steps} {kind}" for kind, steps in DEFAULT_PRIOR_STEPS.items())
_DATA_DIR = "directory with the files of mnist, fashion-mnist or cifar10 (needed for those)"
_PRIOR_CACHE = "prior cache directory (default $PHALANX_PRIOR_CACHE or ~/.cache/phalanx/priors)"

EXIT_OK = 0
EXIT_BAD_INPUT = 2


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


def _progress(console: Console) -> Progress:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )


def _print_result(console: Console, spec: ExperimentSpec, result: ExperimentResult) -> None:
    from rich.table import Table

    table = Table(title=f"{spec.method} / {spec.model} / batch {spec.batch} / {spec.target}")
    for column in ("image", "label", "recovered", "MSE", "PSNR (dB)", "SSIM"):
        table.add_column(column, justify="right")
    for row in result.rows:
        table.add_row(
            str(row.index),
            str(row.true_label),
            str(row.recovered_label),
            f"{row.mse:.3g}",
            f"{row.psnr:.2f}",
            f"{row.ssim:.3f}",
        )
    console.print(table)
    console.print(
        f"median PSNR {result.median_psnr:.2f} dB, median SSIM {result.median_ssim:.3f}, "
        f"label accuracy {result.label_accuracy:.3f}, {result.seconds_per_image:.2f} s per image"
    )
    if result.used_secure_sum is not None:
        console.print(f"cluster sum via mpc.secure_sum: {result.used_secure_sum}")
    if result.grid_path is not None:
        console.print(f"grid: {result.grid_path}")


def _pinned(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Run `command` under `pinned_torch(args.torch_threads)`."""

    def run(args: argparse.Namespace) -> int:
        if args.torch_threads < 1:
            return _fail(f"--torch-threads must be >= 1, got {args.torch_threads}")
        from phalanx.adversary.inversion.experiment import pinned_torch

        with pinned_torch(args.torch_threads):
            return command(args)

    return run


def _invert(args: argparse.Namespace) -> int:
    if args.method not in METHODS:
        return _fail(f"unknown method {args.method!r}; known: {', '.join(METHODS)}")
    if args.dataset not in DATASETS:
        return _fail(f"unknown dataset {args.dataset!r}; known: {', '.join(DATASETS)}")
    if args.labels not in LABEL_METHODS:
        return _fail(f"unknown label method {args.labels!r}; known: {', '.join(LABEL_METHODS)}")
    from rich.console import Console

    from phalanx.adversary.inversion.experiment import (
        ExperimentSpec,
        load_prior_for,
        run_experiment,
    )
    from phalanx.adversary.inversion.targets import parse_defense
    from phalanx.learning.data import load_dataset

    console = Console(stderr=args.json)
    try:
        dataset = load_dataset(args.dataset, data_dir=args.data_dir)
        spec = ExperimentSpec(
            method=args.method,
            model=args.model,
            batch=args.batch,
            images=args.images,
            target=args.target,
            defense=parse_defense(args.defense, seed=args.seed),
            trained=args.trained,
            iterations=args.iterations,
            seed=args.seed,
            lr=args.lr,
            restarts=args.restarts,
            prior_steps=args.prior_steps,
            prior_cache_dir=args.prior_cache,
            out_dir=Path(args.out) if args.out else None,
            labels=args.labels,
        )
        if args.batch > len(dataset.train_x):
            return _fail(f"batch {args.batch} is larger than the {len(dataset.train_x)} images")
        prior = None
        if args.method in PRIOR_OF:
            with _progress(console) as bar:
                task = bar.add_task(f"training {args.method} prior", total=None)
                prior, path, cached = load_prior_for(
                    args.method,
                    dataset,
                    args.prior_steps,
                    args.prior_cache,
                    lambda done, total: bar.update(task, completed=done, total=total),
                )
            console.print(f"{args.method} prior {'loaded from' if cached else 'saved to'} {path}")
        with _progress(console) as bar:
            task = bar.add_task(f"{args.method} attack", total=None)
            result = run_experiment(
                spec,
                dataset,
                prior,
                lambda done, total: bar.update(task, completed=done, total=total),
            )
    except ValueError as error:
        return _fail(str(error))
    if args.json:
        print(json.dumps(result.summary(), indent=2))
    else:
        _print_result(console, spec, result)
    if spec.out_dir is not None:
        spec.out_dir.mkdir(parents=True, exist_ok=True)
        (spec.out_dir / "result.json").write_text(json.dumps(result.summary(), indent=2))
    return EXIT_OK


def _train_prior(args: argparse.Namespace) -> int:
    if args.kind not in PRIOR_KINDS:
        return _fail(f"unknown prior kind {args.kind!r}; known: {', '.join(PRIOR_KINDS)}")
    from rich.console import Console

    from phalanx.adversary.inversion.experiment import load_prior_for
    from phalanx.learning.data import load_dataset

    console = Console()
    try:
        dataset = load_dataset(args.dataset, data_dir=args.data_dir)
        with _progress(console) as bar:
            task = bar.add_task(f"training {args.kind} prior on {args.dataset}", total=args.steps)
            _, path, cached = load_prior_for(
                args.kind,
                dataset,
                args.steps,
                args.prior_cache,
                lambda done, total: bar.update(task, completed=done, total=total),
                seed=args.seed,
            )
    except ValueError as error:
        return _fail(str(error))
    console.print(f"{args.kind} prior {'already cached at' if cached else 'saved to'} {path}")
    return EXIT_OK


def _print_quality(console: Console, quality: PriorQuality) -> None:
    from rich.table import Table

    steps = f", {quality.diffusion_steps} steps" if quality.diffusion_steps else ""
    table = Table(
        title=f"{quality.kind} prior on {quality.dataset}: {quality.samples} samples{steps}, "
        f"seed {quality.seed}"
    )
    for column in ("set", "n", "FID", "IS", "confidence", "classes", "class shares (%)"):
        table.add_column(
            column,
            justify="left" if column == "set" else "right",
            no_wrap=not column.startswith("class shares"),
        )
    for row in quality.rows:
        table.add_row(
            row.name,
            str(row.images),
            f"{row.fid:.3f}",
            f"{row.inception_score:.2f}",
            f"{row.confidence:.3f}",
            f"{row.classes_covered}/{len(row.class_shares)}",
            " ".join(f"{100 * share:.0f}" for share in row.class_shares),
        )
    console.print(table)
    console.print(
        f"FID against {quality.dataset}'s held-out test images; features and softmax of the cnn "
        f"classifier (test accuracy {quality.classifier_accuracy:.3f}); "
        f"sampling took {quality.sampling_seconds:.1f} s"
    )


def _prior_quality(args: argparse.Namespace) -> int:
    if args.kind not in PRIOR_KINDS:
        return _fail(f"unknown prior kind {args.kind!r}; known: {', '.join(PRIOR_KINDS)}")
    if args.dataset not in DATASETS:
        return _fail(f"unknown dataset {args.dataset!r}; known: {', '.join(DATASETS)}")
    if args.samples < 2:
        return _fail(f"--samples must be >= 2 (FID needs a covariance), got {args.samples}")
    if args.diffusion_steps is not None and args.kind != "diffusion":
        return _fail("--diffusion-steps applies to --kind diffusion only")
    if args.resume and args.report is None:
        return _fail("--resume needs --report (the report whose entries it takes over)")
    if args.prior_steps is not None and args.prior_steps < 1:
        return _fail(f"--prior-steps must be >= 1, got {args.prior_steps}")
    import time

    from rich.console import Console

    from phalanx.adversary.inversion.experiment import load_prior_for
    from phalanx.adversary.inversion.quality import (
        prior_quality,
        quality_settings,
        read_quality_report,
        record_quality,
        recorded_quality,
    )
    from phalanx.learning.data import load_dataset

    console = Console(stderr=args.json)
    settings = quality_settings(
        args.kind, args.dataset, args.samples, args.seed, args.diffusion_steps, args.prior_steps
    )
    started = time.perf_counter()
    try:
        if args.report is not None:
            read_quality_report(args.report)  # a bad report is refused before any sampling
        if args.resume:
            entry = recorded_quality(args.report, settings)
            if entry is not None:
                console.print(f"taken over from {args.report}: recorded with the same settings")
                if args.json:
                    print(json.dumps(entry, indent=2))
                return EXIT_OK
        dataset = load_dataset(args.dataset, data_dir=args.data_dir)
        with _progress(console) as bar:
            task = bar.add_task(f"loading {args.kind} prior", total=None)
            prior, path, cached = load_prior_for(
                args.kind,
                dataset,
                args.prior_steps,
                args.prior_cache,
                lambda done, total: bar.update(task, completed=done, total=total),
            )
        console.print(f"{args.kind} prior {'loaded from' if cached else 'saved to'} {path}")
        with _progress(console) as bar:
            task = bar.add_task(f"sampling {args.kind} prior", total=None)
            quality = prior_quality(
                args.kind,
                dataset,
                args.samples,
                args.seed,
                prior=prior,
                diffusion_steps=args.diffusion_steps,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
        if args.report is not None:
            key = record_quality(args.report, quality, settings, time.perf_counter() - started)
            console.print(f"recorded as {key} in {args.report}")
    except (ValueError, OSError) as error:
        return _fail(str(error))
    if args.json:
        print(json.dumps(quality.to_dict(), indent=2))
    else:
        _print_quality(console, quality)
    return EXIT_OK


def _add_threads(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=DEFAULT_TORCH_THREADS,
        help="torch intra-op threads, fixed for reproducibility (default %(default)s)",
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``attack invert``, ``attack train-prior`` and ``attack prior-quality`` to the
    ``phalanx`` CLI."""
    attack = subparsers.add_parser("attack", help="privacy attacks on observed updates")
    commands = attack.add_subparsers(dest="attack_command", required=True)

    invert = commands.add_parser("invert", help="reconstruct training images from an update")
    invert.add_argument("--method", required=True, help=f"attack: one of {', '.join(METHODS)}")
    invert.add_argument("--dataset", required=True, help=f"one of {', '.join(DATASETS)}")
    invert.add_argument("--data-dir", default=None, help=_DATA_DIR)
    invert.add_argument(
        "--model", required=True, help="victim model, a learning.models name (e.g. lenet-zhu, cnn)"
    )
    invert.add_argument("--batch", type=int, required=True, help="victim batch size B")
    invert.add_argument(
        "--images", type=int, default=None, help="images attacked, in batches of B (default: B)"
    )
    invert.add_argument(
        "--target",
        default="update",
        help="what the attacker observes: update | fedavg:STEPS | cluster-sum:K "
        "(default %(default)s)",
    )
    invert.add_argument(
        "--defense",
        default=None,
        help="defense on the observed update: none | gaussian:SIGMA | prune:RATIO | forward:T "
        "(forward noising at level T; the attacker knows the schedule) (default none)",
    )
    invert.add_argument(
        "--trained", action="store_true", help="attack a trained global model (default untrained)"
    )
    invert.add_argument(
        "--iterations",
        type=int,
        default=None,
        help="optimiser steps per restart (default: the method's own, e.g. 1000 for dlg)",
    )
    invert.add_argument(
        "--labels",
        default=DEFAULT_LABEL_METHOD,
        help=f"label-recovery rule: one of {', '.join(LABEL_METHODS)} (default %(default)s; "
        "ignored by dlg)",
    )
    invert.add_argument(
        "--restarts", type=int, default=1, help="random restarts, best kept (default %(default)s)"
    )
    invert.add_argument(
        "--lr",
        type=float,
        default=0.1,
        help="victim's local learning rate for fedavg targets (default %(default)s)",
    )
    invert.add_argument(
        "--seed", type=int, default=0, help="seed of data, model and attack (default %(default)s)"
    )
    invert.add_argument(
        "--prior-steps",
        type=int,
        default=None,
        help=f"training steps of a generative prior if not cached (default {_PRIOR_STEPS})",
    )
    invert.add_argument(
        "--prior-cache",
        default=None,
        help=_PRIOR_CACHE,
    )
    invert.add_argument(
        "--json", action="store_true", help="print a JSON summary instead of a table"
    )
    _add_threads(invert)
    invert.add_argument(
        "--out", default=None, help="directory for the PNG grid and result.json (default: none)"
    )
    invert.set_defaults(func=_pinned(_invert))

    train = commands.add_parser("train-prior", help="train and cache a generative prior")
    train.add_argument("--kind", required=True, help=f"prior: one of {', '.join(PRIOR_KINDS)}")
    train.add_argument("--dataset", required=True, help=f"one of {', '.join(DATASETS)}")
    train.add_argument("--data-dir", default=None, help=_DATA_DIR)
    train.add_argument(
        "--steps",
        type=int,
        default=None,
        help=f"training steps (default {_PRIOR_STEPS})",
    )
    train.add_argument(
        "--seed", type=int, default=0, help="seed of the prior's training (default %(default)s)"
    )
    train.add_argument(
        "--prior-cache",
        default=None,
        help=_PRIOR_CACHE,
    )
    _add_threads(train)
    train.set_defaults(func=_pinned(_train_prior))

    quality = commands.add_parser(
        "prior-quality",
        help="score a prior's samples: FID, Inception Score, confidence, class coverage",
    )
    quality.add_argument("--kind", required=True, help=f"prior: one of {', '.join(PRIOR_KINDS)}")
    quality.add_argument("--dataset", required=True, help=f"one of {', '.join(DATASETS)}")
    quality.add_argument("--data-dir", default=None, help=_DATA_DIR)
    quality.add_argument(
        "--samples", type=int, default=1000, help="images sampled (>= 2, default %(default)s)"
    )
    quality.add_argument(
        "--seed", type=int, default=0, help="seed of the samples (default %(default)s)"
    )
    quality.add_argument(
        "--diffusion-steps",
        type=int,
        default=None,
        help="strided reverse-process steps of a diffusion prior (default: its whole schedule)",
    )
    quality.add_argument(
        "--prior-steps",
        type=int,
        default=None,
        help=f"training steps of the prior scored (default {_PRIOR_STEPS}); trained and cached "
        "if not in the cache",
    )
    quality.add_argument("--prior-cache", default=None, help=_PRIOR_CACHE)
    quality.add_argument(
        "--json", action="store_true", help="print a JSON summary instead of a table"
    )
    quality.add_argument(
        "--report",
        default=None,
        metavar="FILE",
        help="also record the result in this JSON report (one entry per prior, sample count "
        "and steps; the other entries are kept)",
    )
    quality.add_argument(
        "--resume",
        action="store_true",
        help="with --report: take the result over from the report if it holds one recorded "
        "with the same settings, instead of sampling again",
    )
    _add_threads(quality)
    quality.set_defaults(func=_pinned(_prior_quality))


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point: ``python -m phalanx.adversary.inversion.cli attack ...``."""
    parser = argparse.ArgumentParser(prog="phalanx")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
