"""The server side of the wire: decode, validate, and hand messages to the node's actors.

Every refusal is a gRPC status plus a log line and a `phalanx_messages_rejected_total` count; the
servicer never lets an exception escape, so bad input cannot take a node down.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import grpc
from google.protobuf.message import DecodeError

from phalanx.node.actors import MailboxFull
from phalanx.node.codec import (
    CodecError,
    Message,
    PayloadTooLarge,
    decode_chunks,
    decode_envelope,
    encode_chunks,
)
from phalanx.v1 import node_pb2 as pb

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


Accept = Callable[[Message, "str | None"], Awaitable[None]]
"""The node's acceptance path: (decoded message, the caller's TLS identity or None)."""
Admit = Callable[[pb.Header, "str | None"], None]
"""The node's header checks, run before a payload is decoded or buffered."""
StatusProvider = Callable[[], pb.StatusReply]
ModelSource = Callable[[pb.ModelRequest, "str | None"], Awaitable[Message]]
RejectHook = Callable[[str, str], None]

TLS_IDENTITY_KEY = "x509_common_name"
"""The auth-context property that names a mutual-TLS caller: its certificate's subject CN. The
SAN is not used, since every certificate of a testbed shares host entries such as localhost."""


def tls_identity(context: grpc.aio.ServicerContext) -> str | None:
    """The caller's identity from its verified client certificate, or None without TLS."""
    auth = context.auth_context() or {}
    names = auth.get(TLS_IDENTITY_KEY) or []
    if not names:
        return None
    name = names[0]
    return name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)


def _log_refusal(node_id: str, rejection: Rejection, sender: str, on_reject: RejectHook) -> None:
    log.warning("%s rejected a message from %s: %s", node_id, sender or "?", rejection)
    on_reject(rejection.reason, sender)


async def receive(
    node_id: str,
    decode: Callable[[Callable[[pb.Header], None]], Awaitable[Message]],
    identity_of: Callable[[], str | None],
    admit: Admit | None,
    accept: Accept,
    on_reject: RejectHook,
) -> Rejection | None:
    """A node's acceptance pipeline for one incoming message, the same in both engines: the
    caller's identity, the header checks (before the payload costs memory), decoding, then the
    node's `accept`. Returns None when accepted, else the rejection, already logged and counted;
    no exception escapes, so bad input cannot take a node down."""
    sender = ""
    try:
        identity = identity_of()

        def on_header(header: pb.Header) -> None:
            nonlocal sender
            sender = header.sender
            if admit is not None:
                admit(header, identity)

        message = await decode(on_header)
        sender = message.sender
        await accept(message, identity)
        return None
    except Rejection as error:
        rejection = error
    except PayloadTooLarge as error:
        rejection = Rejection(grpc.StatusCode.RESOURCE_EXHAUSTED, "too_large", str(error))
    except CodecError as error:
        rejection = Rejection(grpc.StatusCode.INVALID_ARGUMENT, "malformed", str(error))
    except MailboxFull as error:
        rejection = Rejection(grpc.StatusCode.RESOURCE_EXHAUSTED, "busy", str(error))
    except asyncio.CancelledError:
        raise
    except Exception as error:  # a bug must cost one refused message, never the node
        log.exception("%s: internal error on a message from %s", node_id, sender or "?")
        rejection = Rejection(grpc.StatusCode.INTERNAL, "internal", type(error).__name__)
    _log_refusal(node_id, rejection, sender, on_reject)
    return rejection


class PhalanxServicer:
    """Implements `phalanx.v1.PhalanxNode` on top of a node's `admit` and `accept` checks."""

    def __init__(
        self,
        node_id: str,
        accept: Accept,
        status: StatusProvider,
        max_message_bytes: int,
        on_reject: RejectHook,
        model_source: ModelSource,
        chunk_bytes: int,
        admit: Admit | None = None,
        require_tls_identity: bool = False,
    ) -> None:
        self.node_id = node_id
        self._model_source = model_source
        self._chunk_bytes = chunk_bytes
        self._accept = accept
        self._admit = admit
        self._status = status
        self._max_bytes = max_message_bytes
        self._on_reject = on_reject
        self._require_tls_identity = require_tls_identity

    async def _refuse(
        self, context: grpc.aio.ServicerContext, rejection: Rejection, sender: str
    ) -> None:
        _log_refusal(self.node_id, rejection, sender, self._on_reject)
        await context.abort(rejection.code, str(rejection))

    def _identity(self, context: grpc.aio.ServicerContext) -> str | None:
        identity = tls_identity(context)
        if identity is None and self._require_tls_identity:
            raise Rejection(
                grpc.StatusCode.UNAUTHENTICATED,
                "impersonation",
                "the caller presented no client certificate naming a peer",
            )
        return identity

    async def _process(
        self,
        context: grpc.aio.ServicerContext,
        decode: Callable[[Callable[[pb.Header], None]], Awaitable[Message]],
    ) -> pb.Ack:
        rejection = await receive(
            self.node_id,
            decode,
            lambda: self._identity(context),
            self._admit,
            self._accept,
            self._on_reject,
        )
        if rejection is not None:
            await context.abort(rejection.code, str(rejection))
        return pb.Ack(accepted=True)

    async def Send(self, request: bytes, context: grpc.aio.ServicerContext) -> pb.Ack:
        async def decode(on_header: Callable[[pb.Header], None]) -> Message:
            return decode_envelope(_parse(pb.Envelope, request), self._max_bytes, on_header)

        return await self._process(context, decode)

    async def Deliver(
        self, request_iterator: AsyncIterator[bytes], context: grpc.aio.ServicerContext
    ) -> pb.Ack:
        async def chunks() -> AsyncIterator[pb.Chunk]:
            async for raw in request_iterator:
                yield _parse(pb.Chunk, raw)

        async def decode(on_header: Callable[[pb.Header], None]) -> Message:
            return await decode_chunks(chunks(), self._max_bytes, on_header)

        return await self._process(context, decode)

    async def FetchModel(
        self, raw: bytes, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.Chunk]:
        request = pb.ModelRequest()
        try:
            request = _parse(pb.ModelRequest, raw)
            message = await self._model_source(request, self._identity(context))
        except Rejection as rejection:
            await self._refuse(context, rejection, request.requester)
            return
        except CodecError as error:
            malformed = Rejection(grpc.StatusCode.INVALID_ARGUMENT, "malformed", str(error))
            await self._refuse(context, malformed, "")
            return
        except Exception as error:  # never let a bug escape as UNKNOWN
            log.exception("%s: internal error serving a model", self.node_id)
            internal = Rejection(grpc.StatusCode.INTERNAL, "internal", type(error).__name__)
            await self._refuse(context, internal, request.requester)
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
                    response_serializer=pb.Chunk.SerializeToString,
                ),
                "Status": grpc.unary_unary_rpc_method_handler(
                    self.Status,
                    response_serializer=pb.StatusReply.SerializeToString,
                ),
            },
        )

    async def Status(self, request: bytes, context: grpc.aio.ServicerContext) -> pb.StatusReply:
        """Open to anyone who can connect: round, phase and model digest are not secret (the
        model itself is, see `FetchModel`). The request carries nothing and is not parsed."""
        return self._status()
