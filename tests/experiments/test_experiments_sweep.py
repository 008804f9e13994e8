"""Real sweeps of tiny testbeds: four rows and a report, resume after kill -9, re-run by digest."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from phalanx.experiments.cli import main
from phalanx.experiments.report import write_report
from phalanx.experiments.runner import rerun_cell, run_sweep
from phalanx.experiments.spec import load_spec
from phalanx.experiments.store import ResultStore

REPO = Path(__file__).resolve().parents[2]

TINY_BASE = """
[base]
nodes = 3
nodes_per_process = 3
rounds = {rounds}
[base.data]
dataset = "digits"
[base.model]
name = "mlp"
[base.clustering]
cluster_size = 3
[base.timeouts]
collect_s = 5.0
"""


def write_spec(path: Path, axes: str, rounds: int = 1, seeds: str = "[1]") -> Path:
    path.write_text(
        f'name = "tiny"\nseeds = {seeds}\n' + TINY_BASE.format(rounds=rounds) + "[axes]\n" + axes
    )
    return path


@pytest.fixture(scope="module")
def two_by_two(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("sweep")
    spec = write_spec(
        folder / "spec.toml",
        '"clustering.strategy" = ["static", "random"]\n"clustering.cluster_size" = [1, 3]\n',
        rounds=2,
    )
    out = folder / "out"
    outcome = run_sweep(load_spec(spec), out, jobs=2)
    assert (outcome.ran, outcome.failed, outcome.interrupted) == (4, 0, False)
    return out


def test_two_by_two_sweep_gives_four_rows_and_a_report(two_by_two: Path) -> None:
    with ResultStore(two_by_two) as store:
        cells = store.cells()
    assert len(cells) == 4
    assert {
        (c.labels["clustering.strategy"], c.labels["clustering.cluster_size"]) for c in cells
    } == {("static", "1"), ("static", "3"), ("random", "1"), ("random", "3")}
    for cell in cells:
        assert cell.status == "ok", cell.error
        assert [r["round"] for r in cell.rounds] == [1, 2]
        assert cell.final_digest and len(cell.final_digest) == 64 and cell.digests_identical
        assert 0.0 < (cell.final_accuracy or 0.0) <= 1.0
        assert cell.rounds[-1]["num_clusters"] == 3 // int(cell.axes["clustering.cluster_size"])
        assert cell.rounds[0]["bytes_sent_total"] > 0
        assert cell.versions["torch"] and cell.scenario_hash
        assert (two_by_two / "cells" / cell.id / "summary.json").is_file()
    report = write_report(two_by_two)
    text = report.read_text()
    assert text.count("| strategy=") == 4  # the seed-averaged table has one row per configuration
    for plot in (
        "accuracy_vs_round.png",
        "heatmap_final_accuracy.png",
        "theory_vs_measurement.png",
        "cost_vs_cluster_size.png",
    ):
        assert (two_by_two / plot).stat().st_size > 1000
        assert f"({plot})" in text
    assert main(["experiment", "export", str(two_by_two), "--csv"]) == 0
    lines = (two_by_two / "cells.csv").read_text().strip().splitlines()
    assert len(lines) == 1 + 4
    assert len((two_by_two / "rounds.csv").read_text().strip().splitlines()) == 1 + 8


def test_rerun_of_one_cell_reproduces_its_digest(two_by_two: Path) -> None:
    with ResultStore(two_by_two) as store:
        cell = store.cells()[1]
    result = rerun_cell(two_by_two, cell.id)
    assert result.rerun.status == "ok"
    assert result.rerun.final_digest == cell.final_digest and result.digest_matches
    assert main(["experiment", "rerun", str(two_by_two), "no-such-cell"]) == 2


def _row_count(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=5) as connection:
            return int(connection.execute("SELECT count(*) FROM cells").fetchone()[0])
    except sqlite3.OperationalError:
        return 0


def test_resume_after_kill_9_neither_duplicates_nor_loses_cells(tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "spec.toml", '"training.lr" = [0.05, 0.1, 0.2]\n')
    out = tmp_path / "out"
    command = [
        sys.executable,
        "-m",
        "phalanx.experiments",
        "experiment",
        "run",
        str(spec),
        "--out",
        str(out),
        "--jobs",
        "1",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    runner = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 120
    while _row_count(out / "results.sqlite") < 1 and time.monotonic() < deadline:
        assert runner.poll() is None, "the runner ended before it could be killed"
        time.sleep(0.2)
    runner.send_signal(signal.SIGKILL)  # mid-sweep: the second cell is running
    runner.wait()
    assert 1 <= _row_count(out / "results.sqlite") < 3
    resumed = subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=240, check=False
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "already done" in resumed.stdout
    expected = [cell.id for cell in load_spec(spec).cells]
    with sqlite3.connect(out / "results.sqlite") as connection:
        ids = [row[0] for row in connection.execute("SELECT id FROM cells ORDER BY cell_index")]
        statuses = {row[0] for row in connection.execute("SELECT status FROM cells")}
        per_cell = connection.execute(
            "SELECT cell_id, count(*) FROM rounds GROUP BY cell_id"
        ).fetchall()
    assert ids == expected and statuses == {"ok"}
    assert sorted(per_cell) == sorted((cell_id, 1) for cell_id in expected)
    again = subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert again.returncode == 0 and "0 to run" in again.stdout


def test_a_failing_cell_is_recorded_and_the_sweep_carries_on(tmp_path: Path) -> None:
    spec = tmp_path / "inversion.toml"
    spec.write_text(
        'kind = "inversion"\nseeds = [0]\n[base]\ndataset = "digits"\n'
        'model = "mlp"\nutility_epochs = 0\n[axes]\nmethod = ["no-such-attack", '
        '"also-missing"]\n'
    )
    outcome = run_sweep(load_spec(spec), tmp_path / "out", jobs=2)
    assert (outcome.ran, outcome.failed) == (2, 2)
    with ResultStore(tmp_path / "out") as store:
        errors = [c.error or "" for c in store.cells()]
    assert all("unknown method" in e or "adversary.inversion" in e for e in errors), errors


def test_a_folder_holds_one_grid(two_by_two: Path, tmp_path: Path) -> None:
    other = write_spec(tmp_path / "other.toml", '"training.lr" = [0.5]\n')
    assert main(["experiment", "run", str(other), "--out", str(two_by_two)]) == 2
