"""An in-memory network: many peers on one event loop, each message through its real acceptance
path.

`MemoryTransport` implements `node.transport.Transport`. A send runs what a gRPC call runs, minus
the socket: the sender's `SigningTransport` (and any Byzantine wrapper) above it has signed and
addressed the envelope; the header is serialised and parsed as protobuf; the tensors travel as
the codec's (spec, little-endian bytes) parts and are decoded with its size and shape checks;
then `node.server.receive` runs the receiver's header checks, signature check, admission and
`accept`, exactly as the servicer does. A refusal comes back to the sender as the same status
code, and the transport retries what `GrpcTransport` retries.

What differs from the wire, by design:

* a broadcast's payload is encoded once and the bytes shared, read-only, by every recipient
  (the digests, and so the models, are the same: the bytes are);
* there is no kernel TCP, no TLS handshake and no HTTP/2 flow control: a message is delivered
  in the sender's task, and its cost is the codec, the signature and the receiver's checks;
* faults are applied here: a peer that is down or on the other side of a partition is
  UNAVAILABLE; ``delay`` sleeps before delivery; ``loss`` fails an attempt (message loss, where
  the netns testbed drops packets that TCP then retransmits).

With ``mutual_tls`` the network names the sending peer to the receiver as its TLS identity, as
a verified client certificate would (a Byzantine peer cannot choose it).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import grpc
import numpy as np

from phalanx.node.codec import (
    CodecError,
    HeaderCheck,
    Message,
    TensorPart,
    decode_chunks,
    decode_parts,
    encode_chunks,
    encode_parts,
    immutable_base,
    kind_name,
    make_header,
    tensor_spec,
)
from phalanx.node.server import Rejection, receive
from phalanx.node.transport import RETRYABLE, RetryPolicy, SendObserver
from phalanx.v1 import node_pb2 as pb

if TYPE_CHECKING:
    from phalanx.node.peer import Peer

log = logging.getLogger(__name__)

UNAVAILABLE = Rejection(grpc.StatusCode.UNAVAILABLE, "unavailable", "peer unreachable")


def _field_bytes(length: int) -> int:
    """Bytes of one length-delimited protobuf field of `length` bytes (tag, varint, data)."""
    varint = 1
    while length >= 0x80 << (7 * (varint - 1)):
        varint += 1
    return 1 + varint + length


def _immutable_bytes(array: np.ndarray) -> memoryview | None:
    """The array's bytes without a copy, when nothing can change them (`immutable_base`) and
    they are laid out as the wire's: contiguous and little-endian. Else None."""
    if immutable_base(array) is None or not array.flags.c_contiguous:
        return None
    if array.dtype.byteorder == ">" or (array.dtype.byteorder == "=" and not np.little_endian):
        return None
    return array.data.cast("B")


class _EncodedPayloads:
    """The codec parts of a message's tensors, encoded once per tensor mapping: a broadcast
    (one mapping, one `dataclasses.replace` copy per recipient) costs one encoding. A tensor
    that is an immutable view over `bytes` travels as that memory, uncopied; the receiver
    decodes read-only views, as the wire's bytes would be."""

    def __init__(self, size: int = 256) -> None:
        self.size = size
        self._entries: OrderedDict[int, tuple[Mapping[str, np.ndarray], list[TensorPart]]] = (
            OrderedDict()
        )

    def __call__(self, tensors: Mapping[str, np.ndarray]) -> list[TensorPart]:
        entry = self._entries.get(id(tensors))
        if entry is not None and entry[0] is tensors:
            self._entries.move_to_end(id(tensors))
            return entry[1]
        parts = self._encode(tensors)
        if tensors:
            self._entries[id(tensors)] = (tensors, parts)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
        return parts

    @staticmethod
    def _encode(tensors: Mapping[str, np.ndarray]) -> list[TensorPart]:
        shared = {name: _immutable_bytes(array) for name, array in tensors.items()}
        copied = encode_parts({n: a for n, a in tensors.items() if shared[n] is None})
        by_name = {spec.name: (spec, data) for spec, data in copied}
        return [
            by_name[name] if view is None else (tensor_spec(name, tensors[name]), view)
            for name, view in shared.items()
        ]


@dataclass
class Shaping:
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss_pct: float = 0.0


@dataclass
class MemoryNetwork:
    """The peers of one simulation and the faults between them."""

    max_message_bytes: int
    chunk_bytes: int
    mutual_tls: bool = False
    seed: int = 0
    peers: dict[str, Peer] = field(default_factory=dict)
    down: set[str] = field(default_factory=set)
    groups: list[frozenset[str]] = field(default_factory=list)
    shaping: dict[str, Shaping] = field(default_factory=dict)
    delivered: int = 0

    def __post_init__(self) -> None:
        self._payloads = _EncodedPayloads()
        self._faults = random.Random(self.seed)

    def attach(self, peer: Peer) -> None:
        """The peer serves (it has started): calls reach its acceptance path from now on."""
        self.peers[peer.id] = peer
        self.down.discard(peer.id)

    def detach(self, peer_id: str) -> None:
        """The peer is down (killed): every call to it is UNAVAILABLE until it is attached."""
        self.down.add(peer_id)

    def partition(self, side: list[str]) -> None:
        """Cut `side` off from every other peer."""
        self.groups = [frozenset(side), frozenset(set(self.peers) - set(side))]

    def heal(self, nodes: list[str] | None = None) -> None:
        self.groups = []
        for node in nodes or list(self.shaping):
            self.shaping.pop(node, None)

    def reachable(self, sender: str, recipient: str) -> Peer | None:
        """The recipient, when it is up and on the sender's side of any partition."""
        if recipient in self.down or sender in self.down:
            return None
        peer = self.peers.get(recipient)
        if peer is None:
            return None
        for group in self.groups:
            if (sender in group) != (recipient in group):
                return None
        return peer

    async def _shape(self, sender: str, recipient: str) -> bool:
        """Apply delay and loss of either end; False when this attempt is lost."""
        delay_s = 0.0
        lost = False
        for end in (sender, recipient):
            shape = self.shaping.get(end)
            if shape is None:
                continue
            delay_s += (shape.delay_ms + self._faults.uniform(0, shape.jitter_ms)) / 1000
            lost = lost or self._faults.uniform(0, 100) < shape.loss_pct
        if delay_s > 0:
            await asyncio.sleep(delay_s)
        return not lost

    async def deliver(self, sender: str, recipient: str, message: Message) -> tuple[bool, int]:
        """One attempt: (accepted, wire bytes); raises `Rejection` for a refusal."""
        if not await self._shape(sender, recipient):
            raise UNAVAILABLE
        peer = self.reachable(sender, recipient)
        if peer is None:
            raise UNAVAILABLE
        header = pb.Header.FromString(make_header(message).SerializeToString())
        parts = self._payloads(message.tensors)
        wire_bytes = _field_bytes(header.ByteSize()) + sum(
            _field_bytes(_field_bytes(spec.ByteSize()) + _field_bytes(len(data)))
            for spec, data in parts
        )

        async def decode(on_header: HeaderCheck) -> Message:
            return decode_parts(header, parts, self.max_message_bytes, on_header, copy=False)

        identity = sender if self.mutual_tls else None
        rejection = await receive(
            recipient, decode, lambda: identity, peer.admit, peer.accept, peer.rejected
        )
        if rejection is not None:
            raise rejection
        self.delivered += 1
        return True, wire_bytes


class MemoryTransport:
    """`Transport` over a `MemoryNetwork`, for the peer `owner`."""

    def __init__(
        self,
        network: MemoryNetwork,
        owner: str,
        addresses: Mapping[str, str],
        *,
        observer: SendObserver | None = None,
        retry: RetryPolicy | None = None,
        seed: int = 0,
    ) -> None:
        self.network = network
        self.owner = owner
        self.retry = retry or RetryPolicy()
        self._observer = observer
        self._jitter = random.Random(seed)
        self.addresses = dict(addresses)

    def _known(self, peer: str) -> None:
        if peer not in self.addresses:
            raise KeyError(f"unknown peer {peer!r}")

    async def send(self, peer: str, message: Message) -> bool:
        """Deliver to `peer`'s acceptance path; retries what `GrpcTransport.send` retries."""
        self._known(peer)
        for attempt in range(self.retry.attempts):
            try:
                accepted, wire_bytes = await self.network.deliver(self.owner, peer, message)
            except Rejection as rejection:
                last = attempt == self.retry.attempts - 1
                if rejection.code not in RETRYABLE or last:
                    if rejection is not UNAVAILABLE:
                        log.warning(
                            "send %s to %s failed: %s %s",
                            kind_name(message.kind),
                            peer,
                            rejection.code.name,
                            rejection,
                        )
                    self._observe(peer, message, 0, False)
                    return False
                backoff = min(self.retry.max_s, self.retry.base_s * 2**attempt)
                await asyncio.sleep(self._jitter.uniform(0, backoff))
                continue
            self._observe(peer, message, wire_bytes, True)
            return accepted
        return False

    async def send_once(self, peer: str, message: Message, timeout_s: float) -> bool:
        """One attempt, no retry (SWIM's traffic)."""
        self._known(peer)
        try:
            accepted, wire_bytes = await asyncio.wait_for(
                self.network.deliver(self.owner, peer, message), timeout_s
            )
        except (Rejection, TimeoutError):
            self._observe(peer, message, 0, False)
            return False
        self._observe(peer, message, wire_bytes, True)
        return accepted

    async def status(self, peer: str, timeout_s: float = 2.0) -> pb.StatusReply | None:
        target = self.network.reachable(self.owner, peer)
        if target is None:
            return None
        return pb.StatusReply.FromString(target.status_reply().SerializeToString())

    async def serving(self, peer: str, timeout_s: float = 1.0) -> bool:
        return self.network.reachable(self.owner, peer) is not None

    async def fetch_model(
        self, peer: str, request: pb.ModelRequest, max_bytes: int
    ) -> Message | None:
        """The peer's model, served by its `model_message` checks and streamed through the
        codec's chunking, as `FetchModel` does."""
        target = self.network.reachable(self.owner, peer)
        if target is None:
            return None
        identity = self.owner if self.network.mutual_tls else None
        try:
            request = pb.ModelRequest.FromString(request.SerializeToString())
            message = await target.model_message(request, identity)

            async def chunks() -> AsyncIterator[pb.Chunk]:
                for chunk in encode_chunks(message, self.network.chunk_bytes):
                    yield pb.Chunk.FromString(chunk.SerializeToString())

            return await decode_chunks(chunks(), max_bytes)
        except (Rejection, CodecError) as error:
            log.warning(
                "fetching the round-%d model from %s failed: %s", request.round, peer, error
            )
            return None

    def _observe(self, peer: str, message: Message, nbytes: int, ok: bool) -> None:
        if self._observer is not None:
            self._observer(peer, message, nbytes, 0.0, ok)

    async def close(self) -> None:
        return None
