"""``phalanx bench inversion --compare``: its options and the paired difference against IG."""

from __future__ import annotations

import argparse
import json

import pytest

from phalanx.adversary.inversion.experiment import ExperimentResult, ImageResult
from phalanx.bench.bench_inversion import main, paired_difference, register_bench


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    register_bench(parser.add_subparsers(dest="bench", required=True))
    return parser


def _result(psnrs: dict[int, float]) -> ExperimentResult:
    rows = [ImageResult(i, 0, 0, 0.0, p, 0.0) for i, p in psnrs.items()]
    return ExperimentResult(rows, 1.0, 0.0, None)


def test_compare_defaults_are_one_batch_of_the_three_attacks() -> None:
    args = _parser().parse_args(["inversion"])
    assert args.compare_images == 4
    assert args.compare_methods == ["ig", "diffusion", "diffusion-ig"]


def test_compare_options_parse_and_reject_bad_values() -> None:
    args = _parser().parse_args(
        ["inversion", "--compare-images", "32", "--compare-methods", "ig", "gan"]
    )
    assert args.compare_images == 32
    assert args.compare_methods == ["ig", "gan"]
    for bad in (["--compare-images", "0"], ["--compare-methods", "nope"]):
        with pytest.raises(SystemExit):
            _parser().parse_args(["inversion", *bad])


def test_paired_difference_pairs_by_image_index() -> None:
    baseline = _result({10: 10.0, 11: 12.0, 12: 11.0, 13: 9.0, 14: 10.0})
    # same images, another order: differences +1, -1, +2, +3, +0.5
    other = _result({14: 10.5, 12: 13.0, 10: 11.0, 13: 12.0, 11: 11.0})
    paired = paired_difference(other, baseline)
    assert paired.images == 5
    assert paired.median == 1.0
    assert paired.wins == 4
    # n = 5: no k >= 2 reaches 95 %, so the interval is the full range
    assert (paired.low, paired.high) == (-1.0, 3.0)
    with pytest.raises(ValueError, match="same victim images"):
        paired_difference(_result({1: 1.0}), baseline)


def test_compare_runs_over_whole_batches_and_reports_pairs(tmp_path) -> None:
    code = main(
        [
            "inversion",
            "--dataset",
            "digits",
            "--skip-table",
            "--methods",
            "--compare",
            "--compare-methods",
            "ig",
            "idlg",
            "--compare-images",
            "5",
            "--compare-iterations",
            "2",
            "--docs",
            str(tmp_path),
            "--report",
            "c.json",
        ]
    )
    assert code == 0
    report = json.loads((tmp_path / "inversion" / "c.json").read_text())
    assert report["compare/ig"]["images"] == 8  # 5 rounded up to two batches of 4
    assert len(report["compare/idlg"]["per_image"]) == 8
    assert report["compare/idlg-minus-ig"]["images"] == 8
    assert "compare/diffusion" not in report


def test_the_grid_chart_draws_every_method_of_the_report_and_nothing_without_a_grid(
    tmp_path,
) -> None:
    from phalanx.bench.bench_inversion import grid_chart

    cell = {"median_psnr": 12.0, "psnr_interval": [10.0, 14.0]}
    report = {f"grid/{m}/b={b}": cell for m in ("ig", "gan") for b in (1, 4, 16)}
    chart = grid_chart({**report, "total_seconds": 3.0}, tmp_path / "grid.png", "t")
    assert chart is not None and chart.stat().st_size > 1000
    assert grid_chart({"compare/ig": cell}, tmp_path / "none.png", "t") is None
    assert not (tmp_path / "none.png").exists()


_DIGITS = ("inversion", "--dataset", "digits", "--skip-table", "--methods")
_GRID = ("--grid", "--grid-methods", "idlg", "ig", "--grid-batches", "1,2", "--grid-images", "2")
_COMPARE = ("--compare", "--compare-methods", "ig", "idlg", "--compare-images", "4")


def _bench_args(tmp_path, report: str, options: tuple[str, ...], *extra: str) -> list[str]:
    """A small digits run of `options`, its report at ``tmp_path/inversion/report``."""
    return [*_DIGITS, *options, "--docs", str(tmp_path), "--report", report, *extra]


def _grid_args(tmp_path, report: str, *extra: str) -> list[str]:
    return _bench_args(tmp_path, report, (*_GRID, "--grid-iterations", "3"), *extra)


def test_grid_jobs_give_the_serial_reconstructions_and_resume_takes_over_finished_cells(
    tmp_path, capsys
) -> None:
    assert main(_grid_args(tmp_path, "serial.json")) == 0
    assert main(_grid_args(tmp_path, "parallel.json", "--jobs", "2")) == 0
    serial = json.loads((tmp_path / "inversion" / "serial.json").read_text())
    parallel = json.loads((tmp_path / "inversion" / "parallel.json").read_text())
    cells = [f"grid/{m}/b={b}" for m in ("idlg", "ig") for b in (1, 2)]
    for cell in cells:
        assert serial[cell]["images"] == 2
        assert serial[cell]["reconstruction_sha256"] == parallel[cell]["reconstruction_sha256"]
        assert serial[cell]["key"] == parallel[cell]["key"]
    assert "complete" not in serial
    # the cells are in grid order in both, whichever worker finished first
    assert [k for k in parallel if k.startswith("grid/")] == cells
    assert [k for k in serial if k.startswith("grid/")] == cells
    capsys.readouterr()
    # --resume: every cell of the earlier report is taken over, none is run again ...
    assert main(_grid_args(tmp_path, "serial.json", "--resume")) == 0
    assert capsys.readouterr().out.count("taken over from the earlier report") == 4
    again = json.loads((tmp_path / "inversion" / "serial.json").read_text())
    assert all(again[cell] == serial[cell] for cell in cells)
    # ... and a changed setting runs them all.
    assert main(_grid_args(tmp_path, "serial.json", "--resume", "--seed", "1")) == 0
    assert "taken over" not in capsys.readouterr().out


def _compare_args(tmp_path, report: str, *extra: str) -> list[str]:
    return _bench_args(tmp_path, report, (*_COMPARE, "--compare-iterations", "2"), *extra)


def test_compare_cells_run_in_workers_and_resume_keeps_their_per_image_rows(
    tmp_path, capsys
) -> None:
    assert main(_compare_args(tmp_path, "serial.json")) == 0
    assert main(_compare_args(tmp_path, "parallel.json", "--jobs", "2")) == 0
    serial = json.loads((tmp_path / "inversion" / "serial.json").read_text())
    parallel = json.loads((tmp_path / "inversion" / "parallel.json").read_text())
    for cell in ("compare/ig", "compare/idlg"):
        assert serial[cell]["reconstruction_sha256"] == parallel[cell]["reconstruction_sha256"]
        assert serial[cell]["per_image"] == parallel[cell]["per_image"]
    assert serial["compare/idlg-minus-ig"] == parallel["compare/idlg-minus-ig"]
    capsys.readouterr()
    assert main(_compare_args(tmp_path, "serial.json", "--resume")) == 0
    assert capsys.readouterr().out.count("taken over from the earlier report") == 2
    again = json.loads((tmp_path / "inversion" / "serial.json").read_text())
    # the paired row is recomputed from the per-image rows that were taken over
    assert again["compare/idlg-minus-ig"] == serial["compare/idlg-minus-ig"]
    assert again["compare/idlg"] == serial["compare/idlg"]


def test_a_report_without_cell_keys_is_keyed_by_its_command_args(tmp_path, capsys) -> None:
    assert main(_compare_args(tmp_path, "old.json")) == 0
    path = tmp_path / "inversion" / "old.json"
    report = json.loads(path.read_text())
    for cell in ("compare/ig", "compare/idlg"):
        del report[cell]["key"]  # as a report written before cells carried keys
    del report["command_args"]["jobs"]  # an option the old report did not know
    path.write_text(json.dumps(report))
    capsys.readouterr()
    assert main(_compare_args(tmp_path, "old.json", "--resume")) == 0
    assert capsys.readouterr().out.count("taken over from the earlier report") == 2
    # a report recorded with other settings is not taken over
    report["command_args"]["compare_iterations"] = 3
    for cell in ("compare/ig", "compare/idlg"):
        report[cell].pop("key", None)
    path.write_text(json.dumps(report))
    assert main(_compare_args(tmp_path, "old.json", "--resume")) == 0
    assert "taken over" not in capsys.readouterr().out


def test_grid_pairs_pair_each_method_with_ig_at_its_batch_size_where_rows_were_kept() -> None:
    from phalanx.bench.bench_inversion import grid_pairs

    def cell(psnrs: dict[int, float]) -> dict[str, object]:
        return {"per_image": [{"index": i, "psnr": p} for i, p in psnrs.items()]}

    report = {
        "grid/ig/b=4": cell({0: 10.0, 1: 12.0, 2: 11.0}),
        "grid/gan/b=4": cell({2: 13.0, 0: 11.0, 1: 11.0}),  # +1, -1, +2 on the same victims
        "grid/dlg/b=4": {"median_psnr": 5.0},  # no rows kept: no pair
        "grid/gan/b=16": cell({0: 1.0}),  # no IG cell at 16: no pair
    }
    pairs = grid_pairs(report)
    assert list(pairs) == ["paired/gan/b=4"]
    assert (pairs["paired/gan/b=4"].median, pairs["paired/gan/b=4"].wins) == (1.0, 2)


def test_forward_cells_attack_the_noised_update_and_pair_with_ig(tmp_path, capsys) -> None:
    args = ["inversion", "--dataset", "digits", "--images", "2", "--methods"]
    args += ["--forward-ts", "0,600", "--forward-methods", "idlg", "ig", "--forward-images", "2"]
    args += ["--docs", str(tmp_path), "--report", "f.json"]
    assert main(args) == 0
    report = json.loads((tmp_path / "inversion" / "f.json").read_text())
    cells = [f"forward/{m}/t={t}" for m in ("idlg", "ig") for t in (0, 600)]
    assert [k for k in report if k.startswith("forward/")] == cells
    # forward:0 releases the update itself: the same victims and bytes as the table's iDLG
    undefended = report["forward/idlg/t=0"]
    assert undefended["reconstruction_sha256"] == report["table/idlg"]["reconstruction_sha256"]
    assert undefended["key"]["defense"] == "forward:0"
    assert report["forward/idlg/t=600"]["median_psnr"] < undefended["median_psnr"] - 20
    assert len(report["forward/ig/t=600"]["per_image"]) == 2
    assert report["forward-minus-ig/idlg/t=600"]["images"] == 2
    assert (tmp_path / "inversion" / "psnr_vs_forward_t.png").stat().st_size > 0
    capsys.readouterr()
    assert main([*args, "--resume"]) == 0
    assert capsys.readouterr().out.count("taken over from the earlier report") == 6


def test_forward_levels_out_of_range_are_refused(capsys) -> None:
    for bad in ("1001", "-1", "a"):
        with pytest.raises(SystemExit):
            _parser().parse_args(["inversion", "--forward-ts", bad])
        assert "--forward-ts" in capsys.readouterr().err
