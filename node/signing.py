"""Ed25519 signatures on round envelopes (cluster outputs and echoes).

The signed bytes are `clustering.identity.signing_payload(kind, sender, round, body)` where
``body`` is a length-prefixed, injective encoding of everything else the receiver acts on: the
cluster, the recipient, the sorted metadata and every tensor's name, dtype, shape and
little-endian bytes. A signature made for one round, kind, cluster or recipient therefore never
verifies for another, and no field can be changed without breaking it (RFC 8032 signatures over
a domain-separated message, as `clustering.identity` fixes for every node).
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import replace

import numpy as np
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from phalanx.v1 import node_pb2 as pb

from clustering.identity import NodeIdentity, signing_payload
from node.codec import Message, kind_name
from node.transport import DelegatingTransport, Transport

SIGNED_KINDS: frozenset[int] = frozenset({pb.MESSAGE_KIND_CLUSTER_OUTPUT, pb.MESSAGE_KIND_ECHO})
"""Envelope kinds every node signs and, when the sender's key is configured, verifies."""


class SignatureError(ValueError):
    """A round envelope whose signature is missing or does not verify."""


def _field(data: bytes) -> bytes:
    return struct.pack(">Q", len(data)) + data


def envelope_body(message: Message) -> bytes:
    """Canonical bytes of an envelope's cluster, recipient, metadata and tensors."""
    parts = [struct.pack(">q", message.cluster), _field(message.recipient.encode())]
    parts.append(struct.pack(">Q", len(message.meta)))
    for key in sorted(message.meta):
        parts += [_field(key.encode()), _field(message.meta[key].encode())]
    parts.append(struct.pack(">Q", len(message.tensors)))
    for name in sorted(message.tensors):
        array = np.ascontiguousarray(message.tensors[name])
        little = array.astype(array.dtype.newbyteorder("<"), copy=False)
        digest = hashlib.sha256(np.ascontiguousarray(little).data).digest()
        shape = struct.pack(f">{array.ndim + 1}Q", array.ndim, *array.shape)
        parts += [_field(name.encode()), _field(little.dtype.str.encode()), shape, digest]
    return b"".join(parts)


def signed_bytes(message: Message) -> bytes:
    return signing_payload(
        kind_name(message.kind), message.sender, message.round, envelope_body(message)
    )


def sign_envelope(message: Message, identity: NodeIdentity) -> Message:
    """The same envelope with `signature` set by `identity` (the sender's key)."""
    return replace(message, signature=identity.sign(signed_bytes(message)))


def verify_envelope(message: Message, public_key: bytes) -> None:
    """Raise `SignatureError` unless `message.signature` is the key holder's over the envelope."""
    if not message.signature:
        raise SignatureError(f"{message.kind_name} from {message.sender} is not signed")
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(
            message.signature, signed_bytes(message)
        )
    except (InvalidSignature, ValueError):
        raise SignatureError(
            f"{message.kind_name} from {message.sender}: the signature does not verify"
        ) from None


class SigningTransport(DelegatingTransport):
    """Signs the envelopes of `kinds` with this node's identity, below any Byzantine wrapper (a
    Byzantine node holds its own key and signs whatever it chooses to send)."""

    def __init__(self, inner: Transport, identity: NodeIdentity, kinds: frozenset[int]) -> None:
        super().__init__(inner)
        self.identity = identity
        self.kinds = kinds

    async def send(self, peer: str, message: Message) -> bool:
        if message.kind in self.kinds:
            message = sign_envelope(message, self.identity)
        return await self.inner.send(peer, message)
