"""What the memory engine buys: rounds per hour and memory per peer at scale, and its speed-up
over the gRPC testbed on the same scenario.

`phalanx bench simulate` runs one scenario (default: mlp on mnist5k, clusters of 10, Shamir) as
separate ``phalanx simulate`` processes at each n of ``--sizes`` (so that each peak RSS is its
own), and reports the rounds per hour (rounds / wall time of the whole run, start-up included)
and the peak resident memory per peer ((peak - the same process's RSS before the peers exist) /
n). Then, at ``--compare`` peers, it runs the gRPC testbed and the memory engine on the same
scenario alternately, ``--repeats`` times each in the order ABBA..., and reports the median wall
time of each and their ratio, so that a drift in the machine's load favours neither. Each
process's wall time is measured from outside (start to exit).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

console = Console()


def _run(
    engine: str, nodes: int, rounds: int, args: argparse.Namespace, out: Path
) -> dict[str, Any]:
    command = [
        sys.executable,
        "-m",
        "phalanx.node",
        "testbed",
        "run",
        "--engine",
        engine,
        "--nodes",
        str(nodes),
        "--rounds",
        str(rounds),
        "--cluster-size",
        str(args.cluster_size),
        "--secure",
        args.secure,
        "--model",
        args.model,
        "--dataset",
        args.dataset,
        "--partition",
        args.partition,
        "--seed",
        str(args.seed),
        "--out",
        str(out),
    ]
    if engine == "grpc":
        command += ["--no-metrics", "--nodes-per-process", str(args.nodes_per_process)]
    if args.scenario is not None:
        command.insert(5, str(args.scenario))
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout)
    wall_s = time.monotonic() - started
    summary_path = out / "summary.json"
    if done.returncode != 0 or not summary_path.exists():
        raise RuntimeError(
            f"{engine} n={nodes} failed (exit {done.returncode}): {done.stdout[-1500:]}"
            f"{done.stderr[-1500:]}"
        )
    summary = json.loads(summary_path.read_text())
    completed = [r for r in summary["rounds"] if r["digests_identical"]]
    return {
        "engine": engine,
        "nodes": nodes,
        "rounds": len(summary["rounds"]),
        "rounds_agreeing": len(completed),
        "status": summary["status"],
        "wall_s": wall_s,
        "final_accuracy": summary["final_accuracy"],
        "resources": summary.get("resources", {}),
        "honest_digests_last": sorted(set(summary["rounds"][-1]["honest_digests"].values()))
        if summary["rounds"]
        else [],
    }


def run_bench(args: argparse.Namespace) -> dict[str, Any]:
    scale = []
    with tempfile.TemporaryDirectory(prefix="phalanx-bench-sim-") as tmp:
        for nodes in args.sizes:
            console.print(f"memory engine, n = {nodes}, {args.rounds} rounds ...")
            result = _run("memory", nodes, args.rounds, args, Path(tmp) / f"memory-{nodes}")
            per_peer = result["resources"].get("peak_rss_bytes_per_node_max")
            result["rounds_per_hour"] = 3600 * result["rounds"] / result["wall_s"]
            result["peak_rss_mb_per_peer"] = per_peer / 1e6 if per_peer else None
            scale.append(result)
            console.print(
                f"  {result['status']}: {result['wall_s']:.0f} s, "
                f"{result['rounds_per_hour']:.0f} rounds/h, "
                f"{result['peak_rss_mb_per_peer']:.1f} MB/peer"
            )
        compare: dict[str, Any] = {}
        if args.compare:
            order = ["grpc", "memory", "memory", "grpc"] * ((args.repeats + 1) // 2)
            order = order[: 2 * args.repeats]
            walls: dict[str, list[float]] = {"grpc": [], "memory": []}
            digests: dict[str, list[list[str]]] = {"grpc": [], "memory": []}
            for index, engine in enumerate(order):
                console.print(f"speed-up, n = {args.compare}: {engine} ({index + 1}/{len(order)})")
                result = _run(
                    engine, args.compare, args.compare_rounds, args, Path(tmp) / f"cmp-{index}"
                )
                walls[engine].append(result["wall_s"])
                digests[engine].append(result["honest_digests_last"])
            compare = {
                "nodes": args.compare,
                "rounds": args.compare_rounds,
                "order": order,
                "wall_s": walls,
                "median_wall_s": {e: statistics.median(w) for e, w in walls.items()},
                "speedup": statistics.median(walls["grpc"]) / statistics.median(walls["memory"]),
                "same_final_model": all(
                    d == digests["grpc"][0] for e in digests for d in digests[e]
                ),
            }
    return {
        "scenario": {
            "model": args.model,
            "dataset": args.dataset,
            "partition": args.partition,
            "cluster_size": args.cluster_size,
            "secure": args.secure,
            "seed": args.seed,
            "file": str(args.scenario) if args.scenario else None,
        },
        "scale": scale,
        "compare": compare,
    }


def _print(report: dict[str, Any]) -> None:
    table = Table("peers", "rounds", "status", "wall s", "rounds / hour", "peak MB / peer")
    for r in report["scale"]:
        table.add_row(
            str(r["nodes"]),
            str(r["rounds"]),
            r["status"],
            f"{r['wall_s']:.0f}",
            f"{r['rounds_per_hour']:.0f}",
            f"{r['peak_rss_mb_per_peer']:.1f}" if r["peak_rss_mb_per_peer"] else "-",
        )
    console.print(table)
    compare = report["compare"]
    if compare:
        median = compare["median_wall_s"]
        console.print(
            f"n = {compare['nodes']}, {compare['rounds']} rounds: gRPC testbed "
            f"{median['grpc']:.1f} s, memory engine {median['memory']:.1f} s (medians of "
            f"{len(compare['wall_s']['grpc'])}): speed-up {compare['speedup']:.1f}x; "
            f"same final model: {compare['same_final_model']}"
        )


def _cmd_simulate(args: argparse.Namespace) -> int:
    report = run_bench(args)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print(report)
    if args.output is not None:
        args.output.write_text(json.dumps(report, indent=2))
    return 0


def register_bench(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "simulate", help="memory engine at scale, and its speed-up over the gRPC testbed"
    )
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=[100, 300, 1000], help="peers per run"
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds at each size")
    parser.add_argument("--compare", type=int, default=32, help="peers of the speed-up (0: skip)")
    parser.add_argument("--compare-rounds", type=int, default=3, help="rounds of the speed-up")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each engine (ABBA)")
    parser.add_argument("--secure", default="shamir", help="aggregation.secure")
    parser.add_argument("--model", default="mlp", help="model")
    parser.add_argument("--dataset", default="mnist5k", help="data set")
    parser.add_argument(
        "--partition", default="iid", help="data.partition (iid: every peer gets data at n=1000)"
    )
    parser.add_argument("--cluster-size", type=int, default=10, help="clustering.cluster_size")
    parser.add_argument("--seed", type=int, default=1, help="scenario seed")
    parser.add_argument(
        "--nodes-per-process", type=int, default=4, help="gRPC testbed: nodes per process"
    )
    parser.add_argument("--scenario", type=Path, help="scenario TOML (the flags override it)")
    parser.add_argument("--timeout", type=float, default=7200, help="seconds per run")
    parser.add_argument("--output", type=Path, help="write the report as JSON here")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(func=_cmd_simulate)
