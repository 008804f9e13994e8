"""The agreed parameters of one secure aggregation in one cluster and one round."""

from __future__ import annotations

from collections.abc import Container, Mapping
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from phalanx.mpc import field as gf
from phalanx.mpc.crypto import (
    Csprng,
    ShareAuthenticationError,
    ShareContext,
    decrypt_share,
    encrypt_share,
    share_key,
)
from phalanx.mpc.field import FieldVector
from phalanx.mpc.messages import EncryptedShare, KeyAdvertisement, ShareRejected
from phalanx.mpc.shamir import packed_length


@dataclass(frozen=True)
class ClusterSession:
    """Members (canonical sorted order), round, cluster id, Shamir threshold and vector length.

    Member ``members[k]`` holds Shamir point k + 1, so every party derives the same points.
    ``packing`` secrets share one polynomial (Franklin & Yung 1992; 1 = plain Shamir): privacy
    still holds against ``threshold - 1`` colluders, reconstruction needs
    :attr:`reconstruction_threshold` = t + l - 1 holders, and shares have :attr:`share_length`.
    """

    members: tuple[str, ...]
    round: int
    cluster: str
    threshold: int
    dimension: int
    packing: int = 1

    def __post_init__(self) -> None:
        if len(set(self.members)) != len(self.members):
            raise ValueError(f"members must be distinct, got {self.members}")
        if tuple(sorted(self.members)) != self.members:
            object.__setattr__(self, "members", tuple(sorted(self.members)))
        if len(self.members) < 2:
            raise ValueError(
                f"secure aggregation needs a cluster of at least 2 members, got {len(self.members)}"
            )
        if not 1 <= self.threshold <= len(self.members):
            raise ValueError(
                f"threshold must be in [1, cluster size {len(self.members)}], got {self.threshold}"
            )
        if self.packing < 1:
            raise ValueError(f"packing must be >= 1, got {self.packing}")
        if self.reconstruction_threshold > len(self.members):
            raise ValueError(
                f"packing {self.packing} with threshold {self.threshold} needs t + l - 1 = "
                f"{self.reconstruction_threshold} holders to reconstruct, more than the cluster "
                f"size {len(self.members)}"
            )
        if self.dimension < 1:
            raise ValueError(f"dimension must be >= 1, got {self.dimension}")
        if self.round < 0:
            raise ValueError(f"round must be >= 0, got {self.round}")

    @property
    def size(self) -> int:
        return len(self.members)

    @property
    def reconstruction_threshold(self) -> int:
        """Partial sums needed to reconstruct: t + l - 1 (t when unpacked)."""
        return self.threshold + self.packing - 1

    @property
    def share_length(self) -> int:
        """Field elements per share and per partial sum: ceil(dimension / packing)."""
        return packed_length(self.dimension, self.packing)

    def point(self, member: str) -> int:
        """Shamir evaluation point of ``member`` (1-based rank in the sorted member list)."""
        try:
            return self.members.index(member) + 1
        except ValueError:
            raise ShareRejected(f"{member!r} is not a member of cluster {self.cluster!r}") from None

    def check(self, message_round: int, message_cluster: str, sender: str) -> None:
        """Reject a message addressed to another round or cluster, or from a non-member."""
        if message_round != self.round:
            raise ShareRejected(
                f"message from {sender!r} is for round {message_round}, expected {self.round}"
            )
        if message_cluster != self.cluster:
            raise ShareRejected(
                f"message from {sender!r} is for cluster {message_cluster!r}, "
                f"expected {self.cluster!r}"
            )
        self.point(sender)

    def seal_share(
        self,
        sender: str,
        recipient: str,
        purpose: str,
        private: X25519PrivateKey,
        recipient_public: bytes,
        plaintext: bytes,
        rng: Csprng,
    ) -> EncryptedShare:
        """AES-GCM-encrypt one share under the X25519 key of (purpose, round, cluster, sender,
        recipient): only that recipient can open it, and only in this session."""
        context = ShareContext(purpose, self.round, self.cluster, sender, recipient)
        key = share_key(private, recipient_public, context)
        return EncryptedShare(
            self.round,
            self.cluster,
            sender,
            recipient,
            purpose,
            encrypt_share(key, context, plaintext, rng),
        )

    def open_share(
        self,
        message: EncryptedShare,
        recipient: str,
        purpose: str,
        private: X25519PrivateKey,
        advertisements: Mapping[str, KeyAdvertisement],
        already_held: Container[str],
        length: int,
    ) -> FieldVector:
        """Check, decrypt and parse one share sealed by :meth:`seal_share` as ``length`` field
        elements. Raises :class:`ShareRejected` (the node logs it) on a share for another round,
        cluster, recipient or purpose, from a sender without keys, a duplicate (replay), failed
        authentication or a wrong length."""
        self.check(message.round, message.cluster, message.sender)
        if message.recipient != recipient or message.purpose != purpose:
            raise ShareRejected(
                f"share from {message.sender!r} is addressed to {message.recipient!r} "
                f"for {message.purpose!r}, expected {recipient!r} for {purpose!r}"
            )
        if message.sender not in advertisements:
            raise ShareRejected(f"share from {message.sender!r}, who advertised no keys")
        if message.sender in already_held:
            raise ShareRejected(f"duplicate share from {message.sender!r} (replay?)")
        context = ShareContext(purpose, self.round, self.cluster, message.sender, recipient)
        key = share_key(private, advertisements[message.sender].encryption_public, context)
        try:
            plaintext = decrypt_share(key, context, message.ciphertext)
            return gf.from_bytes(plaintext, length, f"share from {message.sender!r}")
        except (ShareAuthenticationError, ValueError) as error:
            raise ShareRejected(str(error)) from error


def default_threshold(mode: str, cluster_size: int) -> int:
    """Default Shamir threshold t for a cluster of m members.

    * ``secagg``: t = floor(m/2) + 1, the honest-majority choice of Bonawitz et al. (2017,
      Sec. 6): a strict majority must help before any seed can be reconstructed.
    * ``shamir``: t = max(2, floor((m-1)/3) + 1): privacy against t - 1 < m/3 colluders; with all m
      partial sums received floor((m - t)/2) >= t - 1 lying holders are corrected when m >= 3.
    """
    if cluster_size < 2:
        raise ValueError(f"cluster_size must be >= 2 for secure aggregation, got {cluster_size}")
    if mode == "secagg":
        return cluster_size // 2 + 1
    if mode == "shamir":
        return max(2, (cluster_size - 1) // 3 + 1)
    raise ValueError(f"mode must be 'secagg' or 'shamir', got {mode!r}")
