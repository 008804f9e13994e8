"""The memory engine runs the daemons' protocol: the same scenario and seed give bit-identical
honest models in every round on both engines, in every secure mode, with and without Byzantine
peers. This is what lets a result from the simulator count as a result about the system."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import run_phalanx

# Per secure mode, two Byzantine peers whose deviation is not timing-dependent: ALIE colludes
# over the side channel; inconsistent shares are corrected (and their dealers named) by
# Berlekamp-Welch.
BYZANTINE = {"none": "2:alie", "secagg": "2:alie", "shamir": "2:inconsistent-shares"}
FAST = {("shamir", True)}


def _run(engine: str, secure: str, byzantine: bool, out: Path) -> dict[str, Any]:
    args = [
        "testbed",
        "run",
        "--engine",
        engine,
        "--nodes",
        "8",
        "--rounds",
        "2",
        "--cluster-size",
        "4",
        "--secure",
        secure,
        "--dataset",
        "digits",
        "--model",
        "mlp",
        "--nodes-per-process",
        "4",
        "--seed",
        "11",
        "--out",
        str(out),
    ]
    if engine == "grpc":
        args.append("--no-metrics")
    if byzantine:
        args += ["--byzantine", BYZANTINE[secure]]
    result = run_phalanx(*args, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary: dict[str, Any] = json.loads((out / "summary.json").read_text())
    assert summary["engine"] == engine
    return summary


def _cases() -> list[Any]:
    cases = []
    for secure in ("none", "secagg", "shamir"):
        for byzantine in (False, True):
            marks = [] if (secure, byzantine) in FAST else [pytest.mark.slow]
            label = f"{secure}-{'byzantine' if byzantine else 'clean'}"
            cases.append(pytest.param(secure, byzantine, id=label, marks=marks))
    return cases


@pytest.mark.parametrize(("secure", "byzantine"), _cases())
def test_memory_engine_and_grpc_daemons_give_identical_honest_models(
    tmp_path: Path, secure: str, byzantine: bool
) -> None:
    daemons = _run("grpc", secure, byzantine, tmp_path / "grpc")
    memory = _run("memory", secure, byzantine, tmp_path / "memory")
    assert daemons["status"] == memory["status"] == "completed"
    assert [r["round"] for r in memory["rounds"]] == [1, 2]
    for on_daemons, in_memory in zip(daemons["rounds"], memory["rounds"], strict=True):
        assert on_daemons["digests_identical"] and in_memory["digests_identical"]
        assert in_memory["honest_digests"] == on_daemons["honest_digests"]
        assert in_memory["clusters"] == on_daemons["clusters"]
        assert in_memory["liars"] == on_daemons["liars"]
        # The memory network counts the envelope bytes a gRPC call would carry.
        assert in_memory["bytes_sent"] == on_daemons["bytes_sent"]
    assert memory["byzantine"] == daemons["byzantine"]
    if byzantine and secure == "shamir":
        assert memory["rounds"][0]["liars"], "Berlekamp-Welch names the inconsistent dealers"
