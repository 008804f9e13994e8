"""`phalanx bench flower`: Phalanx beside Flower's SecAgg+, both sides checked for correctness.

Flower needs its own environment (flwr 1.42 pins protobuf < 7 and ray 2.55.1); the end-to-end
test runs where one is given by PHALANX_FLOWER_PYTHON (or this Python imports flwr) and skips
otherwise."""

from __future__ import annotations

import json
import sys

import pytest

from phalanx.bench.bench_flower import find_flower_python
from tests.conftest import run_phalanx


def test_without_flower_it_says_how_to_get_it() -> None:
    probe = find_flower_python(sys.executable)
    if probe is not None:
        pytest.skip("this Python imports flwr")
    result = run_phalanx("bench", "flower", "--flower-python", sys.executable, timeout=120)
    assert result.returncode == 2
    assert "flwr[simulation]==1.42.0" in result.stdout and "--flower-python" in result.stdout


@pytest.mark.parametrize(
    "flags", [["--threshold", "11"], ["--rounds", "1"], ["--dim", "0"], ["--shares", "20"]]
)
def test_bad_sizes_exit_2(flags: list[str]) -> None:
    result = run_phalanx("bench", "flower", *flags, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr


@pytest.mark.slow
def test_both_sides_aggregate_the_known_sum() -> None:
    python = find_flower_python(None)
    if python is None:
        pytest.skip(
            "no Python with flwr[simulation]: set PHALANX_FLOWER_PYTHON to one "
            "(pip install 'flwr[simulation]==1.42.0' in its own venv)"
        )
    result = run_phalanx(
        "bench",
        "flower",
        *("--nodes", "4", "--dim", "1000", "--shares", "3", "--threshold", "2"),
        *("--rounds", "2", "--repeats", "1", "--nodes-per-process", "2"),
        *("--dissemination", "tree", "--flower-python", python, "--json"),
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(result.stdout[result.stdout.index("{") :])
    assert report["correct"] is True
    assert [(r["side"], r["mode"]) for r in report["rows"]] == [
        ("phalanx", "none:tree"),
        ("flower", "plain"),
        ("phalanx", "secagg:tree"),
        ("flower", "secagg+"),
        ("phalanx", "shamir:packing=2:tree"),
    ]
    assert report["dissemination"] == "tree"
    assert report["flwr"] == "1.42.0"
    assert set(report["ratios"]) >= {
        "phalanx_secagg_over_flower_secaggplus",
        "flower_secaggplus_over_plain",
        "phalanx_secagg_over_plain",
    }
    assert any("PRG" in line for line in report["differences"])


def test_a_scenario_file_keeps_its_settings_under_the_benchmarked_workload(tmp_path) -> None:
    import tomllib
    from pathlib import Path

    from phalanx.bench.bench_flower import phalanx_scenario

    base = Path(__file__).resolve().parents[2] / "bench" / "scenarios" / "protocol-n50.toml"
    written = phalanx_scenario(tmp_path / "s.toml", 20, 5000, 5, 3, 2, 11, 4, base)
    data = tomllib.loads(written.read_text())
    # the file's own settings survive ...
    assert data["membership"]["period_s"] == 3.0
    assert data["clustering"]["publishers"] == 1
    assert data["clustering"]["strategy"] == "static"
    # ... and the benchmarked workload is written over it
    workload = (data["nodes"], data["rounds"], data["seed"], data["nodes_per_process"])
    assert workload == (20, 2, 11, 4)
    assert data["model"]["synthetic_dim"] == 5000 and data["training"]["mode"] == "synthetic"
    assert data["clustering"]["cluster_size"] == 5 and data["aggregation"]["threshold"] == 3


def test_a_missing_scenario_file_exits_2(tmp_path) -> None:
    result = run_phalanx(
        "bench", "flower", "--scenario", str(tmp_path / "absent.toml"), timeout=120
    )
    assert result.returncode == 2
    assert "absent.toml" in result.stdout


def test_flower_gets_the_odd_share_count_its_ring_needs() -> None:
    from phalanx.bench.bench_flower import flower_num_shares

    assert flower_num_shares(50, 10) == 11  # ring: itself and 5 neighbours on each side
    assert flower_num_shares(50, 9) == 9
    assert flower_num_shares(10, 10) == 10  # every client holds a share of every other
