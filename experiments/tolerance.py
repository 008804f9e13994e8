"""The tolerance map: overwhelmed rounds and corrupted clusters, predicted against measured.

For every configuration of a sweep (the cells that differ only by seed) whose cells carry the
counts of `experiments.metrics.cell_metrics`, this module pools the seeds and sets the
measurement beside the exact prediction. `phalanx experiment report DIR` adds it to
``report.md`` and writes ``tolerance.json`` and three plots (docs/tolerance.md):

* ``tolerance_map.png``: phase diagrams, f/n against k, one panel per strategy. The background of
  each column is the predicted P(round overwhelmed) for every f from 0 to n/2, the squares are
  the measured rates, the solid line is the predicted boundary (the largest f/n overwhelmed in at
  most 1% of rounds) and the dashed line the measured one.
* ``tolerance_predicted_vs_measured.png``: measured against predicted, overwhelmed-round rate
  (Clopper-Pearson 95% intervals) and corrupted fraction (Student-t 95% intervals over seeds).
* ``tolerance_cost.png``: bytes sent per peer and round, and the memory engine's wall time per
  cell (start-up and rounds, on the machine that ran the sweep), against k.
* ``tolerance_liars.png``, for sweeps with lying Shamir holders: the lying-holder law's
  P(overwhelmed) against f/n with the measured rates, and the liars named (recall, precision).

Statistics.

* Pooling: N = the rounds counted over all seeds, X = the overwhelmed ones. Under ``random``
  (and ``balanced``/``isolate`` before any suspicion score exists) every round draws a fresh
  uniform partition, so X ~ Binomial(N, p) with p the exact prediction. The check is whether X
  lies in the central 95% interval of that binomial, [F^-1(0.025), F^-1(0.975)] with F its CDF
  (for p = 0 or 1, and for the deterministic worst case of ``static``, the interval is one
  point: the measurement must equal the prediction).
* Measured rate: X / N with the Clopper-Pearson (1934) exact 95% interval.
* Corrupted fraction: the mean over seeds of each seed's mean over rounds, with the Student-t
  95% interval (`experiments.stats.mean_ci`).
* Tolerated f/n at level L = 0.99: predicted, the largest f/n such that every f' <= f has
  P(overwhelmed) <= 1 - L; measured, the largest grid value up to which every measured rate is
  <= 1 - L, and the next grid value, which is not tolerated. With N rounds a measured rate of
  at most 1% means none overwhelmed when N < 100; the Clopper-Pearson upper bound says how
  much that rules out.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from phalanx.experiments.metrics import TRUST_LAG, HolderLaw, predict
from phalanx.experiments.stats import MeanCI, mean_ci
from phalanx.experiments.store import CellRecord

STRATEGY_KEY = "clustering.strategy"
CLUSTER_SIZE_KEY = "clustering.cluster_size"
FAULT_AXES = ("byzantine", "faults")
BEHAVIOUR_KEY = "behaviour"
LEVEL = 0.99
CONFIDENCE = 0.95
STRATEGY_ORDER = ("static", "random", "balanced", "isolate")
MAX_PANELS = 9


@dataclass(frozen=True)
class MapCell:
    """One configuration of the map: its seeds pooled, its prediction beside them."""

    facet: tuple[tuple[str, str], ...]
    strategy: str
    cluster_size: int
    nodes: int
    faulty: int
    seeds: int
    rounds: int
    overwhelmed: int
    law: str | None
    thresholds: tuple[int, ...]
    predicted_rate: float | None
    predicted_fraction: float | None
    corrupted: MeanCI
    bytes_per_peer: MeanCI | None
    round_seconds: MeanCI | None
    cell_seconds: MeanCI
    holders: HolderLaw | None = None
    final_accuracy: MeanCI | None = None
    liars_named: int = 0  # pooled over the seeds: holders named as liars,
    liars_named_lying: int = 0  # those of them that lied,
    liars_in_force: int = 0  # and the lying holders in force, summed over the rounds

    @property
    def liar_precision(self) -> float | None:
        return self.liars_named_lying / self.liars_named if self.liars_named else None

    @property
    def liar_recall(self) -> float | None:
        return self.liars_named_lying / self.liars_in_force if self.liars_in_force else None

    @property
    def fault_fraction(self) -> float:
        return self.faulty / self.nodes

    @property
    def measured_rate(self) -> float:
        return self.overwhelmed / self.rounds

    def rate_interval(self) -> tuple[float, float]:
        return clopper_pearson(self.overwhelmed, self.rounds)

    def acceptance(self) -> tuple[int, int] | None:
        """The central 95% interval of Binomial(rounds, predicted rate), in rounds."""
        if self.predicted_rate is None:
            return None
        return binomial_interval(self.rounds, self.predicted_rate)

    @property
    def inside(self) -> bool | None:
        interval = self.acceptance()
        if interval is None:
            return None
        return interval[0] <= self.overwhelmed <= interval[1]

    def to_json(self) -> dict[str, Any]:
        interval = self.acceptance()
        low, high = self.rate_interval()
        return {
            "facet": dict(self.facet),
            "strategy": self.strategy,
            "cluster_size": self.cluster_size,
            "nodes": self.nodes,
            "faulty": self.faulty,
            "fault_fraction": self.fault_fraction,
            "seeds": self.seeds,
            "rounds": self.rounds,
            "overwhelmed_rounds": self.overwhelmed,
            "measured_rate": self.measured_rate,
            "measured_rate_ci95": [low, high],
            "law": self.law,
            "corrupt_thresholds": list(self.thresholds),
            "predicted_rate": self.predicted_rate,
            "binomial_interval95": None if interval is None else list(interval),
            "inside": self.inside,
            "measured_corrupted_fraction": self.corrupted.mean,
            "measured_corrupted_fraction_ci95": _half(self.corrupted),
            "predicted_corrupted_fraction": self.predicted_fraction,
            "bytes_per_peer": None if self.bytes_per_peer is None else self.bytes_per_peer.mean,
            "round_seconds": None if self.round_seconds is None else self.round_seconds.mean,
            "cell_seconds": self.cell_seconds.mean,
            "holder_law": None
            if self.holders is None
            else {"needed": list(self.holders.needed), "publishers": self.holders.publishers},
            "final_accuracy": None if self.final_accuracy is None else self.final_accuracy.mean,
            "final_accuracy_ci95": None
            if self.final_accuracy is None
            else _half(self.final_accuracy),
            "liars_named": self.liars_named,
            "liars_named_lying": self.liars_named_lying,
            "liars_in_force": self.liars_in_force,
            "liar_precision": self.liar_precision,
            "liar_recall": self.liar_recall,
        }


def _half(stat: MeanCI) -> float | None:
    return None if math.isnan(stat.half_width) else stat.half_width


def binomial_interval(trials: int, p: float, confidence: float = CONFIDENCE) -> tuple[int, int]:
    """[F^-1(a), F^-1(1 - a)] of Binomial(trials, p), a = (1 - confidence) / 2 (F^-1: the
    smallest count whose CDF reaches the level); a single point when p is 0 or 1."""
    if trials < 1:
        raise ValueError(f"trials must be >= 1, got {trials}")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be in [0, 1], got {p}")
    if p == 0.0:
        return 0, 0
    if p == 1.0:
        return trials, trials
    from scipy.stats import binom

    tail = (1.0 - confidence) / 2
    return int(binom.ppf(tail, trials, p)), int(binom.ppf(1.0 - tail, trials, p))


def clopper_pearson(
    successes: int, trials: int, confidence: float = CONFIDENCE
) -> tuple[float, float]:
    """The exact (Clopper and Pearson 1934) interval of a binomial proportion."""
    if not 0 <= successes <= trials or trials < 1:
        raise ValueError(f"need 0 <= successes <= trials, trials >= 1; got {successes}/{trials}")
    from scipy.stats import beta

    tail = (1.0 - confidence) / 2
    low = 0.0 if successes == 0 else float(beta.ppf(tail, successes, trials - successes + 1))
    high = (
        1.0 if successes == trials else float(beta.ppf(1 - tail, successes + 1, trials - successes))
    )
    return low, high


def _thresholds(metrics: dict[str, Any], sizes: tuple[int, ...]) -> tuple[int, ...]:
    recorded = metrics.get("corrupt_thresholds")
    if isinstance(recorded, dict):
        return tuple(int(recorded[str(size)]) for size in sizes)
    if isinstance(recorded, list) and len(recorded) == 1:
        return tuple(int(recorded[0]) for _ in sizes)
    return tuple(1 for _ in sizes)


def _holders(metrics: dict[str, Any]) -> HolderLaw | None:
    recorded = metrics.get("holder_law")
    if not isinstance(recorded, dict):
        return None
    return HolderLaw(tuple(int(t) for t in recorded["needed"]), int(recorded["publishers"]))


def _count(group: Sequence[CellRecord], key: str) -> int:
    return sum(int(c.metrics.get(key) or 0) for c in group)


def _usable(record: CellRecord) -> bool:
    metrics = record.metrics
    return record.status == "ok" and all(
        isinstance(metrics.get(key), int)
        for key in ("overwhelmed_rounds", "counted_rounds", "cluster_size", "nodes", "faulty_nodes")
    )


def _stat(values: Sequence[Any]) -> MeanCI | None:
    numbers = [float(v) for v in values if isinstance(v, int | float)]
    return mean_ci(numbers) if numbers else None


def _configuration_key(record: CellRecord, by_behaviour: bool) -> tuple[Any, ...]:
    """(facet, strategy, k, n, faulty): what the cells of one configuration share but the seed;
    the facet holds the labels of every axis other than strategy, k and the fault fraction, and,
    where the sweep runs several behaviours, the behaviour. Cells of different attacks on the
    same seed share their faulty peers and clusters, so pooling them would count the same
    rounds once per attack."""
    metrics = record.metrics
    facet = tuple(
        (key, label)
        for key, label in sorted(record.labels.items())
        if key not in (STRATEGY_KEY, CLUSTER_SIZE_KEY, *FAULT_AXES)
    )
    if by_behaviour:
        facet = (*facet, (BEHAVIOUR_KEY, str(metrics.get("behaviours") or "none")))
    return (
        facet,
        str(metrics.get("strategy")),
        int(metrics["cluster_size"]),
        int(metrics["nodes"]),
        int(metrics["faulty_nodes"]),
    )


def _configurations(records: Sequence[CellRecord]) -> dict[tuple[Any, ...], list[CellRecord]]:
    """The records grouped by `_configuration_key`, in grid order; split by behaviour only when
    the attacked cells run more than one."""
    attacks = {r.metrics.get("behaviours") for r in records if r.metrics.get("faulty_nodes")}
    groups: dict[tuple[Any, ...], list[CellRecord]] = {}
    for record in records:
        groups.setdefault(_configuration_key(record, len(attacks) > 1), []).append(record)
    return groups


def build_map(records: Sequence[CellRecord]) -> list[MapCell]:
    """Pool the seeds of every configuration that has the counts; grid order kept."""
    from phalanx.clustering.strategies import cluster_sizes

    cells = []
    groups = _configurations([record for record in records if _usable(record)])
    for (facet, strategy, size, nodes, faulty), group in groups.items():
        first = group[0].metrics
        laws = {cell.metrics.get("predicted_law") for cell in group}
        law = laws.pop() if len(laws) == 1 else None
        predicted = _stat([c.metrics.get("predicted_failed_round_rate") for c in group])
        fraction = _stat([c.metrics.get("predicted_corrupted_fraction") for c in group])
        corrupted = _stat([c.metrics.get("corrupted_fraction") for c in group])
        assert corrupted is not None  # every usable cell has rounds
        cells.append(
            MapCell(
                facet=facet,
                strategy=strategy,
                cluster_size=size,
                nodes=nodes,
                faulty=faulty,
                seeds=len(group),
                rounds=sum(int(c.metrics["counted_rounds"]) for c in group),
                overwhelmed=sum(int(c.metrics["overwhelmed_rounds"]) for c in group),
                law=law if predicted is not None else None,
                thresholds=_thresholds(first, cluster_sizes(nodes, size)),
                predicted_rate=None if law is None or predicted is None else predicted.mean,
                predicted_fraction=None if law is None or fraction is None else fraction.mean,
                corrupted=corrupted,
                bytes_per_peer=_stat([c.metrics.get("bytes_per_peer") for c in group]),
                round_seconds=_stat([c.metrics.get("round_seconds") for c in group]),
                cell_seconds=mean_ci([c.duration_s for c in group]),
                holders=_holders(first),
                final_accuracy=_stat([c.metrics.get("final_accuracy") for c in group]),
                liars_named=_count(group, "liars_named"),
                liars_named_lying=_count(group, "liars_named_lying"),
                liars_in_force=_count(group, "liars_in_force"),
            )
        )
    return cells


def prediction_curve(cell: MapCell) -> list[tuple[int, float]]:
    """(f, P(round overwhelmed)) for f = 0..n/2 under the cell's law (empty without one)."""
    if cell.law is None:
        return []
    from phalanx.clustering.strategies import cluster_sizes

    sizes = cluster_sizes(cell.nodes, cell.cluster_size)
    return [
        (f, float(predict(sizes, cell.thresholds, f, cell.law, cell.holders)[0]))
        for f in range(cell.nodes // 2 + 1)
    ]


def predicted_tolerated(
    curve: Sequence[tuple[int, float]], nodes: int, level: float = LEVEL
) -> float:
    """The largest f/n with P(overwhelmed) <= 1 - level at it and at every smaller f."""
    tolerated = 0
    for f, probability in curve:
        if probability > 1.0 - level + 1e-12:
            break
        tolerated = f
    return tolerated / nodes


@dataclass(frozen=True)
class Tolerance:
    """The tolerated f/n of one (facet, strategy, k): predicted and measured on the grid."""

    facet: tuple[tuple[str, str], ...]
    strategy: str
    cluster_size: int
    law: str | None
    predicted: float | None
    measured: float | None  # largest grid f/n measured tolerated (None: not even the smallest)
    first_failing: float | None  # the next grid f/n (None: every grid value tolerated)
    rounds_at_measured: int | None
    upper_bound_at_measured: float | None  # Clopper-Pearson upper bound of the rate there
    bytes_per_peer: float | None

    def measured_text(self) -> str:
        if self.measured is None:
            return f"< {self.first_failing:.2f}" if self.first_failing is not None else "-"
        if self.first_failing is None:
            return f">= {self.measured:.2f}"
        return f"{self.measured:.2f} (fails at {self.first_failing:.2f})"


def tolerances(cells: Sequence[MapCell], level: float = LEVEL) -> list[Tolerance]:
    by_key: dict[tuple[Any, ...], list[MapCell]] = {}
    for cell in cells:
        by_key.setdefault((cell.facet, cell.strategy, cell.cluster_size), []).append(cell)
    result = []
    for (facet, strategy, size), group in by_key.items():
        if not any(c.faulty for c in group):
            continue  # clean runs alone (a sweep's attack-free behaviour): nothing to tolerate
        group = sorted(group, key=lambda c: c.faulty)
        with_law = next((c for c in group if c.law is not None), None)
        predicted = (
            None
            if with_law is None
            else predicted_tolerated(prediction_curve(with_law), with_law.nodes, level)
        )
        measured: MapCell | None = None
        failing: MapCell | None = None
        for cell in group:
            if cell.measured_rate <= 1.0 - level:
                measured = cell
            else:
                failing = cell
                break
        bytes_values = [c.bytes_per_peer.mean for c in group if c.bytes_per_peer is not None]
        result.append(
            Tolerance(
                facet=facet,
                strategy=strategy,
                cluster_size=size,
                law=None if with_law is None else with_law.law,
                predicted=predicted,
                measured=None if measured is None else measured.fault_fraction,
                first_failing=None if failing is None else failing.fault_fraction,
                rounds_at_measured=None if measured is None else measured.rounds,
                upper_bound_at_measured=None if measured is None else measured.rate_interval()[1],
                bytes_per_peer=sum(bytes_values) / len(bytes_values) if bytes_values else None,
            )
        )
    return result


# --- plots -----------------------------------------------------------------------------------


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _strategy_rank(strategy: str) -> tuple[int, str]:
    return (STRATEGY_ORDER.index(strategy) if strategy in STRATEGY_ORDER else 99, strategy)


def _panels(cells: Sequence[MapCell]) -> list[tuple[tuple[tuple[str, str], ...], str]]:
    # a panel per attacked (facet, strategy); clean-only facets have no map to draw
    keys = {(c.facet, c.strategy) for c in cells if c.faulty} or {
        (c.facet, c.strategy) for c in cells
    }
    return sorted(keys, key=lambda key: (key[0], _strategy_rank(key[1])))[:MAX_PANELS]


def _facet_name(facet: tuple[tuple[str, str], ...]) -> str:
    return ", ".join(f"{key.rsplit('.', 1)[-1]}={value}" for key, value in facet)


def plot_map(cells: Sequence[MapCell], path: Path, level: float = LEVEL) -> Path | None:
    if not cells:
        return None
    import numpy as np

    plt = _pyplot()
    panels = _panels(cells)
    sizes = sorted({c.cluster_size for c in cells})
    columns = min(2, len(panels))
    rows_n = math.ceil(len(panels) / columns)
    fig, grid = plt.subplots(
        rows_n, columns, squeeze=False, dpi=120, figsize=(5.2 * columns, 4.4 * rows_n)
    )
    cmap = plt.get_cmap("RdYlGn_r")
    tolerated = {(t.facet, t.strategy, t.cluster_size): t for t in tolerances(cells, level)}
    top = max(c.nodes for c in cells) // 2
    ymax = max(0.52, max(c.fault_fraction for c in cells) * 1.04)
    image = None
    for panel, (facet, strategy) in enumerate(panels):
        ax = grid[panel // columns][panel % columns]
        mine = [c for c in cells if c.facet == facet and c.strategy == strategy]
        laws = set()
        boundary_x, boundary_y, measured_x, measured_y = [], [], [], []
        for x, size in enumerate(sizes):
            column = sorted((c for c in mine if c.cluster_size == size), key=lambda c: c.faulty)
            if not column:
                continue
            reference = next((c for c in column if c.law is not None), None)
            if reference is not None:
                laws.add(reference.law)
                curve = prediction_curve(reference)
                nodes = reference.nodes
                edges = np.array(
                    [max(0.0, (f - 0.5) / nodes) for f, _ in curve] + [(curve[-1][0] + 0.5) / nodes]
                )
                values = np.array([[p] for _, p in curve])
                image = ax.pcolormesh(
                    [x - 0.42, x + 0.42],
                    edges,
                    values,
                    cmap=cmap,
                    vmin=0,
                    vmax=1,
                    alpha=0.55,
                    shading="flat",
                )
            for cell in column:
                ax.scatter(
                    [x],
                    [cell.fault_fraction],
                    s=150,
                    marker="s",
                    c=[cell.measured_rate],
                    cmap=cmap,
                    vmin=0,
                    vmax=1,
                    edgecolors="black",
                    linewidths=0.8,
                    zorder=3,
                )
                ax.annotate(
                    f"{cell.overwhelmed}/{cell.rounds}",
                    (x, cell.fault_fraction),
                    xytext=(12, -3),
                    textcoords="offset points",
                    fontsize=6.5,
                    zorder=4,
                )
            entry = tolerated.get((facet, strategy, size))
            if entry is not None and entry.predicted is not None:
                boundary_x.append(x)
                boundary_y.append(entry.predicted)
            if entry is not None and entry.measured is not None:
                measured_x.append(x)
                measured_y.append(entry.measured)
        if boundary_x:
            ax.plot(
                boundary_x,
                boundary_y,
                color="black",
                linewidth=1.6,
                marker="o",
                markersize=4,
                label=f"predicted boundary ({level:.0%} of rounds)",
                zorder=5,
            )
        for index, (x, y) in enumerate(zip(measured_x, measured_y, strict=True)):
            ax.hlines(
                y,
                x - 0.42,
                x + 0.42,
                color="tab:blue",
                linewidth=1.6,
                linestyles="--",
                label="largest measured f/n tolerated" if index == 0 else None,
                zorder=5,
            )
        ax.set_yscale("function", functions=(np.sqrt, np.square))
        ax.set_ylim(0, ymax)
        ax.set_yticks([t for t in (0, 0.01, 0.03, 0.05, 0.1, 0.2, 0.3, 0.5) if t <= ymax])
        ax.set_xticks(range(len(sizes)), [str(s) for s in sizes])
        ax.set_xlim(-0.6, len(sizes) - 0.4)
        ax.set_xlabel("cluster size k")
        ax.set_ylabel("fault fraction f/n (square-root scale)")
        law = ", ".join(sorted(law for law in laws if law)) or "no analytic law"
        title = f"{strategy} — background: {law}"
        if facet:
            title = f"{_facet_name(facet)}: {title}"
        ax.set_title(title, fontsize=8.5)
        ax.grid(alpha=0.25, axis="y")
    for panel in range(len(panels), rows_n * columns):
        grid[panel // columns][panel % columns].axis("off")
    if image is not None:
        fig.colorbar(
            image,
            ax=grid.ravel().tolist(),
            shrink=0.75,
            label="P(round overwhelmed): background predicted, squares measured",
        )
    handles: dict[str, Any] = {}
    for ax in grid.ravel():
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    if handles:
        fig.legend(
            list(handles.values()),
            list(handles),
            loc="upper center",
            ncol=len(handles),
            fontsize=8,
            bbox_to_anchor=(0.45, 0.975),
            frameon=False,
        )
    fig.suptitle(
        f"Tolerance map at n = {cells[0].nodes} (f up to {top}): labels are overwhelmed/rounds",
        fontsize=10,
        y=1.0,
    )
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_predicted_vs_measured(cells: Sequence[MapCell], path: Path) -> Path | None:
    points = [c for c in cells if c.predicted_rate is not None]
    if not points:
        return None
    plt = _pyplot()
    fig, (rate_ax, fraction_ax) = plt.subplots(1, 2, figsize=(10.5, 4.6), dpi=120)
    markers = {
        size: marker
        for size, marker in zip(sorted({c.cluster_size for c in points}), "os^Dvp<>", strict=False)
    }
    colours = {
        s: f"C{i}" for i, s in enumerate(sorted({c.strategy for c in points}, key=_strategy_rank))
    }
    seen: set[tuple[str, int]] = set()
    for cell in points:
        low, high = cell.rate_interval()
        label_key = (cell.strategy, cell.cluster_size)
        label = f"{cell.strategy}, k={cell.cluster_size}" if label_key not in seen else None
        seen.add(label_key)
        style = dict(
            marker=markers[cell.cluster_size],
            color=colours[cell.strategy],
            linestyle="none",
            capsize=2,
            markersize=5,
            alpha=0.85,
        )
        assert cell.predicted_rate is not None
        rate_ax.errorbar(
            [cell.predicted_rate],
            [cell.measured_rate],
            yerr=[[cell.measured_rate - low], [high - cell.measured_rate]],
            label=label,
            **style,
        )
        if cell.predicted_fraction is not None:
            width = _half(cell.corrupted) or 0.0
            fraction_ax.errorbar(
                [cell.predicted_fraction], [cell.corrupted.mean], yerr=[[width], [width]], **style
            )
    for ax, title in (
        (rate_ax, "overwhelmed-round rate (Clopper-Pearson 95%)"),
        (fraction_ax, "corrupted-cluster fraction (Student-t 95% over seeds)"),
    ):
        ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1)
        ax.set_xlim(-0.04, 1.04)
        ax.set_ylim(-0.04, 1.04)
        ax.set_xlabel("predicted (exact law, or static's worst case)")
        ax.set_ylabel("measured")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
    rate_ax.legend(fontsize=6, loc="upper left", ncol=2)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _liar_cells(cells: Sequence[MapCell]) -> list[MapCell]:
    return [c for c in cells if c.holders is not None or c.liars_in_force]


def plot_liars(cells: Sequence[MapCell], path: Path) -> Path | None:
    """Lying Shamir holders against f/n, one colour per (facet, k): the predicted
    P(overwhelmed) curve of the lying-holder law over every f with the measured rates
    (Clopper-Pearson 95%), and the measured liar recall and precision."""
    liar_cells = _liar_cells(cells)
    if not liar_cells:
        return None
    plt = _pyplot()
    fig, (rate_ax, liar_ax) = plt.subplots(1, 2, figsize=(10.5, 4.4), dpi=120)
    keys = sorted({(c.facet, c.cluster_size) for c in liar_cells})
    for index, (facet, size) in enumerate(keys):
        colour = f"C{index}"
        group = sorted(
            (c for c in liar_cells if (c.facet, c.cluster_size) == (facet, size)),
            key=lambda c: c.faulty,
        )
        name = f"{_facet_name(facet)}, k={size}" if facet else f"k={size}"
        reference = next((c for c in group if c.law is not None), None)
        if reference is not None:
            curve = prediction_curve(reference)
            rate_ax.plot(
                [f / reference.nodes for f, _ in curve],
                [p for _, p in curve],
                color=colour,
                linewidth=1.2,
                label=f"{name}: predicted",
            )
        for cell in group:
            low, high = cell.rate_interval()
            rate_ax.errorbar(
                [cell.fault_fraction],
                [cell.measured_rate],
                yerr=[[cell.measured_rate - low], [high - cell.measured_rate]],
                color=colour,
                marker="o",
                linestyle="none",
                capsize=3,
                markersize=5,
            )
            rate_ax.annotate(
                f"{cell.overwhelmed}/{cell.rounds}",
                (cell.fault_fraction, cell.measured_rate),
                textcoords="offset points",
                xytext=(5, -10),
                fontsize=6,
                color=colour,
            )
        fractions = [c.fault_fraction for c in group]
        recall = [c.liar_recall for c in group]
        precision = [c.liar_precision for c in group]
        liar_ax.plot(
            [f for f, r in zip(fractions, recall, strict=True) if r is not None],
            [r for r in recall if r is not None],
            color=colour,
            marker="o",
            label=f"{name}: recall",
        )
        liar_ax.plot(
            [f for f, q in zip(fractions, precision, strict=True) if q is not None],
            [q for q in precision if q is not None],
            color=colour,
            marker="s",
            linestyle="--",
            label=f"{name}: precision",
        )
    rate_ax.set_xlabel("f/n (lying holders)")
    rate_ax.set_ylabel("P(round overwhelmed)")
    rate_ax.set_title("overwhelmed rounds: lying-holder law and measured (95%)", fontsize=9)
    liar_ax.set_xlabel("f/n (lying holders)")
    liar_ax.set_ylabel("fraction")
    liar_ax.set_title("liars named: recall and precision (pooled)", fontsize=9)
    for ax in (rate_ax, liar_ax):
        ax.set_ylim(-0.04, 1.06)
        ax.set_xlim(0, max(0.5, max(c.fault_fraction for c in liar_cells) + 0.05))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_cost(cells: Sequence[MapCell], path: Path) -> Path | None:
    with_bytes = [c for c in cells if c.bytes_per_peer is not None]
    if not with_bytes:
        return None
    plt = _pyplot()
    fig, (bytes_ax, time_ax) = plt.subplots(1, 2, figsize=(10, 4), dpi=120)
    keys = sorted(
        {(c.facet, c.strategy) for c in with_bytes}, key=lambda k: (k[0], _strategy_rank(k[1]))
    )
    for facet, strategy in keys:
        mine = [c for c in with_bytes if c.facet == facet and c.strategy == strategy]
        sizes = sorted({c.cluster_size for c in mine})
        name = f"{_facet_name(facet)}: {strategy}" if facet else strategy
        for ax, values in (
            (bytes_ax, lambda c: c.bytes_per_peer.mean / 1e6),
            (time_ax, lambda c: c.cell_seconds.mean),
        ):
            stats = [mean_ci([values(c) for c in mine if c.cluster_size == s]) for s in sizes]
            ax.errorbar(
                sizes,
                [s.mean for s in stats],
                marker="o",
                capsize=3,
                label=name,
                yerr=[0.0 if math.isnan(s.half_width) else s.half_width for s in stats],
            )
    bytes_ax.set_ylabel("MB sent per peer and round")
    time_ax.set_ylabel("wall seconds per cell (memory engine)")
    for ax in (bytes_ax, time_ax):
        ax.set_xlabel("cluster size k")
        ax.set_xticks(sorted({c.cluster_size for c in with_bytes}))
        ax.grid(alpha=0.3)
    bytes_ax.legend(fontsize=7)
    fig.suptitle(
        "cost against cluster size (mean over fault fractions and seeds, 95% CI)", fontsize=9
    )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


# --- report section --------------------------------------------------------------------------


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _fraction_text(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def cell_table(cells: Sequence[MapCell]) -> list[str]:
    header = [
        "strategy",
        "k",
        "f/n",
        "law",
        "rounds",
        "overwhelmed",
        "measured rate [95%]",
        "predicted P",
        "binomial 95% (rounds)",
        "inside",
        "corrupted measured",
        "corrupted predicted",
        "MB/peer/round",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for cell in cells:
        low, high = cell.rate_interval()
        interval = cell.acceptance()
        inside = cell.inside
        strategy = f"{_facet_name(cell.facet)}: {cell.strategy}" if cell.facet else cell.strategy
        lines.append(
            "| "
            + " | ".join(
                [
                    strategy,
                    str(cell.cluster_size),
                    f"{cell.fault_fraction:.2f}",
                    cell.law or "none",
                    str(cell.rounds),
                    str(cell.overwhelmed),
                    f"{cell.measured_rate:.2f} [{low:.2f}, {high:.2f}]",
                    _fmt(cell.predicted_rate, 4),
                    "-" if interval is None else f"[{interval[0]}, {interval[1]}]",
                    "-" if inside is None else ("yes" if inside else "**no**"),
                    cell.corrupted.format(3),
                    _fmt(cell.predicted_fraction),
                    _fmt(
                        None if cell.bytes_per_peer is None else cell.bytes_per_peer.mean / 1e6, 2
                    ),
                ]
            )
            + " |"
        )
    return lines


def liar_table(cells: Sequence[MapCell]) -> list[str]:
    """Cells with lying Shamir holders: overwhelmed rounds against the lying-holder law, the
    liars named (pooled over seeds and rounds) and the final accuracy; empty without any."""
    liar_cells = [c for c in cells if c.holders is not None or c.liars_in_force]
    if not liar_cells:
        return []
    header = [
        "facet",
        "strategy",
        "k",
        "f/n",
        "rounds",
        "overwhelmed",
        "measured rate [95%]",
        "predicted P",
        "binomial 95% (rounds)",
        "inside",
        "no output: measured",
        "predicted",
        "liar precision",
        "liar recall",
        "final accuracy",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for cell in liar_cells:
        low, high = cell.rate_interval()
        interval = cell.acceptance()
        inside = cell.inside
        lines.append(
            "| "
            + " | ".join(
                [
                    _facet_name(cell.facet) or "-",
                    cell.strategy,
                    str(cell.cluster_size),
                    f"{cell.fault_fraction:.2f}",
                    str(cell.rounds),
                    str(cell.overwhelmed),
                    f"{cell.measured_rate:.2f} [{low:.2f}, {high:.2f}]",
                    _fmt(cell.predicted_rate, 4),
                    "-" if interval is None else f"[{interval[0]}, {interval[1]}]",
                    "-" if inside is None else ("yes" if inside else "**no**"),
                    cell.corrupted.format(3),
                    _fmt(cell.predicted_fraction),
                    f"{_fmt(cell.liar_precision, 2)} ({cell.liars_named_lying}/{cell.liars_named})",
                    f"{_fmt(cell.liar_recall, 2)} ({cell.liars_named_lying}/{cell.liars_in_force})",
                    "-" if cell.final_accuracy is None else cell.final_accuracy.format(3),
                ]
            )
            + " |"
        )
    return lines


def tolerance_table(entries: Sequence[Tolerance], level: float = LEVEL) -> list[str]:
    sizes = sorted({t.cluster_size for t in entries})
    header = ["strategy", *(f"k={s}: predicted / measured" for s in sizes), "MB/peer/round by k"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    keys = sorted(
        {(t.facet, t.strategy) for t in entries}, key=lambda k: (k[0], _strategy_rank(k[1]))
    )
    for facet, strategy in keys:
        row = [f"{_facet_name(facet)}: {strategy}" if facet else strategy]
        costs = []
        for size in sizes:
            entry = next(
                (
                    t
                    for t in entries
                    if (t.facet, t.strategy, t.cluster_size) == (facet, strategy, size)
                ),
                None,
            )
            if entry is None:
                row.append("-")
                continue
            predicted = _fraction_text(entry.predicted) if entry.predicted is not None else "no law"
            row.append(f"{predicted} / {entry.measured_text()}")
            costs.append(
                _fmt(None if entry.bytes_per_peer is None else entry.bytes_per_peer / 1e6, 2)
            )
        row.append(", ".join(costs))
        lines.append("| " + " | ".join(row) + " |")
    return lines


@dataclass(frozen=True)
class RoundWindow:
    """One configuration's rounds from `first` to `last`, pooled over its seeds."""

    first: int
    last: int
    rounds: int
    overwhelmed: int
    clusters: int
    failed: int
    dropped: int
    bad_inputs: int
    liars_named: int
    liars_named_lying: int
    liars_in_force: int

    @property
    def failed_fraction(self) -> float:
        return self.failed / self.clusters if self.clusters else 0.0

    @property
    def bad_fraction(self) -> float:
        """Bad inputs of the outer rule (failed, or corrupted and used) over the clusters
        it did not drop."""
        kept = self.clusters - self.dropped
        return self.bad_inputs / kept if kept else 0.0

    @property
    def liar_recall(self) -> float | None:
        return self.liars_named_lying / self.liars_in_force if self.liars_in_force else None

    @property
    def liar_precision(self) -> float | None:
        return self.liars_named_lying / self.liars_named if self.liars_named else None

    def to_json(self) -> dict[str, Any]:
        low, high = clopper_pearson(self.overwhelmed, self.rounds)
        return {
            "rounds": [self.first, self.last],
            "counted_rounds": self.rounds,
            "overwhelmed_rounds": self.overwhelmed,
            "overwhelmed_rate_ci95": [low, high],
            "failed_cluster_fraction": self.failed_fraction,
            "bad_input_fraction": self.bad_fraction,
            "dropped_clusters": self.dropped,
            "liar_precision": self.liar_precision,
            "liar_recall": self.liar_recall,
        }


@dataclass(frozen=True)
class RoundSeries:
    """A configuration run for more rounds than the suspicion scores lag (`TRUST_LAG`): its
    rounds one by one and in two windows, before any score exists and after."""

    facet: tuple[tuple[str, str], ...]
    strategy: str
    cluster_size: int
    nodes: int
    faulty: int
    seeds: int
    per_round: tuple[RoundWindow, ...]

    def window(self, first: int, last: int) -> RoundWindow:
        chosen = [w for w in self.per_round if first <= w.first <= last]
        return RoundWindow(
            first,
            last,
            *(
                sum(getattr(w, name) for w in chosen)
                for name in (
                    "rounds",
                    "overwhelmed",
                    "clusters",
                    "failed",
                    "dropped",
                    "bad_inputs",
                    "liars_named",
                    "liars_named_lying",
                    "liars_in_force",
                )
            ),
        )

    @property
    def last_round(self) -> int:
        return max(w.last for w in self.per_round)

    def unscored(self) -> RoundWindow:
        return self.window(1, TRUST_LAG)

    def scored(self) -> RoundWindow:
        return self.window(TRUST_LAG + 1, self.last_round)


def build_round_series(records: Sequence[CellRecord]) -> list[RoundSeries]:
    """Configurations whose cells record more than `TRUST_LAG` rounds, seeds pooled round by
    round (from each cell's ``by_round`` metrics); grid order kept."""
    groups = _configurations(
        [
            record
            for record in records
            if _usable(record)
            and isinstance(record.metrics.get("by_round"), list)
            and len(record.metrics["by_round"]) > TRUST_LAG
        ]
    )
    series = []
    for (facet, strategy, size, nodes, faulty), group in groups.items():
        by_round: dict[int, list[dict[str, Any]]] = {}
        for record in group:
            for outcome in record.metrics["by_round"]:
                by_round.setdefault(int(outcome["round"]), []).append(outcome)
        per_round = tuple(
            RoundWindow(
                round_,
                round_,
                len(outcomes),
                sum(bool(o["overwhelmed"]) for o in outcomes),
                sum(int(o["clusters"]) for o in outcomes),
                sum(int(o["failed_clusters"]) for o in outcomes),
                sum(int(o["dropped_clusters"]) for o in outcomes),
                sum(int(o.get("bad_inputs") or 0) for o in outcomes),
                sum(int(o["liars_named"]) for o in outcomes),
                sum(int(o["liars_named_lying"]) for o in outcomes),
                sum(int(o["liars_in_force"]) for o in outcomes),
            )
            for round_, outcomes in sorted(by_round.items())
        )
        series.append(RoundSeries(facet, strategy, size, nodes, faulty, len(group), per_round))
    return series


def round_series_table(series: Sequence[RoundSeries]) -> list[str]:
    """Before and after the scores: overwhelmed rounds, clusters without output, liars named."""
    header = [
        "strategy",
        "k",
        "f/n",
        "seeds",
        f"rounds 1-{TRUST_LAG}: overwhelmed",
        "bad inputs",
        "rounds after: overwhelmed [95%]",
        "bad inputs",
        "no output",
        "dropped outputs",
        "liars named: precision / recall",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    ordered = sorted(
        series, key=lambda s: (s.facet, s.faulty, s.cluster_size, _strategy_rank(s.strategy))
    )
    for entry in ordered:
        before, after = entry.unscored(), entry.scored()
        low, high = clopper_pearson(after.overwhelmed, after.rounds)
        name = f"{_facet_name(entry.facet)}: {entry.strategy}" if entry.facet else entry.strategy
        lines.append(
            "| "
            + " | ".join(
                [
                    name,
                    str(entry.cluster_size),
                    f"{entry.faulty / entry.nodes:.2f}",
                    str(entry.seeds),
                    f"{before.overwhelmed} of {before.rounds}",
                    f"{before.bad_fraction:.3f}",
                    f"{after.overwhelmed} of {after.rounds} [{low:.2f}, {high:.2f}]",
                    f"{after.bad_fraction:.3f}",
                    f"{after.failed_fraction:.3f}",
                    str(after.dropped),
                    f"{_fmt(after.liar_precision, 2)} / {_fmt(after.liar_recall, 2)}",
                ]
            )
            + " |"
        )
    return lines


def plot_round_series(series: Sequence[RoundSeries], path: Path) -> Path | None:
    """One panel per (facet, k, f/n): the outer rule's bad inputs (failed or corrupted outputs)
    over the clusters it kept (solid) and the fraction of overwhelmed rounds (dashed) against the
    round, one colour per strategy; the grey band marks
    the rounds drawn before any suspicion score exists."""
    if not series:
        return None
    plt = _pyplot()
    panels = sorted({(s.facet, s.cluster_size, s.faulty, s.nodes) for s in series})[:MAX_PANELS]
    fig, axes = plt.subplots(
        1, len(panels), figsize=(4.2 * len(panels), 3.8), dpi=120, squeeze=False, sharey=True
    )
    strategies = sorted({s.strategy for s in series}, key=_strategy_rank)
    for ax, (facet, size, faulty, nodes) in zip(axes[0], panels, strict=False):
        for entry in series:
            if (entry.facet, entry.cluster_size, entry.faulty, entry.nodes) != (
                facet,
                size,
                faulty,
                nodes,
            ):
                continue
            colour = f"C{strategies.index(entry.strategy)}"
            rounds = [w.first for w in entry.per_round]
            ax.plot(
                rounds,
                [w.bad_fraction for w in entry.per_round],
                color=colour,
                marker="o",
                markersize=4,
                label=f"{entry.strategy}: bad inputs",
            )
            ax.plot(
                rounds,
                [w.overwhelmed / w.rounds for w in entry.per_round],
                color=colour,
                linestyle="--",
                linewidth=1,
                label=f"{entry.strategy}: overwhelmed",
            )
        ax.axvspan(0.5, TRUST_LAG + 0.5, color="0.9", zorder=0)
        title = f"k={size}, f/n={faulty / nodes:.2f}"
        ax.set_title(f"{_facet_name(facet)}, {title}" if facet else title, fontsize=9)
        ax.set_xlabel("round (grey: no scores yet)")
        ax.set_ylim(-0.04, 1.06)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("fraction of clusters / of seeds")
    axes[0][-1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def tolerance_section(records: Sequence[CellRecord], out: Path) -> list[str]:
    """The map's part of ``report.md`` (empty when no cell has the counts); writes
    ``tolerance.json`` and the plots into `out`."""
    cells = build_map(records)
    if not cells:
        return []
    entries = tolerances(cells)
    plots = [
        ("Tolerance map", plot_map(cells, out / "tolerance_map.png")),
        (
            "Predicted against measured",
            plot_predicted_vs_measured(cells, out / "tolerance_predicted_vs_measured.png"),
        ),
        ("Cost of the map", plot_cost(cells, out / "tolerance_cost.png")),
    ]
    checked = [c for c in cells if c.inside is not None]
    random_cells = [c for c in checked if c.strategy == "random"]
    summary: dict[str, Any] = {
        "level": LEVEL,
        "confidence": CONFIDENCE,
        "cells": [c.to_json() for c in cells],
        "tolerated": [
            {
                "facet": dict(t.facet),
                "strategy": t.strategy,
                "cluster_size": t.cluster_size,
                "law": t.law,
                "predicted": t.predicted,
                "measured": t.measured,
                "first_failing": t.first_failing,
                "rounds_at_measured": t.rounds_at_measured,
                "upper_bound_at_measured": t.upper_bound_at_measured,
                "bytes_per_peer": t.bytes_per_peer,
            }
            for t in entries
        ],
        "inside": {"checked": len(checked), "inside": sum(bool(c.inside) for c in checked)},
        "random_inside": {
            "checked": len(random_cells),
            "inside": sum(bool(c.inside) for c in random_cells),
        },
    }
    series = build_round_series(records)
    if series:
        summary["by_round"] = [
            {
                "facet": dict(s.facet),
                "strategy": s.strategy,
                "cluster_size": s.cluster_size,
                "nodes": s.nodes,
                "faulty": s.faulty,
                "seeds": s.seeds,
                "unscored": s.unscored().to_json(),
                "scored": s.scored().to_json(),
                "per_round": [w.to_json() for w in s.per_round],
            }
            for s in series
        ]
    (out / "tolerance.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    lines = [
        "## Tolerance map",
        "",
        "Seeds pooled per configuration (`experiments.tolerance`). A round is overwhelmed when",
        "the outer rule's bad inputs (failed clusters, and clusters with at least the secure",
        "mode's corruption threshold of faulty members) exceed ceil(m'/2) - 1. *inside*: the",
        "measured count of overwhelmed rounds lies in the central 95% interval of",
        "Binomial(rounds, predicted P). Laws: *exact* (random), *worst case* (static, adversarial",
        "placement), *random law (no scores yet)* (balanced, isolate in rounds 1 and 2, before",
        "any suspicion score exists); *none*: no analytic law.",
        "",
        f"- cells with a prediction inside their 95% binomial interval: "
        f"{summary['inside']['inside']} of {summary['inside']['checked']}",
        f"- `random`: {summary['random_inside']['inside']} of "
        f"{summary['random_inside']['checked']}",
        "",
        f"### Largest tolerated f/n ({LEVEL:.0%} of rounds not overwhelmed)",
        "",
        "Predicted: exact over every f from 0 to n/2. Measured: the largest grid value up to",
        "which every measured rate is at most 1%, and the grid value where it fails.",
        "",
        *tolerance_table(entries),
        "",
        "### Every configuration",
        "",
        *cell_table(cells),
        "",
    ]
    liars = liar_table(cells)
    if liars:
        plot = plot_liars(cells, out / "tolerance_liars.png")
        lines += [
            "### Lying Shamir holders",
            "",
            "Predicted P: the lying-holder law (`experiments.metrics.HolderLaw`): a cluster",
            "yields no output when its publishers see more lies than Berlekamp-Welch corrects.",
            "*no output*: the fraction of clusters without one. Liar precision and recall:",
            "holders named in the cluster outputs against the lying holders in force, pooled",
            "over seeds and rounds (named that lied / named, and / in force).",
            "",
            *liars,
            "",
        ]
        if plot is not None:
            lines += [f"![Lying Shamir holders]({plot.name})", ""]
    if series:
        plot = plot_round_series(series, out / "tolerance_by_round.png")
        lines += [
            "### Before and after the suspicion scores",
            "",
            f"Round r draws its clusters with the scores after round r - {TRUST_LAG}, so rounds",
            f"1-{TRUST_LAG} are drawn before any score exists. *bad inputs*: the failed and",
            "corrupted outputs over the clusters the outer rule kept (the median is overwhelmed",
            "past one half); *no output*: clusters outside the quarantine without one;",
            "*dropped outputs*: quarantine clusters of `isolate`, summed over seeds and rounds;",
            "liars named: over the rounds after, pooled.",
            "",
            *round_series_table(series),
            "",
        ]
        if plot is not None:
            lines += [f"![Before and after the suspicion scores]({plot.name})", ""]
    for title, plot in plots:
        if plot is not None:
            lines += [f"### {title}", "", f"![{title}]({plot.name})", ""]
    return lines
