"""Typed protocol messages exchanged by the secure-aggregation phases.

Every message carries (round, cluster, sender) so a receiver can reject one that belongs to
another round or cluster before touching its payload; bulk payloads are plain ``bytes`` so the
node can put them straight into protobuf ``bytes`` fields. ``wire_size`` counts the payload plus
a fixed header estimate and is what the per-node byte counters report.
"""

from __future__ import annotations

from dataclasses import dataclass, field

HEADER_BYTES = 32
"""Estimated framing per message: round, cluster id, sender and recipient ids, type tag."""


class ShareRejected(ValueError):
    """A received message was refused (wrong round, cluster, recipient, length or tag)."""


@dataclass(frozen=True)
class KeyAdvertisement:
    """Phase 0: a member's per-round public keys (X25519, 32 bytes each)."""

    round: int
    cluster: str
    sender: str
    encryption_public: bytes
    masking_public: bytes = b""

    def wire_size(self) -> int:
        return HEADER_BYTES + len(self.encryption_public) + len(self.masking_public)


@dataclass(frozen=True)
class EncryptedShare:
    """Phase 1: an AEAD-encrypted Shamir share from ``sender`` to ``recipient``."""

    round: int
    cluster: str
    sender: str
    recipient: str
    purpose: str
    ciphertext: bytes

    def wire_size(self) -> int:
        return HEADER_BYTES + len(self.ciphertext)


@dataclass(frozen=True)
class MaskedInput:
    """SecAgg phase 2: the member's masked field vector (4 bytes per coordinate)."""

    round: int
    cluster: str
    sender: str
    masked: bytes

    def wire_size(self) -> int:
        return HEADER_BYTES + len(self.masked)


@dataclass(frozen=True)
class UnmaskingRequest:
    """SecAgg phase 3 request: survivors (self masks revealed) and dropped (keys revealed)."""

    round: int
    cluster: str
    survivors: tuple[str, ...]
    dropped: tuple[str, ...]

    def wire_size(self) -> int:
        return HEADER_BYTES + sum(len(name) for name in self.survivors + self.dropped)


@dataclass(frozen=True)
class UnmaskingResponse:
    """SecAgg phase 3 response: Shamir shares (serialised field vectors) of seeds.

    ``self_mask_shares`` are shares of b_j for survivors j; ``key_shares`` are shares of the
    masking private key of dropped j. An honest member never fills both for the same j.
    """

    round: int
    cluster: str
    sender: str
    self_mask_shares: dict[str, bytes] = field(default_factory=dict)
    key_shares: dict[str, bytes] = field(default_factory=dict)

    def wire_size(self) -> int:
        shares = list(self.self_mask_shares.items()) + list(self.key_shares.items())
        return HEADER_BYTES + sum(len(name) + len(data) for name, data in shares)


@dataclass(frozen=True)
class PartialSum:
    """Shamir mode: a holder's sum of the shares it holds for the agreed dealer set."""

    round: int
    cluster: str
    sender: str
    value: bytes

    def wire_size(self) -> int:
        return HEADER_BYTES + len(self.value)
