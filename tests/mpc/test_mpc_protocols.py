"""SecAgg and Shamir phase objects: dropouts, late members, bad messages, the secure_sum API."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phalanx import mpc
from phalanx.mpc import field as gf
from phalanx.mpc.crypto import Csprng
from phalanx.mpc.encoding import FixedPointConfig, encode
from phalanx.mpc.messages import ShareRejected
from phalanx.mpc.secagg import ProtocolViolation, SecAggAggregator, SecAggMember
from phalanx.mpc.session import ClusterSession
from phalanx.mpc.shamir_protocol import ShamirMember, reconstruct_cluster_sum

NAMES = ("a", "b", "c", "d", "e")


def _secagg_until_masked(dimension: int = 20, threshold: int = 3):  # type: ignore[no-untyped-def]
    session = ClusterSession(NAMES, 1, "c0", threshold, dimension)
    rng = Csprng(9)
    members = {name: SecAggMember(session, name, rng.child(name)) for name in NAMES}
    adverts = {name: member.advertise_keys() for name, member in members.items()}
    outbox = [m for member in members.values() for m in member.share_keys(adverts).values()]
    for message in outbox:  # a node buffers shares until its own share_keys phase has run
        members[message.recipient].receive_share(message)
    inputs = {name: rng.field_elements(dimension) for name in NAMES}
    masked = {name: members[name].masked_input(inputs[name], NAMES) for name in NAMES}
    return session, members, adverts, inputs, masked


def test_secagg_dropout_recovers_exact_sum_and_late_member_stays_masked() -> None:
    session, members, adverts, inputs, masked = _secagg_until_masked()
    aggregator = SecAggAggregator(session)
    on_time = [masked[name] for name in ("a", "b", "d", "e")]  # "c" is late
    request = aggregator.unmasking_request(adverts, NAMES, on_time)
    assert request.dropped == ("c",)
    responses = [members[name].unmask(request) for name in ("a", "b", "d", "e")]
    assert all("c" not in response.self_mask_shares for response in responses)
    outcome = aggregator.finalize(responses)
    expected = inputs["a"]
    for name in ("b", "d", "e"):
        expected = gf.add(expected, inputs[name])
    assert not outcome.failed and outcome.field_sum is not None
    assert np.array_equal(outcome.field_sum, expected)
    # the late vector is uniformly masked: it differs from c's input almost everywhere
    late = gf.from_bytes(masked["c"].masked)
    assert np.count_nonzero(late == inputs["c"]) <= 1
    # an honest member refuses to then reveal c's self mask (double masking)
    second = dataclasses.replace(request, survivors=("a", "b", "c"), dropped=())
    with pytest.raises(ProtocolViolation, match="both seeds"):
        members["a"].unmask(second)


def test_a_member_missing_a_key_of_the_mask_set_drops_out_and_the_sum_stays_exact() -> None:
    """Member "a" got every key but "c"'s (it came after a's deadline). The others hold
    shares of every dealer, so "c" is in the mask set; "a" cannot mask against it, drops out,
    and the aggregator recovers the exact sum of the other four."""
    dimension, threshold = 20, 3
    session = ClusterSession(NAMES, 1, "c0", threshold, dimension)
    rng = Csprng(11)
    members = {name: SecAggMember(session, name, rng.child(name)) for name in NAMES}
    adverts = {name: member.advertise_keys() for name, member in members.items()}
    seen_by = {name: dict(adverts) for name in NAMES}
    del seen_by["a"]["c"]
    outbox = [m for n, member in members.items() for m in member.share_keys(seen_by[n]).values()]
    for message in outbox:
        try:
            members[message.recipient].receive_share(message)
        except ShareRejected:
            assert (message.sender, message.recipient) == ("c", "a")
    inputs = {name: rng.field_elements(dimension) for name in NAMES}
    assert members["a"].missing_keys(NAMES) == ["c"]
    assert members["b"].missing_keys(NAMES) == []
    with pytest.raises(ValueError, match="missing keys"):
        members["a"].masked_input(inputs["a"], NAMES)
    members["a"].drop_out(NAMES)
    survivors = ("b", "c", "d", "e")
    aggregator = SecAggAggregator(session)
    request = aggregator.unmasking_request(
        adverts, NAMES, [members[n].masked_input(inputs[n], NAMES) for n in survivors]
    )
    assert request.dropped == ("a",)
    outcome = aggregator.finalize([members[n].unmask(request) for n in NAMES])
    expected = inputs["b"]
    for name in ("c", "d", "e"):
        expected = gf.add(expected, inputs[name])
    assert not outcome.failed and outcome.field_sum is not None
    assert np.array_equal(outcome.field_sum, expected)


def test_precomputed_masks_give_the_same_masked_vector_for_any_mask_set() -> None:
    """Masks expanded before U2 is known, then corrected for the advertisers outside U2, equal
    the masks expanded for U2 directly, bit for bit (two identically seeded clusters)."""
    for mask_set in (NAMES, ("a", "b", "d", "e"), ("a", "c", "e")):
        _, direct, _, inputs, _ = _secagg_until_masked()
        _, early, _, _, _ = _secagg_until_masked()
        for name in mask_set:
            early[name].precompute_masks()
            from_precomputed = early[name].masked_input(inputs[name], mask_set)
            assert early[name]._precomputed is None  # used, and used once
            assert from_precomputed == direct[name].masked_input(inputs[name], mask_set)


def test_secagg_masked_vector_hides_input_and_masks_cancel() -> None:
    _, _, _, inputs, masked = _secagg_until_masked(dimension=2000)
    for name in NAMES:
        vector = gf.from_bytes(masked[name].masked)
        assert np.count_nonzero(vector == inputs[name]) < 5


def test_secagg_rejects_bad_shares() -> None:
    session = ClusterSession(NAMES, 1, "c0", 3, 4)
    rng = Csprng(2)
    members = {name: SecAggMember(session, name, rng.child(name)) for name in NAMES}
    adverts = {name: member.advertise_keys() for name, member in members.items()}
    outboxes = {name: member.share_keys(adverts) for name, member in members.items()}
    message = outboxes["a"]["b"]
    with pytest.raises(ShareRejected, match="round 2"):
        members["b"].receive_share(dataclasses.replace(message, round=2))
    with pytest.raises(ShareRejected, match="addressed to"):
        members["c"].receive_share(message)
    tampered = bytearray(message.ciphertext)
    tampered[-1] ^= 1
    with pytest.raises(ShareRejected, match="authentication"):
        members["b"].receive_share(dataclasses.replace(message, ciphertext=bytes(tampered)))
    members["b"].receive_share(message)
    with pytest.raises(ShareRejected, match="duplicate"):
        members["b"].receive_share(message)


def test_shamir_members_reject_wrong_length_round_and_replay() -> None:
    session = ClusterSession(NAMES, 4, "c0", 2, 6)
    rng = Csprng(3)
    members = {name: ShamirMember(session, name, rng.child(name)) for name in NAMES}
    adverts = {name: member.advertise_keys() for name, member in members.items()}
    short_session = dataclasses.replace(session, dimension=5)
    liar = ShamirMember(short_session, "a", rng.child("liar"))
    liar_adverts = dict(adverts, a=dataclasses.replace(liar.advertise_keys()))
    members["b"].deal(np.zeros(6, np.uint32), liar_adverts)
    wrong_length = liar.deal(np.zeros(5, np.uint32), adverts)["b"]
    with pytest.raises(ShareRejected, match="5 elements, expected 6"):
        members["b"].receive_share(wrong_length)
    good = members["a"].deal(np.arange(6, dtype=np.uint32), adverts)["c"]
    members["c"].deal(np.zeros(6, np.uint32), adverts)
    with pytest.raises(ShareRejected, match="round 5"):
        members["c"].receive_share(dataclasses.replace(good, round=5))
    members["c"].receive_share(good)
    with pytest.raises(ShareRejected, match="duplicate"):
        members["c"].receive_share(good)
    with pytest.raises(ValueError, match="holds no share"):
        members["c"].partial_sum(NAMES)


def test_reconstruction_rejects_foreign_partial_sums_without_crashing() -> None:
    updates = np.random.default_rng(0).normal(size=(5, 8))
    good = mpc.secure_sum(updates, "shamir", threshold=2, seed=1)
    assert good.field_sum is not None
    session = ClusterSession(
        tuple(mpc.secure_sum.__globals__["member_name"](i) for i in range(5)), 0, "c0", 2, 8
    )
    foreign = mpc.PartialSum(1, "c0", session.members[0], gf.to_bytes(good.field_sum))
    short = mpc.PartialSum(0, "c0", session.members[1], b"\x00" * 12)
    outcome = reconstruct_cluster_sum(session, [foreign, short])
    assert outcome.failed
    assert "round 1" in outcome.rejections[session.members[0]]
    assert "3 elements, expected 8" in outcome.rejections[session.members[1]]


@settings(max_examples=25, deadline=None)
@given(
    k=st.integers(2, 8),
    d=st.integers(1, 12),
    mode=st.sampled_from(["secagg", "shamir"]),
    data=st.data(),
)
def test_secure_sum_exact_within_bound(k: int, d: int, mode: str, data: st.DataObject) -> None:
    threshold = data.draw(st.integers(1 if mode == "secagg" else 2, k))
    if mode == "secagg":
        drop = data.draw(st.sets(st.integers(0, k - 1), max_size=k - threshold))
        survivors = k - len(drop)
    else:
        drop = data.draw(st.sets(st.integers(0, k - 1), max_size=k - threshold))
        survivors = k - len(drop)
    alive = sorted(set(range(k)) - drop)
    lie = data.draw(st.sets(st.sampled_from(alive), max_size=(survivors - threshold) // 2))
    seed = data.draw(st.integers(0, 1000))
    config = FixedPointConfig(clip=3.0, frac_bits=16)
    updates = np.random.default_rng(seed).normal(size=(k, d)).astype(np.float32)
    result = mpc.secure_sum(updates, mode, threshold, drop, lie, seed, config)  # type: ignore[arg-type]
    assert not result.failed, result.reason
    included = alive if mode == "secagg" else list(range(k))
    assert result.included == tuple(included)
    exact = gf.reduce_u64(
        np.sum([encode(updates[i], config).astype(np.uint64) for i in included], axis=0)
    )
    assert result.field_sum is not None and np.array_equal(result.field_sum, exact)
    assert result.max_abs_error <= config.error_bound(k)
    assert set(result.suspects) <= lie


@pytest.mark.parametrize("mode", ["secagg", "shamir"])
def test_secure_sum_fails_beyond_bound_never_wrong(mode: str) -> None:
    updates = np.random.default_rng(1).normal(size=(7, 30))
    too_many_drops = mpc.secure_sum(updates, mode, threshold=4, drop={0, 1, 2, 3}, seed=2)  # type: ignore[arg-type]
    assert too_many_drops.failed and too_many_drops.value is None
    too_many_liars = mpc.secure_sum(updates, mode, threshold=3, lie={0, 1, 2}, seed=2)  # type: ignore[arg-type]
    assert too_many_liars.failed and too_many_liars.value is None
    assert np.isnan(too_many_liars.max_abs_error)


def test_secure_sum_deterministic_and_counts_bytes() -> None:
    updates = np.random.default_rng(2).normal(size=(4, 1000)).astype(np.float32)
    first = mpc.secure_sum(updates, "secagg", seed=5, drop={3})
    second = mpc.secure_sum(updates, "secagg", seed=5, drop={3})
    assert first.value is not None and second.value is not None
    assert np.array_equal(first.value, second.value)
    assert first.bytes_sent == second.bytes_sent
    assert 4000 < first.bytes_sent[0] < 2.2 * 4000  # ~one masked vector per member
    shamir = mpc.secure_sum(updates, "shamir", seed=5)
    assert min(shamir.bytes_sent) >= 3 * 4000  # three encrypted shares + a partial sum


def test_secure_sum_bad_input_and_single_member_refused() -> None:
    with pytest.raises(ValueError, match="cluster of one member"):
        mpc.secure_sum(np.zeros((1, 3)), "shamir")
    with pytest.raises(ValueError, match="mode must be"):
        mpc.secure_sum(np.zeros((2, 3)), "magic")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"shape \(k, d\)"):
        mpc.secure_sum(np.zeros(3), "shamir")
    with pytest.raises(ValueError, match="both drop and lie"):
        mpc.secure_sum(np.zeros((3, 3)), "shamir", drop={1}, lie={1})
    with pytest.raises(ValueError, match="fixed-point overflow"):
        mpc.secure_sum(
            np.zeros((3, 3)), "shamir", config=FixedPointConfig(clip=2**13, frac_bits=16)
        )


def test_aggregator_view_exposes_only_the_sum_under_mpc() -> None:
    updates = np.random.default_rng(3).normal(size=(3, 5))
    plain = mpc.aggregator_view(updates, "none")
    assert plain.individual_updates is not None
    assert np.array_equal(plain.individual_updates, updates)
    for mode in ("secagg", "shamir"):
        view = mpc.aggregator_view(updates, mode, seed=1)  # type: ignore[arg-type]
        assert view.individual_updates is None and view.cluster_sum is not None
        assert np.allclose(view.cluster_sum, updates.sum(axis=0), atol=3 * 2.0**-16)


def test_public_api_exports_resolve_to_mpc_objects() -> None:
    assert len(set(mpc.__all__)) == len(mpc.__all__)
    for name in (
        "secure_sum",
        "aggregator_view",
        "FixedPointConfig",
        "SecAggMember",
        "ShamirMember",
        "reconstruct_robust",
        "ClusterSession",
    ):
        assert name in mpc.__all__
    for name in set(mpc.__all__) - {"MODES", "PRIME"}:
        assert getattr(mpc, name).__module__.startswith("phalanx.mpc.")


def test_shamir_holder_releases_partial_sums_over_one_dealer_set_per_round() -> None:
    """Partial sums over D and D - {x} from t holders would reveal x's update as a difference."""
    session = ClusterSession(NAMES, 2, "c0", 2, 4)
    rng = Csprng(5)
    members = {name: ShamirMember(session, name, rng.child(name)) for name in NAMES}
    adverts = {name: member.advertise_keys() for name, member in members.items()}
    inputs = {name: rng.field_elements(4) for name in NAMES}
    dealt = [s for name, m in members.items() for s in m.deal(inputs[name], adverts).values()]
    for share in dealt:
        members[share.recipient].receive_share(share)
    first = members["a"].partial_sum(NAMES)
    assert members["a"].partial_sum(list(reversed(NAMES))).value == first.value  # same set again
    with pytest.raises(ValueError, match="already released a partial sum"):
        members["a"].partial_sum(NAMES[:-1])
    with pytest.raises(ValueError, match="twice"):
        members["b"].partial_sum(["a", "a"])
    smaller = {name: members[name].partial_sum(NAMES[:-1]) for name in ("b", "c")}
    outcome = reconstruct_cluster_sum(session, list(smaller.values()))
    expected = gf.add(gf.add(inputs["a"], inputs["b"]), gf.add(inputs["c"], inputs["d"]))
    assert outcome.field_sum is not None and np.array_equal(outcome.field_sum, expected)
    with pytest.raises(ValueError, match="already released"):
        members["b"].partial_sum(NAMES)
