"""`phalanx testbed run` works from any folder: node processes get absolute paths only."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from phalanx.node.config import parse_scenario
from phalanx.node.testbed import Testbed as LocalTestbed
from phalanx.node.testbed import release_ports


def test_testbed_from_an_empty_folder_with_the_default_relative_out(tmp_path: Path, phalanx):
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    result = phalanx(
        "testbed",
        "run",
        "--nodes",
        "2",
        "--rounds",
        "1",
        "--cluster-size",
        "2",
        "--dataset",
        "digits",
        "--model",
        "mlp",
        "--collect-timeout",
        "5",
        "--no-metrics",
        timeout=600,
        cwd=cwd,
    )
    out = cwd / "phalanx-out"  # the default --out, relative to where the command ran
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert [r["round"] for r in summary["rounds"]] == [1]
    assert len(summary["rounds"][0]["honest_digests"]) == 2
    assert sorted(p.name for p in (out / "nodes").glob("*.jsonl")) == [
        "node-00.jsonl",
        "node-01.jsonl",
    ]


def _paths(table: dict, keys: tuple[str, ...]) -> list[str]:
    return [str(table[key]) for key in keys if table.get(key) is not None]


@pytest.mark.parametrize("tls", [False, True])
def test_every_path_handed_to_a_node_process_is_absolute(
    tmp_path: Path, monkeypatch, tls: bool
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    scenario = parse_scenario(
        {
            "nodes": 2,
            "clustering": {"cluster_size": 2},
            "data": {"dataset": "digits", "dir": "data"},
        }
    )
    testbed = LocalTestbed(
        scenario, Path("run"), metrics=False, tls_dir=Path("run/certs") if tls else None
    )
    try:
        testbed.prepare()
    finally:
        release_ports(testbed.ports.values())
    assert testbed.out_dir == tmp_path / "run"
    for proc in testbed.processes:
        assert proc.log_path.is_absolute()
        for config_path in proc.config_paths:
            assert config_path.is_absolute()
            config = tomllib.loads(config_path.read_text())
            paths = _paths(config["node"], ("out_dir", "tls_ca", "tls_cert", "tls_key"))
            paths += _paths(config["scenario"]["data"], ("dir",))
            assert len(paths) == (5 if tls else 2)
            assert all(Path(p).is_absolute() and Path(p).exists() for p in paths), paths
