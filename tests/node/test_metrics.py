"""A live node exports the promised Prometheus metrics over real HTTP."""

from __future__ import annotations

import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from phalanx.node.config import NodeConfig, NodeSettings, parse_scenario
from phalanx.node.node import Node
from phalanx.node.testbed import free_ports


async def test_a_lone_node_completes_rounds_and_exports_its_metrics(tmp_path: Path) -> None:
    scenario = parse_scenario(
        {
            "nodes": 1,
            "rounds": 2,
            "data": {"dataset": "digits"},
            "model": {"name": "mlp"},
            "clustering": {"cluster_size": 1},
        }
    )
    port, metrics_port = free_ports(2)
    node = Node(
        NodeConfig(
            node=NodeSettings(
                insecure=True,
                id="solo",
                port=port,
                metrics_port=metrics_port,
                out_dir=str(tmp_path),
            ),
            scenario=scenario,
        )
    )
    await node.start()
    try:
        await node.run()
        body = urllib.request.urlopen(f"http://127.0.0.1:{node.metrics_port}/metrics").read()
    finally:
        await node.stop(0.1)
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }
    names = {name for name, _ in samples}
    assert samples[("phalanx_rounds_completed_total", ())] == 2
    assert samples[("phalanx_round_duration_seconds_count", ())] == 2
    assert samples[("phalanx_phase_duration_seconds_count", (("phase", "train"),))] == 2
    assert 0.5 < samples[("phalanx_accuracy_ratio", ())] <= 1.0
    assert samples[("phalanx_round", ())] == 2
    build = [labels for name, labels in samples if name == "phalanx_build_info"]
    assert build and dict(build[0])["node"] == "solo"
    for expected in ("phalanx_loss", "phalanx_train_loss", "phalanx_excluded_nodes"):
        assert expected in names
    # Every exported name follows the conventions: prefix and base units.
    assert all(
        name.startswith("phalanx_") or name.startswith("python_") or name.startswith("process_")
        for name in names
    )
