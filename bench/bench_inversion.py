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
6. ``--forward-ts``: ``--forward-methods`` (default iDLG, IG and diffusion) against the node's
   forward-noising defense at each level T (``forward:T``, `targets.parse_defense`: the
   attacker knows the schedule), batch 1 on ``--model``, ``--forward-images`` images a point;
   the chart ``psnr_vs_forward_t.png`` and each method's paired difference to IG at each T.

Runs under `pinned_torch` (``--torch-threads``, default 1, deterministic kernels): the same
arguments give the same reconstructions on any machine and load; only the timings move. Every
attack run of 1-4 and 6 is a cell (`bench_cells`): ``--jobs N`` runs the cells in N worker
processes, the report is saved after each, and ``--resume`` takes over the cells it already
holds with the same settings. ``phalanx bench inversion-page`` runs all the calls of
``docs/inversion.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from phalanx.adversary.inversion.names import (
    DEFAULT_LABEL_METHOD,
    DEFAULT_PRIOR_STEPS,
    DEFAULT_TORCH_THREADS,
    LABEL_METHODS,
    METHODS,
    PRIOR_OF,
)
from phalanx.bench.arguments import int_list

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


_parse_ks = int_list(1)
_parse_levels = int_list(0, 1000)


def _chart(
    report: Mapping[str, object],
    cell: str,
    methods: list[str],
    ks: list[int],
    path: Path,
    title: str,
    xlabel: str = "clients in the cluster sum (k)",
    log_x: bool = True,
) -> None:
    """Median PSNR against `ks`, a line per method, from the report entries named by the
    template `cell` (``{method}`` and ``{point}`` filled in)."""
    curves = {
        method: [_entry(report, cell.format(method=method, point=k))["median_psnr"] for k in ks]
        for method in methods
    }
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(5.5, 3.6))
    for method, values in curves.items():
        axis.plot(ks, values, marker="o", label=method)
    if log_x:
        axis.set_xscale("log", base=2)
    axis.set_xticks(ks)
    axis.set_xticklabels([str(k) for k in ks])
    axis.set_xlabel(xlabel)
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


def report_cells(
    report: Mapping[str, object], kind: str
) -> Iterator[tuple[str, int, dict[str, Any]]]:
    """``(name, size, cell)`` of every ``KIND/NAME/X=SIZE`` entry of a bench report, in the
    report's order: ``grid/METHOD/b=B``, ``chart/METHOD/k=K``, ``paired/METHOD/b=B``,
    ``labels/STATE/b=B``."""
    for key, cell in report.items():
        parts = key.split("/")
        if len(parts) == 3 and parts[0] == kind and isinstance(cell, dict):
            yield parts[1], int(parts[2].partition("=")[2]), cell


def grid_chart(report: Mapping[str, object], path: Path, title: str) -> Path | None:
    """Median PSNR against batch size, one line per method, from the ``grid/METHOD/b=B``
    entries of a bench report; the bars are each cell's distribution-free median interval."""
    cells: dict[str, list[tuple[int, float, float, float]]] = {}
    for method, batch, value in report_cells(report, "grid"):
        low, high = value["psnr_interval"]
        cells.setdefault(method, []).append((batch, value["median_psnr"], low, high))
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

    from phalanx.adversary.inversion.experiment import load_prior_for
    from phalanx.learning.data import load_dataset

    console = Console()
    docs = Path(args.docs)
    dataset = load_dataset(args.dataset)
    report: dict[str, object] = {
        "command_args": {k: v for k, v in vars(args).items() if k != "func"}
    }
    started = time.perf_counter()

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

    cells = bench_cells(args)
    _run_cells(cells, args, dataset, prior_for, report, console, checkpoint, earlier)

    if not args.skip_table:
        table = Table(
            title=f"{args.dataset} / {args.model} / batch 1 / {args.images} images, untrained"
        )
        columns = ("method", "label accuracy", "median PSNR (dB) [interval]", "median SSIM")
        for column in (*columns, "s / image"):
            table.add_column(column, justify="right")
        for method in ("dlg", "idlg"):
            cell = _entry(report, f"table/{method}")
            low, high = cell["psnr_interval"]
            table.add_row(
                method,
                f"{cell['label_accuracy']:.3f}",
                f"{cell['median_psnr']:.2f} [{low:.2f}, {high:.2f}]",
                f"{cell['median_ssim']:.3f}",
                f"{cell['seconds_per_image']:.2f}",
            )
        console.print(table)

    if args.methods:
        chart = docs / "inversion" / "psnr_vs_k.png"
        _chart(
            report,
            "chart/{method}/k={point}",
            args.methods,
            args.ks,
            chart,
            f"{args.dataset} / {args.model}, batch 1, untrained: attack on cluster-sum:K, "
            f"{args.chart_images} images a point",
        )
        console.print(f"chart: {chart}")

    if args.compare and "ig" in args.compare_methods:
        _pair_with_ig(
            report, args.compare_methods, "compare/{method}", "compare/{method}-minus-ig", console
        )

    if args.grid:
        _grid_table(args, cells, report, console)
        for name, paired in grid_pairs(report).items():
            report[name] = asdict(paired)
            console.print(
                f"{name}: median {paired.median:+.2f} dB [{paired.low:+.2f}, {paired.high:+.2f}]"
                f", above IG on {paired.wins} of {paired.images}"
            )
        grid_png = grid_chart(
            report,
            docs / "inversion" / Path(args.report).with_suffix(".png").name,
            f"{args.dataset} / {args.grid_model} "
            f"({'trained' if args.grid_trained else 'untrained'}): every method by batch size",
        )
        if grid_png is not None:
            console.print(f"grid chart: {grid_png}")
    if args.forward_ts:
        _forward_results(args, report, docs, console)
    if args.label_table:
        _label_table(args, dataset, report, console)
    report["total_seconds"] = time.perf_counter() - started
    report["cell_seconds"] = cell_seconds(report)
    out.write_text(json.dumps(report, indent=2))
    console.print(f"total {report['total_seconds']:.0f} s; numbers in {out}")
    return 0


def _forward_results(
    args: argparse.Namespace, report: dict[str, object], docs: Path, console: Console
) -> None:
    """The ``--forward-ts`` chart, and each method minus IG on the same victims at each T."""
    chart = docs / "inversion" / "psnr_vs_forward_t.png"
    _chart(
        report,
        "forward/{method}/t={point}",
        args.forward_methods,
        args.forward_ts,
        chart,
        f"{args.dataset} / {args.model}, batch 1, untrained: attack on forward:T, "
        f"{args.forward_images} images a point",
        xlabel="forward-noising level T (cosine schedule of 1,000 steps)",
        log_x=False,
    )
    console.print(f"chart: {chart}")
    if "ig" not in args.forward_methods:
        return
    for t in args.forward_ts:
        _pair_with_ig(
            report,
            args.forward_methods,
            f"forward/{{method}}/t={t}",
            f"forward-minus-ig/{{method}}/t={t}",
            console,
            f"forward:{t}: ",
        )


def _pair_with_ig(
    report: dict[str, object],
    methods: list[str],
    cell: str,
    entry: str,
    console: Console,
    prefix: str = "",
) -> None:
    """For every method but IG, its cell (the template `cell` with ``{method}`` filled in) minus
    IG's on the same victims (`paired_rows`), recorded under the template `entry` and printed."""
    baseline = _entry(report, cell.format(method="ig"))["per_image"]
    for method in methods:
        if method == "ig":
            continue
        paired = paired_rows(_entry(report, cell.format(method=method))["per_image"], baseline)
        report[entry.format(method=method)] = asdict(paired)
        console.print(
            f"{prefix}{method} - ig, paired over {paired.images} images: median "
            f"{paired.median:+.2f} dB [{paired.low:+.2f}, {paired.high:+.2f}], "
            f"{paired.coverage:.0%} coverage, above IG on {paired.wins}"
        )


def cell_seconds(report: Mapping[str, object]) -> float:
    """What the attack runs of `report` cost when they ran, taken over or not: the sum of
    seconds per image times images over its cells."""
    return sum(
        float(cell["seconds_per_image"]) * int(cell["images"])
        for cell in report.values()
        if isinstance(cell, dict) and "seconds_per_image" in cell and "images" in cell
    )


def grid_pairs(report: Mapping[str, object]) -> dict[str, PairedDifference]:
    """``paired/METHOD/b=B``: each grid cell minus IG's at the same batch size on the same
    victims (`paired_rows`), for every pair of cells that kept their per-image rows."""
    baselines = {
        batch: cell for method, batch, cell in report_cells(report, "grid") if method == "ig"
    }
    pairs: dict[str, PairedDifference] = {}
    for method, batch, cell in report_cells(report, "grid"):
        baseline = baselines.get(batch, {})
        if method != "ig" and "per_image" in cell and "per_image" in baseline:
            pairs[f"paired/{method}/b={batch}"] = paired_rows(
                cell["per_image"], baseline["per_image"]
            )
    return pairs


def _entry(report: Mapping[str, object], name: str) -> dict:  # type: ignore[type-arg]
    cell = report[name]
    assert isinstance(cell, dict)
    return cell


# Cells whose report entry keeps every image's row (the paired differences need them).
_PER_IMAGE_PREFIXES = ("compare/", "grid/", "forward/")


def bench_cells(args: argparse.Namespace) -> dict[str, dict[str, object]]:
    """Every attack run of one ``bench inversion`` call, by report entry, in report order:
    ``table/METHOD``, ``chart/METHOD/k=K``, ``compare/METHOD``, ``grid/METHOD/b=B`` and
    ``forward/METHOD/t=T``, each as the `ExperimentSpec` fields it runs (``out_dir`` is where
    the reconstructions are drawn; ``defense`` is `targets.parse_defense`'s text)."""
    docs = str(Path(args.docs) / "inversion")
    cells: dict[str, dict[str, object]] = {}
    for method in () if args.skip_table else ("dlg", "idlg"):
        cells[f"table/{method}"] = {
            "method": method,
            "model": args.model,
            "batch": 1,
            "images": args.images,
            "seed": args.seed,
            "out_dir": docs,
        }
    for method in args.methods:
        for k in args.ks:
            cells[f"chart/{method}/k={k}"] = {
                "method": method,
                "model": args.model,
                "batch": 1,
                "images": args.chart_images,
                "target": f"cluster-sum:{k}",
                "seed": args.seed,
            }
    for method in args.compare_methods if args.compare else ():
        cells[f"compare/{method}"] = {
            "method": method,
            "model": "cnn",
            "batch": COMPARE_BATCH,
            "images": COMPARE_BATCH * math.ceil(args.compare_images / COMPARE_BATCH),
            "trained": True,
            "seed": args.seed,
            "iterations": args.compare_iterations,
            "out_dir": docs,
            "labels": args.labels,
        }
    for method in args.grid_methods if args.grid else ():
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
    for method in args.forward_methods if args.forward_ts else ():
        for level in args.forward_ts:
            cells[f"forward/{method}/t={level}"] = {
                "method": method,
                "model": args.model,
                "batch": 1,
                "images": args.forward_images,
                "defense": f"forward:{level}",
                "seed": args.seed,
            }
    return cells


def _bench_cell(
    spec_fields: dict[str, object],
    dataset_name: str,
    prior_steps: int | None,
    prior_cache: str | None,
    torch_threads: int,
    per_image: bool,
) -> dict[str, object]:
    """One cell in a worker process: the same pinned threads, the same cached prior and the
    same seed as in the parent, so the same reconstruction bytes as a serial run."""
    from phalanx.adversary.inversion.experiment import load_prior_for, pinned_torch
    from phalanx.learning.data import load_dataset

    with pinned_torch(torch_threads):
        dataset = load_dataset(dataset_name)
        prior = None
        method = str(spec_fields["method"])
        if method in PRIOR_OF:
            prior, _, _ = load_prior_for(method, dataset, prior_steps, prior_cache)
        return _run_cell(spec_fields, dataset, prior, per_image)


def _run_cell(
    spec_fields: Mapping[str, object],
    dataset: Dataset,
    prior: torch.nn.Module | None,
    per_image: bool,
) -> dict[str, object]:
    from phalanx.adversary.inversion.experiment import ExperimentSpec, run_experiment
    from phalanx.adversary.inversion.targets import parse_defense

    fields = dict(spec_fields)
    if fields.get("out_dir") is not None:
        fields["out_dir"] = Path(str(fields["out_dir"]))
    if fields.get("defense") is not None:
        fields["defense"] = parse_defense(str(fields["defense"]), seed=int(fields["seed"]))  # type: ignore[call-overload]
    result = run_experiment(ExperimentSpec(**fields), dataset, prior)  # type: ignore[arg-type]
    brief = _brief(result)
    if per_image:
        brief["per_image"] = [vars(row) for row in result.rows]
    return brief


def cell_key(spec_fields: Mapping[str, object], args: argparse.Namespace) -> dict[str, object]:
    """What a cell's numbers depend on: a report cell with the same key is reused by
    ``--resume`` (where the reconstructions are drawn is not part of it)."""
    return {
        **{name: value for name, value in spec_fields.items() if name != "out_dir"},
        "dataset": args.dataset,
        "prior_steps": args.prior_steps,
        "torch_threads": args.torch_threads,
    }


def _recorded_keys(earlier: Mapping[str, object]) -> dict[str, dict[str, object]]:
    """The cell keys of a report, read from each cell's ``key`` or, for a report written before
    cells carried one, rebuilt from the report's ``command_args`` (the options it was run
    with, missing ones at today's defaults)."""
    keys: dict[str, dict[str, object]] = {}
    recorded = earlier.get("command_args")
    if isinstance(recorded, dict):
        parser = argparse.ArgumentParser()
        register_bench(parser.add_subparsers(dest="bench"))
        defaults = vars(parser.parse_args(["inversion"]))
        old_args = argparse.Namespace(**{**defaults, **recorded})
        try:
            old_cells = bench_cells(old_args)
        except (TypeError, ValueError, KeyError):
            old_cells = {}
        keys = {name: cell_key(fields, old_args) for name, fields in old_cells.items()}
    for name, cell in earlier.items():
        if isinstance(cell, dict) and isinstance(cell.get("key"), dict):
            keys[name] = cell["key"]
    return keys


def _run_cells(
    cells: Mapping[str, dict[str, object]],
    args: argparse.Namespace,
    dataset: Dataset,
    prior_for: Callable[[str], torch.nn.Module | None],
    report: dict[str, object],
    console: Console,
    checkpoint: Callable[[], None] = lambda: None,
    earlier: Mapping[str, object] | None = None,
) -> None:
    """Run `cells` into `report`, in `cells` order whatever order they finish in.

    ``--jobs N`` runs them in N worker processes (each pinned to ``--torch-threads``, so the
    reconstructions are those of a serial run); `checkpoint` saves the report after every
    cell, and a cell of `earlier` (``--resume``: the report file from before) with the same
    key is taken over instead of run again."""
    from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
    from multiprocessing import get_context

    recorded = _recorded_keys(earlier or {})
    done: dict[str, dict[str, object]] = {}
    todo: list[str] = []
    for name, fields in cells.items():
        old = (earlier or {}).get(name)
        if isinstance(old, dict) and recorded.get(name) == cell_key(fields, args):
            done[name] = {**old, "key": cell_key(fields, args)}
            console.print(f"{name}: taken over from the earlier report")
        else:
            todo.append(name)

    def publish() -> None:
        """The finished cells into `report` in `cells` order, whichever finished first."""
        for name in cells:
            report.pop(name, None)
        for name in cells:
            if name in done:
                report[name] = done[name]

    def finished(name: str, brief: dict[str, object]) -> None:
        done[name] = {**brief, "key": cell_key(cells[name], args)}
        publish()
        checkpoint()
        interval: list[float] = brief["psnr_interval"]  # type: ignore[assignment]
        low, high = interval
        console.print(
            f"{name}: {brief['median_psnr']:6.2f} dB [{low:.2f}, {high:.2f}], "
            f"labels {brief['label_accuracy']:.3f}, {brief['seconds_per_image']:.2f} s/image "
            f"({len(done)} of {len(cells)} cells done)"
        )

    def per_image(name: str) -> bool:
        return name.startswith(_PER_IMAGE_PREFIXES)

    publish()
    if args.jobs <= 1:
        for name in todo:
            method = str(cells[name]["method"])
            finished(name, _run_cell(cells[name], dataset, prior_for(method), per_image(name)))
    elif todo:
        for method in {str(cells[name]["method"]) for name in todo}:
            prior_for(method)  # trained once here, then read from the cache by the workers
        with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as pool:
            pending: dict[Future[dict[str, object]], str] = {}
            for name in todo:
                work = (cells[name], args.dataset, args.prior_steps, args.prior_cache)
                future = pool.submit(_bench_cell, *work, args.torch_threads, per_image(name))
                pending[future] = name
            while pending:
                finished_now, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished_now:
                    name = pending.pop(future)
                    finished(name, future.result())


def _grid_table(
    args: argparse.Namespace,
    cells: Mapping[str, Mapping[str, object]],
    report: Mapping[str, object],
    console: Console,
) -> None:
    """The ``--grid`` cells of `report` as one table: every method at every batch size on
    ``--grid-model``, ``--grid-images`` images a cell (rounded up to whole batches)."""
    from rich.table import Table

    title = (
        f"{args.dataset} / {args.grid_model} ({'trained' if args.grid_trained else 'untrained'})"
        f", update target, >= {args.grid_images} images a cell, seed {args.seed}"
    )
    table = Table(title=title)
    columns = ("method", "batch", "images", "median PSNR (dB) [interval, coverage]")
    for column in (*columns, "median SSIM", "label accuracy", "s / image"):
        table.add_column(column, justify="right")
    for name, fields in cells.items():
        if not name.startswith("grid/"):
            continue
        cell = _entry(report, name)
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
    return paired_rows([vars(r) for r in result.rows], [vars(r) for r in baseline.rows])


def paired_rows(rows: list[dict[str, float]], baseline: list[dict[str, float]]) -> PairedDifference:
    """`paired_difference` on the ``per_image`` rows of two report cells."""
    base = {int(r["index"]): r["psnr"] for r in baseline}
    if sorted(int(r["index"]) for r in rows) != sorted(base):
        raise ValueError("paired_difference needs both results on the same victim images")
    differences = [r["psnr"] - base[int(r["index"])] for r in rows]
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
        "--forward-ts",
        type=_parse_levels,
        default=[],
        metavar="T,T,...",
        help="also attack the forward-noising defense at these levels T (0-1000; the attacker "
        "knows the schedule), batch 1 on --model (default: none)",
    )
    parser.add_argument(
        "--forward-methods",
        nargs="+",
        choices=METHODS,
        default=["idlg", "ig", "diffusion"],
        help="attacks of --forward-ts (default idlg ig diffusion)",
    )
    parser.add_argument(
        "--forward-images",
        type=_positive,
        default=4,
        help="images a --forward-ts point (default %(default)s)",
    )
    parser.add_argument(
        "--jobs",
        type=_positive,
        default=1,
        help="worker processes for the attack runs (default %(default)s; the same "
        "reconstructions as one)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="take over the cells that DOCS/inversion/REPORT already holds with the same "
        "settings (the report is saved after every cell)",
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
