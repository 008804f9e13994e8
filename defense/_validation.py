"""Range checks shared by every defense: each failure names the field and its bound."""

from __future__ import annotations

import math


def require_finite(name: str, value: float) -> float:
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value}")
    return float(value)


def require_positive(name: str, value: float) -> float:
    """`value` > 0."""
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return float(value)


def require_non_negative(name: str, value: float) -> float:
    """`value` >= 0 (a noise level of zero is allowed: it means no noise)."""
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return float(value)


def require_delta(name: str, value: float) -> float:
    """A DP failure probability: 0 < delta < 1."""
    if not math.isfinite(value) or not 0 < value < 1:
        raise ValueError(f"{name} must be in (0, 1), got {value}")
    return float(value)


def require_rate(name: str, value: float) -> float:
    """A sampling rate: 0 < q <= 1."""
    if not math.isfinite(value) or not 0 < value <= 1:
        raise ValueError(f"{name} must be in (0, 1], got {value}")
    return float(value)


def require_fraction_below_one(name: str, value: float) -> float:
    """A fraction in [0, 1)."""
    if not math.isfinite(value) or not 0 <= value < 1:
        raise ValueError(f"{name} must be in [0, 1), got {value}")
    return float(value)


def require_int_at_least(name: str, value: int, minimum: int) -> int:
    if isinstance(value, bool) or int(value) != value or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")
    return int(value)
