"""Round time broken into train, communicate and aggregate, on real local testbeds.

`phalanx bench rounds` runs `phalanx testbed run` for each (n, model) and reports per-round medians
(round 1 excluded: it includes process warm-up) and the ratio (communicate + aggregate) / train,
all measured in the same run. With several ``--secure`` modes (``none,shamir,secagg``) the modes
run back to back for each (n, model) and each secure row also reports its median round time
divided by the plaintext row's (``secure_over_plaintext``). `phalanx bench scale` runs many
nodes per process and reports the peak resident memory per node.

``--scenario FILE`` starts every testbed from a scenario file (the flags given explicitly
override it). ``--no-training`` sets ``training.mode = "synthetic"``: each node contributes a
fixed update of ``--dim`` coordinates and nothing is trained or evaluated, so the rows measure the
protocol alone; each row then also checks that every round's global step equals the known mean
of the included nodes' synthetic updates (``aggregate_error``, the largest deviation seen).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from phalanx.bench.arguments import int_list

REPO = Path(__file__).resolve().parent.parent
SECURE_MODES = ("none", "shamir", "secagg")
AGGREGATE_TOLERANCE = 1e-5
"""Largest accepted deviation of a synthetic round's step from the exact mean: the updates are
exact in every encoding (learning/synthetic.py), so only the float32 division by the count
rounds."""


def run_testbed(out: Path, *args: str, timeout: float = 1800) -> dict[str, Any]:
    command = [
        sys.executable,
        "-m",
        "phalanx.node",
        "testbed",
        "run",
        "--no-metrics",
        "--out",
        str(out),
        *args,
    ]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    summary_path = out / "summary.json"
    if result.returncode != 0 or not summary_path.exists():
        raise RuntimeError(
            f"testbed failed ({result.returncode}): {result.stdout[-2000:]}{result.stderr[-2000:]}"
        )
    return dict(json.loads(summary_path.read_text()))


def synthetic_error(out: Path, seed: int, dim: int) -> float:
    """The largest deviation, over every honest node's records of every round, between the
    recorded global step at the probed coordinates and the exact mean of the included nodes'
    synthetic updates (``training.mode = "synthetic"``); infinite when a node's round had no
    global step (every cluster of it failed), so that the row reads as incorrect."""
    import numpy as np

    from phalanx.learning.synthetic import synthetic_update

    records = []
    index: dict[str, int] = {}
    for path in sorted((out / "nodes").glob("*.jsonl")):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            if record.get("event") == "start":
                index[record["node"]] = record["index"]
            elif record.get("event") == "round" and "synthetic_probe" in record:
                records.append(record)
    if not records:
        raise RuntimeError(f"{out}: no round records with a synthetic probe")
    updates: dict[int, np.ndarray] = {}
    worst = 0.0
    for record in records:
        probe = record["synthetic_probe"]
        if probe["step"] is None:
            return float("inf")
        included = [n for out_ in record["cluster_outputs"].values() for n in out_["included"]]
        positions = np.asarray(probe["indices"])
        total = np.zeros(len(positions), dtype=np.float64)
        for node in included:
            i = index[node]
            if i not in updates:
                updates[i] = synthetic_update(seed, i, dim)[positions].astype(np.float64)
            total += updates[i]
        expected = total / len(included)
        worst = max(worst, float(np.max(np.abs(np.asarray(probe["step"]) - expected))))
    return worst


def round_breakdown(summary: dict[str, Any]) -> dict[str, float]:
    """Median per-round seconds (slowest node) over rounds after the first."""
    rounds = summary["rounds"][1:] or summary["rounds"]

    def median(key: str) -> float:
        return statistics.median(r[key] for r in rounds)

    train, communicate, aggregate = (
        median("train_s"),
        median("communicate_s"),
        median("aggregate_s"),
    )
    return {
        "round_s": median("duration_s"),
        "train_s": train,
        "communicate_s": communicate,
        "aggregate_s": aggregate,
        "overhead_ratio": (communicate + aggregate) / train if train else float("nan"),
        "mb_sent_per_node": statistics.median(
            sum(r["bytes_sent"].values()) / len(r["bytes_sent"]) / 1e6 for r in rounds
        ),
        "mb_sent_max_node": summary["bytes_per_node"]["sent"]["max"] / len(summary["rounds"]) / 1e6,
        "mb_sent_median_node": summary["bytes_per_node"]["sent"]["median"]
        / len(summary["rounds"])
        / 1e6,
        "sent_max_over_median": summary["bytes_per_node"]["sent"]["max_over_median"],
        "failed_clusters": sum(len(r["failed_clusters"]) for r in summary["rounds"]),
        "final_accuracy": summary["final_accuracy"],
        "digests_identical": summary["all_digests_identical"],
        "parameters": summary["parameters"],
    }


def model_parameters(scenario: Any) -> int:
    """The parameter count of the scenario's model on its data set (builds it once)."""
    from phalanx.learning.data import load_dataset
    from phalanx.learning.models import build_model

    data = load_dataset(
        scenario.data.dataset, scenario.data.dir, scenario.seed, scenario.data.test_fraction
    )
    model = build_model(scenario.model.name, data.input_shape, data.num_classes)
    return sum(p.numel() for p in model.parameters())


def write_scenario(
    path: Path,
    base: Path | None,
    model: str | None,
    synthetic_dim: int | None,
) -> tuple[Path, dict[str, Any]]:
    """The scenario a testbed runs: `base` (or the default scenario) with the model and, when
    `synthetic_dim` is not None, ``training.mode = "synthetic"`` (0: the model's parameter
    count). Returns the file written and facts a row needs (seed, dimension)."""
    import tomli_w

    from phalanx.node.config import default_scenario_path, load_scenario, with_overrides

    scenario = load_scenario(base or default_scenario_path())
    scenario = with_overrides(scenario, {"model.name": model})
    if synthetic_dim is not None:
        dim = synthetic_dim or model_parameters(scenario)
        scenario = with_overrides(
            scenario, {"training.mode": "synthetic", "model.synthetic_dim": dim}
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(tomli_w.dumps(scenario.model_dump(exclude_none=True)).encode())
    facts = {
        "seed": scenario.seed,
        "synthetic_dim": scenario.model.synthetic_dim,
        "nodes": scenario.nodes,
        "cluster_size": scenario.clustering.cluster_size,
        "model": scenario.model.name,
    }
    return path, facts


def run_rounds_bench(
    nodes: list[int] | None,
    models: list[str] | None,
    rounds: int | None,
    cluster_size: int | None,
    secure: str | list[str] = "none",
    per_process: int | None = 1,
    repeats: int = 1,
    scenario: Path | None = None,
    synthetic_dim: int | None = None,
) -> list[dict[str, Any]]:
    """One row per (model, n, mode). With ``repeats`` > 1 the modes are interleaved
    (none, shamir, secagg, none, shamir, ...), so that load drifting on a shared machine hits
    every mode alike; each row holds the medians over the repeats, and a secure row's
    ``secure_over_plaintext`` is the median of the per-repeat ratios (each secure testbed over
    the plaintext testbed that ran just before it).

    With a `scenario` file, None for `nodes`, `models`, `rounds`, `cluster_size` or
    `per_process` keeps the scenario's value; without one they default to 8,16,32 nodes,
    mlp,mlp-wide, 3 rounds, clusters of 4, one node per process and an IID split.
    `synthetic_dim` (not None) runs ``training.mode = "synthetic"`` with that dimension (0: the
    model's parameter count) and checks each round's aggregate (`synthetic_error`)."""
    if scenario is None:
        nodes = nodes or [8, 16, 32]
        models = models or ["mlp", "mlp-wide"]
        rounds = rounds or 3
        cluster_size = cluster_size or 4
        per_process = per_process or 1
    modes = [secure] if isinstance(secure, str) else list(secure)
    if not modes:
        raise ValueError(f"secure modes must be among {SECURE_MODES}, got none")
    for mode in modes:
        parse_mode(mode)
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        model_list: list[str | None] = list(models) if models else [None]
        for model in model_list:
            file: Path | None = None
            facts: dict[str, Any] = {}
            if scenario is not None or synthetic_dim is not None:
                file, facts = write_scenario(
                    Path(tmp) / f"{model}.toml", scenario, model, synthetic_dim
                )
            node_list: list[int | None] = list(nodes) if nodes else [None]
            for n in node_list:
                runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in modes}
                ratios: dict[str, list[float]] = {mode: [] for mode in modes}
                for repeat in range(repeats):
                    baseline: float | None = None
                    for mode in modes:
                        row = _one_testbed(
                            Path(tmp) / f"r{repeat}",
                            model,
                            n,
                            rounds,
                            cluster_size,
                            mode,
                            per_process,
                            file,
                            facts,
                        )
                        runs[mode].append(row)
                        if parse_mode(mode)[0] == "none":
                            baseline = row["round_s"]
                        elif baseline:
                            ratios[mode].append(row["round_s"] / baseline)
                for mode in modes:
                    rows.append(_median_row(runs[mode], ratios[mode]))
    return rows


def _median_row(runs: list[dict[str, Any]], ratios: list[float]) -> dict[str, Any]:
    """The medians of one mode's repeats (numbers), with the per-repeat values kept."""
    row = dict(runs[0])
    for key, value in runs[0].items():
        if isinstance(value, float):
            row[key] = statistics.median(r[key] for r in runs)
    if "aggregate_error" in row:
        row["aggregate_error"] = max(r["aggregate_error"] for r in runs)
    row["digests_identical"] = all(r["digests_identical"] for r in runs)
    row["repeats"] = len(runs)
    row["round_s_runs"] = [r["round_s"] for r in runs]
    if ratios:
        row["secure_over_plaintext"] = statistics.median(ratios)
        row["secure_over_plaintext_runs"] = ratios
    return row


def parse_mode(token: str) -> tuple[str, int]:
    """``none``, ``secagg``, ``shamir`` or ``shamir:packing=L``, each optionally with ``:tree``
    or ``:direct`` (`dissemination_of`) -> (mode, packing)."""
    name, *options = token.split(":")
    if name not in SECURE_MODES:
        raise ValueError(f"secure modes must be among {SECURE_MODES}, got {token!r}")
    packing = 1
    for option in options:
        key, _, value = option.partition("=")
        if option in DISSEMINATIONS:
            continue
        if name != "shamir" or key != "packing" or not value.isdigit() or int(value) < 1:
            raise ValueError(
                f"{token!r}: mode options are shamir:packing=L with L >= 1 and :tree "
                "/ :direct (how outputs reach every node)"
            )
        packing = int(value)
    return name, packing


DISSEMINATIONS = ("direct", "tree")


def dissemination_of(token: str) -> str | None:
    """The ``:direct`` or ``:tree`` option of a mode token (clustering.dissemination), or None:
    the scenario's."""
    chosen = [option for option in token.split(":")[1:] if option in DISSEMINATIONS]
    return chosen[-1] if chosen else None


def _one_testbed(
    tmp: Path,
    model: str | None,
    n: int | None,
    rounds: int | None,
    cluster_size: int | None,
    secure: str,
    per_process: int | None,
    scenario: Path | None = None,
    facts: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One testbed; None keeps the scenario file's value (only with `scenario`)."""
    facts = facts or {}
    mode, packing = parse_mode(secure)
    n = n or facts["nodes"]
    model = model or facts["model"]
    out = tmp / f"{model}-{n}-{secure.replace(':', '-').replace('=', '')}"
    args = [str(scenario)] if scenario is not None else ["--partition", "iid"]
    args += ["--nodes", str(n), "--model", model, "--secure", mode, "--packing", str(packing)]
    dissemination = dissemination_of(secure)
    if dissemination is not None:
        args += ["--dissemination", dissemination]
    if rounds is not None:
        args += ["--rounds", str(rounds)]
    size = cluster_size or facts.get("cluster_size")
    if size is not None:
        args += ["--cluster-size", str(min(size, n))]
    if per_process is not None:
        args += ["--nodes-per-process", str(per_process)]
    summary = run_testbed(out, *args)
    row: dict[str, Any] = {"nodes": n, "model": model, "secure": secure}
    row.update(round_breakdown(summary))
    if facts.get("synthetic_dim"):
        row["aggregate_error"] = synthetic_error(out, facts["seed"], facts["synthetic_dim"])
    return row


def _print(rows: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table(
        "nodes",
        "model",
        "params",
        "secure",
        "round s",
        "train s",
        "communicate s",
        "aggregate s",
        "(comm+agg)/train",
        "MB/node",
        "max/median",
        "failed",
        "accuracy",
        "identical",
        "secure/plain",
        "aggregate error",
    )
    for r in rows:
        table.add_row(
            str(r["nodes"]),
            r["model"],
            str(r["parameters"]),
            r["secure"],
            f"{r['round_s']:.2f}",
            f"{r['train_s']:.2f}",
            f"{r['communicate_s']:.2f}",
            f"{r['aggregate_s']:.4f}",
            f"{r['overhead_ratio']:.2f}",
            f"{r['mb_sent_per_node']:.1f}",
            f"{r['sent_max_over_median']:.2f}",
            str(r["failed_clusters"]),
            f"{r['final_accuracy']:.3f}",
            str(r["digests_identical"]),
            f"{r['secure_over_plaintext']:.2f}" if "secure_over_plaintext" in r else "",
            f"{r['aggregate_error']:.1e}" if "aggregate_error" in r else "",
        )
    Console().print(table)


def _cmd_rounds(args: argparse.Namespace) -> int:
    if args.repeats < 1:
        print(f"--repeats must be >= 1, got {args.repeats}")
        return 2
    try:
        for mode in args.secure:
            parse_mode(mode)
    except ValueError as error:
        print(f"--secure: {error}")
        return 2
    if args.dim is not None and not args.no_training:
        print("--dim needs --no-training")
        return 2
    if args.dim is not None and args.dim < 1:
        print(f"--dim must be >= 1, got {args.dim}")
        return 2
    from phalanx.node.config import ConfigError, load_scenario, with_overrides

    try:
        if args.scenario is not None:
            load_scenario(args.scenario)
        if args.no_training:
            # the synthetic settings checked before any testbed starts
            base = load_scenario(args.scenario) if args.scenario else None
            if base is not None:
                with_overrides(
                    base, {"training.mode": "synthetic", "model.synthetic_dim": args.dim or 1}
                )
    except ConfigError as error:
        print(f"phalanx bench rounds: {error}")
        return 2
    rows = run_rounds_bench(
        args.nodes,
        args.models,
        args.rounds,
        args.cluster_size,
        args.secure,
        args.nodes_per_process,
        args.repeats,
        scenario=Path(args.scenario) if args.scenario else None,
        synthetic_dim=(args.dim or 0) if args.no_training else None,
    )
    _print(rows, args.json)
    if any(r.get("aggregate_error", 0.0) > AGGREGATE_TOLERANCE for r in rows):
        print(f"aggregate differs from the known sum by more than {AGGREGATE_TOLERANCE}")
        return 1
    return 0


def _cmd_scale(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        summary = run_testbed(
            Path(tmp) / "scale",
            "--nodes",
            str(args.nodes),
            "--rounds",
            str(args.rounds),
            "--model",
            "mlp",
            "--dataset",
            args.dataset,
            "--partition",
            "iid",
            "--cluster-size",
            str(args.cluster_size),
            "--nodes-per-process",
            str(args.nodes_per_process),
            "--collect-timeout",
            "120",
        )
    result = {
        "nodes": args.nodes,
        "nodes_per_process": args.nodes_per_process,
        "rounds_completed": len(summary["rounds"]),
        "final_accuracy": summary["final_accuracy"],
        "digests_identical": summary["all_digests_identical"],
        "median_round_s": statistics.median(r["duration_s"] for r in summary["rounds"]),
        "peak_rss_mb_per_node": summary["resources"]["peak_rss_bytes_per_node_max"] / 2**20,
        "peak_rss_mb_per_process_max": max(
            summary["resources"]["peak_rss_bytes_per_process"].values()
        )
        / 2**20,
    }
    print(json.dumps(result, indent=2))
    return 0 if result["rounds_completed"] == args.rounds else 1


_int_list = int_list(1)


def register_bench(subparsers: argparse._SubParsersAction) -> None:
    rounds = subparsers.add_parser("rounds", help="round time: train vs communicate vs aggregate")
    rounds.add_argument(
        "--scenario",
        metavar="FILE",
        default=None,
        help="start every testbed from this scenario TOML (as `phalanx testbed run` takes); the "
        "flags given explicitly override it, the others keep its values",
    )
    rounds.add_argument(
        "--no-training",
        action="store_true",
        help='training.mode = "synthetic": each node sends a fixed synthetic update of --dim '
        "coordinates, nothing is trained or evaluated, so the protocol is measured alone; every "
        "round's aggregate is checked against the known sum",
    )
    rounds.add_argument(
        "--dim",
        type=int,
        default=None,
        metavar="D",
        help="--no-training: the synthetic update's dimension (default: the model's "
        "parameter count)",
    )
    rounds.add_argument(
        "--nodes",
        type=_int_list,
        default=None,
        metavar="N,N,...",
        help="testbed sizes, comma-separated (default 8,16,32; with --scenario its nodes)",
    )
    rounds.add_argument(
        "--models",
        type=lambda t: t.split(","),
        default=None,
        metavar="MODEL,...",
        help="learning.models names, comma-separated (default mlp,mlp-wide; with --scenario "
        "its model)",
    )
    rounds.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="rounds per testbed (default 3; with --scenario its rounds)",
    )
    rounds.add_argument(
        "--cluster-size",
        type=int,
        default=None,
        help="nodes per cluster (default 4; with --scenario its cluster size)",
    )
    rounds.add_argument(
        "--secure",
        type=lambda t: t.split(","),
        default=["none"],
        help="comma-separated modes among none,shamir,secagg, or shamir:packing=L (packed "
        "sharing), each optionally with :tree or :direct (clustering.dissemination, e.g. "
        "secagg:tree); with none first, each secure row reports its round time over the plaintext "
        "one of the same run (default none)",
    )
    rounds.add_argument(
        "--nodes-per-process",
        type=int,
        default=None,
        help="nodes sharing one process (default 1; with --scenario its value)",
    )
    rounds.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="testbeds per mode, interleaved across modes; rows report medians "
        "(default %(default)s)",
    )
    rounds.add_argument("--json", action="store_true", help="print JSON instead of a table")
    rounds.set_defaults(func=_cmd_rounds)
    scale = subparsers.add_parser("scale", help="many nodes per process: memory per node")
    scale.add_argument("--nodes", type=int, default=128, help="nodes (default %(default)s)")
    scale.add_argument(
        "--nodes-per-process",
        type=int,
        default=16,
        help="nodes sharing one process (default %(default)s)",
    )
    scale.add_argument("--rounds", type=int, default=3, help="rounds (default %(default)s)")
    scale.add_argument(
        "--cluster-size", type=int, default=8, help="nodes per cluster (default %(default)s)"
    )
    scale.add_argument(
        "--dataset", default="mnist5k", help="data set, IID split (default %(default)s)"
    )
    scale.set_defaults(func=_cmd_scale)
