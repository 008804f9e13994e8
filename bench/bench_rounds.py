"""Round time broken into train, communicate and aggregate, on real local testbeds.

`phalanx bench rounds` runs `phalanx testbed run` for each (n, model) and reports per-round medians
(round 1 excluded: it includes process warm-up) and the ratio (communicate + aggregate) / train,
all measured in the same run. With several ``--secure`` modes (``none,shamir,secagg``) the modes
run back to back for each (n, model) and each secure row also reports its median round time
divided by the plaintext row's (``secure_over_plaintext``). `phalanx bench scale` runs many
nodes per process and reports the peak resident memory per node.
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

REPO = Path(__file__).resolve().parent.parent
SECURE_MODES = ("none", "shamir", "secagg")


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
        "final_accuracy": summary["final_accuracy"],
        "digests_identical": summary["all_digests_identical"],
        "parameters": summary["parameters"],
    }


def run_rounds_bench(
    nodes: list[int],
    models: list[str],
    rounds: int,
    cluster_size: int,
    secure: str | list[str] = "none",
    per_process: int = 1,
    repeats: int = 1,
) -> list[dict[str, Any]]:
    """One row per (model, n, mode). With ``repeats`` > 1 the modes are interleaved
    (none, shamir, secagg, none, shamir, ...), so that load drifting on a shared machine hits
    every mode alike; each row holds the medians over the repeats, and a secure row's
    ``secure_over_plaintext`` is the median of the per-repeat ratios (each secure testbed over
    the plaintext testbed that ran just before it)."""
    modes = [secure] if isinstance(secure, str) else list(secure)
    if not modes:
        raise ValueError(f"secure modes must be among {SECURE_MODES}, got none")
    for mode in modes:
        parse_mode(mode)
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in models:
            for n in nodes:
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
    row["digests_identical"] = all(r["digests_identical"] for r in runs)
    row["repeats"] = len(runs)
    row["round_s_runs"] = [r["round_s"] for r in runs]
    if ratios:
        row["secure_over_plaintext"] = statistics.median(ratios)
        row["secure_over_plaintext_runs"] = ratios
    return row


def parse_mode(token: str) -> tuple[str, int]:
    """``none``, ``secagg``, ``shamir`` or ``shamir:packing=L`` -> (mode, packing)."""
    name, _, option = token.partition(":")
    if name not in SECURE_MODES:
        raise ValueError(f"secure modes must be among {SECURE_MODES}, got {token!r}")
    if not option:
        return name, 1
    key, _, value = option.partition("=")
    if name != "shamir" or key != "packing" or not value.isdigit() or int(value) < 1:
        raise ValueError(f"{token!r}: the only mode option is shamir:packing=L with L >= 1")
    return name, int(value)


def _one_testbed(
    tmp: Path, model: str, n: int, rounds: int, cluster_size: int, secure: str, per_process: int
) -> dict[str, Any]:
    mode, packing = parse_mode(secure)
    out = tmp / f"{model}-{n}-{secure.replace(':', '-').replace('=', '')}"
    summary = run_testbed(
        out,
        "--nodes",
        str(n),
        "--rounds",
        str(rounds),
        "--model",
        model,
        "--cluster-size",
        str(min(cluster_size, n)),
        "--partition",
        "iid",
        "--secure",
        mode,
        "--packing",
        str(packing),
        "--nodes-per-process",
        str(per_process),
    )
    return {"nodes": n, "model": model, "secure": secure, **round_breakdown(summary)}


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
        "accuracy",
        "identical",
        "secure/plain",
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
            f"{r['final_accuracy']:.3f}",
            str(r["digests_identical"]),
            f"{r['secure_over_plaintext']:.2f}" if "secure_over_plaintext" in r else "",
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
    rows = run_rounds_bench(
        args.nodes,
        args.models,
        args.rounds,
        args.cluster_size,
        args.secure,
        args.nodes_per_process,
        args.repeats,
    )
    _print(rows, args.json)
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


def _int_list(text: str) -> list[int]:
    return [int(x) for x in text.split(",")]


def register_bench(subparsers: argparse._SubParsersAction) -> None:
    rounds = subparsers.add_parser("rounds", help="round time: train vs communicate vs aggregate")
    rounds.add_argument(
        "--nodes",
        type=_int_list,
        default=[8, 16, 32],
        metavar="N,N,...",
        help="testbed sizes, comma-separated (default 8,16,32)",
    )
    rounds.add_argument(
        "--models",
        type=lambda t: t.split(","),
        default=["mlp", "mlp-wide"],
        metavar="MODEL,...",
        help="learning.models names, comma-separated (default mlp,mlp-wide)",
    )
    rounds.add_argument(
        "--rounds", type=int, default=3, help="rounds per testbed (default %(default)s)"
    )
    rounds.add_argument(
        "--cluster-size", type=int, default=4, help="nodes per cluster (default %(default)s)"
    )
    rounds.add_argument(
        "--secure",
        type=lambda t: t.split(","),
        default=["none"],
        help="comma-separated modes among none,shamir,secagg, or shamir:packing=L (packed "
        "sharing); with none first, each secure row reports its round time over the plaintext "
        "one of the same run (default none)",
    )
    rounds.add_argument(
        "--nodes-per-process",
        type=int,
        default=1,
        help="nodes sharing one process (default %(default)s)",
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
