"""The client side of the wire: one reused channel per peer, deadlines, retries with backoff.

`Transport` is deliberately small (send a `Message` to a peer, close), like httpx's transport
layer: tests can swap it, and Byzantine behaviours wrap it without touching the honest code.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from phalanx.node.codec import (
    CodecError,
    Message,
    decode_chunks,
    encode_chunks,
    encode_envelope,
    kind_name,
)
from phalanx.v1 import node_pb2 as pb
from phalanx.v1 import node_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED})
CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", 8 * 1024 * 1024),
    ("grpc.max_receive_message_length", 8 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.enable_retries", 0),  # retries are ours: they span a whole streamed message
    # A peer that was down (crashed, partitioned) must be reachable again within a round of its
    # return: gRPC's default reconnect backoff grows to 120 s, during which every send fails
    # fast with UNAVAILABLE. Cap it at 1 s.
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.min_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


class Transport(Protocol):
    """What the node needs from the wire; `GrpcTransport` is the real one, and Byzantine
    behaviours wrap it."""

    async def send(self, peer: str, message: Message) -> bool: ...

    async def send_once(self, peer: str, message: Message, timeout_s: float) -> bool: ...

    async def status(self, peer: str, timeout_s: float = 2.0) -> pb.StatusReply | None: ...

    async def serving(self, peer: str, timeout_s: float = 1.0) -> bool: ...

    async def fetch_model(
        self, peer: str, request: pb.ModelRequest, max_bytes: int
    ) -> Message | None: ...

    async def close(self) -> None: ...


class DelegatingTransport:
    """A transport that hands every call to `inner`; wrappers (signing, Byzantine behaviours)
    subclass it and override only what they change."""

    def __init__(self, inner: Transport) -> None:
        self.inner = inner

    async def send(self, peer: str, message: Message) -> bool:
        return await self.inner.send(peer, message)

    async def send_once(self, peer: str, message: Message, timeout_s: float) -> bool:
        return await self.inner.send_once(peer, message, timeout_s)

    async def status(self, peer: str, timeout_s: float = 2.0) -> pb.StatusReply | None:
        return await self.inner.status(peer, timeout_s)

    async def serving(self, peer: str, timeout_s: float = 1.0) -> bool:
        return await self.inner.serving(peer, timeout_s)

    async def fetch_model(
        self, peer: str, request: pb.ModelRequest, max_bytes: int
    ) -> Message | None:
        return await self.inner.fetch_model(peer, request, max_bytes)

    async def close(self) -> None:
        await self.inner.close()


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter (AWS architecture blog, 2015): sleep U(0, b*2^i)."""

    attempts: int = 4
    base_s: float = 0.05
    max_s: float = 1.0


SendObserver = Callable[[str, Message, int, float, bool], None]


class GrpcTransport:
    """Sends messages over gRPC; small ones unary (`Send`), large ones streamed (`Deliver`)."""

    def __init__(
        self,
        addresses: Mapping[str, str],
        *,
        deadline_s: float = 10.0,
        chunk_bytes: int = 1024 * 1024,
        retry: RetryPolicy | None = None,
        observer: SendObserver | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        seed: int = 0,
    ) -> None:
        self.addresses = dict(addresses)
        self.deadline_s = deadline_s
        self.chunk_bytes = chunk_bytes
        self.retry = retry or RetryPolicy()
        self._observer = observer
        self._credentials = credentials
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._stubs: dict[str, pb_grpc.PhalanxNodeStub] = {}
        self._jitter = random.Random(seed)

    def _stub(self, peer: str) -> pb_grpc.PhalanxNodeStub:
        stub = self._stubs.get(peer)
        if stub is None:
            address = self.addresses[peer]
            if self._credentials is not None:
                channel = grpc.aio.secure_channel(address, self._credentials, CHANNEL_OPTIONS)
            else:
                channel = grpc.aio.insecure_channel(address, CHANNEL_OPTIONS)
            self._channels[peer] = channel
            stub = self._stubs[peer] = pb_grpc.PhalanxNodeStub(channel)
        return stub

    async def send(self, peer: str, message: Message) -> bool:
        """Deliver `message` to `peer`; True when the peer accepted it.

        Retries UNAVAILABLE and RESOURCE_EXHAUSTED (a full mailbox) with jittered backoff, each
        attempt bounded by the deadline; any other status is final and logged.
        """
        if peer not in self.addresses:
            raise KeyError(f"unknown peer {peer!r}")
        stub = self._stub(peer)
        streamed = message.payload_bytes() > self.chunk_bytes // 2
        rpc = "deliver" if streamed else "send"
        for attempt in range(self.retry.attempts):
            started = time.perf_counter()
            try:
                if streamed:
                    chunks = list(encode_chunks(message, self.chunk_bytes))
                    wire_bytes = sum(c.ByteSize() for c in chunks)
                    ack = await stub.Deliver(iter(chunks), timeout=self.deadline_s)
                else:
                    envelope = encode_envelope(message)
                    wire_bytes = envelope.ByteSize()
                    ack = await stub.Send(envelope, timeout=self.deadline_s)
                self._observe(peer, message, wire_bytes, time.perf_counter() - started, True)
                return bool(ack.accepted)
            except grpc.aio.AioRpcError as error:
                code = error.code()
                last = attempt == self.retry.attempts - 1
                if code not in RETRYABLE or last:
                    log.warning(
                        "%s %s to %s failed: %s %s",
                        rpc,
                        kind_name(message.kind),
                        peer,
                        code.name,
                        error.details(),
                    )
                    self._observe(peer, message, 0, time.perf_counter() - started, False)
                    return False
                backoff = min(self.retry.max_s, self.retry.base_s * 2**attempt)
                await asyncio.sleep(self._jitter.uniform(0, backoff))
        return False

    async def send_once(self, peer: str, message: Message, timeout_s: float) -> bool:
        """One unary attempt within `timeout_s`, no retry: for failure-detector traffic (SWIM),
        where a late message is a lost message and the protocol does its own retrying."""
        if peer not in self.addresses:
            raise KeyError(f"unknown peer {peer!r}")
        envelope = encode_envelope(message)
        started = time.perf_counter()
        try:
            ack = await self._stub(peer).Send(envelope, timeout=timeout_s)
        except grpc.aio.AioRpcError as error:
            log.debug("%s to %s failed: %s", kind_name(message.kind), peer, error.code().name)
            self._observe(peer, message, 0, time.perf_counter() - started, False)
            return False
        self._observe(peer, message, envelope.ByteSize(), time.perf_counter() - started, True)
        return bool(ack.accepted)

    async def status(self, peer: str, timeout_s: float = 2.0) -> pb.StatusReply | None:
        """The peer's (round, digest), or None. Bounded here as well as by the gRPC deadline:
        a call to a peer behind a network partition was seen to outlive its deadline by 9 s."""
        call = self._stub(peer).Status(pb.StatusRequest(), timeout=timeout_s)
        try:
            reply: pb.StatusReply = await asyncio.wait_for(call, timeout_s + 0.25)
            return reply
        except (TimeoutError, grpc.aio.AioRpcError):
            call.cancel()
            return None

    async def fetch_model(
        self, peer: str, request: pb.ModelRequest, max_bytes: int
    ) -> Message | None:
        """The peer's model after `request.round`, streamed; None when it does not hold it."""
        round_ = request.round
        try:
            stream = self._stub(peer).FetchModel(request, timeout=self.deadline_s * 6)
            return await decode_chunks(stream.__aiter__(), max_bytes)
        except (grpc.aio.AioRpcError, CodecError) as error:
            log.warning("fetching the round-%d model from %s failed: %s", round_, peer, error)
            return None

    async def serving(self, peer: str, timeout_s: float = 1.0) -> bool:
        """True when the peer's gRPC health service says SERVING."""
        self._stub(peer)
        health = health_pb2_grpc.HealthStub(self._channels[peer])
        try:
            reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=timeout_s)
        except grpc.aio.AioRpcError:
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    def _observe(self, peer: str, message: Message, nbytes: int, seconds: float, ok: bool) -> None:
        if self._observer is not None:
            self._observer(peer, message, nbytes, seconds, ok)

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self._channels.values()), return_exceptions=True)
        self._channels.clear()
        self._stubs.clear()
