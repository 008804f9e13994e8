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
from typing import Any

import torch

from phalanx.learning.aggregation import (
    AGGREGATION_RULES,
    PRE_AGGREGATORS,
    AggregationResult,
    Bulyan,
    CoordinateWiseMedian,
    TrimmedMean,
    get_pre,
    get_rule,
    pairwise_squared_distances,
)

__all__ = [
    "SORT_REFERENCE_RULES",
    "register",
    "register_bench",
    "run_aggregation_bench",
    "sort_reference",
]

# Columns per block of the reference's full sort (what the rules used before selection).
_SORT_CHUNK = 65536


def _sorted_columns(vectors: torch.Tensor) -> Any:
    """Yield ``(columns, values, rows)``: each column stably sorted, shape ``(chunk, m)``."""
    for start in range(0, vectors.shape[1], _SORT_CHUNK):
        columns = slice(start, min(start + _SORT_CHUNK, vectors.shape[1]))
        transposed = vectors[:, columns].T.contiguous().add_(0.0)  # -0.0 ties with +0.0
        values, rows = torch.sort(transposed, dim=1, stable=True)
        yield columns, values, rows


def _counts(rows: torch.Tensor, m: int) -> torch.Tensor:
    return torch.bincount(rows.reshape(-1).cpu(), minlength=m).to(torch.float64)


def _flag(counts: torch.Tensor, d: int, fraction: float) -> list[int]:
    return [int(i) for i in torch.nonzero(counts > fraction * d).flatten().tolist()]


def _median_by_sort(vectors: torch.Tensor, f: int, flag_fraction: float) -> AggregationResult:
    m, d = vectors.shape
    value = torch.empty(d, dtype=vectors.dtype)
    contribution = torch.zeros(m, dtype=torch.float64)
    extreme = torch.zeros(m, dtype=torch.float64)
    upper = m // 2
    for columns, values, rows in _sorted_columns(vectors):
        if m % 2:
            value[columns] = values[:, upper]
            contribution += _counts(rows[:, upper], m)
        else:
            value[columns] = (values[:, upper - 1] + values[:, upper]) / 2
            contribution += 0.5 * _counts(rows[:, upper - 1 : upper + 1], m)
        if f:
            extreme += _counts(rows[:, :f], m) + _counts(rows[:, m - f :], m)
    return AggregationResult(value, _flag(extreme, d, flag_fraction), contribution / d)


def _trimmed_mean_by_sort(
    vectors: torch.Tensor, trim: int, flag_fraction: float
) -> AggregationResult:
    m, d = vectors.shape
    value = torch.empty(d, dtype=vectors.dtype)
    contribution = torch.zeros(m, dtype=torch.float64)
    trimmed = torch.zeros(m, dtype=torch.float64)
    for columns, values, rows in _sorted_columns(vectors):
        value[columns] = values[:, trim : m - trim].mean(dim=1)
        contribution += _counts(rows[:, trim : m - trim], m)
        if trim:
            trimmed += _counts(rows[:, :trim], m) + _counts(rows[:, m - trim :], m)
    flagged = _flag(trimmed, d, flag_fraction)
    return AggregationResult(value, flagged, contribution / ((m - 2 * trim) * d))


def _bulyan_by_sort(vectors: torch.Tensor, f: int, flag_fraction: float) -> AggregationResult:
    m, d = vectors.shape
    theta, beta = m - 2 * f, m - 4 * f
    if theta == m:
        selected = list(range(m))
    else:
        selected = Bulyan._select(pairwise_squared_distances(vectors).cpu(), f, theta)
    selected_rows = torch.tensor(selected, dtype=torch.long)
    subset = vectors.index_select(0, selected_rows)
    value = torch.empty(d, dtype=vectors.dtype)
    contribution = torch.zeros(m, dtype=torch.float64)
    left_out = torch.zeros(m, dtype=torch.float64)
    upper = theta // 2
    for columns, values, _ in _sorted_columns(subset):
        if theta % 2:
            median = values[:, upper : upper + 1]
        else:
            median = (values[:, upper - 1 : upper] + values[:, upper : upper + 1]) / 2
        chunk = subset[:, columns].T
        closest = torch.sort((chunk - median).abs(), dim=1, stable=True).indices
        kept = closest[:, :beta]
        value[columns] = torch.gather(chunk, 1, kept).mean(dim=1)
        contribution += _counts(selected_rows[kept], m)
        left_out += _counts(selected_rows[closest[:, beta:]], m)
    not_selected = set(range(m)) - set(selected)
    flagged = sorted(not_selected | set(_flag(left_out, d, flag_fraction)))
    return AggregationResult(value, flagged, contribution / (beta * d))


SORT_REFERENCE_RULES = ("median", "trimmed-mean", "bulyan")


def sort_reference(name: str, vectors: torch.Tensor, f: int) -> AggregationResult:
    """The coordinate-wise rules as they were computed before selection: a stable sort of every
    column carrying row indices (CPU). The tests hold the rules to this bit for bit, and the
    bench times it against the current path. Default parameters (trim = f, flag_fraction 0.5).
    """
    if name == "median":
        return _median_by_sort(vectors, f, CoordinateWiseMedian().flag_fraction)
    if name == "trimmed-mean":
        return _trimmed_mean_by_sort(vectors, f, TrimmedMean().flag_fraction)
    if name == "bulyan":
        return _bulyan_by_sort(vectors, f, Bulyan().flag_fraction)
    raise ValueError(f"no sort reference for {name!r}; known: {', '.join(SORT_REFERENCE_RULES)}")


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
        actions[f"pre:{name}"] = functools.partial(get_pre(_PRE_SPECS[name]).apply, vectors, pre_f)

    reference: dict[str, dict[str, Any]] = {}
    for name in reference_names:
        reference_f = min(declared_f, get_rule(name).max_f(m))
        if reference_f >= 0:
            reference[name] = {"f": reference_f}
            actions[f"ref:{name}"] = functools.partial(sort_reference, name, vectors, reference_f)

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
