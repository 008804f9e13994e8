"""Cluster outputs disseminated along relay trees (`clustering.dissemination = "tree"`)."""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from phalanx.clustering.identity import NodeIdentity
from phalanx.node.codec import Message
from phalanx.node.config import ConfigError, parse_scenario
from phalanx.node.node import Node
from phalanx.node.protocols import RelayTree, role_order
from phalanx.node.signing import RELAYED, sign_relay
from phalanx.node.simulate import run_simulation
from phalanx.v1 import node_pb2 as pb
from tests.node.live import live_node_config, send_envelope
from tests.security.redteam import signed_as

SEED = b"relay-test-seed"


def _clusters(nodes: int, size: int) -> list[list[str]]:
    names = [f"node-{i:03d}" for i in range(nodes)]
    count = nodes // size
    return [names[i * nodes // count : (i + 1) * nodes // count] for i in range(count)]


def _spread(
    tree: RelayTree,
    round_: int,
    clusters: Sequence[Sequence[str]],
    cluster: int,
    publisher: str,
    skip: Collection[str] = (),
) -> tuple[dict[str, str], dict[str, int], Counter[str]]:
    """Follow one output down its tree: each receiver's parent and depth, and sends per node.
    The nodes in `skip` are believed unreachable by every forwarder and do not forward."""
    parent: dict[str, str] = {}
    depth = {publisher: 0}
    sends: Counter[str] = Counter()
    frontier = [publisher]
    while frontier:
        node = frontier.pop(0)
        for child in tree.children(round_, clusters, cluster, publisher, node, skip):
            assert child != publisher and child not in parent, f"{child} reached twice"
            parent[child] = node
            depth[child] = depth[node] + 1
            sends[node] += 1
            if child not in skip:
                frontier.append(child)
    return parent, depth, sends


@pytest.mark.parametrize("nodes", [16, 50, 128, 300])
@pytest.mark.parametrize("fanout", [2, 3])
@pytest.mark.parametrize("publishers", [1, 2])
def test_each_output_reaches_every_node_once_and_no_node_sends_much_more_than_the_others(
    nodes: int, fanout: int, publishers: int
) -> None:
    """Every node but the publisher receives each output exactly once, within
    ceil(log_F N) hops. Over the T outputs of a round a node sends T (N - 1)/N on average and at
    most F (ceil(T/F) + 2): it lies in the interior (the first (N - 1)/F positions) of at most
    ceil(T/F) + 1 of the evenly rotated trees, and is the root of at most one. A direct
    publisher sends N - 1 per output."""
    clusters = _clusters(nodes, 10 if nodes > 16 else 8)
    everyone = {n for members in clusters for n in members}
    tree = RelayTree(SEED, fanout, publishers)
    outputs = len(clusters) * publishers
    parents_by_round = []
    for round_ in (1, 2):
        sent: Counter[str] = Counter()
        parents = {}
        for cluster, members in enumerate(clusters):
            for publisher in role_order(SEED, round_, cluster, members)[:publishers]:
                parent, depth, sends = _spread(tree, round_, clusters, cluster, publisher)
                assert set(parent) == everyone - {publisher}
                assert max(depth.values()) <= math.ceil(math.log(nodes, fanout))
                sent.update(sends)
                parents[(cluster, publisher)] = parent
        assert max(sent.values()) <= fanout * (math.ceil(outputs / fanout) + 2), sent
        assert np.median([sent[n] for n in everyone]) <= outputs + fanout
        assert sum(sent.values()) == outputs * (nodes - 1)
        parents_by_round.append(parents)
    # The trees are drawn afresh each round: who forwards to whom changes.
    first, second = (next(iter(p.values())) for p in parents_by_round)
    assert first != second


def test_a_forwarder_sends_to_the_children_of_a_child_it_believes_unreachable() -> None:
    """Interior nodes believed dead do not forward, yet every node, those included, is sent the
    output: their parents send it to them (a false death must not cost a live node its output)
    and to their children, F extra sends for each."""
    clusters = _clusters(50, 10)
    tree = RelayTree(SEED, 2, 1)
    publisher = role_order(SEED, 3, 0, clusters[0])[0]
    _, _, sends = _spread(tree, 3, clusters, 0, publisher)
    interior = sorted(node for node in sends if node != publisher)[:6]
    skip = set(interior)
    rerouted, _, rerouted_sends = _spread(tree, 3, clusters, 0, publisher, skip)
    everyone = {n for members in clusters for n in members}
    assert set(rerouted) == everyone - {publisher}
    assert not set(rerouted_sends) & skip
    assert sum(rerouted_sends.values()) == sum(sends.values())


def _scenario(secure: str, dissemination: str, **clustering: Any) -> dict[str, Any]:
    return {
        "name": f"relay-{secure}-{dissemination}",
        "seed": 5,
        "nodes": 16,
        "rounds": 2,
        "data": {"dataset": "digits"},
        "model": {"name": "mlp", "synthetic_dim": 4000},
        "training": {"mode": "synthetic"},
        "clustering": {
            "cluster_size": 4,
            "strategy": "static",
            "dissemination": dissemination,
            **clustering,
        },
        "aggregation": {"secure": secure},
        "timeouts": {"collect_s": 10.0, "rpc_s": 5.0, "startup_s": 60.0},
    }


@pytest.mark.parametrize(
    ("secure", "mutual_tls"),
    [("none", False), ("secagg", True), ("shamir", False)],
    ids=["plaintext-signed", "secagg-tls", "shamir-signed"],
)
def test_tree_dissemination_gives_the_direct_result_and_balances_the_bytes(
    tmp_path: Path, secure: str, mutual_tls: bool
) -> None:
    """The same models, bit for bit, as every publisher sending to every node, with every
    relayed output accepted (signed by its publisher, each hop by its relayer, under TLS the
    relayer named by its certificate), and the bytes sent per node balanced."""
    summaries = {}
    for mode in ("direct", "tree"):
        scenario = parse_scenario(_scenario(secure, mode))
        summaries[mode] = run_simulation(
            scenario, tmp_path / mode, 300, mutual_tls=mutual_tls, progress=False
        )
    direct, tree = summaries["direct"], summaries["tree"]
    assert tree["status"] == direct["status"] == "completed"
    assert tree["all_digests_identical"] is True
    for a, b in zip(direct["rounds"], tree["rounds"], strict=True):
        assert b["failed_clusters"] == [] and b["excluded"] == []
        assert set(a["honest_digests"].values()) == set(b["honest_digests"].values())
        assert b["bytes_sent_balance"]["max_over_median"] <= 2.0
        assert b["bytes_sent_balance"]["max"] < a["bytes_sent_balance"]["max"]
    for mode in ("direct", "tree"):
        log = (tmp_path / mode / "logs" / "simulation.log").read_text()
        assert "rejected a message" not in log, mode


def test_tree_dissemination_needs_signed_messages() -> None:
    settings = _scenario("none", "tree")
    settings["security"] = {"sign_messages": False}
    with pytest.raises(ConfigError, match=r"needs security\.sign_messages"):
        parse_scenario(settings)


IDENTITIES = {f"node-0{i}": NodeIdentity.generate() for i in range(4)}


@pytest.fixture(params=["tree", "direct"])
async def relay_node(request: pytest.FixtureRequest, tmp_path: Path):
    """A real node over gRPC (no TLS, signed messages) in one cluster of 4 with node-01..03."""
    scenario = parse_scenario(
        {
            "nodes": 4,
            "rounds": 1,
            "data": {"dataset": "digits"},
            "model": {"name": "mlp", "synthetic_dim": 64},
            "training": {"mode": "synthetic"},
            "clustering": {"cluster_size": 4, "dissemination": request.param},
            "timeouts": {"startup_s": 60.0},
        }
    )
    config = live_node_config(tmp_path, IDENTITIES, scenario, "node-00")
    node = Node(config)
    await node.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{node.port}")
    yield node, channel, request.param
    await channel.close()
    await node.stop(0.5)


def _output(node: Node, publisher: str = "node-01", recipient: str = RELAYED) -> Message:
    total = np.full(node.dimension, 0.5, dtype=np.float32)
    meta = {"included": "node-01,node-02"}
    output = Message(publisher, 1, pb.MESSAGE_KIND_CLUSTER_OUTPUT, 0, {"sum": total}, meta=meta)
    return signed_as(output, IDENTITIES[publisher], recipient)


def _relayed(message: Message, relayer: str = "node-02", key: str | None = None) -> Message:
    return sign_relay(message, IDENTITIES[key or relayer], relayer, "node-00")


async def test_only_a_genuine_relay_of_a_signed_output_is_accepted(relay_node) -> None:
    """A relayed output is accepted only with the tree on, signed by its publisher for every
    node and by its relayer for this hop; every refusal leaves the inbox as it was."""
    node, channel, dissemination = relay_node
    genuine = _relayed(_output(node))
    forged_hop = _relayed(_output(node), key="node-03")  # node-03 signs in node-02's name
    altered = replace_sum(_output(node))
    cases = [
        ("relayer's signature by another key", forged_hop, grpc.StatusCode.UNAUTHENTICATED),
        ("content altered by the relayer", _relayed(altered), grpc.StatusCode.UNAUTHENTICATED),
        (
            "an output addressed to one node",
            _relayed(_output(node, recipient="node-00")),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (
            "another kind",
            _relayed(
                signed_as(
                    Message(
                        "node-01",
                        1,
                        pb.MESSAGE_KIND_UPDATE,
                        0,
                        {"update": np.ones(node.dimension, np.float32)},
                    ),
                    IDENTITIES["node-01"],
                    RELAYED,
                )
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (
            "a relayer that is no peer",
            sign_relay(_output(node), NodeIdentity.generate(), "mallory", "node-00"),
            grpc.StatusCode.PERMISSION_DENIED,
        ),
    ]
    if dissemination == "direct":
        cases = [("any relay", genuine, grpc.StatusCode.FAILED_PRECONDITION)]
    for case, message, expected in cases:
        assert await send_envelope(channel, message) == expected, case
        await asyncio.sleep(0.05)
        assert node.inbox.get(1, pb.MESSAGE_KIND_CLUSTER_OUTPUT, 0) == {}, case
    if dissemination == "direct":
        return
    assert await send_envelope(channel, genuine) == grpc.StatusCode.OK
    await asyncio.sleep(0.1)
    stored = node.inbox.get(1, pb.MESSAGE_KIND_CLUSTER_OUTPUT, 0)
    assert list(stored) == ["node-01"]
    assert np.array_equal(stored["node-01"].tensors["sum"], genuine.tensors["sum"])
    again = _relayed(_output(node), relayer="node-03")  # the same output down another path
    assert await send_envelope(channel, again) == grpc.StatusCode.ALREADY_EXISTS


def replace_sum(message: Message) -> Message:
    from dataclasses import replace

    return replace(message, tensors={"sum": message.tensors["sum"] * np.float32(-1)})


def test_an_equivocating_publisher_is_still_caught_when_outputs_are_relayed(
    tmp_path: Path,
) -> None:
    """node-00 signs different outputs for different receivers (here: its F = 2 tree roots) and
    tampers with the outputs it relays. Relayers pass on what they got, so when its roots got
    different contents the echo step sees both and every honest node drops node-00; its
    tampered relays fail their publisher's signature, and the other publisher's tree still
    brings each output, so the honest models stay identical in every round."""
    settings = _scenario("none", "tree", cluster_size=2, publishers=2)
    settings.update(nodes=6, rounds=3)
    settings["byzantine"] = [{"behaviour": "equivocate", "nodes": ["node-00"]}]
    summary = run_simulation(parse_scenario(settings), tmp_path / "run", 300, progress=False)
    assert summary["byzantine"] == {"node-00": "equivocate"}
    for record in summary["rounds"]:
        assert "node-00" not in record["honest_digests"]
        assert record["digests_identical"], record["honest_digests"]
    honest_log = (tmp_path / "run" / "nodes" / "node-02.jsonl").read_text()
    assert '"equivocating_publishers": ["node-00"]' in honest_log
    log = (tmp_path / "run" / "logs" / "simulation.log").read_text()
    assert "the signature does not verify (relayed by node-00)" in log


async def test_a_stopping_node_first_finishes_the_relays_it_started(tmp_path: Path) -> None:
    """A node that ends its last round while it still forwards an output (to a slow child)
    completes that send before it leaves: its subtree would otherwise lose the output."""
    scenario = parse_scenario(
        {
            "nodes": 4,
            "rounds": 1,
            "data": {"dataset": "digits"},
            "model": {"name": "mlp", "synthetic_dim": 64},
            "training": {"mode": "synthetic"},
            "clustering": {"cluster_size": 4, "dissemination": "tree"},
            "timeouts": {"startup_s": 60.0, "rpc_s": 5.0},
        }
    )
    node = Node(live_node_config(tmp_path, IDENTITIES, scenario, "node-00"))
    await node.start()
    delivered: list[str] = []

    async def slow_relay() -> None:
        await asyncio.sleep(0.5)
        delivered.append("node-03")

    node._spawn(slow_relay())
    await node.stop(0.5)
    assert delivered == ["node-03"]
