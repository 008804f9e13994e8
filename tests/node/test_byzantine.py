"""Byzantine peers lying on the wire, in real node processes."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

BASE = [
    "nodes = 6",
    "rounds = 3",
    "nodes_per_process = 2",
    "seed = 3",
    "[data]",
    'dataset = "mnist5k"',
    'partition = "iid"',
    "[model]",
    'name = "mlp"',
    "[clustering]",
    "cluster_size = 2",
    "[timeouts]",
    "collect_s = 4",
]


def _run(tmp_path: Path, phalanx, name: str, *extra: str, lines: tuple[str, ...] = ()) -> dict:
    scenario = tmp_path / f"{name}.toml"
    scenario.write_text("\n".join([*BASE, *lines]) + "\n")
    out = tmp_path / name
    result = phalanx("testbed", "run", str(scenario), *extra, "--out", str(out), timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return dict(json.loads((out / "summary.json").read_text()))


def test_equivocating_publisher_is_dropped_and_honest_models_stay_identical(
    tmp_path: Path, phalanx
) -> None:
    summary = _run(
        tmp_path,
        phalanx,
        "equivocate",
        lines=(
            "[[byzantine]]",
            'behaviour = "equivocate"',
            'nodes = ["node-00"]',
        ),
    )
    assert summary["byzantine"] == {"node-00": "equivocate"}
    for record in summary["rounds"]:
        assert "node-00" not in record["honest_digests"]
        assert record["digests_identical"], record["honest_digests"]
        assert record["cluster_outputs"]["0"]["publisher"] == "node-01"
    node_log = (tmp_path / "equivocate" / "nodes" / "node-02.jsonl").read_text()
    assert '"equivocating_publishers": ["node-00"]' in node_log


@pytest.mark.slow
@pytest.mark.parametrize("phase", ["train", "share", "agree", "partial", "publish"])
def test_a_crash_at_each_mpc_phase_still_completes_the_round(
    tmp_path: Path, phalanx, phase: str
) -> None:
    summary = _run(
        tmp_path,
        phalanx,
        f"crash-{phase}",
        "--secure",
        "shamir",
        # One node per process: the crash is a SIGKILL of the Byzantine node's own process.
        "--nodes-per-process",
        "1",
        "--cluster-size",
        "3",
        lines=(
            "[aggregation]",
            "threshold = 2",
            "[[byzantine]]",
            f'behaviour = "crash:phase={phase}"',
            'nodes = ["node-01"]',
            "start_round = 2",
        ),
    )
    rounds = {r["round"]: r for r in summary["rounds"]}
    assert sorted(rounds) == [1, 2, 3]
    for r in (2, 3):
        assert rounds[r]["digests_identical"]
        assert len(rounds[r]["honest_digests"]) == 5
        assert rounds[r]["failed_clusters"] == []
    assert rounds[3]["excluded"] == ["node-01"]


@pytest.mark.slow
# Nine testbed runs in a row: past the suite's 300 s on 2 loaded cores.
@pytest.mark.timeout(900)
def test_attacks_hurt_fedavg_and_a_robust_rule_resists(tmp_path: Path, phalanx) -> None:
    clean = _run(tmp_path, phalanx, "clean", "--cluster-size", "1")["final_accuracy"]
    damaged = {}
    for attack in (
        "sign-flip:factor=5",
        "scaling:factor=-20",
        "gaussian:std=5",
        "ipm:epsilon=5",
        "label-flip",
    ):
        name = attack.split(":")[0]
        summary = _run(
            tmp_path, phalanx, f"mean-{name}", "--cluster-size", "1", "--byzantine", f"2:{attack}"
        )
        damaged[name] = summary["final_accuracy"]
    assert all(accuracy < clean for accuracy in damaged.values()), (clean, damaged)
    for attack in ("sign-flip:factor=5", "ipm:epsilon=5", "alie"):
        name = attack.split(":")[0]
        robust = _run(
            tmp_path,
            phalanx,
            f"tm-{name}",
            "--cluster-size",
            "1",
            "--byzantine",
            f"{2 if name == 'alie' else 1}:{attack}",
            "--rule",
            "trimmed-mean",
        )["final_accuracy"]
        assert robust >= clean - 0.03, (name, robust, clean)


def test_trust_singles_out_the_attacker_and_isolate_quarantines_it(tmp_path: Path, phalanx) -> None:
    summary = _run(
        tmp_path,
        phalanx,
        "isolate",
        "--cluster-size",
        "1",
        "--strategy",
        "isolate",
        "--rounds",
        "5",
        "--byzantine",
        "1:sign-flip:factor=5",
        "--rule",
        "trimmed-mean",
    )
    (attacker,) = summary["byzantine"]
    rounds = {r["round"]: r for r in summary["rounds"]}
    last = rounds[5]
    assert attacker in last["trust_suspected"] and last["detection"]["recall"] == 1.0, last
    # Scores of round r-2 place the suspected attacker in a quarantine cluster, dropped.
    quarantined = {node for c in last["quarantined_clusters"] for node in last["clusters"][c]}
    assert attacker in quarantined, last
    # A quarantine cluster that produced its output is dropped, not failed.
    assert not set(last["quarantined_clusters"]) & set(last["failed_clusters"]), last
    # Every honest node holds the same scores (they come from agreed outputs only).
    out = tmp_path / "isolate" / "nodes"
    scores = {
        path.stem: [
            json.loads(line)["trust"]["scores"]
            for line in path.read_text().splitlines()
            if '"event": "round"' in line
        ]
        for path in out.glob("*.jsonl")
        if path.stem != attacker
    }
    assert len({json.dumps(s, sort_keys=True) for s in scores.values()}) == 1


def test_omniscient_attacker_recomputes_the_honest_updates_exactly(tmp_path: Path, phalanx) -> None:
    # mimic:target=0 sends the first row of the attack's honest view. With --omniscient that view
    # is recomputed from the public seeds, so the sent update must equal, bit for bit, the update
    # one honest node really trained (the audit saves every node's own sent update).
    summary = _run(
        tmp_path,
        phalanx,
        "omniscient",
        "--rounds",
        "1",
        "--byzantine",
        "1:mimic:target=0",
        "--omniscient",
        "--audit-traffic",
    )
    (attacker,) = summary["byzantine"]
    audit = tmp_path / "omniscient" / "audit"
    own = {path.parent.name: np.load(path) for path in audit.glob("*/own-r1-update.npy")}
    assert len(own) == 6
    honest = {name: update for name, update in own.items() if name != attacker}
    assert all(not np.array_equal(a, b) for a, b in itertools.combinations(honest.values(), 2)), (
        "honest updates coincide: the check below would prove nothing"
    )
    copied = [name for name, update in honest.items() if np.array_equal(update, own[attacker])]
    assert copied == [min(honest)], (attacker, copied)


def test_one_colluder_without_omniscient_and_a_lone_omniscient_flag_are_refused(
    tmp_path: Path, phalanx
) -> None:
    scenario = tmp_path / "one.toml"
    scenario.write_text("\n".join(BASE) + "\n")
    alone = phalanx(
        "testbed", "run", str(scenario), "--byzantine", "1:alie", "--out", str(tmp_path / "a")
    )
    assert alone.returncode == 2
    assert "omniscient" in alone.stderr and "2 colluders" in alone.stderr
    lone_flag = phalanx(
        "testbed", "run", str(scenario), "--omniscient", "--out", str(tmp_path / "b")
    )
    assert lone_flag.returncode == 2
    assert "--omniscient applies to --byzantine entries" in lone_flag.stderr
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
