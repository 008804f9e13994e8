"""Every inversion test runs as the attack commands do: one torch thread, deterministic kernels."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from phalanx.adversary.inversion.experiment import pinned_torch


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    with pinned_torch(1):
        yield
