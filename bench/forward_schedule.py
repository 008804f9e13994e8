"""Which noise-level schedule should forward noising follow? ``phalanx bench forward-schedule``.

Forward noising releases ``sqrt(abar_t) u + sqrt(1 - abar_t) s eps`` (Ho et al. 2020, eq. 4; the
cosine ``abar`` of Nichol & Dhariwal 2021, ``s`` = the update's RMS) with a level ``t_r`` per round
(`defense.NoiseLevelSchedule`). This bench compares, at matched average noise, the schedules

- ``decreasing``: ``t`` linear from ``t_high`` (round 1) to ``t_low`` (last round);
- ``increasing``: ``t`` linear from ``t_low`` to ``t_high``;
- ``constant``: the level whose noise fraction ``1 - abar_t`` equals the mean of the linear
  schedules' ``1 - abar_{t_r}`` over the rounds (the two linear schedules have the same mean),

plus an undefended row. For each it measures

- utility: the final test accuracy of in-process FedAvg (``nodes`` IID nodes, one local epoch per
  round; every update goes through `node.defenses.NodeDefense.protect`, the node's own code, with
  the node's seeding), the median over ``seeds``;
- privacy: iDLG's median PSNR (Zhao et al. 2020) against the defended FedAvg delta of one image
  after one SGD step (``--target fedavg:1``) on a fresh model, with round 1's level (early) and
  with the last round's level (late level); and on a trained model (one epoch on the auxiliary
  split) with the last round's level, the realistic late round;
- the adaptive attacker who knows the schedule and denoises first (`defense.denoise_forward`,
  Wiener shrinkage; cf. Mjölnir, AAAI 2025) before running iDLG, at round 1's and the last
  round's level.

    phalanx bench forward-schedule [--rounds 10] [--t-high 800] [--t-low 400] [--json]
    python -m bench.forward_schedule               # standalone
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from adversary.inversion.experiment import ExperimentSpec, run_experiment
from defense import alpha_bar_schedule, denoise_forward, parse_defense
from defense.forward_noise import ForwardNoising
from learning.data import Dataset, load_dataset, partition
from learning.models import build_model
from learning.train import (
    TrainConfig,
    evaluate,
    flatten_parameters,
    load_flat_parameters,
    train_local,
)
from node.defenses import DefenseConfig, NodeDefense

SCHEDULES = ("decreasing", "increasing", "constant")


@dataclass(frozen=True)
class ScheduleRow:
    """One schedule: its label and the `defense.parse_defense` spec the nodes apply."""

    label: str
    spec: str

    def levels(self, rounds: int) -> list[int]:
        defense = parse_defense(self.spec)
        if not isinstance(defense, ForwardNoising):
            return [0] * rounds
        return [defense.levels.level(r) for r in range(rounds)]


def mean_noise_fraction(levels: list[int], diffusion: str, steps: int) -> float:
    """Mean over rounds of ``1 - abar_t``, the share of the release's variance that is noise."""
    alpha_bar = alpha_bar_schedule(diffusion, steps)
    return float(np.mean([1 - alpha_bar[t] for t in levels]))


def matched_constant_level(target_fraction: float, diffusion: str, steps: int) -> int:
    """The level t whose ``1 - abar_t`` is closest to `target_fraction`."""
    alpha_bar = alpha_bar_schedule(diffusion, steps)
    return int(np.argmin(np.abs((1 - alpha_bar) - target_fraction)))


def schedule_rows(
    rounds: int, t_high: int, t_low: int, diffusion: str = "cosine", steps: int = 1000
) -> list[ScheduleRow]:
    """The undefended baseline and the three schedules at matched mean noise fraction."""
    if not 0 <= t_low < t_high <= steps:
        raise ValueError(f"need 0 <= t_low < t_high <= steps, got {t_low}, {t_high}, {steps}")
    common = f"schedule={diffusion},steps={steps},rounds={rounds},scale=rms"
    decreasing = ScheduleRow(
        "decreasing", f"forward:t={t_high},t_min={t_low},levels=decreasing,{common}"
    )
    increasing = ScheduleRow(
        "increasing", f"forward:t={t_high},t_min={t_low},levels=increasing,{common}"
    )
    fraction = mean_noise_fraction(decreasing.levels(rounds), diffusion, steps)
    t_const = matched_constant_level(fraction, diffusion, steps)
    constant = ScheduleRow("constant", f"forward:t={t_const},levels=constant,{common}")
    return [ScheduleRow("none", "none"), decreasing, increasing, constant]


def _seed(*parts: object) -> int:
    digest = hashlib.sha256("/".join(map(str, ("forward-schedule", *parts))).encode()).digest()
    return int.from_bytes(digest[:8], "big") & ((1 << 63) - 1)


def federated_accuracy(
    row: ScheduleRow,
    dataset: Dataset,
    nodes: int,
    rounds: int,
    model_name: str,
    train_config: TrainConfig,
    seed: int,
) -> list[float]:
    """Test accuracy after each round of in-process FedAvg with every update defended by
    `NodeDefense.protect` (seeded by scenario seed, node index and round, as in the node)."""
    parts = partition(dataset.train_y, nodes, "iid", seed=seed)
    torch.manual_seed(seed)
    model = build_model(model_name, dataset.input_shape, dataset.num_classes)
    weights = flatten_parameters(model)
    defenses = [NodeDefense(DefenseConfig(update=row.spec), i, seed, nodes) for i in range(nodes)]
    accuracies = []
    for round_ in range(1, rounds + 1):
        released = []
        for index, mine in enumerate(parts):
            load_flat_parameters(model, weights)
            x, y = dataset.train_x[mine], dataset.train_y[mine]
            train_local(model, x, y, train_config, _seed(seed, index, round_))
            update = (flatten_parameters(model) - weights).numpy()
            released.append(defenses[index].protect(update, round_))
        weights = weights + torch.from_numpy(np.mean(released, axis=0, dtype=np.float32))
        load_flat_parameters(model, weights)
        accuracies.append(evaluate(model, dataset.test_x, dataset.test_y)[0])
    return accuracies


def _defended(row: ScheduleRow, round_: int, adaptive: bool, seed: int) -> Any:
    """The attacker's view of one update: the node's release in `round_` (1-based), optionally
    denoised by the adaptive attacker who knows that round's ``abar_t``."""
    if row.spec == "none":
        return None
    node = NodeDefense(DefenseConfig(update=row.spec), node_index=0, seed=seed, num_nodes=1)
    forward = node.update_defense
    assert isinstance(forward, ForwardNoising)
    alpha_bar = forward.alpha_bar(round_ - 1)

    def defend(update: list[torch.Tensor]) -> list[torch.Tensor]:
        flat = np.concatenate([t.detach().double().reshape(-1).numpy() for t in update])
        released = torch.from_numpy(node.protect(flat.astype(np.float32), round_))
        if adaptive:
            released = denoise_forward(released, alpha_bar)
        out, offset = [], 0
        for tensor in update:
            piece = released[offset : offset + tensor.numel()]
            out.append(piece.reshape(tensor.shape).to(tensor.dtype))
            offset += tensor.numel()
        return out

    return defend


def idlg_psnr(
    row: ScheduleRow,
    dataset: Dataset,
    model_name: str,
    round_: int,
    trained: bool,
    adaptive: bool,
    images: int,
    lr: float,
    seed: int,
) -> float:
    spec = ExperimentSpec(
        method="idlg",
        model=model_name,
        batch=1,
        images=images,
        target="fedavg:1",
        defense=_defended(row, round_, adaptive, seed),
        trained=trained,
        seed=seed,
        lr=lr,
    )
    return float(run_experiment(spec, dataset).median_psnr)


def run_forward_schedule_bench(
    rounds: int = 10,
    t_high: int = 800,
    t_low: int = 400,
    nodes: int = 4,
    seeds: int = 3,
    images: int = 4,
    dataset_name: str = "mnist5k",
    model_name: str = "mlp",
    seed: int = 0,
) -> dict[str, Any]:
    """Measure every row; returns the table as JSON-safe data."""
    torch.set_num_threads(1)
    dataset = load_dataset(dataset_name, seed=seed)
    train_config = TrainConfig(epochs=1, batch_size=32, lr=0.05, momentum=0.9)
    rows = []
    for row in schedule_rows(rounds, t_high, t_low):
        started = time.perf_counter()
        runs = [
            federated_accuracy(row, dataset, nodes, rounds, model_name, train_config, seed + s)
            for s in range(seeds)
        ]
        finals = [run[-1] for run in runs]
        result: dict[str, Any] = {
            "label": row.label,
            "spec": row.spec,
            "levels": row.levels(rounds),
            "mean_noise_fraction": mean_noise_fraction(row.levels(rounds), "cosine", 1000),
            "final_accuracy_median": statistics.median(finals),
            "final_accuracies": finals,
            "accuracy_by_round_median": [
                statistics.median(run[r] for run in runs) for r in range(rounds)
            ],
        }
        for key, round_, trained, adaptive in (
            ("psnr_early", 1, False, False),
            ("psnr_late", rounds, False, False),
            ("psnr_early_adaptive", 1, False, True),
            ("psnr_late_adaptive", rounds, False, True),
            ("psnr_late_trained", rounds, True, False),
        ):
            result[key] = idlg_psnr(
                row, dataset, model_name, round_, trained, adaptive, images, 0.05, seed
            )
        result["seconds"] = time.perf_counter() - started
        rows.append(result)
    return {
        "settings": {
            "rounds": rounds,
            "t_high": t_high,
            "t_low": t_low,
            "nodes": nodes,
            "seeds": seeds,
            "images": images,
            "dataset": dataset_name,
            "model": model_name,
            "diffusion": "cosine",
            "steps": 1000,
        },
        "rows": rows,
    }


def markdown_table(report: dict[str, Any]) -> str:
    lines = [
        "| schedule | levels t (round 1 → last) | mean 1-abar | final acc (median) "
        "| iDLG PSNR early | late level | adaptive early | adaptive late level "
        "| late, trained model |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in report["rows"]:
        levels = row["levels"]
        lines.append(
            f"| {row['label']} | {levels[0]} → {levels[-1]} | {row['mean_noise_fraction']:.3f} "
            f"| {row['final_accuracy_median']:.3f} | {row['psnr_early']:.1f} "
            f"| {row['psnr_late']:.1f} | {row['psnr_early_adaptive']:.1f} "
            f"| {row['psnr_late_adaptive']:.1f} | {row['psnr_late_trained']:.1f} |"
        )
    return "\n".join(lines)


def run_bench(args: argparse.Namespace) -> int:
    report = run_forward_schedule_bench(
        rounds=args.rounds,
        t_high=args.t_high,
        t_low=args.t_low,
        nodes=args.nodes,
        seeds=args.seeds,
        images=args.images,
        dataset_name=args.dataset,
        model_name=args.model,
        seed=args.seed,
    )
    print(json.dumps(report, indent=2) if args.json else markdown_table(report))
    return 0


def register_bench(bench_subparsers: argparse._SubParsersAction) -> None:
    """Add ``phalanx bench forward-schedule``."""
    parser = bench_subparsers.add_parser(
        "forward-schedule", help="forward-noising schedules at matched noise: accuracy and iDLG"
    )
    _add_arguments(parser)


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--t-high", type=int, default=800)
    parser.add_argument("--t-low", type=int, default=400)
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--seeds", type=int, default=3, help="training seeds (median reported)")
    parser.add_argument("--images", type=int, default=4, help="victim images per attack")
    parser.add_argument("--dataset", default="mnist5k", choices=["mnist5k", "digits"])
    parser.add_argument("--model", default="mlp", choices=["mlp", "cnn"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(func=run_bench)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="phalanx bench forward-schedule")
    _add_arguments(parser)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
