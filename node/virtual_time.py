"""A virtual clock for the memory engine: deadlines cost no wall time.

`VirtualTimeLoop` is an asyncio event loop whose `time()` is virtual. The clock stands still while
anything can run: a ready callback, or work handed to a thread (`run_in_executor`, and so
`asyncio.to_thread`: training, evaluation, large signature checks). Only when every coroutine
waits on a timer does the clock jump to the earliest one. So the peers compute in zero virtual
time, as if each had its own machine, and a deadline expires only because a message really is
not coming (a crash, omission, partition or delay), never because the simulating machine is
slow or loaded. This is the classic discrete-event scheme (next-event time advance), applied
to asyncio's timer heap.

It is also deterministic: when nothing else can run, the loop waits for every job in flight and
delivers their results in the order they were submitted, so the order in which threads happen
to finish (the machine's load) never changes what the peers do. Jobs submitted together still
run in parallel on the pool.

Every peer deadline reads the loop's clock (`node.clock.now`), so the same code runs on
real-time loops in the daemons.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import heapq
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any, TypeVar

T = TypeVar("T")

VIRTUAL_EPOCH_S = 1_000_000.0
"""Where every virtual clock starts: the same in every run, so that anything aligned to the
clock (paced rounds, SWIM periods) lines up the same way each time."""


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop on virtual time (see the module docstring)."""

    is_virtual = True

    def __init__(self) -> None:
        super().__init__()
        self._virtual_now = VIRTUAL_EPOCH_S
        self._jobs: list[tuple[concurrent.futures.Future[Any], asyncio.Future[Any]]] = []

    @property
    def computing(self) -> int:
        """Executor jobs whose results the loop has not delivered yet."""
        return len(self._jobs)

    def time(self) -> float:
        return self._virtual_now

    def run_in_executor(  # type: ignore[override]
        self, executor: Executor | None, func: Callable[..., T], *args: Any
    ) -> asyncio.Future[T]:
        if executor is None:
            executor = self._default_executor  # type: ignore[attr-defined,has-type]
            if executor is None:
                executor = self._default_executor = concurrent.futures.ThreadPoolExecutor()
        assert executor is not None
        job = executor.submit(func, *args)
        waiter: asyncio.Future[T] = self.create_future()
        self._jobs.append((job, waiter))
        return waiter

    def _deliver_jobs(self) -> None:
        """Wait for every job in flight, then hand their results to the loop in the order
        they were submitted: which thread finished first never changes what runs next."""
        jobs, self._jobs = self._jobs, []
        concurrent.futures.wait([job for job, _waiter in jobs])
        for job, waiter in jobs:
            if waiter.cancelled():
                continue
            error = job.exception()
            if error is not None:
                waiter.set_exception(error)
            else:
                waiter.set_result(job.result())

    def _run_once(self) -> None:
        ready: Any = self._ready  # type: ignore[attr-defined]
        scheduled: list[Any] = self._scheduled  # type: ignore[attr-defined]
        if not ready and not self._stopping:  # type: ignore[attr-defined]
            if self._jobs:
                self._deliver_jobs()
            else:
                while scheduled and scheduled[0]._cancelled:
                    self._timer_cancelled_count -= 1  # type: ignore[attr-defined]
                    heapq.heappop(scheduled)._scheduled = False
                if scheduled:
                    self._virtual_now = max(self._virtual_now, scheduled[0]._when)
        super()._run_once()  # type: ignore[misc]
