"""The MPC cluster protocols run by several nodes in one event loop, messages delivered between
their real inboxes after the protocol's own validation: key exchange overlapping the training,
one dealer set per holder and round (against an aggregator asking for two), a dealer whose
shares reach only some holders, a dead member, a holder whose report comes a deadline late,
and SecAgg with its setup overlapping the training."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import numpy as np
import pytest

from phalanx.mpc import FixedPointConfig
from phalanx.node.codec import Message
from phalanx.node.inbox import RoundInbox
from phalanx.node.mpc_protocol import SecAggClusterProtocol, ShamirClusterProtocol
from phalanx.node.protocols import ClusterOutput, RoundContext
from phalanx.node.server import Rejection
from phalanx.v1 import node_pb2 as pb

NAMES = ["a", "b", "c", "d", "e"]
DIMENSION = 257
FIXED_POINT = FixedPointConfig()
Drop = Callable[[str, str, Message], bool]
Tamper = Callable[[str, str, Message], Message]
Delay = Callable[[str, str, Message], float]
PHASES: dict[str, dict[str, float]] = {}
"""Per-node phase seconds of the last `_run_cluster`."""


def _updates() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(11)
    return {n: rng.normal(scale=0.2, size=DIMENSION).astype(np.float32) for n in NAMES}


def _run_cluster(
    protocols: dict[str, ShamirClusterProtocol | SecAggClusterProtocol],
    updates: dict[str, np.ndarray],
    drop: Drop = lambda sender, peer, message: False,
    tamper: Tamper = lambda sender, peer, message: message,
    suspected: frozenset[str] = frozenset(),
    train_s: float = 0.0,
    delay: Delay = lambda sender, peer, message: 0.0,
    cluster: list[str] = NAMES,
    collect_s: float = 3.0,
) -> tuple[dict[str, dict[int, ClusterOutput]], list[tuple[str, str, Message]], list[str]]:
    """Every node in `protocols` runs one round in one cluster of `cluster`; `delay` is each
    message's time on the wire. Returns outputs, wire messages, rejections."""
    wire: list[tuple[str, str, Message]] = []
    rejected: list[str] = []
    PHASES.clear()
    inboxes = {name: RoundInbox() for name in NAMES}

    def sender_of(name: str):  # type: ignore[no-untyped-def]
        async def send(peer: str, message: Message) -> bool:
            if peer not in protocols or drop(name, peer, message):
                return False
            message = tamper(name, peer, message)
            await asyncio.sleep(delay(name, peer, message))
            try:
                protocols[peer].validate(message, [cluster], DIMENSION)
            except Rejection as error:
                rejected.append(f"{peer}<-{name}: {error}")
                return False
            wire.append((name, peer, message))
            await inboxes[peer].put(message)
            return True

        return send

    async def one(name: str) -> dict[int, ClusterOutput]:
        publishers = protocols[name].publishers or 2  # as the node does
        context = RoundContext(
            name,
            1,
            [cluster],
            DIMENSION,
            inboxes[name],
            sender_of(name),
            collect_s,
            publishers,
            suspected,
        )
        prepare = getattr(protocols[name], "prepare", None)  # the MPC protocols' early phases
        if prepare is not None:
            prepare(context)
        await asyncio.sleep(train_s)  # the local training the early phases overlap
        outputs = await protocols[name].run(context, updates[name])
        PHASES[name] = context.phase_seconds
        await asyncio.gather(*context.in_flight, return_exceptions=True)
        return outputs

    async def everyone() -> list[dict[int, ClusterOutput]]:
        return await asyncio.gather(*(one(name) for name in protocols))

    results = asyncio.run(everyone())
    return dict(zip(protocols, results, strict=True)), wire, rejected


def _shamir(names: list[str]) -> dict[str, ShamirClusterProtocol | SecAggClusterProtocol]:
    return {n: ShamirClusterProtocol(FIXED_POINT, 2, 2, lambda *_: None) for n in names}


def _secagg(names: list[str]) -> dict[str, ShamirClusterProtocol | SecAggClusterProtocol]:
    return {n: SecAggClusterProtocol(FIXED_POINT, 0, lambda *_: None) for n in names}


def _assert_sum(output: ClusterOutput, updates: dict[str, np.ndarray], dealers: list[str]) -> None:
    assert list(output.included) == dealers
    expected = np.sum([updates[d] for d in dealers], axis=0)
    assert np.max(np.abs(output.total - expected)) <= len(dealers) * 2.0**-FIXED_POINT.frac_bits


def _dealer_sets(wire: list[tuple[str, str, Message]]) -> dict[str, set[str]]:
    """Per holder, the dealer sets its partial sums on the wire cover."""
    sets: dict[str, set[str]] = {}
    for sender, _, message in wire:
        if message.kind == pb.MESSAGE_KIND_PARTIAL_SUM:
            sets.setdefault(sender, set()).add(message.meta["dealers"])
    return sets


def test_full_cluster_sums_exactly_with_labelled_partial_sums() -> None:
    updates = _updates()
    outputs, wire, rejected = _run_cluster(_shamir(NAMES), updates)
    assert rejected == []
    for name in NAMES:
        _assert_sum(outputs[name][0], updates, NAMES)
    sets = _dealer_sets(wire)
    assert set(sets) == set(NAMES)  # every holder answered, and over one set only
    assert all(covered == {",".join(NAMES)} for covered in sets.values())
    assert {peer for _, peer, m in wire if m.kind == pb.MESSAGE_KIND_PARTIAL_SUM} <= {"a", "b"}


def test_holders_answer_one_dealer_set_when_an_aggregator_asks_for_a_smaller_one() -> None:
    """Aggregator b asks for the sum without e: with answers to both a's and b's requests, b
    could subtract the two cluster sums and read e's update. Each holder answers a (the first
    aggregator) only, so b gets no partial sum over its set and a's output is the full sum."""
    updates = _updates()

    def drop_e(sender: str, peer: str, message: Message) -> Message:
        if sender == "b" and message.kind == pb.MESSAGE_KIND_DEALER_SET:
            return Message("b", 1, message.kind, 0, meta={"dealers": ",".join(NAMES[:-1])})
        return message

    outputs, wire, _ = _run_cluster(_shamir(NAMES), updates, tamper=drop_e)
    sets = _dealer_sets(wire)
    assert sets and all(covered == {",".join(NAMES)} for covered in sets.values())
    assert not [m for _, peer, m in wire if m.kind == pb.MESSAGE_KIND_PARTIAL_SUM and peer == "b"]
    for name in NAMES:
        assert outputs[name][0].publisher == "a"
        _assert_sum(outputs[name][0], updates, NAMES)


def test_keys_are_exchanged_while_training() -> None:
    updates = _updates()
    protocols = _shamir(NAMES)
    started = time.monotonic()
    outputs, wire, _ = _run_cluster(protocols, updates, train_s=0.3)
    assert time.monotonic() - started < 3.0  # no phase ran into its 3 s deadline
    _assert_sum(outputs["c"][0], updates, NAMES)
    assert sum(m.kind == pb.MESSAGE_KIND_MPC_KEYS for _, _, m in wire) == 5 * 4
    # The keys arrived during the 0.3 s of training: the round waited (almost) nothing for them.
    assert max(PHASES[name]["keys"] for name in NAMES) < 0.1


def test_partially_dealt_update_is_summed_by_the_holders_that_hold_it() -> None:
    """'e' reaches only c and d (it crashed while dealing): e is still held by 3 of 5 reporters,
    so the agreed set keeps it; a and b, who lack e's share, stay silent, and the partial sums
    of c, d and e (3 >= t = 2) give the full sum without waiting for a and b."""
    updates = _updates()

    def lose_e_shares(sender: str, peer: str, message: Message) -> bool:
        return sender == "e" and message.kind == pb.MESSAGE_KIND_SHARE and peer in ("a", "b")

    started = time.monotonic()
    outputs, wire, _ = _run_cluster(_shamir(NAMES), updates, drop=lose_e_shares)
    sets = _dealer_sets(wire)
    assert set(sets) == {"c", "d", "e"}
    assert all(covered == {",".join(NAMES)} for covered in sets.values())
    for name in NAMES:
        _assert_sum(outputs[name][0], updates, NAMES)
    # One deadline (a and b waiting for e's share), not a second one for their partial sums.
    assert time.monotonic() - started < 2 * 3.0


def test_dead_member_falls_back_to_the_dealer_set_agreement() -> None:
    updates = _updates()
    alive = NAMES[:-1]
    outputs, wire, rejected = _run_cluster(_shamir(alive), updates, suspected=frozenset({"e"}))
    assert rejected == []
    assert any(m.kind == pb.MESSAGE_KIND_DEALER_SET for _, _, m in wire)
    for name in alive:
        _assert_sum(outputs[name][0], updates, alive)


@pytest.mark.parametrize("protocol", ["shamir", "secagg"])
def test_aggregator_counts_a_holder_that_waited_out_its_share_deadline(protocol: str) -> None:
    """Cluster of 3 (t = 2 for Shamir); b dies as the agree phase starts, its share (SecAgg: seed
    share) to c still in flight, so c waits out its share deadline and its holdings report then
    spends 0.4 s on the wire. The aggregator's own share phase ended early (it holds every
    share), so a report wait anchored on its own finish closed before c's report came; agreeing
    on a's report alone gives no dealer set (each needs 2 holders) and a failed cluster (the CI
    failure of the crash-at-agree testbed run). The report wait runs one window past the share
    deadline instead: a and c agree on {a, c}."""
    updates = _updates()
    members = ["a", "b", "c"]
    share_kinds = (pb.MESSAGE_KIND_SHARE, pb.MESSAGE_KIND_MPC_SEED_SHARES)

    def b_dies_at_agree(sender: str, peer: str, message: Message) -> bool:
        if sender != "b":
            return False
        if message.kind in share_kinds:
            return peer == "c"
        return message.kind != pb.MESSAGE_KIND_MPC_KEYS

    def slow_report_from_c(sender: str, peer: str, message: Message) -> float:
        return 0.4 if sender == "c" and message.kind == pb.MESSAGE_KIND_HELD_DEALERS else 0.0

    protocols = _shamir(members) if protocol == "shamir" else _secagg(members)
    outputs, _, rejected = _run_cluster(
        protocols,
        updates,
        drop=b_dies_at_agree,
        delay=slow_report_from_c,
        cluster=members,
        collect_s=1.0,
    )
    assert rejected == []
    for name in ("a", "c"):
        _assert_sum(outputs[name][0], updates, ["a", "c"])


def test_secagg_setup_overlaps_training_and_sums_exactly() -> None:
    updates = _updates()
    started = time.monotonic()
    outputs, wire, rejected = _run_cluster(_secagg(NAMES), updates, train_s=0.2)
    assert time.monotonic() - started < 3.0  # no phase ran into its 3 s deadline
    assert rejected == []
    for name in NAMES:
        _assert_sum(outputs[name][0], updates, NAMES)
    masked = [m for _, _, m in wire if m.kind == pb.MESSAGE_KIND_MASKED_INPUT]
    assert len(masked) == 4  # one masked vector per member; the aggregator keeps its own


def _packed(names: list[str]) -> dict[str, ShamirClusterProtocol | SecAggClusterProtocol]:
    """t = 2, two coordinates per polynomial: t + l - 1 = 3 of the 5 holders reconstruct."""
    return {n: ShamirClusterProtocol(FIXED_POINT, 2, 2, lambda *_: None, packing=2) for n in names}


def test_packed_sharing_halves_the_share_bytes_and_corrects_a_lying_holder() -> None:
    """Packing two coordinates per polynomial: shares and partial sums on the wire carry
    ceil(257 / 2) = 129 field elements; the sum is exact, and a holder sending a garbage
    partial sum (1 <= floor((5 - 3) / 2)) is corrected."""
    updates = _updates()
    packed_bytes = 4 * ((DIMENSION + 1) // 2)

    def lie_c(sender: str, peer: str, message: Message) -> Message:
        if sender == "c" and message.kind == pb.MESSAGE_KIND_PARTIAL_SUM:
            garbage = np.random.default_rng(5).integers(0, 2**31 - 1, packed_bytes // 4)
            tensors = {"value": garbage.astype("<u4").view(np.uint8)}
            return Message(
                "c", 1, message.kind, 0, tensors, meta=message.meta, recipient=message.recipient
            )
        return message

    outputs, wire, rejected = _run_cluster(_packed(NAMES), updates, tamper=lie_c)
    assert rejected == []
    for name in NAMES:
        _assert_sum(outputs[name][0], updates, NAMES)
    partials = [m for _, _, m in wire if m.kind == pb.MESSAGE_KIND_PARTIAL_SUM]
    assert partials and all(m.tensors["value"].size == packed_bytes for m in partials)
    shares = [m for _, _, m in wire if m.kind == pb.MESSAGE_KIND_SHARE]
    # AES-GCM adds a nonce and a tag: far less than the other half of an unpacked share
    assert all(packed_bytes <= m.tensors["ciphertext"].size < packed_bytes + 64 for m in shares)


def test_packed_partial_sum_of_the_unpacked_length_is_rejected() -> None:
    """A node running packing 2 refuses a partial sum sized for unpacked shares (a peer with
    another configuration, or a forged message): a logged rejection, and the round still sums
    from the other holders."""
    updates = _updates()

    def unpacked_from_d(sender: str, peer: str, message: Message) -> Message:
        if sender == "d" and message.kind == pb.MESSAGE_KIND_PARTIAL_SUM:
            tensors = {"value": np.zeros(4 * DIMENSION, np.uint8)}
            return Message(
                "d", 1, message.kind, 0, tensors, meta=message.meta, recipient=message.recipient
            )
        return message

    outputs, _, rejected = _run_cluster(_packed(NAMES), updates, tamper=unpacked_from_d)
    assert rejected and all("<-d" in line and "partial sum needs" in line for line in rejected)
    for name in NAMES:
        _assert_sum(outputs[name][0], updates, NAMES)


@pytest.mark.parametrize("protocol", ["shamir", "secagg"])
def test_a_failed_cluster_says_so_and_no_member_waits_out_the_publish_deadline(
    protocol: str,
) -> None:
    """Every partial sum (Shamir) or unmasking answer (SecAgg) is lost, so the aggregators cannot
    reconstruct. They send a signed failure notice instead of staying silent, and every member
    returns with no output one collect window later, not after the (phases + 1) * collect_s
    publish wait (15 s for Shamir, 18 s for SecAgg at collect_s = 3)."""
    updates = _updates()
    lost = (pb.MESSAGE_KIND_PARTIAL_SUM, pb.MESSAGE_KIND_UNMASK)

    def lose_answers(sender: str, peer: str, message: Message) -> bool:
        return message.kind in lost and sender != peer and message.meta.get("survivors") is None

    protocols = _shamir(NAMES) if protocol == "shamir" else _secagg(NAMES)
    started = time.monotonic()
    outputs, wire, rejected = _run_cluster(protocols, updates, drop=lose_answers)
    elapsed = time.monotonic() - started
    assert rejected == []
    assert all(result == {} for result in outputs.values())
    notices = [m for _, _, m in wire if m.kind == pb.MESSAGE_KIND_CLUSTER_OUTPUT]
    assert notices and all("failed" in m.meta and not m.tensors for m in notices)
    assert elapsed < 4 * 3.0


def test_plaintext_members_send_their_update_to_the_aggregators_only() -> None:
    """FedAvg's shape: with two publishers each of the 3 other members sends 2 updates (not 4),
    and the 2 aggregators' outputs are the exact sum."""
    from phalanx.node.protocols import PlaintextClusterProtocol

    updates = _updates()
    protocols = {n: PlaintextClusterProtocol() for n in NAMES}
    outputs, wire, rejected = _run_cluster(protocols, updates)  # type: ignore[arg-type]
    assert rejected == []
    sent = [(s, p) for s, p, m in wire if m.kind == pb.MESSAGE_KIND_UPDATE]
    assert sorted(sent) == sorted((s, p) for s in NAMES for p in ("a", "b") if s != p)
    for name in NAMES:
        assert outputs[name][0].included == tuple(NAMES)
        np.testing.assert_allclose(
            outputs[name][0].total, np.sum([updates[n] for n in NAMES], axis=0), rtol=1e-6
        )


def test_roles_rotate_with_the_round_and_every_node_derives_the_same_ones() -> None:
    """`role_order` ranks a cluster's members by a hash of the public seed, round and cluster:
    the aggregator changes from round to round, each of the 10 members takes the role in some
    of 200 rounds, and two contexts with the same seed agree."""
    from phalanx.node.protocols import role_order

    members = [f"node-{i:02d}" for i in range(10)]
    firsts = [role_order(b"seed", r, 0, members)[0] for r in range(1, 201)]
    assert set(firsts) == set(members)
    assert max(firsts.count(m) for m in members) < 40  # 20 expected per member
    assert firsts == [role_order(b"seed", r, 0, list(reversed(members)))[0] for r in range(1, 201)]
    assert firsts != [role_order(b"other", r, 0, members)[0] for r in range(1, 201)]

    def first_publisher(round_: int) -> str:
        context = RoundContext(
            "node-00",
            round_,
            [members],
            4,
            RoundInbox(),
            None,
            1.0,
            2,
            role_seed=b"seed",  # type: ignore[arg-type]
        )
        return context.publishers_of(0)[0]

    assert [first_publisher(r) for r in range(1, 201)] == firsts


def test_collect_window_follows_measured_phases_within_its_bounds() -> None:
    from phalanx.node.protocols import collect_window

    assert collect_window([0.1, 0.2], 30.0, 4.0, 2.0) == 30.0  # too few rounds measured
    assert collect_window([0.5] * 10, 30.0, None, 2.0) == 30.0  # not asked for
    assert collect_window([1.0] * 18 + [2.0] * 2, 30.0, 4.0, 2.0) == 8.0  # 4 x p95 (= 2.0)
    assert collect_window([0.1] * 10, 30.0, 4.0, 2.0) == 2.0  # the floor
    assert collect_window([0.1] * 9 + [30.0] * 2, 30.0, 4.0, 2.0) == 30.0  # a failed phase


def test_a_failure_notice_carries_its_reason_and_nothing_else() -> None:
    from phalanx.node.protocols import validate_cluster_output

    def notice(tensors: dict[str, np.ndarray], meta: dict[str, str]) -> Message:
        return Message("a", 1, pb.MESSAGE_KIND_CLUSTER_OUTPUT, 0, tensors, meta=meta)

    validate_cluster_output(notice({}, {"failed": "empty mask set"}), NAMES, DIMENSION)
    bad = [
        notice({"sum": np.zeros(DIMENSION, np.float32)}, {"failed": "x"}),
        notice({}, {"failed": "x", "included": "a,b"}),
        notice({}, {"failed": "x" * 201}),
    ]
    for message in bad:
        with pytest.raises(Rejection):
            validate_cluster_output(message, NAMES, DIMENSION)
