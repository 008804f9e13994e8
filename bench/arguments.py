"""Argument types shared by the ``phalanx bench`` commands."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def int_list(low: int, high: int | None = None) -> Callable[[str], list[int]]:
    """An argparse type: comma-separated integers, each in ``low..high`` (no upper bound when
    `high` is None); anything else is a one-line usage error."""
    bounds = f">= {low}" if high is None else f"in {low}..{high}"

    def parse(text: str) -> list[int]:
        try:
            values = [int(v) for v in text.split(",") if v]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated integers, got {text!r}"
            ) from None
        if not values or min(values) < low or (high is not None and max(values) > high):
            raise argparse.ArgumentTypeError(f"values must be {bounds}, got {text!r}")
        return values

    return parse
