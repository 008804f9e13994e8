"""Byzantine-robust aggregation rules and pre-aggregators over a stack of update vectors.

Every rule takes an ``(m, d)`` float tensor (one row per input: a cluster output, or an individual
update when there are no clusters) and a declared ``f``, the number of Byzantine rows it must
tolerate, and returns a ``(d,)`` tensor of the same dtype. A rule refuses an ``f`` beyond its
breakdown point with a ``ValueError`` naming the rule, ``f`` and ``m``.

``aggregate_with_report`` also says which rows the rule rejected or down-weighted
(:class:`AggregationResult`), so that the caller can raise trust suspicion for them.

Determinism: ties break in stable order (the lowest row index wins), through stable sorts,
``argmin``, or, for the coordinate-wise order statistics, by counting (:func:`_ranks_below` gives
the ranks a stable sort would); sums run in a fixed order, and pairwise distances accumulate in
float64 over fixed column chunks.
"""

from __future__ import annotations

import inspect
import math
import re
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

__all__ = [
    "AGGREGATION_RULES",
    "PRE_AGGREGATORS",
    "AdaptiveRobustClipping",
    "AggregationResult",
    "AggregationRule",
    "Bucketing",
    "Bulyan",
    "CenteredClipping",
    "ComposedRule",
    "CoordinateWiseMedian",
    "GeometricMedian",
    "Krum",
    "Mean",
    "MultiKrum",
    "NearestNeighbourMixing",
    "PreAggregation",
    "PreAggregator",
    "StaticClipping",
    "TrimmedMean",
    "aggregate",
    "aggregate_with_report",
    "compose",
    "get_pre",
    "get_rule",
    "pairwise_squared_distances",
    "parse_spec",
]

SpecValue = int | float | bool | str

# Column chunk for float64 Gram and norm accumulation: bounded memory at d = 1M, and a fixed
# chunking keeps the float64 summation order identical on every node.
_COLUMN_CHUNK = 65536
# Column block for the coordinate-wise order statistics (median, trimmed mean, Bulyan). Columns
# are independent there, so results do not depend on it; 4096 columns of m = 100 float32 rows
# (1.6 MB) stay in cache between the sort and the comparisons that follow it.
_ORDER_CHUNK = 4096
# Order statistics of CPU tensors run in numpy (its sort, partition and counting are vectorised);
# other devices, or False here, use the same steps in torch.
_NUMPY_ORDER = True


@dataclass(frozen=True)
class AggregationResult:
    """Output of a rule with its report.

    value: the ``(d,)`` aggregate, same dtype as the input rows.
    flagged: ascending indices of input rows the rule rejected or strongly down-weighted.
    weights: ``(m,)`` float64, the share of the output each input row accounts for (sums to 1;
        for coordinate-wise rules, averaged over coordinates).
    """

    value: torch.Tensor
    flagged: list[int]
    weights: torch.Tensor


# --------------------------------------------------------------------------------------------
# Spec parsing and parameter checks
# --------------------------------------------------------------------------------------------

_SPEC_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")
_INT_LITERAL = re.compile(r"^[+-]?\d+$")


def _parse_spec_value(text: str) -> SpecValue:
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if _INT_LITERAL.match(text):
        return int(text)
    try:
        number = float(text)
    except ValueError:
        return text
    if math.isnan(number):
        raise ValueError(f"parameter value {text!r} is not a number")
    return number


def parse_spec(spec: str) -> tuple[str, dict[str, SpecValue]]:
    """Parse ``NAME[:k=v,k=v]`` into the name and a dict of int/float/bool/str values.

    >>> parse_spec("trimmed-mean:trim=3")
    ('trimmed-mean', {'trim': 3})
    """
    name, _, rest = spec.strip().partition(":")
    name = name.strip()
    if not _SPEC_NAME.match(name):
        raise ValueError(f"spec {spec!r}: expected NAME[:key=value,...], got name {name!r}")
    params: dict[str, SpecValue] = {}
    if rest.strip():
        for item in rest.split(","):
            key, sep, value = item.partition("=")
            key, value = key.strip(), value.strip()
            if not sep or not key or not value:
                raise ValueError(f"spec {spec!r}: parameter {item!r} is not key=value")
            if key in params:
                raise ValueError(f"spec {spec!r}: parameter {key!r} given twice")
            params[key] = _parse_spec_value(value)
    return name, params


def _split_name(name_or_spec: str, params: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    name, spec_params = parse_spec(name_or_spec)
    clash = sorted(set(spec_params) & set(params))
    if clash:
        raise ValueError(
            f"{name_or_spec!r}: parameters {clash} given both in the spec and as keywords"
        )
    return name, {**spec_params, **params}


def _construct(
    kind: str, registry: Mapping[str, type[Any]], name: str, params: dict[str, Any]
) -> Any:
    if name not in registry:
        raise ValueError(f"unknown {kind} {name!r}; known: {', '.join(sorted(registry))}")
    cls = registry[name]
    allowed = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {unknown} for {kind} {name!r}; allowed: {allowed or 'none'}"
        )
    return cls(**params)


def _float_param(
    owner: str, key: str, value: Any, *, low: float = 0.0, low_open: bool = True
) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{owner}: parameter {key!r} must be a number, got {value!r}")
    number = float(value)
    if math.isnan(number) or number < low or (low_open and number == low) or math.isinf(number):
        bound = f"> {low}" if low_open else f">= {low}"
        raise ValueError(f"{owner}: parameter {key!r} must be finite and {bound}, got {value!r}")
    return number


def _int_param(owner: str, key: str, value: Any, *, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{owner}: parameter {key!r} must be an integer, got {value!r}")
    if value < low:
        raise ValueError(f"{owner}: parameter {key!r} must be >= {low}, got {value}")
    return value


def _fraction_param(owner: str, key: str, value: Any) -> float:
    number = _float_param(owner, key, value, low=0.0, low_open=False)
    if number > 1.0:
        raise ValueError(f"{owner}: parameter {key!r} must be in [0, 1], got {value!r}")
    return number


# --------------------------------------------------------------------------------------------
# Input checks and shared numerics
# --------------------------------------------------------------------------------------------


def _check_vectors(vectors: Any, owner: str) -> torch.Tensor:
    if not isinstance(vectors, torch.Tensor):
        raise ValueError(f"{owner}: vectors must be a torch.Tensor, got {type(vectors).__name__}")
    if vectors.ndim != 2 or vectors.shape[0] < 1 or vectors.shape[1] < 1:
        raise ValueError(
            f"{owner}: vectors must have shape (m, d) with m, d >= 1, got {tuple(vectors.shape)}"
        )
    if vectors.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"{owner}: vectors must be float32 or float64, got {vectors.dtype}")
    # One reduction pass: a NaN or inf anywhere in a row makes its sum non-finite.
    row_sums = vectors.sum(dim=1)
    bad_rows = torch.nonzero(~torch.isfinite(row_sums)).flatten().tolist()
    if bad_rows:
        raise ValueError(
            f"{owner}: rows {bad_rows} contain NaN or inf (or overflow {vectors.dtype} when "
            "summed); drop them before aggregating"
        )
    return vectors


def _check_f(f: Any, owner: str) -> int:
    if isinstance(f, bool) or not isinstance(f, int) or f < 0:
        raise ValueError(f"{owner}: f must be a non-negative integer, got {f!r}")
    return f


def _check_weights(weights: Any, m: int, owner: str) -> torch.Tensor | None:
    """Return the weights normalised to sum 1 in float64, or None when none were given."""
    if weights is None:
        return None
    w = torch.as_tensor(weights, dtype=torch.float64).detach().cpu()
    if w.shape != (m,):
        raise ValueError(f"{owner}: weights must have shape ({m},), got {tuple(w.shape)}")
    if not bool(torch.isfinite(w).all()) or bool((w <= 0).any()):
        raise ValueError(f"{owner}: weights must be finite and > 0, got {w.tolist()}")
    return w / w.sum()


def _is_uniform(weights: torch.Tensor | None) -> bool:
    return weights is None or bool((weights == weights[0]).all())


def _column_chunks(vectors: torch.Tensor) -> Iterator[tuple[slice, torch.Tensor]]:
    d = vectors.shape[1]
    for start in range(0, d, _COLUMN_CHUNK):
        columns = slice(start, min(start + _COLUMN_CHUNK, d))
        yield columns, vectors[:, columns]


def _centered_gram(vectors: torch.Tensor) -> torch.Tensor:
    """Gram matrix of the rows after removing the column means, accumulated in float64.

    Centering leaves pairwise distances unchanged and avoids the cancellation of
    ``|a|^2 + |b|^2 - 2 a.b`` when all rows share a large common component. The center is the
    column mean rounded to 8 significant bits: as good for conditioning, and on inputs that lie
    on a coarse grid (small integers, short binary fractions) every product and sum stays exact,
    so distances that are equal by construction compare equal and ties break by index.
    """
    m = vectors.shape[0]
    gram = torch.zeros(m, m, dtype=torch.float64, device=vectors.device)
    for _, chunk in _column_chunks(vectors):
        block = chunk.to(torch.float64)
        mantissa, exponent = torch.frexp(block.mean(dim=0, keepdim=True))
        center = torch.ldexp(torch.round(mantissa * 256.0) / 256.0, exponent.to(torch.float64))
        block = block - center
        gram += block @ block.T
    return gram


def _gram_to_squared_distances(gram: torch.Tensor) -> torch.Tensor:
    diagonal = torch.diagonal(gram)
    squared = (diagonal[:, None] + diagonal[None, :] - 2.0 * gram).clamp_min(0.0)
    squared = 0.5 * (squared + squared.T)  # exact symmetry whatever the BLAS rounding
    squared.fill_diagonal_(0.0)
    return squared


def pairwise_squared_distances(vectors: torch.Tensor) -> torch.Tensor:
    """``(m, m)`` float64 matrix of squared Euclidean distances between the rows (Gram trick)."""
    return _gram_to_squared_distances(_centered_gram(vectors))


def _numpy_backed(tensor: torch.Tensor) -> bool:
    return _NUMPY_ORDER and tensor.device.type == "cpu"


def _ordered_column_blocks(
    vectors: torch.Tensor,
) -> Iterator[tuple[slice, torch.Tensor, torch.Tensor]]:
    """Yield ``(columns, raw, ordered)`` per block of columns.

    raw: the ``(m, c)`` block as given; ordered: ``(c, m)``, each column's values sorted
    ascending (+0.0 turns -0.0 into +0.0 first, so signed zeros tie like the equal numbers they
    are). Only values are sorted, not row indices: on CPU numpy's vectorised sort of a
    contiguous block, several times faster than a stable sort that carries indices. Which row
    holds which rank is recovered by comparisons (:func:`_ranks_below`).
    """
    source = vectors.detach()
    array = source.numpy() if _numpy_backed(source) else None
    d = source.shape[1]
    for start in range(0, d, _ORDER_CHUNK):
        columns = slice(start, min(start + _ORDER_CHUNK, d))
        raw = source[:, columns]
        if array is None:
            ordered = torch.sort(raw.T.contiguous().add_(0.0), dim=1).values
        else:
            block = np.empty((raw.shape[1], raw.shape[0]), dtype=array.dtype)
            np.add(array[:, columns].T, 0.0, out=block)  # transposed copy, sorted in place
            block.sort(axis=1)
            ordered = torch.from_numpy(block)
        yield columns, raw, ordered


def _ranks_below(raw: torch.Tensor, ordered: torch.Tensor, k: int) -> torch.Tensor:
    """``(m,)`` float64: per row, the number of columns where its stable rank is below k.

    The stable rank of ``raw[i, j]`` is its position in column j sorted ascending with ties in
    row order (what a stable sort gives). Rows below ``ordered[j, k]`` rank below k; when
    ``ordered[j, k - 1]`` equals it, a tie straddles rank k and its first ``k - #below`` rows
    (lowest index first) rank below k too.
    """
    if _numpy_backed(raw):
        return torch.from_numpy(_ranks_below_numpy(raw.numpy(), ordered.numpy(), k))
    m, c = raw.shape
    if k <= 0 or k >= m:
        return torch.full((m,), 0.0 if k <= 0 else float(c), dtype=torch.float64)
    threshold = ordered[:, k]
    counts = (raw < threshold).sum(dim=1)
    straddling = torch.nonzero(ordered[:, k - 1] == threshold).flatten()
    if straddling.numel():
        block, value = raw[:, straddling], threshold[straddling]
        equal = block == value
        missing = k - (block < value).sum(dim=0)
        place = torch.cumsum(equal, dim=0)  # 1-based place of each row among the equal ones
        counts += (equal & (place <= missing)).sum(dim=1)
    return counts.to(device="cpu", dtype=torch.float64)


def _ranks_below_numpy(raw: np.ndarray, ordered: np.ndarray, k: int) -> np.ndarray:
    """:func:`_ranks_below` on numpy arrays."""
    m, c = raw.shape
    if k <= 0 or k >= m:
        return np.full(m, 0.0 if k <= 0 else float(c))
    threshold = np.ascontiguousarray(ordered[:, k])  # a strided operand slows the comparison
    # a uint8 sum along the row counts several times faster than np.count_nonzero(axis=1)
    counts = (raw < threshold).view(np.uint8).sum(axis=1, dtype=np.int64)
    straddling = np.flatnonzero(ordered[:, k - 1] == threshold)
    if straddling.size:
        block, value = raw[:, straddling], threshold[straddling]
        equal = block == value
        missing = k - np.count_nonzero(block < value, axis=0)
        place = np.cumsum(equal, axis=0)
        counts += np.count_nonzero(equal & (place <= missing), axis=1)
    return counts.astype(np.float64)


def _rows_at_rank(raw: torch.Tensor, ordered: torch.Tensor, k: int) -> torch.Tensor:
    """``(m,)`` float64: per row, the number of columns where its stable rank is exactly k.

    The same counts as ``_ranks_below(k + 1) - _ranks_below(k)``, one comparison pass fewer
    when ties are rare: where ``ordered[j, k]`` differs from both neighbours, the one row equal
    to it holds rank k; only the other columns take the difference.
    """
    if not _numpy_backed(raw):
        return _ranks_below(raw, ordered, k + 1) - _ranks_below(raw, ordered, k)
    x, columns = raw.numpy(), ordered.numpy()
    m = x.shape[0]
    value = np.ascontiguousarray(columns[:, k])
    counts = (x == value).view(np.uint8).sum(axis=1, dtype=np.int64).astype(np.float64)
    tied = np.zeros(value.shape, dtype=bool)
    if k > 0:
        tied |= columns[:, k - 1] == value
    if k + 1 < m:
        tied |= columns[:, k + 1] == value
    straddling = np.flatnonzero(tied)
    if straddling.size:
        block, sub = x[:, straddling], columns[straddling]
        counts -= np.count_nonzero(block == value[straddling], axis=1)
        counts += _ranks_below_numpy(block, sub, k + 1) - _ranks_below_numpy(block, sub, k)
    return torch.from_numpy(counts)


def _stable_smallest(values: torch.Tensor, k: int) -> torch.Tensor:
    """``(c, k)`` int64: per row of ``values`` (c, n), the columns of its k smallest entries in
    stable order (ascending value, lower column first among ties), as
    ``torch.sort(values, dim=1, stable=True).indices[:, :k]`` would give them.

    On CPU: select the k-th smallest value with ``np.partition``, take the entries below it and
    as many of the entries equal to it as needed (lowest column first), then order only those k.
    """
    n = values.shape[1]
    if k >= n or not _numpy_backed(values):
        return torch.sort(values, dim=1, stable=True).indices[:, :k]
    array = np.ascontiguousarray(values.numpy())
    kth = np.partition(array, k - 1, axis=1)[:, k - 1 : k]
    below = array < kth
    equal = array == kth
    missing = k - np.count_nonzero(below, axis=1)
    surplus = np.nonzero(np.count_nonzero(equal, axis=1) > missing)[0]
    chosen = below | equal
    if surplus.size:
        ties = equal[surplus]
        first = np.cumsum(ties, axis=1) <= missing[surplus, None]
        chosen[surplus] = below[surplus] | (ties & first)
    columns = np.nonzero(chosen)[1].reshape(array.shape[0], k)  # ascending within each row
    order = np.argsort(np.take_along_axis(array, columns, axis=1), axis=1, kind="stable")
    return torch.from_numpy(np.take_along_axis(columns, order, axis=1))


def _row_distances(vectors: torch.Tensor, center: torch.Tensor | None) -> torch.Tensor:
    """``|x_i - center|`` for every row (``|x_i|`` when center is None), accumulated in float64."""
    squared = torch.zeros(vectors.shape[0], dtype=torch.float64, device=vectors.device)
    for columns, chunk in _column_chunks(vectors):
        block = chunk if center is None else chunk - center[columns]
        # torch's cascaded sum keeps each chunk's total accurate; chunks add up in float64
        squared += (block * block).sum(dim=1).to(torch.float64)
    return squared.sqrt().cpu()


def _row_counts(rows: torch.Tensor, m: int) -> torch.Tensor:
    return torch.bincount(rows.reshape(-1).cpu(), minlength=m).to(torch.float64)


def _flag_by_fraction(excluded_counts: torch.Tensor, d: int, fraction: float) -> list[int]:
    return [int(i) for i in torch.nonzero(excluded_counts > fraction * d).flatten().tolist()]


def chance_corrected_flag_fraction(dropped_per_coordinate: int, m: int) -> float:
    """The default flagging threshold of the coordinate-wise rules: halfway between chance and
    always, ``(1 + q) / 2`` with ``q = dropped_per_coordinate / m``.

    A coordinate-wise rule drops (or marks as extreme) ``dropped_per_coordinate`` of the m rows
    in every coordinate, so among exchangeable honest rows each one is dropped in a fraction q of
    the coordinates on average. A fixed threshold below q flags every row: the median with
    f = 4 of m = 10 marks 8 rows extreme per coordinate, and a threshold of 1/2 would flag all
    10 clusters in every round, so group testing (`clustering.trust`) would suspect everyone.
    """
    return (1.0 + dropped_per_coordinate / m) / 2.0


def _optional_fraction_param(owner: str, key: str, value: Any) -> float | None:
    return None if value is None else _fraction_param(owner, key, value)


def _flag_threshold(configured: float | None, dropped_per_coordinate: int, m: int) -> float:
    """The configured ``flag_fraction``, else `chance_corrected_flag_fraction`."""
    if configured is not None:
        return configured
    return chance_corrected_flag_fraction(dropped_per_coordinate, m)


def _flag_by_relative_weight(
    weights: torch.Tensor, reference: torch.Tensor, below: float
) -> list[int]:
    return [int(i) for i in torch.nonzero(weights < below * reference).flatten().tolist()]


def _krum_scores(squared: torch.Tensor, f: int) -> torch.Tensor:
    """Blanchard et al. 2017: score(i) = sum of |x_i - x_j|^2 over its m - f - 2 nearest others."""
    m = squared.shape[0]
    neighbours = max(m - f - 2, 1)
    others = squared.clone()
    others.fill_diagonal_(math.inf)
    nearest = torch.sort(others, dim=1, stable=True).values[:, :neighbours]
    return nearest.sum(dim=1)


def _mean_of_rows(vectors: torch.Tensor, rows: Sequence[int]) -> torch.Tensor:
    index = torch.tensor(sorted(rows), dtype=torch.long, device=vectors.device)
    return vectors.index_select(0, index).mean(dim=0)


def _one_hot_weights(m: int, rows: Sequence[int]) -> torch.Tensor:
    weights = torch.zeros(m, dtype=torch.float64)
    weights[list(rows)] = 1.0 / len(rows)
    return weights


def _others(m: int, kept: Sequence[int]) -> list[int]:
    kept_set = set(kept)
    return [i for i in range(m) if i not in kept_set]


# --------------------------------------------------------------------------------------------
# Rules
# --------------------------------------------------------------------------------------------


class AggregationRule(ABC):
    """A robust aggregation rule: ``rule(vectors (m, d), f, weights=None) -> (d,)``.

    Subclasses set ``name``, ``breakdown`` (the condition on m and f, in words) and implement
    ``max_f`` and ``_aggregate``. ``supports_weights`` says whether non-uniform per-row weights
    (e.g. cluster sizes) change the result; rules without it refuse non-uniform weights.
    """

    name: ClassVar[str]
    breakdown: ClassVar[str]
    supports_weights: ClassVar[bool] = False

    @abstractmethod
    def max_f(self, m: int) -> int:
        """Largest f this rule tolerates among m rows (negative when m is too small for any f)."""

    @abstractmethod
    def _aggregate(
        self, vectors: torch.Tensor, f: int, weights: torch.Tensor | None
    ) -> AggregationResult: ...

    def check_f(self, m: int, f: int) -> None:
        """Raise ValueError unless ``0 <= f <= max_f(m)``."""
        limit = self.max_f(m)
        if limit < 0:
            raise ValueError(
                f"aggregation rule {self.name!r} cannot run on m={m} rows ({self.breakdown}); "
                f"got f={f}"
            )
        if f > limit:
            raise ValueError(
                f"aggregation rule {self.name!r} tolerates at most f={limit} Byzantine rows out of "
                f"m={m} ({self.breakdown}); got f={f}"
            )

    def aggregate_with_report(
        self, vectors: torch.Tensor, f: int, weights: Any = None
    ) -> AggregationResult:
        """Aggregate and report the rejected or down-weighted rows."""
        x = _check_vectors(vectors, f"aggregation rule {self.name!r}")
        m = x.shape[0]
        f = _check_f(f, f"aggregation rule {self.name!r}")
        self.check_f(m, f)
        w = _check_weights(weights, m, f"aggregation rule {self.name!r}")
        if not self.supports_weights and not _is_uniform(w):
            raise ValueError(
                f"aggregation rule {self.name!r} does not use per-row weights; got non-uniform "
                f"weights (supported by: {', '.join(_weighted_rule_names())})"
            )
        return self._aggregate(x, f, w if self.supports_weights else None)

    def __call__(self, vectors: torch.Tensor, f: int, weights: Any = None) -> torch.Tensor:
        return self.aggregate_with_report(vectors, f, weights).value

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class Mean(AggregationRule):
    """Arithmetic (optionally weighted) mean, FedAvg: ``sum_i w_i x_i``.

    Breakdown point 0: one Byzantine row moves it arbitrarily far, so only f = 0 is accepted.
    Use it as the undefended baseline with f = 0.
    """

    name = "mean"
    breakdown = "breakdown point 0: needs f = 0"
    supports_weights = True

    def max_f(self, m: int) -> int:
        return 0

    def _aggregate(
        self, vectors: torch.Tensor, f: int, weights: torch.Tensor | None
    ) -> AggregationResult:
        m = vectors.shape[0]
        if weights is None:
            return AggregationResult(
                vectors.mean(dim=0), [], torch.full((m,), 1.0 / m, dtype=torch.float64)
            )
        value = weights.to(device=vectors.device, dtype=vectors.dtype) @ vectors
        return AggregationResult(value, [], weights.clone())


class CoordinateWiseMedian(AggregationRule):
    """Coordinate-wise median (Yin et al. 2018): ``out_j = median_i x_ij``.

    For even m the two middle values are averaged. Breakdown point 1/2: needs m > 2f.
    Report: a row is flagged when it is among the f smallest or f largest values (stable order,
    lowest index first among ties) in more than ``flag_fraction`` of the coordinates; by default
    halfway between chance (2f/m) and always (`chance_corrected_flag_fraction`).
    """

    name = "median"
    breakdown = "breakdown point 1/2: needs m > 2f"

    def __init__(self, flag_fraction: float | None = None) -> None:
        self.flag_fraction = _optional_fraction_param(self.name, "flag_fraction", flag_fraction)

    def max_f(self, m: int) -> int:
        return (m - 1) // 2

    def _aggregate(
        self, vectors: torch.Tensor, f: int, weights: torch.Tensor | None
    ) -> AggregationResult:
        m, d = vectors.shape
        value = torch.empty(d, dtype=vectors.dtype, device=vectors.device)
        contribution = torch.zeros(m, dtype=torch.float64)
        extreme = torch.zeros(m, dtype=torch.float64)
        upper = m // 2
        for columns, raw, ordered in _ordered_column_blocks(vectors):
            if m % 2:
                value[columns] = ordered[:, upper]
                contribution += _rows_at_rank(raw, ordered, upper)
            else:
                value[columns] = (ordered[:, upper - 1] + ordered[:, upper]) / 2
                contribution += 0.5 * (
                    _ranks_below(raw, ordered, upper + 1) - _ranks_below(raw, ordered, upper - 1)
                )
            if f:
                outside = raw.shape[1] - _ranks_below(raw, ordered, m - f)
                extreme += _ranks_below(raw, ordered, f) + outside
        flagged = _flag_by_fraction(extreme, d, _flag_threshold(self.flag_fraction, 2 * f, m))
        return AggregationResult(value, flagged, contribution / d)


class TrimmedMean(AggregationRule):
    """Coordinate-wise trimmed mean (Yin et al. 2018).

    For each coordinate, drop the ``trim`` smallest and ``trim`` largest values and average the
    remaining ``m - 2 trim``: ``out_j = mean(sorted(x_.j)[trim : m - trim])``. ``trim`` defaults
    to f and must be >= f. Breakdown point 1/2: needs m > 2 trim >= 2f.
    Report: rows trimmed in more than ``flag_fraction`` of the coordinates are flagged; by default
    halfway between chance (2 trim / m) and always (`chance_corrected_flag_fraction`).
    """

    name = "trimmed-mean"
    breakdown = "breakdown point 1/2: needs m > 2f"

    def __init__(self, trim: int | None = None, flag_fraction: float | None = None) -> None:
        self.trim = None if trim is None else _int_param(self.name, "trim", trim, low=0)
        self.flag_fraction = _optional_fraction_param(self.name, "flag_fraction", flag_fraction)

    def max_f(self, m: int) -> int:
        limit = (m - 1) // 2
        return limit if self.trim is None else min(limit, self.trim)

    def _aggregate(
        self, vectors: torch.Tensor, f: int, weights: torch.Tensor | None
    ) -> AggregationResult:
        m, d = vectors.shape
        trim = f if self.trim is None else self.trim
        if 2 * trim >= m:
            raise ValueError(
                f"aggregation rule {self.name!r}: trim={trim} leaves nothing of m={m} rows "
                f"(needs m > 2 trim); f={f}"
            )
        kept = m - 2 * trim
        value = torch.empty(d, dtype=vectors.dtype, device=vectors.device)
        contribution = torch.zeros(m, dtype=torch.float64)
        for columns, raw, ordered in _ordered_column_blocks(vectors):
            # the kept values in ascending order, so the float sum runs in a fixed order
            value[columns] = ordered[:, trim : m - trim].mean(dim=1)
            contribution += _ranks_below(raw, ordered, m - trim) - _ranks_below(raw, ordered, trim)
        threshold = _flag_threshold(self.flag_fraction, 2 * trim, m)
        flagged = _flag_by_fraction(d - contribution, d, threshold)
        return AggregationResult(value, flagged, contribution / (kept * d))


class Krum(AggregationRule):
    """Krum (Blanchard et al. 2017): return the row with the lowest score.

    ``score(i) = sum of |x_i - x_j|^2 over the m - f - 2 rows j != i closest to x_i``; ties go to
    the lowest index. Needs m > 2f + 2 (so m - f - 2 > f). Report: every other row is flagged.
    """

    name = "krum"
    breakdown = "needs m > 2f + 2"

    def max_f(self, m: int) -> int:
        return (m - 3) // 2

    def _aggregate(
        self, vectors: torch.Tensor, f: int, weights: torch.Tensor | None
    ) -> AggregationResult:
        m = vectors.shape[0]
        scores = _krum_scores(pairwise_squared_distances(vectors), f)
        best = int(torch.argmin(scores))  # first minimum: lowest index wins ties
        value = vectors[best].clone()
        return AggregationResult(value, _others(m, [best]), _one_hot_weights(m, [best]))


class MultiKrum(AggregationRule):
    """Multi-Krum (Blanchard et al. 2017): average the ``q`` rows with the lowest Krum scores.

    Scores are computed once on all rows (as in the paper); ``q`` defaults to m - f and must be
    in [1, m - f]; ties in score go to the lowest index. Needs m > 2f + 2.
    Report: the rows not selected are flagged.
    """

    name = "multi-krum"
    breakdown = "needs m > 2f + 2"

    def __init__(self, q: int | None = None) -> None:
        self.q = None if q is None else _int_param(self.name, "q", q, low=1)

    def max_f(self, m: int) -> int:
        return (m - 3) // 2

    def _aggregate(
        self, vectors: torch.Tensor, f: int, weights: torch.Tensor | None
    ) -> AggregationResult:
        m = vectors.shape[0]
        selected_count = m - f if self.q is None else self.q
        if selected_count > m - f:
            raise ValueError(
                f"aggregation rule {self.name!r}: q={selected_count} must be <= m - f = {m - f} "
                f"(m={m}, f={f})"
            )
        scores = _krum_scores(pairwise_squared_distances(vectors), f)
        order = torch.sort(scores, stable=True).indices[:selected_count]
        selected = sorted(int(i) for i in order.tolist())
        value = _mean_of_rows(vectors, selected)
        return AggregationResult(value, _others(m, selected), _one_hot_weights(m, selected))


class GeometricMedian(AggregationRule):
    """Geometric median by smoothed Weiszfeld iterations (Pillutla et al. 2022, RFA).

    Minimises ``sum_i a_i |v - x_i|`` with ``a_i`` the per-row weights (uniform by default):
    ``v <- sum_i b_i x_i / sum_i b_i`` with ``b_i = a_i / max(nu, |v - x_i|)``, starting from the
    weighted mean and stopping when the objective changes by at most ``ftol`` (relative) or after
    ``max_iter`` steps. Since ``v`` stays a convex combination of the rows, all iterations run
    on the ``(m, m)`` Gram matrix and only the final combination touches d.
    Breakdown point 1/2: needs m > 2f. Report: rows whose final Weiszfeld weight is below
    ``flag_below`` times their prior weight ``a_i`` are flagged.
    """

    name = "geometric-median"
    breakdown = "breakdown point 1/2: needs m > 2f"
    supports_weights = True

    def __init__(
        self,
        nu: float = 1e-6,
        max_iter: int = 1000,
        ftol: float = 1e-12,
        flag_below: float = 0.5,
    ) -> None:
        self.nu = _float_param(self.name, "nu", nu)
        self.max_iter = _int_param(self.name, "max_iter", max_iter, low=1)
        self.ftol = _float_param(self.name, "ftol", ftol, low_open=False)
        self.flag_below = _float_param(self.name, "flag_below", flag_below, low_open=False)

    def max_f(self, m: int) -> int:
        return (m - 1) // 2

    @staticmethod
    def _distances(gram: torch.Tensor, coefficients: torch.Tensor) -> torch.Tensor:
        projected = gram @ coefficients
        squared = coefficients @ projected - 2.0 * projected + torch.diagonal(gram)
        return squared.clamp_min(0.0).sqrt()

    def _aggregate(
        self, vectors: torch.Tensor, f: int, weights: torch.Tensor | None
    ) -> AggregationResult:
        m = vectors.shape[0]
        prior = torch.full((m,), 1.0 / m, dtype=torch.float64) if weights is None else weights
        gram = _centered_gram(vectors).cpu()
        coefficients = prior.clone()
        distances = self._distances(gram, coefficients)
        objective = float(prior @ distances)
        for _ in range(self.max_iter):
            inverse = prior / distances.clamp_min(self.nu)
            coefficients = inverse / inverse.sum()
            distances = self._distances(gram, coefficients)
            new_objective = float(prior @ distances)
            converged = abs(objective - new_objective) <= self.ftol * max(new_objective, 1e-300)
            objective = new_objective
            if converged:
                break
        value = coefficients.to(device=vectors.device, dtype=vectors.dtype) @ vectors
        flagged = _flag_by_relative_weight(coefficients, prior, self.flag_below)
        return AggregationResult(value, flagged, coefficients)


class CenteredClipping(AggregationRule):
    """Centered clipping (Karimireddy, He & Jaggi, ICML 2021, "Learning from History for
    Byzantine Robust Optimization", the CC rule of their Algorithm 2).

    One step: ``v <- v + sum_i a_i (x_i - v) min(1, tau / |x_i - v|)`` with ``a_i`` the per-row
    weights (1/m in the paper), repeated ``iterations`` times (the paper's l).

    Where the first step starts:

    * ``carry_center=True``, the paper's rule: from the previous round's aggregate. The rule
      object keeps each output as the centre of its next call, so one object must serve all
      rounds (``get_rule("centered-clipping:carry_center=true")`` once, then call it every
      round); ``center`` is the first round's centre (zeros when None) and the attribute
      ``rule.center`` the current one (set it to None to restart from zero).
    * ``carry_center=False`` (default): every call starts from ``center`` as given, zeros when
      None, and no call depends on an earlier one. From zero this is not the paper's rule but a
      norm-clipped mean of the rows, refined by ``iterations`` re-centred steps.

    ``radius`` is tau; when None it is the lower median of ``|x_i - v_0|`` over the rows (a
    scale-free choice of this implementation, robust while m > 2f; the paper fixes tau).
    Breakdown: bounded influence needs an honest majority, m > 2f.
    Report: rows whose final clipping factor is below ``flag_below`` are flagged; ``weights`` are
    the normalised ``a_i * factor_i``.
    """

    name = "centered-clipping"
    breakdown = "needs an honest majority, m > 2f"
    supports_weights = True

    def __init__(
        self,
        radius: float | None = None,
        iterations: int = 3,
        center: torch.Tensor | None = None,
        carry_center: bool = False,
        flag_below: float = 0.5,
    ) -> None:
        self.radius = None if radius is None else _float_param(self.name, "radius", radius)
        self.iterations = _int_param(self.name, "iterations", iterations, low=1)
        if center is not None and (not isinstance(center, torch.Tensor) or center.ndim != 1):
            raise ValueError(f"{self.name}: center must be a 1-D tensor, got {center!r}")
        self.center = center
        if not isinstance(carry_center, bool):
            raise ValueError(
                f"{self.name}: carry_center must be true or false, got {carry_center!r}"
            )
        self.carry_center = carry_center
        self.flag_below = _fraction_param(self.name, "flag_below", flag_below)

    def max_f(self, m: int) -> int:
        return (m - 1) // 2

    def _aggregate(
        self, vectors: torch.Tensor, f: int, weights: torch.Tensor | None
    ) -> AggregationResult:
        m, d = vectors.shape
        prior = torch.full((m,), 1.0 / m, dtype=torch.float64) if weights is None else weights
        if self.center is None:
            center = torch.zeros(d, dtype=vectors.dtype, device=vectors.device)
        else:
            if self.center.shape != (d,):
                raise ValueError(
                    f"{self.name}: center has shape {tuple(self.center.shape)}, expected ({d},)"
                )
            center = self.center.to(device=vectors.device, dtype=vectors.dtype)
        distances = _row_distances(vectors, None if self.center is None else center)
        radius = (
            float(torch.sort(distances).values[(m - 1) // 2])
            if self.radius is None
            else self.radius
        )
        factors = torch.ones(m, dtype=torch.float64)
        for iteration in range(self.iterations):
            if iteration:
                distances = _row_distances(vectors, center)
            factors = torch.where(
                distances > radius, radius / distances.clamp_min(1e-300), torch.ones_like(distances)
            )
            step = prior * factors
            # v + sum_i s_i (x_i - v) = (1 - sum_i s_i) v + sum_i s_i x_i
            center = (1.0 - float(step.sum())) * center + step.to(
                device=vectors.device, dtype=vectors.dtype
            ) @ vectors
        influence = prior * factors
        total = float(influence.sum())
        report_weights = influence / total if total > 0 else prior.clone()
        flagged = _flag_by_relative_weight(
            factors, torch.ones(m, dtype=torch.float64), self.flag_below
        )
        if self.carry_center:
            self.center = center.detach().clone()
        return AggregationResult(center, flagged, report_weights)


class Bulyan(AggregationRule):
    """Bulyan (El Mhamdi et al. 2018) on top of Krum.

    1. Select theta = m - 2f rows by repeatedly taking the Krum winner of the remaining rows
       (each time with at least one neighbour in the score; lowest index wins ties).
    2. For each coordinate, average the beta = theta - 2f selected values closest to their
       median (stable order: lower row index first among equal distances).

    Needs m >= 4f + 3. Report: rows not selected in step 1, and rows left out of step 2 in more
    than ``flag_fraction`` of the coordinates, are flagged; by default halfway between chance
    (2f / theta) and always (`chance_corrected_flag_fraction`).
    """

    name = "bulyan"
    breakdown = "needs m >= 4f + 3"

    def __init__(self, flag_fraction: float | None = None) -> None:
        self.flag_fraction = _optional_fraction_param(self.name, "flag_fraction", flag_fraction)

    def max_f(self, m: int) -> int:
        return (m - 3) // 4

    @staticmethod
    def _select(squared: torch.Tensor, f: int, count: int) -> list[int]:
        remaining = list(range(squared.shape[0]))
        selected: list[int] = []
        while len(selected) < count:
            index = torch.tensor(remaining, dtype=torch.long)
            scores = _krum_scores(squared[index][:, index], f)
            winner = remaining[int(torch.argmin(scores))]
            selected.append(winner)
            remaining.remove(winner)
        return sorted(selected)

    def _aggregate(
        self, vectors: torch.Tensor, f: int, weights: torch.Tensor | None
    ) -> AggregationResult:
        m, d = vectors.shape
        theta = m - 2 * f
        beta = theta - 2 * f
        if theta == m:
            selected = list(range(m))
        else:
            selected = self._select(pairwise_squared_distances(vectors).cpu(), f, theta)
        selected_rows = torch.tensor(selected, dtype=torch.long)
        subset = vectors.index_select(0, selected_rows.to(vectors.device))
        value = torch.empty(d, dtype=vectors.dtype, device=vectors.device)
        contribution = torch.zeros(m, dtype=torch.float64)
        upper = theta // 2
        for columns, raw, ordered in _ordered_column_blocks(subset):
            if theta % 2:
                median = ordered[:, upper : upper + 1]
            else:
                median = (ordered[:, upper - 1 : upper] + ordered[:, upper : upper + 1]) / 2
            chunk = raw.T  # (chunk, theta), rows in ascending original index
            kept = _stable_smallest((chunk - median).abs(), beta).to(chunk.device)
            # the kept values in order of distance, so the float sum runs in a fixed order
            value[columns] = torch.gather(chunk, 1, kept).mean(dim=1)
            contribution += _row_counts(selected_rows[kept.cpu()], m)
        left_out = torch.zeros(m, dtype=torch.float64)
        left_out[selected_rows] = d - contribution[selected_rows]
        threshold = _flag_threshold(self.flag_fraction, theta - beta, theta)
        flagged_rows = set(_others(m, selected)) | set(_flag_by_fraction(left_out, d, threshold))
        return AggregationResult(value, sorted(flagged_rows), contribution / (beta * d))


# --------------------------------------------------------------------------------------------
# Pre-aggregators
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PreAggregation:
    """Output of a pre-aggregator.

    vectors: ``(m', d)`` rows handed to the next stage; f: the Byzantine count among them.
    weights: normalised ``(m',)`` float64 per-row weights, or None for unweighted.
    share: ``(m', m)`` row-stochastic float64; ``share[j, i]`` is the part of output row j that
        input row i accounts for (used to attribute the final weights to input rows).
    origin: for each output row, the ascending input rows it stands for (used to attribute flags).
    """

    vectors: torch.Tensor
    f: int
    weights: torch.Tensor | None
    share: torch.Tensor
    origin: list[list[int]]


class PreAggregator(ABC):
    """Transforms the rows before a rule, e.g. to reduce heterogeneity."""

    name: ClassVar[str]

    def output_rows(self, m: int) -> int:
        """Number of rows this pre-aggregator outputs for m input rows."""
        return m

    @abstractmethod
    def _apply(
        self, vectors: torch.Tensor, f: int, weights: torch.Tensor | None
    ) -> PreAggregation: ...

    def apply(self, vectors: torch.Tensor, f: int, weights: Any = None) -> PreAggregation:
        owner = f"pre-aggregator {self.name!r}"
        x = _check_vectors(vectors, owner)
        f = _check_f(f, owner)
        if f >= x.shape[0]:
            raise ValueError(f"{owner}: f={f} must be < m={x.shape[0]}")
        return self._apply(x, f, _check_weights(weights, x.shape[0], owner))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class NearestNeighbourMixing(PreAggregator):
    """Nearest-neighbour mixing, NNM (Allouah et al. 2023, "Fixing by Mixing").

    Each row becomes the average of its m - f nearest rows, itself included:
    ``y_i = mean_{j in N_i} x_j``; distance ties go to the lowest index. Keeps m and f.
    Non-uniform weights are refused.
    """

    name = "nnm"

    def _apply(self, vectors: torch.Tensor, f: int, weights: torch.Tensor | None) -> PreAggregation:
        m = vectors.shape[0]
        if not _is_uniform(weights):
            raise ValueError(f"pre-aggregator {self.name!r} does not support non-uniform weights")
        squared = pairwise_squared_distances(vectors).cpu()
        squared.fill_diagonal_(-1.0)  # a row is always its own nearest neighbour
        neighbours = torch.sort(squared, dim=1, stable=True).indices[:, : m - f]
        share = torch.zeros(m, m, dtype=torch.float64)
        share.scatter_(1, neighbours, 1.0 / (m - f))
        mixed = share.to(device=vectors.device, dtype=vectors.dtype) @ vectors
        return PreAggregation(mixed, f, weights, share, [[i] for i in range(m)])


class Bucketing(PreAggregator):
    """Bucketing (Karimireddy et al. 2022, "Byzantine-robust learning on heterogeneous data").

    Shuffle the rows with a permutation seeded by ``seed`` and average consecutive groups of
    ``bucket_size`` (the last group may be smaller): ceil(m / s) rows out. Each Byzantine row
    lands in one bucket, so f stays f. With weights, buckets take weighted means and their
    weight is the sum of their members' weights.
    """

    name = "bucketing"

    def __init__(self, bucket_size: int = 2, seed: int = 0) -> None:
        self.bucket_size = _int_param(self.name, "bucket_size", bucket_size, low=1)
        self.seed = _int_param(self.name, "seed", seed, low=0)

    def output_rows(self, m: int) -> int:
        return -(-m // self.bucket_size)

    def _apply(self, vectors: torch.Tensor, f: int, weights: torch.Tensor | None) -> PreAggregation:
        m = vectors.shape[0]
        generator = torch.Generator().manual_seed(self.seed)
        permutation = torch.randperm(m, generator=generator).tolist()
        buckets = [
            sorted(permutation[start : start + self.bucket_size])
            for start in range(0, m, self.bucket_size)
        ]
        share = torch.zeros(len(buckets), m, dtype=torch.float64)
        bucket_weights = torch.zeros(len(buckets), dtype=torch.float64)
        for j, members in enumerate(buckets):
            if weights is None:
                share[j, members] = 1.0 / len(members)
            else:
                member_weights = weights[members]
                share[j, members] = member_weights / member_weights.sum()
                bucket_weights[j] = member_weights.sum()
        if weights is None:
            rows = torch.stack([_mean_of_rows(vectors, members) for members in buckets])
            out_weights = None
        else:
            rows = share.to(device=vectors.device, dtype=vectors.dtype) @ vectors
            out_weights = bucket_weights / bucket_weights.sum()
        return PreAggregation(rows, min(f, len(buckets)), out_weights, share, buckets)


class StaticClipping(PreAggregator):
    """Static norm clipping: ``y_i = x_i * min(1, threshold / |x_i|)``. Keeps m, f and weights."""

    name = "clip"

    def __init__(self, threshold: float | None = None) -> None:
        if threshold is None:
            raise ValueError(f"pre-aggregator {self.name!r} needs threshold=<positive number>")
        self.threshold = _float_param(self.name, "threshold", threshold)

    def _apply(self, vectors: torch.Tensor, f: int, weights: torch.Tensor | None) -> PreAggregation:
        m = vectors.shape[0]
        norms = _row_distances(vectors, None)
        factors = torch.where(
            norms > self.threshold, self.threshold / norms.clamp_min(1e-300), torch.ones_like(norms)
        )
        clipped = vectors * factors.to(dtype=vectors.dtype)[:, None]
        share = torch.eye(m, dtype=torch.float64)
        return PreAggregation(clipped, f, weights, share, [[i] for i in range(m)])


class AdaptiveRobustClipping(PreAggregator):
    """ARC, adaptive robust clipping (Allouah, Guerraoui, Gupta, Jellouli, Rizk & Stephan,
    "Adaptive Gradient Clipping for Robust Federated Learning", ICLR 2025; arXiv 2405.14432,
    first titled "Boosting Robustness by Clipping Gradients in Distributed Learning").

    With the rows ordered by norm, ``|x_(1)| >= ... >= |x_(m)|``, clip the
    ``k = floor(2 (f / m) (m - f))`` largest to the norm of the next one:
    ``y_i = x_i min(1, C / |x_i|)`` with ``C = |x_(k+1)|`` (the paper's Algorithm 1). k is
    computed in integers, ``(2 f (m - f)) // m``; rows tied with ``x_(k+1)`` keep their norm
    whichever of them the order puts first. Keeps m, f and weights.
    """

    name = "arc"

    @staticmethod
    def clipped_count(m: int, f: int) -> int:
        """k = floor(2 (f / m) (m - f)): how many of the m rows ARC clips."""
        return (2 * f * (m - f)) // m

    def _apply(self, vectors: torch.Tensor, f: int, weights: torch.Tensor | None) -> PreAggregation:
        m = vectors.shape[0]
        norms = _row_distances(vectors, None)
        k = self.clipped_count(m, f)
        threshold = torch.sort(norms, descending=True).values[k]
        factors = torch.where(
            norms > threshold, threshold / norms.clamp_min(1e-300), torch.ones_like(norms)
        )
        clipped = vectors * factors.to(device=vectors.device, dtype=vectors.dtype)[:, None]
        share = torch.eye(m, dtype=torch.float64)
        return PreAggregation(clipped, f, weights, share, [[i] for i in range(m)])


class ComposedRule(AggregationRule):
    """Pre-aggregators applied in order, then a rule; flags and weights map back to input rows.

    An output row flagged by the rule flags every input row it stands for (a bucket flags all its
    members; NNM and clipping keep row identity).
    """

    breakdown = "the inner rule's bound, on the rows the pre-aggregators output"

    def __init__(self, rule: AggregationRule, pres: Sequence[PreAggregator]) -> None:
        self.rule = rule
        self.pres = list(pres)
        self.name = "+".join([p.name for p in self.pres] + [rule.name])  # type: ignore[misc]
        self.supports_weights = rule.supports_weights or any(  # type: ignore[misc]
            isinstance(p, Bucketing) for p in self.pres
        )

    def _rows_after_pres(self, m: int) -> int:
        for pre in self.pres:
            m = pre.output_rows(m)
        return m

    def max_f(self, m: int) -> int:
        return self.rule.max_f(self._rows_after_pres(m))

    def check_f(self, m: int, f: int) -> None:
        if f > self.max_f(m):
            inner_m = self._rows_after_pres(m)
            raise ValueError(
                f"aggregation rule {self.name!r} tolerates at most f={self.max_f(m)} Byzantine "
                f"rows out of m={m}: the pre-aggregators leave {inner_m} rows and "
                f"{self.rule.name!r} {self.rule.breakdown}; got f={f}"
            )

    def aggregate_with_report(
        self, vectors: torch.Tensor, f: int, weights: Any = None
    ) -> AggregationResult:
        x = _check_vectors(vectors, f"aggregation rule {self.name!r}")
        m = x.shape[0]
        f = _check_f(f, f"aggregation rule {self.name!r}")
        self.check_f(m, f)
        w = _check_weights(weights, m, f"aggregation rule {self.name!r}")
        share = torch.eye(m, dtype=torch.float64)
        origin = [[i] for i in range(m)]
        current, current_f = x, f
        for pre in self.pres:
            stage = pre.apply(current, current_f, w)
            share = stage.share @ share
            origin = [sorted({i for k in rows for i in origin[k]}) for rows in stage.origin]
            current, current_f, w = stage.vectors, stage.f, stage.weights
        inner = self.rule.aggregate_with_report(current, current_f, w)
        flagged = sorted({i for j in inner.flagged for i in origin[j]})
        return AggregationResult(inner.value, flagged, inner.weights @ share)

    def _aggregate(
        self, vectors: torch.Tensor, f: int, weights: torch.Tensor | None
    ) -> AggregationResult:  # pragma: no cover - aggregate_with_report is overridden
        raise NotImplementedError


# --------------------------------------------------------------------------------------------
# Registries
# --------------------------------------------------------------------------------------------

AGGREGATION_RULES: dict[str, type[AggregationRule]] = {
    cls.name: cls
    for cls in (
        Mean,
        CoordinateWiseMedian,
        TrimmedMean,
        Krum,
        MultiKrum,
        GeometricMedian,
        CenteredClipping,
        Bulyan,
    )
}

PRE_AGGREGATORS: dict[str, type[PreAggregator]] = {
    cls.name: cls
    for cls in (NearestNeighbourMixing, Bucketing, StaticClipping, AdaptiveRobustClipping)
}


def _weighted_rule_names() -> list[str]:
    return [name for name, cls in AGGREGATION_RULES.items() if cls.supports_weights]


PreSpec = PreAggregator | str
PreSpecs = PreSpec | Sequence[PreSpec] | None


def get_pre(name: str, **params: Any) -> PreAggregator:
    """Build a pre-aggregator from a name or ``NAME:k=v`` spec: ``get_pre("clip:threshold=5")``."""
    base, merged = _split_name(name, params)
    pre: PreAggregator = _construct("pre-aggregator", PRE_AGGREGATORS, base, merged)
    return pre


def _as_pres(pre: PreSpecs) -> list[PreAggregator]:
    if pre is None:
        return []
    items: Sequence[PreSpec] = [pre] if isinstance(pre, PreAggregator | str) else pre
    return [item if isinstance(item, PreAggregator) else get_pre(item) for item in items]


def compose(rule: AggregationRule | str, pre: PreSpecs) -> AggregationRule:
    """Rule preceded by pre-aggregators (names, specs or objects), applied in the given order."""
    inner = rule if isinstance(rule, AggregationRule) else get_rule(rule)
    pres = _as_pres(pre)
    return ComposedRule(inner, pres) if pres else inner


def get_rule(name: str, *, pre: PreSpecs = None, **params: Any) -> AggregationRule:
    """Build a rule from a name or ``NAME:k=v`` spec, optionally preceded by pre-aggregators.

    >>> get_rule("trimmed-mean", pre=["clip:threshold=5", "nnm"]).name
    'clip+nnm+trimmed-mean'
    """
    base, merged = _split_name(name, params)
    rule: AggregationRule = _construct("aggregation rule", AGGREGATION_RULES, base, merged)
    return compose(rule, pre)


def aggregate_with_report(
    name: str,
    vectors: torch.Tensor,
    f: int,
    weights: Any = None,
    *,
    pre: PreSpecs = None,
    **params: Any,
) -> AggregationResult:
    """Aggregate with the named rule and report rejected or down-weighted input rows."""
    return get_rule(name, pre=pre, **params).aggregate_with_report(vectors, f, weights)


def aggregate(
    name: str,
    vectors: torch.Tensor,
    f: int,
    weights: Any = None,
    *,
    pre: PreSpecs = None,
    **params: Any,
) -> torch.Tensor:
    """Aggregate ``(m, d)`` rows with the named rule, tolerating f Byzantine rows; ``(d,)`` out."""
    return aggregate_with_report(name, vectors, f, weights, pre=pre, **params).value
