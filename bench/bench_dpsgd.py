"""DP-SGD throughput against the same training without DP, measured in one run.

Both arms train the project's CNN (``cnn``, LeNet-5 style) on mnist5k from the same initial
weights with the same TrainConfig; the DP arm goes through `defense.dp_train_local` (Opacus
per-sample gradients, clipping, noise, Poisson sampling). Repeats alternate the two arms so that
machine load hits both alike; the reported ratio is median(DP samples/s) / median(plain
samples/s), and the slowdown its inverse.

    phalanx bench dpsgd [--repeats 5] [--epochs 1] [--json]
    python -m phalanx.bench.bench_dpsgd --json          # standalone
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

# torch, Opacus and the training code load in `run_dpsgd_bench`: parsing needs none of them.


def run_dpsgd_bench(
    repeats: int = 3,
    epochs: int = 1,
    batch_size: int = 64,
    samples: int = 0,
    model_name: str = "cnn",
    noise_multiplier: float = 1.0,
    max_grad_norm: float = 1.0,
    threads: int = 0,
    seed: int = 0,
) -> dict[str, Any]:
    """Time both arms `repeats` times; returns medians, the ratio and the settings."""
    import torch

    from phalanx.defense.dpsgd import DPSGDConfig, dp_train_local
    from phalanx.learning.data import load_dataset
    from phalanx.learning.models import build_model
    from phalanx.learning.train import TrainConfig, evaluate, train_local

    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if threads > 0:
        torch.set_num_threads(threads)
    data = load_dataset("mnist5k", seed=seed)
    x, y = data.train_x, data.train_y
    if samples > 0:
        x, y = x[:samples], y[:samples]
    train_config = TrainConfig(epochs=epochs, batch_size=batch_size, lr=0.05, momentum=0.9)
    dp_config = DPSGDConfig(noise_multiplier=noise_multiplier, max_grad_norm=max_grad_norm)
    torch.manual_seed(seed)
    initial = build_model(model_name, data.input_shape, data.num_classes).state_dict()

    def fresh() -> torch.nn.Module:
        model = build_model(model_name, data.input_shape, data.num_classes)
        model.load_state_dict(initial)
        return model

    plain_times: list[float] = []
    dp_times: list[float] = []
    plain_acc = dp_acc = epsilon = float("nan")
    for repeat in range(repeats):
        for arm in ("plain", "dp") if repeat % 2 == 0 else ("dp", "plain"):
            model = fresh()
            start = time.perf_counter()
            if arm == "plain":
                train_local(model, x, y, train_config, seed=seed + repeat)
                plain_times.append(time.perf_counter() - start)
                plain_acc, _ = evaluate(model, data.test_x, data.test_y)
            else:
                _, epsilon = dp_train_local(model, x, y, train_config, dp_config, seed + repeat)
                dp_times.append(time.perf_counter() - start)
                dp_acc, _ = evaluate(model, data.test_x, data.test_y)
    processed = len(x) * epochs
    plain_throughput = processed / statistics.median(plain_times)
    dp_throughput = processed / statistics.median(dp_times)
    return {
        "bench": "dpsgd",
        "model": model_name,
        "dataset": "mnist5k",
        "samples": len(x),
        "epochs": epochs,
        "batch_size": batch_size,
        "repeats": repeats,
        "threads": torch.get_num_threads(),
        "noise_multiplier": noise_multiplier,
        "max_grad_norm": max_grad_norm,
        "plain_seconds": plain_times,
        "dp_seconds": dp_times,
        "plain_samples_per_s": plain_throughput,
        "dp_samples_per_s": dp_throughput,
        "throughput_ratio": dp_throughput / plain_throughput,
        "slowdown": plain_throughput / dp_throughput,
        "epsilon": epsilon,
        "delta": dp_config.delta,
        "plain_accuracy": plain_acc,
        "dp_accuracy": dp_acc,
        "torch": torch.__version__,
    }


def _print_table(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"DP-SGD vs plain SGD: {result['model']} on {result['dataset']} "
        f"({result['samples']} samples x {result['epochs']} epoch, batch {result['batch_size']}, "
        f"median of {result['repeats']}, {result['threads']} threads)"
    )
    for column in ("arm", "samples/s", "median s", "test accuracy"):
        table.add_column(column, justify="right")
    table.add_row(
        "plain",
        f"{result['plain_samples_per_s']:.0f}",
        f"{statistics.median(result['plain_seconds']):.2f}",
        f"{result['plain_accuracy']:.3f}",
    )
    table.add_row(
        f"DP-SGD (z={result['noise_multiplier']}, C={result['max_grad_norm']})",
        f"{result['dp_samples_per_s']:.0f}",
        f"{statistics.median(result['dp_seconds']):.2f}",
        f"{result['dp_accuracy']:.3f}",
    )
    console = Console()
    console.print(table)
    console.print(
        f"throughput ratio DP/plain = {result['throughput_ratio']:.3f} "
        f"(DP is {result['slowdown']:.2f}x slower); eps = {result['epsilon']:.2f} "
        f"at delta = {result['delta']:g}"
    )


def _handle(args: argparse.Namespace) -> int:
    try:
        result = run_dpsgd_bench(
            repeats=args.repeats,
            epochs=args.epochs,
            batch_size=args.batch_size,
            samples=args.samples,
            model_name=args.model,
            noise_multiplier=args.noise_multiplier,
            max_grad_norm=args.max_grad_norm,
            threads=args.threads,
            seed=args.seed,
        )
    except ValueError as error:
        print(f"error: {error}")
        return 2
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        _print_table(result)
    return 0


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--repeats", type=int, default=3, help="timed runs per arm, median (default %(default)s)"
    )
    parser.add_argument(
        "--epochs", type=int, default=1, help="training epochs per run (default %(default)s)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=64, help="batch size of both arms (default %(default)s)"
    )
    parser.add_argument(
        "--samples",
        type=int,
        default=0,
        help="training samples used (default 0: the whole training split)",
    )
    parser.add_argument(
        "--model", default="cnn", help="a learning.models name (default %(default)s)"
    )
    parser.add_argument(
        "--noise-multiplier",
        type=float,
        default=1.0,
        help="DP-SGD noise std over the clipping norm, z (default %(default)s)",
    )
    parser.add_argument(
        "--max-grad-norm",
        type=float,
        default=1.0,
        help="DP-SGD per-sample L2 clipping norm C (default %(default)s)",
    )
    parser.add_argument(
        "--threads", type=int, default=0, help="torch threads (default 0: torch's default)"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of data, weights and sampling (default 0)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def register_bench(bench_subparsers: argparse._SubParsersAction) -> None:
    """Add ``dpsgd`` to the ``phalanx bench`` subcommands."""
    parser = bench_subparsers.add_parser(
        "dpsgd", help="DP-SGD throughput against plain training, as a ratio in one run"
    )
    _add_arguments(parser)
    parser.set_defaults(func=_handle)


register = register_bench


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_dpsgd", description=__doc__)
    _add_arguments(parser)
    return _handle(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
