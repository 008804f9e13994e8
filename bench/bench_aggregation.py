"""Time each robust aggregation rule against the plain mean, as ratios measured in one run.

``phalanx bench aggregation --m 100 --d 1000000 --repeats 5`` prints, for every rule and
pre-aggregator, the median wall time over the repeats and its ratio to the mean's median.
Ratios, not seconds, are the comparable number: they cancel most of the machine's speed.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from learning.aggregation import AGGREGATION_RULES, PRE_AGGREGATORS, Bulyan, get_pre, get_rule

__all__ = ["register", "register_bench", "run_aggregation_bench"]

# Static clipping needs a threshold; any value works for timing.
_PRE_SPECS = {name: name for name in PRE_AGGREGATORS} | {"clip": "clip:threshold=1.0"}


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
) -> dict[str, Any]:
    """Median time of every rule and pre-aggregator on seeded N(0, 1) rows of shape (m, d),
    the repeats interleaved across rules.

    f defaults to the largest value Bulyan (the strictest rule) accepts, (m - 3) // 4; each rule
    runs with min(f, its own limit) (the mean with 0) and records the f it used.
    Returns ``{"m", "d", "f", "repeats", "threads", "rules": {name: {...}}, "pre": {name: {...}}}``
    where each entry has ``f``, ``median_s`` and ``ratio_to_mean``.
    """
    if m < 1 or d < 1 or repeats < 1:
        raise ValueError(
            f"bench aggregation: needs m, d, repeats >= 1, got m={m}, d={d}, repeats={repeats}"
        )
    declared_f = max(Bulyan().max_f(m), 0) if f is None else f
    if declared_f < 0:
        raise ValueError(f"bench aggregation: f must be >= 0, got {declared_f}")
    vectors = torch.randn(m, d, generator=torch.Generator().manual_seed(seed))

    rules: dict[str, dict[str, Any]] = {}
    actions: dict[str, Callable[[], object]] = {}
    for name in AGGREGATION_RULES:
        rule = get_rule(name)
        rule_f = min(declared_f, rule.max_f(m))
        if rule_f < 0:
            rules[name] = {
                "f": None,
                "median_s": None,
                "ratio_to_mean": None,
                "skipped": f"m={m} is too small ({rule.breakdown})",
            }
            continue
        rules[name] = {"f": rule_f}
        actions[f"rule:{name}"] = functools.partial(rule, vectors, rule_f)

    pre: dict[str, dict[str, Any]] = {}
    pre_f = min(declared_f, m - 1)
    for name, spec in _PRE_SPECS.items():
        pre[name] = {"f": pre_f}
        actions[f"pre:{name}"] = functools.partial(get_pre(spec).apply, vectors, pre_f)

    medians = _interleaved_medians(actions, repeats)
    for key, seconds in medians.items():
        kind, name = key.split(":", 1)
        (rules if kind == "rule" else pre)[name]["median_s"] = seconds

    mean_seconds = rules["mean"]["median_s"]
    for entry in (*rules.values(), *pre.values()):
        if entry["median_s"] is not None:
            entry["ratio_to_mean"] = entry["median_s"] / mean_seconds
    return {
        "m": m,
        "d": d,
        "f": declared_f,
        "repeats": repeats,
        "threads": torch.get_num_threads(),
        "rules": rules,
        "pre": pre,
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
    for column in ("kind", "name", "f", "median s", "x mean"):
        table.add_column(column, justify="left" if column in ("kind", "name") else "right")
    for kind in ("rules", "pre"):
        for name, entry in result[kind].items():
            if entry["median_s"] is None:
                table.add_row(kind, name, "-", "-", entry.get("skipped", "-"))
                continue
            table.add_row(
                kind,
                name,
                str(entry["f"]),
                f"{entry['median_s']:.4f}",
                f"{entry['ratio_to_mean']:.1f}",
            )
    Console().print(table)


def _handle(args: argparse.Namespace) -> int:
    try:
        result = run_aggregation_bench(m=args.m, d=args.d, f=args.f, repeats=args.repeats)
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
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(func=_handle)


register = register_bench
