"""Benchmark of the gradient-inversion attacks (issue 6).

1. The DLG / iDLG table: ``--dataset mnist5k --model lenet-zhu --batch 1 --images 8``,
   untrained weights; label accuracy, median PSNR and seconds per image.
2. PSNR against the cluster size k for ``cluster-sum:K`` (idlg, ig, diffusion), as a PNG chart.
3. ``--compare``: ``--compare-methods`` (default IG, diffusion (DPS alone) and diffusion + IG)
   at batch 4 on a trained CNN over ``--compare-images`` images (default 4, one batch); each
   method's median PSNR with its `median_interval`, and for every method but IG the paired
   difference to IG on the same images (`paired_difference`).
4. ``--grid``: every method in ``--grid-methods`` at every batch size in ``--grid-batches``:
   median PSNR with its order-statistic interval (`median_interval`), median SSIM, label
   accuracy and seconds per image.
5. ``--label-table``: label accuracy of every rule in `LABEL_METHODS` alone (no image attack)
   on ``--label-model``, untrained and trained, at every batch size in ``--label-batches``.

Runs under `pinned_torch` (``--torch-threads``, default 1, deterministic kernels): the same
arguments give the same reconstructions on any machine and load; only the timings move.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from phalanx.adversary.inversion.names import (
    DEFAULT_LABEL_METHOD,
    DEFAULT_PRIOR_STEPS,
    DEFAULT_TORCH_THREADS,
    LABEL_METHODS,
    METHODS,
    PRIOR_OF,
)

if TYPE_CHECKING:
    import torch
    from rich.console import Console

    from phalanx.adversary.inversion.experiment import ExperimentResult
    from phalanx.learning.data import Dataset

# torch, rich and the attacks load in the handler: building the parser needs only the names.


# --compare: batch size and default attacks.
COMPARE_BATCH = 4
COMPARE_METHODS: tuple[str, ...] = ("ig", "diffusion", "diffusion-ig")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _parse_ks(text: str) -> list[int]:
    try:
        ks = [int(v) for v in text.split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--ks must be comma-separated integers, got {text!r}"
        ) from None
    if not ks or min(ks) < 1:
        raise argparse.ArgumentTypeError(f"--ks values must be >= 1, got {text!r}")
    return ks


def _chart(curves: dict[str, list[float]], ks: list[int], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(5.5, 3.6))
    for method, values in curves.items():
        axis.plot(ks, values, marker="o", label=method)
    axis.set_xscale("log", base=2)
    axis.set_xticks(ks)
    axis.set_xticklabels([str(k) for k in ks])
    axis.set_xlabel("clients in the cluster sum (k)")
    axis.set_ylabel("median PSNR (dB)")
    axis.set_title(title, fontsize=9)
    axis.grid(True, alpha=0.3)
    axis.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


GRID_LABELS = {
    "dlg": "DLG",
    "idlg": "iDLG",
    "ig": "IG",
    "gan": "GAN prior",
    "diffusion": "diffusion (DPS)",
    "diffusion-ig": "diffusion + IG",
}


def grid_chart(report: Mapping[str, object], path: Path, title: str) -> Path | None:
    """Median PSNR against batch size, one line per method, from the ``grid/METHOD/b=B``
    entries of a bench report; the bars are each cell's distribution-free median interval."""
    cells: dict[str, list[tuple[int, float, float, float]]] = {}
    for key, value in report.items():
        parts = key.split("/")
        if len(parts) != 3 or parts[0] != "grid" or not isinstance(value, dict):
            continue
        low, high = value["psnr_interval"]
        batch = int(parts[2].removeprefix("b="))
        cells.setdefault(parts[1], []).append((batch, value["median_psnr"], low, high))
    if not cells:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 3.8))
    batches: set[int] = set()
    for offset, (method, rows) in enumerate(cells.items()):
        rows.sort()
        batches.update(b for b, *_ in rows)
        shift = 2 ** ((offset - (len(cells) - 1) / 2) * 0.04)  # side by side on a log axis
        axis.errorbar(
            [b * shift for b, *_ in rows],
            [m for _, m, _, _ in rows],
            yerr=[[m - lo for _, m, lo, _ in rows], [hi - m for _, m, _, hi in rows]],
            marker="o",
            markersize=4,
            capsize=3,
            label=GRID_LABELS.get(method, method),
        )
    ticks = sorted(batches)
    axis.set_xscale("log", base=2)
    axis.set_xticks(ticks)
    axis.set_xticklabels([str(b) for b in ticks])
    axis.set_xlabel("batch size")
    axis.set_ylabel("median PSNR (dB)")
    axis.set_title(title, fontsize=9)
    axis.grid(True, alpha=0.3)
    axis.legend(fontsize=7)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def median_interval(
    values: list[float], coverage: float = 0.95
) -> tuple[float, float, float, float]:
    """(median, low, high, achieved coverage): the distribution-free interval for a median
    between order statistics ``x_(k)`` and ``x_(n+1-k)`` with the largest ``k`` whose coverage
    ``1 - 2 P(Bin(n, 1/2) < k)`` is at least `coverage` (the full range when none is)."""
    ordered = sorted(values)
    n = len(ordered)
    if n == 0:
        raise ValueError("median_interval needs at least one value")

    def achieved(k: int) -> float:
        return 1.0 - 2.0 * sum(math.comb(n, i) for i in range(k)) / 2.0**n

    k = 1
    while k + 1 <= (n + 1) // 2 and achieved(k + 1) >= coverage:
        k += 1
    return statistics.median(ordered), ordered[k - 1], ordered[n - k], achieved(k)


def run_bench(args: argparse.Namespace) -> int:
    from phalanx.adversary.inversion.experiment import pinned_torch

    with pinned_torch(args.torch_threads):
        return _run_bench(args)


def _run_bench(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from phalanx.adversary.inversion.experiment import (
        ExperimentSpec,
        load_prior_for,
        run_experiment,
    )
    from phalanx.learning.data import load_dataset

    console = Console()
    docs = Path(args.docs)
    dataset = load_dataset(args.dataset)
    report: dict[str, object] = {
        "command_args": {k: v for k, v in vars(args).items() if k != "func"}
    }
    started = time.perf_counter()

    table = Table(
        title=f"{args.dataset} / {args.model} / batch 1 / {args.images} images, untrained"
    )
    columns = ("method", "label accuracy", "median PSNR (dB) [interval]", "median SSIM")
    for column in (*columns, "s / image"):
        table.add_column(column, justify="right")
    for method in () if args.skip_table else ("dlg", "idlg"):
        spec = ExperimentSpec(
            method,
            args.model,
            batch=1,
            images=args.images,
            seed=args.seed,
            out_dir=docs / "inversion",
        )
        result = run_experiment(spec, dataset)
        _, low, high, _ = median_interval([r.psnr for r in result.rows])
        table.add_row(
            method,
            f"{result.label_accuracy:.3f}",
            f"{result.median_psnr:.2f} [{low:.2f}, {high:.2f}]",
            f"{result.median_ssim:.3f}",
            f"{result.seconds_per_image:.2f}",
        )
        report[f"table/{method}"] = _brief(result)
    if not args.skip_table:
        console.print(table)

    priors: dict[str, torch.nn.Module] = {}

    def prior_for(method: str) -> torch.nn.Module | None:
        if method not in PRIOR_OF:
            return None
        kind = PRIOR_OF[method]
        if kind not in priors:
            priors[kind], path, cached = load_prior_for(
                kind, dataset, args.prior_steps, args.prior_cache
            )
            console.print(f"{kind} prior {'loaded from' if cached else 'trained into'} {path}")
        return priors[kind]

    curves: dict[str, list[float]] = {}
    for method in args.methods:
        curves[method] = []
        for k in args.ks:
            spec = ExperimentSpec(
                method,
                args.model,
                batch=1,
                images=args.chart_images,
                target=f"cluster-sum:{k}",
                seed=args.seed,
            )
            result = run_experiment(spec, dataset, prior_for(method))
            curves[method].append(result.median_psnr)
            report[f"chart/{method}/k={k}"] = _brief(result)
            console.print(
                f"{method:9s} k={k:2d}: median PSNR {result.median_psnr:6.2f} dB "
                f"({result.seconds_per_image:.2f} s/image, "
                f"secure_sum={result.used_secure_sum})"
            )
    if curves:
        chart = docs / "inversion" / "psnr_vs_k.png"
        _chart(
            curves,
            args.ks,
            chart,
            f"{args.dataset} / {args.model}, batch 1, untrained: attack on cluster-sum:K",
        )
        console.print(f"chart: {chart}")

    if args.compare:
        compared: dict[str, ExperimentResult] = {}
        for method in args.compare_methods:
            spec = ExperimentSpec(
                method,
                "cnn",
                batch=COMPARE_BATCH,
                images=COMPARE_BATCH * math.ceil(args.compare_images / COMPARE_BATCH),
                trained=True,
                seed=args.seed,
                iterations=args.compare_iterations,
                out_dir=docs / "inversion",
                labels=args.labels,
            )
            result = run_experiment(spec, dataset, prior_for(method))
            compared[method] = result
            median, low, high, _ = median_interval([r.psnr for r in result.rows])
            report[f"compare/{method}"] = {
                **_brief(result),
                "per_image": [vars(r) for r in result.rows],
            }
            console.print(
                f"trained cnn, batch {COMPARE_BATCH}, {len(result.rows)} images, {method:12s}: "
                f"median PSNR {median:.2f} dB [{low:.2f}, {high:.2f}], "
                f"SSIM {result.median_ssim:.3f}, label acc {result.label_accuracy:.2f}, "
                f"{result.seconds_per_image:.2f} s/image"
            )
        if "ig" in compared:
            for method, result in compared.items():
                if method == "ig":
                    continue
                paired = paired_difference(result, compared["ig"])
                report[f"compare/{method}-minus-ig"] = asdict(paired)
                console.print(
                    f"{method} - ig, paired over {paired.images} images: median "
                    f"{paired.median:+.2f} dB [{paired.low:+.2f}, {paired.high:+.2f}], "
                    f"{paired.coverage:.0%} coverage, above IG on {paired.wins}"
                )
    (docs / "inversion").mkdir(parents=True, exist_ok=True)
    out = docs / "inversion" / args.report
    earlier: dict[str, object] = {}
    if args.resume and out.exists():
        earlier = json.loads(out.read_text())

    def checkpoint() -> None:
        """The report so far, written atomically: an interrupted run keeps its finished cells."""
        partial = out.with_suffix(".partial")
        partial.write_text(json.dumps({**report, "complete": False}, indent=2))
        partial.replace(out)

    if args.grid:
        _grid(args, dataset, prior_for, report, console, checkpoint, earlier)
        grid_png = grid_chart(
            report,
            docs / "inversion" / Path(args.report).with_suffix(".png").name,
            f"{args.dataset} / {args.grid_model} "
            f"({'trained' if args.grid_trained else 'untrained'}): every method by batch size",
        )
        if grid_png is not None:
            console.print(f"grid chart: {grid_png}")
    if args.label_table:
        _label_table(args, dataset, report, console)
    report["total_seconds"] = time.perf_counter() - started
    out.write_text(json.dumps(report, indent=2))
    console.print(f"total {report['total_seconds']:.0f} s; numbers in {out}")
    return 0


def _grid_cell(
    spec_fields: dict[str, object],
    dataset_name: str,
    prior_steps: int | None,
    prior_cache: str | None,
    torch_threads: int,
) -> dict[str, object]:
    """One grid cell in a worker process: the same pinned threads, the same cached prior and
    the same seed as in the parent, so the same reconstruction bytes as a serial run."""
    from phalanx.adversary.inversion.experiment import (
        ExperimentSpec,
        load_prior_for,
        pinned_torch,
        run_experiment,
    )
    from phalanx.learning.data import load_dataset

    with pinned_torch(torch_threads):
        dataset = load_dataset(dataset_name)
        spec = ExperimentSpec(**spec_fields)  # type: ignore[arg-type]
        prior = None
        if spec.method in PRIOR_OF:
            prior, _, _ = load_prior_for(spec.method, dataset, prior_steps, prior_cache)
        return _brief(run_experiment(spec, dataset, prior))


def _cell_key(spec_fields: Mapping[str, object], args: argparse.Namespace) -> dict[str, object]:
    """What a grid cell's numbers depend on: a report cell with the same key is reused by
    ``--resume``."""
    return {
        **spec_fields,
        "dataset": args.dataset,
        "prior_steps": args.prior_steps,
        "torch_threads": args.torch_threads,
    }


def _grid(
    args: argparse.Namespace,
    dataset: Dataset,
    prior_for: Callable[[str], torch.nn.Module | None],
    report: dict[str, object],
    console: Console,
    checkpoint: Callable[[], None] = lambda: None,
    earlier: Mapping[str, object] | None = None,
) -> None:
    """Every method at every batch size on ``--grid-model``: ``--grid-images`` images a cell
    (rounded up to whole batches), untrained weights unless ``--grid-trained``.

    ``--jobs N`` runs the cells in N worker processes (each pinned to ``--torch-threads``, so
    the reconstructions are those of a serial run); `checkpoint` saves the report after every
    cell, and a cell of `earlier` (``--resume``: the report file from before) with the same
    key is taken over instead of run again."""
    from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
    from multiprocessing import get_context

    from rich.table import Table

    from phalanx.adversary.inversion.experiment import ExperimentSpec, run_experiment

    title = (
        f"{args.dataset} / {args.grid_model} ({'trained' if args.grid_trained else 'untrained'})"
        f", update target, >= {args.grid_images} images a cell, seed {args.seed}"
    )
    cells: dict[str, dict[str, object]] = {}
    for method in args.grid_methods:
        for batch in args.grid_batches:
            cells[f"grid/{method}/b={batch}"] = {
                "method": method,
                "model": args.grid_model,
                "batch": batch,
                "images": batch * math.ceil(args.grid_images / batch),
                "trained": args.grid_trained,
                "iterations": args.grid_iterations,
                "seed": args.seed,
                "labels": args.labels,
            }
    todo: list[str] = []
    for name, fields in cells.items():
        old = (earlier or {}).get(name)
        if isinstance(old, dict) and old.get("key") == _cell_key(fields, args):
            report[name] = old
            console.print(f"{name}: taken over from the earlier report")
        else:
            todo.append(name)

    def finished(name: str, brief: dict[str, object]) -> None:
        report[name] = {**brief, "key": _cell_key(cells[name], args)}
        checkpoint()
        interval: list[float] = brief["psnr_interval"]  # type: ignore[assignment]
        low, high = interval
        console.print(
            f"grid {cells[name]['method']!s:12s} b={cells[name]['batch']!s:>2}: "
            f"{brief['median_psnr']:6.2f} dB [{low:.2f}, {high:.2f}], "
            f"labels {brief['label_accuracy']:.3f}, {brief['seconds_per_image']:.2f} s/image "
            f"({sum(cell in report for cell in cells)} of {len(cells)} cells done)"
        )

    if args.jobs <= 1:
        for name in todo:
            spec = ExperimentSpec(**cells[name])  # type: ignore[arg-type]
            finished(name, _brief(run_experiment(spec, dataset, prior_for(spec.method))))
    else:
        for method in {str(cells[name]["method"]) for name in todo}:
            prior_for(method)  # trained once here, then read from the cache by the workers
        with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as pool:
            pending: dict[Future[dict[str, object]], str] = {}
            for name in todo:
                work = (cells[name], args.dataset, args.prior_steps, args.prior_cache)
                pending[pool.submit(_grid_cell, *work, args.torch_threads)] = name
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    name = pending.pop(future)
                    finished(name, future.result())

    table = Table(title=title)
    columns = ("method", "batch", "images", "median PSNR (dB) [interval, coverage]")
    for column in (*columns, "median SSIM", "label accuracy", "s / image"):
        table.add_column(column, justify="right")
    for name, fields in cells.items():
        cell = report[name]
        assert isinstance(cell, dict)
        low, high = cell["psnr_interval"]
        table.add_row(
            str(fields["method"]),
            str(fields["batch"]),
            str(cell["images"]),
            f"{cell['median_psnr']:.2f} [{low:.2f}, {high:.2f}, "
            f"{cell['psnr_interval_coverage']:.0%}]",
            f"{cell['median_ssim']:.3f}",
            f"{cell['label_accuracy']:.3f}",
            f"{cell['seconds_per_image']:.2f}",
        )
    console.print(table)


def _label_table(
    args: argparse.Namespace, dataset: Dataset, report: dict[str, object], console: Console
) -> None:
    """Label accuracy of each rule on ``--label-model``, untrained and trained: victims and
    observed updates as `run_experiment` draws them (``--label-images`` images a cell, rounded
    up to whole batches, seed ``--seed``), labels as `invert` reads them (float64 copy). Each
    batch's label multiset is scored on its own (`label_accuracy`), weighted by its size."""
    import copy

    import numpy as np
    import torch
    from rich.table import Table

    from phalanx.adversary.inversion.experiment import victim_model
    from phalanx.adversary.inversion.knowledge import AttackerKnowledge
    from phalanx.adversary.inversion.labels import recover_labels
    from phalanx.adversary.inversion.matching import observed_pseudo_gradient
    from phalanx.adversary.inversion.metrics import label_accuracy
    from phalanx.adversary.inversion.priors import auxiliary_split
    from phalanx.adversary.inversion.targets import TargetSpec, observe

    aux_index, victim_index = auxiliary_split(len(dataset.train_x))
    pool = victim_index[np.random.default_rng(args.seed).permutation(len(victim_index))]
    table = Table(title=f"label accuracy, {args.dataset} / {args.label_model}, update target")
    for column in ("model", "batch", "images", *LABEL_METHODS):
        table.add_column(column, justify="right")
    for trained in (False, True):
        model = victim_model(args.label_model, dataset, args.seed, trained, aux_index)
        attack_model = copy.deepcopy(model).to(torch.float64).eval()
        state = "trained" if trained else "untrained"
        for batch in args.label_batches:
            batches = math.ceil(args.label_images / batch)
            knowledge = AttackerKnowledge(batch, dataset.input_shape, dataset.num_classes)
            correct = dict.fromkeys(LABEL_METHODS, 0.0)
            for number in range(batches):
                chosen = pool[number * batch : (number + 1) * batch]
                victim = (dataset.train_x[chosen], dataset.train_y[chosen])
                update = observe(model, victim, TargetSpec("update")).update
                target = observed_pseudo_gradient(update, knowledge, torch.float64)
                for method in LABEL_METHODS:
                    generator = torch.Generator().manual_seed(args.seed * 100_003 + number)
                    labels = recover_labels(attack_model, target, knowledge, generator, method)
                    correct[method] += batch * label_accuracy(victim[1], labels.numpy())
            images = batches * batch
            accuracy = {method: value / images for method, value in correct.items()}
            report[f"labels/{state}/b={batch}"] = {"images": images, **accuracy}
            table.add_row(
                state, str(batch), str(images), *(f"{accuracy[m]:.3f}" for m in LABEL_METHODS)
            )
    console.print(table)


@dataclass(frozen=True)
class PairedDifference:
    """Per-image PSNR differences of one method minus a baseline on the same victim images."""

    images: int
    median: float
    low: float
    high: float
    coverage: float
    wins: int  # images where the method's PSNR is above the baseline's


def paired_difference(result: ExperimentResult, baseline: ExperimentResult) -> PairedDifference:
    """Median of the per-image PSNR differences ``result - baseline`` (paired by victim image
    index) with its `median_interval` (95 %) and the achieved coverage."""
    base = {r.index: r.psnr for r in baseline.rows}
    if sorted(r.index for r in result.rows) != sorted(base):
        raise ValueError("paired_difference needs both results on the same victim images")
    differences = [r.psnr - base[r.index] for r in result.rows]
    median, low, high, coverage = median_interval(differences)
    return PairedDifference(
        len(differences), median, low, high, coverage, sum(d > 0 for d in differences)
    )


def _brief(result: ExperimentResult) -> dict[str, object]:
    _, low, high, coverage = median_interval([r.psnr for r in result.rows])
    return {
        "median_psnr": result.median_psnr,
        "psnr_interval": [low, high],
        "psnr_interval_coverage": coverage,
        "images": len(result.rows),
        "median_ssim": result.median_ssim,
        "label_accuracy": result.label_accuracy,
        "seconds_per_image": result.seconds_per_image,
        "used_secure_sum": result.used_secure_sum,
        "reconstruction_sha256": result.digest,
    }


def register_bench(bench_subparsers: argparse._SubParsersAction) -> None:
    """Add ``phalanx bench inversion``."""
    parser = bench_subparsers.add_parser("inversion", help="gradient-inversion attack benchmark")
    parser.add_argument(
        "--dataset", default="mnist5k", help="data set of the victims (default %(default)s)"
    )
    parser.add_argument(
        "--model", default="lenet-zhu", help="victim model of table and chart (default %(default)s)"
    )
    parser.add_argument(
        "--images", type=int, default=8, help="images in the DLG/iDLG table (default %(default)s)"
    )
    parser.add_argument(
        "--chart-images",
        type=int,
        default=2,
        help="images per point of the PSNR-vs-k chart (default %(default)s)",
    )
    parser.add_argument(
        "--ks",
        type=_parse_ks,
        default=[1, 2, 4, 8, 16],
        metavar="K,K,...",
        help="cluster sizes k of the chart, comma-separated (default 1,2,4,8,16)",
    )
    parser.add_argument(
        "--methods",
        nargs="*",
        default=["idlg", "ig", "diffusion"],
        help="attacks of the chart; none skips it (default idlg ig diffusion)",
    )
    parser.add_argument(
        "--compare",
        action="store_true",
        help="also run the priors vs IG at batch 4 on a trained CNN",
    )
    parser.add_argument(
        "--compare-methods",
        nargs="+",
        choices=METHODS,
        default=list(COMPARE_METHODS),
        help=f"attacks of --compare (default {' '.join(COMPARE_METHODS)})",
    )
    parser.add_argument(
        "--compare-images",
        type=_positive,
        default=COMPARE_BATCH,
        help=f"images of --compare, rounded up to whole batches of {COMPARE_BATCH} "
        "(default %(default)s)",
    )
    parser.add_argument(
        "--compare-iterations",
        type=int,
        default=None,
        help="optimiser steps of --compare (default: each method's own)",
    )
    parser.add_argument(
        "--prior-steps",
        type=int,
        default=None,
        help="training steps of a prior if not cached (default "
        + ", ".join(f"{steps} {kind}" for kind, steps in DEFAULT_PRIOR_STEPS.items())
        + ")",
    )
    parser.add_argument(
        "--prior-cache",
        default=None,
        help="prior cache directory (default $PHALANX_PRIOR_CACHE or ~/.cache/phalanx/priors)",
    )
    parser.add_argument("--grid", action="store_true", help="also run methods x batch sizes")
    parser.add_argument(
        "--grid-methods",
        nargs="*",
        default=list(METHODS),
        help=f"attacks of --grid (default all: {' '.join(METHODS)})",
    )
    parser.add_argument(
        "--grid-batches",
        type=_parse_ks,
        default=[1, 4, 16],
        metavar="B,B,...",
        help="batch sizes of --grid, comma-separated (default 1,4,16)",
    )
    parser.add_argument(
        "--grid-images",
        type=int,
        default=4,
        help="images a grid cell, rounded up to whole batches (default %(default)s)",
    )
    parser.add_argument(
        "--grid-model", default="lenet-zhu", help="victim model of --grid (default %(default)s)"
    )
    parser.add_argument(
        "--grid-trained", action="store_true", help="--grid attacks a trained model"
    )
    parser.add_argument(
        "--grid-iterations",
        type=int,
        default=None,
        help="optimiser steps of --grid (default: each method's own)",
    )
    parser.add_argument(
        "--labels",
        default=DEFAULT_LABEL_METHOD,
        choices=LABEL_METHODS,
        help="label-recovery rule of --compare and --grid (default %(default)s)",
    )
    parser.add_argument(
        "--label-table",
        action="store_true",
        help="also compare the label-recovery rules alone, untrained and trained",
    )
    parser.add_argument(
        "--label-model", default="cnn", help="victim model of --label-table (default %(default)s)"
    )
    parser.add_argument(
        "--label-batches",
        type=_parse_ks,
        default=[4, 8, 16],
        metavar="B,B,...",
        help="batch sizes of --label-table, comma-separated (default 4,8,16)",
    )
    parser.add_argument(
        "--label-images",
        type=int,
        default=32,
        help="images a --label-table cell, rounded up to whole batches (default %(default)s)",
    )
    parser.add_argument(
        "--jobs",
        type=_positive,
        default=1,
        help="worker processes for the --grid cells (default %(default)s; the same "
        "reconstructions as one)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="take over the --grid cells that DOCS/inversion/REPORT already holds with the "
        "same settings (the report is saved after every cell)",
    )
    parser.add_argument("--skip-table", action="store_true", help="skip the DLG / iDLG table")
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of victims and attacks (default %(default)s)"
    )
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=DEFAULT_TORCH_THREADS,
        help="torch intra-op threads, fixed for reproducibility (default %(default)s)",
    )
    parser.add_argument(
        "--docs", default="docs", help="where the chart and grids go (default %(default)s)"
    )
    parser.add_argument(
        "--report",
        default="bench.json",
        help="JSON file name in DOCS/inversion (default %(default)s)",
    )
    parser.set_defaults(func=run_bench)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="phalanx bench")
    register_bench(parser.add_subparsers(dest="bench", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
