"""Defenses run inside real node processes and report the privacy they spent."""

from __future__ import annotations

import json
from pathlib import Path


def test_dpsgd_nodes_report_growing_epsilon_and_stay_identical(tmp_path: Path, phalanx) -> None:
    scenario = tmp_path / "dp.toml"
    scenario.write_text(
        'nodes = 3\nrounds = 2\n[data]\ndataset = "digits"\n[model]\nname = "mlp"\n'
        "[clustering]\ncluster_size = 3\n"
        "[defense]\ndpsgd = true\nnoise_multiplier = 1.0\nmax_grad_norm = 1.0\n"
        'update = "clip-gauss:clip=1,z=0.5"\n'
    )
    out = tmp_path / "out"
    result = phalanx("testbed", "run", str(scenario), "--out", str(out), timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads((out / "summary.json").read_text())
    first, second = summary["rounds"]
    for record in (first, second):
        assert record["digests_identical"]
    eps_1 = first["privacy"]["node-00"]["epsilon"]
    eps_2 = second["privacy"]["node-00"]["epsilon"]
    assert 0 < eps_1 < eps_2
    assert first["privacy"]["node-00"]["dpsgd_steps"] > 0


def test_bad_defense_settings_are_refused_in_one_line(tmp_path: Path, phalanx) -> None:
    scenario = tmp_path / "bad.toml"
    scenario.write_text("nodes = 3\n[defense]\ndelta = 1.5\n")
    result = phalanx("testbed", "run", str(scenario), "--out", str(tmp_path / "o"), timeout=120)
    assert result.returncode == 2
    assert "defense.delta" in result.stderr and "Traceback" not in result.stderr
