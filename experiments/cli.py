"""`phalanx experiment run | report | export | rerun`.

Exit codes: 0 success, 1 some cells failed or were lost with their Ray worker (run) or the re-run
digest differs (rerun), 2 bad input (spec, folder, cell id, backend), 130 interrupted (re-run the
same command to resume).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

# The runner and the spec (which validates scenarios, and so loads torch) are imported by the
# handlers: `phalanx experiment --help` stays fast.
EXIT_OK = 0
EXIT_CELLS_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130  # the same code as `experiments.runner.EXIT_INTERRUPTED`

console = Console(highlight=False)


def _error(message: str) -> int:
    print(f"phalanx experiment: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


def _default_out(spec_path: Path, quick: bool) -> Path:
    return Path("experiments-out") / (spec_path.stem + ("-quick" if quick else ""))


def _cmd_run(args: argparse.Namespace) -> int:
    if args.address is not None and args.backend != "ray":
        return _error("--address needs --backend ray")
    if args.backend == "ray":
        from phalanx.experiments.ray_backend import RayUnavailable, require_ray

        try:
            require_ray()
        except RayUnavailable as error:
            return _error(str(error))
    from phalanx.experiments.runner import run_sweep
    from phalanx.experiments.spec import SpecError, load_spec

    try:
        resolved = load_spec(args.spec, quick=args.quick)
    except SpecError as error:
        return _error(str(error))
    out = Path(args.out) if args.out else _default_out(Path(args.spec), args.quick)
    try:
        outcome = run_sweep(
            resolved,
            out,
            jobs=args.jobs,
            retry_failed=args.retry_failed,
            console=console,
            backend=args.backend,
            address=args.address,
            reuse_from=args.reuse,
        )
    except ValueError as error:
        return _error(str(error))
    lost = f", {outcome.lost} lost (re-run to run them)" if outcome.lost else ""
    console.print(
        f"{outcome.ran} cells run, {outcome.skipped} skipped (already done), "
        f"{outcome.failed} failed{lost}; results in {out}"
    )
    if outcome.interrupted:
        return EXIT_INTERRUPTED
    return EXIT_CELLS_FAILED if outcome.failed or outcome.lost else EXIT_OK


def _cmd_report(args: argparse.Namespace) -> int:
    from phalanx.experiments.report import write_report

    try:
        path = write_report(args.dir)
    except FileNotFoundError as error:
        return _error(str(error))
    console.print(f"report: {path}")
    return EXIT_OK


def _cmd_rescore(args: argparse.Namespace) -> int:
    from phalanx.experiments.runner import rescore_cells

    try:
        result = rescore_cells(args.dir)
    except (FileNotFoundError, ValueError) as error:
        return _error(str(error))
    skipped = (
        f"; skipped (files missing or changed): {', '.join(result.skipped)}"
        if result.skipped
        else ""
    )
    console.print(f"{result.rescored} cells scored again in {args.dir}{skipped}")
    return EXIT_CELLS_FAILED if result.skipped else EXIT_OK


def _cmd_export(args: argparse.Namespace) -> int:
    from phalanx.experiments.store import open_existing

    if not args.csv:
        return _error("export: choose a format (--csv)")
    try:
        with open_existing(args.dir) as store:
            cells, rounds = store.export_csv(args.dir)
    except FileNotFoundError as error:
        return _error(str(error))
    console.print(f"wrote {cells} and {rounds}")
    return EXIT_OK


def _cmd_rerun(args: argparse.Namespace) -> int:
    from phalanx.experiments.runner import SweepInterrupted, rerun_cell

    try:
        result = rerun_cell(args.dir, args.cell_id, timeout_s=args.timeout)
    except (FileNotFoundError, ValueError) as error:
        return _error(str(error))
    except SweepInterrupted:
        return EXIT_INTERRUPTED
    table = Table("", "recorded", "re-run", title=f"cell {args.cell_id}")
    original, again = result.original, result.rerun
    table.add_row("status", original.status, again.status)
    table.add_row("final accuracy", str(original.final_accuracy), str(again.final_accuracy))
    table.add_row("final digest", str(original.final_digest), str(again.final_digest))
    table.add_row("git commit", str(original.git_commit), str(again.git_commit))
    table.add_row("versions", str(original.versions), str(again.versions))
    console.print(table)
    verdict = "[green]identical[/]" if result.digest_matches else "[red]DIFFERENT[/]"
    console.print(f"final digest: {verdict}   (re-run output in {result.out_dir})")
    return EXIT_OK if result.digest_matches else EXIT_CELLS_FAILED


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``phalanx experiment`` with ``run``, ``report``, ``rescore``, ``export`` and
    ``rerun``."""
    from phalanx.node.cli import float_in, int_in

    experiment = subparsers.add_parser(
        "experiment", help="declarative sweeps over real testbeds, stored and reported"
    )
    sub = experiment.add_subparsers(dest="experiment_command", metavar="ACTION", required=True)
    run = sub.add_parser("run", help="run (or resume) every cell of a sweep spec")
    run.add_argument("spec", type=Path, help="sweep spec TOML (see experiments/specs/)")
    run.add_argument(
        "--jobs",
        "-j",
        type=int_in(1),
        default=None,
        help="cells in parallel (default: sized to the machine's cores)",
    )
    run.add_argument("--out", help="results folder (default experiments-out/SPEC[-quick])")
    run.add_argument("--quick", action="store_true", help="apply the spec's [quick] table")
    run.add_argument(
        "--retry-failed",
        action="store_true",
        help="run failed cells again (finished ok cells are always skipped)",
    )
    run.add_argument(
        "--reuse",
        metavar="OLD_DIR",
        help="copy in the finished cells of an earlier results folder that this grid holds "
        "unchanged (same id and scenario), instead of running them",
    )
    run.add_argument(
        "--backend",
        choices=("local", "ray"),
        default="local",
        help="local: cells as processes on this machine; ray: each cell as a Ray task, the "
        "store written here (needs `pip install 'phalanx[ray]'`; see docs/ray.md)",
    )
    run.add_argument(
        "--address",
        metavar="ADDRESS",
        help="with --backend ray: the Ray cluster to use (HOST:PORT, `auto`, ray://HOST:PORT); "
        "default $RAY_ADDRESS, else a local Ray sized to --jobs or the cores",
    )
    run.set_defaults(func=_cmd_run)
    report = sub.add_parser("report", help="write report.md and PNG plots into DIR")
    report.add_argument("dir", type=Path, help="results folder of `phalanx experiment run`")
    report.set_defaults(func=_cmd_report)
    rescore = sub.add_parser(
        "rescore",
        help="score the stored testbed cells again from their kept summaries (no cell runs)",
    )
    rescore.add_argument("dir", type=Path, help="results folder of `phalanx experiment run`")
    rescore.set_defaults(func=_cmd_rescore)
    export = sub.add_parser("export", help="export the results store")
    export.add_argument("dir", type=Path, help="results folder of `phalanx experiment run`")
    export.add_argument("--csv", action="store_true", help="write DIR/cells.csv and DIR/rounds.csv")
    export.set_defaults(func=_cmd_export)
    rerun = sub.add_parser("rerun", help="run one recorded cell again and compare its digest")
    rerun.add_argument("dir", type=Path, help="results folder of `phalanx experiment run`")
    rerun.add_argument("cell_id", help="the cell to run again (an id from DIR's report or CSV)")
    rerun.add_argument("--timeout", type=float_in(above=0), help="limit in seconds for the re-run")
    rerun.set_defaults(func=_cmd_rerun)


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (``python -m experiments``) until the owner wires `register`."""
    parser = argparse.ArgumentParser(prog="phalanx")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))
