"""A virtual clock for the memory engine: deadlines cost no wall time.

`VirtualTimeLoop` is an asyncio event loop whose `time()` is virtual. The clock stands still while
anything can run: a ready callback, or work handed to a thread (`run_in_executor`, and so
`asyncio.to_thread`: training, evaluation, large signature checks). Only when every coroutine
waits on a timer does the clock jump to the earliest one. So the peers compute in zero virtual
time, as if each had its own machine, and a deadline expires only because a message really is
not coming (a crash, omission, partition or delay), never because the simulating machine is
slow or loaded. This is the classic discrete-event scheme (next-event time advance), applied
to asyncio's timer heap.

Every peer deadline reads the loop's clock (`node.clock.now`), so the same code runs on
real-time loops in the daemons.
"""

from __future__ import annotations

import asyncio
import heapq
import selectors
import time
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any, TypeVar

T = TypeVar("T")


class _ComputeAwareSelector:
    """The loop's selector, blocking (instead of polling on a virtual timeout that cannot
    advance) while threads compute: their completion wakes the loop through its self-pipe."""

    def __init__(self, inner: selectors.BaseSelector, loop: VirtualTimeLoop) -> None:
        self._inner = inner
        self._loop = loop

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if self._loop.computing and timeout != 0:
            timeout = None
        return self._inner.select(timeout)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop on virtual time (see the module docstring)."""

    is_virtual = True

    def __init__(self) -> None:
        super().__init__()
        self._virtual_now = time.monotonic()
        self.computing = 0
        """Executor jobs in flight; the clock stands still while any is."""
        inner: selectors.BaseSelector = self._selector  # type: ignore[has-type]
        self._selector = _ComputeAwareSelector(inner, self)  # type: ignore[assignment]

    def time(self) -> float:
        return self._virtual_now

    def run_in_executor(  # type: ignore[override]
        self, executor: Executor | None, func: Callable[..., T], *args: Any
    ) -> asyncio.Future[T]:
        future = super().run_in_executor(executor, func, *args)
        self.computing += 1
        # Runs on the loop once the future is resolved, after the waiter's wake-up was queued.
        future.add_done_callback(self._computed)
        return future

    def _computed(self, _future: asyncio.Future[Any]) -> None:
        self.computing -= 1

    def _run_once(self) -> None:
        ready: Any = self._ready  # type: ignore[attr-defined]
        scheduled: list[Any] = self._scheduled  # type: ignore[attr-defined]
        if not ready and not self._stopping and not self.computing:  # type: ignore[attr-defined]
            while scheduled and scheduled[0]._cancelled:
                self._timer_cancelled_count -= 1  # type: ignore[attr-defined]
                heapq.heappop(scheduled)._scheduled = False
            if scheduled:
                self._virtual_now = max(self._virtual_now, scheduled[0]._when)
        super()._run_once()  # type: ignore[misc]
