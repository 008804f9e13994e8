"""`phalanx experiment report`: ``report.md`` and PNG plots chosen by the sweep's axes.

* ``accuracy_vs_round.png``: mean test accuracy per round for each configuration (95 % band).
* ``heatmap_final_accuracy.png``: final accuracy over the two axes with the most values (one panel
  per combination of the other axes, seeds averaged).
* ``theory_vs_measurement.png``: measured failed-round rate (and corrupted-cluster fraction) against
  the analytic prediction of `clustering.analysis.analyze_clusters`; the definitions are in
  `experiments.metrics`.
* ``cost_vs_cluster_size.png``: mean round time and bytes sent per round against cluster size.
* ``privacy_utility.png``: median reconstruction PSNR against utility for inversion cells.
* ``tolerance_map.png``, ``tolerance_predicted_vs_measured.png``, ``tolerance_cost.png`` and
  ``tolerance.json``: the tolerance map, for cells that carry the overwhelmed-round counts
  (`experiments.tolerance`).

Every number in the tables is a mean over seeds with a 95 % Student-t interval
(`experiments.stats`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from phalanx.experiments.stats import MeanCI, mean_ci
from phalanx.experiments.store import CellRecord, open_existing

CLUSTER_SIZE_KEY = "clustering.cluster_size"
MAX_PANELS = 9


@dataclass(frozen=True)
class Configuration:
    """Cells that differ only by seed."""

    labels: tuple[tuple[str, str], ...]
    cells: tuple[CellRecord, ...]

    @property
    def name(self) -> str:
        return ", ".join(f"{short(k)}={v}" for k, v in self.labels) or "base"

    def ok_cells(self) -> list[CellRecord]:
        return [c for c in self.cells if c.status == "ok"]

    def metric(self, name: str) -> MeanCI | None:
        values = [c.metrics.get(name) for c in self.ok_cells()]
        numbers = [float(v) for v in values if isinstance(v, int | float)]
        return mean_ci(numbers) if numbers else None


def short(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def group_configurations(records: Sequence[CellRecord], axes: Sequence[str]) -> list[Configuration]:
    groups: dict[tuple[tuple[str, str], ...], list[CellRecord]] = {}
    for record in records:
        key = tuple((axis, record.labels.get(axis, "")) for axis in axes)
        groups.setdefault(key, []).append(record)
    return [Configuration(key, tuple(cells)) for key, cells in groups.items()]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_accuracy_vs_round(configs: Sequence[Configuration], path: Path) -> Path | None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    drawn = False
    for config in configs:
        by_round: dict[int, list[float]] = {}
        for cell in config.ok_cells():
            for r in cell.rounds:
                if r["accuracy"] is not None:
                    by_round.setdefault(int(r["round"]), []).append(float(r["accuracy"]))
        if not by_round:
            continue
        rounds = sorted(by_round)
        stats = [mean_ci(by_round[r]) for r in rounds]
        means = [s.mean for s in stats]
        widths = [0.0 if math.isnan(s.half_width) else s.half_width for s in stats]
        line = ax.plot(rounds, means, marker="o", label=config.name)[0]
        ax.fill_between(
            rounds,
            [m - w for m, w in zip(means, widths, strict=True)],
            [m + w for m, w in zip(means, widths, strict=True)],
            color=line.get_color(),
            alpha=0.15,
        )
        drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xlabel("round")
    ax.set_ylabel("test accuracy")
    ax.set_title("accuracy per round (mean over seeds, 95% CI)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, loc="lower right", ncol=2 if len(configs) > 8 else 1)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def heatmap_axes(
    axes: dict[str, list[str]], chosen: Sequence[str] | None = None
) -> tuple[str, str] | None:
    """The spec's ``heatmap`` axes, else the two with the most values (ties: spec order)."""
    if chosen is not None and len(chosen) == 2 and all(k in axes for k in chosen):
        return chosen[0], chosen[1]
    ranked = sorted(
        (k for k, v in axes.items() if len(v) >= 2),
        key=lambda k: (-len(axes[k]), list(axes).index(k)),
    )
    if len(ranked) < 2:
        return None
    first, second = ranked[:2]
    return (
        (first, second) if list(axes).index(first) < list(axes).index(second) else (second, first)
    )


def plot_heatmap(
    records: Sequence[CellRecord],
    axes: dict[str, list[str]],
    metric: str,
    path: Path,
    chosen: Sequence[str] | None = None,
) -> Path | None:
    pair = heatmap_axes(axes, chosen)
    if pair is None:
        return None
    row_axis, col_axis = pair
    others = [k for k in axes if k not in pair]
    facets = list(itertools.product(*(axes[k] for k in others)))[:MAX_PANELS]
    plt = _pyplot()
    columns = min(3, len(facets))
    rows_n = math.ceil(len(facets) / columns)
    fig, grid = plt.subplots(
        rows_n,
        columns,
        squeeze=False,
        dpi=120,
        figsize=(
            1.2 + 0.9 * len(axes[col_axis]) * columns + 1.5,
            1.0 + 0.6 * len(axes[row_axis]) * rows_n + 1.0,
        ),
    )
    for panel, facet in enumerate(facets):
        ax = grid[panel // columns][panel % columns]
        fixed = dict(zip(others, facet, strict=True))
        table = [[math.nan] * len(axes[col_axis]) for _ in axes[row_axis]]
        for i, row_value in enumerate(axes[row_axis]):
            for j, col_value in enumerate(axes[col_axis]):
                values = [
                    float(c.metrics[metric])
                    for c in records
                    if c.status == "ok"
                    and c.labels.get(row_axis) == row_value
                    and c.labels.get(col_axis) == col_value
                    and all(c.labels.get(k) == v for k, v in fixed.items())
                    and isinstance(c.metrics.get(metric), int | float)
                ]
                if values:
                    table[i][j] = mean_ci(values).mean
        image = ax.imshow(
            table,
            cmap="viridis",
            aspect="auto",
            vmin=0.0,
            vmax=1.0 if "accuracy" in metric or "rate" in metric else None,
        )
        for i, row in enumerate(table):
            for j, value in enumerate(row):
                ax.text(
                    j,
                    i,
                    "n/a" if math.isnan(value) else f"{value:.3f}",
                    ha="center",
                    va="center",
                    color="white" if not math.isnan(value) and value < 0.5 else "black",
                    fontsize=7,
                )
        ax.set_xticks(
            range(len(axes[col_axis])),
            [_tick(v) for v in axes[col_axis]],
            fontsize=7,
            rotation=30 if len(axes[col_axis]) > 3 else 0,
        )
        ax.set_yticks(range(len(axes[row_axis])), [_tick(v) for v in axes[row_axis]], fontsize=7)
        ax.set_xlabel(col_axis, fontsize=8)
        ax.set_ylabel(row_axis, fontsize=8)
        title = ", ".join(f"{short(k)}={_tick(v)}" for k, v in fixed.items())
        ax.set_title(title or f"{metric} (mean over seeds)", fontsize=8)
        fig.colorbar(image, ax=ax, shrink=0.8)
    for panel in range(len(facets), rows_n * columns):
        grid[panel // columns][panel % columns].axis("off")
    fig.suptitle(f"{metric}, mean over seeds", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _tick(label: str, width: int = 18) -> str:
    return label if len(label) <= width else label[: width - 1] + "…"


def plot_theory_vs_measurement(configs: Sequence[Configuration], path: Path) -> Path | None:
    pairs = [
        ("predicted_failed_round_rate", "failed_round_rate", "failed-round rate (P overwhelmed)"),
        ("predicted_corrupted_fraction", "corrupted_fraction", "corrupted-cluster fraction"),
    ]
    points = [
        c
        for c in configs
        if c.metric("predicted_failed_round_rate") is not None
        and c.metric("failed_round_rate") is not None
    ]
    if not points:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.5), dpi=120)
    for ax, (predicted_key, measured_key, title) in zip(axes, pairs, strict=True):
        for config in points:
            predicted, measured = config.metric(predicted_key), config.metric(measured_key)
            if predicted is None or measured is None:
                continue
            error = 0.0 if math.isnan(measured.half_width) else measured.half_width
            ax.errorbar(
                [predicted.mean],
                [measured.mean],
                yerr=[[error], [error]],
                marker="o",
                capsize=3,
                linestyle="none",
                label=config.name,
            )
        ax.plot(
            [0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="measured = predicted"
        )
        ax.set_xlim(-0.05, 1.05)
        ax.set_ylim(-0.05, 1.05)
        ax.set_xlabel("analytic prediction (clustering.analysis)")
        ax.set_ylabel("measured (mean over seeds, 95% CI)")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=6, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_cost(records: Sequence[CellRecord], axes: dict[str, list[str]], path: Path) -> Path | None:
    if CLUSTER_SIZE_KEY not in axes:
        return None
    others = [k for k in axes if k != CLUSTER_SIZE_KEY and not _is_fault_axis(k)]
    series: dict[tuple[str, ...], dict[int, list[CellRecord]]] = {}
    for cell in records:
        if cell.status != "ok":
            continue
        key = tuple(cell.labels.get(k, "") for k in others)
        size = int(cell.axes[CLUSTER_SIZE_KEY])
        series.setdefault(key, {}).setdefault(size, []).append(cell)
    if not series:
        return None
    plt = _pyplot()
    fig, (time_ax, bytes_ax) = plt.subplots(1, 2, figsize=(10, 4), dpi=120)
    for key, by_size in sorted(series.items()):
        sizes = sorted(by_size)
        name = ", ".join(f"{short(k)}={v}" for k, v in zip(others, key, strict=True)) or "all"
        for ax, metric, scale in ((time_ax, "round_seconds", 1.0), (bytes_ax, "bytes_sent", 1e-6)):
            stats = [
                mean_ci(
                    [c.metrics[metric] * scale for c in by_size[s] if metric in c.metrics]
                    or [math.nan]
                )
                for s in sizes
            ]
            ax.errorbar(
                sizes,
                [s.mean for s in stats],
                marker="o",
                capsize=3,
                label=name,
                yerr=[0.0 if math.isnan(s.half_width) else s.half_width for s in stats],
            )
    time_ax.set_ylabel("mean round time (s)")
    bytes_ax.set_ylabel("MB sent per round (all nodes)")
    for ax in (time_ax, bytes_ax):
        ax.set_xlabel("cluster size")
        ax.grid(alpha=0.3)
    bytes_ax.legend(fontsize=6)
    fig.suptitle(
        "cost against cluster size (mean over seeds and fault settings, 95% CI)", fontsize=9
    )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _is_fault_axis(key: str) -> bool:
    return key in ("faults", "byzantine")


def plot_privacy_utility(configs: Sequence[Configuration], path: Path) -> Path | None:
    points = [(c, c.metric("psnr"), c.metric("utility_accuracy")) for c in configs]
    usable = [(c, p, u) for c, p, u in points if p is not None and u is not None]
    if not usable:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for config, psnr, utility in usable:
        ax.errorbar(
            [utility.mean],
            [psnr.mean],
            marker="o",
            capsize=3,
            linestyle="none",
            xerr=[0.0 if math.isnan(utility.half_width) else utility.half_width],
            yerr=[0.0 if math.isnan(psnr.half_width) else psnr.half_width],
            label=config.name,
        )
    ax.set_xlabel("utility: test accuracy")
    ax.set_ylabel("privacy leak: median PSNR of reconstructions (dB, lower is more private)")
    ax.set_title("privacy against utility (mean over seeds, 95% CI)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path


def seed_table(configs: Sequence[Configuration], metrics: Sequence[str]) -> list[str]:
    """Markdown table: one row per configuration, mean ± 95 % CI half width per metric."""
    present = [m for m in metrics if any(c.metric(m) is not None for c in configs)]
    header = ["configuration", "seeds ok/total", *present]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for config in configs:
        cells = [config.name, f"{len(config.ok_cells())}/{len(config.cells)}"]
        for metric in present:
            stat = config.metric(metric)
            cells.append("-" if stat is None else stat.format(_digits(metric)))
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return lines


BASELINE_AXIS = "byzantine"
BASELINE_LABEL = "none"


def paired_baseline_table(
    configs: Sequence[Configuration],
    metric: str = "final_accuracy",
    axis: str = BASELINE_AXIS,
    baseline: str = BASELINE_LABEL,
) -> list[str]:
    """Each configuration against its clean counterpart (the same labels with `axis` =
    `baseline`), paired by seed: mean ± 95 % Student-t half width of the per-seed difference in
    `metric`. Empty when no configuration has a baseline to pair with."""
    by_labels = {config.labels: config for config in configs}
    lines: list[str] = []
    for config in configs:
        labels = dict(config.labels)
        if labels.get(axis, baseline) == baseline:
            continue
        clean = by_labels.get(
            tuple((key, baseline if key == axis else value) for key, value in config.labels)
        )
        if clean is None:
            continue
        clean_by_seed = {
            c.seed: float(c.metrics[metric])
            for c in clean.ok_cells()
            if isinstance(c.metrics.get(metric), int | float)
        }
        differences = [
            float(c.metrics[metric]) - clean_by_seed[c.seed]
            for c in config.ok_cells()
            if c.seed in clean_by_seed and isinstance(c.metrics.get(metric), int | float)
        ]
        if not differences:
            continue
        stat = mean_ci(differences)
        lines.append(
            f"| {config.name} | {len(differences)} | {stat.format(_digits(metric))} | "
            f"{sum(d < 0 for d in differences)} of {len(differences)} |"
        )
    if not lines:
        return []
    return [
        f"| configuration | seeds paired | {metric} minus clean, same seed | seeds below clean |",
        "|---|---|---|---|",
        *lines,
    ]


def _digits(metric: str) -> int:
    return 0 if metric == "bytes_sent" else 2 if metric in ("round_seconds", "psnr") else 4


def write_report(out_dir: str | Path) -> Path:
    """Write ``report.md`` and the plots into `out_dir`; returns the report's path."""
    out = Path(out_dir)
    with open_existing(out) as store:
        records = store.cells()
        meta = {
            k: store.get_meta(k)
            for k in (
                "name",
                "source",
                "quick",
                "kind",
                "axes",
                "seeds",
                "metrics",
                "cells",
                "heatmap",
            )
        }
    # spec order matters (heatmap ties, table columns): stored as [key, labels] pairs
    raw_axes = meta["axes"] or []
    axes: dict[str, list[str]] = dict(raw_axes.items() if isinstance(raw_axes, dict) else raw_axes)
    metrics = list(meta["metrics"] or ["final_accuracy"])
    if "final_accuracy" not in metrics and meta["kind"] == "testbed":
        metrics.insert(0, "final_accuracy")
    configs = group_configurations(records, list(axes))
    if any(c.metric("predicted_failed_round_rate") is not None for c in configs):
        for extra in (
            "failed_round_rate",
            "predicted_failed_round_rate",
            "corrupted_fraction",
            "predicted_corrupted_fraction",
        ):
            if extra not in metrics:
                metrics.append(extra)
    plots: list[tuple[str, Path | None]] = [
        ("Accuracy per round", plot_accuracy_vs_round(configs, out / "accuracy_vs_round.png")),
        (
            "Final accuracy heatmap",
            plot_heatmap(
                records, axes, "final_accuracy", out / "heatmap_final_accuracy.png", meta["heatmap"]
            ),
        ),
        (
            "Failed rounds: theory against measurement",
            plot_theory_vs_measurement(configs, out / "theory_vs_measurement.png"),
        ),
        ("Cost against cluster size", plot_cost(records, axes, out / "cost_vs_cluster_size.png")),
        ("Privacy against utility", plot_privacy_utility(configs, out / "privacy_utility.png")),
    ]
    ok = sum(r.status == "ok" for r in records)
    commits = sorted({r.git_commit or "unknown" for r in records})
    versions = records[0].versions if records else {}
    lines = [
        f"# Experiment report: {meta['name']}",
        "",
        f"- spec: `{meta['source']}`{' (quick)' if meta['quick'] else ''}, kind: {meta['kind']}",
        f"- cells: {len(records)} recorded of {meta['cells']} "
        f"({ok} ok, {len(records) - ok} failed)",
        "- axes: " + ("; ".join(f"`{k}` = {', '.join(v)}" for k, v in axes.items()) or "none"),
        f"- seeds: {', '.join(str(s) for s in meta['seeds'] or [])}",
        f"- git commit: {', '.join(commits) or 'unknown'}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()),
        "",
        "## Seed-averaged results",
        "",
        "Mean over seeds ± half width of the 95 % Student-t interval (no interval for one seed).",
        "`failed_round_rate`: share of rounds with a fault in force whose corrupted clusters",
        "exceed ceil(m/2) - 1 (median breakdown); `predicted_failed_round_rate`: P(outer",
        "aggregation overwhelmed) from `clustering.analysis` with the secure mode's corruption",
        "threshold (1 for a faulty input in every mode; lying Shamir holders: the decoder's",
        "law, a cluster without output past floor((s - t)/2) lies; exact law for `random`,",
        "adversarial worst case for `static`; see `experiments.metrics`).",
        "",
        *seed_table(configs, metrics),
        "",
    ]
    paired = paired_baseline_table(configs)
    if paired:
        lines += [
            "## Against the clean run of the same seed",
            "",
            f"Each configuration minus the one with `{BASELINE_AXIS}` = {BASELINE_LABEL} and",
            "the same other labels, paired by seed (mean ± 95 % Student-t half width).",
            "",
            *paired,
            "",
        ]
    from phalanx.experiments.tolerance import tolerance_section

    lines += tolerance_section(records, out)
    for title, plot in plots:
        if plot is not None:
            lines += [f"## {title}", "", f"![{title}]({plot.name})", ""]
    failed = [r for r in records if r.status != "ok"]
    if failed:
        lines += ["## Failed cells", ""]
        for record in failed:
            first_line = (record.error or "").strip().splitlines()[:1]
            lines.append(
                f"- `{record.id}` (seed {record.seed}): {first_line[0] if first_line else ''}"
            )
        lines.append("")
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path
