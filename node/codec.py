"""Tensors and envelopes on the wire: raw little-endian bytes, streamed in chunks.

A tensor crosses as (dtype, shape, bytes), never as repeated floats. An envelope larger than one
chunk is split so that no single gRPC message exceeds `chunk_bytes`; the receiver reassembles it
and refuses an announced size above its limit before buffering anything.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from phalanx.v1 import node_pb2 as pb

PROTOCOL_VERSION = 1

_DTYPES: dict[int, np.dtype] = {
    pb.DTYPE_FLOAT32: np.dtype("<f4"),
    pb.DTYPE_FLOAT64: np.dtype("<f8"),
    pb.DTYPE_INT64: np.dtype("<i8"),
    pb.DTYPE_UINT64: np.dtype("<u8"),
    pb.DTYPE_UINT8: np.dtype("u1"),
    pb.DTYPE_INT32: np.dtype("<i4"),
}
_CODES: dict[str, int] = {dt.name: code for code, dt in _DTYPES.items()}


class CodecError(ValueError):
    """A message that cannot be decoded; the text says what is wrong with it."""


class PayloadTooLarge(CodecError):
    """A message announced or carried more bytes than the receiver accepts."""


@dataclass(frozen=True)
class Message:
    """A decoded envelope: who sent it, for which round, what kind, and its named tensors."""

    sender: str
    round: int
    kind: int
    cluster: int = -1
    tensors: Mapping[str, np.ndarray] = field(default_factory=dict)
    meta: Mapping[str, str] = field(default_factory=dict)
    recipient: str = ""
    signature: bytes = b""
    relayed_by: str = ""
    """The peer that forwarded this message for its `sender` (a relayed cluster output)."""
    relay_signature: bytes = b""

    @property
    def kind_name(self) -> str:
        return kind_name(self.kind)

    def payload_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors.values())


def kind_name(kind: int) -> str:
    """`MESSAGE_KIND_UPDATE` -> `update`, for logs and metric labels."""
    try:
        return pb.MessageKind.Name(kind).removeprefix("MESSAGE_KIND_").lower()  # type: ignore[arg-type]
    except ValueError:
        return "unknown"


def tensor_spec(name: str, array: np.ndarray) -> pb.TensorSpec:
    code = _CODES.get(array.dtype.name)
    if code is None:
        raise CodecError(f"tensor {name!r}: dtype {array.dtype} cannot travel")
    return pb.TensorSpec(dtype=code, shape=list(array.shape), name=name)  # type: ignore[arg-type]


def _le_bytes(array: np.ndarray) -> bytes:
    little = array.astype(array.dtype.newbyteorder("<"), copy=False)
    return np.ascontiguousarray(little).tobytes()


def immutable_base(array: np.ndarray) -> bytes | None:
    """The `bytes` object under `array` when nothing can change the array's values: every view
    on the way down is read-only. None otherwise (a writeable array, or other memory)."""
    base: object = array
    while True:
        if isinstance(base, np.ndarray):
            if base.flags.writeable:
                return None
            base = base.base
        elif isinstance(base, memoryview):
            if not base.readonly:
                return None
            base = base.obj
        else:
            return base if isinstance(base, bytes) else None


MAX_TENSOR_DIMS = 32
"""NumPy's limit on the number of dimensions of an array."""


def _spec_nbytes(spec: pb.TensorSpec) -> int:
    """Bytes the spec's shape needs, in exact integer arithmetic: a shape such as [2^62, 8] is
    a size to refuse, never an overflow."""
    dtype = _DTYPES.get(spec.dtype)
    if dtype is None:
        raise CodecError(f"tensor {spec.name!r}: unknown dtype code {spec.dtype}")
    if len(spec.shape) > MAX_TENSOR_DIMS:
        raise CodecError(
            f"tensor {spec.name!r}: {len(spec.shape)} dimensions (at most {MAX_TENSOR_DIMS})"
        )
    if any(dim < 0 for dim in spec.shape):
        raise CodecError(f"tensor {spec.name!r}: negative dimension in shape {list(spec.shape)}")
    return math.prod(spec.shape) * dtype.itemsize


def decode_tensor(
    spec: pb.TensorSpec, data: bytes | memoryview, *, copy: bool = True
) -> np.ndarray:
    """Rebuild a tensor from its spec and raw little-endian bytes.

    ``copy=False`` (the in-memory engine, whose payload bytes are immutable and shared by every
    recipient of a broadcast) returns a read-only view instead of a native-order copy; on a
    little-endian host the two hold the same values."""
    expected = _spec_nbytes(spec)
    if len(data) != expected:
        raise CodecError(
            f"tensor {spec.name!r}: {len(data)} bytes for shape {list(spec.shape)}, "
            f"expected {expected}"
        )
    dtype = _DTYPES[spec.dtype]
    view = np.frombuffer(data, dtype=dtype).reshape(tuple(spec.shape))
    if not copy and dtype.isnative:
        return view
    return view.astype(dtype.newbyteorder("="))


def make_header(message: Message) -> pb.Header:
    return pb.Header(
        protocol_version=PROTOCOL_VERSION,
        sender=message.sender,
        round=message.round,
        kind=message.kind,  # type: ignore[arg-type]
        cluster=message.cluster,
        meta=dict(message.meta),
        signature=message.signature,
        recipient=message.recipient,
        relayed_by=message.relayed_by,
        relay_signature=message.relay_signature,
    )


def encode_envelope(message: Message) -> pb.Envelope:
    """A small message as one `Envelope`."""
    tensors = [
        pb.Tensor(spec=tensor_spec(name, array), data=_le_bytes(array))
        for name, array in message.tensors.items()
    ]
    return pb.Envelope(header=make_header(message), tensors=tensors)


def _check_header(header: pb.Header) -> None:
    if header.protocol_version != PROTOCOL_VERSION:
        raise CodecError(f"protocol version {header.protocol_version} is not {PROTOCOL_VERSION}")
    if not header.sender:
        raise CodecError("header.sender is empty")
    if header.kind == pb.MESSAGE_KIND_UNSPECIFIED or kind_name(header.kind) == "unknown":
        raise CodecError(f"header.kind {header.kind} is not a known message kind")


def _message(header: pb.Header, tensors: dict[str, np.ndarray]) -> Message:
    return Message(
        sender=header.sender,
        round=header.round,
        kind=header.kind,
        cluster=header.cluster,
        tensors=tensors,
        meta=dict(header.meta),
        recipient=header.recipient,
        signature=header.signature,
        relayed_by=header.relayed_by,
        relay_signature=header.relay_signature,
    )


HeaderCheck = Callable[[pb.Header], None]
"""Called with a message's header before its payload is decoded (or, streamed, buffered): the
receiver's cheap checks (known sender, TLS identity, admission) refuse a message before it costs
memory."""


def decode_envelope(
    envelope: pb.Envelope, max_bytes: int, on_header: HeaderCheck | None = None
) -> Message:
    """Decode a unary `Envelope`, checking the header, sizes and shapes."""
    parts = [(t.spec, t.data) for t in envelope.tensors]
    return decode_parts(envelope.header, parts, max_bytes, on_header)


TensorPart = tuple[pb.TensorSpec, bytes | memoryview]
"""One tensor as it travels: its spec and its raw little-endian bytes."""


def encode_parts(tensors: Mapping[str, np.ndarray]) -> list[TensorPart]:
    """The tensors of a message as (spec, bytes) pairs, the payload of an `Envelope`."""
    return [(tensor_spec(name, array), _le_bytes(array)) for name, array in tensors.items()]


def decode_parts(
    header: pb.Header,
    parts: Sequence[TensorPart],
    max_bytes: int,
    on_header: HeaderCheck | None = None,
    *,
    copy: bool = True,
) -> Message:
    """Decode a header and its tensors, checking the header, sizes and shapes (the checks of
    `decode_envelope`, which both engines run)."""
    _check_header(header)
    if on_header is not None:
        on_header(header)
    total = sum(len(data) for _spec, data in parts)
    if total > max_bytes:
        raise PayloadTooLarge(f"payload of {total} bytes exceeds the limit of {max_bytes}")
    announced = sum(_spec_nbytes(spec) for spec, _data in parts)
    if announced > max_bytes:
        raise PayloadTooLarge(f"payload of {announced} bytes exceeds the limit of {max_bytes}")
    tensors: dict[str, np.ndarray] = {}
    for spec, data in parts:
        if spec.name in tensors:
            raise CodecError(f"tensor {spec.name!r} appears twice")
        tensors[spec.name] = decode_tensor(spec, data, copy=copy)
    return _message(header, tensors)


def encode_chunks(message: Message, chunk_bytes: int) -> Iterator[pb.Chunk]:
    """Split `message` into chunks of at most `chunk_bytes` of tensor data each."""
    specs = [tensor_spec(name, array) for name, array in message.tensors.items()]
    blobs = [_le_bytes(array) for array in message.tensors.values()]
    total = sum(len(b) for b in blobs)
    first = pb.Chunk(header=make_header(message), specs=specs, total_bytes=total)
    if total == 0:
        yield first
        return
    pending = first
    for blob in blobs:
        view = memoryview(blob)
        for start in range(0, len(view), chunk_bytes):
            pending.data = bytes(view[start : start + chunk_bytes])
            yield pending
            pending = pb.Chunk()
    # `pending` is an empty continuation chunk here and needs no sending.


async def decode_chunks(
    chunks: AsyncIterator[pb.Chunk], max_bytes: int, on_header: HeaderCheck | None = None
) -> Message:
    """Reassemble a streamed message; refuses oversize before buffering the excess."""
    header: pb.Header | None = None
    specs: Sequence[pb.TensorSpec] = ()
    buffer = bytearray()
    expected = 0
    async for chunk in chunks:
        if header is None:
            if not chunk.HasField("header"):
                raise CodecError("first chunk carries no header")
            header = chunk.header
            _check_header(header)
            if on_header is not None:
                on_header(header)
            specs = list(chunk.specs)
            expected = sum(_spec_nbytes(spec) for spec in specs)
            if chunk.total_bytes != expected:
                raise CodecError(
                    f"announced {chunk.total_bytes} bytes but the tensor shapes need {expected}"
                )
            if expected > max_bytes:
                raise PayloadTooLarge(
                    f"payload of {expected} bytes exceeds the limit of {max_bytes}"
                )
        elif chunk.HasField("header"):
            raise CodecError("a continuation chunk carries a second header")
        if len(buffer) + len(chunk.data) > expected:
            raise CodecError(f"received more than the announced {expected} bytes")
        buffer.extend(chunk.data)
    if header is None:
        raise CodecError("empty stream")
    if len(buffer) != expected:
        raise CodecError(f"stream ended after {len(buffer)} of {expected} bytes")
    tensors: dict[str, np.ndarray] = {}
    view = memoryview(buffer)
    offset = 0
    for spec in specs:
        size = _spec_nbytes(spec)
        if spec.name in tensors:
            raise CodecError(f"tensor {spec.name!r} appears twice")
        tensors[spec.name] = decode_tensor(spec, view[offset : offset + size])
        offset += size
    return _message(header, tensors)
