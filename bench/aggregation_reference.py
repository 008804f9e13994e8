"""The sort-based path of the coordinate-wise rules, kept as the tests' bit-for-bit reference.

Before selection, ``median``, ``trimmed-mean`` and ``bulyan`` stably sorted every column with its
row indices (CPU); `sort_reference` computes them that way. ``phalanx bench aggregation
--sort-reference`` times it against the current path (`bench.bench_aggregation`, which imports
this module only when it runs, so that its ``--help`` loads no torch).
"""

from __future__ import annotations

from typing import Any

import torch

from phalanx.bench.bench_aggregation import SORT_REFERENCE_RULES
from phalanx.learning.aggregation import (
    AggregationResult,
    Bulyan,
    chance_corrected_flag_fraction,
    pairwise_squared_distances,
)

__all__ = ["SORT_REFERENCE_RULES", "sort_reference"]

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


def sort_reference(name: str, vectors: torch.Tensor, f: int) -> AggregationResult:
    """The coordinate-wise rules as they were computed before selection: a stable sort of every
    column carrying row indices (CPU). The tests hold the rules to this bit for bit, and the
    bench times it against the current path. Default parameters (trim = f, the default
    chance-corrected flagging threshold `chance_corrected_flag_fraction`).
    """
    m = vectors.shape[0]
    if name == "median":
        return _median_by_sort(vectors, f, chance_corrected_flag_fraction(2 * f, m))
    if name == "trimmed-mean":
        return _trimmed_mean_by_sort(vectors, f, chance_corrected_flag_fraction(2 * f, m))
    if name == "bulyan":
        return _bulyan_by_sort(vectors, f, chance_corrected_flag_fraction(2 * f, m - 2 * f))
    raise ValueError(f"no sort reference for {name!r}; known: {', '.join(SORT_REFERENCE_RULES)}")
