"""Per-round and per-cell metrics from a testbed summary, and the analytic prediction beside them.

Measured side. In round r a node is *faulty* when a ``kill`` fault removed it after an earlier
round (r > fault.round) or when a ``byzantine`` entry makes it Byzantine from its start round.
A cluster counts as *corrupted* in round r when the node reported it failed or flagged, or when
it holds at least one faulty member (corruption threshold c = 1, the plain-sum model of
`clustering.analysis`). A round *fails* when its corrupted clusters exceed what the outer
aggregation tolerates, ``ceil(b m) - 1`` with breakdown b = 1/2 (the median; Donoho and Huber
1983). Rates are taken over the rounds with a fault in force (all rounds when
there is none).

Predicted side. `clustering.analysis.analyze_clusters(n, f, k, strategy, corrupt_threshold=1,
breakdown=1/2)`: for ``random`` the exact hypergeometric law of the corrupted-cluster count, for
``static`` the adversarial worst-case placement. We store P(outer aggregation overwhelmed)
(``predicted_failed_round_rate``, the quantity compared in the report) and the expected corrupted
fraction (``predicted_corrupted_fraction``). Other strategies have no analytic prediction.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

BREAKDOWN = 0.5
ANALYTIC_STRATEGIES = ("random", "static")


def fault_schedule(scenario: dict[str, Any]) -> dict[str, int]:
    """Node id -> first round in which it is faulty.

    A ``kill`` after round R makes the node faulty from R + 1; a ``byzantine`` entry from its
    ``start_round`` (default 1), with ``count`` entries resolved exactly as the nodes resolve them
    (`node.config.byzantine_nodes`, seeded by the scenario seed).
    """
    first: dict[str, float] = {}
    for fault in scenario.get("faults") or []:
        if fault.get("action") == "kill":
            for node in fault.get("nodes") or []:
                first[node] = min(first.get(node, math.inf), int(fault["round"]) + 1)
    for node, start in _byzantine_starts(scenario).items():
        first[node] = min(first.get(node, math.inf), start)
    return {node: int(start) for node, start in sorted(first.items())}


def _byzantine_starts(scenario: dict[str, Any]) -> dict[str, int]:
    entries = scenario.get("byzantine") or []
    if not entries:
        return {}
    import node.config as config
    from node.testbed import node_ids

    resolve = getattr(config, "byzantine_nodes", None)
    if resolve is not None:
        chosen = resolve(config.Scenario.model_validate(scenario), node_ids(scenario["nodes"]))
        return {node: int(getattr(entry, "start_round", 1)) for node, entry in chosen.items()}
    return {
        node: int(entry.get("start_round", 1))
        for entry in entries
        for node in entry.get("nodes", [])
    }


def round_rows(summary: dict[str, Any], scenario: dict[str, Any]) -> list[dict[str, Any]]:
    """The `rounds` table rows of one testbed summary."""
    schedule = fault_schedule(scenario)
    rows = []
    for record in summary.get("rounds", []):
        round_ = int(record["round"])
        faulty = {node for node, start in schedule.items() if start <= round_}
        clusters = record.get("clusters") or []
        reported = {str(c) for c in record.get("failed_clusters") or []}
        reported |= {str(c) for c in record.get("flagged_clusters") or []}
        with_faulty = {str(i) for i, members in enumerate(clusters) if faulty & set(members)}
        rows.append(
            {
                "round": round_,
                "accuracy": record.get("accuracy"),
                "loss": record.get("loss"),
                "duration_s": record.get("duration_s"),
                "bytes_sent_total": int(sum((record.get("bytes_sent") or {}).values())),
                "excluded_count": len(record.get("excluded") or []),
                "failed_clusters_count": len(record.get("failed_clusters") or []),
                "flagged_count": len(record.get("flagged_clusters") or []),
                "num_clusters": len(clusters),
                "faulty_nodes": len(faulty),
                "clusters_with_faulty": len(with_faulty),
                "corrupted_clusters": len(reported | with_faulty),
                "digests_identical": bool(record.get("digests_identical")),
            }
        )
    return rows


def tolerated_corrupted(num_clusters: int, breakdown: float = BREAKDOWN) -> int:
    return max(0, math.ceil(breakdown * num_clusters) - 1)


def cell_metrics(rows: list[dict[str, Any]], scenario: dict[str, Any]) -> dict[str, Any]:
    """Seed-level scalars: final accuracy, cost, measured and predicted failure rates."""
    metrics: dict[str, Any] = {}
    if rows:
        metrics["final_accuracy"] = rows[-1]["accuracy"]
        metrics["round_seconds"] = statistics.fmean(r["duration_s"] or 0.0 for r in rows)
        metrics["bytes_sent"] = statistics.fmean(r["bytes_sent_total"] for r in rows)
        metrics["digests_identical"] = all(r["digests_identical"] for r in rows)
        counted = [r for r in rows if r["faulty_nodes"] > 0] or rows
        metrics["failed_round_rate"] = statistics.fmean(
            float(r["corrupted_clusters"] > tolerated_corrupted(r["num_clusters"])) for r in counted
        )
        metrics["corrupted_fraction"] = statistics.fmean(
            r["corrupted_clusters"] / max(1, r["num_clusters"]) for r in counted
        )
    metrics.update(predicted_metrics(scenario))
    return metrics


def predicted_metrics(scenario: dict[str, Any]) -> dict[str, Any]:
    """The analytic prediction for this scenario (see the module docstring), or nothing."""
    clustering = scenario.get("clustering") or {}
    strategy = clustering.get("strategy")
    nodes = scenario.get("nodes")
    size = clustering.get("cluster_size")
    if (
        strategy not in ANALYTIC_STRATEGIES
        or not isinstance(nodes, int)
        or not isinstance(size, int)
    ):
        return {}
    from clustering.analysis import analyze_clusters

    faulty = min(len(fault_schedule(scenario)), nodes)
    analysis = analyze_clusters(
        nodes, faulty, size, strategy=strategy, corrupt_threshold=1, breakdown=BREAKDOWN
    )
    return {
        "faulty_nodes": faulty,
        "fault_fraction": faulty / nodes,
        "predicted_failed_round_rate": float(analysis.overwhelm_probability()),
        "predicted_corrupted_fraction": float(analysis.expected_fraction()),
    }
