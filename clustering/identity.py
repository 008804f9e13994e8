"""Long-term node identities: Ed25519 keys, node ids derived from them, signed messages.

Ed25519 (Bernstein et al., "High-speed high-security signatures", 2012; RFC 8032) signs every
membership and cluster-output message. The primitives come from `cryptography`; this module only
fixes the conventions every node must share:

* **Node id** = the first 16 hex characters (64 bits) of SHA-256 over the 32-byte raw public key,
  ``node_id = hex(SHA256(raw_public_key))[:16]``. A node therefore cannot claim an id without
  holding the matching key: `verify` recomputes the id from the key it is given.
* **Signed bytes** = `signing_payload(kind, sender, round, payload)`: a domain tag followed by
  length-prefixed fields, so no two different (kind, sender, round, payload) tuples share bytes and
  a signature made for one message kind or round cannot be replayed as another.
* **Allow-list**: when configured, only listed node ids are accepted (`check_allowed`).

Pure library: keys are read and written only by the explicit `load`/`save` helpers.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

NODE_ID_HEX_CHARS = 16
"""Length of a node id in hex characters (64 bits of SHA-256 of the raw public key)."""

PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64
SIGNING_DOMAIN = b"phalanx/v1/signed-message\x00"
"""Domain-separation tag prefixed to every signed byte string."""

KEY_FILE_MODE = 0o600


class IdentityError(ValueError):
    """Base class for every rejected identity, key or signature."""


class BadSignatureError(IdentityError):
    """The signature does not verify for the given key and message."""


class NodeIdMismatchError(IdentityError):
    """The claimed node id is not the id derived from the presented public key."""


class NotAllowedError(IdentityError):
    """The node id is not in the configured allow-list."""


def _raw_public_key(public_key: Ed25519PublicKey | bytes) -> bytes:
    if isinstance(public_key, Ed25519PublicKey):
        return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    if not isinstance(public_key, bytes | bytearray) or len(public_key) != PUBLIC_KEY_BYTES:
        got = len(public_key) if isinstance(public_key, bytes | bytearray) else type(public_key)
        raise IdentityError(
            f"public_key must be {PUBLIC_KEY_BYTES} raw Ed25519 bytes or an Ed25519PublicKey, "
            f"got {got!r}"
        )
    return bytes(public_key)


def node_id_from_public_key(public_key: Ed25519PublicKey | bytes) -> str:
    """Node id = first `NODE_ID_HEX_CHARS` hex characters of SHA-256(raw 32-byte public key)."""
    return hashlib.sha256(_raw_public_key(public_key)).hexdigest()[:NODE_ID_HEX_CHARS]


def signing_payload(kind: str, sender: str, round: int, payload: bytes) -> bytes:
    """Canonical bytes to sign for a message (e.g. a serialized protobuf) of a given kind.

    Layout: ``SIGNING_DOMAIN || u16 len(kind) || kind || u16 len(sender) || sender ||
    u64 round || u64 len(payload) || payload`` (big-endian, UTF-8 strings). Length prefixes make
    the encoding injective, so a signature binds the kind, the sender and the round.
    """
    if not kind:
        raise ValueError("kind must be a non-empty string")
    if not sender:
        raise ValueError("sender must be a non-empty node id")
    if not 0 <= round < 2**64:
        raise ValueError(f"round must be in [0, 2**64), got {round}")
    if not isinstance(payload, bytes | bytearray):
        raise ValueError(f"payload must be bytes, got {type(payload).__name__}")
    kind_bytes = kind.encode("utf-8")
    sender_bytes = sender.encode("utf-8")
    for name, field in (("kind", kind_bytes), ("sender", sender_bytes)):
        if len(field) >= 2**16:
            raise ValueError(f"{name} must be shorter than 65536 UTF-8 bytes, got {len(field)}")
    return b"".join(
        (
            SIGNING_DOMAIN,
            struct.pack(">H", len(kind_bytes)),
            kind_bytes,
            struct.pack(">H", len(sender_bytes)),
            sender_bytes,
            struct.pack(">Q", round),
            struct.pack(">Q", len(payload)),
            bytes(payload),
        )
    )


@dataclass(frozen=True)
class NodeIdentity:
    """A node's long-term Ed25519 key pair and the node id derived from it."""

    private_key: Ed25519PrivateKey

    @classmethod
    def generate(cls) -> NodeIdentity:
        """A fresh key pair from the operating system's CSPRNG."""
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def derived(cls, label: str) -> NodeIdentity:
        """A key pair derived from `label` (SHA-256 of it is the RFC 8032 private key): for
        simulations that must replay exactly from their seed. Never for a deployment."""
        return cls(Ed25519PrivateKey.from_private_bytes(hashlib.sha256(label.encode()).digest()))

    @classmethod
    def from_pem(cls, pem: bytes) -> NodeIdentity:
        """Parse an unencrypted PKCS#8 PEM Ed25519 private key."""
        try:
            key = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError) as error:
            raise IdentityError(f"cannot parse Ed25519 private key PEM: {error}") from error
        if not isinstance(key, Ed25519PrivateKey):
            raise IdentityError(f"expected an Ed25519 private key, got {type(key).__name__}")
        return cls(key)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> NodeIdentity:
        """Read a key written by `save`."""
        return cls.from_pem(Path(path).read_bytes())

    @classmethod
    def load_or_generate(cls, path: str | os.PathLike[str]) -> NodeIdentity:
        """Load the key at `path`, or generate one and save it there (mode 0600)."""
        if Path(path).exists():
            return cls.load(path)
        identity = cls.generate()
        identity.save(path)
        return identity

    def to_pem(self) -> bytes:
        return self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> None:
        """Write the private key as PEM, readable by the owner only (mode 0600)."""
        write_private_file(Path(path), self.to_pem(), overwrite=overwrite)

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.private_key.public_key()

    @property
    def public_key_bytes(self) -> bytes:
        return _raw_public_key(self.public_key)

    @property
    def node_id(self) -> str:
        return node_id_from_public_key(self.public_key)

    def sign(self, message: bytes) -> bytes:
        """Ed25519 signature (64 bytes) over `message`, usually a `signing_payload`."""
        return self.private_key.sign(message)

    def sign_message(self, kind: str, round: int, payload: bytes) -> bytes:
        """Sign `signing_payload(kind, self.node_id, round, payload)`."""
        return self.sign(signing_payload(kind, self.node_id, round, payload))

    def __repr__(self) -> str:  # never print key material
        return f"NodeIdentity(node_id={self.node_id!r})"


def write_private_file(path: Path, data: bytes, *, overwrite: bool = False) -> None:
    """Create `path` with mode 0600 from the start (no window where others can read it)."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    try:
        fd = os.open(path, flags, KEY_FILE_MODE)
    except FileExistsError as error:
        raise FileExistsError(
            f"{path} already exists; pass overwrite=True to replace it"
        ) from error
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(path, KEY_FILE_MODE)


def check_allowed(node_id: str, allow_list: Collection[str] | None) -> None:
    """Raise `NotAllowedError` unless `allow_list` is None (open membership) or holds `node_id`."""
    if allow_list is not None and node_id not in allow_list:
        raise NotAllowedError(f"node id {node_id!r} is not in the allow-list")


def verify(
    node_id: str,
    public_key: Ed25519PublicKey | bytes,
    message: bytes,
    signature: bytes,
    allow_list: Collection[str] | None = None,
) -> None:
    """Accept `signature` on `message` from `node_id`, or raise an `IdentityError` subclass.

    Checks, in order: the id is allowed (`NotAllowedError`), the id is the one derived from
    `public_key` (`NodeIdMismatchError`), and the Ed25519 signature verifies (`BadSignatureError`).
    """
    check_allowed(node_id, allow_list)
    derived = node_id_from_public_key(public_key)
    if derived != node_id:
        raise NodeIdMismatchError(
            f"node id {node_id!r} does not match its public key (derived id {derived!r})"
        )
    if len(signature) != SIGNATURE_BYTES:
        raise BadSignatureError(
            f"signature from {node_id!r} must be {SIGNATURE_BYTES} bytes, got {len(signature)}"
        )
    key = Ed25519PublicKey.from_public_bytes(_raw_public_key(public_key))
    try:
        key.verify(signature, message)
    except InvalidSignature as error:
        raise BadSignatureError(f"bad signature from node {node_id!r}") from error


def verify_message(
    kind: str,
    sender: str,
    round: int,
    payload: bytes,
    public_key: Ed25519PublicKey | bytes,
    signature: bytes,
    allow_list: Collection[str] | None = None,
) -> None:
    """`verify` applied to `signing_payload(kind, sender, round, payload)`."""
    verify(sender, public_key, signing_payload(kind, sender, round, payload), signature, allow_list)
