"""Ed25519 signatures on every envelope a node sends, and on its state-transfer requests.

Every message is bound to its sender (RFC 8032 signatures by the sender's long-term identity key,
`clustering.identity`). The signed bytes are `clustering.identity.signing_payload(kind, sender,
round, body)`, where ``body`` is a length-prefixed, injective encoding of everything else the
receiver acts on: the cluster, the recipient, the sorted metadata, and each tensor's name, dtype
and shape with the SHA-256 of its little-endian bytes. So:

* a signature made for one round, kind, cluster or recipient never verifies for another (no
  cross-round, cross-kind or cross-recipient replay; a replay within the same slot is a duplicate
  for the receiver's inbox, whose first valid message wins);
* no field can be altered in transit without breaking it;
* large tensors are hashed once per message, not once per recipient and not per chunk: the
  digest of a message's tensors is cached, and each recipient costs one Ed25519 signature over a
  few hundred bytes.

`SigningTransport` sets the recipient of every outgoing envelope to the peer it is sent to before
signing, below any Byzantine wrapper: a Byzantine node holds its own key and signs whatever it
chooses to send, but it cannot sign in another node's name.

A cluster output disseminated along a tree (`clustering.dissemination = "tree"`) is signed by
its publisher for every node at once (recipient `RELAYED`, "*"), so its signature still verifies
after peers forward it. Each hop adds the forwarding peer's signature (`relay_signature`) over
the publisher's signature and the hop's receiver, binding the relayer to what it passed on: a
relayer can drop an output, never alter one, and the receiver authenticates the relayer as it
does any sender.

State transfer requests (`FetchModel`) are signed too (`sign_model_request`), with the time they
were issued, so that without TLS only an allow-listed peer can read a node's model and a captured
request cannot be replayed outside the allowed clock skew.
"""

from __future__ import annotations

import hashlib
import struct
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import replace

import numpy as np
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from phalanx.clustering.identity import SIGNATURE_BYTES, NodeIdentity, signing_payload
from phalanx.node.codec import Message, immutable_base, kind_name
from phalanx.node.transport import DelegatingTransport, Transport
from phalanx.v1 import node_pb2 as pb

RELAYED = "*"
"""The recipient of a message signed for every node: a cluster output that peers relay."""

RELAY_KIND = "relay"
"""The `signing_payload` kind of a relay signature (distinct from every envelope kind)."""

MODEL_REQUEST_KIND = "model_request"
"""The `signing_payload` kind of a signed `ModelRequest` (distinct from every envelope kind)."""

_DIGEST_CACHE_SIZE = 8
"""Messages whose tensor digests a sender keeps: a broadcast signs one message for every peer
within moments, so a few suffice, and the cache never pins more than a few models in memory."""


class SignatureError(ValueError):
    """A message whose signature is missing or does not verify."""


def _field(data: bytes) -> bytes:
    return struct.pack(">Q", len(data)) + data


class _TensorDigests:
    """SHA-256 per tensor of a message, cached by the identity of its tensor mapping.

    A broadcast sends one `Message` object (or copies made by `dataclasses.replace`, which share
    the mapping) to many peers; hashing its tensors once keeps signing off the hot path. The
    cache holds a reference to each mapping it keys, so an id is never reused while cached.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: OrderedDict[int, tuple[Mapping[str, np.ndarray], bytes]] = OrderedDict()

    def clear(self) -> None:
        self._entries.clear()

    def __call__(self, tensors: Mapping[str, np.ndarray]) -> bytes:
        entry = self._entries.get(id(tensors))
        if entry is not None and entry[0] is tensors:
            return entry[1]
        encoded = _encode_tensors(tensors)
        if tensors:  # an empty mapping may be a shared default: nothing worth caching
            self._entries[id(tensors)] = (tensors, encoded)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
        return encoded


class _ImmutableDigests:
    """SHA-256 of immutable byte buffers, by identity: the same `bytes` object always hashes
    the same, so the recipients of one broadcast on the memory engine (read-only views of one
    buffer) hash it once. A daemon decodes every message into fresh writeable arrays, which are
    never memoized. The memo holds each buffer it keys, so an id is not reused while cached."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: OrderedDict[int, tuple[bytes, bytes]] = OrderedDict()

    def __call__(self, array: np.ndarray) -> bytes | None:
        base = immutable_base(array)
        if base is None or array.nbytes != len(base) or not array.flags.c_contiguous:
            return None
        if array.dtype.byteorder == ">" or (array.dtype.byteorder == "=" and not np.little_endian):
            return None
        entry = self._entries.get(id(base))
        if entry is not None and entry[0] is base:
            self._entries.move_to_end(id(base))
            return entry[1]
        digest = hashlib.sha256(base).digest()
        self._entries[id(base)] = (base, digest)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)
        return digest


_immutable_digests = _ImmutableDigests(1024)


def _encode_tensors(tensors: Mapping[str, np.ndarray]) -> bytes:
    parts = [struct.pack(">Q", len(tensors))]
    for name in sorted(tensors):
        array = np.ascontiguousarray(tensors[name])
        little = np.ascontiguousarray(array.astype(array.dtype.newbyteorder("<"), copy=False))
        digest = _immutable_digests(little) or hashlib.sha256(little.data).digest()
        shape = struct.pack(f">{array.ndim + 1}Q", array.ndim, *array.shape)
        parts += [_field(name.encode()), _field(little.dtype.str.encode()), shape, digest]
    return b"".join(parts)


tensor_digests = _TensorDigests(_DIGEST_CACHE_SIZE)


def envelope_body(message: Message, cached: bool = True) -> bytes:
    """Canonical bytes of an envelope's cluster, recipient, metadata and tensors (`cached`: reuse
    the digests of a message signed before; a receiver verifies each message once and does not
    cache)."""
    parts = [struct.pack(">q", message.cluster), _field(message.recipient.encode())]
    parts.append(struct.pack(">Q", len(message.meta)))
    for key in sorted(message.meta):
        parts += [_field(key.encode()), _field(message.meta[key].encode())]
    parts.append(tensor_digests(message.tensors) if cached else _encode_tensors(message.tensors))
    return b"".join(parts)


def signed_bytes(message: Message, cached: bool = True) -> bytes:
    return signing_payload(
        kind_name(message.kind), message.sender, message.round, envelope_body(message, cached)
    )


def sign_envelope(message: Message, identity: NodeIdentity) -> Message:
    """The same envelope with `signature` set by `identity` (the sender's key)."""
    return replace(message, signature=identity.sign(signed_bytes(message)))


def _verify(public_key: bytes, signature: bytes, data: bytes, what: str) -> None:
    if not signature:
        raise SignatureError(f"{what} is not signed")
    if len(signature) != SIGNATURE_BYTES:
        raise SignatureError(f"{what}: the signature has {len(signature)} bytes, not 64")
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, data)
    except (InvalidSignature, ValueError):
        raise SignatureError(f"{what}: the signature does not verify") from None


def verify_envelope(message: Message, public_key: bytes) -> None:
    """Raise `SignatureError` unless `message.signature` is the key holder's over the envelope."""
    _verify(
        public_key,
        message.signature,
        signed_bytes(message, cached=False),
        f"{message.kind_name} from {message.sender}",
    )


def relay_bytes(message: Message, relayer: str, receiver: str) -> bytes:
    """Canonical bytes a relayer signs for one hop: the publisher's signature (which binds the
    whole envelope) and the hop's receiver."""
    body = _field(message.signature) + _field(receiver.encode())
    return signing_payload(RELAY_KIND, relayer, message.round, body)


def sign_relay(message: Message, identity: NodeIdentity, relayer: str, receiver: str) -> Message:
    """`message` as forwarded by `relayer` (holding `identity`) to `receiver`; the publisher's
    signature is left as it is."""
    return replace(
        message,
        relayed_by=relayer,
        relay_signature=identity.sign(relay_bytes(message, relayer, receiver)),
    )


def verify_relay(message: Message, relayer_key: bytes, receiver: str) -> None:
    """Raise `SignatureError` unless the relayer signed this hop to `receiver`."""
    _verify(
        relayer_key,
        message.relay_signature,
        relay_bytes(message, message.relayed_by, receiver),
        f"{message.kind_name} of {message.sender} relayed by {message.relayed_by}",
    )


def model_request_bytes(request: pb.ModelRequest) -> bytes:
    """Canonical bytes of a state-transfer request (everything but its signature)."""
    body = b"".join(
        (
            _field(request.digest.encode()),
            _field(request.recipient.encode()),
            struct.pack(">Q", request.issued_at_ms),
        )
    )
    return signing_payload(MODEL_REQUEST_KIND, request.requester, request.round, body)


def sign_model_request(request: pb.ModelRequest, identity: NodeIdentity) -> pb.ModelRequest:
    """`request` stamped with the current time and signed by the requester's identity."""
    signed = pb.ModelRequest()
    signed.CopyFrom(request)
    signed.issued_at_ms = int(time.time() * 1000)
    signed.signature = identity.sign(model_request_bytes(signed))
    return signed


def verify_model_request(
    request: pb.ModelRequest, public_key: bytes, recipient: str, skew_s: float
) -> None:
    """Raise `SignatureError` unless `request` is signed by `public_key`, addressed to
    `recipient`, and issued within `skew_s` of now."""
    what = f"model request from {request.requester}"
    if request.recipient != recipient:
        raise SignatureError(f"{what} is addressed to {request.recipient!r}, not {recipient!r}")
    age_s = time.time() - request.issued_at_ms / 1000
    if abs(age_s) > skew_s:
        raise SignatureError(f"{what} was issued {age_s:.0f} s ago (allowed skew {skew_s:g} s)")
    _verify(public_key, request.signature, model_request_bytes(request), what)


class SigningTransport(DelegatingTransport):
    """Addresses and signs every outgoing envelope and model request with this node's identity.

    It sits below any Byzantine wrapper: a Byzantine node holds its own key and signs whatever it
    chooses to send, in its own name only. A message of another sender (`owner` is this node's
    id) is a relayed cluster output: it keeps its publisher's signature and gets this node's
    relay signature for the hop. ``enabled = False`` sends unsigned envelopes; it exists to
    measure what signing costs and is never a deployment setting.
    """

    def __init__(
        self, inner: Transport, identity: NodeIdentity, enabled: bool = True, owner: str = ""
    ) -> None:
        super().__init__(inner)
        self.identity = identity
        self.enabled = enabled
        self.owner = owner

    def _sealed(self, peer: str, message: Message) -> Message:
        if self.owner and message.sender != self.owner:
            return sign_relay(message, self.identity, self.owner, peer)
        if not message.recipient:
            message = replace(message, recipient=peer)
        return sign_envelope(message, self.identity) if self.enabled else message

    async def send(self, peer: str, message: Message) -> bool:
        return await self.inner.send(peer, self._sealed(peer, message))

    async def send_once(self, peer: str, message: Message, timeout_s: float) -> bool:
        return await self.inner.send_once(peer, self._sealed(peer, message), timeout_s)

    async def fetch_model(
        self, peer: str, request: pb.ModelRequest, max_bytes: int
    ) -> Message | None:
        request = pb.ModelRequest(
            requester=request.requester, round=request.round, digest=request.digest, recipient=peer
        )
        return await self.inner.fetch_model(
            peer, sign_model_request(request, self.identity), max_bytes
        )
