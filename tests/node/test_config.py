"""Scenario files: validated, with one-line errors that name the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from phalanx.node.config import (
    ConfigError,
    byzantine_nodes,
    default_scenario_path,
    load_scenario,
    parse_scenario,
    with_overrides,
)
from phalanx.node.testbed import node_ids


def test_default_scenario_is_valid_and_matches_make_run_promises() -> None:
    scenario = load_scenario(default_scenario_path())
    assert 8 <= scenario.nodes <= 16
    assert scenario.data.dataset == "mnist5k"
    assert scenario.data.partition == "dirichlet" and scenario.data.alpha == 0.5


def test_the_demo_that_make_run_runs_shows_the_point() -> None:
    """Secret-shared cluster sums, two Byzantine peers and a robust rule, on 2 cores."""
    scenario = load_scenario(default_scenario_path().with_name("demo.toml"))
    assert 8 <= scenario.nodes <= 16
    assert scenario.aggregation.secure == "shamir"
    assert scenario.aggregation.rule != "mean"
    assert len(byzantine_nodes(scenario, node_ids(scenario.nodes))) == 2
    makefile = (Path(__file__).resolve().parents[2] / "Makefile").read_text()
    assert "testbed run node/scenarios/demo.toml" in makefile


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"nodez": 3}, "nodez: unknown key"),
        ({"training": {"lr": -1}}, "training.lr: Input should be greater than 0"),
        ({"nodes": 4, "clustering": {"cluster_size": 5}}, "cluster_size (5) is larger than nodes"),
        ({"data": {"dataset": "mnist"}}, "needs data.dir"),
        ({"data": {"dataset": "cifar10", "dir": "/does/not/exist"}}, "does not exist"),
        (
            {"aggregation": {"secure": "shamir"}, "clustering": {"cluster_size": 1}},
            "cluster of one",
        ),
        ({"model": {"name": "transformer"}}, "unknown model 'transformer'"),
        (
            {
                "nodes": 8,
                "aggregation": {"secure": "shamir", "packing": 4},
                "clustering": {"cluster_size": 4},
            },
            "needs t + packing - 1 = 5 holders to reconstruct, more than a cluster of 4",
        ),
        (
            {"aggregation": {"secure": "secagg", "packing": 2}},
            "needs aggregation.secure = 'shamir'",
        ),
        ({"aggregation": {"packing": 2}}, "needs aggregation.secure = 'shamir'"),
        ({"aggregation": {"packing": 0}}, "aggregation.packing: Input should be greater than"),
    ],
)
def test_bad_scenarios_get_a_one_line_error_naming_the_field(data: dict, expected: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_scenario(data)
    assert expected in str(error.value)
    assert "\n" not in str(error.value)


def test_overrides_apply_dotted_keys_and_refuse_unknown_ones() -> None:
    scenario = with_overrides(parse_scenario({}), {"clustering.cluster_size": 2, "rounds": 7})
    assert scenario.clustering.cluster_size == 2 and scenario.rounds == 7
    with pytest.raises(ConfigError, match=r"clustering\.size: unknown key"):
        with_overrides(scenario, {"clustering.size": 2})


def test_cli_reports_bad_scenario_in_one_line_without_traceback(tmp_path: Path, phalanx) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("nodes = 4\n[clustering]\ncluster_size = 9\n")
    result = phalanx("testbed", "run", str(bad), "--out", str(tmp_path / "out"), timeout=120)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "cluster_size (9) is larger than nodes (4)" in lines[0]


def test_cli_reports_missing_data_directory(tmp_path: Path, phalanx) -> None:
    result = phalanx("testbed", "run", "--dataset", "mnist", "--out", str(tmp_path), timeout=120)
    assert result.returncode == 2 and "needs data.dir" in result.stderr
    assert "Traceback" not in result.stderr


def test_invalid_toml_is_reported_with_the_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("nodes = = 3")
    with pytest.raises(ConfigError, match=r"broken\.toml: invalid TOML"):
        load_scenario(broken)
