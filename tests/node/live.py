"""A real node daemon over gRPC for acceptance-path tests: its configuration, and a raw Send."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import grpc

from phalanx.clustering.identity import NodeIdentity
from phalanx.node.codec import Message, encode_envelope
from phalanx.node.config import NodeConfig, NodeSettings, PeerConfig, Scenario
from phalanx.node.testbed import free_ports
from phalanx.v1 import node_pb2_grpc as pb_grpc


def live_node_config(
    tmp_path: Path, identities: Mapping[str, NodeIdentity], scenario: Scenario, node_id: str
) -> NodeConfig:
    """`node_id` without TLS, knowing every id of `identities` as a keyed peer (the others at
    free ports where nothing listens: the test speaks for them)."""
    port, metrics_port = free_ports(2)
    key_file = tmp_path / f"{node_id}.pem"
    identities[node_id].save(key_file, overwrite=True)

    def peer(peer_id: str, peer_port: int) -> PeerConfig:
        public = identities[peer_id].public_key_bytes.hex()
        return PeerConfig(id=peer_id, address=f"127.0.0.1:{peer_port}", public_key=public)

    others = [peer(p, free_ports(1)[0]) for p in sorted(identities) if p != node_id]
    return NodeConfig(
        node=NodeSettings(
            insecure=True,
            id=node_id,
            port=port,
            metrics_port=metrics_port,
            out_dir=str(tmp_path),
            identity_key=str(key_file),
        ),
        peers=[peer(node_id, port), *others],
        scenario=scenario,
    )


async def send_envelope(channel: grpc.aio.Channel, message: Message) -> grpc.StatusCode:
    """`Send` one envelope; the status the node answered with."""
    try:
        await pb_grpc.PhalanxNodeStub(channel).Send(encode_envelope(message), timeout=5)
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK
