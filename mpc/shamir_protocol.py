"""Threshold secure sum for malicious share-holders: deal, sum, robust reconstruction.

Each dealer Shamir-shares (Shamir 1979) its encoded update t-out-of-m among its cluster, each
share AES-GCM-encrypted end to end to its holder under a per-round X25519/HKDF key bound to
(round, cluster, sender, recipient). A holder sums the shares of the agreed dealer set (its
partial sum is a share of the cluster sum), and the aggregator decodes the partial sums as a
Reed-Solomon codeword (Berlekamp-Welch), tolerating m - t missing holders and
floor((received - t)/2) wrong partial sums (see :mod:`mpc.shamir`). With packing l > 1
(Franklin & Yung 1992) each polynomial carries l coordinates: shares and partial sums are l
times shorter, privacy still holds against t - 1 colluders, and t is replaced by t + l - 1 in
both tolerances (:attr:`mpc.session.ClusterSession.reconstruction_threshold`).

Phases a node drives: ``advertise_keys -> deal -> receive_share* -> partial_sum`` (members) and
``reconstruct`` (aggregator). A dealer who sends an inconsistent share to some holder makes that
holder's partial sum look wrong: it is then corrected like a lying holder (within the bound) but
blamed on the holder; verifiable secret sharing would be needed to blame the dealer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from phalanx.mpc import field as gf
from phalanx.mpc.crypto import (
    Csprng,
    KeyPair,
)
from phalanx.mpc.field import FieldVector
from phalanx.mpc.messages import EncryptedShare, KeyAdvertisement, PartialSum, ShareRejected
from phalanx.mpc.session import ClusterSession
from phalanx.mpc.shamir import (
    ReconstructionResult,
    reconstruct_robust,
    secret_points,
    share_packed,
    unpack,
)
from phalanx.mpc.shamir import partial_sum as sum_shares

UPDATE_PURPOSE = "shamir-update"


class ShamirMember:
    """One member as dealer and share-holder; call the phases in order."""

    def __init__(self, session: ClusterSession, member: str, rng: Csprng) -> None:
        session.point(member)
        self.session = session
        self.member = member
        self._rng = rng
        self._encryption = KeyPair.generate(rng)
        self._advertisements: dict[str, KeyAdvertisement] = {}
        self._held: dict[str, FieldVector] = {}
        self._released: tuple[str, ...] | None = None

    def advertise_keys(self) -> KeyAdvertisement:
        """Phase 0: the per-round public encryption key."""
        return KeyAdvertisement(
            self.session.round, self.session.cluster, self.member, self._encryption.public
        )

    def deal(
        self, encoded_update: FieldVector, advertisements: Mapping[str, KeyAdvertisement]
    ) -> dict[str, EncryptedShare]:
        """Phase 1: share the encoded update among all members, one ciphertext per other member.

        Needs an advertisement from every member (the share for a silent member is not sent,
        which is the same as that holder dropping out).
        """
        session = self.session
        encoded_update = gf.as_field_vector(encoded_update, "encoded_update")
        if encoded_update.size != session.dimension:
            raise ValueError(
                f"encoded_update has {encoded_update.size} elements, "
                f"session dimension is {session.dimension}"
            )
        for name, advertisement in advertisements.items():
            session.check(advertisement.round, advertisement.cluster, advertisement.sender)
            if name != advertisement.sender or len(advertisement.encryption_public) != 32:
                raise ShareRejected(f"malformed key advertisement from {name!r}")
        self._advertisements = dict(advertisements)
        shares = share_packed(
            encoded_update, session.threshold, session.size, session.packing, self._rng
        )
        messages = {}
        for recipient in session.members:
            share = shares[session.point(recipient) - 1]
            if recipient == self.member:
                self._held[self.member] = share
                continue
            if recipient not in advertisements:
                continue
            messages[recipient] = session.seal_share(
                self.member,
                recipient,
                UPDATE_PURPOSE,
                self._encryption.private,
                advertisements[recipient].encryption_public,
                gf.to_bytes(share),
                self._rng,
            )
        return messages

    def receive_share(self, message: EncryptedShare) -> None:
        """Decrypt and keep one share (after :meth:`deal`).

        Raises :class:`ShareRejected` (for the node to log) on a share for another round or
        cluster or recipient, a duplicate, failed authentication or a wrong length.
        """
        self._held[message.sender] = self.session.open_share(
            message,
            self.member,
            UPDATE_PURPOSE,
            self._encryption.private,
            self._advertisements,
            self._held,
            self.session.share_length,
        )

    def held_dealers(self) -> tuple[str, ...]:
        """Dealers whose valid share this member holds (input to the dealer-set agreement)."""
        return tuple(sorted(self._held))

    def partial_sum(self, dealers: Sequence[str]) -> PartialSum:
        """Phase 2: sum of the held shares of the agreed dealer set (a share of the cluster sum).

        Raises ValueError when a share of an agreed dealer is missing: this holder must then
        stay silent (count as dropped) rather than send an inconsistent sum.

        A holder releases partial sums over one dealer set per round only (repeats of that set
        are fine): partial sums over D and D - {x} from t holders would let whoever collects them
        reconstruct x's update as the difference of two cluster sums.
        """
        chosen = tuple(sorted(set(dealers)))
        if len(chosen) != len(dealers):
            raise ValueError(f"dealer set {list(dealers)} lists a dealer twice")
        if self._released is not None and chosen != self._released:
            raise ValueError(
                f"{self.member!r} already released a partial sum over {list(self._released)} "
                f"this round; refusing a second dealer set {list(chosen)}"
            )
        missing = sorted(set(dealers) - set(self._held))
        if missing:
            raise ValueError(f"{self.member!r} holds no share from agreed dealers {missing}")
        self._released = chosen
        total = sum_shares([self._held[name] for name in chosen])
        session = self.session
        return PartialSum(session.round, session.cluster, self.member, gf.to_bytes(total))


@dataclass(frozen=True)
class ShamirOutcome:
    """Aggregator output: the field cluster sum, or failed; suspects are lying holders."""

    field_sum: FieldVector | None
    failed: bool
    reason: str
    suspects: tuple[str, ...]
    holders_used: tuple[str, ...]
    rejections: dict[str, str] = field(default_factory=dict)


def reconstruct_cluster_sum(
    session: ClusterSession,
    partial_sums: Sequence[PartialSum],
    max_errors: int | None = None,
) -> ShamirOutcome:
    """Phase 3: robust reconstruction from whatever partial sums arrived.

    Messages for another round/cluster, from non-members, duplicates or of the wrong length are
    rejected (listed in ``rejections``) and count as missing.
    """
    rejections: dict[str, str] = {}
    shares: dict[int, FieldVector] = {}
    for message in partial_sums:
        try:
            session.check(message.round, message.cluster, message.sender)
            point = session.point(message.sender)
            if point in shares:
                raise ShareRejected(f"duplicate partial sum from {message.sender!r}")
            shares[point] = gf.from_bytes(
                message.value, session.share_length, f"partial sum of {message.sender!r}"
            )
        except (ShareRejected, ValueError) as error:
            rejections[message.sender] = str(error)
    result: ReconstructionResult = reconstruct_robust(
        shares,
        session.reconstruction_threshold,
        max_errors,
        at=secret_points(session.packing),
    )
    names = session.members
    return ShamirOutcome(
        None if result.value is None else unpack(result.value, session.dimension),
        result.failed,
        result.reason,
        tuple(names[x - 1] for x in result.suspects),
        tuple(names[x - 1] for x in result.used_points),
        rejections,
    )
