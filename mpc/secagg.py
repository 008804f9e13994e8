"""SecAgg: pairwise masking with double masking and Shamir-shared seeds (Bonawitz et al. 2017).

"Practical Secure Aggregation for Privacy-Preserving Machine Learning", CCS 2017, Fig. 4 (the
honest-but-curious variant, without signatures). Member i with input x_i sends

    y_i = x_i + PRG(b_i) + sum_{j in U2, i < j} PRG(s_ij) - sum_{j in U2, j < i} PRG(s_ij)  (mod p)

where s_ij = HKDF(X25519(s^SK_i, s^PK_j)) is shared with j and b_i is a fresh self-mask seed.
Pairwise masks cancel in the sum. Both s^SK_i and b_i are Shamir-shared t-out-of-n (encrypted to
each member) so that, in the unmasking phase, survivors reveal shares of b_j for survivors j and
of s^SK_j for dropped j, never both for the same j: a late member's y_j stays masked by b_j
(the "double masking" of Sec. 4). The phases a node drives over the network are

    advertise_keys -> share_keys -> masked_input -> unmask (members)  and
    unmasking_request -> finalize (aggregator),

each a pure function of its inputs and the member's own state. Each member sends one masked
vector (4 bytes per coordinate) plus O(n) small messages, i.e. ~1x the float32 update.
Seed shares are reconstructed with Reed-Solomon error correction, so up to floor((r - t)/2)
lying responders are tolerated; a reconstructed key is also checked against its public key.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from phalanx.mpc import field as gf
from phalanx.mpc.crypto import (
    SEED_BYTES,
    Csprng,
    KeyPair,
    Keystream,
    agree,
    keystream_reader,
    prg_keystream,
)
from phalanx.mpc.field import PRIME, FieldVector
from phalanx.mpc.messages import (
    EncryptedShare,
    KeyAdvertisement,
    MaskedInput,
    ShareRejected,
    UnmaskingRequest,
    UnmaskingResponse,
)
from phalanx.mpc.session import ClusterSession
from phalanx.mpc.shamir import reconstruct_robust, share_vector

SEED_PURPOSE = "secagg-seeds"
SEED_ELEMENTS = SEED_BYTES // 2
"""A 32-byte seed is shared as 16 field elements of 16 bits each."""


class ProtocolViolation(RuntimeError):
    """A request that an honest member must refuse (it would unmask someone)."""


def seed_to_field(seed: bytes) -> FieldVector:
    """32 bytes -> 16 field elements (little-endian uint16 chunks, each < p)."""
    return np.frombuffer(seed, dtype="<u2").astype(np.uint32)


def field_to_seed(elements: FieldVector) -> bytes:
    """Inverse of :func:`seed_to_field`; refuses elements that are not 16-bit chunks."""
    if elements.size != SEED_ELEMENTS or int(elements.max()) >= 2**16:
        raise ValueError("reconstructed seed is not 16 chunks of 16 bits")
    return elements.astype("<u2").tobytes()


def pairwise_seed(
    masking: KeyPair, peer_public: bytes, session: ClusterSession, me: str, peer: str
) -> bytes:
    """s_ij: symmetric mask seed of the pair {i, j} for this round and cluster."""
    low, high = sorted((me, peer))
    return agree(masking.private, peer_public, "mask", session.round, session.cluster, low, high)


_P32 = np.uint32(PRIME)

MASK_BLOCK = 1 << 15
"""Coordinates per block of :func:`seal_masks`: the block's uint64 accumulator and one keystream
block (384 KiB together) stay in the CPU cache while every term is added."""


def seal_masks(
    bases: Sequence[FieldVector],
    plus: Sequence[Keystream],
    minus: Sequence[Keystream],
    length: int,
) -> FieldVector:
    """(sum bases + sum PRG(plus) - sum PRG(minus)) mod p, each PRG read from its keystream.

    Every PRG yields exactly the words of :func:`mpc.crypto.prg_field_vector`. The vector is
    built in blocks of `MASK_BLOCK` coordinates: a block's terms are summed in uint64 from
    len(minus) * p (so it never goes negative) and reduced once. A 31-bit keystream word equal
    to p (probability 2^-31) counts as p = 0 in its block; after the last block its redraw is
    read from the same stream position as in `prg_field_vector` and added with its sign.
    """
    streams = [(1, stream) for stream in plus] + [(-1, stream) for stream in minus]
    offset = len(minus) * PRIME
    bound = (len(bases) + len(streams)) * PRIME
    result = np.empty(length, dtype=np.uint32)
    block = max(1, min(MASK_BLOCK, length))
    zeros = memoryview(bytes(4 * block))
    raw = bytearray(4 * block + 15)  # update_into wants room for one more cipher block
    words = np.frombuffer(raw, dtype="<u4", count=block)
    accumulator = np.empty(block, dtype=np.uint64)
    redraw_at: list[list[npt.NDArray[np.intp]]] = [[] for _ in streams]
    for start in range(0, length, block):
        stop = min(length, start + block)
        count = stop - start
        total, chunk = accumulator[:count], words[:count]
        total.fill(offset)
        for base in bases:
            total += base[start:stop]
        for (sign, stream), positions in zip(streams, redraw_at, strict=True):
            stream.update_into(zeros[: 4 * count], raw)
            np.bitwise_and(chunk, _P32, out=chunk)
            if int(chunk.max()) == PRIME:
                positions.append(start + np.flatnonzero(chunk == _P32))
            if sign > 0:
                total += chunk
            else:
                total -= chunk
        result[start:stop] = gf.reduce_u64(total, bound)
    for (sign, stream), positions in zip(streams, redraw_at, strict=True):
        if positions:
            at = np.concatenate(positions)
            redrawn = gf.uniform_from_bytes(keystream_reader(stream), at.size)
            fixed = result[at].astype(np.int64) + sign * redrawn.astype(np.int64)
            result[at] = np.mod(fixed, PRIME).astype(np.uint32)
    return result


def _seal_masks(
    bases: Sequence[FieldVector],
    plus_seeds: Sequence[bytes],
    minus_seeds: Sequence[bytes],
    length: int,
) -> FieldVector:
    """(sum bases + sum PRG(plus) - sum PRG(minus)) mod p for PRG seeds (:func:`seal_masks`)."""
    return seal_masks(
        bases,
        [prg_keystream(seed) for seed in plus_seeds],
        [prg_keystream(seed) for seed in minus_seeds],
        length,
    )


class SecAggMember:
    """One member's side of SecAgg; call the phase methods in order, once each."""

    def __init__(self, session: ClusterSession, member: str, rng: Csprng) -> None:
        session.point(member)
        self.session = session
        self.member = member
        self._rng = rng
        self._encryption = KeyPair.generate(rng)
        self._masking = KeyPair.generate(rng)
        self._self_mask_seed = rng.random_bytes(SEED_BYTES)
        self._advertisements: dict[str, KeyAdvertisement] = {}
        self._held_shares: dict[str, tuple[FieldVector, FieldVector]] = {}
        self._mask_set: tuple[str, ...] = ()
        self._precomputed: tuple[frozenset[str], FieldVector] | None = None
        self._revealed_self: set[str] = set()
        self._revealed_keys: set[str] = set()
        self.rejections: dict[str, str] = {}

    # Phase 0
    def advertise_keys(self) -> KeyAdvertisement:
        """Publish the per-round encryption and masking public keys."""
        return KeyAdvertisement(
            self.session.round,
            self.session.cluster,
            self.member,
            self._encryption.public,
            self._masking.public,
        )

    # Phase 1
    def share_keys(
        self, advertisements: Mapping[str, KeyAdvertisement]
    ) -> dict[str, EncryptedShare]:
        """Shamir-share b_i and s^SK_i among the advertisers U1 and encrypt each share.

        Needs |U1| >= t (Bonawitz et al., Round 1). Returns one message per other member of U1.
        """
        session = self.session
        for name, advertisement in advertisements.items():
            session.check(advertisement.round, advertisement.cluster, advertisement.sender)
            if name != advertisement.sender or len(advertisement.masking_public) != 32:
                raise ShareRejected(f"malformed key advertisement from {name!r}")
        if self.member not in advertisements:
            raise ValueError(f"advertisements must include this member {self.member!r}")
        if len(advertisements) < session.threshold:
            raise ValueError(
                f"only {len(advertisements)} members advertised keys, threshold is "
                f"{session.threshold}"
            )
        self._advertisements = dict(advertisements)
        self_mask_shares = share_vector(
            seed_to_field(self._self_mask_seed), session.threshold, session.size, self._rng
        )
        key_shares = share_vector(
            seed_to_field(self._masking.private_bytes()), session.threshold, session.size, self._rng
        )
        messages = {}
        for recipient in sorted(advertisements):
            index = session.point(recipient) - 1
            plaintext = gf.to_bytes(np.concatenate([self_mask_shares[index], key_shares[index]]))
            if recipient == self.member:
                self._held_shares[self.member] = (self_mask_shares[index], key_shares[index])
                continue
            messages[recipient] = session.seal_share(
                self.member,
                recipient,
                SEED_PURPOSE,
                self._encryption.private,
                advertisements[recipient].encryption_public,
                plaintext,
                self._rng,
            )
        return messages

    def receive_share(self, message: EncryptedShare) -> None:
        """Decrypt and keep one seed share (after :meth:`share_keys`); raises ShareRejected."""
        elements = self.session.open_share(
            message,
            self.member,
            SEED_PURPOSE,
            self._encryption.private,
            self._advertisements,
            self._held_shares,
            2 * SEED_ELEMENTS,
        )
        self._held_shares[message.sender] = (elements[:SEED_ELEMENTS], elements[SEED_ELEMENTS:])

    def held_seed_shares(self) -> tuple[str, ...]:
        """Members whose valid seed shares this member holds (input to the mask-set agreement)."""
        return tuple(sorted(self._held_shares))

    def missing_keys(self, mask_set: Sequence[str]) -> list[str]:
        """Members of ``mask_set`` whose key advertisement this member never received.

        Such a member cannot compute its pairwise masks with them, so it must not send a masked
        input: it drops out with `drop_out` and the aggregator removes its masks as for any
        dropped member (Bonawitz et al. 2017, Sec. 4)."""
        return sorted(set(mask_set) - {self.member} - set(self._advertisements))

    def drop_out(self, mask_set: Sequence[str]) -> None:
        """Take part in unmasking for ``mask_set`` without a masked input of one's own.

        The aggregator counts this member as dropped: the survivors reveal shares of its key
        s^SK (never of its self mask b), and this member still reveals the shares it holds."""
        self._mask_set = tuple(sorted(mask_set))

    def _pairwise_seeds(self, peers: Collection[str]) -> tuple[list[bytes], list[bytes]]:
        """The seeds s_ij with each of ``peers``: added for j > i, subtracted for j < i."""
        plus: list[bytes] = []
        minus: list[bytes] = []
        for peer in sorted(peers):
            seed = pairwise_seed(
                self._masking,
                self._advertisements[peer].masking_public,
                self.session,
                self.member,
                peer,
            )
            (plus if self.member < peer else minus).append(seed)
        return plus, minus

    def precompute_masks(self) -> None:
        """Expand PRG(b_i) +- PRG(s_ij) for every advertiser j now, before the mask set is agreed.

        The masks do not depend on the input, so a node runs this while it waits for the seed
        shares and the mask set U2 to arrive (and, in a training round, during training). When
        U2 is all advertisers, `masked_input` only adds the input; when some dropped, it removes
        their PRG terms. The masked vector is the same field vector either way.
        """
        peers = frozenset(self._advertisements) - {self.member}
        plus, minus = self._pairwise_seeds(peers)
        masks = _seal_masks([], [self._self_mask_seed, *plus], minus, self.session.dimension)
        self._precomputed = (peers, masks)

    # Phase 2
    def masked_input(self, encoded_update: FieldVector, mask_set: Sequence[str]) -> MaskedInput:
        """y_i = x_i + PRG(b_i) +- PRG(s_ij) for j in the agreed set U2 of share senders.

        ``mask_set`` must be the same for every member (the node agrees on it, e.g. the members
        whose shares the aggregator relayed); shares that failed to arrive do not change it.
        """
        session = self.session
        encoded_update = gf.as_field_vector(encoded_update, "encoded_update")
        if encoded_update.size != session.dimension:
            raise ValueError(
                f"encoded_update has {encoded_update.size} elements, "
                f"session dimension is {session.dimension}"
            )
        peers = sorted(set(mask_set) - {self.member})
        missing = [peer for peer in peers if peer not in self._advertisements]
        if self.member not in mask_set or missing:
            raise ValueError(
                f"mask_set must contain this member and only advertisers, missing keys: {missing}"
            )
        self._mask_set = tuple(sorted(mask_set))
        precomputed, self._precomputed = self._precomputed, None
        if precomputed is not None and set(peers) <= precomputed[0]:
            # remove the terms of advertisers outside U2: +PRG(s_ij) is undone by subtracting it
            extra_plus, extra_minus = self._pairwise_seeds(precomputed[0] - set(peers))
            masked = _seal_masks(
                [encoded_update, precomputed[1]], extra_minus, extra_plus, session.dimension
            )
        else:
            plus, minus = self._pairwise_seeds(peers)
            masked = _seal_masks(
                [encoded_update], [self._self_mask_seed, *plus], minus, session.dimension
            )
        return MaskedInput(session.round, session.cluster, self.member, gf.to_bytes(masked))

    # Phase 3
    def unmask(self, request: UnmaskingRequest) -> UnmaskingResponse:
        """Reveal shares of b_j for survivors and of s^SK_j for dropped members.

        Refuses (ProtocolViolation) any request that would reveal both seeds of one member,
        across all requests of this round, or a survivor set below the threshold.
        """
        session = self.session
        session.check(request.round, request.cluster, self.member)
        survivors, dropped = set(request.survivors), set(request.dropped)
        if survivors & dropped:
            raise ProtocolViolation(
                f"members both survived and dropped: {sorted(survivors & dropped)}"
            )
        if not survivors | dropped <= set(self._mask_set):
            raise ProtocolViolation("unmasking request names members outside the mask set")
        if len(survivors) < session.threshold:
            raise ProtocolViolation(
                f"only {len(survivors)} survivors, below threshold {session.threshold}"
            )
        if survivors & self._revealed_keys or dropped & self._revealed_self:
            raise ProtocolViolation("request would reveal both seeds of one member")
        self._revealed_self |= survivors
        self._revealed_keys |= dropped
        self_mask_shares = {
            name: gf.to_bytes(self._held_shares[name][0])
            for name in sorted(survivors)
            if name in self._held_shares
        }
        key_shares = {
            name: gf.to_bytes(self._held_shares[name][1])
            for name in sorted(dropped)
            if name in self._held_shares
        }
        return UnmaskingResponse(
            session.round, session.cluster, self.member, self_mask_shares, key_shares
        )


@dataclass(frozen=True)
class SecAggOutcome:
    """Aggregator output: the field sum of ``included`` inputs, or failed with a reason."""

    field_sum: FieldVector | None
    failed: bool
    included: tuple[str, ...]
    dropped: tuple[str, ...]
    reason: str = ""
    suspects: tuple[str, ...] = ()
    rejections: dict[str, str] = field(default_factory=dict)


class SecAggAggregator:
    """The server role: fixes the survivor set, then removes masks from the sum."""

    def __init__(self, session: ClusterSession) -> None:
        self.session = session
        self._advertisements: dict[str, KeyAdvertisement] = {}
        self._masked: dict[str, FieldVector] = {}
        self._request: UnmaskingRequest | None = None
        self.rejections: dict[str, str] = {}

    def unmasking_request(
        self,
        advertisements: Mapping[str, KeyAdvertisement],
        mask_set: Sequence[str],
        masked_inputs: Sequence[MaskedInput],
    ) -> UnmaskingRequest:
        """U3 = mask-set members whose valid masked input arrived; the rest of U2 dropped.

        Anything arriving after this call is never unmasked (double masking).
        """
        session = self.session
        self._advertisements = dict(advertisements)
        for message in masked_inputs:
            try:
                session.check(message.round, message.cluster, message.sender)
                if message.sender not in mask_set:
                    raise ShareRejected(f"{message.sender!r} is not in the mask set")
                if message.sender in self._masked:
                    raise ShareRejected(f"duplicate masked input from {message.sender!r}")
                self._masked[message.sender] = gf.from_bytes(
                    message.masked, session.dimension, f"masked input of {message.sender!r}"
                )
            except (ShareRejected, ValueError) as error:
                self.rejections[message.sender] = str(error)
        survivors = tuple(sorted(self._masked))
        dropped = tuple(sorted(set(mask_set) - set(survivors)))
        self._request = UnmaskingRequest(session.round, session.cluster, survivors, dropped)
        return self._request

    def _reconstruct_seed(
        self, name: str, responses: Sequence[UnmaskingResponse], which: str
    ) -> tuple[bytes | None, str, tuple[str, ...]]:
        session = self.session
        shares = {}
        for response in responses:
            table = response.self_mask_shares if which == "self" else response.key_shares
            if name in table:
                try:
                    shares[session.point(response.sender)] = gf.from_bytes(
                        table[name], SEED_ELEMENTS, "seed share"
                    )
                except ValueError as error:
                    self.rejections[response.sender] = str(error)
        result = reconstruct_robust(shares, session.threshold)
        suspects = tuple(session.members[x - 1] for x in result.suspects)
        if result.failed or result.value is None:
            return None, f"{which} seed of {name!r}: {result.reason}", suspects
        try:
            return field_to_seed(result.value), "", suspects
        except ValueError as error:
            return None, f"{which} seed of {name!r}: {error}", suspects

    def finalize(self, responses: Sequence[UnmaskingResponse]) -> SecAggOutcome:
        """sum_{i in U3} y_i - PRG(b_i), plus the pairwise masks of dropped members removed."""
        session = self.session
        if self._request is None:
            raise RuntimeError("call unmasking_request before finalize")
        request = self._request
        valid = []
        for response in responses:
            try:
                session.check(response.round, response.cluster, response.sender)
                valid.append(response)
            except ShareRejected as error:
                self.rejections[response.sender] = str(error)
        survivors, dropped = request.survivors, request.dropped
        suspects: set[str] = set()

        def outcome(field_sum: FieldVector | None, reason: str = "") -> SecAggOutcome:
            return SecAggOutcome(
                field_sum,
                field_sum is None,
                survivors,
                dropped,
                reason,
                tuple(sorted(suspects)),
                dict(self.rejections),
            )

        if len(survivors) < session.threshold:
            return outcome(None, f"only {len(survivors)} survivors, threshold {session.threshold}")
        self_seeds = []
        for name in survivors:
            seed, reason, found = self._reconstruct_seed(name, valid, "self")
            suspects.update(found)
            if seed is None:
                return outcome(None, reason)
            self_seeds.append(seed)
        plus_seeds: list[bytes] = []
        minus_seeds: list[bytes] = []
        for name in dropped:
            raw, reason, found = self._reconstruct_seed(name, valid, "key")
            suspects.update(found)
            if raw is None:
                return outcome(None, reason)
            masking = KeyPair.from_private_bytes(raw)
            if masking.public != self._advertisements[name].masking_public:
                return outcome(None, f"reconstructed key of {name!r} does not match its public key")
            for survivor in survivors:
                seed = pairwise_seed(
                    masking, self._advertisements[survivor].masking_public, session, name, survivor
                )
                # survivor added +PRG(s) when survivor < name, so remove it with the opposite sign
                (minus_seeds if survivor < name else plus_seeds).append(seed)
        masked_vectors = [self._masked[name] for name in survivors]
        field_sum = _seal_masks(
            masked_vectors, plus_seeds, [*self_seeds, *minus_seeds], session.dimension
        )
        return outcome(field_sum)
