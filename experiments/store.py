"""The results store: one SQLite database (WAL mode) per results folder.

``cells`` holds one row per finished cell, ``rounds`` its per-round metrics and ``meta`` the grid
the folder belongs to. A cell's rows are written in a single transaction, so a crash (even
``kill -9``) mid-write leaves either the whole cell or none of it, never a torn one; a cell that
was running when the sweep stopped has no row and simply runs again on resume.
"""

from __future__ import annotations

import csv
import json
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DB_NAME = "results.sqlite"

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS cells (
    id TEXT PRIMARY KEY,
    cell_index INTEGER NOT NULL,
    axes TEXT NOT NULL,
    labels TEXT NOT NULL,
    seed INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('ok', 'failed')),
    error TEXT,
    scenario_hash TEXT NOT NULL,
    final_accuracy REAL,
    final_digest TEXT,
    digests_identical INTEGER,
    duration_s REAL NOT NULL,
    versions TEXT NOT NULL,
    git_commit TEXT,
    metrics TEXT NOT NULL,
    finished_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS rounds (
    cell_id TEXT NOT NULL REFERENCES cells(id) ON DELETE CASCADE,
    round INTEGER NOT NULL,
    accuracy REAL,
    loss REAL,
    duration_s REAL,
    bytes_sent_total INTEGER,
    excluded_count INTEGER,
    failed_clusters_count INTEGER,
    flagged_count INTEGER,
    num_clusters INTEGER,
    faulty_nodes INTEGER,
    clusters_with_faulty INTEGER,
    corrupted_clusters INTEGER,
    digests_identical INTEGER,
    PRIMARY KEY (cell_id, round)
);
"""

ROUND_COLUMNS = (
    "round",
    "accuracy",
    "loss",
    "duration_s",
    "bytes_sent_total",
    "excluded_count",
    "failed_clusters_count",
    "flagged_count",
    "num_clusters",
    "faulty_nodes",
    "clusters_with_faulty",
    "corrupted_clusters",
    "digests_identical",
)
CELL_COLUMNS = (
    "id",
    "cell_index",
    "axes",
    "labels",
    "seed",
    "status",
    "error",
    "scenario_hash",
    "final_accuracy",
    "final_digest",
    "digests_identical",
    "duration_s",
    "versions",
    "git_commit",
    "metrics",
    "finished_at",
)


@dataclass
class CellRecord:
    """Everything stored about one finished (or failed) cell."""

    id: str
    cell_index: int
    axes: dict[str, Any]
    labels: dict[str, str]
    seed: int
    status: str
    error: str | None
    scenario_hash: str
    final_accuracy: float | None
    final_digest: str | None
    digests_identical: bool | None
    duration_s: float
    versions: dict[str, str | None]
    git_commit: str | None
    metrics: dict[str, Any] = field(default_factory=dict)
    finished_at: str = ""
    rounds: list[dict[str, Any]] = field(default_factory=list)


class ResultStore:
    """A small persistent store of cells and rounds; one connection per instance."""

    def __init__(self, out_dir: str | Path) -> None:
        self.path = Path(out_dir) / DB_NAME
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # --- meta ---------------------------------------------------------------------------------

    def get_meta(self, key: str) -> Any:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def set_meta(self, values: dict[str, Any]) -> None:
        with self._transaction() as db:
            db.executemany(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                [(key, json.dumps(value, sort_keys=True)) for key, value in values.items()],
            )

    # --- cells --------------------------------------------------------------------------------

    def finished_ids(self, *, include_failed: bool = True) -> set[str]:
        query = "SELECT id FROM cells" + ("" if include_failed else " WHERE status = 'ok'")
        return {row[0] for row in self._db.execute(query)}

    def record_cell(self, record: CellRecord) -> None:
        """Replace the cell and its rounds atomically (one transaction)."""
        values = (
            record.id,
            record.cell_index,
            json.dumps(record.axes, sort_keys=True),
            json.dumps(record.labels, sort_keys=True),
            record.seed,
            record.status,
            record.error,
            record.scenario_hash,
            record.final_accuracy,
            record.final_digest,
            None if record.digests_identical is None else int(record.digests_identical),
            record.duration_s,
            json.dumps(record.versions, sort_keys=True),
            record.git_commit,
            json.dumps(record.metrics, sort_keys=True),
            record.finished_at,
        )
        with self._transaction() as db:
            db.execute("DELETE FROM rounds WHERE cell_id = ?", (record.id,))
            db.execute("DELETE FROM cells WHERE id = ?", (record.id,))
            db.execute(
                f"INSERT INTO cells ({', '.join(CELL_COLUMNS)}) "
                f"VALUES ({', '.join('?' for _ in CELL_COLUMNS)})",
                values,
            )
            db.executemany(
                f"INSERT INTO rounds (cell_id, {', '.join(ROUND_COLUMNS)}) "
                f"VALUES (?, {', '.join('?' for _ in ROUND_COLUMNS)})",
                [
                    (record.id, *(_sql_value(r.get(column)) for column in ROUND_COLUMNS))
                    for r in record.rounds
                ],
            )

    def cells(self) -> list[CellRecord]:
        """Every stored cell in grid order, with its rounds."""
        rounds: dict[str, list[dict[str, Any]]] = {}
        for row in self._db.execute(
            f"SELECT cell_id, {', '.join(ROUND_COLUMNS)} FROM rounds ORDER BY cell_id, round"
        ):
            rounds.setdefault(row[0], []).append(dict(zip(ROUND_COLUMNS, row[1:], strict=True)))
        records = []
        for row in self._db.execute(
            f"SELECT {', '.join(CELL_COLUMNS)} FROM cells ORDER BY cell_index, id"
        ):
            data = dict(zip(CELL_COLUMNS, row, strict=True))
            records.append(
                CellRecord(
                    id=data["id"],
                    cell_index=data["cell_index"],
                    axes=json.loads(data["axes"]),
                    labels=json.loads(data["labels"]),
                    seed=data["seed"],
                    status=data["status"],
                    error=data["error"],
                    scenario_hash=data["scenario_hash"],
                    final_accuracy=data["final_accuracy"],
                    final_digest=data["final_digest"],
                    digests_identical=(
                        None
                        if data["digests_identical"] is None
                        else bool(data["digests_identical"])
                    ),
                    duration_s=data["duration_s"],
                    versions=json.loads(data["versions"]),
                    git_commit=data["git_commit"],
                    metrics=json.loads(data["metrics"]),
                    finished_at=data["finished_at"],
                    rounds=rounds.get(data["id"], []),
                )
            )
        return records

    def cell(self, cell_id: str) -> CellRecord | None:
        return next((c for c in self.cells() if c.id == cell_id), None)

    # --- export -------------------------------------------------------------------------------

    def export_csv(self, out_dir: str | Path) -> tuple[Path, Path]:
        """``cells.csv`` (axes flattened to ``axis:KEY`` columns) and ``rounds.csv``."""
        out = Path(out_dir)
        records = self.cells()
        axis_keys = sorted({key for record in records for key in record.axes})
        metric_keys = sorted({key for record in records for key in record.metrics})
        cells_path, rounds_path = out / "cells.csv", out / "rounds.csv"
        with open(cells_path, "w", newline="") as handle:
            writer = csv.writer(handle)
            scalar = [c for c in CELL_COLUMNS if c not in ("axes", "labels", "metrics")]
            writer.writerow(
                [*scalar, *(f"axis:{k}" for k in axis_keys), *(f"metric:{k}" for k in metric_keys)]
            )
            for record in records:
                row = vars(record)
                writer.writerow(
                    [
                        *(_csv_value(row[c]) for c in scalar),
                        *(record.labels.get(k, "") for k in axis_keys),
                        *(_csv_value(record.metrics.get(k)) for k in metric_keys),
                    ]
                )
        with open(rounds_path, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["cell_id", *ROUND_COLUMNS])
            for record in records:
                for r in record.rounds:
                    writer.writerow([record.id, *(_csv_value(r.get(c)) for c in ROUND_COLUMNS)])
        return cells_path, rounds_path


def _sql_value(value: Any) -> Any:
    return int(value) if isinstance(value, bool) else value


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)
    return value


def open_existing(out_dir: str | Path) -> ResultStore:
    """The store of a results folder that must already exist (for report/export/rerun)."""
    path = Path(out_dir) / DB_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{out_dir}: no {DB_NAME}; run `phalanx experiment run` first")
    return ResultStore(out_dir)


def round_rows(records: Sequence[CellRecord]) -> list[tuple[CellRecord, dict[str, Any]]]:
    return [(record, r) for record in records for r in record.rounds]
