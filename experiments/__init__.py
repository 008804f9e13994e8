"""Declarative sweeps over real testbeds: spec, runner, SQLite store, CSV export and reports.

``phalanx experiment run SPEC`` expands a TOML spec into cells (axes x seeds), runs each as a real
testbed (or an inversion attack) process, stores the results in ``DIR/results.sqlite`` and resumes
after an interruption; ``report`` turns the store into ``report.md`` with plots.

The names below are imported on first use, so that ``import experiments.cli`` (which `phalanx
--help` does) stays free of torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from phalanx.experiments.metrics import cell_metrics as cell_metrics
    from phalanx.experiments.metrics import predicted_metrics as predicted_metrics
    from phalanx.experiments.report import write_report as write_report
    from phalanx.experiments.runner import SweepOutcome as SweepOutcome
    from phalanx.experiments.runner import default_jobs as default_jobs
    from phalanx.experiments.runner import rerun_cell as rerun_cell
    from phalanx.experiments.runner import run_sweep as run_sweep
    from phalanx.experiments.spec import Cell as Cell
    from phalanx.experiments.spec import ResolvedSpec as ResolvedSpec
    from phalanx.experiments.spec import SpecError as SpecError
    from phalanx.experiments.spec import SweepSpec as SweepSpec
    from phalanx.experiments.spec import load_spec as load_spec
    from phalanx.experiments.spec import parse_spec as parse_spec
    from phalanx.experiments.spec import resolve_spec as resolve_spec
    from phalanx.experiments.stats import mean_ci as mean_ci
    from phalanx.experiments.store import ResultStore as ResultStore

_EXPORTS = {
    "cell_metrics": "phalanx.experiments.metrics",
    "predicted_metrics": "phalanx.experiments.metrics",
    "write_report": "phalanx.experiments.report",
    "SweepOutcome": "phalanx.experiments.runner",
    "default_jobs": "phalanx.experiments.runner",
    "rerun_cell": "phalanx.experiments.runner",
    "run_sweep": "phalanx.experiments.runner",
    "Cell": "phalanx.experiments.spec",
    "ResolvedSpec": "phalanx.experiments.spec",
    "SpecError": "phalanx.experiments.spec",
    "SweepSpec": "phalanx.experiments.spec",
    "load_spec": "phalanx.experiments.spec",
    "parse_spec": "phalanx.experiments.spec",
    "resolve_spec": "phalanx.experiments.spec",
    "mean_ci": "phalanx.experiments.stats",
    "ResultStore": "phalanx.experiments.store",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'phalanx.experiments' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
