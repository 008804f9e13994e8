"""`phalanx analyze clusters|shard`: JSON figures, table, plot and one-line errors."""

from __future__ import annotations

import argparse
import json
import math
from fractions import Fraction
from pathlib import Path

import pytest

from phalanx.clustering.analysis import analyze_clusters
from phalanx.clustering.cli import register


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="phalanx")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_json_prints_the_exact_textbook_figures(capsys) -> None:
    code = run(
        [
            "analyze",
            "clusters",
            "--nodes",
            "100",
            "--faulty",
            "20",
            "--cluster-size",
            "10",
            "--json",
        ]
    )
    assert code == 0
    document = json.loads(capsys.readouterr().out)
    (result,) = document["results"]
    exact = Fraction(math.comb(100, 10) - math.comb(80, 10), math.comb(100, 10))
    assert Fraction(result["expected_corrupted_fraction_exact"]) == exact
    assert result["expected_corrupted_fraction"] == pytest.approx(0.9049, abs=1e-4)
    assert result["num_clusters"] == 10 and result["max_tolerated_corrupted"] == 4
    assert result["worst_case"]["corrupted"] == 10
    assert result["prob_at_least"][0] == 1.0
    assert document["corruption_rule"] == {"corrupt_threshold": 1}


def test_range_fraction_rule_and_monte_carlo(capsys) -> None:
    argv = [
        "analyze",
        "clusters",
        "--nodes",
        "40",
        "--faulty",
        "8",
        "--cluster-sizes",
        "3:6",
        "--corrupt-fraction",
        "1/3",
        "--monte-carlo",
        "300",
        "--seed",
        "4",
        "--json",
    ]
    assert run(argv) == 0
    first = capsys.readouterr().out
    results = json.loads(first)["results"]
    assert [r["cluster_size"] for r in results] == [3, 4, 5, 6]
    for result in results:
        sizes = result["cluster_sizes"]
        assert result["corrupt_thresholds"] == [-(-size // 3) for size in sizes]  # ceil(s / 3)
    assert all(r["monte_carlo"]["trials"] == 300 for r in results)
    assert run(argv) == 0
    assert capsys.readouterr().out == first  # seeded: identical output


def test_table_output_and_plot(tmp_path: Path, capsys) -> None:
    plot = tmp_path / "clusters.png"
    argv = [
        "analyze",
        "clusters",
        "--nodes",
        "30",
        "--faulty",
        "5",
        "--cluster-sizes",
        "2:5",
        "--monte-carlo",
        "200",
        "--plot",
        str(plot),
    ]
    assert run(argv) == 0
    out = capsys.readouterr().out
    assert "n=30, f=5" in out
    expected = analyze_clusters(30, 5, 4).expected_fraction()
    assert f"{float(expected):.4f}" in out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_static_strategy_reports_the_worst_case(capsys) -> None:
    argv = [
        "analyze",
        "clusters",
        "--nodes",
        "100",
        "--faulty",
        "20",
        "--cluster-size",
        "10",
        "--strategy",
        "static",
        "--json",
    ]
    assert run(argv) == 0
    (result,) = json.loads(capsys.readouterr().out)["results"]
    assert result["prob_overwhelmed"] == 1.0
    assert result["monte_carlo"] is None


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ["--nodes", "10", "--faulty", "2", "--cluster-size", "11"],
            "cluster size must be in [1, 10]",
        ),
        (["--nodes", "10", "--faulty", "11", "--cluster-size", "2"], "--faulty must be in [0, 10]"),
        (["--nodes", "10", "--faulty", "-1", "--cluster-size", "2"], "--faulty must be in"),
        (["--nodes", "-3", "--faulty", "0", "--cluster-size", "2"], "--nodes must be >= 1"),
        (
            ["--nodes", "10", "--faulty", "2", "--cluster-size", "2", "--breakdown", "0"],
            "breakdown",
        ),
        (
            ["--nodes", "10", "--faulty", "2", "--cluster-size", "2", "--corrupt-fraction", "2"],
            "corrupt_fraction",
        ),
    ],
)
def test_impossible_requests_give_one_line_and_exit_2(
    extra: list[str], message: str, capsys
) -> None:
    assert run(["analyze", "clusters", *extra]) == 2
    captured = capsys.readouterr()
    assert message in captured.err
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err
    assert captured.out == ""


@pytest.mark.parametrize("bad", ["5:2", "a:b", "0:3"])
def test_malformed_size_range_is_a_usage_error(bad: str, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run(["analyze", "clusters", "--nodes", "10", "--faulty", "1", "--cluster-sizes", bad])
    assert exit_info.value.code == 2
    assert "LOW:HIGH" in capsys.readouterr().err


def test_shard_command(capsys) -> None:
    argv = [
        "analyze",
        "shard",
        "--population",
        "10000",
        "--faulty",
        "2500",
        "--shard-size",
        "100",
        "--fraction",
        "1/3",
        "--json",
    ]
    assert run(argv) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["probability"] == pytest.approx(0.027, abs=1e-3)
    assert document["binomial_limit"] > document["probability"]
    assert (
        run(["analyze", "shard", "--population", "10", "--faulty", "2", "--shard-size", "20"]) == 2
    )
