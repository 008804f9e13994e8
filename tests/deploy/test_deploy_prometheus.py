"""Dashboard queries name metrics that nodes really export; a real Prometheus scrapes a testbed."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from phalanx.clustering.identity import NodeIdentity
from phalanx.deploy.prometheus import (
    ScrapeTarget,
    dashboard_metric_names,
    scrape_config,
    targets_from_node_configs,
)
from phalanx.node.codec import Message, encode_envelope
from phalanx.node.config import (
    NodeConfig,
    NodeSettings,
    PeerConfig,
    load_node_config,
    parse_scenario,
)
from phalanx.node.node import Node
from phalanx.node.testbed import free_ports
from phalanx.v1 import node_pb2 as pb
from phalanx.v1 import node_pb2_grpc as pb_grpc
from tests.conftest import REPO, phalanx_env


async def _intrude(port: int) -> None:
    """Send one message from a sender that is no peer: the node counts a rejection."""
    message = Message(
        "intruder", 1, pb.MESSAGE_KIND_UPDATE, 0, {"update": np.ones(4, dtype=np.float32)}
    )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError):
            await pb_grpc.PhalanxNodeStub(channel).Send(encode_envelope(message), timeout=5)


def _exported_names(metrics_port: int) -> set[str]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read()
    return {
        sample.name
        for family in text_string_to_metric_families(text.decode())
        for sample in family.samples
    }


async def test_every_dashboard_metric_is_exported_by_a_live_node(tmp_path: Path) -> None:
    ports = free_ports(4)
    scenario = parse_scenario(
        {
            "nodes": 2,
            "rounds": 1,
            "data": {"dataset": "digits"},
            "model": {"name": "mlp"},
            "clustering": {"cluster_size": 2},
            "timeouts": {"collect_s": 5.0},
        }
    )
    identities = [NodeIdentity.generate() for _ in range(2)]
    for i, identity in enumerate(identities):
        identity.save(tmp_path / f"node-0{i}.pem")
    peers = [
        PeerConfig(
            id=f"node-0{i}",
            address=f"127.0.0.1:{ports[i]}",
            public_key=identities[i].public_key_bytes.hex(),
        )
        for i in range(2)
    ]
    nodes = [
        Node(
            NodeConfig(
                node=NodeSettings(
                    insecure=True,
                    id=f"node-0{i}",
                    port=ports[i],
                    metrics_port=ports[2 + i],
                    out_dir=str(tmp_path),
                    identity_key=str(tmp_path / f"node-0{i}.pem"),
                ),
                peers=peers,
                scenario=scenario,
            )
        )
        for i in range(2)
    ]
    for node in nodes:
        await node.start()
    try:
        await asyncio.gather(*(node.run_round(1) for node in nodes))
        await _intrude(nodes[0].port)
        exported = _exported_names(ports[2])
    finally:
        for node in nodes:
            await node.stop(0.5)
    wanted = dashboard_metric_names()
    assert len(wanted) >= 10
    missing = [name for name in wanted if name not in exported]
    assert missing == [], f"dashboard queries metrics no node exports: {missing}"


def test_scrape_config_rejects_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no targets"):
        scrape_config([])
    with pytest.raises(ValueError, match="interval_s must be > 0, got 0"):
        scrape_config([ScrapeTarget("node-0", "127.0.0.1:1")], interval_s=0)
    with pytest.raises(ValueError, match="no node"):
        targets_from_node_configs(tmp_path)


def _prometheus() -> str:
    path = shutil.which("prometheus")
    if path is None and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["bash", str(REPO / "deploy" / "ci-setup.sh")], check=False, timeout=900)
        path = shutil.which("prometheus")
    if path is None:
        pytest.skip("Debian's prometheus is not installed and cannot be installed here")
    return path


def _query(base: str, promql: str) -> list[dict]:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    reply = json.loads(urllib.request.urlopen(url, timeout=5).read())
    assert reply["status"] == "success", reply
    return reply["data"]["result"]


def _wait(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except OSError:
            value = None
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
def test_live_prometheus_scrapes_a_four_node_testbed(tmp_path: Path) -> None:
    binary = _prometheus()
    out = tmp_path / "testbed"
    # Rounds start on a 4 s grid, so the run outlasts Prometheus's start and first scrapes: an
    # unpaced run on a 2-core CI runner finished before the counter was first read, and then
    # the counter can never be seen to advance.
    testbed = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "phalanx.node",
            "testbed",
            "run",
            "--nodes",
            "4",
            "--rounds",
            "8",
            "--round-period",
            "4",
            "--model",
            "mlp",
            "--cluster-size",
            "2",
            "--out",
            str(out),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=phalanx_env(),
        cwd=REPO,
    )
    prometheus = None
    try:
        _wait(lambda: len(list((out / "config").glob("*.toml"))) == 4, 60, "node files")
        config = tmp_path / "prometheus.yml"
        config.write_text(
            yaml.safe_dump(scrape_config(targets_from_node_configs(out / "config"), interval_s=1))
        )
        (web_port,) = free_ports(1)
        base = f"http://127.0.0.1:{web_port}"
        prometheus = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{web_port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait(
            lambda: urllib.request.urlopen(f"{base}/-/ready", timeout=2).status == 200,
            60,
            "prometheus ready",
        )
        up = _wait(lambda: len(_query(base, "up == 1")) == 4 or None, 120, "4 targets up")
        assert up
        first = _wait(
            lambda: _query(base, "max(phalanx_rounds_completed_total) >= 1"),
            180,
            "a completed round",
        )
        grpc_port = load_node_config(out / "config" / "node-00.toml").node.port
        asyncio.run(_intrude(grpc_port))
        later = _wait(
            lambda: _query(base, f"max(phalanx_rounds_completed_total) > {first[0]['value'][1]}"),
            180,
            "the round counter to advance",
        )
        assert float(later[0]["value"][1]) > float(first[0]["value"][1])
        testbed.wait(timeout=400)
        time.sleep(2)
        missing = [
            name
            for name in dashboard_metric_names()
            if not _query(base, f"last_over_time({name}[10m])")
        ]
        assert missing == [], f"no data in Prometheus for {missing}"
        nodes = {r["metric"]["node"] for r in _query(base, "last_over_time(phalanx_loss[10m])")}
        assert nodes == {"node-00", "node-01", "node-02", "node-03"}
    finally:
        for process in (testbed, prometheus):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
