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
    from experiments.metrics import cell_metrics as cell_metrics
    from experiments.metrics import predicted_metrics as predicted_metrics
    from experiments.report import write_report as write_report
    from experiments.runner import SweepOutcome as SweepOutcome
    from experiments.runner import default_jobs as default_jobs
    from experiments.runner import rerun_cell as rerun_cell
    from experiments.runner import run_sweep as run_sweep
    from experiments.spec import Cell as Cell
    from experiments.spec import ResolvedSpec as ResolvedSpec
    from experiments.spec import SpecError as SpecError
    from experiments.spec import SweepSpec as SweepSpec
    from experiments.spec import load_spec as load_spec
    from experiments.spec import parse_spec as parse_spec
    from experiments.spec import resolve_spec as resolve_spec
    from experiments.stats import mean_ci as mean_ci
    from experiments.store import ResultStore as ResultStore

_EXPORTS = {
    "cell_metrics": "experiments.metrics",
    "predicted_metrics": "experiments.metrics",
    "write_report": "experiments.report",
    "SweepOutcome": "experiments.runner",
    "default_jobs": "experiments.runner",
    "rerun_cell": "experiments.runner",
    "run_sweep": "experiments.runner",
    "Cell": "experiments.spec",
    "ResolvedSpec": "experiments.spec",
    "SpecError": "experiments.spec",
    "SweepSpec": "experiments.spec",
    "load_spec": "experiments.spec",
    "parse_spec": "experiments.spec",
    "resolve_spec": "experiments.spec",
    "mean_ci": "experiments.stats",
    "ResultStore": "experiments.store",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'experiments' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
