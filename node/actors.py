"""A small actor runtime on asyncio: bounded mailboxes, one task per actor, a supervisor.

Each role (learner, aggregator, share-holder, membership) is an `Actor`: messages wait in a
bounded mailbox and one task handles them in arrival order, so a role never needs a lock. When a
handler raises, the `Supervisor` logs it and restarts the actor's loop (up to a restart budget),
keeping the mailbox, so one bad message cannot take a node down.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

log = logging.getLogger(__name__)

MessageT = TypeVar("MessageT")


class MailboxFull(RuntimeError):
    """The actor's mailbox is at capacity: the sender should back off."""


class Actor(Generic[MessageT]):
    """An object with a bounded mailbox whose `handle` runs one message at a time."""

    name: str = "actor"

    def __init__(self, mailbox_size: int = 1024) -> None:
        self.mailbox: asyncio.Queue[MessageT] = asyncio.Queue(maxsize=mailbox_size)
        self.handled = 0

    def tell(self, message: MessageT) -> None:
        """Enqueue without waiting; raises `MailboxFull` when the mailbox is at capacity."""
        try:
            self.mailbox.put_nowait(message)
        except asyncio.QueueFull:
            raise MailboxFull(f"{self.name} mailbox full ({self.mailbox.maxsize})") from None

    async def ask(self, message: MessageT) -> None:
        """Enqueue, waiting for room (back-pressure)."""
        await self.mailbox.put(message)

    async def handle(self, message: MessageT) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    async def run(self) -> None:
        """The actor's loop: take the next message, handle it, repeat."""
        while True:
            message = await self.mailbox.get()
            try:
                await self.handle(message)
                self.handled += 1
            finally:
                self.mailbox.task_done()


class FunctionActor(Actor[MessageT]):
    """An actor whose behaviour is a coroutine function, for roles that are one handler."""

    def __init__(
        self, name: str, handler: Callable[[MessageT], Awaitable[None]], mailbox_size: int = 1024
    ) -> None:
        super().__init__(mailbox_size)
        self.name = name
        self._handler = handler

    async def handle(self, message: MessageT) -> None:
        await self._handler(message)


class Supervisor:
    """Runs actors as tasks; logs and restarts an actor whose loop failed (one-for-one)."""

    def __init__(
        self,
        max_restarts: int = 100,
        on_restart: Callable[[str, BaseException], None] | None = None,
    ) -> None:
        self.max_restarts = max_restarts
        self.restarts: dict[str, int] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._on_restart = on_restart

    def start(self, actor: Actor[Any]) -> None:
        if actor.name in self._tasks:
            raise ValueError(f"actor {actor.name!r} already supervised")
        self.restarts[actor.name] = 0
        self._tasks[actor.name] = asyncio.create_task(self._supervise(actor), name=actor.name)

    async def _supervise(self, actor: Actor[Any]) -> None:
        while True:
            try:
                await actor.run()
                return
            except asyncio.CancelledError:
                raise
            except Exception as error:
                self.restarts[actor.name] += 1
                log.exception("actor %s failed (restart %d)", actor.name, self.restarts[actor.name])
                if self._on_restart is not None:
                    self._on_restart(actor.name, error)
                if self.restarts[actor.name] > self.max_restarts:
                    log.error(
                        "actor %s exceeded %d restarts; stopping it", actor.name, self.max_restarts
                    )
                    return

    def alive(self, name: str) -> bool:
        task = self._tasks.get(name)
        return task is not None and not task.done()

    async def stop(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        self._tasks.clear()
