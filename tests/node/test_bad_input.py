"""A live node over real gRPC rejects bad input with a status and a log line, and keeps serving."""

from __future__ import annotations

import asyncio
import logging
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from phalanx.clustering.identity import NodeIdentity
from phalanx.node.codec import Message, encode_chunks
from phalanx.node.config import parse_scenario
from phalanx.node.node import Node
from phalanx.v1 import node_pb2 as pb
from phalanx.v1 import node_pb2_grpc as pb_grpc
from tests.node.live import live_node_config, send_envelope
from tests.security.redteam import signed_as

IDENTITIES = {f"node-0{i}": NodeIdentity.generate() for i in range(3)}
"""The long-term keys of the live node's configured peers (the node knows their public keys)."""


@pytest.fixture
async def live_node(tmp_path: Path):
    """A real node (digits, MLP) whose peers are node-01 (us) and node-02."""
    scenario = parse_scenario(
        {
            "nodes": 3,
            "rounds": 1,
            "data": {"dataset": "digits"},
            "model": {"name": "mlp"},
            "clustering": {"cluster_size": 3},
            "limits": {"max_message_bytes": 2_000_000},
        }
    )
    config = live_node_config(tmp_path, IDENTITIES, scenario, "node-00")
    node = Node(config)
    await node.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{node.port}")
    yield node, channel
    await channel.close()
    await node.stop(0.5)


def _update(
    node: Node,
    sender: str = "node-01",
    round_: int = 1,
    size: int | None = None,
    kind: int = pb.MESSAGE_KIND_UPDATE,
) -> Message:
    """An update from `sender`, addressed to the live node and signed with the sender's key (a
    random key for a sender the node does not know)."""
    vector = np.ones(size if size is not None else node.dimension, dtype=np.float32)
    message = Message(sender, round_, kind, 0, {"update": vector})
    identity = IDENTITIES.get(sender) or NodeIdentity.generate()
    return signed_as(message, identity, node.id)


async def _still_serving(channel: grpc.aio.Channel) -> bool:
    reply = await health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(), timeout=5
    )
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def _metric(node: Node, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{node.metrics_port}/metrics").read().decode()
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_valid_update_is_accepted(live_node) -> None:
    node, channel = live_node
    assert await send_envelope(channel, _update(node)) == grpc.StatusCode.OK
    await asyncio.sleep(0.1)
    assert "node-01" in node.inbox.get(1, pb.MESSAGE_KIND_UPDATE, 0)


@pytest.mark.parametrize(
    ("make", "code", "reason", "log_text"),
    [
        (
            lambda n: _update(n, size=n.dimension - 1),
            grpc.StatusCode.INVALID_ARGUMENT,
            "invalid",
            "the model needs float32",
        ),
        (
            lambda n: _update(n, round_=0),
            grpc.StatusCode.FAILED_PRECONDITION,
            "unknown_round",
            "outside the accepted window",
        ),
        (
            lambda n: _update(n, sender="mallory"),
            grpc.StatusCode.PERMISSION_DENIED,
            "unknown_sender",
            "is not a peer",
        ),
        (
            lambda n: _update(n, kind=pb.MESSAGE_KIND_SHARE),
            grpc.StatusCode.FAILED_PRECONDITION,
            "unsupported_kind",
            "share is not used",
        ),
    ],
    ids=["wrong-shape", "past-round", "unknown-sender", "mpc-kind-without-mpc"],
)
async def test_bad_messages_get_a_status_a_log_line_and_a_metric(
    live_node, caplog, make, code, reason, log_text
) -> None:
    node, channel = live_node
    caplog.set_level(logging.WARNING)
    before = _metric(node, f'phalanx_messages_rejected_total{{reason="{reason}"}}')
    assert await send_envelope(channel, make(node)) == code
    assert log_text in caplog.text
    assert _metric(node, f'phalanx_messages_rejected_total{{reason="{reason}"}}') == before + 1
    assert await _still_serving(channel)
    assert await send_envelope(channel, _update(node)) == grpc.StatusCode.OK


async def test_oversized_streamed_payload_is_refused(live_node, caplog) -> None:
    node, channel = live_node
    caplog.set_level(logging.WARNING)
    huge = Message(
        "node-01",
        1,
        pb.MESSAGE_KIND_UPDATE,
        0,
        {"update": np.zeros(1_000_000, dtype=np.float32)},
        recipient=node.id,
    )
    first, *rest = encode_chunks(huge, 256 * 1024)
    assert rest  # the payload is streamed in several chunks
    # The first chunk's header announces 4 MB, and the node refuses on it, before buffering
    # anything more. Only that chunk is written: writing the rest would race the refusal inside
    # gRPC's client, which then reports a failed write (INTERNAL) instead of the node's status.
    call = pb_grpc.PhalanxNodeStub(channel).Deliver(timeout=10)
    await call.write(first)
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await call
    assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "exceeds the limit of 2000000" in caplog.text
    assert await _still_serving(channel)


async def test_malformed_protobuf_is_refused_and_node_keeps_serving(live_node, caplog) -> None:
    node, channel = live_node
    assert node.phase == "starting"
    caplog.set_level(logging.WARNING)
    raw = channel.unary_unary("/phalanx.v1.PhalanxNode/Send")
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await raw(b"\xff\xff\xff\xff not a protobuf", timeout=5)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "malformed Envelope protobuf" in caplog.text
    assert _metric(node, 'phalanx_messages_rejected_total{reason="malformed"}') == 1
    assert await _still_serving(channel)
    assert await send_envelope(channel, _update(node)) == grpc.StatusCode.OK


async def test_duplicate_update_is_refused(live_node) -> None:
    node, channel = live_node
    assert await send_envelope(channel, _update(node)) == grpc.StatusCode.OK
    await asyncio.sleep(0.1)
    assert await send_envelope(channel, _update(node)) == grpc.StatusCode.ALREADY_EXISTS


async def test_update_with_nan_is_refused(live_node) -> None:
    node, channel = live_node
    vector = np.ones(node.dimension, dtype=np.float32)
    vector[3] = np.nan
    message = Message("node-01", 1, pb.MESSAGE_KIND_UPDATE, 0, {"update": vector})
    signed = signed_as(message, IDENTITIES["node-01"], node.id)
    assert await send_envelope(channel, signed) == grpc.StatusCode.INVALID_ARGUMENT


async def test_only_an_authenticated_message_from_ahead_marks_its_sender_ahead(live_node) -> None:
    """A message from beyond the round window is a progress report: the node stops waiting for
    its sender. A forged one is refused and marks nobody."""
    node, channel = live_node
    forged = signed_as(
        Message("node-02", 7, pb.MESSAGE_KIND_ECHO, -1, meta={"outputs": "", "model": ""}),
        IDENTITIES["node-01"],
        node.id,
    )
    assert await send_envelope(channel, forged) == grpc.StatusCode.UNAUTHENTICATED
    assert node.peers_ahead == {}
    assert node.unreachable() == frozenset()
    assert (
        await send_envelope(channel, _update(node, sender="node-02", round_=7))
        == grpc.StatusCode.OK
    )
    assert node.peers_ahead == {"node-02": 7}
    assert node.unreachable() == {"node-02"}
    assert node.inbox.get(7, pb.MESSAGE_KIND_UPDATE, 0) == {}  # the content is dropped
