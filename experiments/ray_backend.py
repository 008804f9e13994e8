"""``phalanx experiment run SPEC --backend ray``: each cell as one Ray task.

A task runs the cell exactly as the local backend does (the same command, the same environment
logic, `experiments.runner.run_cell`), but in a scratch folder on whichever Ray node it lands on,
and returns the scored `CellRecord` with the cell's files as data. The driver (this process)
writes the files into ``OUT/cells/CELL_ID`` and the record into the store, so the workers share
nothing with it but the Ray cluster: no shared filesystem, and only the driver touches SQLite.

Resuming works as on the local backend: a cell is recorded in one transaction when its task
returns, so a killed driver (its Ray job ends and Ray stops the job's tasks) or a killed worker
loses at most the cells in flight, which the next run of the same command runs again. A task
whose worker or node died is retried by Ray (`TASK_RETRIES`); if it still fails it is reported
as lost, not recorded. Ctrl-C (or SIGTERM) cancels the running tasks with ``ray.cancel(...,
force=True)``: the worker is killed and the cell's processes get SIGTERM (``PR_SET_PDEATHSIG``).

Ray is imported here, and this module is imported only when ``--backend ray`` is asked for.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from phalanx.experiments.runner import (
    CellSink,
    ChildRegistry,
    available_cores,
    cell_cores,
    failed_record,
    pinned_env,
    prepare_cell_dir,
    run_cell,
)
from phalanx.experiments.spec import Cell, ResolvedSpec
from phalanx.experiments.store import CellRecord

RAY_REQUIREMENT = "ray[default]==2.52.0"
TASK_RETRIES = 2  # Ray's retries of a task whose worker or node died (not of a failed cell)
MAX_FILE_BYTES = 64 * 2**20  # larger files of a cell stay on the worker, listed in SKIPPED_NAME
MAX_CELL_BYTES = 256 * 2**20
SKIPPED_NAME = "files-not-returned.txt"
WORKER_NAME = "ray-worker.json"
SCRATCH_DIR = "phalanx-ray-cells"
WAIT_S = 0.5


class RayUnavailable(ValueError):
    """Ray is not installed, or the cluster cannot be started or reached."""


def require_ray() -> Any:
    """The `ray` module, or `RayUnavailable` saying how to install it."""
    try:
        import ray
    except ImportError as error:
        raise RayUnavailable(
            f"--backend ray needs Ray ({error}); install it with "
            f"`pip install 'phalanx[ray]'` (or `pip install '{RAY_REQUIREMENT}'`)"
        ) from None
    return ray


# --- the worker side ------------------------------------------------------------------------


@dataclass
class CellOutcome:
    """What a task sends back: the scored record and the cell folder's files."""

    record: CellRecord
    files: dict[str, bytes] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)


def execute_cell(
    cell: Cell, kind: str, timeout_s: float | None, env: dict[str, str]
) -> CellOutcome:
    """The Ray task: run `cell` in a scratch folder of this node and return what it produced."""
    root = Path(tempfile.gettempdir()) / SCRATCH_DIR
    root.mkdir(parents=True, exist_ok=True)
    _remove_stale(root)
    scratch = Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-{cell.id}-", dir=root))
    try:
        cell_dir = scratch / cell.id
        record = run_cell(cell, kind, cell_dir, ChildRegistry(env=env), timeout_s)
        if record is None:  # only a stopping registry returns None, and this one never stops
            raise RuntimeError("the cell was stopped")
        worker = {"hostname": socket.gethostname(), "pid": os.getpid()}
        (cell_dir / WORKER_NAME).write_text(json.dumps(worker, sort_keys=True))
        files, skipped = collect_files(cell_dir)
        return CellOutcome(record, files, skipped)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def collect_files(cell_dir: Path) -> tuple[dict[str, bytes], list[str]]:
    """Every regular file under `cell_dir` by relative POSIX path, within the size limits."""
    files: dict[str, bytes] = {}
    skipped: list[str] = []
    total = 0
    for path in sorted(cell_dir.rglob("*")):
        if path.is_symlink() or not path.is_file():
            continue
        relative = path.relative_to(cell_dir).as_posix()
        size = path.stat().st_size
        if size > MAX_FILE_BYTES or total + size > MAX_CELL_BYTES:
            skipped.append(f"{relative} ({size} bytes)")
            continue
        files[relative] = path.read_bytes()
        total += size
    return files, skipped


def _remove_stale(root: Path) -> None:
    """Scratch folders of workers that died (a force-cancelled task cannot clean up)."""
    for folder in root.iterdir():
        owner = folder.name.split("-", 1)[0]
        if not owner.isdigit():
            continue
        try:
            os.kill(int(owner), 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except PermissionError:
            pass


# --- the driver side ------------------------------------------------------------------------


@dataclass
class RaySession:
    """A connection to a Ray cluster (one this process started, or an existing one)."""

    ray: Any
    where: str
    owned: bool  # started or connected by this session, so `close` disconnects
    cpus: int
    largest_node_cpus: int

    @classmethod
    def open(cls, address: str | None, resolved: ResolvedSpec, jobs: int | None) -> RaySession:
        """Connect to `address` (or ``$RAY_ADDRESS``), else start a local Ray.

        A local Ray gets `jobs` times the CPUs of the largest cell (``--jobs`` cells at once),
        or this machine's cores.
        """
        ray = require_ray()
        address = address or os.environ.get("RAY_ADDRESS") or None
        owned = not ray.is_initialized()
        where = f"the Ray cluster at {address}" if address else "a local Ray"
        if owned:
            options: dict[str, Any] = {
                "log_to_driver": False,
                "logging_level": logging.WARNING,
            }
            if address:
                options["address"] = address
            else:
                per_cell = max(cell_cores(resolved.kind, c.params) for c in resolved.cells)
                options["num_cpus"] = jobs * per_cell if jobs else available_cores()
                options["include_dashboard"] = False
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", FutureWarning)
                    ray.init(**options)
            except (ConnectionError, RuntimeError, TimeoutError, ValueError) as error:
                raise RayUnavailable(f"cannot start or reach {where}: {error}") from None
        elif not address:
            where = "the Ray this process is connected to"
        alive = [node for node in ray.nodes() if node.get("Alive")]
        node_cpus = [int(node.get("Resources", {}).get("CPU", 0)) for node in alive]
        session = cls(ray, where, owned, sum(node_cpus), max(node_cpus, default=0))
        if session.largest_node_cpus < 1:
            session.close()
            raise RayUnavailable(f"{where} has no node with a CPU")
        return session

    def describe(self, jobs: int | None) -> str:
        limit = f", at most {jobs} at a time" if jobs else ""
        return f"on {self.where} ({self.cpus} CPUs{limit})"

    def close(self) -> None:
        if self.owned:
            self.ray.shutdown()
            self.owned = False


def run_on_ray(
    session: RaySession,
    resolved: ResolvedSpec,
    todo: list[Cell],
    out: Path,
    jobs: int | None,
    sink: CellSink,
) -> tuple[bool, int]:
    """Run `todo` as Ray tasks, recording each as it returns; (interrupted, cells lost)."""
    ray = session.ray
    from ray.exceptions import RayError, RayTaskError

    task = ray.remote(execute_cell)
    env = pinned_env()
    queue = list(todo)
    pending: dict[Any, Cell] = {}
    limit = jobs or len(todo)
    lost = 0

    def submit() -> None:
        while queue and len(pending) < limit:
            cell = queue.pop(0)
            cpus = min(cell_cores(resolved.kind, cell.params), session.largest_node_cpus)
            ref = task.options(
                num_cpus=cpus,
                max_retries=TASK_RETRIES,
                retry_exceptions=False,
                name=f"phalanx-cell-{cell.id}",
            ).remote(cell, resolved.kind, resolved.spec.cell_timeout_s, env)
            pending[ref] = cell

    try:
        submit()
        sink.running(len(pending))
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=WAIT_S)
            for ref in ready:
                cell = pending.pop(ref)
                try:
                    outcome: CellOutcome = ray.get(ref)
                except RayTaskError as error:  # the task's own code raised: a failed cell
                    cause = getattr(error, "cause", None)
                    sink.record(failed_record(cell, cause if cause is not None else error))
                except RayError as error:  # the worker or its node died, even after retries
                    lost += 1
                    first = (str(error).strip().splitlines() or [""])[0]
                    sink.console.print(
                        f"[yellow]lost[/] {cell.id}: {type(error).__name__}: {first} "
                        "(not recorded; a re-run runs it)"
                    )
                else:
                    write_cell_files(out / "cells" / cell.id, resolved.kind, cell, outcome)
                    sink.record(outcome.record)
            submit()
            sink.running(len(pending))
    except KeyboardInterrupt:
        sink.console.print(
            "[yellow]interrupted: cancelling the running Ray tasks; "
            "re-run the same command to resume[/]"
        )
        for ref in pending:
            with contextlib.suppress(Exception):
                ray.cancel(ref, force=True)
        return True, lost
    return False, lost


def write_cell_files(cell_dir: Path, kind: str, cell: Cell, outcome: CellOutcome) -> None:
    """The cell folder as the local backend leaves it, from the files a task returned."""
    prepare_cell_dir(cell_dir, kind, cell.params)
    for name, data in outcome.files.items():
        relative = PurePosixPath(name)
        if relative.is_absolute() or ".." in relative.parts:
            continue
        target = cell_dir.joinpath(*relative.parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    if outcome.skipped:
        (cell_dir / SKIPPED_NAME).write_text(
            "over the size limits of what a Ray task returns; deleted with the task's "
            "scratch folder:\n" + "\n".join(outcome.skipped) + "\n"
        )
