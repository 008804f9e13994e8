"""`phalanx bench mpc`: per-node compute, bytes and error of one cluster's secure sum.

Runs :func:`mpc.secure_sum` (the same phase objects a node drives) on random float32 updates
and reports, per node, the median over repeats of each phase's compute seconds, the bytes sent
divided by the plaintext float32 update size, and the maximal reconstruction error.
"""

from __future__ import annotations

import argparse
import json
import statistics

import numpy as np

from phalanx.mpc.secure_sum import MODES, PHASES, secure_sum


def run_mpc_bench(
    dim: int, cluster_size: int, mode: str, repeats: int = 3, packing: int = 1
) -> dict[str, object]:
    """Median-of-repeats per-node compute seconds (per phase and total), bytes ratio, error.

    ``packing`` > 1 (shamir) packs that many coordinates per sharing polynomial.

    ``compute_s["reconstruct"]`` is the aggregator's work (one node per cluster in this
    protocol run); ``compute_s["member_total"]`` excludes it and ``compute_s["total"]`` is what
    a member that also aggregates spends.
    """
    if dim < 1 or cluster_size < 1 or repeats < 1:
        raise ValueError(
            f"dim, cluster_size and repeats must be >= 1, got {dim}, {cluster_size}, {repeats}"
        )
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    updates = np.random.default_rng(0).normal(scale=0.1, size=(cluster_size, dim))
    updates = updates.astype(np.float32)
    runs = [
        secure_sum(updates, mode, seed=repeat, packing=packing)  # type: ignore[arg-type]
        for repeat in range(repeats)
    ]
    compute = {phase: statistics.median(run.compute_s[phase] for run in runs) for phase in PHASES}
    compute["member_total"] = compute["encode_share"] + compute["sum"]
    compute["total"] = compute["member_total"] + compute["reconstruct"]
    bytes_per_node = float(np.mean(runs[0].bytes_sent))
    return {
        "mode": mode,
        "dim": dim,
        "cluster_size": cluster_size,
        "repeats": repeats,
        "threshold": runs[0].threshold,
        "packing": packing,
        "compute_s": compute,
        "bytes_sent_per_node": bytes_per_node,
        "bytes_ratio": bytes_per_node / (4 * dim),
        "max_abs_error": max(run.max_abs_error for run in runs),
        "failed": any(run.failed for run in runs),
    }


def _handle(args: argparse.Namespace) -> int:
    try:
        result = run_mpc_bench(args.dim, args.cluster_size, args.mode, args.repeats, args.packing)
    except ValueError as error:
        print(f"error: {error}")
        return 2
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"MPC secure sum, mode={args.mode}, D={args.dim}, K={args.cluster_size} (per node)"
    )
    table.add_column("quantity")
    table.add_column("value", justify="right")
    compute = result["compute_s"]
    assert isinstance(compute, dict)
    for phase, seconds in compute.items():
        table.add_row(f"compute {phase} (s)", f"{seconds:.4f}")
    table.add_row("bytes sent / float32 update", f"{result['bytes_ratio']:.3f}")
    table.add_row("max abs error", f"{result['max_abs_error']:.3g}")
    table.add_row("threshold", str(result["threshold"]))
    table.add_row("packing", str(result["packing"]))
    Console().print(table)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``mpc`` benchmark parser."""
    parser = subparsers.add_parser("mpc", help="benchmark secure aggregation inside one cluster")
    parser.add_argument(
        "--dim", type=int, default=1_000_000, help="update length D (default %(default)s)"
    )
    parser.add_argument(
        "--cluster-size", type=int, default=10, help="cluster size K (default %(default)s)"
    )
    parser.add_argument(
        "--mode",
        choices=MODES,
        default="secagg",
        help="secure-sum protocol (default %(default)s)",
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="median over this many runs (default %(default)s)"
    )
    parser.add_argument(
        "--packing",
        type=int,
        default=1,
        help="shamir: coordinates per sharing polynomial (default %(default)s)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(func=_handle)


register_bench = register
"""Alias: ``register_bench(bench_subparsers)`` as named in the issue."""
