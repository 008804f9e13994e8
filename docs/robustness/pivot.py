"""Pivot `phalanx experiment export DIR --csv` output into attack x rule Markdown tables.

    python docs/robustness/pivot.py /tmp/robustness-run/main/cells.csv ...

One table per combination of the other axes (data, cluster size); cells are final accuracy,
with the drop from the same rule's clean run (``none``) in brackets when that run is present.
``x`` marks a failed cell; ``†`` a cell whose honest nodes did not end with identical models.
"""

from __future__ import annotations

import csv
import sys
from collections import defaultdict
from pathlib import Path

ROW_AXIS = "axis:byzantine"
COLUMN_AXIS = "axis:aggregation"


def pivot(paths: list[Path]) -> str:
    """Markdown tables of final accuracy, one per value of the remaining axes."""
    groups: dict[tuple[tuple[str, str], ...], dict[tuple[str, str], float | None]] = defaultdict(
        dict
    )
    diverged: set[tuple[tuple[tuple[str, str], ...], str, str]] = set()
    rows: dict[tuple[tuple[str, str], ...], list[str]] = defaultdict(list)
    columns: dict[tuple[tuple[str, str], ...], list[str]] = defaultdict(list)
    for path in paths:
        with open(path, newline="", encoding="utf-8") as handle:
            for record in csv.DictReader(handle):
                others = tuple(
                    sorted(
                        (key.removeprefix("axis:"), value)
                        for key, value in record.items()
                        if key.startswith("axis:") and key not in (ROW_AXIS, COLUMN_AXIS) and value
                    )
                )
                row, column = record[ROW_AXIS], record[COLUMN_AXIS]
                ok = record["status"] == "ok"
                groups[others][(row, column)] = float(record["final_accuracy"]) if ok else None
                if ok and record["digests_identical"] != "True":
                    diverged.add((others, row, column))
                if row not in rows[others]:
                    rows[others].append(row)
                if column not in columns[others]:
                    columns[others].append(column)
    out: list[str] = []
    for others, values in groups.items():
        title = ", ".join(f"{key} = {value}" for key, value in others) or "all cells"
        out.append(f"**{title}** (final accuracy; drop from the clean run in pp)\n")
        out.append("| attack | " + " | ".join(columns[others]) + " |")
        out.append("|---" * (len(columns[others]) + 1) + "|")
        for row in rows[others]:
            cells = []
            for column in columns[others]:
                if (row, column) not in values:
                    cells.append("-")
                    continue
                value = values[(row, column)]
                clean = values.get(("none", column))
                mark = "†" if (others, row, column) in diverged else ""
                if value is None:
                    cells.append("x")
                elif clean is None or row == "none":
                    cells.append(f"{value:.3f}{mark}")
                else:
                    cells.append(f"{value:.3f}{mark} ({100 * (value - clean):+.1f})")
            out.append(f"| {row} | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    print(pivot([Path(arg) for arg in sys.argv[1:]]))
