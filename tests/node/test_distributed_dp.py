"""Distributed DP inside the node's MPC protocols: each member's integer noise share, the noise
of the reconstructed cluster sum, the per-round guarantee, and the refusals of bad settings."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path

import numpy as np
import pytest

from phalanx.mpc import FixedPointConfig, encode
from phalanx.mpc.encoding import HALF_FIELD
from phalanx.node.codec import Message
from phalanx.node.config import ConfigError, parse_scenario
from phalanx.node.defenses import DefenseConfig, DistributedNoise, NodeDefense, parse_distributed
from phalanx.node.inbox import RoundInbox
from phalanx.node.mpc_protocol import SecAggClusterProtocol, ShamirClusterProtocol
from phalanx.node.protocols import ClusterOutput, RoundContext

DIM = 20_000
REL_SE = math.sqrt(2 / (DIM - 1))  # relative standard error of a sample variance
MEMBERS = [f"node-{i:02d}" for i in range(4)]
ROUND = 3


def _signed(codes: np.ndarray) -> np.ndarray:
    signed = codes.astype(np.int64)
    signed[signed > HALF_FIELD] -= 2**31 - 1
    return signed


async def _run_cluster(
    protocol_name: str, updates: dict[str, np.ndarray], noisers: dict[str, DistributedNoise]
) -> dict[str, dict[int, ClusterOutput]]:
    """One round of the real cluster protocol between in-memory members (no gRPC)."""
    fixed_point = FixedPointConfig()
    inboxes = {member: RoundInbox() for member in MEMBERS}

    async def send(peer: str, message: Message) -> bool:
        await inboxes[peer].put(message)
        return True

    async def member(node_id: str) -> dict[int, ClusterOutput]:
        noise = noisers[node_id]

        def source() -> DistributedNoise:
            return noise

        def ignore(_reason: str, _sender: str) -> None:
            raise AssertionError("an honest member's message was rejected")

        protocol = (
            ShamirClusterProtocol(fixed_point, 0, 2, ignore, source)
            if protocol_name == "shamir"
            else SecAggClusterProtocol(fixed_point, 0, ignore, source)
        )
        context = RoundContext(
            node_id=node_id,
            round=ROUND,
            clusters=[MEMBERS],
            dimension=DIM,
            inbox=inboxes[node_id],
            send=send,
            collect_s=20.0,
            publishers=protocol.publishers or 2,
        )
        outputs = await protocol.run(context, updates[node_id])
        await asyncio.gather(*context.in_flight)
        return outputs

    results = await asyncio.gather(*(member(m) for m in MEMBERS))
    return dict(zip(MEMBERS, results, strict=True))


@pytest.mark.parametrize("protocol_name", ["shamir", "secagg"])
@pytest.mark.parametrize("mechanism", ["skellam", "dgauss"])
def test_cluster_sum_through_the_protocol_carries_the_target_noise(
    protocol_name: str, mechanism: str
) -> None:
    fixed_point = FixedPointConfig()
    sigma = 0.01  # std of the cluster sum's noise in model units
    sigma_int = sigma * fixed_point.scale
    spec = parse_distributed(f"{mechanism}:sigma={sigma},clip=1.0")
    assert spec is not None
    noisers = {
        m: DistributedNoise(spec, seed=7, node_index=i, delta=1e-5) for i, m in enumerate(MEMBERS)
    }
    rng = np.random.default_rng(0)
    updates = {m: rng.uniform(-1e-3, 1e-3, DIM).astype(np.float32) for m in MEMBERS}
    updates[MEMBERS[0]] *= 50  # norm ~4 > C = 1: this member's update must be clipped

    outputs = asyncio.run(_run_cluster(protocol_name, updates, noisers))

    as_float64 = {m: u.astype(np.float64) for m, u in updates.items()}
    clipped = {m: u * min(1.0, 1.0 / float(np.linalg.norm(u))) for m, u in as_float64.items()}
    signal = sum(_signed(encode(clipped[m], fixed_point)) for m in MEMBERS)
    totals = {node: out[0].total for node, out in outputs.items()}
    assert len(totals) == len(MEMBERS) and all(
        set(out[0].included) == set(MEMBERS) for out in outputs.values()
    )
    first = totals[MEMBERS[0]]
    assert all(np.array_equal(first, total) for total in totals.values())
    noise = np.rint(first.astype(np.float64) * fixed_point.scale).astype(np.int64) - signal

    # The reconstructed noise is exactly the sum of the members' seeded shares ...
    shares = [noisers[m].noise_share(DIM, fixed_point, len(MEMBERS), ROUND) for m in MEMBERS]
    assert np.array_equal(noise, np.sum(shares, axis=0))
    # ... each share has variance sigma_int^2 / k, and the sum sigma_int^2.
    for share in shares:
        assert abs(share.var() / (sigma_int**2 / len(MEMBERS)) - 1) < 5 * REL_SE
    assert abs(noise.var() / sigma_int**2 - 1) < 5 * REL_SE
    assert abs(noise.mean()) < 5 * sigma_int / math.sqrt(DIM)
    # Every member recorded the round with its cluster's size; eps is finite and reported.
    for noiser in noisers.values():
        assert noiser.cluster_sizes == {ROUND: len(MEMBERS)}
        epsilon = noiser.epsilon()
        assert epsilon is not None and epsilon > 0


def test_guarantee_grows_with_rounds_and_degrades_with_silent_members() -> None:
    defense = NodeDefense(
        DefenseConfig(distributed="skellam:z=1.0,clip=1.0"), node_index=1, seed=3, num_nodes=4
    )
    assert defense.distributed is not None
    fixed_point = FixedPointConfig()
    update = np.full(500, 0.01, dtype=np.float32)
    defense.distributed.encode(update, fixed_point, 4, 1)
    first = defense.privacy_report()["distributed"]
    defense.distributed.encode(update, fixed_point, 4, 2)
    report = defense.privacy_report()
    second = report["distributed"]
    assert second["rounds"] == 2 and second["cluster_sizes"] == [4, 4]
    assert 0 < first["epsilon"] < second["epsilon"]
    assert report["epsilon"] == second["epsilon"]
    degraded = [second["epsilon_if_byzantine"][str(b)] for b in (1, 2, 3)]
    assert second["epsilon"] < degraded[0] < degraded[1] < degraded[2]
    # Same seed, node and round: the same integers (a rerun releases the same bits).
    again = DistributedNoise(defense.distributed.spec, seed=3, node_index=1, delta=1e-5)
    assert np.array_equal(
        again.noise_share(500, fixed_point, 4, 2),
        defense.distributed.noise_share(500, fixed_point, 4, 2),
    )
    assert not np.array_equal(
        again.noise_share(500, fixed_point, 4, 1), again.noise_share(500, fixed_point, 4, 2)
    )


SECURE = {"nodes": 4, "clustering": {"cluster_size": 2}, "aggregation": {"secure": "shamir"}}


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            {"defense": {"distributed": "skellam:sigma=-1,clip=1"}},
            "sigma must be > 0",
        ),
        (
            {"defense": {"distributed": "skellam:sigma=0.1"}},
            "clip=C",
        ),
        ({"defense": {"distributed": "laplace:sigma=1,clip=1"}}, "distributed must be 'none'"),
        ({"defense": {"distributed": "skellam:sigma=1,clip=1,z=1"}}, "exactly one of"),
        ({"defense": {"distributed": "skellam:sigma=1,clip=1", "delta": 1.0}}, "defense.delta"),
        (
            {
                "nodes": 4,
                "clustering": {"cluster_size": 2},
                "defense": {"distributed": "skellam:sigma=1,clip=1"},
            },
            "needs aggregation.secure",
        ),
        ({**SECURE, "defense": {"distributed": "skellam:sigma=2000,clip=1"}}, "above (p-1)/2"),
        (
            {
                **SECURE,
                "aggregation": {"secure": "shamir", "frac_bits": 0},
                "defense": {"distributed": "dgauss:sigma=0.1,clip=1"},
            },
            "dgauss needs each member's integer std >= 1/2",
        ),
    ],
)
def test_bad_distributed_settings_are_refused_with_a_clear_error(data: dict, expected: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_scenario(data)
    assert expected in str(error.value)
    assert "\n" not in str(error.value)


def test_good_distributed_setting_is_accepted() -> None:
    scenario = parse_scenario({**SECURE, "defense": {"distributed": "dgauss:z=1.5,clip=0.5"}})
    spec = scenario.defense.distributed_spec
    assert spec is not None and spec.mechanism == "dgauss" and spec.sigma == pytest.approx(0.75)


@pytest.mark.slow
def test_testbed_with_distributed_noise_reports_eps_and_stays_identical(
    tmp_path: Path, phalanx
) -> None:
    scenario = tmp_path / "ddp.toml"
    scenario.write_text(
        'nodes = 4\nrounds = 2\n[data]\ndataset = "digits"\n[model]\nname = "mlp"\n'
        '[clustering]\ncluster_size = 2\n[aggregation]\nsecure = "shamir"\n'
        '[defense]\ndistributed = "skellam:z=1.0,clip=1.0"\n'
    )
    out = tmp_path / "out"
    result = phalanx("testbed", "run", str(scenario), "--out", str(out), timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["all_digests_identical"]
    first, second = summary["rounds"]
    assert not first["failed_clusters"] and not second["failed_clusters"]
    for node, privacy in second["privacy"].items():
        distributed = privacy["distributed"]
        assert distributed["rounds"] == 2 and distributed["cluster_sizes"] == [2, 2], node
        eps_1 = first["privacy"][node]["distributed"]["epsilon"]
        degraded = distributed["epsilon_if_byzantine"]["1"]  # one of the two adds no noise
        assert 0 < eps_1 < distributed["epsilon"] < degraded, node
        assert privacy["epsilon"] == distributed["epsilon"]
