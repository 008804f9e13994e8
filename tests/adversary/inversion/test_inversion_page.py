"""``phalanx bench inversion-page``: the results page is drawn from its reports, every section
is on it with its command, and a section run redraws its block."""

from __future__ import annotations

import argparse
import json
import re
import shutil
from pathlib import Path

import pytest

from phalanx.adversary.inversion.cli import register as register_attack
from phalanx.bench.bench_inversion import register_bench
from phalanx.bench.inversion_page import PAGE, QUALITY, SECTIONS, blocks_of, render_page
from phalanx.node.cli import main as phalanx_main

DOCS = Path(__file__).resolve().parents[3] / "docs"


def _bench_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    register_bench(parser.add_subparsers(dest="bench", required=True))
    return parser


def _docs_copy(tmp_path: Path) -> Path:
    docs = tmp_path / "docs"
    (docs / "inversion").mkdir(parents=True)
    shutil.copy(DOCS / "inversion.md", docs / "inversion.md")
    for report in (DOCS / "inversion").glob("*.json"):
        shutil.copy(report, docs / "inversion" / report.name)
    return docs


def _block(page: str, name: str) -> str:
    match = re.search(
        rf"<!-- generated: {re.escape(name)} -->\n(.*?)<!-- end generated -->", page, re.S
    )
    assert match is not None, name
    return match[1]


def test_the_committed_page_is_what_its_reports_draw() -> None:
    page = (DOCS / "inversion.md").read_text()
    assert render_page(page, DOCS) == page


def test_every_section_is_on_the_page_with_its_command_and_a_table() -> None:
    blocks = blocks_of((DOCS / "inversion.md").read_text())
    assert len(blocks) == len(set(blocks))
    for name in SECTIONS:
        assert f"{name}/command" in blocks
    tables = {name.split("/")[0] for name in blocks if name.endswith("/table")}
    # the compare block draws compare-gan too
    assert tables | {"compare-gan"} == set(SECTIONS)


@pytest.mark.parametrize("section", PAGE, ids=lambda s: s.name)
def test_the_command_line_on_the_page_parses_to_the_sections_arguments(section) -> None:
    shown = section.command_line().replace(" \\\n    ", " ").split()
    assert shown[:3] == ["phalanx", "bench", "inversion"]
    assert all(len(line) <= 96 for line in section.command_line().splitlines())
    parser = _bench_parser()
    expected = parser.parse_args(["inversion", *section.argv, "--report", section.report])
    assert parser.parse_args(shown[2:]) == expected


def test_the_prior_quality_command_lines_parse_to_the_sections_calls() -> None:
    parser = argparse.ArgumentParser()
    register_attack(parser.add_subparsers(dest="command", required=True))
    shown = QUALITY.command_line().replace(" \\\n    ", " ").splitlines()
    assert len(shown) == len(QUALITY.runs)
    assert all(len(line) <= 96 for line in QUALITY.command_line().splitlines())
    report = ["--report", f"docs/inversion/{QUALITY.report}"]
    for line, run in zip(shown, QUALITY.runs, strict=True):
        words = line.split()
        assert words[:3] == ["phalanx", "attack", "prior-quality"]
        expected = parser.parse_args(["attack", "prior-quality", *run, *report])
        assert vars(parser.parse_args(words[1:])) == vars(expected)


def test_the_prior_quality_section_takes_its_recorded_runs_over(tmp_path, capsys) -> None:
    docs = _docs_copy(tmp_path)
    argv = ["bench", "inversion-page", "--docs", str(docs), "--only", QUALITY.name]
    assert phalanx_main(argv) == 0
    assert capsys.readouterr().out.count("taken over from") == len(QUALITY.runs)
    committed = (DOCS / "inversion" / QUALITY.report).read_text()
    assert (docs / "inversion" / QUALITY.report).read_text() == committed
    assert (docs / "inversion.md").read_text() == (DOCS / "inversion.md").read_text()


def test_an_unknown_block_and_a_missing_report_are_refused(tmp_path) -> None:
    with pytest.raises(ValueError, match="unknown generated block 'nope/table'"):
        render_page("<!-- generated: nope/table -->\n<!-- end generated -->\n", DOCS)
    with pytest.raises(KeyError, match="run section 'chart' first"):
        render_page("<!-- generated: chart/table -->\n<!-- end generated -->\n", tmp_path)
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "inversion.md").write_text("<!-- generated: chart/table -->\n<!-- end generated -->\n")
    assert phalanx_main(["bench", "inversion-page", "--docs", str(docs), "--render-only"]) == 1
    assert phalanx_main(["bench", "inversion-page", "--docs", str(docs), "--only", "x"]) == 2


def test_a_section_run_afresh_redraws_the_same_block(tmp_path) -> None:
    docs = _docs_copy(tmp_path)
    committed = json.loads((docs / "inversion" / "labels-lenet-zhu.json").read_text())
    page = (docs / "inversion.md").read_text()
    (docs / "inversion.md").write_text(page.replace("| trained | 4 |", "| trained | 99 |"))
    argv = ["bench", "inversion-page", "--docs", str(docs), "--only", "labels-lenet-zhu"]
    assert phalanx_main([*argv, "--fresh"]) == 0
    rerun = json.loads((docs / "inversion" / "labels-lenet-zhu.json").read_text())
    for name, cell in committed.items():
        if name.startswith("labels/"):
            assert rerun[name] == cell, name
    redrawn = (docs / "inversion.md").read_text()
    assert redrawn == page
    assert _block(redrawn, "labels-lenet-zhu/table") == _block(page, "labels-lenet-zhu/table")


def test_a_section_with_unchanged_settings_takes_its_cells_over(tmp_path, capsys) -> None:
    docs = _docs_copy(tmp_path)
    argv = ["bench", "inversion-page", "--docs", str(docs), "--only", "compare-gan"]
    assert phalanx_main(argv) == 0
    assert capsys.readouterr().out.count("taken over from the earlier report") == 2
    committed = json.loads((DOCS / "inversion" / "compare-gan.json").read_text())
    rerun = json.loads((docs / "inversion" / "compare-gan.json").read_text())
    for name in ("compare/ig", "compare/gan", "compare/gan-minus-ig"):
        shown = {k: v for k, v in rerun[name].items() if k != "key"}
        assert shown == {k: v for k, v in committed[name].items() if k != "key"}
    assert (docs / "inversion.md").read_text() == (DOCS / "inversion.md").read_text()
