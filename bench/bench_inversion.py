"""Benchmark of the gradient-inversion attacks (issue 6).

1. The DLG / iDLG table: ``--dataset mnist5k --model lenet-zhu --batch 1 --images 8``,
   untrained weights; label accuracy, median PSNR and seconds per image.
2. PSNR against the cluster size k for ``cluster-sum:K`` (idlg, ig, diffusion), as a PNG chart.
3. Diffusion against IG at batch 4 on a trained CNN (the issue's +3 dB question).

Runs single-threaded (``torch.set_num_threads(1)``); every number comes from this one run.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from adversary.inversion.experiment import (
    ExperimentResult,
    ExperimentSpec,
    load_prior_for,
    run_experiment,
)
from learning.data import load_dataset


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


def run_bench(args: argparse.Namespace) -> int:
    torch.set_num_threads(1)
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
    for column in ("method", "label accuracy", "median PSNR (dB)", "median SSIM", "s / image"):
        table.add_column(column, justify="right")
    for method in ("dlg", "idlg"):
        spec = ExperimentSpec(
            method,
            args.model,
            batch=1,
            images=args.images,
            seed=args.seed,
            out_dir=docs / "inversion",
        )
        result = run_experiment(spec, dataset)
        table.add_row(
            method,
            f"{result.label_accuracy:.3f}",
            f"{result.median_psnr:.2f}",
            f"{result.median_ssim:.3f}",
            f"{result.seconds_per_image:.2f}",
        )
        report[f"table/{method}"] = _brief(result)
    console.print(table)

    priors = {}
    if "diffusion" in args.methods or args.compare:
        priors["diffusion"], path, cached = load_prior_for(
            "diffusion", dataset, args.prior_steps, args.prior_cache
        )
        console.print(f"diffusion prior {'loaded from' if cached else 'trained into'} {path}")

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
            result = run_experiment(spec, dataset, priors.get(method))
            curves[method].append(result.median_psnr)
            report[f"chart/{method}/k={k}"] = _brief(result)
            console.print(
                f"{method:9s} k={k:2d}: median PSNR {result.median_psnr:6.2f} dB "
                f"({result.seconds_per_image:.2f} s/image, "
                f"secure_sum={result.used_secure_sum})"
            )
    if curves:
        chart = docs / "inversion_psnr_vs_k.png"
        _chart(
            curves,
            args.ks,
            chart,
            f"{args.dataset} / {args.model}, batch 1, untrained: attack on cluster-sum:K",
        )
        console.print(f"chart: {chart}")

    if args.compare:
        for method in ("ig", "diffusion"):
            spec = ExperimentSpec(
                method,
                "cnn",
                batch=4,
                images=4,
                trained=True,
                seed=args.seed,
                iterations=args.compare_iterations,
                out_dir=docs / "inversion",
            )
            result = run_experiment(spec, dataset, priors.get(method))
            report[f"compare/{method}"] = _brief(result)
            console.print(
                f"trained cnn, batch 4, {method:9s}: median PSNR "
                f"{result.median_psnr:.2f} dB, label acc {result.label_accuracy:.2f}, "
                f"{result.seconds_per_image:.2f} s/image"
            )
    report["total_seconds"] = time.perf_counter() - started
    (docs / "inversion").mkdir(parents=True, exist_ok=True)
    (docs / "inversion" / "bench.json").write_text(json.dumps(report, indent=2))
    console.print(
        f"total {report['total_seconds']:.0f} s; numbers in {docs / 'inversion' / 'bench.json'}"
    )
    return 0


def _brief(result: ExperimentResult) -> dict[str, object]:
    return {
        "median_psnr": result.median_psnr,
        "median_ssim": result.median_ssim,
        "label_accuracy": result.label_accuracy,
        "seconds_per_image": result.seconds_per_image,
        "used_secure_sum": result.used_secure_sum,
    }


def register_bench(bench_subparsers: argparse._SubParsersAction) -> None:
    """Add ``phalanx bench inversion``."""
    parser = bench_subparsers.add_parser("inversion", help="gradient-inversion attack benchmark")
    parser.add_argument("--dataset", default="mnist5k")
    parser.add_argument("--model", default="lenet-zhu")
    parser.add_argument("--images", type=int, default=8, help="images in the DLG/iDLG table")
    parser.add_argument("--chart-images", type=int, default=2, help="images per point of the chart")
    parser.add_argument("--ks", type=_parse_ks, default=[1, 2, 4, 8, 16])
    parser.add_argument("--methods", nargs="*", default=["idlg", "ig", "diffusion"])
    parser.add_argument(
        "--compare",
        action="store_true",
        help="also run diffusion vs IG at batch 4 on a trained CNN",
    )
    parser.add_argument("--compare-iterations", type=int, default=None)
    parser.add_argument("--prior-steps", type=int, default=None)
    parser.add_argument("--prior-cache", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--docs", default="docs", help="where the chart and grids go")
    parser.set_defaults(func=run_bench)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="phalanx bench")
    register_bench(parser.add_subparsers(dest="bench", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
