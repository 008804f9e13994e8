"""Red team against a live testbed of real node processes (Shamir rounds, with and without TLS).

The red team is an insider: it holds node-03's key (and, with TLS, node-03's valid certificate),
as a Byzantine peer would. While the nodes run their rounds it sends, to node-00, every message
kind in another peer's name (unsigned, signed with its own key, and over its own TLS session),
forged MPC key adverts, signed messages replayed for another recipient, round, kind or cluster,
messages of past rounds, oversized, overflowing and malformed messages, and state-transfer
requests it is not entitled to. Every one must be refused with the expected status and counted,
and the run must end exactly as the same seed's run without the red team: the same honest
digests in every round, bit for bit.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import tomllib
from collections import Counter
from dataclasses import replace
from pathlib import Path

import grpc
import numpy as np
import pytest

from phalanx.clustering.identity import NodeIdentity
from phalanx.node.codec import Message, encode_envelope
from phalanx.v1 import node_pb2 as pb
from tests.conftest import REPO, phalanx_env
from tests.security.redteam import (
    ClientCertificate,
    RedTeamClient,
    rejected,
    scrape,
    signed_as,
)

SCENARIO = """
name = "redteam"
seed = 5
nodes = 4
rounds = 6
nodes_per_process = 2
[data]
dataset = "digits"
[model]
name = "mlp"
[clustering]
cluster_size = 2
[aggregation]
secure = "shamir"
[timeouts]
collect_s = 4.0
round_period_s = 1.5
"""

TARGET, VICTIM, INSIDER = "node-00", "node-01", "node-03"
ALL_KINDS = [kind for kind in pb.MessageKind.values() if kind != pb.MESSAGE_KIND_UNSPECIFIED]
MEMBERSHIP = {
    pb.MESSAGE_KIND_PING,
    pb.MESSAGE_KIND_PING_REQ,
    pb.MESSAGE_KIND_ACK,
    pb.MESSAGE_KIND_JOIN,
    pb.MESSAGE_KIND_LEAVE,
}


def _start(out: Path, tls: bool) -> subprocess.Popen[bytes]:
    scenario = out.parent / f"{out.name}.toml"
    scenario.write_text(SCENARIO)
    command = [
        sys.executable,
        "-m",
        "phalanx.node",
        "testbed",
        "run",
        str(scenario),
        "--out",
        str(out),
    ]
    return subprocess.Popen(
        [*command, *(["--tls"] if tls else [])],
        env=phalanx_env(),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _finish(process: subprocess.Popen[bytes], out: Path) -> dict:
    assert process.wait(timeout=600) == 0, (out / "logs").iterdir()
    return json.loads((out / "summary.json").read_text())


def _round_digests(summary: dict) -> list[str]:
    digests = []
    for record in summary["rounds"]:
        assert len(set(record["honest_digests"].values())) == 1, record
        digests.append(next(iter(record["honest_digests"].values())))
    return digests


def _node_settings(out: Path, node_id: str) -> dict:
    return tomllib.loads((out / "config" / f"{node_id}.toml").read_text())["node"]


async def _wait_for_round(client: RedTeamClient, round_: int, timeout_s: float = 240) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        reply = await client.status()
        if reply is not None and reply.round >= round_:
            return int(reply.round)
        await asyncio.sleep(0.2)
    raise AssertionError(f"{TARGET} never reached round {round_}")


def _sample(kind: int, sender: str, round_: int, cluster: int = 0) -> Message:
    """A message of `kind` with a plausible payload (refusals must not depend on it)."""
    if kind in MEMBERSHIP:
        return Message(sender, 0, kind, -1, {"swim": np.arange(64, dtype=np.uint8)})
    if kind == pb.MESSAGE_KIND_MPC_KEYS:
        attacker_key = np.frombuffer(NodeIdentity.generate().public_key_bytes, np.uint8)
        return Message(sender, round_, kind, cluster, {"encryption_public": attacker_key})
    if kind == pb.MESSAGE_KIND_ECHO:
        return Message(sender, round_, kind, -1, meta={"outputs": "", "model": "0" * 64})
    return Message(sender, round_, kind, cluster, {"update": np.ones(16, np.float32)})


class Battery:
    """Runs the cases and keeps what the node answered."""

    def __init__(self) -> None:
        self.results: list[tuple[str, grpc.StatusCode, grpc.StatusCode, str]] = []

    def record(self, case: str, expected: grpc.StatusCode, got: grpc.StatusCode, reason: str):
        self.results.append((case, expected, got, reason))

    @property
    def wrong(self) -> list[tuple[str, str, str]]:
        return [(c, e.name, g.name) for c, e, g, _ in self.results if e != g]

    def counts(self) -> Counter[str]:
        return Counter(reason for _, _, _, reason in self.results)


async def _attack(out: Path, tls: bool) -> tuple[Battery, dict[str, float], dict[str, float]]:
    settings = _node_settings(out, TARGET)
    address = f"127.0.0.1:{settings['port']}"
    insider_key = NodeIdentity.load(out / "keys" / f"{INSIDER}.pem")
    certificate = (
        ClientCertificate(
            out / "certs" / "ca.pem",
            out / "certs" / f"{INSIDER}.pem",
            out / "certs" / f"{INSIDER}.key",
        )
        if tls
        else None
    )
    unauthenticated = grpc.StatusCode.UNAUTHENTICATED
    battery = Battery()
    async with RedTeamClient(address, certificate) as client:
        round_ = await _wait_for_round(client, 2)
        before = scrape(settings["metrics_port"])
        forged_reason = "impersonation" if tls else "bad_signature"
        for kind in ALL_KINDS:
            name = pb.MessageKind.Name(kind)
            claim = _sample(kind, VICTIM, round_)
            unsigned = replace(claim, recipient=TARGET)
            got = await client.send(unsigned)
            battery.record(f"{name} unsigned as {VICTIM}", unauthenticated, got, forged_reason)
            got = await client.send(signed_as(claim, insider_key, TARGET))
            battery.record(f"{name} in {VICTIM}'s name", unauthenticated, got, forged_reason)
            if kind not in MEMBERSHIP:  # SWIM envelopes carry no round: SWIM has its own
                genuine = signed_as(_sample(kind, INSIDER, round_ - 1), insider_key, TARGET)
                got = await client.send(replace(genuine, round=round_ + 1))
                battery.record(f"{name} replayed into another round", unauthenticated, got,
                               "bad_signature")  # fmt: skip
        own = _sample(pb.MESSAGE_KIND_ECHO, INSIDER, round_)
        signed = signed_as(own, insider_key, VICTIM)  # valid, but for another node
        got = await client.send(signed)
        battery.record("replayed to another recipient", grpc.StatusCode.INVALID_ARGUMENT, got,
                       "wrong_recipient")  # fmt: skip
        signed = signed_as(_sample(pb.MESSAGE_KIND_UPDATE, INSIDER, round_, 1), insider_key, TARGET)
        for case, altered in (
            ("replayed in the next round", replace(signed, round=round_ + 1)),
            ("replayed as another kind", replace(signed, kind=pb.MESSAGE_KIND_PARTIAL_SUM)),
            ("replayed for another cluster", replace(signed, cluster=0)),
        ):
            got = await client.send(altered)
            battery.record(case, unauthenticated, got, "bad_signature")
        past = signed_as(_sample(pb.MESSAGE_KIND_ECHO, INSIDER, round_ - 1), insider_key, TARGET)
        got = await client.send(past)
        battery.record("a past round", grpc.StatusCode.FAILED_PRECONDITION, got, "unknown_round")

        # Sizes: an announced payload over the limit, a shape whose size overflows 64 bits, and
        # more dimensions than an array may have; none may allocate or escape as UNKNOWN.
        huge = pb.Chunk(
            header=encode_envelope(replace(past, tensors={})).header,
            specs=[pb.TensorSpec(dtype=pb.DTYPE_FLOAT32, shape=[1 << 29], name="update")],
            total_bytes=4 << 29,
        )
        got = await client.deliver_chunks([huge])
        battery.record("oversized stream", grpc.StatusCode.RESOURCE_EXHAUSTED, got, "too_large")
        stale = _sample(pb.MESSAGE_KIND_UPDATE, INSIDER, round_ - 1, 1)
        envelope = encode_envelope(signed_as(stale, insider_key, TARGET))
        envelope.tensors[0].spec.shape[:] = [1 << 62, 8]
        got = await client.raw("Send", envelope.SerializeToString())
        battery.record("overflowing shape", grpc.StatusCode.RESOURCE_EXHAUSTED, got, "too_large")
        envelope.tensors[0].spec.shape[:] = [1] * 40
        got = await client.raw("Send", envelope.SerializeToString())
        battery.record("40 dimensions", grpc.StatusCode.INVALID_ARGUMENT, got, "malformed")
        got = await client.raw("Send", b"\x0a\xff\xff\xff\xff\x0f garbage")
        battery.record("malformed envelope", grpc.StatusCode.INVALID_ARGUMENT, got, "malformed")
        got = await client.raw_fetch(b"\xff\xff not a request")
        battery.record("malformed model request", grpc.StatusCode.INVALID_ARGUMENT, got,
                       "malformed")  # fmt: skip

        # State transfer: only an allow-listed peer, in its own name, may read the model.
        status = await client.status()
        assert status is not None, "Status answers any caller that can connect"
        fetch = client.fetch_model
        got, chunks = await fetch(VICTIM, status.completed_round, status.model_digest, TARGET)
        assert chunks == 0
        battery.record("unsigned model request", unauthenticated, got, forged_reason)
        got, chunks = await fetch(
            VICTIM, status.completed_round, status.model_digest, TARGET, insider_key
        )
        assert chunks == 0
        battery.record("model request in another's name", unauthenticated, got, forged_reason)
        if not tls:
            got, chunks = await fetch("mallory", 1, "", TARGET, NodeIdentity.generate())
            battery.record("model request from a stranger", grpc.StatusCode.PERMISSION_DENIED,
                           got, "unknown_sender")  # fmt: skip
        after = scrape(settings["metrics_port"])
        assert await _wait_for_round(client, round_ + 1) > round_, "the rounds keep going"
    return battery, before, after


@pytest.fixture(scope="module")
def clean_digests(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    out = tmp_path_factory.mktemp("clean") / "run"
    summary = _finish(_start(out, tls=False), out)
    assert summary["status"] == "completed"
    return _round_digests(summary)


@pytest.mark.parametrize("tls", [False, True], ids=["insecure", "tls"])
def test_no_forgery_is_accepted_and_the_run_equals_the_clean_one(
    tmp_path: Path, clean_digests: list[str], tls: bool
) -> None:
    out = tmp_path / "attacked"
    process = _start(out, tls)
    try:
        deadline = time.monotonic() + 240
        while not (out / "config" / f"{TARGET}.toml").exists():
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.2)
        battery, before, after = asyncio.run(_attack(out, tls))
    finally:
        summary = _finish(process, out)
    assert not battery.wrong, battery.wrong
    codes = {got for _, _, got, _ in battery.results}
    assert grpc.StatusCode.OK not in codes and grpc.StatusCode.UNKNOWN not in codes
    for reason, count in battery.counts().items():
        assert rejected(after, reason) - rejected(before, reason) >= count, reason
    assert summary["status"] == "completed"
    assert summary["rounds"][-1]["excluded"] == []
    # The forgeries changed nothing: every round's honest model is the clean run's, bit for bit.
    assert _round_digests(summary) == clean_digests
