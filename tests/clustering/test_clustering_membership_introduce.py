"""`SwimMember.introduce`: JOINs to configured peers a node has not heard of yet."""

from __future__ import annotations

from phalanx.clustering.identity import NodeIdentity
from phalanx.clustering.membership import MemberState, SwimMember


def _deliver(members: dict[str, SwimMember], outgoing: list, now: float) -> None:
    queue = list(outgoing)
    while queue:
        item = queue.pop(0)
        target = members.get(item.address)
        if target is not None:
            queue.extend(target.on_bytes(item.payload(), now))


def test_two_nodes_that_never_heard_of_each_other_meet_through_introduce() -> None:
    a = SwimMember(NodeIdentity.generate(), "10.0.0.1:1")
    b = SwimMember(NodeIdentity.generate(), "10.0.0.2:1")
    members = {"10.0.0.1:1": a, "10.0.0.2:1": b}
    assert a.view() == [a.self_id] and b.view() == [b.self_id]
    _deliver(members, a.introduce(["10.0.0.2:1", "10.0.0.1:1"]), now=1.0)
    assert b.members()[a.self_id].state is MemberState.ALIVE
    assert a.members()[b.self_id].state is MemberState.ALIVE
    # Known peers and our own address get no JOIN.
    assert a.introduce(["10.0.0.2:1", "10.0.0.1:1"]) == []
