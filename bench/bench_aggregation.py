"""Time each robust aggregation rule against the plain mean, as ratios measured in one run.

``phalanx bench aggregation --m 100 --d 1000000 --repeats 5`` prints, for every rule and
pre-aggregator, the median wall time over the repeats and its ratio to the mean's median.
Ratios, not seconds, are the comparable number: they cancel most of the machine's speed.
``--sort-reference median,trimmed-mean,bulyan`` also times the full-sort path those rules used
before selection (:func:`sort_reference`, kept as the tests' bit-for-bit reference).
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from phalanx.learning.aggregation import AggregationResult

__all__ = [
    "SORT_REFERENCE_RULES",
    "register",
    "register_bench",
    "run_aggregation_bench",
    "sort_reference",
]

SORT_REFERENCE_RULES = ("median", "trimmed-mean", "bulyan")
"""The rules `sort_reference` computes."""

# torch and the rules load in the functions that run the bench: parsing needs none of them.


def sort_reference(name: str, vectors: torch.Tensor, f: int) -> AggregationResult:
    """The coordinate-wise rules as they were computed before selection: a stable sort of every
    column carrying row indices (CPU). The tests hold the rules to this bit for bit, and the
    bench times it against the current path. Default parameters (trim = f, flag_fraction 0.5).
    See `bench.aggregation_reference`."""
    from phalanx.bench.aggregation_reference import sort_reference as by_sort

    return by_sort(name, vectors, f)


def _interleaved_medians(
    actions: dict[str, Callable[[], object]], repeats: int
) -> dict[str, float]:
    """Median seconds of each action; every repeat runs all actions once, in turn, so that a
    change in machine load during the run touches every action alike."""
    durations: dict[str, list[float]] = {name: [] for name in actions}
    for _ in range(repeats):
        for name, action in actions.items():
            start = time.perf_counter()
            action()
            durations[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in durations.items()}


def run_aggregation_bench(
    m: int = 100,
    d: int = 1_000_000,
    f: int | None = None,
    repeats: int = 5,
    seed: int = 0,
    rules: list[str] | None = None,
    pres: list[str] | None = None,
    sort_reference_rules: list[str] | None = None,
) -> dict[str, Any]:
    """Median time of rules and pre-aggregators on seeded N(0, 1) float32 rows of shape (m, d),
    the repeats interleaved across everything timed.

    f defaults to the largest value Bulyan (the strictest rule) accepts, (m - 3) // 4; each rule
    runs with min(f, its own limit) (the mean with 0) and records the f it used. ``rules`` and
    ``pres`` select what is timed (all when None; the mean always runs, as the yardstick).
    ``sort_reference_rules`` also times :func:`sort_reference` for those rules (the full-sort
    path the coordinate-wise rules used before), reported as ``ratio_to_sort_reference``.
    Returns ``{"m", "d", "f", "repeats", "threads", "rules", "pre", "sort_reference"}``; each
    entry has ``f``, ``median_s`` and ``ratio_to_mean``.
    """
    import torch

    from phalanx.bench.aggregation_reference import sort_reference as by_sort
    from phalanx.learning.aggregation import (
        AGGREGATION_RULES,
        PRE_AGGREGATORS,
        Bulyan,
        get_pre,
        get_rule,
    )

    # Static clipping needs a threshold; any value works for timing.
    pre_specs = {name: name for name in PRE_AGGREGATORS} | {"clip": "clip:threshold=1.0"}
    if m < 1 or d < 1 or repeats < 1:
        raise ValueError(
            f"bench aggregation: needs m, d, repeats >= 1, got m={m}, d={d}, repeats={repeats}"
        )
    declared_f = max(Bulyan().max_f(m), 0) if f is None else f
    if declared_f < 0:
        raise ValueError(f"bench aggregation: f must be >= 0, got {declared_f}")
    rule_names = list(AGGREGATION_RULES) if rules is None else ["mean", *rules]
    pre_names = list(PRE_AGGREGATORS) if pres is None else pres
    reference_names = sort_reference_rules or []
    for name in {*rule_names, *reference_names} - set(AGGREGATION_RULES):
        raise ValueError(f"bench aggregation: unknown rule {name!r}")
    for name in set(pre_names) - set(PRE_AGGREGATORS):
        raise ValueError(f"bench aggregation: unknown pre-aggregator {name!r}")
    for name in set(reference_names) - set(SORT_REFERENCE_RULES):
        raise ValueError(
            f"bench aggregation: no sort reference for {name!r} (only {SORT_REFERENCE_RULES})"
        )
    vectors = torch.randn(m, d, generator=torch.Generator().manual_seed(seed))

    timed_rules: dict[str, dict[str, Any]] = {}
    actions: dict[str, Callable[[], object]] = {}
    for name in dict.fromkeys(rule_names):
        rule = get_rule(name)
        rule_f = min(declared_f, rule.max_f(m))
        if rule_f < 0:
            timed_rules[name] = {
                "f": None,
                "median_s": None,
                "ratio_to_mean": None,
                "skipped": f"m={m} is too small ({rule.breakdown})",
            }
            continue
        timed_rules[name] = {"f": rule_f}
        actions[f"rule:{name}"] = functools.partial(rule, vectors, rule_f)

    pre: dict[str, dict[str, Any]] = {}
    pre_f = min(declared_f, m - 1)
    for name in pre_names:
        pre[name] = {"f": pre_f}
        actions[f"pre:{name}"] = functools.partial(get_pre(pre_specs[name]).apply, vectors, pre_f)

    reference: dict[str, dict[str, Any]] = {}
    for name in reference_names:
        reference_f = min(declared_f, get_rule(name).max_f(m))
        if reference_f >= 0:
            reference[name] = {"f": reference_f}
            actions[f"ref:{name}"] = functools.partial(by_sort, name, vectors, reference_f)

    medians = _interleaved_medians(actions, repeats)
    kinds = {"rule": timed_rules, "pre": pre, "ref": reference}
    for key, seconds in medians.items():
        kind, name = key.split(":", 1)
        kinds[kind][name]["median_s"] = seconds

    mean_seconds = timed_rules["mean"]["median_s"]
    for entry in (*timed_rules.values(), *pre.values(), *reference.values()):
        if entry["median_s"] is not None:
            entry["ratio_to_mean"] = entry["median_s"] / mean_seconds
    for name, entry in reference.items():
        if timed_rules.get(name, {}).get("median_s") is not None:
            timed_rules[name]["ratio_to_sort_reference"] = (
                timed_rules[name]["median_s"] / entry["median_s"]
            )
    return {
        "m": m,
        "d": d,
        "f": declared_f,
        "repeats": repeats,
        "threads": torch.get_num_threads(),
        "rules": timed_rules,
        "pre": pre,
        "sort_reference": reference,
    }


def _print_table(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=(
            f"aggregation at m={result['m']}, d={result['d']}, f={result['f']} "
            f"(median of {result['repeats']}, {result['threads']} threads)"
        )
    )
    for column in ("kind", "name", "f", "median s", "x mean", "x sort path"):
        table.add_column(column, justify="left" if column in ("kind", "name") else "right")
    for kind in ("rules", "pre", "sort_reference"):
        for name, entry in result[kind].items():
            if entry["median_s"] is None:
                table.add_row(kind, name, "-", "-", entry.get("skipped", "-"), "")
                continue
            to_sort = entry.get("ratio_to_sort_reference")
            table.add_row(
                kind,
                name,
                str(entry["f"]),
                f"{entry['median_s']:.4f}",
                f"{entry['ratio_to_mean']:.1f}",
                "" if to_sort is None else f"{to_sort:.2f}",
            )
    Console().print(table)


def _names(text: str | None) -> list[str] | None:
    return None if text is None else [name.strip() for name in text.split(",") if name.strip()]


def _handle(args: argparse.Namespace) -> int:
    try:
        result = run_aggregation_bench(
            m=args.m,
            d=args.d,
            f=args.f,
            repeats=args.repeats,
            rules=_names(args.rules),
            pres=_names(args.pre),
            sort_reference_rules=_names(args.sort_reference),
        )
    except ValueError as error:
        print(f"error: {error}")
        return 2
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        _print_table(result)
    return 0


def register_bench(bench_subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``aggregation`` to the ``phalanx bench`` subcommands."""
    parser = bench_subparsers.add_parser(
        "aggregation", help="time each robust aggregation rule as a ratio to the mean"
    )
    parser.add_argument("--m", type=int, default=100, help="number of input rows (default 100)")
    parser.add_argument("--d", type=int, default=1_000_000, help="row length (default 1000000)")
    parser.add_argument(
        "--f", type=int, default=None, help="declared Byzantine rows (default (m - 3) // 4)"
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per rule (default 5)")
    parser.add_argument(
        "--rules", default=None, help="comma-separated rules to time (default all; mean always)"
    )
    parser.add_argument(
        "--pre", default=None, help="comma-separated pre-aggregators to time (default all; '' none)"
    )
    parser.add_argument(
        "--sort-reference",
        default=None,
        help=f"also time the full-sort path of these rules (of {', '.join(SORT_REFERENCE_RULES)})",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(func=_handle)


register = register_bench
