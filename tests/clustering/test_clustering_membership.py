"""SWIM membership: convergence, failure detection, partitions, restarts, leave, bad input."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from phalanx.clustering.identity import (
    BadSignatureError,
    NodeIdentity,
    NodeIdMismatchError,
    NotAllowedError,
)
from phalanx.clustering.membership import (
    PROTO_KIND_NAMES,
    ForgedUpdateError,
    JoinRateLimitedError,
    MalformedMessageError,
    MembershipMessage,
    MemberState,
    MemberUpdate,
    MessageKind,
    ReplayedMessageError,
    StaleMessageError,
    SwimConfig,
    SwimMember,
    TokenBucket,
    WrongEpochError,
    WrongRecipientError,
    signed_claim,
    view_digest,
)
from phalanx.clustering.membership_sim import SimNetwork, deterministic_identity

N = 8
ALL = range(N)


def converged(size: int = N, seed: int = 1, **kwargs: object) -> SimNetwork:
    net = SimNetwork(size, seed=seed, **kwargs)  # type: ignore[arg-type]
    assert net.run_until(lambda: net.views_equal(range(size), range(size)), 30.0)
    return net


def others(*excluded: int) -> list[int]:
    return [index for index in ALL if index not in excluded]


def states_seen(net: SimNetwork, index: int) -> list[MemberState]:
    """States that other nodes recorded for node `index`, in the order they happened."""
    return [event.state for _, event in net.events if event.node_id == net.ids[index]]


# ------------------------------------------------------------------------------ the protocol


@pytest.mark.parametrize("loss", [0.0, 0.1])
def test_all_members_converge_to_the_same_view_after_joining(loss: float) -> None:
    net = SimNetwork(N, seed=3, loss=loss)
    assert net.views_equal(ALL, []) is False  # before any message, nobody knows the others
    assert net.run_until(lambda: net.views_equal(ALL, ALL), 30.0)
    assert net.rejections == []


def test_crashed_node_is_suspected_then_removed_within_the_expected_periods() -> None:
    config = SwimConfig()
    net = converged()
    crashed_at = net.now
    net.crash(3)
    assert net.run_until(lambda: net.views_equal(others(3), others(3)), 60.0)
    removal_delay = net.now - crashed_at
    period = config.protocol_period
    # Round-robin probing reaches 3 within 2n - 1 periods; then one period to suspect, the
    # suspicion timeout, and a few periods of gossip for the slowest node.
    bound = (2 * (N - 1) + 1) * period + config.suspicion_timeout(N) + 4 * period
    assert config.suspicion_timeout(N) <= removal_delay <= bound
    seen = states_seen(net, 3)
    assert MemberState.SUSPECT in seen and MemberState.DEAD in seen
    assert seen.index(MemberState.SUSPECT) < seen.index(MemberState.DEAD)


def test_indirect_probes_keep_a_node_whose_direct_link_fails() -> None:
    def suspicions_of_node_2(indirect_probes: int) -> int:
        config = SwimConfig(indirect_probes=indirect_probes)
        net = converged(config=config)
        before = len(net.events)
        net.block_link(1, 2)
        net.run(20.0)
        return sum(
            1
            for _, event in net.events[before:]
            if event.node_id == net.ids[2] and event.state is MemberState.SUSPECT
        )

    assert suspicions_of_node_2(indirect_probes=3) == 0
    assert suspicions_of_node_2(indirect_probes=0) > 0


def test_partitioned_node_is_removed_and_readmitted_after_the_partition_heals() -> None:
    net = converged()
    incarnation_before = net.nodes[5].incarnation  # type: ignore[union-attr]
    net.partition([5])
    assert net.run_until(
        lambda: net.views_equal(others(5), others(5)) and net.views_equal([5], [5]), 60.0
    )
    net.heal()
    assert net.run_until(lambda: net.views_equal(ALL, ALL), 60.0)
    readmitted = net.nodes[0].members()[net.ids[5]]  # type: ignore[union-attr]
    assert readmitted.state is MemberState.ALIVE
    assert readmitted.incarnation > incarnation_before


def test_two_halves_of_a_split_network_merge_after_healing() -> None:
    net = converged()
    left, right = [0, 1, 2, 3], [4, 5, 6, 7]
    net.partition(left, right)
    assert net.run_until(
        lambda: net.views_equal(left, left) and net.views_equal(right, right), 60.0
    )
    net.heal()  # neither half is alone, so only the reconnect pings to dead members can merge
    assert net.run_until(lambda: net.views_equal(ALL, ALL), 60.0)


@pytest.mark.parametrize("wait_for_removal", [True, False])
def test_restarted_node_rejoins_with_a_higher_incarnation(wait_for_removal: bool) -> None:
    net = converged()
    old = net.nodes[0].members()[net.ids[2]].incarnation  # type: ignore[union-attr]
    net.crash(2)
    if wait_for_removal:
        assert net.run_until(lambda: net.views_equal(others(2), others(2)), 60.0)
    restarted = net.start(2)  # fresh state, incarnation 0: it learns its old one from a seed
    assert restarted.incarnation == 0
    assert net.run_until(lambda: net.views_equal(ALL, ALL), 30.0)
    assert restarted.incarnation > old
    net.run(5 * net.config.protocol_period)  # let the last incarnation bump spread
    for index in others(2):
        assert net.nodes[index].members()[net.ids[2]].incarnation == restarted.incarnation  # type: ignore[union-attr]


@pytest.mark.parametrize("closed", [True, False])
def test_death_of_a_listed_member_never_met_is_kept_and_undone_by_its_restart(
    sender: NodeIdentity, closed: bool
) -> None:
    """A node that had not met member 2 before 2 crashed hears "2 is dead" from member 1. With
    an allow-list (2 is an expected peer) it keeps the news, as an event its owner sees: the
    testbed node that waited 20 s for a crashed peer's cluster output in CI was such a node.
    With open membership a rumour about a stranger is dropped. A restart of 2 (an Alive claim
    at a higher incarnation) readmits it."""
    me, stranger = deterministic_identity(SEED, 0), deterministic_identity(SEED, 2)
    allow = frozenset({me.node_id, sender.node_id, stranger.node_id}) if closed else None
    receiver = SwimMember(me, "sim://0", config=SwimConfig(allow_list=allow), rng_seed=1)
    rumour = MemberUpdate(stranger.node_id, MemberState.DEAD, 0)
    receiver.on_message(
        make_message(sender, MessageKind.PING, recipient=me.node_id, sequence=1, updates=(rumour,)),
        0.0,
    )
    events = [(e.node_id, e.state) for e in receiver.drain_events()]
    if not closed:
        assert stranger.node_id not in receiver.members()
        assert (stranger.node_id, MemberState.DEAD) not in events
        return
    assert receiver.members()[stranger.node_id].state is MemberState.DEAD
    assert (stranger.node_id, MemberState.DEAD) in events
    assert stranger.node_id not in receiver.view()
    assert receiver.address_of(stranger.node_id) is None  # nothing to probe or reconnect to
    assert receiver.public_key_of(stranger.node_id) is None
    # A stale Alive claim from before the crash does not undo the death; a restart does.
    for sequence, incarnation in ((2, 0), (3, 1)):
        claim = signed_claim(stranger, MemberState.ALIVE, incarnation, "sim://2", 0)
        receiver.on_message(
            make_message(
                sender, MessageKind.PING, recipient=me.node_id, sequence=sequence, updates=(claim,)
            ),
            1.0,
        )
    assert receiver.members()[stranger.node_id].state is MemberState.ALIVE
    assert receiver.members()[stranger.node_id].incarnation == 1
    assert receiver.address_of(stranger.node_id) == "sim://2"


def test_graceful_leave_removes_the_node_promptly_without_suspicion() -> None:
    config = SwimConfig()
    net = converged()
    before = len(net.events)
    net.leave(4)
    assert net.run_until(lambda: net.views_equal(others(4), others(4)), config.protocol_period)
    about_4 = [e.state for _, e in net.events[before:] if e.node_id == net.ids[4]]
    assert set(about_4) == {MemberState.LEFT}


def test_false_suspicion_by_a_liar_is_refuted_with_a_higher_incarnation() -> None:
    net = converged()
    victim = net.ids[2]
    old = net.nodes[0].members()[victim].incarnation  # type: ignore[union-attr]
    liar = net.identities[7]
    lie = make_message(
        liar,
        MessageKind.PING,
        recipient=net.ids[1],
        sequence=10**6,
        updates=(MemberUpdate(victim, MemberState.DEAD, old),),
    )
    net.inject(1, lie.to_bytes())
    assert victim not in net.view_of(1)  # the lie is believed at first ...
    assert net.run_until(lambda: net.views_equal(ALL, ALL), 30.0)  # ... then refuted
    assert net.nodes[1].members()[victim].incarnation > old  # type: ignore[union-attr]


def test_dissemination_stops_after_the_retransmit_limit() -> None:
    config = SwimConfig()
    assert config.retransmit_limit(N) == math.ceil(config.retransmit_multiplier * math.log(N + 1))
    net = converged()
    net.run(config.retransmit_limit(N) * 3 * config.protocol_period)
    assert [net.nodes[i].pending_updates() for i in ALL] == [0] * N  # type: ignore[union-attr]


def test_runs_are_deterministic_under_a_seed() -> None:
    def run(seed: int) -> tuple[str, list[str]]:
        net = SimNetwork(6, seed=seed, loss=0.05)
        net.run(5.0)
        net.crash(4)
        net.run(15.0)
        return net.trace.hexdigest(), net.view_of(0)

    assert run(11) == run(11)
    assert run(11)[0] != run(12)[0]


def test_round_snapshot_is_frozen_agreed_and_waits_for_new_members_to_settle() -> None:
    config = SwimConfig()
    net = converged()
    net.run(config.settle_periods * config.protocol_period)
    snapshots = {net.nodes[i].snapshot_for_round(5, net.now) for i in ALL}  # type: ignore[union-attr]
    assert snapshots == {tuple(net.ids_of(ALL))}
    net.crash(6)
    assert net.run_until(lambda: net.views_equal(others(6), others(6)), 60.0)
    assert net.nodes[0].snapshot_for_round(5, net.now) == tuple(net.ids_of(ALL))  # type: ignore[union-attr]
    round_6 = {net.nodes[i].snapshot_for_round(6, net.now) for i in others(6)}  # type: ignore[union-attr]
    assert round_6 == {tuple(net.ids_of(others(6)))}
    net.start(6)
    assert net.run_until(lambda: net.views_equal(ALL, ALL), 30.0)
    assert net.ids[6] not in net.nodes[0].snapshot_for_round(7, net.now)  # type: ignore[union-attr]
    net.run((config.settle_periods + 1) * config.protocol_period)
    round_8 = {net.nodes[i].snapshot_for_round(8, net.now) for i in ALL}  # type: ignore[union-attr]
    assert round_8 == {tuple(net.ids_of(ALL))}
    assert view_digest(net.ids_of(ALL)) == view_digest(reversed(net.ids_of(ALL)))


# ------------------------------------------------------------------------------ bad input

SEED = 5


@pytest.fixture()
def receiver() -> SwimMember:
    return SwimMember(deterministic_identity(SEED, 0), "sim://0", rng_seed=1)


@pytest.fixture()
def sender() -> NodeIdentity:
    return deterministic_identity(SEED, 1)


def make_message(
    identity: NodeIdentity,
    kind: MessageKind,
    *,
    recipient: str,
    sequence: int,
    incarnation: int = 0,
    epoch: int = 0,
    updates: tuple[MemberUpdate, ...] = (),
) -> MembershipMessage:
    state = MemberState.LEFT if kind is MessageKind.LEAVE else MemberState.ALIVE
    origin = signed_claim(identity, state, incarnation, f"addr-{identity.node_id}", epoch)
    return MembershipMessage(
        kind=kind,
        epoch=epoch,
        sender=identity.node_id,
        sequence=sequence,
        recipient=recipient,
        probe=0,
        target="",
        origin=origin,
        updates=updates,
    ).signed_by(identity)


def test_valid_ping_is_answered_and_admits_the_sender(
    receiver: SwimMember, sender: NodeIdentity
) -> None:
    ping = make_message(sender, MessageKind.PING, recipient=receiver.self_id, sequence=1)
    replies = receiver.on_bytes(ping.to_bytes(), now=0.0)
    assert [r.message.kind for r in replies] == [MessageKind.ACK]
    assert replies[0].address == f"addr-{sender.node_id}"
    assert replies[0].message.probe == 1
    assert sender.node_id in receiver.view()


def test_message_bytes_round_trip_canonically(sender: NodeIdentity) -> None:
    update = MemberUpdate("0123456789abcdef", MemberState.SUSPECT, 4)
    message = make_message(sender, MessageKind.PING, recipient="", sequence=3, updates=(update,))
    data = message.to_bytes()
    assert MembershipMessage.from_bytes(data) == message
    assert MembershipMessage.from_bytes(data).to_bytes() == data
    assert set(PROTO_KIND_NAMES) == set(MessageKind)


def test_forged_signature_is_rejected(receiver: SwimMember, sender: NodeIdentity) -> None:
    ping = make_message(sender, MessageKind.PING, recipient=receiver.self_id, sequence=1)
    flipped = bytes([ping.signature[0] ^ 1]) + ping.signature[1:]
    with pytest.raises(BadSignatureError, match="bad signature"):
        receiver.on_message(replace(ping, signature=flipped), 0.0)
    with pytest.raises(BadSignatureError):
        receiver.on_message(replace(ping, sequence=2), 0.0)  # field changed after signing
    assert sender.node_id not in receiver.view()


def test_a_node_claiming_another_nodes_id_is_rejected(
    receiver: SwimMember, sender: NodeIdentity
) -> None:
    victim = deterministic_identity(SEED, 2).node_id
    honest = make_message(sender, MessageKind.PING, recipient=receiver.self_id, sequence=1)
    origin = replace(honest.origin, node_id=victim)
    impostor = replace(honest, sender=victim, origin=origin).signed_by(sender)
    with pytest.raises(NodeIdMismatchError, match=victim):
        receiver.on_message(impostor, 0.0)
    assert victim not in receiver.view()


def test_replayed_and_stale_messages_are_rejected(
    receiver: SwimMember, sender: NodeIdentity
) -> None:
    to = receiver.self_id
    first = make_message(sender, MessageKind.PING, recipient=to, sequence=100)
    receiver.on_message(first, 0.0)
    with pytest.raises(ReplayedMessageError, match="already received"):
        receiver.on_message(first, 0.1)
    receiver.on_message(make_message(sender, MessageKind.PING, recipient=to, sequence=99), 0.1)
    window = receiver.config.replay_window
    too_old = make_message(sender, MessageKind.PING, recipient=to, sequence=100 - window)
    with pytest.raises(StaleMessageError, match="replay window"):
        receiver.on_message(too_old, 0.2)
    newer_life = make_message(sender, MessageKind.PING, recipient=to, sequence=1, incarnation=1)
    receiver.on_message(newer_life, 0.3)
    old_life = make_message(sender, MessageKind.PING, recipient=to, sequence=101, incarnation=0)
    with pytest.raises(StaleMessageError, match="incarnation 0, older"):
        receiver.on_message(old_life, 0.4)


def test_wrong_epoch_recipient_or_unlisted_sender_is_rejected(sender: NodeIdentity) -> None:
    config = SwimConfig(epoch=7)
    receiver = SwimMember(deterministic_identity(SEED, 0), "sim://0", config=config)
    to = receiver.self_id
    with pytest.raises(WrongEpochError, match="epoch 0"):
        receiver.on_message(make_message(sender, MessageKind.PING, recipient=to, sequence=1), 0)
    elsewhere = make_message(
        sender, MessageKind.PING, recipient=sender.node_id, sequence=1, epoch=7
    )
    with pytest.raises(WrongRecipientError, match="addressed to"):
        receiver.on_message(elsewhere, 0.0)
    listed = SwimConfig(allow_list=frozenset({to}))
    closed = SwimMember(deterministic_identity(SEED, 0), "sim://0", config=listed)
    with pytest.raises(NotAllowedError, match=sender.node_id):
        closed.on_message(make_message(sender, MessageKind.PING, recipient=to, sequence=1), 0)


def test_forged_claims_about_other_nodes_are_rejected(
    receiver: SwimMember, sender: NodeIdentity
) -> None:
    victim = deterministic_identity(SEED, 2)
    to = receiver.self_id
    receiver.on_message(make_message(victim, MessageKind.PING, recipient=to, sequence=1), 0.0)
    genuine_alive = signed_claim(victim, MemberState.ALIVE, 0, "addr", 0)
    fake_leave = replace(genuine_alive, state=MemberState.LEFT)  # proof signed for "alive"
    fake_alive = replace(genuine_alive, incarnation=9)  # an incarnation the victim never signed
    for forged in (fake_leave, fake_alive):
        message = make_message(
            sender,
            MessageKind.PING,
            recipient=to,
            sequence=forged.incarnation + 2,
            updates=(forged,),
        )
        with pytest.raises(ForgedUpdateError, match=victim.node_id):
            receiver.on_message(message, 0.1)
    assert receiver.members()[victim.node_id].state is MemberState.ALIVE
    assert receiver.members()[victim.node_id].incarnation == 0


def test_malformed_and_oversized_bytes_are_rejected(receiver: SwimMember) -> None:
    with pytest.raises(MalformedMessageError, match="not UTF-8 JSON"):
        receiver.on_bytes(b"\xff\x00", 0.0)
    with pytest.raises(MalformedMessageError, match="fields must be"):
        receiver.on_bytes(b'{"kind": "ping"}', 0.0)
    limit = receiver.config.max_message_bytes
    with pytest.raises(MalformedMessageError, match=f"limit of {limit} bytes"):
        receiver.on_bytes(b" " * (limit + 1), 0.0)


def test_join_flood_from_one_sender_is_rate_limited(
    receiver: SwimMember, sender: NodeIdentity
) -> None:
    config = receiver.config
    accepted, limited = 0, 0
    for sequence in range(1, 21):
        join = make_message(sender, MessageKind.JOIN, recipient="", sequence=sequence)
        try:
            replies = receiver.on_message(join, now=1.0)
            assert [r.message.kind for r in replies] == [MessageKind.ACK]
            accepted += 1
        except JoinRateLimitedError as error:
            assert "from this sender" in str(error)
            limited += 1
    assert (accepted, limited) == (config.join_burst_per_sender, 20 - config.join_burst_per_sender)
    later = 1.0 + 1.0 / config.join_rate_per_sender
    receiver.on_message(make_message(sender, MessageKind.JOIN, recipient="", sequence=99), later)


def test_join_flood_from_many_senders_hits_the_global_limit() -> None:
    config = SwimConfig(join_burst_global=5, join_rate_global=1.0)
    receiver = SwimMember(deterministic_identity(SEED, 0), "sim://0", config=config)
    outcomes = []
    for index in range(1, 9):
        join = make_message(
            deterministic_identity(SEED, index), MessageKind.JOIN, recipient="", sequence=1
        )
        try:
            receiver.on_message(join, now=0.0)
            outcomes.append("ok")
        except JoinRateLimitedError as error:
            assert "from all senders" in str(error)
            outcomes.append("limited")
    assert outcomes == ["ok"] * 5 + ["limited"] * 3


def test_join_reply_carries_the_full_view() -> None:
    net = converged(size=4)
    newcomer = deterministic_identity(99, 0)
    join = make_message(newcomer, MessageKind.JOIN, recipient="", sequence=1)
    (reply,) = net.nodes[0].on_message(join, net.now)  # type: ignore[union-attr]
    carried = {u.node_id for u in reply.message.updates if u.state is MemberState.ALIVE}
    assert carried >= set(net.ids[1:4])
    assert reply.message.origin.node_id == net.ids[0]


def test_token_bucket_refills_at_its_rate() -> None:
    bucket = TokenBucket(rate=2.0, burst=2, now=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [True, True, False]
    assert bucket.take(0.5) is True and bucket.take(0.5) is False
    with pytest.raises(ValueError, match="rate > 0"):
        TokenBucket(rate=0.0, burst=1, now=0.0)


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("ack_timeout", 1.5, "ack_timeout must be in"),
        ("protocol_period", 0.0, "protocol_period must be"),
        ("indirect_probes", -1, "indirect_probes must be"),
        ("max_piggyback", 0, "max_piggyback must be"),
        ("replay_window", 0, "replay_window must be"),
        ("epoch", -1, "epoch must be"),
        ("max_message_bytes", 10, "max_message_bytes must be"),
    ],
)
def test_impossible_config_is_refused(field: str, value: float, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SwimConfig(**{field: value})  # type: ignore[arg-type]


def test_bad_constructor_arguments_are_refused() -> None:
    identity = deterministic_identity(SEED, 0)
    with pytest.raises(ValueError, match="address must have"):
        SwimMember(identity, "")
    with pytest.raises(NotAllowedError):
        SwimMember(identity, "a", config=SwimConfig(allow_list=frozenset({"0" * 16})))
    with pytest.raises(ValueError, match="round_number must be"):
        SwimMember(identity, "a").snapshot_for_round(-1, 0.0)
