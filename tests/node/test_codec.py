"""Tensors cross as raw little-endian bytes with dtype and shape; large ones stream in chunks."""

from __future__ import annotations

import numpy as np
import pytest

from phalanx.node.codec import (
    CodecError,
    Message,
    PayloadTooLarge,
    decode_chunks,
    decode_envelope,
    encode_chunks,
    encode_envelope,
)
from phalanx.v1 import node_pb2 as pb


def _message(**tensors: np.ndarray) -> Message:
    return Message("node-01", 3, pb.MESSAGE_KIND_UPDATE, 1, tensors, {"samples": "12"})


async def _aiter(chunks):
    for chunk in chunks:
        yield chunk


@pytest.mark.parametrize("dtype", ["float32", "float64", "int64", "uint64", "uint8", "int32"])
def test_envelope_round_trip_keeps_dtype_shape_and_values(dtype: str) -> None:
    rng = np.random.default_rng(0)
    array = (rng.standard_normal((3, 4, 5)) * 100).astype(dtype)
    envelope = encode_envelope(_message(update=array))
    back = decode_envelope(pb.Envelope.FromString(envelope.SerializeToString()), 1 << 20)
    assert back.sender == "node-01" and back.round == 3 and back.kind == pb.MESSAGE_KIND_UPDATE
    assert back.meta["samples"] == "12"
    assert back.tensors["update"].dtype == np.dtype(dtype)
    np.testing.assert_array_equal(back.tensors["update"], array)


def test_tensor_bytes_are_little_endian_not_repeated_floats() -> None:
    envelope = encode_envelope(_message(update=np.array([1.0, -2.5], dtype=np.float32)))
    assert envelope.tensors[0].data == np.array([1.0, -2.5], dtype="<f4").tobytes()
    big_endian = np.array([1.0, -2.5], dtype=">f4")
    assert encode_envelope(_message(update=big_endian)).tensors[0].data == envelope.tensors[0].data


async def test_hundred_megabyte_model_streams_in_chunks_under_the_grpc_limit() -> None:
    vector = np.arange(25 * 1024 * 1024, dtype=np.float32)  # 100 MiB
    chunks = list(encode_chunks(_message(update=vector), chunk_bytes=1 << 20))
    assert len(chunks) == 100
    assert max(c.ByteSize() for c in chunks) < 4 * 1024 * 1024  # gRPC's default message limit
    back = await decode_chunks(_aiter(chunks), max_bytes=200 * 1024 * 1024)
    np.testing.assert_array_equal(back.tensors["update"], vector)


async def test_oversized_stream_is_refused_from_its_announcement() -> None:
    chunks = encode_chunks(_message(update=np.zeros(1000, dtype=np.float32)), 1024)
    with pytest.raises(PayloadTooLarge, match="exceeds the limit of 1000"):
        await decode_chunks(_aiter(chunks), max_bytes=1000)


async def test_truncated_and_overlong_streams_are_refused() -> None:
    chunks = list(encode_chunks(_message(update=np.zeros(1000, dtype=np.float32)), 1024))
    with pytest.raises(CodecError, match="ended after"):
        await decode_chunks(_aiter(chunks[:-1]), max_bytes=1 << 20)
    with pytest.raises(CodecError, match="more than the announced"):
        await decode_chunks(_aiter([*chunks, pb.Chunk(data=b"xx")]), max_bytes=1 << 20)


def test_shape_that_does_not_match_the_bytes_is_refused() -> None:
    envelope = encode_envelope(_message(update=np.zeros(4, dtype=np.float32)))
    envelope.tensors[0].spec.shape[:] = [5]
    with pytest.raises(CodecError, match="16 bytes for shape \\[5\\], expected 20"):
        decode_envelope(envelope, 1 << 20)


def test_header_without_sender_or_kind_is_refused() -> None:
    envelope = encode_envelope(_message(update=np.zeros(2, dtype=np.float32)))
    envelope.header.sender = ""
    with pytest.raises(CodecError, match="sender is empty"):
        decode_envelope(envelope, 1 << 20)
    envelope = encode_envelope(_message(update=np.zeros(2, dtype=np.float32)))
    envelope.header.kind = 0  # type: ignore[assignment]
    with pytest.raises(CodecError, match="not a known message kind"):
        decode_envelope(envelope, 1 << 20)
