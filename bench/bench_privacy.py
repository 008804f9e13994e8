"""The privacy–utility–robustness map (issue 7, item 6): ``phalanx bench privacy``.

For each defense setting (a `node.defenses.DefenseConfig`) it measures, in one run:

- utility: a real testbed run (``python -m node testbed run SCENARIO --no-metrics``) of the base
  scenario with a ``[defense]`` table, reading ``final_accuracy`` from ``summary.json``; once
  without and once with one Byzantine ``sign-flip`` node (robustness);
- privacy against attacks: iDLG (and IG with ``--ig``) against the defended update of one victim
  image, through `adversary.inversion.run_experiment` with a defense callable built from
  `NodeDefense.protect`; the median PSNR over the victims;
- the (eps, delta) spent per node, from the nodes' ``privacy`` records when the node reports them,
  else from the same accountants (`NodeDefense.privacy_report`, DP-SGD by `gaussian_epsilon` at
  the smallest node's sampling rate, the worst case).

Threat model of the attack column: the aggregator sees the victim's FedAvg delta after one local
SGD step on one image (``--target fedavg:1`` at the scenario's learning rate), in the clear (a
cluster of one), defended exactly as the node releases it. DP-SGD on a single image for one step is
``clip(-lr g, lr C) + N(0, (z lr C)^2 I)``, so its attack column uses ``clip-gauss:clip=lr*C,z=z``.

It writes ``docs/privacy_utility.md`` (table and command), ``docs/privacy_utility.png`` (accuracy
against PSNR, eps annotated) and ``docs/privacy_utility.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tomli_w
import torch
from rich.console import Console
from rich.table import Table

from adversary.inversion.experiment import ExperimentSpec, run_experiment
from defense import gaussian_epsilon
from defense.dpsgd import dpsgd_sample_rate
from learning.data import Dataset, load_dataset
from node.defenses import DefenseConfig, NodeDefense

REPO = Path(__file__).resolve().parent.parent
DEFAULT_BASE = REPO / "node" / "scenarios" / "default.toml"


@dataclass(frozen=True)
class Setting:
    """One row of the map: a label and the ``[defense]`` table (empty: no defense)."""

    label: str
    defense: dict[str, Any] = field(default_factory=dict)

    @property
    def config(self) -> DefenseConfig:
        return DefenseConfig(**self.defense)


def default_settings(rounds: int) -> list[Setting]:
    """The settings of the map; ``forward-dp`` is calibrated to the run's number of rounds."""
    return [
        Setting("none"),
        Setting("clip-gauss z=0.002", {"update": "clip-gauss:clip=2,z=0.002"}),
        Setting("clip-gauss z=0.01", {"update": "clip-gauss:clip=2,z=0.01"}),
        Setting("forward t=500", {"update": "forward:t=500"}),
        Setting("forward-dp eps=50", {"update": f"forward-dp:eps=50,rounds={rounds},clip=2"}),
        Setting("prune 0.9", {"update": "prune:ratio=0.9"}),
        Setting("dpsgd z=0.7", {"dpsgd": True, "noise_multiplier": 0.7, "max_grad_norm": 1.0}),
    ]


# ------------------------------------------------------------------------------- testbed


def scenario_for(
    base: dict[str, Any],
    setting: Setting,
    *,
    nodes: int,
    rounds: int,
    model: str,
    alpha: float,
    cluster_size: int,
    eval_samples: int,
    byzantine: bool,
) -> dict[str, Any]:
    """The base scenario with this run's sizes, a ``[defense]`` table and optional sign-flip."""
    scenario = json.loads(json.dumps(base))  # deep copy of plain TOML data
    scenario.update(
        name=f"privacy-{setting.label}".replace(" ", "-"),
        nodes=nodes,
        rounds=rounds,
        nodes_per_process=nodes,
    )
    scenario.setdefault("data", {}).update(
        dataset="mnist5k", partition="dirichlet", alpha=alpha, eval_samples=eval_samples
    )
    scenario.setdefault("model", {})["name"] = model
    scenario.setdefault("clustering", {})["cluster_size"] = cluster_size
    scenario.setdefault("aggregation", {}).update(secure="none")
    # A table equal to the defaults is left out, so undefended runs need no [defense] support.
    if setting.defense:
        scenario["defense"] = dict(setting.defense)
    else:
        scenario.pop("defense", None)
    scenario.pop("byzantine", None)
    if byzantine:
        scenario["byzantine"] = [{"behaviour": "sign-flip", "count": 1}]
    return scenario


def run_testbed(scenario: dict[str, Any], work: Path, timeout_s: float) -> dict[str, Any]:
    """Run one testbed and return its summary plus the nodes' last ``privacy`` records."""
    work.mkdir(parents=True, exist_ok=True)
    path, out = work / "scenario.toml", work / "out"
    path.write_text(tomli_w.dumps(scenario))
    command = [
        sys.executable,
        "-m",
        "node",
        "testbed",
        "run",
        str(path),
        "--out",
        str(out),
        "--no-metrics",
    ]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout_s)
    summary_path = out / "summary.json"
    if result.returncode != 0 or not summary_path.exists():
        raise RuntimeError(
            f"testbed failed ({result.returncode}) for {path}:\n"
            f"{result.stdout[-1500:]}{result.stderr[-1500:]}"
        )
    summary = dict(json.loads(summary_path.read_text()))
    privacy: dict[str, dict[str, Any]] = {}
    for node_file in sorted((out / "nodes").glob("*.jsonl")):
        rounds = [json.loads(line) for line in node_file.read_text().splitlines() if line.strip()]
        reports = [r["privacy"] for r in rounds if r.get("event") == "round" and "privacy" in r]
        if reports:
            privacy[node_file.stem] = reports[-1]
    summary["node_privacy"] = privacy
    return summary


def spent_epsilon(
    setting: Setting, summary: dict[str, Any], rounds: int, epochs: int, batch_size: int, nodes: int
) -> float | None:
    """The largest eps any node spent: from its records, else recomputed from the accountants."""
    reported = [r.get("epsilon") for r in summary.get("node_privacy", {}).values()]
    if reported:
        finite = [e for e in reported if e is not None]
        return max(finite) if len(finite) == len(reported) else None
    config = setting.config
    candidates: list[float] = []
    ledger = NodeDefense(config, node_index=0, seed=0, num_nodes=nodes)
    for round_ in range(1, rounds + 1):
        ledger.protect(np.zeros(8, dtype=np.float32), round_)
    update_epsilon = ledger.privacy_report()["update_epsilon"]
    if update_epsilon is not None:
        candidates.append(update_epsilon)
    if config.dpsgd:
        samples = min(int(n["samples"]) for n in summary["nodes"].values())
        if samples > 0:
            steps_per_epoch = math.ceil(samples / batch_size)
            candidates.append(
                gaussian_epsilon(
                    config.noise_multiplier,
                    dpsgd_sample_rate(samples, batch_size),
                    rounds * epochs * steps_per_epoch,
                    config.delta,
                    config.accountant,
                )
            )
    finite = [e for e in candidates if math.isfinite(e)]
    return min(finite) if finite else None


# ------------------------------------------------------------------------------- attacks


def attack_defense(setting: Setting, lr: float, seed: int) -> Any:
    """The defense callable the attack sees: `NodeDefense.protect` on the flattened update."""
    config = setting.config
    if config.dpsgd:
        dp_spec = f"clip-gauss:clip={lr * config.max_grad_norm!r},z={config.noise_multiplier!r}"
        stages = [dp_spec] + ([config.update] if config.update.strip() != "none" else [])
        config = DefenseConfig(update="+".join(stages), delta=config.delta)
    if config.update.strip() == "none":
        return None
    node = NodeDefense(config, node_index=0, seed=seed, num_nodes=1)
    calls = [0]

    def defend(update: list[torch.Tensor]) -> list[torch.Tensor]:
        calls[0] += 1
        flat = np.concatenate([t.detach().double().reshape(-1).numpy() for t in update])
        released = node.protect(flat.astype(np.float32), round_=calls[0])
        out, offset = [], 0
        for tensor in update:
            n = tensor.numel()
            piece = torch.from_numpy(released[offset : offset + n].copy())
            out.append(piece.reshape(tensor.shape).to(tensor.dtype))
            offset += n
        return out

    return defend


def attack_psnr(
    setting: Setting,
    method: str,
    dataset: Dataset,
    model: str,
    images: int,
    iterations: int | None,
    lr: float,
    seed: int,
) -> float:
    spec = ExperimentSpec(
        method=method,
        model=model,
        batch=1,
        images=images,
        target="fedavg:1",
        defense=attack_defense(setting, lr, seed),
        iterations=iterations,
        seed=seed,
        lr=lr,
    )
    return float(run_experiment(spec, dataset).median_psnr)


# ------------------------------------------------------------------------------- report


def _chart(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6.4, 4.2))
    for key, marker, name in (
        ("accuracy", "o", "honest"),
        ("accuracy_byzantine", "x", "1 sign-flip node"),
    ):
        points = [(r["psnr_idlg"], r[key], r) for r in rows if r.get(key) is not None]
        if not points:
            continue
        axis.scatter([p[0] for p in points], [p[1] for p in points], marker=marker, label=name)
        if key == "accuracy":
            for x, y, row in points:
                eps = row["epsilon"]
                note = row["label"] + ("" if eps is None else f"\neps={eps:.3g}")
                axis.annotate(note, (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
    frontier = sorted(
        (r["psnr_idlg"], r["accuracy"]) for r in rows if r.get("accuracy") is not None
    )
    best, pareto = -1.0, []
    for x, y in frontier:  # low PSNR (private) and high accuracy (useful) both win
        if y > best:
            pareto.append((x, y))
            best = y
    if pareto:
        axis.plot(
            [p[0] for p in pareto], [p[1] for p in pareto], "--", alpha=0.5, label="Pareto front"
        )
    axis.axvline(15, color="grey", lw=0.8, ls=":")
    axis.set_xlabel("iDLG median PSNR (dB, lower = more private)")
    axis.set_ylabel("final test accuracy")
    axis.set_title(title, fontsize=8)
    axis.grid(True, alpha=0.3)
    axis.legend(fontsize=7)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=130)
    plt.close(figure)


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if math.isfinite(value) else "inf"
    return str(value)


def _markdown(report: dict[str, Any]) -> str:
    methods = report["methods"]
    head = [
        "setting",
        "defense table",
        "k",
        "alpha",
        "eps (delta=1e-5)",
        "accuracy",
        "accuracy w/ sign-flip",
    ] + [f"{m} PSNR (dB)" for m in methods]
    lines = [
        "# Privacy–utility–robustness map (issue 7)",
        "",
        "Regenerate with:",
        "",
        "```",
        report["command"],
        "```",
        "",
        f"{report['description']}",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for row in report["rows"]:
        cells = [
            row["label"],
            f"`{json.dumps(row['defense'])}`" if row["defense"] else "`{}`",
            str(row["cluster_size"]),
            _fmt(row["alpha"], 1),
            _fmt(row["epsilon"], 2),
            _fmt(row["accuracy"]),
            _fmt(row.get("accuracy_byzantine")),
        ]
        cells += [_fmt(row.get(f"psnr_{m}"), 1) for m in methods]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "![accuracy against iDLG PSNR](privacy_utility.png)",
        "",
        f"Total {report['total_seconds']:.0f} s on this machine.",
        "",
    ]
    return "\n".join(lines)


# ------------------------------------------------------------------------------- driver


def run_bench(args: argparse.Namespace) -> int:
    torch.set_num_threads(1)
    console = Console()
    started = time.perf_counter()
    base = tomllib.loads(Path(args.base).read_text())
    quick = args.quick
    nodes = args.nodes or (4 if quick else 8)
    rounds = args.rounds or (3 if quick else 5)
    alphas = args.alphas or ([1.0] if quick else [0.1, 1.0])
    cluster_sizes = args.cluster_sizes or ([4] if quick else [1, 4, 8])
    images = args.images or (4 if quick else 8)
    methods = ["idlg"] + (["ig"] if args.ig else [])
    training = base.get("training", {})
    lr = float(training.get("lr", 0.05))
    settings = default_settings(rounds)
    if args.only:
        settings = [s for s in settings if s.label in args.only]
    dataset = load_dataset("mnist5k")

    rows: list[dict[str, Any]] = []
    psnr_cache: dict[tuple[str, str], float] = {}
    with tempfile.TemporaryDirectory(prefix="phalanx-privacy-") as scratch:
        for setting in settings:
            for method in methods:
                if args.skip_attacks:
                    continue
                psnr_cache[(setting.label, method)] = attack_psnr(
                    setting,
                    method,
                    dataset,
                    args.model,
                    images,
                    args.ig_iterations if method == "ig" else None,
                    lr,
                    args.seed,
                )
            for alpha in alphas:
                for k in cluster_sizes:
                    if k > nodes:
                        continue
                    row: dict[str, Any] = {
                        "label": setting.label,
                        "defense": setting.defense,
                        "alpha": alpha,
                        "cluster_size": k,
                        "nodes": nodes,
                        "rounds": rounds,
                    }
                    for method in methods:
                        row[f"psnr_{method}"] = psnr_cache.get((setting.label, method))
                    for byzantine in [False] if args.skip_testbed else [False, True]:
                        if args.skip_testbed:
                            break
                        scenario = scenario_for(
                            base,
                            setting,
                            nodes=nodes,
                            rounds=rounds,
                            model=args.model,
                            alpha=alpha,
                            cluster_size=k,
                            eval_samples=args.eval_samples,
                            byzantine=byzantine,
                        )
                        tag = f"{len(rows)}-{int(byzantine)}"
                        summary = run_testbed(scenario, Path(scratch) / tag, args.timeout)
                        key = "accuracy_byzantine" if byzantine else "accuracy"
                        row[key] = summary["final_accuracy"]
                        if not byzantine:
                            row["epsilon"] = spent_epsilon(
                                setting,
                                summary,
                                rounds,
                                int(training.get("epochs", 1)),
                                int(training.get("batch_size", 32)),
                                nodes,
                            )
                            row["epsilon_reported_by_nodes"] = bool(summary["node_privacy"])
                    row.setdefault("accuracy", None)
                    row.setdefault("epsilon", None)
                    rows.append(row)
                    console.print(
                        f"{setting.label} alpha={alpha} k={k}: acc {_fmt(row['accuracy'])} "
                        f"(sign-flip {_fmt(row.get('accuracy_byzantine'))}), eps "
                        f"{_fmt(row['epsilon'], 2)}, iDLG {_fmt(row.get('psnr_idlg'), 1)} dB "
                        f"[{time.perf_counter() - started:.0f} s]"
                    )

    command = "phalanx bench privacy" + (" --quick" if quick else "") + (" --ig" if args.ig else "")
    description = (
        f"mnist5k, model `{args.model}`, {nodes} nodes, {rounds} rounds, Dirichlet non-IID "
        f"(alpha as listed), static clusters of k, mean aggregation, no MPC; base scenario "
        f"`{Path(args.base).name}` (training {training}). Accuracy: `final_accuracy` of one "
        f'testbed run, and of a second one with `[[byzantine]] behaviour="sign-flip" count=1`. '
        f"eps: the largest any node spent (delta = 1e-5; `—` = no DP guarantee). PSNR: median "
        f"over {images} victim images of the attack on the defended FedAvg delta of one image "
        f"after one SGD step at lr={lr} (a cluster of one: the worst case); DP-SGD's column "
        f"attacks its exact one-image release `clip(-lr g, lr C) + N(0, (z lr C)^2)`."
    )
    report = {
        "command": command,
        "description": description,
        "methods": methods,
        "rows": rows,
        "total_seconds": time.perf_counter() - started,
    }
    docs = Path(args.docs)
    docs.mkdir(parents=True, exist_ok=True)
    (docs / "privacy_utility.json").write_text(json.dumps(report, indent=2) + "\n")
    (docs / "privacy_utility.md").write_text(_markdown(report))
    if any(r.get("accuracy") is not None and r.get("psnr_idlg") is not None for r in rows):
        _chart(
            rows,
            docs / "privacy_utility.png",
            f"mnist5k/{args.model}, {nodes} nodes, {rounds} rounds: accuracy vs iDLG PSNR",
        )

    table = Table(title="privacy–utility map")
    for column in ("setting", "k", "alpha", "eps", "acc", "acc sign-flip", *methods):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row["label"],
            str(row["cluster_size"]),
            _fmt(row["alpha"], 1),
            _fmt(row["epsilon"], 2),
            _fmt(row["accuracy"]),
            _fmt(row.get("accuracy_byzantine")),
            *[_fmt(row.get(f"psnr_{m}"), 1) for m in methods],
        )
    console.print(table)
    console.print(f"wrote {docs / 'privacy_utility.md'} in {report['total_seconds']:.0f} s")
    if args.json:
        print(json.dumps(report))
    return 0


def _float_list(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers, got {text!r}"
        ) from None


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"values must be >= 1, got {text!r}")
    return values


def register_bench(bench_subparsers: argparse._SubParsersAction) -> None:
    """Add ``phalanx bench privacy``."""
    parser = bench_subparsers.add_parser("privacy", help="privacy–utility–robustness map")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="4 nodes, 3 rounds, alpha 1.0, k=4, 4 victims (about 5 minutes)",
    )
    parser.add_argument("--base", default=str(DEFAULT_BASE), help="base scenario TOML")
    parser.add_argument("--model", default="mlp", choices=["mlp", "cnn"])
    parser.add_argument("--nodes", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--alphas", type=_float_list, default=None, help="e.g. 0.1,1.0")
    parser.add_argument("--cluster-sizes", type=_int_list, default=None, help="e.g. 1,4,8")
    parser.add_argument("--images", type=int, default=None, help="victim images per attack")
    parser.add_argument("--ig", action="store_true", help="also run Inverting Gradients")
    parser.add_argument("--ig-iterations", type=int, default=300)
    parser.add_argument("--eval-samples", type=int, default=1000)
    parser.add_argument("--only", nargs="*", default=None, help="labels of settings to run")
    parser.add_argument("--skip-testbed", action="store_true", help="attacks only")
    parser.add_argument("--skip-attacks", action="store_true", help="testbeds only")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per testbed run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--docs", default=str(REPO / "docs"))
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(func=run_bench)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="phalanx bench")
    register_bench(parser.add_subparsers(dest="bench", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
