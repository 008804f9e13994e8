"""Spec validation, cell expansion, metrics, statistics and the SQLite store (no processes)."""

from __future__ import annotations

import csv
import json
import math
import sqlite3
import tomllib
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from phalanx.clustering.analysis import analyze_clusters
from phalanx.experiments.metrics import cell_metrics, fault_schedule, round_rows
from phalanx.experiments.runner import cell_processes, default_jobs, kill_flags, prepare_cell_dir
from phalanx.experiments.spec import SpecError, load_spec, parse_spec, resolve_spec
from phalanx.experiments.stats import mean_ci
from phalanx.experiments.store import CellRecord, ResultStore

SPECS = Path(__file__).resolve().parents[2] / "experiments" / "specs"

BASE: dict[str, Any] = {
    "nodes": 4,
    "rounds": 2,
    "data": {"dataset": "digits"},
    "model": {"name": "mlp"},
    "clustering": {"cluster_size": 2},
}


def spec_of(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "base": BASE,
        "axes": {"clustering.strategy": ["static", "random"]},
        "seeds": [1, 2],
    }
    data.update(overrides)
    return data


def resolve(data: dict[str, Any], quick: bool = False) -> Any:
    return resolve_spec(parse_spec(data), quick=quick)


@pytest.mark.parametrize(
    ("data", "named"),
    [
        (spec_of(colour="red"), "colour: unknown key"),
        (spec_of(kind="simulation"), "kind"),
        (spec_of(metrics=["accuracy", "speed"]), "unknown metric 'speed'"),
        (spec_of(seeds=[]), "seeds"),
        (spec_of(seeds=[1, 1]), "seeds must be distinct"),
        (spec_of(heatmap=["clustering.strategy", "nodes"]), "'nodes', which is not an axis"),
        (spec_of(quick={"rounds": 1}), "quick.rounds: unknown key"),
    ],
)
def test_bad_spec_fields_are_named(data: dict[str, Any], named: str) -> None:
    with pytest.raises(SpecError, match=named):
        resolve(data)


def test_axis_key_the_scenario_lacks_is_named() -> None:
    data = spec_of(axes={"adversaries": [[], ["node-01"]]})
    with pytest.raises(SpecError, match=r"adversaries: unknown key"):
        resolve(data)
    with pytest.raises(SpecError, match=r"clustering\.colour: unknown key"):
        resolve(spec_of(axes={"clustering.colour": ["red"]}))


def test_axis_value_the_scenario_refuses_is_named() -> None:
    with pytest.raises(SpecError, match=r"cluster_size=9.*larger than nodes"):
        resolve(spec_of(axes={"clustering.cluster_size": [2, 9]}))
    with pytest.raises(SpecError, match=r"base\.nodes"):
        resolve(spec_of(base={**BASE, "nodes": 0}))


def test_empty_axis_and_missing_quick_are_refused() -> None:
    with pytest.raises(SpecError, match=r"axes\.clustering\.strategy: needs at least one value"):
        resolve(spec_of(axes={"clustering.strategy": []}))
    with pytest.raises(SpecError, match=r"quick: this spec has no \[quick\] table"):
        resolve(spec_of(), quick=True)
    with pytest.raises(SpecError, match=r"quick\.axes\.rounds: not an axis"):
        resolve(spec_of(quick={"axes": {"rounds": [1]}}), quick=True)


def test_cells_are_the_product_of_axes_and_seeds_in_a_fixed_order() -> None:
    data = spec_of(
        axes={
            "clustering.strategy": ["static", "random"],
            "faults": {"none": [], "one": [{"round": 1, "action": "kill", "nodes": ["node-01"]}]},
        }
    )
    first, second = resolve(data), resolve(data)
    assert [c.id for c in first.cells] == [c.id for c in second.cells]
    assert len(first.cells) == 2 * 2 * 2
    assert len({c.id for c in first.cells}) == 8
    cell = first.cells[-1]
    assert cell.labels == {"clustering.strategy": "random", "faults": "one"}
    assert cell.seed == 2 and cell.params["seed"] == 2
    assert cell.params["clustering"]["strategy"] == "random"
    assert cell.params["faults"][0]["nodes"] == ["node-01"]
    assert first.cells[0].params_hash != first.cells[1].params_hash


def test_quick_overrides_shrink_the_grid() -> None:
    data = spec_of(
        quick={
            "overrides": {"rounds": 1},
            "seeds": [5],
            "axes": {"clustering.strategy": ["random"]},
        }
    )
    full, quick = resolve(data), resolve(data, quick=True)
    assert len(full.cells) == 4 and len(quick.cells) == 1
    assert quick.cells[0].params["rounds"] == 1 and quick.cells[0].seed == 5
    assert full.fingerprint != quick.fingerprint


def test_bundled_cluster_study_and_privacy_specs_validate() -> None:
    quick = load_spec(SPECS / "cluster-study.toml", quick=True)
    full = load_spec(SPECS / "cluster-study.toml")
    assert len(full.cells) > len(quick.cells) >= 8
    assert all(c.params["data"]["dataset"] == "digits" for c in quick.cells)
    privacy = load_spec(SPECS / "privacy-utility.toml", quick=True)
    assert privacy.kind == "inversion" and privacy.cells


def test_robustness_spec_validates_or_names_the_missing_key() -> None:
    try:
        resolved = load_spec(SPECS / "robustness.toml", quick=True)
    except SpecError as error:
        pytest.skip(f"scenario lacks a key the robustness study needs: {error}")
        assert "unknown key" in str(error)
    assert resolved.cells


def test_bad_spec_file_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("seeds = [1\n")
    with pytest.raises(SpecError, match=r"bad\.toml: invalid TOML"):
        load_spec(path)
    path.write_text('base = "missing.toml"\n')
    with pytest.raises(SpecError, match=r"missing\.toml: no such file"):
        load_spec(path)


def test_default_jobs_follows_processes_per_cell() -> None:
    many = resolve(spec_of(base={**BASE, "nodes": 6}))
    few = resolve(spec_of(base={**BASE, "nodes": 4, "nodes_per_process": 4}))
    assert default_jobs(many, cores=2) == 1
    assert default_jobs(few, cores=2) == 2
    assert default_jobs(many, cores=16) == 4  # 16 // 3 = 5, capped by the 4 cells


def test_kill_faults_become_testbed_flags() -> None:
    scenario = {
        "faults": [
            {"round": 1, "action": "kill", "nodes": ["node-01", "node-03"]},
            {"round": 2, "action": "delay", "nodes": ["node-02"]},
        ]
    }
    assert kill_flags(scenario) == ["--kill", "node-01@1", "--kill", "node-03@1"]
    assert fault_schedule(scenario) == {"node-01": 2, "node-03": 2}


def summary_with(clusters: list[list[str]], failed: list[int]) -> dict[str, Any]:
    record = {
        "accuracy": 0.5,
        "loss": 1.0,
        "duration_s": 2.0,
        "bytes_sent": {"node-00": 10, "node-01": 5},
        "excluded": [],
        "flagged_clusters": [],
        "failed_clusters": failed,
        "clusters": clusters,
        "digests_identical": True,
    }
    return {"rounds": [{**record, "round": 1}, {**record, "round": 2, "accuracy": 0.7}]}


def test_measured_failures_count_clusters_with_faulty_members() -> None:
    scenario = {
        "nodes": 6,
        "clustering": {"strategy": "random", "cluster_size": 2},
        "faults": [{"round": 1, "action": "kill", "nodes": ["node-00", "node-05"]}],
    }
    clusters = [["node-00", "node-01"], ["node-02", "node-03"], ["node-04", "node-05"]]
    rows = round_rows(summary_with(clusters, failed=[1]), scenario)
    assert [r["faulty_nodes"] for r in rows] == [0, 2]
    assert rows[1]["clusters_with_faulty"] == 2 and rows[1]["corrupted_clusters"] == 3
    assert rows[0]["corrupted_clusters"] == 1 and rows[0]["bytes_sent_total"] == 15
    metrics = cell_metrics(rows, scenario)
    # only round 2 has a fault in force: 3 corrupted of 3 > ceil(3/2) - 1 = 1 tolerated
    assert metrics["failed_round_rate"] == 1.0 and metrics["corrupted_fraction"] == 1.0
    assert metrics["final_accuracy"] == 0.7
    expected = analyze_clusters(6, 2, 2, strategy="random", corrupt_threshold=1, breakdown=0.5)
    assert metrics["predicted_failed_round_rate"] == pytest.approx(
        float(expected.overwhelm_probability())
    )
    assert metrics["predicted_corrupted_fraction"] == pytest.approx(
        float(expected.expected_fraction())
    )
    assert "predicted_failed_round_rate" not in cell_metrics(
        rows, {**scenario, "clustering": {"strategy": "locality", "cluster_size": 2}}
    )


def test_mean_ci_uses_student_t() -> None:
    stat = mean_ci([1.0, 2.0, 3.0])
    # t_{0.975, 2} = 4.302653 (tables), s = 1
    assert stat.mean == 2.0 and stat.half_width == pytest.approx(4.302653 / math.sqrt(3), 1e-6)
    assert math.isnan(mean_ci([0.3]).half_width) and mean_ci([0.3]).format() == "0.3000"
    with pytest.raises(ValueError, match="level must be in"):
        mean_ci([1.0, 2.0], level=1.5)


def record(cell_id: str, rounds: list[dict[str, Any]]) -> CellRecord:
    return CellRecord(
        id=cell_id,
        cell_index=int(cell_id[1:]),
        axes={"clustering.strategy": "static"},
        labels={"clustering.strategy": "static"},
        seed=1,
        status="ok",
        error=None,
        scenario_hash="h",
        final_accuracy=0.5,
        final_digest="d",
        digests_identical=True,
        duration_s=1.0,
        versions={"torch": "x"},
        git_commit=None,
        metrics={"final_accuracy": 0.5},
        rounds=rounds,
    )


def test_store_writes_a_cell_atomically_and_exports_csv(tmp_path: Path) -> None:
    with ResultStore(tmp_path) as store:
        store.record_cell(record("c1", [{"round": 1, "accuracy": 0.4}, {"round": 2}]))
        with pytest.raises(sqlite3.IntegrityError):  # duplicate round: the whole cell rolls back
            store.record_cell(record("c2", [{"round": 1}, {"round": 1}]))
        store.record_cell(record("c1", [{"round": 1, "accuracy": 0.6}]))  # replaced, not doubled
        assert store.finished_ids() == {"c1"}
        (stored,) = store.cells()
        assert [r["accuracy"] for r in stored.rounds] == [0.6]
        cells_csv, rounds_csv = store.export_csv(tmp_path)
    assert (
        sqlite3.connect(tmp_path / "results.sqlite").execute("PRAGMA journal_mode").fetchone()[0]
        == "wal"
    )
    rows = list(csv.DictReader(cells_csv.open()))
    assert len(rows) == 1 and rows[0]["axis:clustering.strategy"] == "static"
    assert [r["round"] for r in csv.DictReader(rounds_csv.open())] == ["1"]


def test_engine_enters_a_cell_only_where_the_spec_sets_it() -> None:
    plain, memory = resolve(spec_of()), resolve(spec_of(engine="memory"))
    assert all("engine" not in c.params for c in plain.cells)
    assert [c.id for c in memory.cells] == [c.id for c in plain.cells]
    assert all(c.params["engine"] == "memory" for c in memory.cells)
    assert memory.fingerprint != plain.fingerprint
    for before, after in zip(plain.cells, memory.cells, strict=True):
        assert {k: v for k, v in after.params.items() if k != "engine"} == before.params
    # a memory-engine cell is one process, whatever its nodes per process
    one_each = {**BASE, "nodes_per_process": 1}
    assert default_jobs(resolve(spec_of(base=one_each)), cores=4) == 2
    assert default_jobs(resolve(spec_of(base=one_each, engine="memory")), cores=4) == 4
    assert cell_processes("testbed", {**BASE, "nodes_per_process": 1}) == 4
    assert cell_processes("testbed", {**BASE, "nodes_per_process": 1, "engine": "memory"}) == 1


def test_engine_as_an_axis_and_as_a_quick_override() -> None:
    data = spec_of(
        axes={"engine": {"mem": "memory", "rpc": "grpc"}},
        quick={"overrides": {"engine": "memory"}, "axes": {"engine": ["memory"]}},
    )
    full = resolve(data)
    assert [(c.labels["engine"], c.params["engine"]) for c in full.cells] == [
        ("mem", "memory"),
        ("mem", "memory"),
        ("rpc", "grpc"),
        ("rpc", "grpc"),
    ]
    assert len({c.id for c in full.cells}) == 4
    quick = resolve(spec_of(quick={"overrides": {"engine": "memory", "rounds": 1}}), quick=True)
    assert all(c.params["engine"] == "memory" and c.params["rounds"] == 1 for c in quick.cells)
    assert quick.base.get("engine") is None


@pytest.mark.parametrize(
    ("data", "quick", "named"),
    [
        (spec_of(engine="tcp"), False, r"engine: must be one of 'grpc', 'memory', got 'tcp'"),
        (spec_of(axes={"engine": ["memory", "udp"]}), False, r"axes\.engine: must be one of"),
        (spec_of(quick={"overrides": {"engine": 3}}), True, r"quick\.overrides\.engine: must"),
        (spec_of(base={**BASE, "engine": "memory"}), False, r"base\.engine: not a scenario key"),
        (
            {"kind": "inversion", "engine": "memory", "base": {"method": "idlg"}},
            False,
            r"engine: only testbed sweeps",
        ),
        (
            {"kind": "inversion", "axes": {"engine": ["memory"]}},
            False,
            r"axes\.engine: unknown key for an inversion cell",
        ),
    ],
)
def test_bad_engines_are_named(data: dict[str, Any], quick: bool, named: str) -> None:
    with pytest.raises(SpecError, match=named):
        resolve(data, quick=quick)


def test_the_engine_goes_to_the_command_not_the_scenario_file(tmp_path: Path) -> None:
    cell = resolve(spec_of(engine="memory")).cells[0]
    prepare_cell_dir(tmp_path / "cell", "testbed", cell.params)
    assert "engine" not in (tmp_path / "cell" / "scenario.toml").read_text()
    assert json.loads((tmp_path / "cell" / "params.json").read_text())["engine"] == "memory"


def test_each_attack_is_paired_with_the_clean_run_of_its_seed() -> None:
    import dataclasses

    from phalanx.experiments.report import group_configurations, paired_baseline_table

    def cell(byzantine: str, size: str, seed: int, accuracy: float) -> CellRecord:
        labels = {"byzantine": byzantine, "clustering.cluster_size": size}
        return dataclasses.replace(
            record(f"c{seed}", []),
            labels=labels,
            axes=labels,
            seed=seed,
            metrics={"final_accuracy": accuracy},
        )

    records = [
        *(cell("none", "5", s, a) for s, a in ((1, 0.8), (2, 0.6), (3, 0.7))),
        *(cell("ipm", "5", s, a) for s, a in ((1, 0.5), (2, 0.5), (3, 0.8))),
        cell("ipm", "10", 1, 0.1),  # no clean run at k = 10: nothing to pair with
    ]
    configs = group_configurations(records, ["byzantine", "clustering.cluster_size"])
    _, _, row = paired_baseline_table(configs)
    stat = mean_ci([0.5 - 0.8, 0.5 - 0.6, 0.8 - 0.7])
    assert row == f"| byzantine=ipm, cluster_size=5 | 3 | {stat.format(4)} | 2 of 3 |"
    assert paired_baseline_table([c for c in configs if c.name.startswith("byzantine=ipm")]) == []


@pytest.mark.parametrize("path", sorted(SPECS.glob("*.toml")), ids=lambda p: p.name)
def test_every_bundled_spec_resolves_to_valid_cells(path: Path) -> None:
    """A bundled spec that a config change broke fails here, not an hour into a sweep."""
    full = load_spec(path)
    assert full.cells and len({cell.id for cell in full.cells}) == len(full.cells)
    if "quick" in tomllib.loads(path.read_text()):
        quick = load_spec(path, quick=True)
        assert 0 < len(quick.cells) <= len(full.cells)
    else:
        with pytest.raises(SpecError, match="no \\[quick\\] table"):
            load_spec(path, quick=True)


def write_toml(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


PARENT_SPEC = """
name = "parent"
seeds = [1, 2]
metrics = ["final_accuracy"]
[base]
name = "parent"
nodes = 4
rounds = 2
[base.data]
dataset = "digits"
[base.model]
name = "mlp"
[base.training]
epochs = 1
batch_size = 16
[base.clustering]
cluster_size = 2
[axes]
"clustering.strategy" = ["static", "random"]
"aggregation.rule" = ["mean", "median"]
[quick]
seeds = [1]
"""


def test_extends_merges_base_replaces_named_axes_and_keeps_the_rest(tmp_path: Path) -> None:
    write_toml(tmp_path / "parent.toml", PARENT_SPEC)
    child = write_toml(
        tmp_path / "child.toml",
        'extends = "parent.toml"\nname = "child"\n'
        "[base]\nnodes = 6\n[base.training]\nbatch_size = 5\n"
        '[axes]\n"aggregation.rule" = ["trimmed-mean"]\n"rounds" = [1, 3]\n',
    )
    resolved = load_spec(child)
    assert resolved.spec.name == "child" and resolved.seeds == [1, 2]
    assert resolved.spec.metrics == ["final_accuracy"]
    assert list(resolved.axes) == ["clustering.strategy", "aggregation.rule", "rounds"]
    assert [v for _, v in resolved.axes["aggregation.rule"]] == ["trimmed-mean"]
    assert len(resolved.cells) == 2 * 1 * 2 * 2
    params = resolved.cells[0].params
    assert params["nodes"] == 6
    # the nested table merged: batch_size replaced, epochs inherited
    assert params["training"]["batch_size"] == 5 and params["training"]["epochs"] == 1
    assert params["data"]["dataset"] == "digits"
    assert load_spec(child, quick=True).seeds == [1]  # [quick] inherited whole


def test_a_spec_extending_another_with_its_own_values_has_the_same_grid(tmp_path: Path) -> None:
    parent = write_toml(tmp_path / "parent.toml", PARENT_SPEC)
    child = write_toml(tmp_path / "sub" / "same.toml", 'extends = "../parent.toml"\n')
    assert load_spec(child).fingerprint == load_spec(parent).fingerprint


def test_extends_chains_and_reads_a_parent_base_file_relative_to_the_parent(
    tmp_path: Path,
) -> None:
    write_toml(
        tmp_path / "scenarios" / "small.toml",
        'nodes = 4\nrounds = 2\n[data]\ndataset = "digits"\n[model]\nname = "mlp"\n'
        "[clustering]\ncluster_size = 2\n",
    )
    write_toml(
        tmp_path / "a.toml",
        'base = "scenarios/small.toml"\n[axes]\n"clustering.strategy" = ["static", "random"]\n',
    )
    write_toml(tmp_path / "specs" / "b.toml", 'extends = "../a.toml"\nseeds = [7]\n')
    c = write_toml(tmp_path / "specs" / "c.toml", 'extends = "b.toml"\n[base]\nnodes = 8\n')
    resolved = load_spec(c)
    assert resolved.seeds == [7]
    assert {cell.params["nodes"] for cell in resolved.cells} == {8}
    assert {cell.params["rounds"] for cell in resolved.cells} == {2}


def test_extends_errors_name_the_file_and_the_cycle(tmp_path: Path) -> None:
    missing = write_toml(tmp_path / "orphan.toml", 'extends = "nowhere.toml"\n')
    with pytest.raises(SpecError, match=r"nowhere\.toml: no such file"):
        load_spec(missing)
    write_toml(tmp_path / "x.toml", 'extends = "y.toml"\n')
    y = write_toml(tmp_path / "y.toml", 'extends = "x.toml"\n')
    with pytest.raises(SpecError, match="extends: a cycle"):
        load_spec(y)
    bad = write_toml(tmp_path / "bad.toml", "extends = 3\n")
    with pytest.raises(SpecError, match="extends: must be the path of a spec file"):
        load_spec(bad)
    broken_parent = write_toml(tmp_path / "p.toml", 'colour = "red"\n')
    child = write_toml(tmp_path / "q.toml", f'extends = "{broken_parent.name}"\n')
    with pytest.raises(SpecError, match="colour: unknown key"):
        load_spec(child)


def test_the_n300_specs_differ_from_their_n100_parents_only_where_they_say() -> None:
    parent = load_spec(SPECS / "suspicion-map.toml").cells[0].params
    child = load_spec(SPECS / "suspicion-map-300.toml").cells[0].params
    differing = {key for key in parent if parent[key] != child[key]}
    assert differing == {"name", "nodes", "byzantine"}
    assert child["nodes"] == 300 and child["byzantine"][0]["count"] == 90


def finished(cell: Any) -> CellRecord:
    return CellRecord(
        id=cell.id,
        cell_index=cell.index,
        axes=cell.axes,
        labels=cell.labels,
        seed=cell.seed,
        status="ok",
        error=None,
        scenario_hash=cell.params_hash,
        final_accuracy=0.5,
        final_digest="d",
        digests_identical=True,
        duration_s=1.0,
        versions={},
        git_commit=None,
        metrics={"final_accuracy": 0.5},
        rounds=[{"round": 1, "accuracy": 0.5}],
    )


def test_reuse_copies_the_unchanged_cells_of_an_earlier_grid(tmp_path: Path) -> None:
    from phalanx.experiments.runner import reuse_cells

    old_grid = resolve(spec_of())
    old_dir = tmp_path / "old"
    with ResultStore(old_dir) as old:
        for cell in old_grid.cells:
            old.record_cell(finished(cell))
            (old_dir / "cells" / cell.id).mkdir(parents=True)
            (old_dir / "cells" / cell.id / "summary.json").write_text(cell.id)
        broken = old_grid.cells[1]
        old.record_cell(replace(finished(broken), scenario_hash="another scenario"))
    # one value appended to the only axis: the first four cells keep their ids
    wider = resolve(spec_of(axes={"clustering.strategy": ["static", "random", "balanced"]}))
    assert [c.id for c in wider.cells[:4]] == [c.id for c in old_grid.cells]
    new_dir = tmp_path / "new"
    with ResultStore(new_dir) as store:
        assert reuse_cells(wider, store, new_dir, old_dir) == 3
        assert store.finished_ids() == {c.id for c in old_grid.cells} - {broken.id}
        assert reuse_cells(wider, store, new_dir, old_dir) == 0  # already there
    kept = old_grid.cells[0].id
    assert (new_dir / "cells" / kept / "summary.json").read_text() == kept
    assert not (new_dir / "cells" / broken.id).exists()
    with ResultStore(new_dir) as store, pytest.raises(ValueError, match="not a results folder"):
        reuse_cells(wider, store, new_dir, tmp_path / "nowhere")
