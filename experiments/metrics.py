"""Per-round and per-cell metrics from a testbed summary, and the analytic prediction beside them.

Measured side. In round r a node is *faulty* when a ``kill`` fault removed it after an earlier
round (r > fault.round) or when a ``byzantine`` entry makes it Byzantine from its start round.
From what the run recorded (each round's ``clusters``, ``failed_clusters``, ``cluster_outputs``
and ``quarantined_clusters`` in ``summary.json``) a cluster counts as *corrupted* in round r when
the nodes recorded it failed (no output), or when it holds at least c faulty members, where c is
the corruption threshold of the secure mode (`corruption_threshold`):

* ``none`` and ``secagg``: c = 1. Every member's input is in the cluster sum, so one faulty
  member corrupts it (the plain-sum model of `clustering.analysis`).
* ``shamir``, for members whose deviation is a lie as a holder (``corrupt-partial``, a wrong
  partial sum; `HOLDER_LIES`): c = s - T + 1 for a cluster of s members with T = t + l - 1
  partial sums needed to reconstruct (threshold t, packing l): with that many liars the honest
  partial sums no longer determine the sum, whatever the decoder. Berlekamp-Welch corrects up
  to r = floor((s - T)/2) lies; past r, random lies make the reconstruction fail, which is
  counted through ``failed_clusters``. Colluding holders (``collude-partial``,
  `COLLUDING_HOLDER_LIES`) shift their partial sums onto one other codeword, so from
  c = s - T + 1 - r of them the decoder returns a wrong sum, naming honest holders as the liars;
  for them c is that threshold (`colluding_threshold`), and between r + 1 and c - 1 colluders
  the reconstruction fails, which ``failed_clusters`` counts.
  Any other faulty member (a poisoned update, inconsistent shares, which amount to dealing
  another input, or a crash) corrupts its cluster alone in every mode: MPC hides inputs, it
  does not check them.

The outer rule's verdict (``flagged_clusters``) is not corruption and is not counted. A round is
*overwhelmed* when the bad inputs of the outer aggregation exceed what it tolerates,
``ceil(b m') - 1`` with breakdown b = 1/2 (the median; Donoho and Huber 1983): the bad inputs are
the failed clusters plus the corrupted clusters whose output the rule ran on, and m' is the
number of clusters less the quarantine clusters of ``isolate``, whose outputs are left out
whether they failed or not (without quarantine, m' = m and the test is "corrupted clusters >
ceil(m/2) - 1"). Rates are taken over the rounds with a fault in force (all rounds when there
is none); the cell keeps the counts (``overwhelmed_rounds`` of ``counted_rounds``) so that seeds
can be pooled into one binomial sample (`experiments.tolerance`).

Predicted side. With the same thresholds c_j (1 for any faulty member that is not a lying
holder) and b = 1/2 (`clustering.analysis`):

* ``random``: the exact hypergeometric law of the corrupted-cluster count
  (`corruption_distribution`); every round is a fresh uniform partition, so rounds are
  independent draws of it.
* ``static``: the adversarial worst-case placement (`worst_case_placement`): the groups are public
  and fixed, so an adversary who picks whom to corrupt reaches it every round.
* ``balanced`` and ``isolate``: no analytic law once suspicion scores shape the clusters. Round r
  is drawn with the scores after round r - 2 (`node.peer`), so in rounds 1 and 2 no score exists,
  and both strategies then draw a uniformly random partition with the cluster sizes of `random`
  (``balanced`` deals a shuffled order round-robin, ``isolate`` chunks it). For a cell whose
  counted rounds all lie there, the random law is exact and is given; otherwise nothing is.

When every faulty node is a lying holder (`HolderLaw`), the law is that of what the decoder
does with random lies rather than a threshold: Berlekamp-Welch corrects up to
r = floor((s - T)/2) of the s partial sums, and beyond that the random values fit no polynomial of
degree T - 1, so the publisher finds the cluster failed (no output, never a wrong one). A lying
publisher reconstructs from its own true partial sum, so it sees one lie fewer: a cluster with
e lying holders yields no output with probability 0 for e <= r, C(s - e, p)/C(s, p) for
e = r + 1 (all p publishers honest, `clustering.publishers`) and 1 for e >= r + 2
(`holder_failure_weights`). Publishers are a fresh uniform draw per round, but from round 2 on
they skip the members of the clusters that failed in the round before, so the law is exact for
round 1, and a sweep counting later rounds gets it as an approximation.

We store P(outer aggregation overwhelmed) (``predicted_failed_round_rate``), the expected
corrupted fraction (``predicted_corrupted_fraction``) and which law gave them
(``predicted_law``).
"""

from __future__ import annotations

import functools
import math
import statistics
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

BREAKDOWN = 0.5
ANALYTIC_STRATEGIES = ("random", "static")
SHUFFLE_STRATEGIES = ("balanced", "isolate")
# deviations that only lie as a Shamir holder (a wrong partial sum): Berlekamp-Welch sees them
HOLDER_LIES = frozenset({"corrupt-partial"})
# holders that lie in concert, onto one other codeword: corrected up to r, a wrong sum from
# s - T + 1 - r on (`adversary.behaviours.ByzantineTransport.partial_sum`)
COLLUDING_HOLDER_LIES = frozenset({"collude-partial"})
TRUST_LAG = 2  # round r draws its clusters with the suspicion scores after round r - TRUST_LAG
LAWS = {
    "random": "exact",
    "static": "worst case",
    "balanced": "random law (no scores yet)",
    "isolate": "random law (no scores yet)",
}


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
    for node, (start, _) in _byzantine_entries(scenario).items():
        first[node] = min(first.get(node, math.inf), start)
    return {node: int(start) for node, start in sorted(first.items())}


def _byzantine_entries(scenario: dict[str, Any]) -> dict[str, tuple[int, str]]:
    """Byzantine node id -> (start round, behaviour), resolved as the nodes resolve them."""
    entries = scenario.get("byzantine") or []
    if not entries:
        return {}
    import phalanx.node.config as config
    from phalanx.node.testbed import node_ids

    resolve = getattr(config, "byzantine_nodes", None)
    if resolve is not None:
        # a cell's parameters may carry the sweep's `engine`, which is not a scenario key
        fields = {key: value for key, value in scenario.items() if key != "engine"}
        chosen = resolve(config.Scenario.model_validate(fields), node_ids(scenario["nodes"]))
        return {
            node: (int(getattr(entry, "start_round", 1)), str(entry.behaviour))
            for node, entry in chosen.items()
        }
    return {
        node: (int(entry.get("start_round", 1)), str(entry.get("behaviour", "")))
        for entry in entries
        for node in entry.get("nodes", [])
    }


def behaviours(scenario: dict[str, Any]) -> str:
    """The scenario's Byzantine behaviours, sorted and joined by "+" ("" when clean): what tells
    apart the attacks of a sweep that share their faulty peers and clusters."""
    entries = scenario.get("byzantine") or []
    return "+".join(sorted({str(entry.get("behaviour", "")) for entry in entries}))


def lying_holders(
    scenario: dict[str, Any], kinds: frozenset[str] = HOLDER_LIES | COLLUDING_HOLDER_LIES
) -> frozenset[str]:
    """Byzantine members whose only deviation is a lie as a Shamir holder (by default random or
    colluding lies; `HOLDER_LIES` alone for the random-lie law), in ``shamir`` mode; empty
    otherwise."""
    aggregation = scenario.get("aggregation") or {}
    if aggregation.get("secure", "none") != "shamir":
        return frozenset()
    return frozenset(
        node
        for node, (_, behaviour) in _byzantine_entries(scenario).items()
        if behaviour.split(":", 1)[0] in kinds
    )


def corrected_lies(scenario: dict[str, Any], size: int) -> int:
    """r = floor((s - T)/2), the wrong partial sums Berlekamp-Welch corrects in a cluster of
    `size` (0 outside ``shamir``); `corruption_threshold` is s - T + 1."""
    return (corruption_threshold(scenario, size) - 1) // 2


def colluding_threshold(scenario: dict[str, Any], size: int) -> int:
    """Colluding holders from which a cluster of `size` decodes a wrong sum: s - T + 1 - r."""
    return corruption_threshold(scenario, size) - corrected_lies(scenario, size)


def corruption_threshold(scenario: dict[str, Any], size: int) -> int:
    """Lying holders that corrupt a cluster of `size` in the scenario's secure mode.

    ``size - T + 1`` in ``shamir``, T = t + l - 1 the partial sums reconstruction needs
    (t = ``aggregation.threshold`` or the mode's default for the size); 1 in ``none`` and
    ``secagg``. Any other faulty member corrupts its cluster alone in every mode.
    """
    aggregation = scenario.get("aggregation") or {}
    if aggregation.get("secure", "none") != "shamir" or size < 2:
        return 1
    from phalanx.mpc.session import default_threshold

    threshold = int(aggregation.get("threshold") or 0) or default_threshold("shamir", size)
    needed = threshold + int(aggregation.get("packing") or 1) - 1
    return max(1, size - needed + 1)


def _output_clusters(record: dict[str, Any], count: int, failed: set[int]) -> set[int]:
    """Clusters whose output the outer rule ran on (``cluster_outputs``, else all but failed)."""
    outputs = record.get("cluster_outputs")
    if isinstance(outputs, dict):
        return {int(c) for c in outputs}
    return set(range(count)) - failed


def round_rows(summary: dict[str, Any], scenario: dict[str, Any]) -> list[dict[str, Any]]:
    """The `rounds` table rows of one testbed summary.

    Beyond the stored columns (`experiments.store.ROUND_COLUMNS`) each row carries what the cell
    metrics need: ``used_clusters`` (outputs the outer rule ran on), ``dropped_clusters``
    (quarantined outputs it left out), ``bad_inputs`` and ``overwhelmed``.
    """
    schedule = fault_schedule(scenario)
    liars = lying_holders(scenario)
    colluders = lying_holders(scenario, COLLUDING_HOLDER_LIES)
    rows = []
    for record in summary.get("rounds", []):
        round_ = int(record["round"])
        faulty = {node for node, start in schedule.items() if start <= round_}
        clusters = record.get("clusters") or []
        count = len(clusters)
        failed = {int(c) for c in record.get("failed_clusters") or []}
        with_faulty = {i for i, members in enumerate(clusters) if faulty & set(members)}
        over_threshold = {
            i
            for i, members in enumerate(clusters)
            if faulty & set(members) - liars
            or len(faulty & liars & set(members)) >= corruption_threshold(scenario, len(members))
            or len(faulty & colluders & set(members)) >= colluding_threshold(scenario, len(members))
        }
        corrupted = failed | over_threshold
        used = _output_clusters(record, count, failed)
        # A quarantine cluster (`isolate`) is left out of the global step whether it failed or
        # not, so it is dropped rather than a bad input.
        quarantine = {int(c) for c in record.get("quarantined_clusters") or []}
        dropped = (set(range(count)) - used - failed) | (failed & quarantine)
        bad = len(failed - quarantine) + len(over_threshold & used)
        rows.append(
            {
                "round": round_,
                "accuracy": record.get("accuracy"),
                "loss": record.get("loss"),
                "duration_s": record.get("duration_s"),
                "bytes_sent_total": int(sum((record.get("bytes_sent") or {}).values())),
                "excluded_count": len(record.get("excluded") or []),
                "failed_clusters_count": len(failed),
                "flagged_count": len(record.get("flagged_clusters") or []),
                "num_clusters": count,
                "faulty_nodes": len(faulty),
                "clusters_with_faulty": len(with_faulty),
                "corrupted_clusters": len(corrupted),
                "digests_identical": bool(record.get("digests_identical")),
                "failed_outside_quarantine": len(failed - quarantine),
                "used_clusters": len(used),
                "dropped_clusters": len(dropped),
                "bad_inputs": bad,
                "overwhelmed": bad > tolerated_corrupted(count - len(dropped)),
                "liars_count": len(record.get("liars") or []),
                "named_liars": sorted(record.get("liars") or []),
                "lying_faulty": sorted(faulty & liars),
                "detection_precision": (record.get("detection") or {}).get("precision"),
                "detection_recall": (record.get("detection") or {}).get("recall"),
            }
        )
    return rows


def tolerated_corrupted(num_clusters: int, breakdown: float = BREAKDOWN) -> int:
    return max(0, math.ceil(breakdown * num_clusters) - 1)


def _overwhelmed(row: dict[str, Any]) -> bool:
    if "overwhelmed" in row:
        return bool(row["overwhelmed"])
    return bool(row["corrupted_clusters"] > tolerated_corrupted(row["num_clusters"]))


def cell_metrics(rows: list[dict[str, Any]], scenario: dict[str, Any]) -> dict[str, Any]:
    """Seed-level scalars: final accuracy, cost, measured and predicted failure rates."""
    metrics: dict[str, Any] = {}
    nodes = scenario.get("nodes")
    clustering = scenario.get("clustering") or {}
    metrics["strategy"] = clustering.get("strategy")
    metrics["cluster_size"] = clustering.get("cluster_size")
    metrics["nodes"] = nodes
    metrics["secure"] = (scenario.get("aggregation") or {}).get("secure", "none")
    metrics["behaviours"] = behaviours(scenario)
    last_round = None
    if rows:
        metrics["final_accuracy"] = rows[-1]["accuracy"]
        metrics["round_seconds"] = statistics.fmean(r["duration_s"] or 0.0 for r in rows)
        metrics["bytes_sent"] = statistics.fmean(r["bytes_sent_total"] for r in rows)
        if isinstance(nodes, int) and nodes > 0:
            metrics["bytes_per_peer"] = metrics["bytes_sent"] / nodes
        metrics["digests_identical"] = all(r["digests_identical"] for r in rows)
        counted = [r for r in rows if r["faulty_nodes"] > 0] or rows
        overwhelmed = sum(_overwhelmed(r) for r in counted)
        metrics["counted_rounds"] = len(counted)
        metrics["overwhelmed_rounds"] = overwhelmed
        metrics["failed_round_rate"] = overwhelmed / len(counted)
        metrics["corrupted_fraction"] = statistics.fmean(
            r["corrupted_clusters"] / max(1, r["num_clusters"]) for r in counted
        )
        metrics["failed_cluster_fraction"] = statistics.fmean(
            r["failed_clusters_count"] / max(1, r["num_clusters"]) for r in counted
        )
        last_round = max(int(r["round"]) for r in counted)
        metrics.update(detection_metrics(rows))
        metrics["by_round"] = [round_outcome(r) for r in counted]
    metrics.update(predicted_metrics(scenario, last_round=last_round))
    return metrics


def round_outcome(row: dict[str, Any]) -> dict[str, Any]:
    """One counted round as the by-round view of a map needs it (`experiments.tolerance`): was
    it overwhelmed, how many clusters outside the quarantine had no output, how many were
    dropped (the quarantine clusters of `isolate`), the bad inputs of the outer rule (failed or
    corrupted, `round_rows`), and the liars named."""
    named = set(row.get("named_liars") or [])
    lying = set(row.get("lying_faulty") or [])
    return {
        "round": int(row["round"]),
        "overwhelmed": _overwhelmed(row),
        "clusters": int(row["num_clusters"]),
        "failed_clusters": int(row.get("failed_outside_quarantine", row["failed_clusters_count"])),
        "dropped_clusters": int(row.get("dropped_clusters") or 0),
        "bad_inputs": int(row.get("bad_inputs") or 0),
        "liars_named": len(named),
        "liars_named_lying": len(named & lying),
        "liars_in_force": len(lying),
    }


def detection_metrics(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Who the honest nodes name, against who is faulty.

    - ``detection_precision`` / ``detection_recall``: group testing (`clustering.trust`), the
      suspected set after the last round against the Byzantine set, as the summary records it.
    - ``liar_precision`` / ``liar_recall``: the holders named by Berlekamp-Welch or by a failed
      share check (``liars`` in the round records), pooled over the rounds, against the lying
      holders in force; present when some round had a lying holder or named one.
    """
    metrics: dict[str, Any] = {}
    last = rows[-1]
    if last.get("detection_precision") is not None:
        metrics["detection_precision"] = last["detection_precision"]
        metrics["detection_recall"] = last["detection_recall"]
    named = sum(len(r.get("named_liars") or []) for r in rows)
    lying = sum(len(r.get("lying_faulty") or []) for r in rows)
    if named or lying:
        hits = sum(
            len(set(r.get("named_liars") or []) & set(r.get("lying_faulty") or [])) for r in rows
        )
        metrics["liar_precision"] = hits / named if named else 1.0
        metrics["liar_recall"] = hits / lying if lying else 1.0
        # the counts, so that seeds can be pooled (`experiments.tolerance`)
        metrics["liars_named"] = named
        metrics["liars_named_lying"] = hits
        metrics["liars_in_force"] = lying
    return metrics


def predicted_law(strategy: Any, last_round: int | None) -> str | None:
    """Which law predicts a cell of `strategy` whose counted rounds end at `last_round`."""
    if strategy in ANALYTIC_STRATEGIES:
        return LAWS[strategy]
    if strategy in SHUFFLE_STRATEGIES and last_round is not None and last_round <= TRUST_LAG:
        return LAWS[strategy]
    return None


def cluster_thresholds(scenario: dict[str, Any]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The cluster sizes of the scenario's n and k, and each cluster's corruption threshold:
    the lying-holder threshold when every faulty node is a lying Shamir holder (r + 1 when they
    collude: past the r lies it corrects, the decoder yields no sum or a wrong one), else 1."""
    from phalanx.clustering.strategies import cluster_sizes

    sizes = cluster_sizes(int(scenario["nodes"]), int(scenario["clustering"]["cluster_size"]))
    faulty = set(fault_schedule(scenario))
    if faulty and faulty <= lying_holders(scenario, COLLUDING_HOLDER_LIES):
        # r + 1 colluders take the output away: no output up to c - 1, a wrong one from c on
        return sizes, tuple(corrected_lies(scenario, size) + 1 for size in sizes)
    if faulty and faulty <= lying_holders(scenario):
        return sizes, tuple(corruption_threshold(scenario, size) for size in sizes)
    return sizes, tuple(1 for _ in sizes)


@dataclass(frozen=True)
class HolderLaw:
    """Random lying holders (`HOLDER_LIES`) in ``shamir`` clusters: the partial sums each
    cluster's reconstruction needs (T = t + l - 1, one per cluster) and the publishers that
    reconstruct it. See the module docstring for the law."""

    needed: tuple[int, ...]
    publishers: int


def holder_law(scenario: dict[str, Any]) -> HolderLaw | None:
    """The `HolderLaw` of the scenario when every faulty node is a lying Shamir holder."""
    faulty = set(fault_schedule(scenario))
    if not faulty or not faulty <= lying_holders(scenario, HOLDER_LIES):
        return None
    from phalanx.clustering.strategies import cluster_sizes
    from phalanx.mpc.session import default_threshold

    clustering = scenario.get("clustering") or {}
    aggregation = scenario.get("aggregation") or {}
    sizes = cluster_sizes(int(scenario["nodes"]), int(clustering["cluster_size"]))
    packing = int(aggregation.get("packing") or 1)
    threshold = int(aggregation.get("threshold") or 0)
    needed = tuple((threshold or default_threshold("shamir", size)) + packing - 1 for size in sizes)
    return HolderLaw(needed, int(clustering.get("publishers") or 2))


def holder_failure_weights(size: int, needed: int, publishers: int) -> tuple[int, ...]:
    """P(no output | e lying holders) for e = 0..size, each times C(size, publishers).

    Berlekamp-Welch corrects r = floor((size - needed)/2) lies; a lying publisher sees one lie
    fewer (its own partial sum is true), so the cluster fails at e = r + 1 only when all its
    publishers are honest, and always from e = r + 2 on.
    """
    radius = max(0, size - needed) // 2
    publishers = min(publishers, size)
    scale = math.comb(size, publishers)
    return tuple(
        0 if e <= radius else math.comb(size - e, publishers) if e == radius + 1 else scale
        for e in range(size + 1)
    )


@functools.lru_cache(maxsize=64)
def _holder_table(sizes: tuple[int, ...], law: HolderLaw) -> tuple[tuple[int, ...], ...]:
    """table[a][x] * prod_j C(s_j, p_j) = the number of ways (placements of a liars, weighted by
    the publisher draws) in which exactly x clusters yield no output."""
    table: dict[int, dict[int, int]] = {0: {0: 1}}
    for size, needed in zip(sizes, law.needed, strict=True):
        weights = holder_failure_weights(size, needed, law.publishers)
        scale = math.comb(size, min(law.publishers, size))
        grown: dict[int, dict[int, int]] = {}
        for used, row in table.items():
            for liars in range(size + 1):
                ways = math.comb(size, liars)
                fail, keep = weights[liars] * ways, (scale - weights[liars]) * ways
                cell = grown.setdefault(used + liars, {})
                for bad, count in row.items():
                    if keep:
                        cell[bad] = cell.get(bad, 0) + count * keep
                    if fail:
                        cell[bad + 1] = cell.get(bad + 1, 0) + count * fail
        table = grown
    return tuple(
        tuple(table.get(used, {}).get(bad, 0) for bad in range(len(sizes) + 1))
        for used in range(sum(sizes) + 1)
    )


def holder_distribution(
    sizes: tuple[int, ...], law: HolderLaw, faulty: int
) -> tuple[Fraction, ...]:
    """P(exactly x clusters yield no output), x = 0..m, for `faulty` lying holders placed by a
    uniform random partition with these sizes, exactly."""
    row = _holder_table(sizes, law)[faulty]
    scale = math.comb(sum(sizes), faulty)
    for size in sizes:
        scale *= math.comb(size, min(law.publishers, size))
    return tuple(Fraction(count, scale) for count in row)


def predict(
    sizes: tuple[int, ...],
    thresholds: tuple[int, ...],
    faulty: int,
    law: str,
    holders: HolderLaw | None = None,
) -> tuple[Fraction, Fraction]:
    """(P(outer aggregation overwhelmed), expected corrupted fraction) under `law`, exactly;
    with `holders`, the lying-holder law replaces the thresholds (the worst case then takes
    r + 1 liars per cluster, all publishers honest)."""
    from phalanx.clustering.analysis import (
        corruption_distribution,
        max_tolerated_corrupted,
        worst_case_placement,
    )

    tolerated = max_tolerated_corrupted(len(sizes), Fraction(BREAKDOWN))
    if holders is not None:
        if law == LAWS["static"]:
            thresholds = tuple(
                max(0, size - needed) // 2 + 1
                for size, needed in zip(sizes, holders.needed, strict=True)
            )
        else:
            pmf = holder_distribution(sizes, holders, faulty)
            overwhelm = sum(pmf[tolerated + 1 :], Fraction(0))
            expected = sum((x * p for x, p in enumerate(pmf)), Fraction(0))
            return overwhelm, expected / len(sizes)
    if law == LAWS["static"]:
        worst = worst_case_placement(sizes, thresholds, faulty)
        return Fraction(int(worst.corrupted > tolerated)), Fraction(worst.corrupted, len(sizes))
    distribution = corruption_distribution(sizes, thresholds, faulty)
    return distribution.overwhelm_probability(Fraction(BREAKDOWN)), distribution.expected_fraction()


def predicted_metrics(scenario: dict[str, Any], *, last_round: int | None = None) -> dict[str, Any]:
    """The analytic prediction for this scenario (see the module docstring), or only the
    fault count when no law applies."""
    clustering = scenario.get("clustering") or {}
    strategy = clustering.get("strategy")
    nodes = scenario.get("nodes")
    size = clustering.get("cluster_size")
    if not isinstance(nodes, int) or not isinstance(size, int):
        return {}
    faulty = min(len(fault_schedule(scenario)), nodes)
    result: dict[str, Any] = {"faulty_nodes": faulty, "fault_fraction": faulty / nodes}
    if strategy not in ANALYTIC_STRATEGIES and last_round is None:
        # called without rounds (the scenario alone): the shuffle law needs the rounds known
        return result
    law = predicted_law(strategy, last_round)
    if law is None:
        return result
    sizes, thresholds = cluster_thresholds(scenario)
    holders = holder_law(scenario)
    overwhelm, fraction = predict(sizes, thresholds, faulty, law, holders)
    if holders is not None:
        result["holder_law"] = {"needed": list(holders.needed), "publishers": holders.publishers}
    result.update(
        {
            "predicted_law": law,
            "corrupt_thresholds": {
                str(size): threshold for size, threshold in zip(sizes, thresholds, strict=True)
            },
            "predicted_failed_round_rate": float(overwhelm),
            "predicted_corrupted_fraction": float(fraction),
        }
    )
    return result
