"""The server side of the wire: decode, validate, and hand messages to the node's actors.

Every refusal is a gRPC status plus a log line and a `phalanx_messages_rejected_total` count; the
servicer never lets an exception escape, so bad input cannot take a node down.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import grpc

from node.actors import MailboxFull
from node.codec import CodecError, Message, PayloadTooLarge, decode_chunks, decode_envelope
from phalanx.v1 import node_pb2 as pb
from phalanx.v1 import node_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)


@dataclass
class Rejection(Exception):
    """Why a message was refused: a gRPC status code, a metric reason and a sentence."""

    code: grpc.StatusCode
    reason: str
    detail: str

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}"


Accept = Callable[[Message], Awaitable[None]]
StatusProvider = Callable[[], pb.StatusReply]
RejectHook = Callable[[str, str], None]


class PhalanxServicer(pb_grpc.PhalanxNodeServicer):
    """Implements `phalanx.v1.PhalanxNode` on top of a node's `accept` coroutine."""

    def __init__(
        self,
        node_id: str,
        accept: Accept,
        status: StatusProvider,
        max_message_bytes: int,
        on_reject: RejectHook,
    ) -> None:
        self.node_id = node_id
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
                context, Rejection(grpc.StatusCode.RESOURCE_EXHAUSTED, "too_large", str(error)),
                sender,
            )
        except CodecError as error:
            await self._refuse(
                context, Rejection(grpc.StatusCode.INVALID_ARGUMENT, "malformed", str(error)),
                sender,
            )
        except MailboxFull as error:
            await self._refuse(
                context, Rejection(grpc.StatusCode.RESOURCE_EXHAUSTED, "busy", str(error)), sender
            )
        return pb.Ack(accepted=True)

    async def Send(  # noqa: N802 - gRPC method name
        self, request: pb.Envelope, context: grpc.aio.ServicerContext
    ) -> pb.Ack:
        async def decode() -> Message:
            return decode_envelope(request, self._max_bytes)

        return await self._process(context, decode)

    async def Deliver(  # noqa: N802 - gRPC method name
        self, request_iterator: AsyncIterator[pb.Chunk], context: grpc.aio.ServicerContext
    ) -> pb.Ack:
        async def decode() -> Message:
            return await decode_chunks(request_iterator, self._max_bytes)

        return await self._process(context, decode)

    async def Status(  # noqa: N802 - gRPC method name
        self, request: pb.StatusRequest, context: grpc.aio.ServicerContext
    ) -> pb.StatusReply:
        return self._status()
