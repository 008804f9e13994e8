"""Start-up readiness polls back off, so n nodes starting together do not flood each other."""

from __future__ import annotations

import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from phalanx.clustering.identity import NodeIdentity
from phalanx.node.config import parse_scenario
from phalanx.node.node import Node
from phalanx.node.peer import STARTUP_POLL_FIRST_S, UNDER_WAY_SAMPLE, under_way_sample
from tests.node.live import live_node_config

IDENTITIES = {f"node-0{i}": NodeIdentity.generate() for i in range(2)}


class CountingHealth(health_pb2_grpc.HealthServicer):
    """A peer that is up but never SERVING, and counts how often it is asked."""

    def __init__(self) -> None:
        self.checks = 0

    async def Check(self, request, context):  # type: ignore[no-untyped-def]
        self.checks += 1
        return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.NOT_SERVING)


async def test_a_peer_that_is_not_serving_is_polled_with_backoff(tmp_path: Path) -> None:
    startup_s = 4.0
    scenario = parse_scenario(
        {
            "nodes": 2,
            "rounds": 1,
            "data": {"dataset": "digits"},
            "model": {"name": "mlp"},
            "clustering": {"cluster_size": 2},
            "timeouts": {"startup_s": startup_s},
        }
    )
    config = live_node_config(tmp_path, IDENTITIES, scenario, "node-00")
    peer_address = next(p.address for p in config.peers if p.id == "node-01")
    server = grpc.aio.server()
    counting = CountingHealth()
    health_pb2_grpc.add_HealthServicer_to_server(counting, server)
    server.add_insecure_port(peer_address)
    await server.start()
    node = Node(config)
    await node.start()
    try:
        began = time.monotonic()
        missing = await node.wait_for_peers()
        waited = time.monotonic() - began
    finally:
        await node.stop(0.5)
        await server.stop(None)
    assert missing == ["node-01"]
    assert waited >= startup_s - 0.5
    # A fixed pause of STARTUP_POLL_FIRST_S would ask about startup_s / 0.2 = 20 times; the
    # doubling pause (0.2, 0.4, 0.8, then 1 s) asks about 6 times in 4 s.
    assert 3 <= counting.checks <= 8, counting.checks
    assert counting.checks < startup_s / STARTUP_POLL_FIRST_S / 2


def test_the_under_way_question_rotates_over_a_few_serving_peers() -> None:
    serving = [f"node-{i:03d}" for i in range(10)]
    asked = [under_way_sample(serving, poll) for poll in range(4)]
    assert all(len(sample) == UNDER_WAY_SAMPLE for sample in asked)
    assert asked[0] == ["node-000", "node-001", "node-002"]
    assert asked[3] == ["node-009", "node-000", "node-001"]
    assert set().union(*asked) == set(serving)
    assert under_way_sample(serving[:2], 5) == serving[:2]
