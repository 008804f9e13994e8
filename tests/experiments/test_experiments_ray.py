"""`phalanx experiment run --backend ray` on a real Ray: the same records as the local backend,
an interrupted sweep resumes with only its missing cells, and (slow) a two-node cluster reached
through ``--address`` survives a driver killed with SIGKILL mid-sweep."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from phalanx.experiments.cli import main
from phalanx.experiments.ray_backend import SCRATCH_DIR, WORKER_NAME
from phalanx.experiments.runner import SweepOutcome, run_sweep
from phalanx.experiments.spec import ResolvedSpec, load_spec
from phalanx.experiments.store import CellRecord, ResultStore

pytest.importorskip("ray")

REPO = Path(__file__).resolve().parents[2]
RAY = Path(sys.executable).with_name("ray")

# Three-node, one-round testbeds on the memory engine: about 7 s a cell on one core.
SPEC = """
name = "tiny-ray"
seeds = [1]
engine = "memory"
[base]
nodes = 3
nodes_per_process = 3
rounds = 1
[base.data]
dataset = "digits"
[base.model]
name = "mlp"
[base.clustering]
cluster_size = 3
[base.timeouts]
collect_s = 5.0
[axes]
"training.lr" = {lrs}
"""


def write_spec(path: Path, lrs: str = "[0.05, 0.1, 0.2]") -> Path:
    path.write_text(SPEC.format(lrs=lrs))
    return path


def _cell_processes() -> list[psutil.Process]:
    """Processes of cells that run in a Ray task's scratch folder (none once the tasks end)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        with_args = " ".join(proc.info["cmdline"] or [])
        if f"{SCRATCH_DIR}/" in with_args and proc.pid != os.getpid():
            found.append(proc)
    return found


def _wait_for_no_cell_processes(seconds: float) -> list[psutil.Process]:
    deadline = time.monotonic() + seconds
    while (left := _cell_processes()) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left


def _rounds_without_time(record: CellRecord) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k != "duration_s"} for r in record.rounds]


class _StopAfterFirst:
    """``on_record`` that interrupts the sweep (as Ctrl-C would) once one cell is recorded."""

    def __call__(self, record: CellRecord) -> None:
        raise KeyboardInterrupt


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("ray")
    resolved = load_spec(write_spec(folder / "spec.toml"))
    local = run_sweep(resolved, folder / "local", jobs=2)
    partial = run_sweep(
        resolved, folder / "ray", jobs=2, backend="ray", on_record=_StopAfterFirst()
    )
    left_running = _wait_for_no_cell_processes(20)
    with ResultStore(folder / "ray") as store:
        after_partial = [c.id for c in store.cells()]
    resumed = run_sweep(resolved, folder / "ray", jobs=2, backend="ray")
    return {
        "folder": folder,
        "resolved": resolved,
        "local": local,
        "partial": partial,
        "left_running": left_running,
        "after_partial": after_partial,
        "resumed": resumed,
    }


@pytest.mark.slow
def test_an_interrupted_ray_sweep_resumes_with_only_the_missing_cells(
    sweeps: dict[str, Any],
) -> None:
    partial: SweepOutcome = sweeps["partial"]
    resumed: SweepOutcome = sweeps["resumed"]
    assert partial.interrupted and (partial.ran, partial.failed) == (1, 0)
    assert len(sweeps["after_partial"]) == 1
    assert sweeps["left_running"] == [], "cancelled Ray tasks left cell processes behind"
    assert (resumed.skipped, resumed.ran, resumed.failed, resumed.lost) == (1, 2, 0, 0)
    assert not resumed.interrupted
    expected = [c.id for c in sweeps["resolved"].cells]
    with sqlite3.connect(sweeps["folder"] / "ray" / "results.sqlite") as db:
        ids = [row[0] for row in db.execute("SELECT id FROM cells ORDER BY cell_index")]
        per_cell = dict(db.execute("SELECT cell_id, count(*) FROM rounds GROUP BY cell_id"))
    assert ids == expected
    assert per_cell == dict.fromkeys(expected, 1)


@pytest.mark.slow
def test_ray_cells_record_what_the_local_backend_records(sweeps: dict[str, Any]) -> None:
    local: SweepOutcome = sweeps["local"]
    assert (local.ran, local.failed) == (3, 0)
    folder: Path = sweeps["folder"]
    with ResultStore(folder / "local") as store:
        on_local = {c.id: c for c in store.cells()}
    with ResultStore(folder / "ray") as store:
        on_ray = {c.id: c for c in store.cells()}
    assert on_ray.keys() == on_local.keys() and len(on_ray) == 3
    for cell_id, ray_cell in on_ray.items():
        local_cell = on_local[cell_id]
        assert ray_cell.status == "ok", ray_cell.error
        assert ray_cell.final_digest and len(ray_cell.final_digest) == 64
        for name in (
            "final_digest",
            "final_accuracy",
            "digests_identical",
            "scenario_hash",
            "axes",
            "labels",
            "seed",
        ):
            assert getattr(ray_cell, name) == getattr(local_cell, name), name
        timeless = {k: v for k, v in ray_cell.metrics.items() if k != "round_seconds"}
        assert timeless == {k: v for k, v in local_cell.metrics.items() if k != "round_seconds"}
        assert _rounds_without_time(ray_cell) == _rounds_without_time(local_cell)
        # the driver wrote the cell's folder from what the task returned
        cell_dir = folder / "ray" / "cells" / cell_id
        summary = json.loads((cell_dir / "summary.json").read_text())
        assert summary["engine"] == "memory" and summary["status"] == "completed"
        assert json.loads((cell_dir / "params.json").read_text())["engine"] == "memory"
        assert "engine" not in (cell_dir / "scenario.toml").read_text()
        assert (cell_dir / "cell.log").is_file() and (cell_dir / WORKER_NAME).is_file()
        assert sorted(p.name for p in (cell_dir / "nodes").iterdir()) == [
            "node-00.jsonl",
            "node-01.jsonl",
            "node-02.jsonl",
        ]


@pytest.mark.slow
def test_a_finished_folder_starts_no_ray(
    sweeps: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    folder: Path = sweeps["folder"]
    spec, out = str(folder / "spec.toml"), str(folder / "ray")
    assert main(["experiment", "run", spec, "--out", out, "--backend", "ray"]) == 0
    assert "0 to run" in capsys.readouterr().out


def test_the_cli_checks_the_backend_before_it_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    spec, out = str(write_spec(tmp_path / "spec.toml")), str(tmp_path / "out")
    assert main(["experiment", "run", spec, "--out", out, "--address", "127.0.0.1:1"]) == 2
    assert "--address needs --backend ray" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    assert main(["experiment", "run", spec, "--out", out, "--backend", "ray"]) == 2
    assert "pip install 'phalanx[ray]'" in capsys.readouterr().err


def test_help_does_not_load_ray() -> None:
    code = (
        "import sys\nfrom node.cli import main\n"
        "for words in (['--help'], ['experiment', 'run', '--help']):\n"
        "    try:\n        main(words)\n    except SystemExit:\n        pass\n"
        "print('LOADED' if 'ray' in sys.modules else 'CLEAN')"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.stdout.strip().splitlines()[-1] == "CLEAN", done.stdout + done.stderr
    assert "--backend {local,ray}" in done.stdout and "--address ADDRESS" in done.stdout


# --- a two-node cluster of `ray start` processes --------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _cluster_processes(temp_dir: str, port: int) -> list[psutil.Process]:
    """Every process of the cluster started in `temp_dir` on GCS `port`, with its children."""
    roots = []
    for proc in psutil.process_iter(["cmdline"]):
        with_args = " ".join(proc.info["cmdline"] or [])
        if proc.pid != os.getpid() and (temp_dir in with_args or f":{port} " in f"{with_args} "):
            roots.append(proc)
    found = {p.pid: p for p in roots}
    for proc in roots:
        with contextlib.suppress(psutil.NoSuchProcess):
            found.update({c.pid: c for c in proc.children(recursive=True)})
    return list(found.values())


@pytest.fixture
def ray_cluster() -> Iterator[str]:
    """A head and a worker node of one CPU each on 127.0.0.1, in their own temp dir.

    Torn down by killing exactly this cluster's processes: `ray stop --force` would stop every
    Ray on the machine.
    """
    temp_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths are long
    port = _free_port()
    common = ["--node-ip-address=127.0.0.1", "--num-cpus=1", "--disable-usage-stats"]
    env = {**os.environ, "RAY_TMPDIR": temp_dir}
    try:
        for command in (
            [
                str(RAY),
                "start",
                "--head",
                f"--port={port}",
                f"--temp-dir={temp_dir}",
                "--include-dashboard=false",
                f"--ray-client-server-port={_free_port()}",
                f"--dashboard-agent-listen-port={_free_port()}",
                *common,
            ],
            [
                str(RAY),
                "start",
                f"--address=127.0.0.1:{port}",
                f"--dashboard-agent-listen-port={_free_port()}",
                *common,
            ],
        ):
            started = subprocess.run(
                command, env=env, capture_output=True, text=True, timeout=120, check=False
            )
            assert started.returncode == 0, started.stdout + started.stderr
        yield f"127.0.0.1:{port}"
    finally:
        processes = _cluster_processes(temp_dir, port)
        for proc in processes:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        psutil.wait_procs(processes, timeout=20)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _row_count(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=5) as connection:
            return int(connection.execute("SELECT count(*) FROM cells").fetchone()[0])
    except sqlite3.OperationalError:
        return 0


@pytest.mark.slow
def test_a_cluster_sweep_survives_a_killed_driver(ray_cluster: str, tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "spec.toml", "[0.05, 0.1, 0.2, 0.4]")
    resolved: ResolvedSpec = load_spec(spec)
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
        "--backend",
        "ray",
        "--address",
        ray_cluster,
    ]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    driver = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 180
    while _row_count(out / "results.sqlite") < 1 and time.monotonic() < deadline:
        assert driver.poll() is None, "the driver ended before it could be killed"
        time.sleep(0.2)
    driver.send_signal(signal.SIGKILL)  # mid-sweep: the other node's cell is running
    driver.wait()
    assert 1 <= _row_count(out / "results.sqlite") < 4
    # Ray ends a dead driver's tasks, and with them the cells' processes
    assert _wait_for_no_cell_processes(60) == []
    resumed = subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "already done" in resumed.stdout and "0 failed" in resumed.stdout
    expected = [cell.id for cell in resolved.cells]
    with sqlite3.connect(out / "results.sqlite") as db:
        ids = [row[0] for row in db.execute("SELECT id FROM cells ORDER BY cell_index")]
        statuses = {row[0] for row in db.execute("SELECT status FROM cells")}
        per_cell = dict(db.execute("SELECT cell_id, count(*) FROM rounds GROUP BY cell_id"))
    assert ids == expected and statuses == {"ok"}
    assert per_cell == dict.fromkeys(expected, 1)
    workers = {json.loads((out / "cells" / i / WORKER_NAME).read_text())["pid"] for i in ids}
    assert len(workers) >= 2  # the cells ran in more than one worker process
    again = subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert again.returncode == 0 and "0 to run" in again.stdout
