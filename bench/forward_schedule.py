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

With ``--matched-eps E`` the rows are instead the hybrid ``forward-dp:eps=E,rounds=R,clip=C,
levels=L`` (clip to L2 norm ``C``, ``s = C``: the Gaussian mechanism with
``z_t = sqrt((1 - abar_t) / abar_t)``), each shape calibrated by `defense.calibrate_forward_noising`
to the same (E, delta) over the R rounds, so the comparison is at matched privacy. Each row also
reports the eps its nodes actually spent (`NodeDefense.privacy_report`, RDP composition of the
rounds released) and the per-round noise std ``sqrt(1 - abar_t) C`` measured on a released zero
update.

    phalanx bench forward-schedule [--rounds 10] [--t-high 800] [--t-low 400] [--json]
    phalanx bench forward-schedule --matched-eps 500 [--clip 1.0]
    python -m phalanx.bench.forward_schedule             # standalone
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from phalanx.learning.data import Dataset
    from phalanx.learning.train import TrainConfig

# numpy, torch, the defenses and the training code load in the functions that use them, so that
# `phalanx bench forward-schedule --help` loads none of them.

SCHEDULES = ("decreasing", "increasing", "constant")
DELTA = 1e-5
"""The delta at which the nodes report eps (`node.defenses.DefenseConfig().delta`, which a test
checks); the matched-eps specs are calibrated at the same."""


@dataclass(frozen=True)
class ScheduleRow:
    """One schedule: its label and the `defense.parse_defense` spec the nodes apply."""

    label: str
    spec: str

    def levels(self, rounds: int) -> list[int]:
        from phalanx.defense import parse_defense
        from phalanx.defense.forward_noise import ForwardNoising

        defense = parse_defense(self.spec)
        if not isinstance(defense, ForwardNoising):
            return [0] * rounds
        return [defense.levels.level(r) for r in range(rounds)]


def mean_noise_fraction(levels: list[int], diffusion: str, steps: int) -> float:
    """Mean over rounds of ``1 - abar_t``, the share of the release's variance that is noise."""
    import numpy as np

    from phalanx.defense import alpha_bar_schedule

    alpha_bar = alpha_bar_schedule(diffusion, steps)
    return float(np.mean([1 - alpha_bar[t] for t in levels]))


def matched_constant_level(target_fraction: float, diffusion: str, steps: int) -> int:
    """The level t whose ``1 - abar_t`` is closest to `target_fraction`."""
    import numpy as np

    from phalanx.defense import alpha_bar_schedule

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


def default_clip() -> float:
    """The L2 clipping bound ``C`` that ``forward-dp`` uses when the spec gives none."""
    from phalanx.defense import parse_defense
    from phalanx.defense.forward_noise import ForwardNoising

    defense = parse_defense("forward-dp:eps=1,rounds=1")
    assert isinstance(defense, ForwardNoising) and defense.clip_norm is not None
    return defense.clip_norm


def matched_eps_rows(epsilon: float, rounds: int, clip: float | None = None) -> list[ScheduleRow]:
    """The undefended baseline and ``forward-dp`` with each level shape, all calibrated to
    (`epsilon`, `DELTA`) over `rounds` (the least noise with ``eps <= epsilon``)."""
    from phalanx.defense import parse_defense

    clip = default_clip() if clip is None else clip
    rows = [ScheduleRow("none", "none")]
    for levels in SCHEDULES:
        spec = f"forward-dp:eps={epsilon:g},rounds={rounds},clip={clip:g},delta={DELTA:g}"
        rows.append(ScheduleRow(levels, f"{spec},levels={levels}"))
    parse_defense(rows[1].spec)  # an unreachable eps raises here, before any training
    return rows


def released_noise_std(
    row: ScheduleRow, rounds: int, dim: int = 4096, seed: int = 0
) -> list[float]:
    """Per round, the empirical std of node 0's release of a zero update of size `dim`
    (`NodeDefense.protect`): ``sqrt(1 - abar_t) s``, i.e. ``sqrt(1 - abar_t) C`` in hybrid mode
    (with ``scale=rms`` the RMS of a zero update is 0, so this is only informative for hybrid)."""
    import numpy as np

    from phalanx.node.defenses import DefenseConfig, NodeDefense

    node = NodeDefense(DefenseConfig(update=row.spec), node_index=0, seed=seed, num_nodes=1)
    zero = np.zeros(dim, dtype=np.float32)
    return [float(np.std(node.protect(zero, round_))) for round_ in range(1, rounds + 1)]


def _seed(*parts: object) -> int:
    digest = hashlib.sha256("/".join(map(str, ("forward-schedule", *parts))).encode()).digest()
    return int.from_bytes(digest[:8], "big") & ((1 << 63) - 1)


@dataclass(frozen=True)
class FederatedRun:
    """One FedAvg run: test accuracy after each round and each node's final
    `NodeDefense.privacy_report`."""

    accuracies: list[float]
    privacy: list[dict[str, Any]]

    @property
    def update_epsilon(self) -> float | None:
        """The largest client-level eps any node spent (None without a DP guarantee)."""
        spent = [report["update_epsilon"] for report in self.privacy]
        return None if None in spent else max(spent)


def federated_accuracy(
    row: ScheduleRow,
    dataset: Dataset,
    nodes: int,
    rounds: int,
    model_name: str,
    train_config: TrainConfig,
    seed: int,
) -> FederatedRun:
    """Test accuracy after each round of in-process FedAvg with every update defended by
    `NodeDefense.protect` (seeded by scenario seed, node index and round, as in the node), and
    the eps each node's ledger spent."""
    import numpy as np
    import torch

    from phalanx.learning.data import partition
    from phalanx.learning.models import build_model
    from phalanx.learning.train import (
        evaluate,
        flatten_parameters,
        load_flat_parameters,
        train_local,
    )
    from phalanx.node.defenses import DefenseConfig, NodeDefense

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
    return FederatedRun(accuracies, [defense.privacy_report() for defense in defenses])


def _defended(row: ScheduleRow, round_: int, adaptive: bool, seed: int) -> Any:
    """The attacker's view of one update: the node's release in `round_` (1-based), optionally
    denoised by the adaptive attacker who knows that round's ``abar_t``."""
    import numpy as np
    import torch

    from phalanx.defense import denoise_forward
    from phalanx.defense.forward_noise import ForwardNoising
    from phalanx.node.defenses import DefenseConfig, NodeDefense

    if row.spec == "none":
        return None
    node = NodeDefense(DefenseConfig(update=row.spec), node_index=0, seed=seed, num_nodes=1)
    forward = node.update_defense
    assert isinstance(forward, ForwardNoising)
    alpha_bar = forward.alpha_bar(round_ - 1)
    # In hybrid mode the noise scale is the public clipping bound C, which the attacker knows.
    noise_scale = forward.clip_norm if forward.scale == "clip" else None

    def defend(update: list[torch.Tensor]) -> list[torch.Tensor]:
        flat = np.concatenate([t.detach().double().reshape(-1).numpy() for t in update])
        released = torch.from_numpy(node.protect(flat.astype(np.float32), round_))
        if adaptive:
            released = denoise_forward(released, alpha_bar, noise_scale)
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
    from phalanx.adversary.inversion.experiment import ExperimentSpec, run_experiment

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


PSNR_COLUMNS = (
    ("psnr_early", 1, False, False),
    ("psnr_late", -1, False, False),
    ("psnr_early_adaptive", 1, False, True),
    ("psnr_late_adaptive", -1, False, True),
    ("psnr_late_trained", -1, True, False),
)
"""(key, round with -1 = the last, trained model, adaptive attacker) of each iDLG column."""


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
    matched_eps: float | None = None,
    clip: float | None = None,
    psnr: bool = True,
) -> dict[str, Any]:
    """Measure every row; returns the table as JSON-safe data. With `matched_eps` the rows are
    `matched_eps_rows` (then `t_high`/`t_low` are unused); `psnr=False` skips the attacks."""
    import torch

    from phalanx.learning.data import load_dataset
    from phalanx.learning.train import TrainConfig

    torch.set_num_threads(1)
    dataset = load_dataset(dataset_name, seed=seed)
    train_config = TrainConfig(epochs=1, batch_size=32, lr=0.05, momentum=0.9)
    if matched_eps is None:
        schedule = schedule_rows(rounds, t_high, t_low)
    else:
        clip = default_clip() if clip is None else clip
        schedule = matched_eps_rows(matched_eps, rounds, clip)
    rows = []
    for row in schedule:
        started = time.perf_counter()
        fed_runs = [
            federated_accuracy(row, dataset, nodes, rounds, model_name, train_config, seed + s)
            for s in range(seeds)
        ]
        runs = [run.accuracies for run in fed_runs]
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
        if matched_eps is not None:
            spent = [run.update_epsilon for run in fed_runs]
            known = [e for e in spent if e is not None]
            result["epsilon_spent"] = max(known) if len(known) == len(spent) else None
            result["noise_std_by_round"] = released_noise_std(row, rounds, seed=seed)
        for key, round_, trained, adaptive in PSNR_COLUMNS if psnr else ():
            attacked_round = rounds if round_ == -1 else round_
            result[key] = idlg_psnr(
                row, dataset, model_name, attacked_round, trained, adaptive, images, 0.05, seed
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
            "matched_eps": matched_eps,
            "clip": clip,
            "delta": DELTA,
        },
        "rows": rows,
    }


def _cell(value: float | None, digits: int) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def markdown_table(report: dict[str, Any]) -> str:
    """The rows as a Markdown table; matched-eps reports add eps spent and the noise std."""
    matched = report["settings"].get("matched_eps") is not None
    header = "| schedule | levels t (round 1 → last) | mean 1-abar "
    if matched:
        header += "| eps spent | noise std (round 1 → last) "
    header += (
        "| final acc (median) | iDLG PSNR early | late level | adaptive early "
        "| adaptive late level | late, trained model |"
    )
    lines = [header, "|---" * (header.count("|") - 1) + "|"]
    for row in report["rows"]:
        levels = row["levels"]
        line = f"| {row['label']} | {levels[0]} → {levels[-1]} | {row['mean_noise_fraction']:.3f} "
        if matched:
            noise = row["noise_std_by_round"]
            line += f"| {_cell(row['epsilon_spent'], 1)} | {noise[0]:.3f} → {noise[-1]:.3f} "
        line += f"| {row['final_accuracy_median']:.3f} "
        line += "".join(f"| {_cell(row.get(key), 1)} " for key, *_ in PSNR_COLUMNS) + "|"
        lines.append(line)
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
        matched_eps=args.matched_eps,
        clip=args.clip,
        psnr=not args.no_attacks,
    )
    print(json.dumps(report, indent=2) if args.json else markdown_table(report))
    return 0


def register_bench(bench_subparsers: argparse._SubParsersAction) -> None:
    """Add ``phalanx bench forward-schedule``."""
    parser = bench_subparsers.add_parser(
        "forward-schedule",
        help="forward-noising schedules at matched noise or matched eps: accuracy and iDLG",
    )
    _add_arguments(parser)


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--rounds", type=int, default=10, help="FedAvg rounds R (default %(default)s)"
    )
    parser.add_argument(
        "--t-high",
        type=int,
        default=800,
        help="highest noise level t of the linear schedules, of 1000 steps (default %(default)s)",
    )
    parser.add_argument(
        "--t-low",
        type=int,
        default=400,
        help="lowest noise level t of the linear schedules (default %(default)s)",
    )
    parser.add_argument(
        "--nodes", type=int, default=4, help="IID nodes of the FedAvg run (default %(default)s)"
    )
    parser.add_argument(
        "--seeds", type=int, default=3, help="training seeds, median reported (default %(default)s)"
    )
    parser.add_argument(
        "--images", type=int, default=4, help="victim images per attack (default %(default)s)"
    )
    parser.add_argument(
        "--dataset",
        default="mnist5k",
        choices=["mnist5k", "digits"],
        help="data set (default %(default)s)",
    )
    parser.add_argument(
        "--model", default="mlp", choices=["mlp", "cnn"], help="model (default %(default)s)"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="first training seed (default %(default)s)"
    )
    parser.add_argument(
        "--matched-eps",
        type=float,
        default=None,
        metavar="EPS",
        help="compare forward-dp:eps=EPS,rounds=R,clip=C with each levels shape instead "
        "(matched (eps, delta); --t-high/--t-low unused)",
    )
    parser.add_argument(
        "--clip",
        type=float,
        default=None,
        help="L2 clipping bound C of --matched-eps (default: forward-dp's default)",
    )
    parser.add_argument("--no-attacks", action="store_true", help="skip the iDLG columns")
    parser.add_argument(
        "--json", action="store_true", help="print the report as JSON instead of a Markdown table"
    )
    parser.set_defaults(func=run_bench)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="phalanx bench forward-schedule")
    _add_arguments(parser)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
