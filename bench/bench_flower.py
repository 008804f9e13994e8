"""`phalanx bench flower`: Phalanx's secure rounds beside Flower's SecAgg+ on the same workload.

Both sides aggregate the same fixed synthetic updates (learning/synthetic.py: Phalanx in
``training.mode = "synthetic"``, Flower with clients that return that array), with no training
and no evaluation, for the same n, d, share count (Phalanx: clusters of that many share-holders;
Flower: SecAgg+ ``num_shares``) and threshold. The runs are interleaved: Phalanx plain, Flower
plain FedAvg, Phalanx secagg, Flower SecAgg+, Phalanx packed Shamir, and again for each repeat;
every figure is a median over the repeats of the per-run median round (round 1 excluded on both
sides). Each run's aggregate is checked against the exact mean of the synthetic updates.

Flower runs in its own Python (``--flower-python``, or ``PHALANX_FLOWER_PYTHON``, or this one
when it can import flwr): ``flwr[simulation]==1.42.0`` needs protobuf < 7 and ray 2.55.1, which
Phalanx's protobuf >= 7.35 and ray 2.52.0 pins exclude, so it cannot share Phalanx's
environment (docs/benchmarks.md shows how to make that environment).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
FLOWER_SIDE = Path(__file__).resolve().parent / "flower_side.py"
FLOWER_VERSION = "1.42.0"
# Flower's SecAgg+ defaults: clipping range 8, quantisation range 2^22 (max_weight 1, every
# client weighs 1); the mean of stochastic roundings is off by at most one step.
FLOWER_TOLERANCE = 2 * 16.0 / 2**22
DIFFERENCES = (
    "process shape: Phalanx runs real node processes on 127.0.0.1 speaking gRPC to each other "
    "(--nodes-per-process nodes each), every node also an aggregator; Flower runs its "
    "simulation engine (one ServerApp, ClientApps on Ray actors in this machine, no network)",
    "topology: Phalanx sums inside clusters of --shares nodes and combines the cluster sums on "
    "every node (no server); Flower's SecAgg+ has one server and each client shares its keys "
    "with --shares neighbours",
    "field and encoding: Phalanx masks and shares in the prime field p = 2^31 - 1, fixed point "
    "with 16 fractional bits clipped to [-4, 4]; Flower quantises to 2^22 levels over [-8, 8] "
    "and masks in Z_2^32",
    "PRG: Phalanx expands masks with AES-256-CTR (mpc/crypto.py); Flower with numpy's "
    "RandomState (Mersenne Twister) seeded by 32 bits folded from the shared key",
    "transport security: Phalanx signs every message (Ed25519) without TLS here; Flower's "
    "simulation has no transport at all",
)


def flower_num_shares(n: int, shares: int) -> int:
    """The `num_shares` given to Flower's SecAgg+ for `shares` share-holders among n clients.

    SecAgg+ links each client to the num_shares // 2 clients on either side of it in a shuffled
    ring, so below n it needs an odd count. Flower 1.42 raises an even count by one for its own
    neighbour graph after it has sent the unraised count to the clients, which then make one
    share too few and fail (IndexError in ``secaggplus_mod._share_keys``). The bench passes the
    odd count Flower would use, shares + 1, and says so in the report."""
    return shares + 1 if shares < n and shares % 2 == 0 else shares


def find_flower_python(explicit: str | None) -> str | None:
    """The Python to run Flower with, or None when none can import flwr."""
    candidates = [explicit, os.environ.get("PHALANX_FLOWER_PYTHON"), sys.executable]
    for candidate in candidates:
        if not candidate:
            continue
        path = shutil.which(candidate) or candidate
        probe = subprocess.run(
            [path, "-c", "import flwr, ray"], capture_output=True, text=True, timeout=120
        )
        if probe.returncode == 0:
            return path
        if candidate == explicit:
            return None
    return None


def run_flower(
    python: str, n: int, dim: int, shares: int, threshold: int, rounds: int, mode: str, seed: int
) -> dict[str, Any]:
    command = [
        python,
        str(FLOWER_SIDE),
        *("--nodes", str(n), "--dim", str(dim), "--shares", str(shares)),
        *("--threshold", str(threshold), "--rounds", str(rounds), "--mode", mode),
        *("--seed", str(seed), "--cpus", str(os.cpu_count() or 2)),
    ]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=3600)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode != 0 or not lines:
        raise RuntimeError(
            f"flower {mode} failed ({result.returncode}): "
            f"{result.stdout[-2000:]}{result.stderr[-3000:]}"
        )
    report: dict[str, Any] = json.loads(lines[-1])
    later = report["rounds"][1:] or report["rounds"]
    report["round_s"] = statistics.median(r["fit_s"] for r in later)
    report["aggregate_error"] = max(r["aggregate_error"] for r in report["rounds"])
    return report


def phalanx_scenario(
    path: Path,
    n: int,
    dim: int,
    shares: int,
    threshold: int,
    rounds: int,
    seed: int,
    per: int,
    base: Path | None = None,
) -> Path:
    """The scenario Phalanx's testbeds run: `base` (a scenario file, for its membership,
    timeouts and clustering settings) or a minimal one, with the workload the bench compares
    written over it: n, rounds, seed, nodes per process, synthetic updates of dimension `dim`,
    clusters of `shares` share-holders and the reconstruction threshold."""
    import tomli_w

    from phalanx.node.config import load_scenario, parse_scenario, with_overrides

    workload = {
        "seed": seed,
        "nodes": n,
        "rounds": rounds,
        "nodes_per_process": per,
        "model.synthetic_dim": dim,
        "training.mode": "synthetic",
        "clustering.cluster_size": shares,
        "aggregation.threshold": threshold,
    }
    if base is None:
        scenario = parse_scenario(
            {
                "name": "bench-flower",
                "data": {"dataset": "digits"},
                "model": {"name": "mlp"},
                "timeouts": {"collect_s": 120.0, "rpc_s": 60.0},
            }
        )
    else:
        scenario = load_scenario(base)
    # a bad combination is refused here, before anything runs
    scenario = with_overrides(scenario, workload)
    path.write_text(tomli_w.dumps(scenario.model_dump(exclude_none=True)))
    return path


def run_flower_bench(
    n: int,
    dim: int,
    shares: int,
    threshold: int,
    rounds: int,
    repeats: int,
    packing: int,
    flower_python: str,
    seed: int = 7,
    per_process: int = 5,
    dissemination: str = "direct",
    scenario: Path | None = None,
) -> dict[str, Any]:
    from phalanx.bench.bench_rounds import AGGREGATE_TOLERANCE, _one_testbed

    suffix = f":{dissemination}"
    phalanx_modes = [f"none{suffix}", f"secagg{suffix}", f"shamir:packing={packing}{suffix}"]
    order = [
        ("phalanx", phalanx_modes[0]),
        ("flower", "plain"),
        ("phalanx", phalanx_modes[1]),
        ("flower", "secagg+"),
        ("phalanx", phalanx_modes[2]),
    ]
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {key: [] for key in order}
    flower_shares = flower_num_shares(n, shares)
    differences = list(DIFFERENCES)
    if flower_shares != shares:
        differences.append(
            f"share count: Flower's SecAgg+ needs an odd num_shares below n (each client and "
            f"num_shares // 2 ring neighbours on each side), so Flower ran with "
            f"num_shares = {flower_shares} (itself and {flower_shares - 1} neighbours) where "
            f"Phalanx's clusters hold {shares} share-holders"
        )
    facts = {"seed": seed, "synthetic_dim": dim, "nodes": n, "model": "mlp"}
    with tempfile.TemporaryDirectory() as tmp:
        file = phalanx_scenario(
            Path(tmp) / "scenario.toml",
            n,
            dim,
            shares,
            threshold,
            rounds,
            seed,
            per_process,
            scenario,
        )
        for repeat in range(repeats):
            for side, mode in order:
                if side == "phalanx":
                    row = _one_testbed(
                        Path(tmp) / f"r{repeat}", None, n, None, None, mode, None, file, facts
                    )
                    row["ok"] = (
                        row["aggregate_error"] <= AGGREGATE_TOLERANCE and row["digests_identical"]
                    )
                else:
                    row = run_flower(
                        flower_python, n, dim, flower_shares, threshold, rounds, mode, seed
                    )
                    row["ok"] = row["aggregate_error"] <= FLOWER_TOLERANCE and all(
                        r["failures"] == 0 and r["results"] == n for r in row["rounds"]
                    )
                runs[(side, mode)].append(row)
                print(
                    f"repeat {repeat + 1}/{repeats} {side} {mode}: round "
                    f"{row['round_s']:.3f} s, aggregate error {row['aggregate_error']:.1e}",
                    file=sys.stderr,
                    flush=True,
                )

    def median(key: tuple[str, str]) -> float:
        return statistics.median(r["round_s"] for r in runs[key])

    def paired(a: tuple[str, str], b: tuple[str, str]) -> float:
        return statistics.median(
            x["round_s"] / y["round_s"] for x, y in zip(runs[a], runs[b], strict=True)
        )

    rows = [
        {
            "side": side,
            "mode": mode,
            "round_s": median((side, mode)),
            "round_s_runs": [r["round_s"] for r in runs[(side, mode)]],
            "aggregate_error": max(r["aggregate_error"] for r in runs[(side, mode)]),
            "correct": all(r["ok"] for r in runs[(side, mode)]),
        }
        for side, mode in order
    ]
    secagg, shamir = ("phalanx", phalanx_modes[1]), ("phalanx", phalanx_modes[2])
    flower_secure, flower_plain = ("flower", "secagg+"), ("flower", "plain")
    ratios = {
        "phalanx_secagg_over_flower_secaggplus": paired(secagg, flower_secure),
        "phalanx_shamir_over_flower_secaggplus": paired(shamir, flower_secure),
        "phalanx_plain_over_flower_plain": paired(("phalanx", phalanx_modes[0]), flower_plain),
        "flower_secaggplus_over_plain": paired(flower_secure, flower_plain),
        "phalanx_secagg_over_plain": paired(secagg, ("phalanx", phalanx_modes[0])),
        "phalanx_shamir_over_plain": paired(shamir, ("phalanx", phalanx_modes[0])),
    }
    flower_version = runs[flower_secure][0].get("flwr")
    return {
        "nodes": n,
        "dim": dim,
        "shares": shares,
        "flower_num_shares": flower_shares,
        "threshold": threshold,
        "packing": packing,
        "rounds": rounds,
        "repeats": repeats,
        "nodes_per_process": per_process,
        "dissemination": dissemination,
        "scenario": str(scenario) if scenario is not None else None,
        "flwr": flower_version,
        "rows": rows,
        "ratios": ratios,
        "correct": all(r["correct"] for r in rows),
        "differences": differences,
    }


def _print(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(
        f"n = {report['nodes']}, d = {report['dim']}, {report['shares']} share-holders, "
        f"threshold {report['threshold']}, packing {report['packing']}, "
        f"{report['rounds']} rounds x {report['repeats']} interleaved repeats, "
        f"flwr {report['flwr']}"
    )
    table = Table("side", "mode", "median round s", "runs", "aggregate error", "correct")
    for r in report["rows"]:
        table.add_row(
            r["side"],
            r["mode"],
            f"{r['round_s']:.3f}",
            " ".join(f"{x:.2f}" for x in r["round_s_runs"]),
            f"{r['aggregate_error']:.1e}",
            str(r["correct"]),
        )
    console.print(table)
    for name, value in report["ratios"].items():
        console.print(f"{name}: {value:.2f}")
    console.print("differences that remain:")
    for line in report["differences"]:
        console.print(f"- {line}")


def _cmd_flower(args: argparse.Namespace) -> int:
    for name in ("nodes", "dim", "shares", "threshold", "rounds", "repeats", "packing"):
        if getattr(args, name) < 1:
            print(f"--{name} must be >= 1, got {getattr(args, name)}")
            return 2
    if args.rounds < 2:
        print("--rounds must be >= 2: round 1 (set-up) is left out of the medians")
        return 2
    if args.shares > args.nodes or args.threshold > args.shares:
        print("need threshold <= shares <= nodes")
        return 2
    if args.scenario is not None:
        from phalanx.node.config import ConfigError

        try:
            phalanx_scenario(
                Path(tempfile.mkdtemp()) / "scenario.toml",
                args.nodes,
                args.dim,
                args.shares,
                args.threshold,
                args.rounds,
                7,
                args.nodes_per_process,
                args.scenario,
            )
        except (ConfigError, OSError) as error:
            print(f"--scenario {args.scenario}: {error}")
            return 2
    python = find_flower_python(args.flower_python)
    if python is None:
        print(
            f"phalanx bench flower: no Python with flwr found; make one with\n"
            f"  python3 -m venv .venv-flower && .venv-flower/bin/pip install "
            f"'flwr[simulation]=={FLOWER_VERSION}'\n"
            f"and pass --flower-python .venv-flower/bin/python (or set PHALANX_FLOWER_PYTHON)"
        )
        return 2
    report = run_flower_bench(
        args.nodes,
        args.dim,
        args.shares,
        args.threshold,
        args.rounds,
        args.repeats,
        args.packing,
        python,
        per_process=args.nodes_per_process,
        dissemination=args.dissemination,
        scenario=args.scenario,
    )
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print(report)
    return 0 if report["correct"] else 1


def register_bench(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    flower = subparsers.add_parser(
        "flower", help="Phalanx secure rounds beside Flower SecAgg+, interleaved, same workload"
    )
    flower.add_argument("--nodes", type=int, default=10, help="n (default %(default)s)")
    flower.add_argument(
        "--dim",
        type=int,
        default=1_000_000,
        help="synthetic update dimension d (default %(default)s)",
    )
    flower.add_argument(
        "--shares",
        type=int,
        default=10,
        help="share-holders: Phalanx cluster size, Flower SecAgg+ num_shares (default 10)",
    )
    flower.add_argument(
        "--threshold",
        type=int,
        default=7,
        help="Phalanx aggregation.threshold, Flower reconstruction_threshold (default 7)",
    )
    flower.add_argument(
        "--packing",
        type=int,
        default=2,
        help="Phalanx packed Shamir: coordinates per polynomial (default %(default)s)",
    )
    flower.add_argument(
        "--rounds", type=int, default=4, help="rounds per run, first left out (default 4)"
    )
    flower.add_argument(
        "--repeats", type=int, default=3, help="interleaved repeats (default %(default)s)"
    )
    flower.add_argument(
        "--nodes-per-process",
        type=int,
        default=5,
        help="Phalanx nodes sharing one process (default %(default)s)",
    )
    flower.add_argument(
        "--flower-python",
        default=None,
        metavar="PYTHON",
        help="a Python with flwr[simulation] installed (default: $PHALANX_FLOWER_PYTHON, or this "
        "one if it imports flwr)",
    )
    flower.add_argument(
        "--dissemination",
        choices=("direct", "tree"),
        default="direct",
        help="how Phalanx's cluster outputs reach every node (clustering.dissemination; "
        "default %(default)s)",
    )
    flower.add_argument(
        "--scenario",
        type=Path,
        default=None,
        metavar="FILE",
        help="start Phalanx's testbeds from this scenario file (membership, timeouts, "
        "publishers, ...); the bench writes n, d, rounds, seed, --shares and --threshold over it",
    )
    flower.add_argument("--json", action="store_true", help="print JSON instead of a table")
    flower.set_defaults(func=_cmd_flower)
