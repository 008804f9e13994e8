"""The robustness study specs expand into valid scenarios with f = 1, 2, 3 Byzantine nodes."""

from __future__ import annotations

from pathlib import Path

import pytest

from phalanx.experiments.spec import load_spec
from phalanx.node.config import byzantine_nodes, parse_scenario, tolerated_faults
from phalanx.node.testbed import node_ids

ROOT = Path(__file__).resolve().parents[2]


def test_full_spec_has_every_f_and_resolves_that_many_byzantine_nodes() -> None:
    resolved = load_spec(ROOT / "experiments/specs/robustness.toml")
    assert len(resolved.cells) == 200
    seen: dict[str, int] = {}
    for cell in resolved.cells:
        scenario = parse_scenario(cell.params)
        chosen = byzantine_nodes(scenario, node_ids(scenario.nodes))
        label = cell.labels["byzantine"]
        expected = 0 if label == "none" else int(label.rsplit("=", 1)[1])
        assert len(chosen) == expected, label
        # The rule is told the Byzantine count; the mean takes no f (the undefended baseline).
        declared = 0 if scenario.aggregation.rule == "mean" else expected
        assert tolerated_faults(scenario) == declared, label
        assert scenario.nodes == 14 and scenario.data.dataset == "mnist5k"
        seen[label] = expected
    assert sorted(set(seen.values())) == [0, 1, 2, 3]
    rules = {
        (c.params["aggregation"]["rule"], tuple(c.params["aggregation"]["pre"]))
        for c in resolved.cells
    }
    assert ("trimmed-mean", ("nnm",)) in rules and ("krum", ()) in rules


@pytest.mark.parametrize(
    ("name", "cells"),
    [("run-main.toml", 40), ("run-f.toml", 4), ("run-noclusters.toml", 6)],
)
def test_run_subsets_load(name: str, cells: int) -> None:
    assert len(load_spec(ROOT / "docs/robustness" / name).cells) == cells


def test_quick_form_is_small() -> None:
    quick = load_spec(ROOT / "experiments/specs/robustness.toml", quick=True)
    assert len(quick.cells) == 6
    assert all(c.params["nodes"] == 6 and c.params["rounds"] == 2 for c in quick.cells)
