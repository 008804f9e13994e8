"""What binding every message to its sender costs: signed against unsigned rounds.

`phalanx bench signing` runs the same mutual-TLS testbed twice per repeat, once with every
envelope Ed25519-signed and verified (``security.sign_messages = true``, the default) and once
without (``false``, which only TLS makes safe), interleaved, and reports the median round time
of each (rounds after the first, slowest node) and the median of the per-repeat ratios
signed / unsigned. It also times the primitives on this machine: one signature and one
verification over an envelope of each payload size, SHA-256 included.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from bench.bench_rounds import run_testbed

SCENARIO = """
name = "signing-{label}"
seed = 7
nodes = {nodes}
rounds = {rounds}
nodes_per_process = {per_process}
[data]
dataset = "{dataset}"
[model]
name = "{model}"
[clustering]
cluster_size = {cluster_size}
[aggregation]
secure = "{secure}"
[security]
sign_messages = {signed}
"""


def median_round_s(summary: dict[str, Any]) -> float:
    rounds = summary["rounds"][1:] or summary["rounds"]
    return float(statistics.median(r["duration_s"] for r in rounds))


def primitive_costs(sizes: list[int], repeats: int = 200) -> list[dict[str, Any]]:
    """Median microseconds to sign and to verify one envelope carrying `size` float32 values."""
    from phalanx.v1 import node_pb2 as pb

    from clustering.identity import NodeIdentity
    from node.codec import Message
    from node.signing import sign_envelope, tensor_digests, verify_envelope

    identity = NodeIdentity.generate()
    rows = []
    for size in sizes:
        tensors = {"update": np.ones(size, dtype=np.float32)}
        sign_s, verify_s, sign_cached_s = [], [], []
        for _ in range(repeats):
            message = Message("node-01", 3, pb.MESSAGE_KIND_UPDATE, 0, dict(tensors), {}, "node-00")
            started = time.perf_counter()
            signed = sign_envelope(message, identity)  # first recipient: hashes the tensors
            sign_s.append(time.perf_counter() - started)
            started = time.perf_counter()
            sign_envelope(message, identity)  # every further recipient: the cached digest
            sign_cached_s.append(time.perf_counter() - started)
            fresh = Message(
                "node-01", 3, pb.MESSAGE_KIND_UPDATE, 0, dict(tensors), {}, "node-00",
                signed.signature,
            )  # fmt: skip
            started = time.perf_counter()
            verify_envelope(fresh, identity.public_key_bytes)
            verify_s.append(time.perf_counter() - started)
        tensor_digests.clear()
        rows.append(
            {
                "floats": size,
                "sign_first_us": 1e6 * statistics.median(sign_s),
                "sign_again_us": 1e6 * statistics.median(sign_cached_s),
                "verify_us": 1e6 * statistics.median(verify_s),
            }
        )
    return rows


def run_signing_bench(args: argparse.Namespace) -> dict[str, Any]:
    pairs: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="phalanx-bench-signing-") as tmp:
        for repeat in range(args.repeats):
            times: dict[str, float] = {}
            # Alternate which arm goes first, so a drift in the machine's load favours neither.
            order = ("signed", "unsigned") if repeat % 2 == 0 else ("unsigned", "signed")
            for label in order:
                scenario = Path(tmp) / f"{label}-{repeat}.toml"
                scenario.write_text(
                    SCENARIO.format(
                        label=label,
                        nodes=args.nodes,
                        rounds=args.rounds,
                        per_process=args.nodes_per_process,
                        dataset=args.dataset,
                        model=args.model,
                        cluster_size=args.cluster_size,
                        secure=args.secure,
                        signed="true" if label == "signed" else "false",
                    )
                )
                out = Path(tmp) / f"{label}-{repeat}"
                summary = run_testbed(out, str(scenario), "--tls")
                if not summary.get("all_digests_identical"):
                    raise RuntimeError(f"{label} run {repeat}: honest digests differ")
                times[label] = median_round_s(summary)
            times["ratio"] = times["signed"] / times["unsigned"]
            pairs.append(times)
    return {
        "nodes": args.nodes,
        "secure": args.secure,
        "model": args.model,
        "repeats": pairs,
        "signed_round_s": statistics.median(p["signed"] for p in pairs),
        "unsigned_round_s": statistics.median(p["unsigned"] for p in pairs),
        "ratio_median": statistics.median(p["ratio"] for p in pairs),
        "primitives": primitive_costs([1_000, 100_000, 1_000_000], repeats=20),
    }


def _cmd_signing(args: argparse.Namespace) -> int:
    result = run_signing_bench(args)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    console = Console()
    table = Table(title=f"signed vs unsigned rounds, n = {args.nodes}, {args.secure}, TLS on")
    for column in ("repeat", "signed s", "unsigned s", "signed / unsigned"):
        table.add_column(column, justify="right")
    for i, pair in enumerate(result["repeats"]):
        table.add_row(
            str(i), f"{pair['signed']:.3f}", f"{pair['unsigned']:.3f}", f"{pair['ratio']:.3f}"
        )
    table.add_row(
        "median",
        f"{result['signed_round_s']:.3f}",
        f"{result['unsigned_round_s']:.3f}",
        f"{result['ratio_median']:.3f}",
    )
    console.print(table)
    costs = Table(title="one envelope: Ed25519 + SHA-256 on this machine (median µs)")
    for column in ("float32 values", "sign (first recipient)", "sign (each further)", "verify"):
        costs.add_column(column, justify="right")
    for row in result["primitives"]:
        costs.add_row(
            f"{row['floats']:,}",
            f"{row['sign_first_us']:.0f}",
            f"{row['sign_again_us']:.0f}",
            f"{row['verify_us']:.0f}",
        )
    console.print(costs)
    return 0


def register_bench(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "signing", help="round time with every message signed, over the same run unsigned"
    )
    parser.add_argument("--nodes", type=int, default=16, help="nodes in each testbed")
    parser.add_argument("--rounds", type=int, default=6, help="rounds per testbed (first dropped)")
    parser.add_argument("--repeats", type=int, default=3, help="signed/unsigned pairs, interleaved")
    parser.add_argument("--secure", default="shamir", help="aggregation.secure of both arms")
    parser.add_argument("--model", default="mlp", help="model of both arms")
    parser.add_argument("--dataset", default="digits", help="data set of both arms")
    parser.add_argument("--cluster-size", type=int, default=4, help="clustering.cluster_size")
    parser.add_argument(
        "--nodes-per-process", type=int, default=4, help="nodes sharing one event loop"
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(func=_cmd_signing)
