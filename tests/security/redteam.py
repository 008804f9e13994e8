"""The red team's own gRPC client: it speaks Phalanx's wire format directly, with or without a
valid certificate or key, so the tests can send what no honest node would (forged, replayed,
cross-round, oversized, overflowing and malformed messages, floods and fuzz)."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import grpc

from phalanx.clustering.identity import NodeIdentity
from phalanx.node.codec import Message, encode_chunks, encode_envelope
from phalanx.node.signing import sign_envelope, sign_model_request
from phalanx.v1 import node_pb2 as pb
from phalanx.v1 import node_pb2_grpc as pb_grpc


@dataclass(frozen=True)
class ClientCertificate:
    """A certificate the red team holds (its own node's, valid and signed by the run's CA)."""

    ca: Path
    cert: Path
    key: Path

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca.read_bytes(),
            private_key=self.key.read_bytes(),
            certificate_chain=self.cert.read_bytes(),
        )


def signed_as(message: Message, identity: NodeIdentity, recipient: str) -> Message:
    """`message` addressed to `recipient` and signed with `identity`, whoever it claims to be."""
    return sign_envelope(replace(message, recipient=recipient), identity)


class RedTeamClient:
    """One channel to one node; every call returns the gRPC status code the node answered."""

    def __init__(self, address: str, certificate: ClientCertificate | None = None) -> None:
        if certificate is None:
            self.channel = grpc.aio.insecure_channel(address)
        else:
            self.channel = grpc.aio.secure_channel(address, certificate.credentials())
        self.stub = pb_grpc.PhalanxNodeStub(self.channel)

    async def close(self) -> None:
        await self.channel.close()

    async def __aenter__(self) -> RedTeamClient:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def send(self, message: Message, timeout_s: float = 10.0) -> grpc.StatusCode:
        """One unary `Send`."""
        try:
            await self.stub.Send(encode_envelope(message), timeout=timeout_s)
        except grpc.aio.AioRpcError as error:
            return error.code()
        return grpc.StatusCode.OK

    async def deliver(
        self, message: Message, chunk_bytes: int = 256 * 1024, timeout_s: float = 10.0
    ) -> grpc.StatusCode:
        """One streamed `Deliver` of `message` in chunks."""
        try:
            await self.stub.Deliver(
                iter(list(encode_chunks(message, chunk_bytes))), timeout=timeout_s
            )
        except grpc.aio.AioRpcError as error:
            return error.code()
        return grpc.StatusCode.OK

    async def deliver_chunks(
        self, chunks: Iterable[pb.Chunk], timeout_s: float = 10.0
    ) -> grpc.StatusCode:
        """A `Deliver` stream of hand-made chunks (wrong sizes, second headers, ...)."""
        try:
            await self.stub.Deliver(iter(list(chunks)), timeout=timeout_s)
        except grpc.aio.AioRpcError as error:
            return error.code()
        return grpc.StatusCode.OK

    async def raw(self, method: str, payload: bytes, timeout_s: float = 10.0) -> grpc.StatusCode:
        """Arbitrary bytes as the request of a unary method (``Send``, ``Status``)."""
        call = self.channel.unary_unary(f"/phalanx.v1.PhalanxNode/{method}")
        try:
            await call(payload, timeout=timeout_s)
        except grpc.aio.AioRpcError as error:
            return error.code()
        return grpc.StatusCode.OK

    async def fetch_model(
        self,
        requester: str,
        round_: int,
        digest: str,
        recipient: str,
        identity: NodeIdentity | None = None,
        timeout_s: float = 10.0,
    ) -> tuple[grpc.StatusCode, int]:
        """A `FetchModel` request, signed by `identity` when given; (status, chunks received)."""
        request = pb.ModelRequest(
            requester=requester, round=round_, digest=digest, recipient=recipient
        )
        if identity is not None:
            request = sign_model_request(request, identity)
        received = 0
        try:
            async for _chunk in self.stub.FetchModel(request, timeout=timeout_s):
                received += 1
        except grpc.aio.AioRpcError as error:
            return error.code(), received
        return grpc.StatusCode.OK, received

    async def raw_fetch(self, payload: bytes, timeout_s: float = 10.0) -> grpc.StatusCode:
        call = self.channel.unary_stream("/phalanx.v1.PhalanxNode/FetchModel")
        try:
            async for _chunk in call(payload, timeout=timeout_s):
                pass
        except grpc.aio.AioRpcError as error:
            return error.code()
        return grpc.StatusCode.OK

    async def status(self, timeout_s: float = 5.0) -> pb.StatusReply | None:
        try:
            reply: pb.StatusReply = await self.stub.Status(pb.StatusRequest(), timeout=timeout_s)
        except grpc.aio.AioRpcError:
            return None
        return reply


def scrape(metrics_port: int, host: str = "127.0.0.1") -> dict[str, float]:
    """Every sample a node's Prometheus endpoint exports, as ``name{labels}`` -> value."""
    text = urllib.request.urlopen(f"http://{host}:{metrics_port}/metrics", timeout=10).read()
    samples: dict[str, float] = {}
    for line in text.decode().splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


def rejected(samples: dict[str, float], reason: str) -> float:
    return samples.get(f'phalanx_messages_rejected_total{{reason="{reason}"}}', 0.0)
