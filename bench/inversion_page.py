"""``phalanx bench inversion-page``: every run of the gradient-inversion results page, and the
page's tables rewritten from their reports.

`PAGE` lists the page's sections, each one ``phalanx bench inversion`` call with its report
``DOCS/inversion/NAME.json``. The command runs them in order with ``--resume`` (a cell whose
settings are unchanged is taken over from the report, ``--fresh`` runs everything), then
replaces every generated block of ``DOCS/inversion.md``::

    <!-- generated: NAME/command -->  ...  <!-- end generated -->
    <!-- generated: NAME/table -->  ...  <!-- end generated -->

with the section's command line and the table drawn from its report. The prose around the
blocks is left as it is. Figures (``NAME.png``, ``psnr_vs_k.png`` and the reconstructions) are
drawn by the runs themselves. The last section, `QUALITY`, is the priors' sample quality: four
``phalanx attack prior-quality`` calls recording into ``DOCS/inversion/prior-quality.json``.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from phalanx.adversary.inversion.names import DEFAULT_TORCH_THREADS
from phalanx.bench.bench_inversion import GRID_LABELS, _positive, cell_seconds, report_cells

Report = Mapping[str, object]

_GRID = ("--skip-table", "--methods", "--grid", "--grid-batches", "1,4,16,64", "--grid-images")


@dataclass(frozen=True)
class PageSection:
    """One ``phalanx bench inversion`` call of the page; its report is ``NAME.json``."""

    name: str
    argv: tuple[str, ...]

    @property
    def report(self) -> str:
        return f"{self.name}.json"

    def command_line(self, width: int = 96) -> str:
        """The call as the page shows it, wrapped at `width` (`wrapped_command`)."""
        return wrapped_command(
            "phalanx bench inversion", [*self.argv, "--report", self.report], width
        )


def wrapped_command(program: str, words: Sequence[str], width: int) -> str:
    """``program words...`` wrapped at `width` with ``\\`` continuations between options (an
    option stays on the line of its values)."""
    groups: list[str] = [program]
    for word in words:
        if word.startswith("--"):
            groups.append(word)
        else:
            groups[-1] += f" {word}"
    lines: list[str] = []
    line = ""
    for group in groups:
        if line and len(line) + 1 + len(group) > width - 2:
            lines.append(line + " \\")
            line = "    " + group
        else:
            line = f"{line} {group}" if line else group
    return "\n".join([*lines, line])


@dataclass(frozen=True)
class QualitySection:
    """The page's ``phalanx attack prior-quality`` calls, each recording its prior's row (and
    the real floor and noise ceiling at its sample count) into the report ``NAME.json``."""

    name: str
    runs: tuple[tuple[str, ...], ...]

    @property
    def report(self) -> str:
        return f"{self.name}.json"

    def command_line(self, width: int = 96) -> str:
        """The calls as the page shows them, each wrapped at `width` (`wrapped_command`)."""
        report = ["--report", f"docs/inversion/{self.report}"]
        return "\n".join(
            wrapped_command("phalanx attack prior-quality", [*run, *report], width)
            for run in self.runs
        )


PAGE: tuple[PageSection, ...] = (
    PageSection("table", ("--images", "32", "--methods")),
    PageSection("grid-digits-32", ("--dataset", "digits", *_GRID, "32")),
    PageSection("grid-digits-mlp", ("--dataset", "digits", *_GRID, "32", "--grid-model", "mlp")),
    PageSection(
        "grid-digits-resnet", ("--dataset", "digits", *_GRID, "32", "--grid-model", "resnet")
    ),
    PageSection(
        "grid-digits-mlp-trained",
        ("--dataset", "digits", *_GRID, "32", "--grid-model", "mlp", "--grid-trained"),
    ),
    PageSection(
        "grid-digits-resnet-trained",
        ("--dataset", "digits", *_GRID, "32", "--grid-model", "resnet", "--grid-trained"),
    ),
    PageSection("grid-cnn-trained", (*_GRID, "32", "--grid-model", "cnn", "--grid-trained")),
    PageSection(
        "labels", ("--skip-table", "--methods", "--label-table", "--label-batches", "4,8,16,32,64")
    ),
    PageSection(
        "labels-lenet-zhu",
        (
            "--skip-table",
            "--methods",
            "--label-table",
            "--label-model",
            "lenet-zhu",
            "--label-batches",
            "4,8,16,32,64",
        ),
    ),
    PageSection("compare", ("--skip-table", "--methods", "--compare", "--compare-images", "32")),
    PageSection(
        "compare-gan",
        (
            "--skip-table",
            "--methods",
            "--compare",
            "--compare-images",
            "32",
            "--compare-methods",
            "ig",
            "gan",
        ),
    ),
    PageSection(
        "chart",
        (
            "--skip-table",
            "--ks",
            "1,2,4,8,16",
            "--methods",
            "idlg",
            "ig",
            "diffusion",
            "--chart-images",
            "32",
        ),
    ),
    PageSection(
        "forward",
        ("--skip-table", "--methods", "--forward-ts", "300,500,700", "--forward-images", "32"),
    ),
)


def _quality_run(kind: str, samples: int, *extra: str) -> tuple[str, ...]:
    """One ``attack prior-quality`` call of the page: mnist5k, seed 0, then `extra`."""
    return (
        "--kind",
        kind,
        "--dataset",
        "mnist5k",
        "--samples",
        str(samples),
        "--seed",
        "0",
        *extra,
    )


QUALITY = QualitySection(
    "prior-quality",
    (
        _quality_run("gan", 1000),
        _quality_run("diffusion", 500, "--diffusion-steps", "100"),
        _quality_run("diffusion", 500),
        _quality_run("gan", 500),
        _quality_run("diffusion", 500, "--diffusion-steps", "100", "--prior-steps", "10000"),
    ),
)
SECTIONS: dict[str, PageSection | QualitySection] = {
    **{section.name: section for section in PAGE},
    QUALITY.name: QUALITY,
}


def _cell(report: Report, name: str) -> dict:  # type: ignore[type-arg]
    cell = report.get(name)
    if not isinstance(cell, dict):
        raise KeyError(f"the report has no cell {name!r}: run its section first")
    return cell


def _psnr(cell: Mapping[str, object]) -> str:
    interval: list[float] = cell["psnr_interval"]  # type: ignore[assignment]
    low, high = interval
    return f"{cell['median_psnr']:.2f} dB [{low:.2f}, {high:.2f}]"


def table_rows(report: Report) -> str:
    """The DLG / iDLG table at batch 1."""
    rows = [
        "| method | images | label accuracy | median PSNR [interval] | median SSIM | s / image |",
        "|---|---|---|---|---|---|",
    ]
    for method in ("dlg", "idlg"):
        cell = _cell(report, f"table/{method}")
        rows.append(
            f"| {GRID_LABELS[method]} | {cell['images']} | {cell['label_accuracy']:.3f} | "
            f"{_psnr(cell)} | {cell['median_ssim']:.3f} | {cell['seconds_per_image']:.2f} |"
        )
    return "\n".join(rows)


def _table(head: list[str], rows: list[str], what: str) -> str:
    if not rows:
        raise KeyError(f"the report has no {what} cells: run its section first")
    return "\n".join([*head, *rows])


def grid_rows(report: Report) -> str:
    """Every ``grid/METHOD/b=B`` cell, in the report's order."""
    head = [
        "| method | batch | images | median PSNR [interval] | median SSIM | label accuracy "
        "| s / image |",
        "|---|---|---|---|---|---|---|",
    ]
    rows = [
        f"| {GRID_LABELS.get(method, method)} | {batch} | {cell['images']} | {_psnr(cell)} | "
        f"{cell['median_ssim']:.3f} | {cell['label_accuracy']:.3f} | "
        f"{cell['seconds_per_image']:.2f} |"
        for method, batch, cell in report_cells(report, "grid")
    ]
    return _table(head, rows, "grid")


def paired_grid_rows(report: Report) -> str:
    """Every ``paired/METHOD/b=B`` entry: a grid cell minus IG's on the same victims."""
    head = [
        "| method | batch | images | median difference to IG [interval] | images better than IG |",
        "|---|---|---|---|---|",
    ]
    rows = [
        f"| {GRID_LABELS.get(method, method)} | {batch} | {cell['images']} | "
        f"{cell['median']:+.2f} dB [{cell['low']:+.2f}, {cell['high']:+.2f}] | "
        f"{cell['wins']} of {cell['images']} |"
        for method, batch, cell in report_cells(report, "paired")
    ]
    return _table(head, rows, "paired")


def label_rows(report: Report) -> str:
    """Label accuracy of every rule, untrained then trained, by batch size."""
    from phalanx.adversary.inversion.names import DEFAULT_LABEL_METHOD, LABEL_METHODS

    heads = [f"`{m}`" + (" (default)" if m == DEFAULT_LABEL_METHOD else "") for m in LABEL_METHODS]
    head = [
        "| model | batch | images | " + " | ".join(heads) + " |",
        "|---|---|---|" + "---|" * len(LABEL_METHODS),
    ]
    rows = [
        f"| {state} | {batch} | {cell['images']} | "
        + " | ".join(f"{cell[m]:.3f}" for m in LABEL_METHODS)
        + " |"
        for state, batch, cell in report_cells(report, "labels")
    ]
    return _table(head, rows, "label")


def compare_rows(reports: Sequence[Report]) -> str:
    """The ``compare/METHOD`` cells of `reports` (IG once, from the first), then each method's
    paired difference to IG on the same images."""
    methods: dict[str, dict] = {}  # type: ignore[type-arg]
    paired: dict[str, dict] = {}  # type: ignore[type-arg]
    for report in reports:
        for name, cell in report.items():
            parts = name.split("/")
            if len(parts) != 2 or parts[0] != "compare" or not isinstance(cell, dict):
                continue
            if parts[1].endswith("-minus-ig"):
                paired.setdefault(parts[1].removesuffix("-minus-ig"), cell)
            else:
                methods.setdefault(parts[1], cell)
    if not methods:
        raise KeyError("the reports have no compare cells: run their sections first")
    coverage = min(float(cell["psnr_interval_coverage"]) for cell in methods.values())
    rows = [
        f"| method | images | median PSNR [{coverage:.0%} interval] | median SSIM "
        "| label accuracy | s / image |",
        "|---|---|---|---|---|---|",
    ]
    for method, cell in methods.items():
        rows.append(
            f"| {GRID_LABELS.get(method, method)} | {cell['images']} | {_psnr(cell)} | "
            f"{cell['median_ssim']:.3f} | {cell['label_accuracy']:.3f} | "
            f"{cell['seconds_per_image']:.2f} |"
        )
    rows += [
        "",
        "| against IG, same images | median difference [interval] | images better than IG |",
        "|---|---|---|",
    ]
    for method, cell in paired.items():
        rows.append(
            f"| {GRID_LABELS.get(method, method)} | {cell['median']:+.2f} dB "
            f"[{cell['low']:+.2f}, {cell['high']:+.2f}] | {cell['wins']} of {cell['images']} |"
        )
    return "\n".join(rows)


def curve_rows(report: Report, kind: str = "chart", axis: str = "k") -> str:
    """Median PSNR with its interval of every ``KIND/METHOD/X=N`` cell, a row per method and a
    column ``AXIS=N`` per point (``chart/METHOD/k=K``, ``forward/METHOD/t=T``)."""
    cells: dict[str, dict[int, dict]] = {}  # type: ignore[type-arg]
    for method, point, cell in report_cells(report, kind):
        cells.setdefault(method, {})[point] = cell
    if not cells:
        raise KeyError(f"the report has no {kind} cells: run its section first")
    points = sorted({point for row in cells.values() for point in row})
    images = min(int(c["images"]) for row in cells.values() for c in row.values())
    rows = [
        f"| method ({images} images a point) | "
        + " | ".join(f"{axis}={point}" for point in points)
        + " |",
        "|---|" + "---|" * len(points),
    ]
    for method, row in cells.items():
        rows.append(
            f"| {GRID_LABELS.get(method, method)} | "
            + " | ".join(_psnr(row[point]) if point in row else "" for point in points)
            + " |"
        )
    return "\n".join(rows)


def forward_rows(report: Report) -> str:
    """The ``forward/METHOD/t=T`` cells by level, then every ``forward-minus-ig/METHOD/t=T``
    entry: a method minus IG on the same victims at level T."""
    head = [
        "",
        "| against IG, same images | T | median difference [interval] | images better than IG |",
        "|---|---|---|---|",
    ]
    paired = [
        f"| {GRID_LABELS.get(method, method)} | {level} | {cell['median']:+.2f} dB "
        f"[{cell['low']:+.2f}, {cell['high']:+.2f}] | {cell['wins']} of {cell['images']} |"
        for method, level, cell in report_cells(report, "forward-minus-ig")
    ]
    levels = curve_rows(report, "forward", "T")
    return "\n".join([levels, *head, *paired]) if paired else levels


def _quality_label(entry: Mapping[str, object]) -> str:
    """``GAN prior`` or ``diffusion prior (S steps)``, with ``trained P steps`` for a prior
    trained other than by default."""
    settings: Mapping[str, object] = entry.get("settings") or {}  # type: ignore[assignment]
    gan = entry["kind"] == "gan"
    details = [] if gan else [f"{int(entry['diffusion_steps']):,} steps"]  # type: ignore[call-overload]
    if settings.get("prior_steps"):
        details.append(f"trained {int(settings['prior_steps']):,} steps")  # type: ignore[call-overload]
    name = "GAN prior" if gan else "diffusion prior"
    return f"{name} ({', '.join(details)})" if details else name


def _quality_row(label: str, row: Mapping[str, object]) -> str:
    shares: list[float] = row["class_shares"]  # type: ignore[assignment]
    return (
        f"| {label} | {row['images']} | {row['fid']:.2f} | {row['inception_score']:.2f} | "
        f"{row['confidence']:.3f} | {row['classes_covered']} ({max(shares):.0%}) |"
    )


def quality_rows(report: Report) -> str:
    """Every ``quality/...`` entry's prior row, grouped by sample count and seed in the
    report's order, each group closed by the real floor and noise ceiling rows of its first
    entry (they depend on the count and the seed, not on the prior)."""
    groups: dict[tuple[int, int], list[Mapping[str, object]]] = {}
    for name, entry in report.items():
        if name.startswith("quality/") and isinstance(entry, dict):
            groups.setdefault((int(entry["samples"]), int(entry["seed"])), []).append(entry)
    head = [
        "| set | n | FID | IS | confidence | classes (largest share) |",
        "|---|---|---|---|---|---|",
    ]
    rows: list[str] = []
    for entries in groups.values():
        rows += [_quality_row(_quality_label(e), e["prior"]) for e in entries]  # type: ignore[arg-type]
        rows.append(_quality_row("real floor", entries[0]["real_floor"]))  # type: ignore[arg-type]
        rows.append(_quality_row("noise ceiling", entries[0]["noise_ceiling"]))  # type: ignore[arg-type]
    return _table(head, rows, "prior-quality")


def report_seconds(report: Report) -> float:
    """What the runs recorded in `report` cost when they ran: the attack cells' seconds, or a
    prior-quality entry's whole run."""
    quality = sum(
        float(entry["seconds"])
        for name, entry in report.items()
        if name.startswith("quality/") and isinstance(entry, dict) and "seconds" in entry
    )
    return quality + cell_seconds(report)


def _tables() -> dict[str, Callable[[Callable[[str], Report]], str]]:
    """Generated table blocks by name, each drawn from the reports it reads."""
    tables: dict[str, Callable[[Callable[[str], Report]], str]] = {
        "table/table": lambda read: table_rows(read("table")),
        "labels/table": lambda read: label_rows(read("labels")),
        "labels-lenet-zhu/table": lambda read: label_rows(read("labels-lenet-zhu")),
        "compare/table": lambda read: compare_rows([read("compare"), read("compare-gan")]),
        "chart/table": lambda read: curve_rows(read("chart")),
        "forward/table": lambda read: forward_rows(read("forward")),
        f"{QUALITY.name}/table": lambda read: quality_rows(read(QUALITY.name)),
    }
    for section in PAGE:
        if section.name.startswith("grid-"):
            tables[f"{section.name}/table"] = _drawn_from(grid_rows, section.name)
            tables[f"{section.name}/paired"] = _drawn_from(paired_grid_rows, section.name)
    return tables


def _drawn_from(
    rows: Callable[[Report], str], name: str
) -> Callable[[Callable[[str], Report]], str]:
    return lambda read: rows(read(name))


_BLOCK = re.compile(
    r"(<!-- generated: (?P<name>[\w./-]+) -->\n)(?P<body>.*?)(<!-- end generated -->)", re.S
)


def render_page(page: str, docs: Path) -> str:
    """`page` with every generated block rewritten from the reports in ``docs/inversion``.

    Raises `ValueError` for a block this module does not know, and `KeyError` when a block's
    report lacks the cells it draws."""
    tables = _tables()
    reports: dict[str, Report] = {}

    def read(name: str) -> Report:
        if name not in reports:
            path = docs / "inversion" / SECTIONS[name].report
            if not path.exists():
                raise KeyError(f"{path} is missing: run section {name!r} first")
            reports[name] = json.loads(path.read_text())
        return reports[name]

    def block(match: re.Match[str]) -> str:
        name = match["name"]
        section, _, part = name.partition("/")
        if part == "command" and section in SECTIONS:
            body = f"```\n{SECTIONS[section].command_line()}\n```"
        elif name in tables:
            body = tables[name](read)
        else:
            known = [f"{s}/command" for s in SECTIONS] + sorted(tables)
            raise ValueError(f"unknown generated block {name!r}; known: {', '.join(known)}")
        return f"{match[1]}\n{body}\n\n{match[4]}"

    return _BLOCK.sub(block, page)


def blocks_of(page: str) -> list[str]:
    """The names of the generated blocks of `page`, in order."""
    return [match["name"] for match in _BLOCK.finditer(page)]


def run_page(args: argparse.Namespace) -> int:
    from rich.console import Console

    from phalanx.adversary.inversion.cli import main as attack_main
    from phalanx.bench.bench_inversion import main as bench_main

    console = Console()
    docs = Path(args.docs)
    page_path = docs / "inversion.md"
    if not page_path.exists():
        console.print(f"[red]{page_path} does not exist[/red]")
        return 2
    unknown = [name for name in args.only or () if name not in SECTIONS]
    if unknown:
        console.print(f"[red]unknown section {', '.join(unknown)}; known: {', '.join(SECTIONS)}")
        return 2
    chosen = [s for s in SECTIONS.values() if not args.only or s.name in args.only]
    common = ["--torch-threads", str(args.torch_threads)]
    if args.prior_cache:
        common += ["--prior-cache", args.prior_cache]
    if not args.fresh:
        common.append("--resume")
    for number, section in enumerate([] if args.render_only else chosen, start=1):
        console.rule(f"section {number} of {len(chosen)}: {section.name}")
        started = time.perf_counter()
        if isinstance(section, PageSection):
            argv = ["inversion", *section.argv, "--docs", str(docs), "--report", section.report]
            calls = [(bench_main, [*argv, "--jobs", str(args.jobs), *common])]
        else:
            report = ["--report", str(docs / "inversion" / section.report)]
            calls = [
                (attack_main, ["attack", "prior-quality", *run, *report, *common])
                for run in section.runs
            ]
        for main, argv in calls:
            code = main(argv)
            if code != 0:
                console.print(f"[red]section {section.name} failed with exit code {code}[/red]")
                return code
        console.print(f"section {section.name}: {time.perf_counter() - started:.0f} s")
    page = page_path.read_text()
    try:
        rendered = render_page(page, docs)
    except (KeyError, ValueError) as error:
        console.print(f"[red]{error.args[0]}[/red]")
        return 1
    page_path.write_text(rendered)
    console.print(
        f"{page_path}: {len(blocks_of(rendered))} generated blocks "
        f"({'changed' if rendered != page else 'unchanged'})"
    )
    recorded = [docs / "inversion" / s.report for s in SECTIONS.values()]
    seconds = sum(report_seconds(json.loads(r.read_text())) for r in recorded if r.exists())
    console.print(f"the page's runs cost {seconds / 3600:.1f} CPU-hours when they ran")
    return 0


def register_bench(bench_subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``phalanx bench inversion-page``."""
    parser = bench_subparsers.add_parser(
        "inversion-page", help="every run of the inversion results page, and its tables redrawn"
    )
    parser.add_argument(
        "--docs", default="docs", help="folder of inversion.md and inversion/ (default %(default)s)"
    )
    parser.add_argument(
        "--jobs", type=_positive, default=1, help="worker processes a section (default %(default)s)"
    )
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="run every cell again instead of taking over unchanged ones from the reports",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="SECTION",
        help=f"run these sections only (of {', '.join(SECTIONS)}); every block is redrawn",
    )
    parser.add_argument(
        "--render-only", action="store_true", help="redraw the page from the reports, run nothing"
    )
    parser.add_argument("--prior-cache", default=None, help="prior cache directory")
    parser.add_argument(
        "--torch-threads",
        type=_positive,
        default=DEFAULT_TORCH_THREADS,
        help="torch threads a run, fixed for reproducibility (default %(default)s)",
    )
    parser.set_defaults(func=run_page)
