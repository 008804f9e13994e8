"""The cluster-sum attack columns of `phalanx bench privacy` and its ``--merge`` of an old map."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from phalanx.adversary.inversion.experiment import victim_model
from phalanx.adversary.inversion.metrics import psnr
from phalanx.adversary.inversion.priors import auxiliary_split
from phalanx.adversary.inversion.targets import fedavg_update, flatten
from phalanx.bench.bench_privacy import (
    MergeError,
    Setting,
    attack_defense,
    cluster_sum_attack,
    cluster_victims,
    load_map,
    main,
    merge_cluster_columns,
)
from phalanx.learning.data import Dataset, load_dataset
from phalanx.mpc import FixedPointConfig, secure_sum

LR = 0.05
CLIP_GAUSS = Setting("clip-gauss z=0.01", {"update": "clip-gauss:clip=2,z=0.01"})


@pytest.fixture(scope="module")
def mnist() -> Dataset:
    torch.set_num_threads(1)
    return load_dataset("mnist5k")


def _row(label: str, defense: dict[str, Any], k: int, alpha: float) -> dict[str, Any]:
    return {
        "label": label,
        "defense": defense,
        "alpha": alpha,
        "cluster_size": k,
        "nodes": 8,
        "rounds": 5,
        "accuracy": 0.8 + k / 100 + alpha / 1000,
        "epsilon": None,
        "psnr_idlg": 140.0 + k,
        "psnr_ig": 35.0,
        "epsilon_reported_by_nodes": True,
        "accuracy_byzantine": 0.4,
    }


def _old_map() -> dict[str, Any]:
    """A map as the bench wrote it before the cluster-sum columns existed."""
    rows = [_row("none", {}, k, alpha) for alpha in (0.1, 1.0) for k in (1, 4)]
    return {
        "command": "phalanx bench privacy --ig",
        "description": "old map",
        "methods": ["idlg", "ig"],
        "rows": rows,
        "total_seconds": 12.0,
    }


def test_cluster_column_attacks_the_mpc_sum_of_the_members_defended_updates(
    mnist: Dataset,
) -> None:
    k = 4
    result = cluster_sum_attack(CLIP_GAUSS, "idlg", mnist, "mlp", k, 1, 3, LR, seed=0)

    # Recompute independently what the aggregator should see: each member's own one-step FedAvg
    # delta on its own image, defended by its own node defense, summed by mpc.secure_sum.
    aux_index, _ = auxiliary_split(len(mnist.train_x))
    model = victim_model("mlp", mnist, 0, False, aux_index)
    images, labels = cluster_victims(mnist, k, 1, seed=0)[0]
    rows = []
    for member in range(k):
        defend = attack_defense(CLIP_GAUSS, LR, 0, node_index=member, num_nodes=k)
        assert defend is not None
        delta = fedavg_update(
            model, images[member : member + 1], labels[member : member + 1], 1, LR
        )
        rows.append(flatten(defend(delta)))
    defended = np.stack(rows)
    decoded = secure_sum(defended, mode="shamir").value
    assert decoded is not None
    attacked = result["attacked_sums"][0]

    assert np.array_equal(attacked, decoded)  # exactly what mpc.secure_sum decodes
    fixed_point = FixedPointConfig()
    plain = np.clip(defended, -fixed_point.clip, fixed_point.clip).sum(axis=0)
    assert np.max(np.abs(attacked - plain)) <= k * 2.0 ** -(fixed_point.frac_bits + 1) + 1e-12
    # A sum, not one member's update: every member contributes.
    for member in range(k):
        assert np.linalg.norm(attacked - defended[member]) > 0.1 * np.linalg.norm(defended[member])
    # The members draw independent noise (different node indices).
    assert not np.allclose(defended[0] - defended[1], 0.0)

    # The score is the best match over the k victims.
    reconstruction = result["reconstructions"][0]
    scores = [psnr(images[j], reconstruction) for j in range(k)]
    assert result["best_psnr"][0] == pytest.approx(max(scores))
    assert result["matched_member"][0] == int(np.argmax(scores))
    assert result["median_psnr"] == pytest.approx(max(scores))


def test_cluster_victims_start_with_the_member_columns_victims(mnist: Dataset) -> None:
    clusters = cluster_victims(mnist, 4, 3, seed=0)
    _, victim_index = auxiliary_split(len(mnist.train_x))
    pool = victim_index[np.random.default_rng(0).permutation(len(victim_index))]
    for c, (images, _) in enumerate(clusters):
        assert np.array_equal(images[0], mnist.train_x[pool[c]])
    every = np.concatenate([images for images, _ in clusters])
    assert len({every[i].tobytes() for i in range(len(every))}) == 12  # 12 distinct victims
    with pytest.raises(ValueError, match="k >= 2"):
        cluster_victims(mnist, 1, 3, seed=0)


def test_merge_keeps_every_field_and_adds_the_cluster_columns() -> None:
    old = _old_map()
    merged = merge_cluster_columns(old, {("none", "idlg", 4): 9.5}, ["idlg", "ig"])

    assert old == _old_map()  # the input is not modified
    assert len(merged["rows"]) == len(old["rows"])
    for before, after in zip(old["rows"], merged["rows"], strict=True):
        assert {k: after[k] for k in before} == before
        assert set(after) - set(before) == {"psnr_idlg_cluster_sum", "psnr_ig_cluster_sum"}
        if before["cluster_size"] == 1:
            assert after["psnr_idlg_cluster_sum"] == before["psnr_idlg"]
            assert after["psnr_ig_cluster_sum"] == before["psnr_ig"]
        else:
            assert after["psnr_idlg_cluster_sum"] == 9.5
            assert after["psnr_ig_cluster_sum"] is None  # not measured
    for key in old:
        if key != "rows":
            assert merged[key] == old[key]
    assert merged["cluster_methods"] == ["idlg", "ig"]

    # A later merge that measures only IG keeps the iDLG column of the first.
    again = merge_cluster_columns(merged, {("none", "ig", 4): 20.0}, ["ig"])
    k4 = [row for row in again["rows"] if row["cluster_size"] == 4]
    assert all(r["psnr_idlg_cluster_sum"] == 9.5 and r["psnr_ig_cluster_sum"] == 20.0 for r in k4)
    assert again["cluster_methods"] == ["idlg", "ig"]


def test_merge_command_adds_columns_without_testbeds(tmp_path: Path) -> None:
    source = tmp_path / "old.json"
    source.write_text(json.dumps(_old_map()))
    docs = tmp_path / "docs"
    status = main(
        [
            "privacy",
            "--merge",
            str(source),
            "--docs",
            str(docs),
            "--cluster-sizes",
            "4",
            "--images",
            "1",
        ]
    )
    assert status == 0
    merged = json.loads((docs / "privacy_utility.json").read_text())
    old = _old_map()
    for before, after in zip(old["rows"], merged["rows"], strict=True):
        assert {k: after[k] for k in before} == before
        expected = before["psnr_idlg"] if before["cluster_size"] == 1 else None
        if expected is not None:
            assert after["psnr_idlg_cluster_sum"] == expected
        else:
            assert isinstance(after["psnr_idlg_cluster_sum"], float)
            assert 0.0 < after["psnr_idlg_cluster_sum"] < 200.0
    assert merged["merge_commands"] == [
        "phalanx bench privacy --merge docs/privacy_utility.json --cluster-sizes 4 --images 1"
    ]
    assert set(merged["blank_image_psnr"]) == {"1", "4"}
    markdown = (docs / "privacy_utility.md").read_text()
    assert "idlg PSNR cluster sum (dB)" in markdown and "idlg PSNR member (dB)" in markdown
    assert merged["merge_commands"][0] in markdown
    assert (docs / "privacy_utility.png").stat().st_size > 0
    assert not (docs / "privacy_utility.cluster.partial.jsonl").exists()


def test_merge_refuses_a_missing_file_or_a_map_without_rows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.json"
    with pytest.raises(MergeError, match="no such file"):
        load_map(missing)
    assert main(["privacy", "--merge", str(missing), "--docs", str(tmp_path / "d")]) == 2
    assert "no such file" in " ".join(capsys.readouterr().out.split())  # rich wraps lines
    assert not (tmp_path / "d").exists()  # nothing written

    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(MergeError, match="not valid JSON"):
        load_map(broken)
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({**_old_map(), "rows": []}))
    with pytest.raises(MergeError, match="no 'rows'"):
        load_map(empty)
    no_methods = tmp_path / "other.json"
    no_methods.write_text(json.dumps({"rows": [1]}))
    with pytest.raises(MergeError, match="not a privacy map"):
        load_map(no_methods)
    lacking = _old_map()
    del lacking["rows"][1]["psnr_idlg"]
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps(lacking))
    with pytest.raises(MergeError, match="row 1 lacks psnr_idlg"):
        load_map(partial)
    old = tmp_path / "old.json"
    old.write_text(json.dumps(_old_map()))
    assert main(["privacy", "--merge", str(old), "--only", "ghost", "--docs", str(tmp_path)]) == 2
    assert "ghost not in" in " ".join(capsys.readouterr().out.split())


def test_cluster_methods_flag_refuses_unknown_methods() -> None:
    with pytest.raises(SystemExit):
        main(["privacy", "--merge", "x.json", "--cluster-methods", "idlg,dlg"])


def test_full_run_writes_both_columns_side_by_side(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    status = main(
        [
            "privacy",
            "--skip-testbed",
            "--only",
            "none",
            "--alphas",
            "1.0",
            "--cluster-sizes",
            "1,4",
            "--nodes",
            "4",
            "--images",
            "1",
            "--docs",
            str(docs),
        ]
    )
    assert status == 0
    report = json.loads((docs / "privacy_utility.json").read_text())
    k1, k4 = report["rows"]
    assert (k1["cluster_size"], k4["cluster_size"]) == (1, 4)
    assert k1["psnr_idlg_cluster_sum"] == k1["psnr_idlg"] == k4["psnr_idlg"]
    # Undefended, one image in the clear is recovered; the sum of 4 is not the same picture.
    assert k1["psnr_idlg"] > 40.0
    assert k4["psnr_idlg_cluster_sum"] < k4["psnr_idlg"]
    assert report["cluster_methods"] == ["idlg"]
    assert "mpc.secure_sum" in report["cluster_description"]
