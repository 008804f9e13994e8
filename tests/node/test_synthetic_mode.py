"""`training.mode = "synthetic"`: a fixed update per node, no training, an exact aggregate."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tomli_w

from phalanx.bench.bench_rounds import AGGREGATE_TOLERANCE, synthetic_error
from phalanx.learning.synthetic import expected_sum, synthetic_update
from phalanx.node.config import ConfigError, parse_scenario
from tests.conftest import run_phalanx


def _scenario(secure: str = "secagg", **extra: Any) -> dict[str, Any]:
    return {
        "name": "synthetic-test",
        "seed": 11,
        "nodes": 4,
        "rounds": 2,
        "data": {"dataset": "digits"},
        "model": {"name": "mlp", "synthetic_dim": 3000},
        "training": {"mode": "synthetic"},
        "clustering": {"cluster_size": 2},
        "aggregation": {"secure": secure},
        "timeouts": {"collect_s": 10.0, "rpc_s": 5.0, "startup_s": 60.0},
        **extra,
    }


def test_the_update_is_fixed_by_seed_and_index_and_exact_in_fixed_point() -> None:
    a = synthetic_update(3, 1, 1000)
    assert a.dtype == np.float32 and a.shape == (1000,)
    assert np.array_equal(a, synthetic_update(3, 1, 1000))
    assert not np.array_equal(a, synthetic_update(3, 2, 1000))
    assert not np.array_equal(a, synthetic_update(4, 1, 1000))
    assert np.all(np.abs(a) <= 0.5)
    assert np.array_equal(a * 256, np.round(a * 256))  # multiples of 2^-8
    assert np.allclose(expected_sum(3, [1, 2], 1000), a + synthetic_update(3, 2, 1000))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model": {"name": "mlp"}}, "synthetic_dim >= 1"),
        ({"training": {"mode": "sgd"}}, 'needs training.mode = "synthetic"'),
        ({"training": {"mode": "bogus"}}, "training.mode"),
        ({"model": {"name": "mlp", "synthetic_dim": -1}}, "synthetic_dim"),
        ({"defense": {"dpsgd": True}}, "DP-SGD"),
    ],
)
def test_bad_synthetic_settings_are_refused(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_scenario({**_scenario(), **change})


def test_a_bad_synthetic_scenario_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(tomli_w.dumps({**_scenario(), "model": {"name": "mlp"}}))
    result = run_phalanx("testbed", "run", str(path), "--out", str(tmp_path / "out"), timeout=60)
    assert result.returncode == 2
    assert "synthetic_dim" in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("engine", "secure"), [("grpc", "secagg"), ("memory", "shamir"), ("memory", "none")]
)
def test_synthetic_rounds_give_the_known_mean(tmp_path: Path, engine: str, secure: str) -> None:
    """A real small testbed (and the memory engine): every round's global step is the exact
    mean of the four synthetic updates, and the honest models are bit-identical."""
    path = tmp_path / "synthetic.toml"
    path.write_text(tomli_w.dumps(_scenario(secure)))
    out = tmp_path / "out"
    result = run_phalanx(
        "testbed", "run", str(path), "--engine", engine, "--no-metrics", "--out", str(out)
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["all_digests_identical"] is True
    assert summary["parameters"] == 3000
    assert len(summary["rounds"]) == 2
    assert synthetic_error(out, 11, 3000) <= AGGREGATE_TOLERANCE
    assert all(r["train_s"] == 0.0 for r in summary["rounds"])


def test_bench_rounds_takes_a_scenario_without_training(tmp_path: Path) -> None:
    path = tmp_path / "tiny.toml"
    path.write_text(tomli_w.dumps({**_scenario(), "training": {}, "model": {"name": "mlp"}}))
    result = run_phalanx(
        "bench",
        "rounds",
        "--scenario",
        str(path),
        "--no-training",
        "--dim",
        "2000",
        "--secure",
        "none,secagg",
        "--json",
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = json.loads(result.stdout[result.stdout.index("[") :])
    assert [r["secure"] for r in rows] == ["none", "secagg"]
    assert all(r["nodes"] == 4 and r["parameters"] == 2000 for r in rows)
    assert all(r["digests_identical"] for r in rows)
    assert all(r["aggregate_error"] <= AGGREGATE_TOLERANCE for r in rows)
    assert "secure_over_plaintext" in rows[1]


def test_bench_rounds_refuses_a_bad_dimension(tmp_path: Path) -> None:
    result = run_phalanx("bench", "rounds", "--no-training", "--dim", "0", timeout=60)
    assert result.returncode == 2 and "--dim" in result.stdout
    result = run_phalanx("bench", "rounds", "--dim", "10", timeout=60)
    assert result.returncode == 2 and "--no-training" in result.stdout


def test_aggregator_roles_rotate_and_the_byte_balance_is_recorded(tmp_path: Path) -> None:
    """Static clusters, 6 rounds of SecAgg: each cluster's aggregator (its one publisher) is
    drawn afresh each round, so the role, and the bytes of publishing, do not stay on one node;
    summary.json records the maximum and the median of bytes sent per node, per round and over
    the run."""
    path = tmp_path / "rotate.toml"
    scenario = _scenario("secagg", nodes=8, rounds=6)
    scenario["clustering"] = {"cluster_size": 4, "strategy": "static"}
    path.write_text(tomli_w.dumps(scenario))
    out = tmp_path / "out"
    result = run_phalanx(
        "testbed", "run", str(path), "--engine", "memory", "--no-metrics", "--out", str(out)
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["all_digests_identical"] is True
    publishers: dict[str, set[str]] = {}
    for record in summary["rounds"]:
        assert record["failed_clusters"] == []
        for cluster, output in record["cluster_outputs"].items():
            publishers.setdefault(cluster, set()).add(output["publisher"])
        balance = record["bytes_sent_balance"]
        assert balance["max"] == max(record["bytes_sent"].values())
    assert all(len(names) > 1 for names in publishers.values()), publishers
    sent = summary["bytes_per_node"]["sent"]
    totals = [sum(r["bytes_sent"][n] for r in summary["rounds"]) for n in summary["nodes"]]
    assert sent["max"] == max(totals) and sent["median"] == float(np.median(totals))
    assert sent["max_over_median"] == pytest.approx(max(totals) / np.median(totals), abs=1e-4)
