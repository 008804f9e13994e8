"""Means and Student-t confidence intervals over seeds."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class MeanCI:
    """Mean of `n` values and the half width of its two-sided `level` confidence interval."""

    mean: float
    half_width: float
    n: int

    def format(self, digits: int = 4) -> str:
        if self.n < 2 or math.isnan(self.half_width):
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} ± {self.half_width:.{digits}f}"


def mean_ci(values: Sequence[float], level: float = 0.95) -> MeanCI:
    """``mean ± t_{(1+level)/2, n-1} * s / sqrt(n)`` (Student 1908); NaN width for one value."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    data = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not data:
        raise ValueError("mean_ci needs at least one number")
    mean = statistics.fmean(data)
    if len(data) < 2:
        return MeanCI(mean, math.nan, len(data))
    from scipy.stats import t

    quantile = float(t.ppf((1 + level) / 2, len(data) - 1))
    return MeanCI(mean, quantile * statistics.stdev(data) / math.sqrt(len(data)), len(data))
