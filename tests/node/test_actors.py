"""Actors: bounded mailboxes, in-order handling, restarts by the supervisor."""

from __future__ import annotations

import asyncio

import pytest

from phalanx.node.actors import FunctionActor, MailboxFull, Supervisor


async def test_mailbox_is_bounded() -> None:
    async def never(_message: int) -> None:
        await asyncio.Event().wait()

    actor = FunctionActor("slow", never, mailbox_size=2)
    actor.tell(1)
    actor.tell(2)
    with pytest.raises(MailboxFull, match="slow mailbox full \\(2\\)"):
        actor.tell(3)


async def test_messages_are_handled_in_order_and_a_failure_restarts_the_actor() -> None:
    seen: list[int] = []
    restarts: list[str] = []

    async def handler(message: int) -> None:
        if message == 2:
            raise RuntimeError("poisoned message")
        seen.append(message)

    actor = FunctionActor("learner", handler, mailbox_size=10)
    supervisor = Supervisor(on_restart=lambda name, _error: restarts.append(name))
    supervisor.start(actor)
    for message in range(5):
        await actor.ask(message)
    await asyncio.wait_for(actor.mailbox.join(), timeout=5)
    assert seen == [0, 1, 3, 4]
    assert restarts == ["learner"] and supervisor.restarts["learner"] == 1
    assert supervisor.alive("learner")
    await supervisor.stop()
    assert not supervisor.alive("learner")


async def test_supervisor_gives_up_after_its_restart_budget() -> None:
    async def always_fails(_message: int) -> None:
        raise ValueError("broken")

    actor = FunctionActor("flaky", always_fails)
    supervisor = Supervisor(max_restarts=2)
    supervisor.start(actor)
    for message in range(3):
        actor.tell(message)
    for _ in range(100):
        if not supervisor.alive("flaky"):
            break
        await asyncio.sleep(0.01)
    assert not supervisor.alive("flaky")
    assert supervisor.restarts["flaky"] == 3
