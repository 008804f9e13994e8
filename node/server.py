"""The server side of the wire: decode, validate, and hand messages to the node's actors.

Every refusal is a gRPC status plus a log line and a `phalanx_messages_rejected_total` count; the
servicer never lets an exception escape, so bad input cannot take a node down.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import grpc
from google.protobuf.message import DecodeError
from phalanx.v1 import node_pb2 as pb

from node.actors import MailboxFull
from node.codec import (
    CodecError,
    Message,
    PayloadTooLarge,
    decode_chunks,
    decode_envelope,
    encode_chunks,
)

log = logging.getLogger(__name__)


@dataclass
class Rejection(Exception):
    """Why a message was refused: a gRPC status code, a metric reason and a sentence."""

    code: grpc.StatusCode
    reason: str
    detail: str

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}"


SERVICE = "phalanx.v1.PhalanxNode"

MessageT = TypeVar("MessageT", pb.Envelope, pb.Chunk)


def _parse(message_type: type[MessageT], raw: bytes) -> MessageT:
    try:
        return message_type.FromString(raw)
    except DecodeError as error:
        raise CodecError(f"malformed {message_type.__name__} protobuf: {error}") from None


Accept = Callable[[Message], Awaitable[None]]
StatusProvider = Callable[[], pb.StatusReply]
ModelSource = Callable[[pb.ModelRequest], Message]
RejectHook = Callable[[str, str], None]


class PhalanxServicer:
    """Implements `phalanx.v1.PhalanxNode` on top of a node's `accept` coroutine."""

    def __init__(
        self,
        node_id: str,
        accept: Accept,
        status: StatusProvider,
        max_message_bytes: int,
        on_reject: RejectHook,
        model_source: ModelSource,
        chunk_bytes: int,
    ) -> None:
        self.node_id = node_id
        self._model_source = model_source
        self._chunk_bytes = chunk_bytes
        self._accept = accept
        self._status = status
        self._max_bytes = max_message_bytes
        self._on_reject = on_reject

    async def _refuse(
        self, context: grpc.aio.ServicerContext, rejection: Rejection, sender: str
    ) -> None:
        log.warning("%s rejected a message from %s: %s", self.node_id, sender or "?", rejection)
        self._on_reject(rejection.reason, sender)
        await context.abort(rejection.code, str(rejection))

    async def _process(
        self, context: grpc.aio.ServicerContext, decode: Callable[[], Awaitable[Message]]
    ) -> pb.Ack:
        sender = ""
        try:
            message = await decode()
            sender = message.sender
            await self._accept(message)
        except Rejection as rejection:
            await self._refuse(context, rejection, sender)
        except PayloadTooLarge as error:
            await self._refuse(
                context,
                Rejection(grpc.StatusCode.RESOURCE_EXHAUSTED, "too_large", str(error)),
                sender,
            )
        except CodecError as error:
            await self._refuse(
                context,
                Rejection(grpc.StatusCode.INVALID_ARGUMENT, "malformed", str(error)),
                sender,
            )
        except MailboxFull as error:
            await self._refuse(
                context, Rejection(grpc.StatusCode.RESOURCE_EXHAUSTED, "busy", str(error)), sender
            )
        return pb.Ack(accepted=True)

    async def Send(self, request: bytes, context: grpc.aio.ServicerContext) -> pb.Ack:
        async def decode() -> Message:
            return decode_envelope(_parse(pb.Envelope, request), self._max_bytes)

        return await self._process(context, decode)

    async def Deliver(
        self, request_iterator: AsyncIterator[bytes], context: grpc.aio.ServicerContext
    ) -> pb.Ack:
        async def chunks() -> AsyncIterator[pb.Chunk]:
            async for raw in request_iterator:
                yield _parse(pb.Chunk, raw)

        async def decode() -> Message:
            return await decode_chunks(chunks(), self._max_bytes)

        return await self._process(context, decode)

    async def FetchModel(
        self, request: pb.ModelRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.Chunk]:
        try:
            message = self._model_source(request)
        except Rejection as rejection:
            await self._refuse(context, rejection, request.requester)
            return
        for chunk in encode_chunks(message, self._chunk_bytes):
            yield chunk

    def handler(self) -> grpc.GenericRpcHandler:
        """The service's handlers; requests arrive as raw bytes so that a malformed protobuf
        becomes our INVALID_ARGUMENT and log line rather than an opaque gRPC error."""
        ack = pb.Ack.SerializeToString
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "Send": grpc.unary_unary_rpc_method_handler(self.Send, response_serializer=ack),
                "Deliver": grpc.stream_unary_rpc_method_handler(
                    self.Deliver, response_serializer=ack
                ),
                "FetchModel": grpc.unary_stream_rpc_method_handler(
                    self.FetchModel,
                    request_deserializer=pb.ModelRequest.FromString,
                    response_serializer=pb.Chunk.SerializeToString,
                ),
                "Status": grpc.unary_unary_rpc_method_handler(
                    self.Status,
                    request_deserializer=pb.StatusRequest.FromString,
                    response_serializer=pb.StatusReply.SerializeToString,
                ),
            },
        )

    async def Status(
        self, request: pb.StatusRequest, context: grpc.aio.ServicerContext
    ) -> pb.StatusReply:
        return self._status()
