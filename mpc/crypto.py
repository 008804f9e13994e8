"""Key agreement, key derivation, mask PRG and authenticated share encryption.

* Key agreement: X25519 (RFC 7748) followed by HKDF-SHA256 (RFC 5869), as in Bonawitz et al.
  (CCS 2017, Sec. 4: "KA.agree" then a hash) and Bell et al. (CCS 2020).
* Mask PRG: AES-256 in counter mode keyed by a 32-byte seed, keystream turned into exactly
  uniform field elements by :func:`mpc.field.uniform_from_bytes` (rejection of the one
  out-of-range 31-bit value). Unlike numpy's Mersenne Twister with a 32-bit seed (used by some
  SecAgg+ implementations), its output is computationally indistinguishable from uniform.
* Share encryption: AES-256-GCM with a key per (round, cluster, sender, recipient, purpose)
  derived by HKDF from the X25519 secret, and associated data binding the same tuple, so a
  ciphertext replayed into another round, cluster, phase or direction fails authentication.
  Keys come from per-round ephemeral X25519 pairs, so privacy never depends on the transport.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from phalanx.mpc.field import FieldVector, uniform_from_bytes

SEED_BYTES = 32
"""Length of PRG seeds and symmetric keys (256 bits)."""

NONCE_BYTES = 12
_PROTOCOL_LABEL = b"phalanx-mpc-v1"


class ShareAuthenticationError(ValueError):
    """A ciphertext failed AEAD authentication: tampered, replayed or addressed to someone else."""


class Csprng:
    """Deterministic cryptographic random source: AES-256-CTR keystream from a 32-byte key.

    ``Csprng(None)`` draws the key from the OS (production); ``Csprng(seed)`` derives it from
    the seed by SHA-256 so that simulations and tests are bit-reproducible. The numpy Generator
    is never used for anything secret.
    """

    def __init__(self, seed: int | bytes | str | None = None) -> None:
        if seed is None:
            key = os.urandom(SEED_BYTES)
        else:
            material = seed if isinstance(seed, bytes) else str(seed).encode()
            key = hashlib.sha256(b"phalanx-csprng|" + material).digest()
        self._encryptor = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor()

    def random_bytes(self, count: int) -> bytes:
        """The next ``count`` bytes of the keystream."""
        return self._encryptor.update(bytes(count))

    def field_elements(self, count: int) -> FieldVector:
        """``count`` independent uniform elements of GF(2^31 - 1)."""
        return uniform_from_bytes(self.random_bytes, count)

    def child(self, label: str) -> Csprng:
        """An independent stream for a sub-party (e.g. one simulated node), keyed from this one."""
        return Csprng(self.random_bytes(SEED_BYTES) + label.encode())


class Keystream(Protocol):
    """A PRG keystream read by encrypting zero bytes (a :func:`prg_keystream` encryptor)."""

    def update(self, data: bytes) -> bytes: ...

    def update_into(self, data: bytes | memoryview, buf: bytearray) -> int: ...


def keystream_reader(stream: Keystream) -> Callable[[int], bytes]:
    """The next ``count`` bytes of ``stream``'s keystream."""
    return lambda count: stream.update(bytes(count))


def prg_keystream(seed: bytes) -> CipherContext:
    """The mask PRG's keystream for a 32-byte seed: AES-256-CTR from a zero counter block, read
    by encrypting zero bytes (``update`` or ``update_into``)."""
    if len(seed) != SEED_BYTES:
        raise ValueError(f"PRG seed must be {SEED_BYTES} bytes, got {len(seed)}")
    return Cipher(algorithms.AES(seed), modes.CTR(bytes(16))).encryptor()


def prg_field_vector(seed: bytes, length: int) -> FieldVector:
    """Expand a 32-byte seed into ``length`` uniform field elements with AES-256-CTR."""
    return uniform_from_bytes(keystream_reader(prg_keystream(seed)), length)


@dataclass(frozen=True)
class KeyPair:
    """An X25519 key pair; ``public`` is the 32-byte raw encoding sent to peers."""

    private: X25519PrivateKey
    public: bytes

    @classmethod
    def generate(cls, rng: Csprng) -> KeyPair:
        """A key pair whose private scalar comes from ``rng`` (clamped by X25519 itself)."""
        private = X25519PrivateKey.from_private_bytes(rng.random_bytes(32))
        return cls(private, public_bytes(private))

    @classmethod
    def from_private_bytes(cls, raw: bytes) -> KeyPair:
        """Rebuild a key pair from its 32 raw private bytes (e.g. after Shamir reconstruction)."""
        if len(raw) != 32:
            raise ValueError(f"X25519 private key must be 32 bytes, got {len(raw)}")
        private = X25519PrivateKey.from_private_bytes(raw)
        return cls(private, public_bytes(private))

    def private_bytes(self) -> bytes:
        """The 32 raw private bytes (only ever Shamir-shared, never sent in the clear)."""
        return self.private.private_bytes_raw()


def public_bytes(private: X25519PrivateKey) -> bytes:
    """Raw 32-byte encoding of the public key."""
    return private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def context_bytes(*fields: str | int) -> bytes:
    """Unambiguous length-prefixed encoding of a context tuple (used as HKDF info and AD)."""
    parts = [_PROTOCOL_LABEL]
    for field in fields:
        raw = field.encode() if isinstance(field, str) else struct.pack(">q", field)
        parts.append(struct.pack(">I", len(raw)) + raw)
    return b"".join(parts)


def agree(private: X25519PrivateKey, peer_public: bytes, *context: str | int) -> bytes:
    """X25519 shared secret, expanded by HKDF-SHA256 with ``context`` as info (32 bytes).

    Both parties obtain the same key when they pass the same context, so the context must list
    the two parties in a canonical order when the key is meant to be symmetric.
    """
    if len(peer_public) != 32:
        raise ValueError(f"X25519 public key must be 32 bytes, got {len(peer_public)}")
    shared = private.exchange(X25519PublicKey.from_public_bytes(peer_public))
    return HKDF(
        algorithm=hashes.SHA256(), length=SEED_BYTES, salt=None, info=context_bytes(*context)
    ).derive(shared)


@dataclass(frozen=True)
class ShareContext:
    """What a ciphertext is bound to: it decrypts only under the identical tuple."""

    purpose: str
    round: int
    cluster: str
    sender: str
    recipient: str

    def fields(self) -> tuple[str | int, ...]:
        return ("share", self.purpose, self.round, self.cluster, self.sender, self.recipient)


def share_key(private: X25519PrivateKey, peer_public: bytes, context: ShareContext) -> bytes:
    """Directional AEAD key for one (purpose, round, cluster, sender, recipient) tuple."""
    return agree(private, peer_public, *context.fields())


def encrypt_share(key: bytes, context: ShareContext, plaintext: bytes, rng: Csprng) -> bytes:
    """AES-256-GCM encryption; output is nonce || ciphertext || tag, AD is the context tuple."""
    nonce = rng.random_bytes(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, context_bytes(*context.fields()))


def decrypt_share(key: bytes, context: ShareContext, ciphertext: bytes) -> bytes:
    """Inverse of :func:`encrypt_share`; raises :class:`ShareAuthenticationError` on mismatch."""
    if len(ciphertext) < NONCE_BYTES + 16:
        raise ShareAuthenticationError(
            f"ciphertext from {context.sender} to {context.recipient} is {len(ciphertext)} bytes, "
            f"shorter than nonce + tag ({NONCE_BYTES + 16})"
        )
    nonce, body = ciphertext[:NONCE_BYTES], ciphertext[NONCE_BYTES:]
    try:
        return AESGCM(key).decrypt(nonce, body, context_bytes(*context.fields()))
    except InvalidTag as error:
        raise ShareAuthenticationError(
            f"share from {context.sender} to {context.recipient} for round {context.round}, "
            f"cluster {context.cluster!r}, purpose {context.purpose!r} failed authentication "
            f"(tampered, replayed or wrong key)"
        ) from error
