"""The `bench mpc` entry point: keys, ratios and CLI wiring on a tiny size."""

from __future__ import annotations

import argparse
import json

import pytest

from phalanx.bench.bench_mpc import register, run_mpc_bench


@pytest.mark.parametrize("mode", ["secagg", "shamir"])
def test_bench_reports_required_keys(mode: str) -> None:
    result = run_mpc_bench(dim=2000, cluster_size=4, mode=mode, repeats=1)
    compute = result["compute_s"]
    assert isinstance(compute, dict)
    assert {"encode_share", "sum", "reconstruct", "total"} <= set(compute)
    assert compute["total"] > 0
    ratio = result["bytes_ratio"]
    assert isinstance(ratio, float)
    assert (1.0 < ratio < 1.2) if mode == "secagg" else ratio > 3.0
    assert 0 < float(result["max_abs_error"]) <= 4 * 2.0**-16  # type: ignore[arg-type]


def test_cli_json(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(
        [
            "mpc",
            "--dim",
            "500",
            "--cluster-size",
            "3",
            "--mode",
            "shamir",
            "--repeats",
            "1",
            "--json",
        ]
    )
    assert args.func(args) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["mode"] == "shamir" and "total" in printed["compute_s"]
    bad = parser.parse_args(["mpc", "--dim", "0", "--json"])
    assert bad.func(bad) == 2
