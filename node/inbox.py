"""Per-round message store that the round driver waits on, with deadlines.

Messages are keyed by (round, kind, cluster, sender). The first message from a sender for a key
wins; a second one is refused as a duplicate (and, if its payload differs, flagged as
equivocation), so replays cannot change what a node aggregates.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection

import numpy as np

from phalanx.node import clock
from phalanx.node.codec import Message

Key = tuple[int, int, int]  # (round, kind, cluster)


class DuplicateMessage(ValueError):
    """A sender already delivered a message for this (round, kind, cluster)."""

    def __init__(self, message: Message, equivocation: bool) -> None:
        self.equivocation = equivocation
        what = "equivocating" if equivocation else "duplicate"
        super().__init__(
            f"{what} {message.kind_name} from {message.sender} for round {message.round}"
        )


def _same_payload(a: Message, b: Message) -> bool:
    if a.tensors.keys() != b.tensors.keys() or dict(a.meta) != dict(b.meta):
        return False
    return all(np.array_equal(a.tensors[k], b.tensors[k]) for k in a.tensors)


class RoundInbox:
    """Holds accepted messages per round until the round driver consumes them."""

    def __init__(self) -> None:
        self._messages: dict[Key, dict[str, Message]] = {}
        self._changed = asyncio.Condition()
        self.unreachable: Callable[[], frozenset[str]] = frozenset
        """Senders not to wait for any longer (the failure detector's removed members)."""

    async def poke(self) -> None:
        """Wake every waiter to re-check (the set of unreachable senders changed)."""
        async with self._changed:
            self._changed.notify_all()

    async def put(self, message: Message) -> None:
        key = (message.round, message.kind, message.cluster)
        bucket = self._messages.setdefault(key, {})
        previous = bucket.get(message.sender)
        if previous is not None:
            raise DuplicateMessage(message, equivocation=not _same_payload(previous, message))
        bucket[message.sender] = message
        async with self._changed:
            self._changed.notify_all()

    def get(self, round_: int, kind: int, cluster: int = -1) -> dict[str, Message]:
        return dict(self._messages.get((round_, kind, cluster), {}))

    async def wait_for(
        self,
        round_: int,
        kind: int,
        cluster: int,
        expected: Collection[str],
        deadline: float,
    ) -> dict[str, Message]:
        """Messages from `expected` senders, once all arrived (or are `unreachable`) or at
        `deadline` (monotonic)."""
        wanted = set(expected)
        await self.wait_until(
            deadline,
            lambda: wanted - self.unreachable() <= self.get(round_, kind, cluster).keys(),
        )
        return self.get(round_, kind, cluster)

    async def wait_until(self, deadline: float, done: Callable[[], bool]) -> None:
        """Block until `done()` holds or the monotonic `deadline` passes."""
        async with self._changed:
            while not done():
                remaining = deadline - clock.now()
                if remaining <= 0:
                    return
                try:
                    await asyncio.wait_for(self._changed.wait(), timeout=remaining)
                except TimeoutError:
                    return

    def forget_before(self, round_: int) -> None:
        """Drop everything older than `round_` so memory stays bounded."""
        for key in [k for k in self._messages if k[0] < round_]:
            del self._messages[key]
