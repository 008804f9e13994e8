"""Red team against live in-process nodes over real gRPC: a bounded flood, and a fuzz loop while
the nodes run their rounds.

The fuzz loop mutates valid envelopes (bit flips, truncations, junk, field swaps) that claim to
come from another peer, and sends them while three nodes train together. It asserts 0 crashes,
0 UNKNOWN statuses, 0 forgeries accepted, every refusal counted in
``phalanx_messages_rejected_total``, and honest models equal to the same seed's run without the
fuzzer, round by round. `make test` runs 500 messages, `make test-slow` 10^4.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest

from phalanx.clustering.identity import NodeIdentity
from phalanx.node.codec import Message, encode_envelope
from phalanx.node.config import NodeConfig, NodeSettings, PeerConfig, parse_scenario
from phalanx.node.node import Node
from phalanx.node.peer import model_digest
from phalanx.node.testbed import free_ports
from phalanx.v1 import node_pb2 as pb
from tests.security.redteam import RedTeamClient, rejected, scrape, signed_as

IDS = ("node-00", "node-01", "node-02")


def _nodes(tmp_path: Path, security: dict | None = None, rounds: int = 3) -> list[Node]:
    """Three keyed plaintext-transport nodes (digits, MLP, one cluster) on loopback."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    ports = free_ports(2 * len(IDS))
    identities = {node_id: NodeIdentity.generate() for node_id in IDS}
    scenario = parse_scenario(
        {
            "seed": 11,
            "nodes": len(IDS),
            "rounds": rounds,
            "data": {"dataset": "digits"},
            "model": {"name": "mlp"},
            "clustering": {"cluster_size": len(IDS)},
            "timeouts": {"collect_s": 20.0},
            "security": security or {},
        }
    )
    peers = [
        PeerConfig(
            id=node_id,
            address=f"127.0.0.1:{ports[i]}",
            public_key=identities[node_id].public_key_bytes.hex(),
        )
        for i, node_id in enumerate(IDS)
    ]
    nodes = []
    for i, node_id in enumerate(IDS):
        key = tmp_path / f"{node_id}.pem"
        identities[node_id].save(key, overwrite=True)
        settings = NodeSettings(
            insecure=True,
            id=node_id,
            port=ports[i],
            metrics_port=ports[len(IDS) + i],
            out_dir=str(tmp_path),
            identity_key=str(key),
        )
        nodes.append(Node(NodeConfig(node=settings, peers=peers, scenario=scenario)))
    return nodes


async def _train(nodes: list[Node], rounds: int) -> list[str]:
    """Run the rounds on every node; the honest digest after each round (they must agree)."""
    digests = []
    for round_ in range(1, rounds + 1):
        await asyncio.gather(*(node.run_round(round_) for node in nodes))
        after = {model_digest(node.weights) for node in nodes}
        assert len(after) == 1, f"round {round_}: the nodes disagree"
        digests.append(after.pop())
    return digests


def _mutations(rng: random.Random, base: bytes) -> bytes:
    """One fuzzed request: bit flips, a truncation, an extension, junk, or a spliced field."""
    data = bytearray(base)
    choice = rng.randrange(5)
    if choice == 0:
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    elif choice == 1:
        del data[rng.randrange(1, len(data)) :]
    elif choice == 2:
        data += rng.randbytes(rng.randint(1, 64))
    elif choice == 3:
        return rng.randbytes(rng.randint(0, 256))
    else:
        start = rng.randrange(len(data))
        data[start : start + 8] = rng.randbytes(8)
    return bytes(data)


def _forgeries(node: Node, key: NodeIdentity, seed: int) -> list[bytes]:
    """Serialized envelopes of every kind, in node-01's name, signed with node-02's key."""
    rng = np.random.default_rng(seed)
    bases = []
    for kind in (k for k in pb.MessageKind.values() if k):
        for round_ in (1, 2, 3):
            tensors = {"update": rng.standard_normal(node.dimension).astype(np.float32)}
            message = Message("node-01", round_, kind, 0, tensors, meta={"included": "node-01"})
            bases.append(encode_envelope(signed_as(message, key, node.id)).SerializeToString())
    return bases


async def _fuzz(node: Node, key: NodeIdentity, count: int, seed: int) -> dict[str, int]:
    rng = random.Random(seed)
    bases = _forgeries(node, key, seed)
    codes: dict[str, int] = {}
    async with RedTeamClient(f"127.0.0.1:{node.port}") as client:
        for _ in range(count):
            payload = _mutations(rng, rng.choice(bases))
            code = await client.raw("Send", payload)
            codes[code.name] = codes.get(code.name, 0) + 1
    return codes


def _rejections(node: Node) -> float:
    assert node.metrics_port is not None
    samples = scrape(node.metrics_port)
    return sum(v for k, v in samples.items() if k.startswith("phalanx_messages_rejected_total"))


@dataclass(frozen=True)
class FuzzOutcome:
    """What a fuzzed run left: the statuses, the refusals counted, and the round digests."""

    codes: dict[str, int]
    refused: int
    counted: float
    serving: bool
    digests: list[str]
    clean_digests: list[str]


async def _fuzzed_run(tmp_path: Path, count: int) -> FuzzOutcome:
    """Three nodes train without the fuzzer, then again with `count` fuzzed messages."""
    rounds = 3
    clean = _nodes(tmp_path / "clean", rounds=rounds)
    for node in clean:
        await node.start()
    try:
        expected = await _train(clean, rounds)
    finally:
        await asyncio.gather(*(node.stop(0.5) for node in clean))

    nodes = _nodes(tmp_path / "fuzzed", rounds=rounds)
    for node in nodes:
        await node.start()
    try:
        target = nodes[0]
        insider = NodeIdentity.load(tmp_path / "fuzzed" / "node-02.pem")
        before = _rejections(target)
        fuzzing = asyncio.create_task(_fuzz(target, insider, count, seed=count))
        digests = await _train(nodes, rounds)
        codes = await fuzzing
        print(f"fuzz: {count} messages to {target.id} while training: statuses {codes}")
        counted = _rejections(target) - before
        async with RedTeamClient(f"127.0.0.1:{target.port}") as client:
            serving = await client.status() is not None
    finally:
        await asyncio.gather(*(node.stop(0.5) for node in nodes))
    return FuzzOutcome(codes, count - codes.get("OK", 0), counted, serving, digests, expected)


async def test_fuzz_loop_of_500_changes_nothing(tmp_path: Path) -> None:
    run = await _fuzzed_run(tmp_path, 500)
    assert run.codes.get("OK", 0) == 0 and run.codes.get("UNKNOWN", 0) == 0, run.codes
    assert run.counted >= run.refused
    assert run.serving
    assert run.digests == run.clean_digests


@pytest.mark.slow
async def test_fuzz_loop_of_ten_thousand_changes_nothing(tmp_path: Path) -> None:
    run = await _fuzzed_run(tmp_path, 10_000)
    assert run.codes.get("OK", 0) == 0 and run.codes.get("UNKNOWN", 0) == 0, run.codes
    assert run.counted >= run.refused
    assert run.serving
    assert run.digests == run.clean_digests


async def test_a_flood_is_cut_to_the_peers_budget_and_honest_rates_pass(tmp_path: Path) -> None:
    """node-01 floods node-00 with 2,000 authenticated messages as fast as it can: node-00 lets
    through its burst plus its rate and refuses the rest with RESOURCE_EXHAUSTED, each counted;
    node-02, sending at half the rate meanwhile, is never refused."""
    rate, burst = 100.0, 50
    nodes = _nodes(tmp_path, {"peer_rate_per_s": rate, "peer_burst": burst})
    target = nodes[0]
    await target.start()
    keys = {i: NodeIdentity.load(tmp_path / f"{i}.pem") for i in ("node-01", "node-02")}
    # Messages of a past round: authenticated and charged, then refused for their round, so the
    # flood changes no state however much of it passes admission.
    target.current_round = 5

    def stale(sender: str) -> Message:
        message = Message(sender, 1, pb.MESSAGE_KIND_ECHO, -1, meta={"outputs": "", "model": ""})
        return signed_as(message, keys[sender], target.id)

    try:
        assert target.metrics_port is not None
        before = scrape(target.metrics_port)
        address = f"127.0.0.1:{target.port}"
        async with RedTeamClient(address) as flooder, RedTeamClient(address) as honest:

            async def flood() -> list[grpc.StatusCode]:
                message = stale("node-01")
                return [await flooder.send(message) for _ in range(2000)]

            async def pace() -> list[grpc.StatusCode]:
                codes = []
                message = stale("node-02")
                while not flooding.done():
                    codes.append(await honest.send(message))
                    await asyncio.sleep(2 / rate)
                return codes

            started = time.monotonic()
            flooding = asyncio.create_task(flood())
            paced = await pace()
            flood_codes = await flooding
            elapsed = time.monotonic() - started
        limited = flood_codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED)
        passed = flood_codes.count(grpc.StatusCode.FAILED_PRECONDITION)
        assert passed + limited == 2000, set(flood_codes)
        assert passed <= burst + rate * elapsed + 1
        assert limited >= 2000 - burst - rate * elapsed - 1 > 0
        assert set(paced) == {grpc.StatusCode.FAILED_PRECONDITION}, set(paced)
        after = scrape(target.metrics_port)
        assert rejected(after, "rate_limited") - rejected(before, "rate_limited") == limited
        async with RedTeamClient(address) as client:
            assert await client.status() is not None
    finally:
        await target.stop(0.5)
