"""Identities and SWIM on a live node over real gRPC: signed envelopes, bound membership ids."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest

from phalanx.clustering.identity import NodeIdentity
from phalanx.clustering.membership import SwimMember
from phalanx.node.codec import Message
from phalanx.node.config import ConfigError, NodeConfig, NodeSettings, PeerConfig, parse_scenario
from phalanx.node.node import Node
from phalanx.node.signing import sign_envelope
from phalanx.node.testbed import free_ports
from phalanx.v1 import node_pb2 as pb
from tests.node.live import send_envelope
from tests.security.redteam import signed_as


@pytest.fixture
async def keyed_node(tmp_path: Path):
    """node-00 (live) whose peers node-01 and node-02 have known Ed25519 keys."""
    port, metrics_port, port1, port2 = free_ports(4)
    keys = {name: NodeIdentity.generate() for name in ("node-01", "node-02")}
    own = NodeIdentity.generate()
    own.save(tmp_path / "own.pem")
    scenario = parse_scenario(
        {
            "nodes": 3,
            "rounds": 1,
            "data": {"dataset": "digits"},
            "model": {"name": "mlp"},
            "clustering": {"cluster_size": 3},
        }
    )
    addresses = {"node-00": port, "node-01": port1, "node-02": port2}
    public = {"node-00": own, **keys}
    config = NodeConfig(
        node=NodeSettings(
            insecure=True,
            id="node-00",
            port=port,
            metrics_port=metrics_port,
            out_dir=str(tmp_path),
            identity_key=str(tmp_path / "own.pem"),
        ),
        peers=[
            PeerConfig(
                id=name,
                address=f"127.0.0.1:{p}",
                public_key=public[name].public_key_bytes.hex(),
            )
            for name, p in addresses.items()
        ],
        scenario=scenario,
    )
    node = Node(config)
    await node.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{node.port}")
    yield node, channel, keys, addresses
    await channel.close()
    await node.stop(0.5)


def _rejected(node: Node, reason: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{node.metrics_port}/metrics").read().decode()
    prefix = f'phalanx_messages_rejected_total{{reason="{reason}"}}'
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix)
    )


def _echo(sender: str = "node-01") -> Message:
    return Message(
        sender,
        1,
        pb.MESSAGE_KIND_ECHO,
        -1,
        meta={"outputs": "", "model": "abc"},
        recipient="node-00",
    )


async def test_echo_must_carry_the_senders_signature(keyed_node) -> None:
    node, channel, keys, _ = keyed_node
    assert await send_envelope(channel, _echo()) == grpc.StatusCode.UNAUTHENTICATED
    forged = sign_envelope(_echo(), keys["node-02"])  # node-02's key, claiming to be node-01
    assert await send_envelope(channel, forged) == grpc.StatusCode.UNAUTHENTICATED
    assert _rejected(node, "bad_signature") == 2
    assert (
        await send_envelope(channel, sign_envelope(_echo(), keys["node-01"])) == grpc.StatusCode.OK
    )


async def test_a_signed_envelope_cannot_be_altered(keyed_node) -> None:
    _node, channel, keys, _ = keyed_node
    signed = sign_envelope(_echo(), keys["node-01"])
    tampered = Message(
        signed.sender, signed.round, signed.kind, signed.cluster,
        meta={"outputs": "", "model": "def"}, recipient="node-00", signature=signed.signature,
    )  # fmt: skip
    assert await send_envelope(channel, tampered) == grpc.StatusCode.UNAUTHENTICATED


def _join(
    identity: NodeIdentity, own_port: int, node_port: int, envelope_key: NodeIdentity
) -> Message:
    """node-01's JOIN envelope (signed by `envelope_key`) around a SWIM JOIN signed by
    `identity`: the two differ when a test reaches SWIM's own sender binding."""
    member = SwimMember(identity, f"127.0.0.1:{own_port}", [f"127.0.0.1:{node_port}"])
    outgoing = member.tick(time.monotonic())
    assert outgoing, "a node with seeds sends a JOIN on its first tick"
    payload = np.frombuffer(outgoing[0].payload(), dtype=np.uint8)
    message = Message("node-01", 0, pb.MESSAGE_KIND_JOIN, -1, {"swim": payload})
    return signed_as(message, envelope_key, "node-00")


async def test_join_signed_with_the_configured_key_admits_the_member(keyed_node) -> None:
    node, channel, keys, addresses = keyed_node
    assert node.swim is not None
    assert node.swim.states()["node-01"] == "unknown"
    join = _join(keys["node-01"], addresses["node-01"], node.port, keys["node-01"])
    assert await send_envelope(channel, join) == grpc.StatusCode.OK
    for _ in range(50):
        if node.swim.states()["node-01"] == "alive":
            break
        await asyncio.sleep(0.05)
    assert node.swim.states()["node-01"] == "alive"


async def test_membership_message_under_another_nodes_key_is_refused(keyed_node) -> None:
    node, channel, keys, addresses = keyed_node
    assert node.swim is not None
    # The envelope is node-01's (validly signed), the SWIM message inside is node-02's: SWIM's
    # own binding of the message to the envelope's sender refuses it.
    impostor = _join(keys["node-02"], addresses["node-01"], node.port, keys["node-01"])
    assert await send_envelope(channel, impostor) == grpc.StatusCode.OK  # accepted for the actor
    for _ in range(50):
        if _rejected(node, "identity_mismatch"):
            break
        await asyncio.sleep(0.05)
    assert _rejected(node, "identity_mismatch") == 1
    assert node.swim.states()["node-01"] == "unknown"
    assert node.swim.states()["node-02"] == "unknown"


async def test_key_outside_the_allow_list_and_garbage_are_refused(keyed_node) -> None:
    node, channel, keys, addresses = keyed_node
    assert node.swim is not None
    stranger = NodeIdentity.generate()
    message = _join(stranger, addresses["node-01"], node.port, keys["node-01"])
    # Drop the sender binding so that the allow-list is what refuses it.
    node.swim._swim_id_by_name.pop("node-01")
    assert await send_envelope(channel, message) == grpc.StatusCode.OK
    garbage = signed_as(
        Message("node-02", 0, pb.MESSAGE_KIND_PING, -1, {"swim": np.arange(50, dtype=np.uint8)}),
        keys["node-02"],
        "node-00",
    )
    assert await send_envelope(channel, garbage) == grpc.StatusCode.OK
    for _ in range(50):
        if _rejected(node, "membership_notallowed") and _rejected(
            node, "membership_malformedmessage"
        ):
            break
        await asyncio.sleep(0.05)
    assert _rejected(node, "membership_notallowed") == 1
    assert _rejected(node, "membership_malformedmessage") == 1
    assert node.swim.states()["node-01"] == "unknown"


def test_restarted_node_keeps_its_identity_and_a_mismatched_key_is_refused(tmp_path: Path) -> None:
    scenario = parse_scenario(
        {
            "nodes": 2,
            "data": {"dataset": "digits"},
            "model": {"name": "mlp"},
            "clustering": {"cluster_size": 2},
        }
    )
    settings = NodeSettings(insecure=True, id="node-00", out_dir=str(tmp_path))
    peer_key = NodeIdentity.generate().public_key_bytes.hex()
    peers = [
        PeerConfig(id="node-00", address="127.0.0.1:1"),
        PeerConfig(id="node-01", address="127.0.0.1:2", public_key=peer_key),
    ]
    first = Node(NodeConfig(node=settings, peers=peers, scenario=scenario)).identity
    again = Node(NodeConfig(node=settings, peers=peers, scenario=scenario)).identity
    assert first.node_id == again.node_id
    other = NodeIdentity.generate().public_key_bytes.hex()
    wrong = [PeerConfig(id="node-00", address="127.0.0.1:1", public_key=other), peers[1]]
    with pytest.raises(ConfigError, match="does not match"):
        Node(NodeConfig(node=settings, peers=wrong, scenario=scenario))


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"membership": {"period_s": 0.5, "ack_timeout_s": 0.5}}, "must be below period_s"),
        ({"membership": {"protocol": "off", "view": "swim"}}, 'needs protocol = "swim"'),
        ({"membership": {"period_s": -1}}, "greater than 0"),
    ],
)
def test_bad_membership_settings_are_refused(section: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_scenario(section)


def test_a_malformed_public_key_is_refused() -> None:
    with pytest.raises(ValueError, match="64 lowercase hex"):
        PeerConfig(id="node-01", address="127.0.0.1:1", public_key="xyz")


def test_a_plaintext_node_without_its_peers_keys_refuses_to_start(tmp_path: Path) -> None:
    """Without TLS only a configured key can bind a message to its sender."""
    settings = NodeSettings(insecure=True, id="node-00", out_dir=str(tmp_path))
    peers = [
        PeerConfig(id="node-00", address="127.0.0.1:1"),
        PeerConfig(id="node-01", address="127.0.0.1:2"),
    ]
    with pytest.raises(ConfigError, match="every peer needs a public_key"):
        scenario = parse_scenario({"nodes": 2, "clustering": {"cluster_size": 2}})
        Node(NodeConfig(node=settings, peers=peers, scenario=scenario))
