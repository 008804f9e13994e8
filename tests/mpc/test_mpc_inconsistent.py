"""A dealer whose validly encrypted shares lie on two polynomials: every holder accepts its share,
and Berlekamp-Welch over the partial sums gives exactly what `mpc.inconsistent` states."""

from __future__ import annotations

import numpy as np
import pytest

from phalanx.mpc import field as gf
from phalanx.mpc.crypto import Csprng
from phalanx.mpc.inconsistent import correctable_holders, deal_inconsistent
from phalanx.mpc.messages import PartialSum
from phalanx.mpc.session import ClusterSession
from phalanx.mpc.shamir_protocol import ShamirMember, ShamirOutcome, reconstruct_cluster_sum

NAMES = ("a", "b", "c", "d", "e", "f", "g")
DIMENSION = 6


def _round(
    affected: tuple[str, ...], packing: int, liar: str | None = None, dealer: str = "c"
) -> tuple[ShamirOutcome, dict[str, np.ndarray], np.ndarray]:
    """One in-memory round: `dealer` deals inconsistently to `affected` (its second polynomial
    shares the negated input), `liar` (if any) adds 1 to its partial sum."""
    session = ClusterSession(NAMES, 4, "c0", 2, DIMENSION, packing)
    rng = Csprng(11)
    members = {name: ShamirMember(session, name, rng.child(name)) for name in NAMES}
    adverts = {name: member.advertise_keys() for name, member in members.items()}
    inputs = {name: rng.field_elements(DIMENSION) for name in NAMES}
    other = gf.sub(np.zeros(DIMENSION, dtype=np.uint32), inputs[dealer])
    dealt = []
    for name, member in members.items():
        if name == dealer:
            dealt += deal_inconsistent(member, inputs[name], adverts, affected, other).values()
        else:
            dealt += member.deal(inputs[name], adverts).values()
    for share in dealt:
        members[share.recipient].receive_share(share)  # all authenticate: no ShareRejected
    assert all(member.held_dealers() == NAMES for member in members.values())
    partials = []
    for name, member in members.items():
        partial = member.partial_sum(NAMES)
        if name == liar:
            value = gf.add(
                gf.from_bytes(partial.value, session.share_length), np.ones(1, np.uint32)
            )
            partial = PartialSum(partial.round, partial.cluster, name, gf.to_bytes(value))
        partials.append(partial)
    return reconstruct_cluster_sum(session, partials), inputs, other


def _sum(vectors: list[np.ndarray]) -> np.ndarray:
    total = np.zeros(DIMENSION, dtype=np.uint32)
    for vector in vectors:
        total = gf.add(total, vector)
    return total


@pytest.mark.parametrize("packing", [1, 2])
@pytest.mark.parametrize("count", range(7))
def test_inconsistent_dealer_outcome_follows_the_decoding_radius(packing: int, count: int) -> None:
    # 7 holders, t = 2: T = t + l - 1 is 2 (e = 2) or 3 (e = 2) with packing 2
    others = [n for n in NAMES if n != "c"]
    affected = tuple(others[:count])
    outcome, inputs, other = _round(affected, packing)
    radius = correctable_holders(len(NAMES), 2 + packing - 1)
    assert radius == 2
    honest = _sum(list(inputs.values()))
    second = _sum([v for n, v in inputs.items() if n != "c"] + [other])
    unaffected = tuple(n for n in NAMES if n not in affected)
    if count <= radius:
        # corrected: exactly the honest dealing's sum; the blame falls on the affected holders
        assert not outcome.failed and outcome.field_sum is not None
        assert np.array_equal(outcome.field_sum, honest)
        assert outcome.suspects == tuple(sorted(affected))
    elif len(NAMES) - count <= radius:
        # the second polynomial wins: the dealer in effect shared -x; the others are "liars"
        assert not outcome.failed and outcome.field_sum is not None
        assert np.array_equal(outcome.field_sum, second)
        assert outcome.suspects == unaffected
    else:
        assert outcome.failed and outcome.field_sum is None


def test_inconsistency_and_a_lying_holder_share_one_error_budget() -> None:
    outcome, inputs, _ = _round(("d",), 1, liar="f")
    assert np.array_equal(outcome.field_sum, _sum(list(inputs.values())))
    assert outcome.suspects == ("d", "f")
    outcome, _, _ = _round(("d", "e"), 1, liar="f")
    assert outcome.failed and outcome.field_sum is None


def test_correctable_holders_is_the_unique_decoding_radius() -> None:
    assert [correctable_holders(r, 2) for r in range(1, 9)] == [0, 0, 0, 1, 1, 2, 2, 3]
    assert correctable_holders(5, 3) == 1
