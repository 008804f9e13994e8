"""``phalanx analyze clusters`` (and ``phalanx analyze shard``): fault-distribution figures.

Prints a rich table by default, exact rationals with ``--json``, and plots the metrics against the
cluster size with ``--plot FILE.png``. Impossible requests print one ``error:`` line and exit 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

from phalanx.clustering.analysis import (
    ANALYSIS_STRATEGIES,
    ClusterAnalysis,
    analyze_clusters,
    as_fraction,
    binomial_shard_corruption_probability,
    shard_corruption_probability,
)

EXIT_OK = 0
EXIT_USAGE = 2
MAX_RANGE_SIZES = 1000


def parse_size_range(text: str) -> list[int]:
    """``"2:20"`` -> [2, 3, ..., 20] (inclusive); a single ``"7"`` -> [7]."""
    parts = text.split(":")
    try:
        bounds = [int(part) for part in parts]
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected LOW:HIGH integers, got {text!r}") from error
    if len(bounds) == 1:
        bounds *= 2
    if len(bounds) != 2 or not 1 <= bounds[0] <= bounds[1]:
        raise argparse.ArgumentTypeError(f"expected LOW:HIGH with 1 <= LOW <= HIGH, got {text!r}")
    if bounds[1] - bounds[0] >= MAX_RANGE_SIZES:
        raise argparse.ArgumentTypeError(f"at most {MAX_RANGE_SIZES} cluster sizes, got {text!r}")
    return list(range(bounds[0], bounds[1] + 1))


def _fail(command: str, message: str) -> int:
    print(f"phalanx analyze {command}: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def _check_request(args: argparse.Namespace, sizes: Sequence[int]) -> str | None:
    if args.nodes < 1:
        return f"--nodes must be >= 1, got {args.nodes}"
    if not 0 <= args.faulty <= args.nodes:
        return f"--faulty must be in [0, {args.nodes}] (--nodes), got {args.faulty}"
    for size in sizes:
        if not 1 <= size <= args.nodes:
            return f"cluster size must be in [1, {args.nodes}] (--nodes), got {size}"
    if args.monte_carlo < 0:
        return f"--monte-carlo must be >= 0, got {args.monte_carlo}"
    return None


def _rule_description(args: argparse.Namespace) -> dict[str, Any]:
    if args.corrupt_fraction is not None:
        return {"corrupt_fraction": args.corrupt_fraction}
    return {"corrupt_threshold": args.corrupt_threshold}


def _print_table(args: argparse.Namespace, analyses: Sequence[ClusterAnalysis]) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    rule = _rule_description(args)
    title = (
        f"n={args.nodes}, f={args.faulty}, strategy={args.strategy}, "
        f"{', '.join(f'{k}={v}' for k, v in rule.items())}, breakdown={args.breakdown}"
    )
    with_monte_carlo = any(analysis.monte_carlo for analysis in analyses)
    caption = (
        "m clusters; tol = corrupted clusters the outer rule tolerates; E(frac) = expected "
        "corrupted fraction; P(over) = P(more than tol corrupted); worst/best = adversarial "
        "and packed placements"
    )
    if with_monte_carlo:
        caption += "; MC = Monte Carlo (± standard error)"
    table = Table(
        title=title,
        caption=caption,
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    headers = ["k", "m", "tol", "E(frac)", "P(≥1)", "P(over)", "worst", "best"]
    if with_monte_carlo:
        headers += ["MC E(frac)", "MC P(over)"]
    for header in headers:
        width = {"P(≥1)": 8, "P(over)": 8, "MC P(over)": 11}.get(header, len(header))
        table.add_column(header, justify="right", no_wrap=True, min_width=width)
    for analysis in analyses:
        row = [
            str(analysis.cluster_size),
            str(analysis.num_clusters),
            str(analysis.max_tolerated),
            f"{float(analysis.expected_fraction()):.4f}",
            f"{float(analysis.prob_at_least(1)):.3g}",
            f"{float(analysis.overwhelm_probability()):.3g}",
            f"{analysis.worst_case.corrupted}/{analysis.num_clusters}",
            f"{analysis.best_case.corrupted}/{analysis.num_clusters}",
        ]
        if with_monte_carlo:
            estimate = analysis.monte_carlo
            if estimate is None:
                row += ["-", "-"]
            else:
                overwhelmed = estimate.overwhelm_probability(analysis.breakdown)
                error = estimate.standard_error(overwhelmed, estimate.trials)
                row += [f"{estimate.expected_fraction():.4f}", f"{overwhelmed:.3g}±{error:.1g}"]
        table.add_row(*row)
    Console().print(table)


def plot_analyses(analyses: Sequence[ClusterAnalysis], path: Path, title: str) -> None:
    """Expected corrupted fraction, P(overwhelmed) and the extremes against the cluster size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [analysis.cluster_size for analysis in analyses]
    figure, axis = plt.subplots(figsize=(7, 4.5))
    axis.plot(
        sizes, [float(a.expected_fraction()) for a in analyses], "o-", label="E[corrupted fraction]"
    )
    axis.plot(
        sizes,
        [float(a.overwhelm_probability()) for a in analyses],
        "s-",
        label="P(outer rule overwhelmed)",
    )
    axis.plot(
        sizes,
        [a.worst_case.corrupted / a.num_clusters for a in analyses],
        "--",
        label="worst-case corrupted fraction",
    )
    axis.plot(
        sizes,
        [a.best_case.corrupted / a.num_clusters for a in analyses],
        ":",
        label="best-case corrupted fraction",
    )
    monte_carlo = [(a.cluster_size, a.monte_carlo, a.breakdown) for a in analyses if a.monte_carlo]
    if monte_carlo:
        axis.errorbar(
            [size for size, _, _ in monte_carlo],
            [estimate.overwhelm_probability(b) for _, estimate, b in monte_carlo],
            yerr=[
                2 * estimate.standard_error(estimate.overwhelm_probability(b), estimate.trials)
                for _, estimate, b in monte_carlo
            ],
            fmt="x",
            label="Monte Carlo P(overwhelmed) ± 2se",
        )
    axis.set_xlabel("cluster size k")
    axis.set_ylabel("probability / fraction")
    axis.set_ylim(-0.02, 1.02)
    axis.set_title(title)
    axis.grid(alpha=0.3)
    axis.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _clusters_command(args: argparse.Namespace) -> int:
    sizes = args.cluster_sizes if args.cluster_sizes is not None else [args.cluster_size]
    problem = _check_request(args, sizes)
    if problem is not None:
        return _fail("clusters", problem)
    try:
        analyses = [
            analyze_clusters(
                args.nodes,
                args.faulty,
                size,
                strategy=args.strategy,
                corrupt_threshold=None
                if args.corrupt_fraction is not None
                else args.corrupt_threshold,
                corrupt_fraction=args.corrupt_fraction,
                breakdown=args.breakdown,
                monte_carlo_trials=args.monte_carlo,
                seed=args.seed,
            )
            for size in sizes
        ]
    except ValueError as error:
        return _fail("clusters", str(error))
    if args.plot is not None:
        title = f"n={args.nodes}, f={args.faulty}, {args.strategy} clusters"
        try:
            plot_analyses(analyses, args.plot, title)
        except OSError as error:
            return _fail("clusters", f"cannot write plot {args.plot}: {error}")
    if args.json:
        document = {
            "nodes": args.nodes,
            "faulty": args.faulty,
            "strategy": args.strategy,
            "corruption_rule": _rule_description(args),
            "breakdown": args.breakdown,
            "results": [analysis.to_json() for analysis in analyses],
        }
        print(json.dumps(document, indent=2))
    else:
        _print_table(args, analyses)
    return EXIT_OK


def _shard_command(args: argparse.Namespace) -> int:
    try:
        fraction = as_fraction(args.fraction, "--fraction")
        exact = shard_corruption_probability(
            args.population, args.faulty, args.shard_size, fraction
        )
        limit = binomial_shard_corruption_probability(
            args.shard_size, Fraction(args.faulty, args.population), fraction
        )
    except ValueError as error:
        return _fail("shard", str(error))
    document = {
        "population": args.population,
        "faulty": args.faulty,
        "shard_size": args.shard_size,
        "fraction": args.fraction,
        "probability": float(exact),
        "probability_exact": f"{exact.numerator}/{exact.denominator}",
        "binomial_limit": float(limit),
    }
    if args.json:
        print(json.dumps(document, indent=2))
    else:
        print(
            f"P(shard of {args.shard_size} from {args.population} with {args.faulty} faulty "
            f"has >= {args.fraction} faulty) = {float(exact):.6g} "
            f"(binomial limit {float(limit):.6g})"
        )
    return EXIT_OK


def _fraction_arg(text: str) -> str:
    try:
        Fraction(text)
    except (ValueError, ZeroDivisionError) as error:
        raise argparse.ArgumentTypeError(
            f"expected a number like 0.34 or 1/3, got {text!r}"
        ) from error
    return text


def register_analyze_commands(analyze_subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``clusters`` and ``shard`` under an existing ``analyze`` sub-parser group."""
    clusters = analyze_subparsers.add_parser(
        "clusters",
        help="how many faulty peers a cluster layout tolerates",
        description=(
            "Exact probabilities (rational arithmetic) that clusters are corrupted and that the "
            "outer robust aggregation is overwhelmed, with worst/best-case placements."
        ),
    )
    clusters.add_argument("--nodes", type=int, required=True, help="n, number of peers")
    clusters.add_argument("--faulty", type=int, required=True, help="f, number of faulty peers")
    size = clusters.add_mutually_exclusive_group(required=True)
    size.add_argument("--cluster-size", type=int, help="target cluster size k")
    size.add_argument(
        "--cluster-sizes", type=parse_size_range, metavar="LOW:HIGH", help="range of k, inclusive"
    )
    clusters.add_argument(
        "--strategy",
        choices=ANALYSIS_STRATEGIES,
        default="random",
        help="how peers are placed in clusters (default random)",
    )
    rule = clusters.add_mutually_exclusive_group()
    rule.add_argument(
        "--corrupt-threshold",
        type=int,
        default=1,
        help="faulty members that corrupt a cluster (1 for plain sums; default)",
    )
    rule.add_argument(
        "--corrupt-fraction",
        type=_fraction_arg,
        help="fraction of faulty members that corrupts a cluster (MPC modes), e.g. 0.34 or 1/3",
    )
    clusters.add_argument(
        "--breakdown",
        type=_fraction_arg,
        default="0.5",
        help="breakdown point of the outer aggregation (0.5 for the median; default)",
    )
    clusters.add_argument(
        "--monte-carlo",
        type=int,
        default=0,
        metavar="TRIALS",
        help="also estimate by sampling this many random layouts (default 0: exact only)",
    )
    clusters.add_argument("--seed", type=int, default=0, help="Monte-Carlo seed")
    clusters.add_argument("--json", action="store_true", help="print exact figures as JSON")
    clusters.add_argument("--plot", type=Path, metavar="FILE.png", help="plot metrics against k")
    clusters.set_defaults(func=_clusters_command)

    shard = analyze_subparsers.add_parser(
        "shard",
        help="probability that a sampled shard has too many faulty members",
        description="Exact hypergeometric tail P(shard holds >= fraction faulty).",
    )
    shard.add_argument("--population", type=int, required=True, help="N, peers sampled from")
    shard.add_argument("--faulty", type=int, required=True, help="faulty peers among them")
    shard.add_argument("--shard-size", type=int, required=True, help="peers in one shard")
    shard.add_argument(
        "--fraction",
        type=_fraction_arg,
        default="1/3",
        help="faulty fraction that breaks a shard (default 1/3)",
    )
    shard.add_argument("--json", action="store_true", help="print exact figures as JSON")
    shard.set_defaults(func=_shard_command)


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``phalanx analyze {clusters,shard}``."""
    analyze = subparsers.add_parser("analyze", help="analyses of fault tolerance")
    analyze_subparsers = analyze.add_subparsers(dest="analyze_command", metavar="ANALYSIS")
    analyze_subparsers.required = True
    register_analyze_commands(analyze_subparsers)
