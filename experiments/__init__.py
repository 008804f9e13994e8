"""Declarative sweeps over real testbeds: spec, runner, SQLite store, CSV export and reports.

``phalanx experiment run SPEC`` expands a TOML spec into cells (axes x seeds), runs each as a real
testbed (or an inversion attack) process, stores the results in ``DIR/results.sqlite`` and resumes
after an interruption; ``report`` turns the store into ``report.md`` with plots.
"""

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
