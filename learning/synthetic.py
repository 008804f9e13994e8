"""The fixed synthetic update of ``training.mode = "synthetic"``.

With no training and no evaluation a round measures the protocol alone, as Flower's benchmark
client does by returning a fixed array. Each node's update is the same in every round and is
drawn from the scenario seed and the node's index only, so a benchmark can compute the exact
aggregate any set of nodes should produce (`expected_mean`). The values are multiples of 2^-8 in
[-0.5, 0.5): exactly representable in float32 and in every fixed-point encoding with at least 8
fractional bits, so a secure sum of them is exact and equals the plaintext sum.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np

STEP_BITS = 8
"""The update's coordinates are integers times 2^-STEP_BITS."""


def synthetic_seed(seed: int, node_index: int) -> int:
    digest = hashlib.sha256(f"phalanx-synthetic:{seed}:{node_index}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def synthetic_update(seed: int, node_index: int, dim: int) -> np.ndarray:
    """Node `node_index`'s fixed float32 update of `dim` coordinates (index in the sorted view)."""
    rng = np.random.default_rng(synthetic_seed(seed, node_index))
    half = 1 << (STEP_BITS - 1)
    steps = rng.integers(-half, half, size=dim, dtype=np.int32)
    return (steps.astype(np.float32) * np.float32(2.0**-STEP_BITS)).astype(np.float32)


def expected_sum(seed: int, node_indices: Iterable[int], dim: int) -> np.ndarray:
    """The exact float64 sum of the given nodes' synthetic updates."""
    total = np.zeros(dim, dtype=np.float64)
    for index in node_indices:
        total += synthetic_update(seed, index, dim)
    return total


def probe_indices(dim: int, count: int = 16) -> list[int]:
    """Coordinates a round record reports (`peer`'s ``synthetic_probe``): spread over the vector."""
    if dim <= count:
        return list(range(dim))
    return sorted({round(i * (dim - 1) / (count - 1)) for i in range(count)})
