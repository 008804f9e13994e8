"""`phalanx experiment run`: every cell of a sweep as its own process, resumable, in parallel.

A testbed cell runs ``python -m node testbed run CELL/scenario.toml --out CELL --no-metrics`` and
is scored from ``CELL/summary.json``; an inversion cell runs ``python -m experiments.cells``. Each
finished cell is written to the store in one transaction. Interrupting (Ctrl-C, SIGTERM) stops the
running cells without recording them; ``kill -9`` of the runner takes its children down with it
(``PR_SET_PDEATHSIG``); either way a re-run of the same command runs exactly the missing cells.

Parallelism. A testbed cell starts ceil(nodes / nodes_per_process) node processes that each keep
about half a core busy, so the default is ``J = max(1, cores // ceil(processes / 2))``: on this
2-core machine J = 2 for one- or two-process cells and J = 1 from three processes up; inversion
cells are single-threaded, J = cores. A ``memory``-engine cell is one process (J = cores).

Backends. ``local`` (the default) runs the cells on this machine from a thread pool; ``ray`` runs
each cell as one Ray task (`experiments.ray_backend`): the task runs the same cell command on a
worker and returns the scored record and the cell's files, and only this process writes the
store and the cell folders.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

import tomli_w
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from phalanx.experiments.metrics import cell_metrics, round_rows
from phalanx.experiments.spec import ENGINE_KEY, Cell, ResolvedSpec, canonical_hash
from phalanx.experiments.store import CellRecord, ResultStore

REPO_ROOT = Path(__file__).resolve().parent.parent
VERSIONED_PACKAGES = ("torch", "numpy", "grpcio", "phalanx")
STOP_GRACE_S = 20.0
EXIT_INTERRUPTED = 130
BACKENDS = ("local", "ray")


class SweepInterrupted(Exception):
    """SIGINT or SIGTERM arrived; running cells were stopped and not recorded."""


@cache
def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": sys.version.split()[0]}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


@cache
def git_commit() -> str | None:
    """``git rev-parse HEAD`` of the repository, or None outside a git checkout."""
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def cell_processes(kind: str, params: dict[str, Any]) -> int:
    """How many processes a cell starts: node processes of a gRPC testbed, else one."""
    if kind == "inversion" or params.get(ENGINE_KEY) == "memory":
        return 1
    return math.ceil(params["nodes"] / params.get("nodes_per_process", 1))


def cell_cores(kind: str, params: dict[str, Any]) -> int:
    """Cores a cell keeps busy: half a core per node process, at least one."""
    processes = cell_processes(kind, params)
    return 1 if kind == "inversion" else max(1, math.ceil(processes / 2))


def default_jobs(resolved: ResolvedSpec, cores: int | None = None) -> int:
    """Parallel cells sized to the machine (rule in the module docstring)."""
    cores = cores or available_cores()
    per_cell = max(cell_cores(resolved.kind, c.params) for c in resolved.cells)
    return max(1, min(len(resolved.cells), cores // per_cell))


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the spawning thread's process dies."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _child_env(overrides: dict[str, str] | None = None) -> dict[str, str]:
    from phalanx.node.testbed import child_environment

    env = child_environment()
    env.setdefault("PYTHONHASHSEED", "0")
    env.update(overrides or {})
    return env


def pinned_env() -> dict[str, str]:
    """The variables a cell's numbers may depend on, as this process would give its cells.

    A Ray worker has its own environment (Ray sets ``OMP_NUM_THREADS`` to the task's CPUs); the
    driver sends these so that a cell computes the same on either backend.
    """
    env = _child_env()
    return {key: env[key] for key in ("OMP_NUM_THREADS", "PYTHONHASHSEED")}


@dataclass
class ChildRegistry:
    """Live cell processes, so an interrupt can stop them all."""

    stopping: threading.Event = field(default_factory=threading.Event)
    env: dict[str, str] = field(default_factory=dict)
    _live: set[subprocess.Popen[bytes]] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self, command: list[str], log_path: Path, timeout_s: float | None) -> int | None:
        """Run to completion; None when the sweep is stopping; -9 after `timeout_s`."""
        if self.stopping.is_set():
            return None
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO_ROOT,
                env=_child_env(self.env),
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        with self._lock:
            self._live.add(proc)
        try:
            try:
                code = proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self._stop(proc)
                return -9
        finally:
            with self._lock:
                self._live.discard(proc)
        return None if self.stopping.is_set() else code

    @staticmethod
    def _stop(proc: subprocess.Popen[bytes]) -> None:
        """SIGINT lets a testbed stop its nodes and keep partial results; then SIGKILL."""
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def stop_all(self) -> None:
        self.stopping.set()
        with self._lock:
            live = list(self._live)
        threads = [threading.Thread(target=self._stop, args=(p,)) for p in live]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _log_tail(path: Path, lines: int = 8) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


def _crash_tail(cell_dir: Path) -> str:
    """The end of the first node log with a traceback: why a node process died."""
    for log in sorted((cell_dir / "logs").glob("*.log")):
        text = log.read_text(errors="replace")
        if "Traceback" in text:
            return f"\n{log.name}:\n{_log_tail(log, 6)}"
    return ""


def prepare_cell_dir(cell_dir: Path, kind: str, params: dict[str, Any]) -> None:
    """A clean cell folder with the exact inputs: ``params.json`` and, for testbeds, the TOML."""
    if cell_dir.exists():
        shutil.rmtree(cell_dir)
    cell_dir.mkdir(parents=True)
    (cell_dir / "params.json").write_text(json.dumps(params, indent=2, sort_keys=True))
    if kind == "testbed":
        scenario = {k: v for k, v in params.items() if k != ENGINE_KEY}
        (cell_dir / "scenario.toml").write_text(tomli_w.dumps(_toml_ready(scenario)))


def _toml_ready(value: Any) -> Any:
    """TOML has no null: drop None values (the scenario's defaults stand in for them)."""
    if isinstance(value, dict):
        return {k: _toml_ready(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_toml_ready(v) for v in value]
    return value


def kill_flags(scenario: dict[str, Any]) -> list[str]:
    """``--kill NODE@ROUND`` for the scenario's ``kill`` faults.

    The testbed injects process kills from its ``--kill`` flags; passing the scenario's own fault
    list keeps the cell a plain function of its scenario. (Harmless once the testbed also reads
    ``faults`` itself: a second kill of a dead process is a no-op.)
    """
    flags: list[str] = []
    for fault in scenario.get("faults") or []:
        if fault.get("action") == "kill":
            for node in fault.get("nodes") or []:
                flags += ["--kill", f"{node}@{int(fault['round'])}"]
    return flags


def run_cell(
    cell: Cell, kind: str, cell_dir: Path, registry: ChildRegistry, timeout_s: float | None
) -> CellRecord | None:
    """Run one cell in a fresh folder; None when the sweep was interrupted meanwhile."""
    prepare_cell_dir(cell_dir, kind, cell.params)
    started = time.monotonic()
    base: dict[str, Any] = dict(
        id=cell.id,
        cell_index=cell.index,
        axes=cell.axes,
        labels=cell.labels,
        seed=cell.seed,
        scenario_hash=cell.params_hash,
        versions=package_versions(),
        git_commit=git_commit(),
    )
    log_path = cell_dir / "cell.log"
    if kind == "testbed":
        command = [
            sys.executable,
            "-m",
            "phalanx.node",
            "testbed",
            "run",
            str(cell_dir / "scenario.toml"),
            "--out",
            str(cell_dir),
            "--no-metrics",
        ]
        command += kill_flags(cell.params)
        if ENGINE_KEY in cell.params:
            command += ["--engine", str(cell.params[ENGINE_KEY])]
        if timeout_s is not None:
            command += ["--timeout", str(timeout_s)]
        code = registry.run(command, log_path, None if timeout_s is None else timeout_s + 60)
        if code is None:
            return None
        return _testbed_record(cell, cell_dir, code, time.monotonic() - started, base)
    result_path = cell_dir / "result.json"
    command = [
        sys.executable,
        "-m",
        "phalanx.experiments.cells",
        str(cell_dir / "params.json"),
        str(result_path),
    ]
    code = registry.run(command, log_path, timeout_s)
    if code is None:
        return None
    duration = time.monotonic() - started
    try:
        result = json.loads(result_path.read_text())
    except (OSError, json.JSONDecodeError):
        result = {"error": f"cell process exited {code} without a result; {_log_tail(log_path)}"}
    error = result.pop("error", None)
    return CellRecord(
        **base,
        status="failed" if error else "ok",
        error=error,
        final_accuracy=result.get("utility_accuracy"),
        final_digest=None,
        digests_identical=None,
        duration_s=duration,
        metrics=result,
        finished_at=_now(),
    )


def _testbed_record(
    cell: Cell, cell_dir: Path, code: int, duration: float, base: dict[str, Any]
) -> CellRecord:
    try:
        summary = json.loads((cell_dir / "summary.json").read_text())
    except (OSError, json.JSONDecodeError):
        summary = {"status": "no summary", "rounds": []}
    rows = round_rows(summary, cell.params)
    metrics = cell_metrics(rows, cell.params)
    last = summary["rounds"][-1] if summary["rounds"] else {}
    digests = last.get("honest_digests") or {}
    final_digest = digests[min(digests)] if digests else None
    status = summary.get("status")
    error = None
    if code == -9:
        error = f"cell timed out; testbed status {status!r}"
    elif code != 0 or status != "completed":
        error = (
            f"testbed exit {code}, status {status!r}: {_log_tail(cell_dir / 'cell.log')}"
            f"{_crash_tail(cell_dir)}"
        )
    elif len(rows) != cell.params["rounds"]:
        error = f"testbed recorded {len(rows)} of {cell.params['rounds']} rounds"
    return CellRecord(
        **base,
        status="failed" if error else "ok",
        error=error,
        final_accuracy=summary.get("final_accuracy"),
        final_digest=final_digest,
        digests_identical=summary.get("all_digests_identical") if rows else None,
        duration_s=duration,
        metrics=metrics,
        finished_at=_now(),
        rounds=rows,
    )


@contextlib.contextmanager
def _signals_interrupt() -> Iterator[None]:
    """SIGTERM behaves like Ctrl-C in the main thread (no-op elsewhere)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@dataclass
class SweepOutcome:
    total: int
    skipped: int
    ran: int
    failed: int
    interrupted: bool
    lost: int = 0  # Ray cells whose worker or node died: not recorded, a re-run runs them


def check_folder(store: ResultStore, resolved: ResolvedSpec, out_dir: Path) -> None:
    """A results folder belongs to one grid; refuse to mix grids (it would duplicate cells)."""
    recorded = store.get_meta("fingerprint")
    if recorded is not None and recorded != resolved.fingerprint:
        raise ValueError(
            f"{out_dir} holds results of another grid (spec {store.get_meta('source')!r}, "
            f"quick={store.get_meta('quick')}); use a new --out folder"
        )


def reuse_cells(resolved: ResolvedSpec, store: ResultStore, out_dir: Path, from_dir: Path) -> int:
    """Copy into `store` the finished cells of `from_dir` that this grid holds unchanged.

    A cell is taken when `from_dir` recorded it as ``ok`` under the same id and the same scenario
    hash, and its folder is there; its files are copied under `out_dir`/cells. Cells the new
    store already holds are left alone. Returns the number copied.
    """
    if not (from_dir / "results.sqlite").exists():
        raise ValueError(f"--reuse {from_dir}: not a results folder (no results.sqlite)")
    if from_dir.resolve() == out_dir.resolve():
        raise ValueError("--reuse: give another folder than --out")
    done = store.finished_ids()
    with ResultStore(from_dir) as old:
        records = {r.id: r for r in old.cells() if r.status == "ok"}
    copied = 0
    for cell in resolved.cells:
        record = records.get(cell.id)
        source = from_dir / "cells" / cell.id
        if cell.id in done or record is None or record.scenario_hash != cell.params_hash:
            continue
        if not source.is_dir():
            continue
        target = out_dir / "cells" / cell.id
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(source, target)
        store.record_cell(record)
        copied += 1
    return copied


@dataclass
class CellSink:
    """The driver's end of either backend: each finished cell goes to the store, then on screen."""

    store: ResultStore
    progress: Progress
    task: TaskID
    on_record: Callable[[CellRecord], None] | None = None
    ran: int = 0
    failed: int = 0

    @property
    def console(self) -> Console:
        return self.progress.console

    def record(self, record: CellRecord) -> None:
        self.store.record_cell(record)
        self.ran += 1
        self.failed += record.status != "ok"
        if self.on_record is not None:
            self.on_record(record)
        _print_cell(self.console, record)
        self.progress.advance(self.task)

    def running(self, count: int) -> None:
        self.progress.update(self.task, description=f"cells ({count} in flight)")


def progress_columns() -> tuple[ProgressColumn, ...]:
    return (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )


def run_sweep(
    resolved: ResolvedSpec,
    out_dir: str | Path,
    *,
    jobs: int | None = None,
    retry_failed: bool = False,
    console: Console | None = None,
    on_record: Callable[[CellRecord], None] | None = None,
    backend: str = "local",
    address: str | None = None,
    reuse_from: str | Path | None = None,
) -> SweepOutcome:
    """Run the cells that have no row yet (plus failed ones with `retry_failed`).

    `reuse_from` names an earlier results folder whose finished cells this grid holds unchanged
    (same id, same scenario hash): they are copied in, not run (`reuse_cells`).

    `backend` ``"ray"`` runs each cell as a Ray task on the cluster at `address` (default:
    ``$RAY_ADDRESS``, else a local Ray sized to `jobs` cells or this machine's cores).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if address is not None and backend != "ray":
        raise ValueError("--address needs --backend ray")
    out = Path(out_dir)
    console = console or Console(highlight=False)
    store = ResultStore(out)
    session = None
    try:
        check_folder(store, resolved, out)
        store.set_meta(
            {
                "fingerprint": resolved.fingerprint,
                "source": resolved.source,
                "quick": resolved.quick,
                "kind": resolved.kind,
                "name": resolved.spec.name,
                "axes": [[k, [label for label, _ in v]] for k, v in resolved.axes.items()],
                "seeds": resolved.seeds,
                "metrics": resolved.spec.metrics,
                "heatmap": resolved.spec.heatmap,
                "cells": len(resolved.cells),
            }
        )
        if reuse_from is not None:
            reused = reuse_cells(resolved, store, out, Path(reuse_from))
            console.print(f"{reused} finished cells reused from {reuse_from}")
        done = store.finished_ids(include_failed=not retry_failed)
        todo = [c for c in resolved.cells if c.id not in done]
        if backend == "ray" and todo:
            from phalanx.experiments.ray_backend import RaySession

            session = RaySession.open(address, resolved, jobs)
            pace = session.describe(jobs)
        else:
            jobs = jobs or default_jobs(resolved)
            pace = f"{jobs} at a time"
        console.print(
            f"[bold]phalanx experiment[/] {resolved.spec.name}: {len(resolved.cells)} "
            f"cells, {len(resolved.cells) - len(todo)} already done, {len(todo)} to run, "
            f"{pace} -> {out}"
        )
        interrupted = False
        lost = 0
        with _signals_interrupt(), Progress(*progress_columns(), console=console) as progress:
            task = progress.add_task(
                "cells", total=len(resolved.cells), completed=len(resolved.cells) - len(todo)
            )
            sink = CellSink(store, progress, task, on_record)
            if session is not None:
                from phalanx.experiments.ray_backend import run_on_ray

                interrupted, lost = run_on_ray(session, resolved, todo, out, jobs, sink)
            elif todo:
                interrupted = _run_local(resolved, todo, out, jobs or 1, sink)
        skipped = len(resolved.cells) - len(todo)
        return SweepOutcome(len(resolved.cells), skipped, sink.ran, sink.failed, interrupted, lost)
    finally:
        if session is not None:
            session.close()
        store.close()


def _run_local(
    resolved: ResolvedSpec, todo: list[Cell], out: Path, jobs: int, sink: CellSink
) -> bool:
    """Every cell of `todo` in a thread pool of `jobs`; True when interrupted."""
    registry = ChildRegistry()
    with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="cell") as pool:
        pending: dict[Future[CellRecord | None], Cell] = {
            pool.submit(
                run_cell,
                cell,
                resolved.kind,
                out / "cells" / cell.id,
                registry,
                resolved.spec.cell_timeout_s,
            ): cell
            for cell in todo
        }
        try:
            while pending:
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    cell = pending.pop(future)
                    record = _result_of(future, cell)
                    if record is not None:
                        sink.record(record)
        except KeyboardInterrupt:
            sink.console.print(
                "[yellow]interrupted: stopping running cells; re-run the same command to resume[/]"
            )
            for future in pending:
                future.cancel()
            registry.stop_all()
            return True
    return False


def failed_record(cell: Cell, error: BaseException) -> CellRecord:
    """A failed row for a cell whose runner itself raised (not the cell's own process)."""
    return CellRecord(
        id=cell.id,
        cell_index=cell.index,
        axes=cell.axes,
        labels=cell.labels,
        seed=cell.seed,
        status="failed",
        error=f"{type(error).__name__}: {error}",
        scenario_hash=cell.params_hash,
        final_accuracy=None,
        final_digest=None,
        digests_identical=None,
        duration_s=0.0,
        versions=package_versions(),
        git_commit=git_commit(),
        finished_at=_now(),
    )


def _result_of(future: Future[CellRecord | None], cell: Cell) -> CellRecord | None:
    """The cell's record; an exception in the runner itself becomes a failed cell."""
    try:
        return future.result()
    except Exception as error:
        return failed_record(cell, error)


def _print_cell(console: Console, record: CellRecord) -> None:
    where = ", ".join(f"{k}={v}" for k, v in record.labels.items()) or "-"
    if record.status == "ok":
        accuracy = "-" if record.final_accuracy is None else f"{record.final_accuracy:.4f}"
        console.print(
            f"[green]ok[/] {record.id} ({where}, seed {record.seed}): "
            f"accuracy {accuracy} in {record.duration_s:.1f}s"
        )
    else:
        console.print(
            f"[red]failed[/] {record.id} ({where}, seed {record.seed}): "
            f"{(record.error or '').splitlines()[0] if record.error else ''}"
        )


@dataclass
class RerunResult:
    original: CellRecord
    rerun: CellRecord
    out_dir: Path

    @property
    def digest_matches(self) -> bool:
        return self.original.final_digest is not None and (
            self.original.final_digest == self.rerun.final_digest
        )


def rerun_cell(out_dir: str | Path, cell_id: str, timeout_s: float | None = None) -> RerunResult:
    """Run one recorded cell again from its ``params.json`` into ``DIR/reruns/CELL_ID``."""
    from phalanx.experiments.store import open_existing

    out = Path(out_dir)
    with open_existing(out) as store:
        original = store.cell(cell_id)
        kind = store.get_meta("kind") or "testbed"
    if original is None:
        raise ValueError(f"{out}: no recorded cell {cell_id!r}")
    params_path = out / "cells" / cell_id / "params.json"
    try:
        params = json.loads(params_path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{params_path}: cannot read the cell's parameters ({error})") from None
    if canonical_hash(params) != original.scenario_hash:
        raise ValueError(f"{params_path}: hash differs from the recorded scenario hash")
    cell = Cell(
        original.id, original.cell_index, original.axes, original.labels, original.seed, params
    )
    registry = ChildRegistry()
    with _signals_interrupt():
        try:
            record = run_cell(cell, kind, out / "reruns" / cell_id, registry, timeout_s)
        except KeyboardInterrupt:
            registry.stop_all()
            raise SweepInterrupted from None
    if record is None:
        raise SweepInterrupted
    return RerunResult(original, record, out / "reruns" / cell_id)


@dataclass(frozen=True)
class RescoreResult:
    rescored: int
    skipped: list[str]


def rescore_cells(out_dir: str | Path) -> RescoreResult:
    """Score every stored testbed cell of a sweep again from the files it kept
    (``cells/ID/params.json`` and ``summary.json``) with the current `experiments.metrics`, and
    store the new metrics and rounds. Nothing runs again: the runs' results are unchanged, only
    what is derived from them. Cells whose files are missing or no longer match the recorded
    scenario hash are skipped and named."""
    from dataclasses import replace

    from phalanx.experiments.store import open_existing

    out = Path(out_dir)
    rescored, skipped = 0, []
    with open_existing(out) as store:
        if (store.get_meta("kind") or "testbed") != "testbed":
            raise ValueError(f"{out}: only testbed sweeps are scored from their summaries")
        for record in store.cells():
            cell_dir = out / "cells" / record.id
            try:
                params = json.loads((cell_dir / "params.json").read_text())
                summary = json.loads((cell_dir / "summary.json").read_text())
            except (OSError, json.JSONDecodeError):
                skipped.append(record.id)
                continue
            if canonical_hash(params) != record.scenario_hash:
                skipped.append(record.id)
                continue
            rows = round_rows(summary, params)
            store.record_cell(replace(record, metrics=cell_metrics(rows, params), rounds=rows))
            rescored += 1
    return RescoreResult(rescored, skipped)
