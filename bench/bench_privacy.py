"""The privacy–utility–robustness map (issue 7, item 6): ``phalanx bench privacy``.

For each defense setting (a `node.defenses.DefenseConfig`) it measures, in one run:

- utility: a real testbed run (``python -m node testbed run SCENARIO --no-metrics``) of the base
  scenario with a ``[defense]`` table, reading ``final_accuracy`` from ``summary.json``; once
  without and once with one Byzantine ``sign-flip`` node (robustness);
- privacy against attacks: iDLG (and IG with ``--ig``, the diffusion-prior attack with
  ``--diffusion``) against the defended update of one victim image, through
  `adversary.inversion.run_experiment` with a defense callable built from
  `NodeDefense.protect`; the median PSNR over the victims;
- the (eps, delta) spent per node, from the nodes' ``privacy`` records when the node reports them,
  else from the same accountants (`NodeDefense.privacy_report`, DP-SGD by `gaussian_epsilon` at
  the smallest node's sampling rate, the worst case).

Threat model of the attack column: the aggregator sees the victim's FedAvg delta after one local
SGD step on one image (``--target fedavg:1`` at the scenario's learning rate), in the clear (a
cluster of one), defended exactly as the node releases it. DP-SGD on a single image for one step is
``clip(-lr g, lr C) + N(0, (z lr C)^2 I)``, so its attack column uses ``clip-gauss:clip=lr*C,z=z``.

Attack columns "as the aggregator sees it" (``psnr_<method>_cluster_sum``, iDLG and, with
``--ig``/``--diffusion``, IG and the diffusion prior): for k > 1 the aggregator of a k-member
cluster sees under MPC only the cluster sum ``S = sum_i D_i(delta_i)`` of the k members' defended
FedAvg deltas, each from a different victim image, each defended by its own `NodeDefense`
(node index i, so independent noise), summed by ``mpc.secure_sum`` in ``shamir`` mode with the
nodes' default fixed point (clip 4, 16 fractional bits) through
`adversary.inversion.targets.observed_cluster_sum`. The attacker knows k and inverts ``S / k`` as
one FedAvg delta of one image (the rule of ``--target cluster-sum:K`` in docs/inversion.md). Its
score is its best case: for each cluster ``max_j PSNR(x_j, x_hat)`` over the k victims x_j, and
the column is the median of that over the clusters. For k = 1 there is no sum (MPC refuses a
cluster of one): the column is the member column, copied. ``--merge PATH`` adds only these
columns to an existing map (no testbed, no member attack) and rewrites the .json, .md and .png.

``--jobs J`` runs J testbeds (threads around subprocesses) and J attack processes at once; each
finished measurement is appended to ``privacy_utility.partial.jsonl`` first, so an interrupted
map keeps what it measured. It writes ``docs/privacy_utility.md`` (table and command),
``docs/privacy_utility.png`` (accuracy against PSNR, eps annotated) and
``docs/privacy_utility.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import subprocess
import sys
import tempfile
import time
import tomllib
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import tomli_w
from rich.console import Console
from rich.table import Table

from phalanx.bench.arguments import int_list
from phalanx.learning.data import Dataset, load_dataset

if TYPE_CHECKING:
    import torch

    from phalanx.adversary.inversion.knowledge import Defense
    from phalanx.node.defenses import DefenseConfig

# torch, the attacks and the node's defenses load in the functions that use them, so that
# `phalanx bench privacy --help` loads none of them.

REPO = Path(__file__).resolve().parent.parent
DEFAULT_BASE = REPO / "node" / "scenarios" / "default.toml"
CLUSTER_MPC_MODE = "shamir"
"""Mode of the cluster sum the new columns attack: Shamir, the nodes' MPC default; the map's
testbeds run ``secure = "none"``, where the aggregator would see each member in the clear."""


@dataclass(frozen=True)
class Setting:
    """One row of the map: a label and the ``[defense]`` table (empty: no defense)."""

    label: str
    defense: dict[str, Any] = field(default_factory=dict)

    @property
    def config(self) -> DefenseConfig:
        from phalanx.node.defenses import DefenseConfig

        return DefenseConfig(**self.defense)


def default_settings(rounds: int) -> list[Setting]:
    """The settings of the map; ``forward-dp`` is calibrated to the run's number of rounds."""
    return [
        Setting("none"),
        Setting("clip-gauss z=0.002", {"update": "clip-gauss:clip=2,z=0.002"}),
        Setting("clip-gauss z=0.01", {"update": "clip-gauss:clip=2,z=0.01"}),
        Setting("forward t=500", {"update": "forward:t=500"}),
        Setting("forward-dp eps=50", {"update": f"forward-dp:eps=50,rounds={rounds},clip=2"}),
        Setting("prune 0.9", {"update": "prune:ratio=0.9"}),
        Setting("dpsgd z=0.7", {"dpsgd": True, "noise_multiplier": 0.7, "max_grad_norm": 1.0}),
    ]


# ------------------------------------------------------------------------------- testbed


def scenario_for(
    base: dict[str, Any],
    setting: Setting,
    *,
    nodes: int,
    rounds: int,
    model: str,
    alpha: float,
    cluster_size: int,
    eval_samples: int,
    byzantine: bool,
) -> dict[str, Any]:
    """The base scenario with this run's sizes, a ``[defense]`` table and optional sign-flip."""
    scenario = json.loads(json.dumps(base))  # deep copy of plain TOML data
    scenario.update(
        name=f"privacy-{setting.label}".replace(" ", "-"),
        nodes=nodes,
        rounds=rounds,
        nodes_per_process=nodes,
    )
    scenario.setdefault("data", {}).update(
        dataset="mnist5k", partition="dirichlet", alpha=alpha, eval_samples=eval_samples
    )
    scenario.setdefault("model", {})["name"] = model
    scenario.setdefault("clustering", {})["cluster_size"] = cluster_size
    scenario.setdefault("aggregation", {}).update(secure="none")
    # A table equal to the defaults is left out, so undefended runs need no [defense] support.
    if setting.defense:
        scenario["defense"] = dict(setting.defense)
    else:
        scenario.pop("defense", None)
    scenario.pop("byzantine", None)
    if byzantine:
        scenario["byzantine"] = [{"behaviour": "sign-flip", "count": 1}]
    return scenario


def run_testbed(scenario: dict[str, Any], work: Path, timeout_s: float) -> dict[str, Any]:
    """Run one testbed and return its summary plus the nodes' last ``privacy`` records."""
    work.mkdir(parents=True, exist_ok=True)
    path, out = work / "scenario.toml", work / "out"
    path.write_text(tomli_w.dumps(scenario))
    command = [
        sys.executable,
        "-m",
        "phalanx.node",
        "testbed",
        "run",
        str(path),
        "--out",
        str(out),
        "--no-metrics",
    ]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout_s)
    summary_path = out / "summary.json"
    if result.returncode != 0 or not summary_path.exists():
        raise RuntimeError(
            f"testbed failed ({result.returncode}) for {path}:\n"
            f"{result.stdout[-1500:]}{result.stderr[-1500:]}"
        )
    summary = dict(json.loads(summary_path.read_text()))
    privacy: dict[str, dict[str, Any]] = {}
    for node_file in sorted((out / "nodes").glob("*.jsonl")):
        rounds = [json.loads(line) for line in node_file.read_text().splitlines() if line.strip()]
        reports = [r["privacy"] for r in rounds if r.get("event") == "round" and "privacy" in r]
        if reports:
            privacy[node_file.stem] = reports[-1]
    summary["node_privacy"] = privacy
    return summary


def spent_epsilon(
    setting: Setting, summary: dict[str, Any], rounds: int, epochs: int, batch_size: int, nodes: int
) -> float | None:
    """The largest eps any node spent: from its records, else recomputed from the accountants."""
    from phalanx.defense import gaussian_epsilon
    from phalanx.defense.dpsgd import dpsgd_sample_rate
    from phalanx.node.defenses import NodeDefense

    reported = [r.get("epsilon") for r in summary.get("node_privacy", {}).values()]
    if reported:
        finite = [e for e in reported if e is not None]
        return max(finite) if len(finite) == len(reported) else None
    config = setting.config
    candidates: list[float] = []
    ledger = NodeDefense(config, node_index=0, seed=0, num_nodes=nodes)
    for round_ in range(1, rounds + 1):
        ledger.protect(np.zeros(8, dtype=np.float32), round_)
    update_epsilon = ledger.privacy_report()["update_epsilon"]
    if update_epsilon is not None:
        candidates.append(update_epsilon)
    if config.dpsgd:
        samples = min(int(n["samples"]) for n in summary["nodes"].values())
        if samples > 0:
            steps_per_epoch = math.ceil(samples / batch_size)
            candidates.append(
                gaussian_epsilon(
                    config.noise_multiplier,
                    dpsgd_sample_rate(samples, batch_size),
                    rounds * epochs * steps_per_epoch,
                    config.delta,
                    config.accountant,
                )
            )
    finite = [e for e in candidates if math.isfinite(e)]
    return min(finite) if finite else None


# ------------------------------------------------------------------------------- attacks


def attack_defense(
    setting: Setting, lr: float, seed: int, node_index: int = 0, num_nodes: int = 1
) -> Defense | None:
    """The defense callable the attack sees: `NodeDefense.protect` of node `node_index` on the
    flattened update (each call is the next round, so repeated calls draw fresh noise)."""
    import torch

    from phalanx.node.defenses import DefenseConfig, NodeDefense

    config = setting.config
    if config.dpsgd:
        dp_spec = f"clip-gauss:clip={lr * config.max_grad_norm!r},z={config.noise_multiplier!r}"
        stages = [dp_spec] + ([config.update] if config.update.strip() != "none" else [])
        config = DefenseConfig(update="+".join(stages), delta=config.delta)
    if config.update.strip() == "none":
        return None
    node = NodeDefense(config, node_index=node_index, seed=seed, num_nodes=num_nodes)
    calls = [0]

    def defend(update: list[torch.Tensor]) -> list[torch.Tensor]:
        calls[0] += 1
        flat = np.concatenate([t.detach().double().reshape(-1).numpy() for t in update])
        released = node.protect(flat.astype(np.float32), round_=calls[0])
        out, offset = [], 0
        for tensor in update:
            n = tensor.numel()
            piece = torch.from_numpy(released[offset : offset + n].copy())
            out.append(piece.reshape(tensor.shape).to(tensor.dtype))
            offset += n
        return out

    return defend


def attack_psnr(
    setting: Setting,
    method: str,
    dataset: Dataset,
    model: str,
    images: int,
    iterations: int | None,
    lr: float,
    seed: int,
    prior_cache: str | None = None,
    prior_steps: int | None = None,
) -> float:
    from phalanx.adversary.inversion.experiment import (
        ExperimentSpec,
        load_prior_for,
        run_experiment,
    )

    prior = None
    if method in ("gan", "diffusion"):
        prior, _, _ = load_prior_for(method, dataset, prior_steps, prior_cache, seed=seed)
    spec = ExperimentSpec(
        method=method,
        model=model,
        batch=1,
        images=images,
        target="fedavg:1",
        defense=attack_defense(setting, lr, seed),
        iterations=iterations,
        seed=seed,
        lr=lr,
        prior_steps=prior_steps,
    )
    return float(run_experiment(spec, dataset, prior=prior).median_psnr)


def _attack_job(
    setting: Setting,
    method: str,
    model: str,
    images: int,
    iterations: int | None,
    lr: float,
    seed: int,
    prior_cache: str | None,
    prior_steps: int | None,
) -> float:
    """One attack cell in a worker process (spawned: it loads mnist5k and the prior itself)."""
    import torch

    torch.set_num_threads(1)
    dataset = load_dataset("mnist5k")
    return attack_psnr(
        setting, method, dataset, model, images, iterations, lr, seed, prior_cache, prior_steps
    )


# ------------------------------------------------------------------------------- cluster sum


@dataclass(frozen=True)
class ClusterObservation:
    """What the aggregator of one cluster sees: ``summed``, the decoded MPC sum of the rows of
    ``defended`` (each member's defended FedAvg delta, kept for the checks)."""

    defended: np.ndarray
    summed: np.ndarray


def member_defenses(setting: Setting, lr: float, seed: int, k: int) -> list[Defense | None]:
    """One defense per member of a k-cluster: node indices 0..k-1, so their noise is independent."""
    return [attack_defense(setting, lr, seed, node_index=i, num_nodes=k) for i in range(k)]


def observe_cluster_sum(
    model: torch.nn.Module,
    members: list[tuple[np.ndarray, np.ndarray]],
    defenses: list[Defense | None],
    lr: float,
    mode: str = CLUSTER_MPC_MODE,
) -> ClusterObservation:
    """``S = sum_i D_i(w_1^i - w_0)``: each member's one-step FedAvg delta on its own batch,
    defended by its own `D_i`, summed by ``mpc.secure_sum`` (fixed point, so S is within
    ``k 2^-(f+1)`` of the float sum of the clipped rows)."""
    from phalanx.adversary.inversion.targets import fedavg_update, flatten, observed_cluster_sum

    if len(members) < 2:
        raise ValueError(f"a cluster sum needs k >= 2 members, got {len(members)}")
    if len(defenses) != len(members):
        raise ValueError(f"{len(members)} members but {len(defenses)} defenses")
    rows = []
    for (images, labels), defend in zip(members, defenses, strict=True):
        delta = fedavg_update(model, images, labels, 1, lr)
        rows.append(flatten(delta if defend is None else defend(delta)))
    defended = np.stack(rows)
    observed = observed_cluster_sum(defended, mode)
    if not observed.used_secure_sum:
        raise RuntimeError(
            "mpc.secure_sum is not importable: the cluster sum would be in the clear"
        )
    return ClusterObservation(defended, observed.value)


def cluster_victims(
    dataset: Dataset, k: int, clusters: int, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Victim images of each cluster, ``(images (k, C, H, W), labels (k,))``.

    Member 0 of cluster c is the c-th victim of the member column (`run_experiment`'s seeded
    permutation of the victim split); the other k - 1 follow the first ``clusters`` images, as
    ``--target cluster-sum:K`` draws them."""
    from phalanx.adversary.inversion.priors import auxiliary_split

    if k < 2 or clusters < 1:
        raise ValueError(f"need k >= 2 and clusters >= 1, got k={k}, clusters={clusters}")
    _, victim_index = auxiliary_split(len(dataset.train_x))
    pool = victim_index[np.random.default_rng(seed).permutation(len(victim_index))]
    if clusters * k > len(pool):
        raise ValueError(
            f"{clusters} clusters of {k} need {clusters * k} victims, have {len(pool)}"
        )
    out = []
    for c in range(clusters):
        start = clusters + c * (k - 1)
        chosen = np.concatenate([pool[c : c + 1], pool[start : start + k - 1]])
        out.append((dataset.train_x[chosen], dataset.train_y[chosen]))
    return out


def best_match_psnr(victims: np.ndarray, reconstruction: np.ndarray) -> tuple[float, int]:
    """The attacker's best case over a cluster: ``max_j PSNR(x_j, x_hat)`` and its member j."""
    from phalanx.adversary.inversion.metrics import psnr

    scores = [psnr(victim, reconstruction) for victim in victims]
    best = int(np.argmax(scores))
    return float(scores[best]), best


def cluster_sum_attack(
    setting: Setting,
    method: str,
    dataset: Dataset,
    model_name: str,
    k: int,
    clusters: int,
    iterations: int | None,
    lr: float,
    seed: int,
    prior: torch.nn.Module | None = None,
) -> dict[str, Any]:
    """Invert the defended MPC sum of `clusters` k-clusters; median of the best-match PSNRs.

    The attacker knows k, lr and the one-step FedAvg target, divides S by k and reconstructs one
    image (batch 1) with `method`, seeded as `run_experiment` seeds its batches. Returns the
    median, per cluster the best PSNR and its member, the attacked sums S and the images."""
    import torch

    from phalanx.adversary.inversion.attacks import invert
    from phalanx.adversary.inversion.experiment import victim_model
    from phalanx.adversary.inversion.knowledge import AttackerKnowledge, InversionConfig
    from phalanx.adversary.inversion.priors import auxiliary_split
    from phalanx.adversary.inversion.targets import unflatten

    aux_index, _ = auxiliary_split(len(dataset.train_x))
    model = victim_model(model_name, dataset, seed, False, aux_index)
    like = [p.detach() for p in model.parameters()]
    knowledge = AttackerKnowledge(
        batch_size=1,
        input_shape=dataset.input_shape,
        num_classes=dataset.num_classes,
        target_kind="fedavg",
        local_steps=1,
        lr=lr,
    )
    config = InversionConfig(iterations=iterations, prior=prior)
    defenses = member_defenses(setting, lr, seed, k)
    best: list[float] = []
    matched: list[int] = []
    attacked: list[np.ndarray] = []
    reconstructions: list[np.ndarray] = []
    for c, (images, labels) in enumerate(cluster_victims(dataset, k, clusters, seed)):
        members = [(images[i : i + 1], labels[i : i + 1]) for i in range(k)]
        observation = observe_cluster_sum(model, members, defenses, lr)
        mean = unflatten(observation.summed / k, like)
        generator = torch.Generator().manual_seed(seed * 100_003 + c)
        reconstruction = invert(method, model, mean, knowledge, config, generator)
        image = reconstruction.images.numpy()[0]
        score, member = best_match_psnr(images, image)
        best.append(score)
        matched.append(member)
        attacked.append(observation.summed)
        reconstructions.append(image)
    return {
        "median_psnr": float(np.median(best)),
        "best_psnr": best,
        "matched_member": matched,
        "attacked_sums": attacked,
        "reconstructions": reconstructions,
    }


def blank_image_reference(dataset: Dataset, k: int, clusters: int, seed: int) -> float:
    """Median best-of-k PSNR of an all-black "reconstruction": what the max over k victims gives
    without any attack (mnist's black background), the floor to read the columns against."""
    from phalanx.adversary.inversion.priors import auxiliary_split

    if k == 1:
        _, victim_index = auxiliary_split(len(dataset.train_x))
        pool = victim_index[np.random.default_rng(seed).permutation(len(victim_index))]
        victims = [dataset.train_x[pool[c : c + 1]] for c in range(clusters)]
    else:
        victims = [images for images, _ in cluster_victims(dataset, k, clusters, seed)]
    blank = np.zeros_like(victims[0][0])
    return float(np.median([best_match_psnr(v, blank)[0] for v in victims]))


def _cluster_attack_job(
    setting: Setting,
    method: str,
    model: str,
    k: int,
    clusters: int,
    iterations: int | None,
    lr: float,
    seed: int,
    prior_cache: str | None,
    prior_steps: int | None,
) -> float:
    """One cluster-sum cell in a worker process (or inline with ``--jobs 1``)."""
    import torch

    from phalanx.adversary.inversion.experiment import load_prior_for

    torch.set_num_threads(1)
    dataset = load_dataset("mnist5k")
    prior = None
    if method in ("gan", "diffusion"):
        prior, _, _ = load_prior_for(method, dataset, prior_steps, prior_cache, seed=seed)
    result = cluster_sum_attack(
        setting, method, dataset, model, k, clusters, iterations, lr, seed, prior
    )
    return float(result["median_psnr"])


# ------------------------------------------------------------------------------- report


def _chart(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6.4, 4.2))
    for key, marker, name in (
        ("accuracy", "o", "honest"),
        ("accuracy_byzantine", "x", "1 sign-flip node"),
    ):
        points = [(r["psnr_idlg"], r[key], r) for r in rows if r.get(key) is not None]
        if not points:
            continue
        axis.scatter([p[0] for p in points], [p[1] for p in points], marker=marker, label=name)
        if key == "accuracy":
            for x, y, row in points:
                eps = row["epsilon"]
                note = row["label"] + ("" if eps is None else f"\neps={eps:.3g}")
                axis.annotate(note, (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
    cluster_points = [
        (r["psnr_idlg_cluster_sum"], r["accuracy"])
        for r in rows
        if r["cluster_size"] > 1
        and r.get("accuracy") is not None
        and r.get("psnr_idlg_cluster_sum") is not None
    ]
    if cluster_points:
        axis.scatter(
            [p[0] for p in cluster_points],
            [p[1] for p in cluster_points],
            marker="s",
            facecolors="none",
            edgecolors="tab:green",
            label="honest, iDLG on the MPC cluster sum (k > 1)",
        )
    frontier = sorted(
        (r["psnr_idlg"], r["accuracy"]) for r in rows if r.get("accuracy") is not None
    )
    best, pareto = -1.0, []
    for x, y in frontier:  # low PSNR (private) and high accuracy (useful) both win
        if y > best:
            pareto.append((x, y))
            best = y
    if pareto:
        axis.plot(
            [p[0] for p in pareto], [p[1] for p in pareto], "--", alpha=0.5, label="Pareto front"
        )
    axis.axvline(15, color="grey", lw=0.8, ls=":")
    axis.set_xlabel("iDLG median PSNR (dB, lower = more private; front: member column)")
    axis.set_ylabel("final test accuracy")
    axis.set_title(title, fontsize=8)
    axis.grid(True, alpha=0.3)
    axis.legend(fontsize=7)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=130)
    plt.close(figure)


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if math.isfinite(value) else "inf"
    return str(value)


def _markdown(report: dict[str, Any]) -> str:
    methods = report["methods"]
    cluster_methods = report.get("cluster_methods", [])
    head = [
        "setting",
        "defense table",
        "k",
        "alpha",
        "eps (delta=1e-5)",
        "accuracy",
        "accuracy w/ sign-flip",
    ] + [f"{m} PSNR member (dB)" for m in methods]
    head += [f"{m} PSNR cluster sum (dB)" for m in cluster_methods]
    commands = ["```", report["command"], *report.get("merge_commands", []), "```"]
    lines = [
        "# Privacy–utility–robustness map (issue 7)",
        "",
        "Regenerate with (the first command runs the map; each further one adds cluster-sum "
        "columns to the JSON the previous one wrote):",
        "",
        *commands,
        "",
        f"{report['description']}",
        "",
    ]
    if cluster_methods:
        lines += [str(report["cluster_description"]), ""]
    lines += [
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for row in report["rows"]:
        cells = [
            row["label"],
            f"`{json.dumps(row['defense'])}`" if row["defense"] else "`{}`",
            str(row["cluster_size"]),
            _fmt(row["alpha"], 1),
            _fmt(row["epsilon"], 2),
            _fmt(row["accuracy"]),
            _fmt(row.get("accuracy_byzantine")),
        ]
        cells += [_fmt(row.get(f"psnr_{m}"), 1) for m in methods]
        cells += [_fmt(row.get(f"psnr_{m}_cluster_sum"), 1) for m in cluster_methods]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "![accuracy against iDLG PSNR](privacy_utility.png)", ""]
    references = report.get("blank_image_psnr", {})
    if references:
        shown = ", ".join(f"k={k}: {value:.1f} dB" for k, value in references.items())
        lines += [
            "Floor to read the PSNR columns against: the same score for an all-black "
            f'"reconstruction" (no attack; best of the k victims for k > 1): {shown}.',
            "",
        ]
    if report.get("notes"):  # hand-written reading of the numbers, kept by --merge
        lines += ["## Reading the cluster-sum columns", "", str(report["notes"]), ""]
    lines += [f"Total {report['total_seconds']:.0f} s on this machine.", ""]
    if report.get("merge_seconds"):
        lines += [
            f"Cluster-sum columns: {report['merge_seconds']:.0f} s more (all --merge runs).",
            "",
        ]
    return "\n".join(lines)


# ------------------------------------------------------------------------------- merge

REQUIRED_ROW_FIELDS = ("label", "defense", "alpha", "cluster_size", "accuracy", "psnr_idlg")


class MergeError(ValueError):
    """An existing map that ``--merge`` cannot extend (missing file, bad JSON, missing rows)."""


def load_map(path: str | Path) -> dict[str, Any]:
    """Read and check a ``privacy_utility.json``: a dict with ``methods`` and a non-empty ``rows``
    list whose rows carry `REQUIRED_ROW_FIELDS`; anything else raises `MergeError`."""
    file = Path(path)
    if not file.is_file():
        raise MergeError(f"--merge {path}: no such file (expected a privacy_utility.json)")
    try:
        report = json.loads(file.read_text())
    except json.JSONDecodeError as error:
        raise MergeError(f"--merge {path}: not valid JSON ({error})") from None
    if not isinstance(report, dict) or not isinstance(report.get("methods"), list):
        raise MergeError(f"--merge {path}: not a privacy map (no 'methods' list)")
    rows = report.get("rows")
    if not isinstance(rows, list) or not rows:
        raise MergeError(f"--merge {path}: no 'rows' to add columns to")
    for index, row in enumerate(rows):
        missing = [f for f in REQUIRED_ROW_FIELDS if not isinstance(row, dict) or f not in row]
        if missing:
            raise MergeError(f"--merge {path}: row {index} lacks {', '.join(missing)}")
        if not isinstance(row["cluster_size"], int) or row["cluster_size"] < 1:
            raise MergeError(
                f"--merge {path}: row {index} has cluster_size {row['cluster_size']!r}"
            )
    return report


def merge_cluster_columns(
    report: dict[str, Any],
    values: dict[tuple[str, str, int], float | None],
    methods: list[str],
) -> dict[str, Any]:
    """A copy of `report` whose rows gain ``psnr_<m>_cluster_sum`` for each method in `methods`.

    `values` maps (label, method, k) to the median PSNR of that cell. A k = 1 row copies its
    member column ``psnr_<m>`` (no sum exists). Columns already present and not recomputed are
    kept, and every other field is left as it was."""
    merged = json.loads(json.dumps(report))
    for row in merged["rows"]:
        for method in methods:
            column = f"psnr_{method}_cluster_sum"
            if row["cluster_size"] == 1:
                row[column] = row.get(f"psnr_{method}")
            elif (row["label"], method, row["cluster_size"]) in values:
                row[column] = values[(row["label"], method, row["cluster_size"])]
            else:
                row.setdefault(column, None)
    known = list(merged.get("cluster_methods", []))
    merged["cluster_methods"] = known + [m for m in methods if m not in known]
    return merged


def cluster_description(images: int, lr: float, iterations: dict[str, int | None]) -> str:
    """The text the .md prints above the table for the cluster-sum columns."""
    text = (
        "Cluster-sum columns (what the aggregator of a k-member cluster sees under MPC): for k > 1 "
        f"each of {images} clusters holds k victims, one image each; every member's one-step "
        f"FedAvg delta (lr={lr}) is defended by its own node defense (independent noise), the k "
        f"defended deltas are summed by `mpc.secure_sum` in `{CLUSTER_MPC_MODE}` mode (clip 4, "
        "16 fractional bits, the nodes' defaults), and the attacker inverts the sum divided by k "
        "as one image. Score, the attacker's best case: per cluster the PSNR of the "
        "reconstruction against the closest of its k victims (max over j), median over the "
        "clusters. The attack does not depend on alpha (untrained model, victims from the "
        "attacker-free split), so both alphas show the same value. k = 1: no sum exists (MPC "
        "refuses a cluster of one), so the column repeats the member column. `—`: not measured."
    )
    for method, count in iterations.items():
        if count is not None:
            text += f" {method}: {count} iterations."
    return text


def run_merge(args: argparse.Namespace, console: Console) -> int:
    """``--merge PATH``: add the cluster-sum columns to an existing map, no testbed re-run."""
    from phalanx.adversary.inversion.experiment import load_prior_for

    started = time.perf_counter()
    try:
        report = load_map(args.merge)
    except MergeError as error:
        console.print(str(error))
        return 2
    methods = args.cluster_methods or (
        ["idlg"] + (["ig"] if args.ig else []) + (["diffusion"] if args.diffusion else [])
    )
    base = tomllib.loads(Path(args.base).read_text())
    lr = float(base.get("training", {}).get("lr", 0.05))
    images = args.images or (4 if args.quick else 8)
    settings = {row["label"]: Setting(row["label"], row["defense"]) for row in report["rows"]}
    if args.only:
        unknown = sorted(set(args.only) - set(settings))
        if unknown:
            console.print(f"--only: {', '.join(unknown)} not in {args.merge}")
            return 2
    sizes = sorted({row["cluster_size"] for row in report["rows"] if row["cluster_size"] > 1})
    if args.cluster_sizes:
        sizes = [k for k in sizes if k in args.cluster_sizes]
    cells = [
        (settings[label], method, k)
        for label in settings
        if not args.only or label in args.only
        for method in methods
        for k in sizes
    ]
    iterations = {m: (args.ig_iterations if m == "ig" else None) for m in methods}
    if "diffusion" in methods:
        load_prior_for(
            "diffusion", load_dataset("mnist5k"), args.prior_steps, args.prior_cache, seed=args.seed
        )
    docs = Path(args.docs)
    docs.mkdir(parents=True, exist_ok=True)
    journal = docs / "privacy_utility.cluster.partial.jsonl"
    journal.write_text("")
    values: dict[tuple[str, str, int], float | None] = {}

    def job(setting: Setting, method: str, k: int) -> tuple[Any, ...]:
        return (
            _cluster_attack_job,
            setting,
            method,
            args.model,
            k,
            images,
            iterations[method],
            lr,
            args.seed,
            args.prior_cache,
            args.prior_steps,
        )

    def finish(key: tuple[str, str, int], value: float | None, error: BaseException | None) -> None:
        values[key] = value
        with journal.open("a") as handle:
            handle.write(json.dumps({"cluster": list(key), "psnr": value, "error": _error(error)}))
            handle.write("\n")
        shown = _error(error) if error else f"{value:.1f} dB"
        elapsed = time.perf_counter() - started
        console.print(f"[{len(values)}/{len(cells)} {elapsed:.0f} s] {key}: {shown}")

    if args.jobs == 1:
        for setting, method, k in cells:
            function, *arguments = job(setting, method, k)
            try:
                finish((setting.label, method, k), float(function(*arguments)), None)
            except Exception as error:  # one failed cell must not lose the others
                finish((setting.label, method, k), None, error)
    else:
        spawn = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(args.jobs, mp_context=spawn) as pool:
            futures = {pool.submit(*job(s, m, k)): (s.label, m, k) for s, m, k in cells}
            for future in as_completed(futures):
                failure = future.exception()
                finish(futures[future], None if failure else float(future.result()), failure)

    merged = merge_cluster_columns(report, values, methods)
    dataset = load_dataset("mnist5k")
    all_sizes = sorted({row["cluster_size"] for row in merged["rows"]})
    merged["blank_image_psnr"] = {
        str(k): blank_image_reference(dataset, k, images, args.seed) for k in all_sizes
    }
    merged["cluster_iterations"] = {**merged.get("cluster_iterations", {}), **iterations}
    merged["cluster_description"] = cluster_description(images, lr, merged["cluster_iterations"])
    command = "phalanx bench privacy --merge docs/privacy_utility.json" + _merge_flags(
        args, methods
    )
    merged["merge_commands"] = [*merged.get("merge_commands", []), command]
    merged["merge_seconds"] = float(merged.get("merge_seconds", 0.0)) + (
        time.perf_counter() - started
    )
    write_report(merged, docs, args.model)
    journal.unlink()
    console.print(f"merged {len(values)} cluster-sum cells into {docs / 'privacy_utility.json'}")
    return 0 if all(v is not None for v in values.values()) else 1


def _merge_flags(args: argparse.Namespace, methods: list[str]) -> str:
    flags = ""
    if args.cluster_methods:
        flags += " --cluster-methods " + ",".join(args.cluster_methods)
    else:
        flags += (" --ig" if args.ig else "") + (" --diffusion" if args.diffusion else "")
    if "ig" in methods:
        flags += f" --ig-iterations {args.ig_iterations}"
    if args.cluster_sizes:
        flags += " --cluster-sizes " + ",".join(map(str, args.cluster_sizes))
    if args.only:
        flags += " --only " + " ".join(f"'{label}'" for label in args.only)
    if args.images:
        flags += f" --images {args.images}"
    if args.jobs > 1:
        flags += f" --jobs {args.jobs}"
    return flags


def write_report(report: dict[str, Any], docs: Path, model: str) -> None:
    """Write ``privacy_utility.{json,md,png}`` of `report` into `docs`."""
    rows = report["rows"]
    (docs / "privacy_utility.json").write_text(json.dumps(report, indent=2) + "\n")
    (docs / "privacy_utility.md").write_text(_markdown(report))
    if any(r.get("accuracy") is not None and r.get("psnr_idlg") is not None for r in rows):
        nodes, rounds = rows[0].get("nodes"), rows[0].get("rounds")
        _chart(
            rows,
            docs / "privacy_utility.png",
            f"mnist5k/{model}, {nodes} nodes, {rounds} rounds: accuracy vs iDLG PSNR",
        )


# ------------------------------------------------------------------------------- driver


def run_bench(args: argparse.Namespace) -> int:
    import torch

    from phalanx.adversary.inversion.experiment import load_prior_for

    torch.set_num_threads(1)
    console = Console()
    started = time.perf_counter()
    if args.jobs < 1:
        console.print(f"--jobs must be >= 1, got {args.jobs}")
        return 2
    if args.merge is not None:
        return run_merge(args, console)
    base = tomllib.loads(Path(args.base).read_text())
    quick = args.quick
    nodes = args.nodes or (4 if quick else 8)
    rounds = args.rounds or (3 if quick else 5)
    alphas = args.alphas or ([1.0] if quick else [0.1, 1.0])
    cluster_sizes = args.cluster_sizes or ([4] if quick else [1, 4, 8])
    images = args.images or (4 if quick else 8)
    methods = ["idlg"] + (["ig"] if args.ig else []) + (["diffusion"] if args.diffusion else [])
    training = base.get("training", {})
    lr = float(training.get("lr", 0.05))
    settings = default_settings(rounds)
    if args.only:
        settings = [s for s in settings if s.label in args.only]
    docs = Path(args.docs)
    docs.mkdir(parents=True, exist_ok=True)
    if "diffusion" in methods:
        # Trained (or read from the cache) once, before the workers start, so that they all
        # find it in the cache.
        _, prior_path, cached = load_prior_for(
            "diffusion", load_dataset("mnist5k"), args.prior_steps, args.prior_cache, seed=args.seed
        )
        console.print(f"diffusion prior {'read from' if cached else 'trained into'} {prior_path}")

    # Results land in a journal as they come, so an interrupted map keeps what it measured.
    journal = docs / "privacy_utility.partial.jsonl"
    journal.write_text("")

    def record(entry: dict[str, Any]) -> None:
        with journal.open("a") as handle:
            handle.write(json.dumps(entry) + "\n")

    cells = [
        (setting, alpha, k)
        for setting in settings
        for alpha in alphas
        for k in cluster_sizes
        if k <= nodes
    ]
    psnr: dict[tuple[str, str], float | None] = {}
    cluster_psnr: dict[tuple[str, str, int], float | None] = {}
    summaries: dict[tuple[int, bool], dict[str, Any] | str] = {}
    spawn = multiprocessing.get_context("spawn")
    with (
        tempfile.TemporaryDirectory(prefix="phalanx-privacy-") as scratch,
        ProcessPoolExecutor(args.jobs, mp_context=spawn) as attack_pool,
        ThreadPoolExecutor(args.jobs) as testbed_pool,
    ):
        pending: dict[Future[Any], tuple[str, Any]] = {}
        if not args.skip_attacks:
            for setting in settings:
                for method in methods:
                    options = (
                        args.ig_iterations if method == "ig" else None,
                        lr,
                        args.seed,
                        args.prior_cache,
                        args.prior_steps,
                    )
                    attack: Future[Any] = attack_pool.submit(
                        _attack_job, setting, method, args.model, images, *options
                    )
                    pending[attack] = ("attack", (setting.label, method))
                    for k in sorted({k for k in cluster_sizes if 1 < k <= nodes}):
                        cluster: Future[Any] = attack_pool.submit(
                            _cluster_attack_job, setting, method, args.model, k, images, *options
                        )
                        pending[cluster] = ("cluster", (setting.label, method, k))
        if not args.skip_testbed:
            for index, (setting, alpha, k) in enumerate(cells):
                for byzantine in (False, True):
                    scenario = scenario_for(
                        base,
                        setting,
                        nodes=nodes,
                        rounds=rounds,
                        model=args.model,
                        alpha=alpha,
                        cluster_size=k,
                        eval_samples=args.eval_samples,
                        byzantine=byzantine,
                    )
                    work = Path(scratch) / f"{index}-{int(byzantine)}"
                    testbed: Future[Any] = testbed_pool.submit(
                        run_testbed, scenario, work, args.timeout
                    )
                    pending[testbed] = ("testbed", (index, byzantine))
        total = len(pending)
        for done, future in enumerate(as_completed(pending), 1):
            kind, key = pending[future]
            error = future.exception()
            elapsed = time.perf_counter() - started
            if kind == "cluster":
                cluster_psnr[key] = None if error else float(future.result())
                record({"cluster": list(key), "psnr": cluster_psnr[key], "error": _error(error)})
                shown = "failed" if error else f"{cluster_psnr[key]:.1f} dB"
                console.print(f"[{done}/{total} {elapsed:.0f} s] cluster sum {key}: {shown}")
            elif kind == "attack":
                psnr[key] = None if error else float(future.result())
                record({"attack": list(key), "psnr": psnr[key], "error": _error(error)})
                shown = "failed" if error else f"{psnr[key]:.1f} dB"
                console.print(f"[{done}/{total} {elapsed:.0f} s] {key[1]} on {key[0]}: {shown}")
            else:
                summaries[key] = _error(error) or dict(future.result())
                setting, alpha, k = cells[key[0]]
                outcome = summaries[key]
                record(
                    {
                        "testbed": [setting.label, alpha, k, key[1]],
                        "accuracy": None if isinstance(outcome, str) else outcome["final_accuracy"],
                        "error": _error(error),
                    }
                )
                shown = outcome if isinstance(outcome, str) else f"{outcome['final_accuracy']:.3f}"
                console.print(
                    f"[{done}/{total} {elapsed:.0f} s] {setting.label} alpha={alpha} k={k}"
                    f"{' sign-flip' if key[1] else ''}: {shown}"
                )

    rows: list[dict[str, Any]] = []
    epochs, batch_size = int(training.get("epochs", 1)), int(training.get("batch_size", 32))
    for index, (setting, alpha, k) in enumerate(cells):
        row: dict[str, Any] = {
            "label": setting.label,
            "defense": setting.defense,
            "alpha": alpha,
            "cluster_size": k,
            "nodes": nodes,
            "rounds": rounds,
            "accuracy": None,
            "epsilon": None,
        }
        for method in methods:
            row[f"psnr_{method}"] = psnr.get((setting.label, method))
        honest, attacked = summaries.get((index, False)), summaries.get((index, True))
        if isinstance(honest, dict):
            row["accuracy"] = honest["final_accuracy"]
            row["epsilon"] = spent_epsilon(setting, honest, rounds, epochs, batch_size, nodes)
            row["epsilon_reported_by_nodes"] = bool(honest["node_privacy"])
        elif isinstance(honest, str):
            row["error"] = honest
        if isinstance(attacked, dict):
            row["accuracy_byzantine"] = attacked["final_accuracy"]
        rows.append(row)

    command = (
        "phalanx bench privacy"
        + (" --quick" if quick else "")
        + (" --ig" if args.ig else "")
        + (" --diffusion" if args.diffusion else "")
        + (f" --jobs {args.jobs}" if args.jobs > 1 else "")
    )
    description = (
        f"mnist5k, model `{args.model}`, {nodes} nodes, {rounds} rounds, Dirichlet non-IID "
        f"(alpha as listed), static clusters of k, mean aggregation, no MPC; base scenario "
        f"`{Path(args.base).name}` (training {training}). Accuracy: `final_accuracy` of one "
        f'testbed run, and of a second one with `[[byzantine]] behaviour="sign-flip" count=1`. '
        f"eps: the largest any node spent (delta = 1e-5; `—` = no DP guarantee). PSNR: median "
        f"over {images} victim images of the attack on the defended FedAvg delta of one image "
        f"after one SGD step at lr={lr} (a cluster of one: the worst case, the same for every k "
        f"and alpha); DP-SGD's column attacks its exact one-image release "
        f"`clip(-lr g, lr C) + N(0, (z lr C)^2)`."
        + (f" IG: {args.ig_iterations} iterations." if args.ig else "")
        + (
            " diffusion: the diffusion-prior attack, prior trained on the attacker's auxiliary "
            "split of mnist5k."
            if args.diffusion
            else ""
        )
    )
    report: dict[str, Any] = {
        "command": command,
        "description": description,
        "methods": methods,
        "rows": rows,
        "total_seconds": time.perf_counter() - started,
    }
    if not args.skip_attacks:
        report = merge_cluster_columns(report, cluster_psnr, methods)
        iterations = {m: (args.ig_iterations if m == "ig" else None) for m in methods}
        report["cluster_iterations"] = iterations
        report["cluster_description"] = cluster_description(images, lr, iterations)
        dataset = load_dataset("mnist5k")
        report["blank_image_psnr"] = {
            str(k): blank_image_reference(dataset, k, images, args.seed)
            for k in sorted({row["cluster_size"] for row in rows})
        }
    rows = report["rows"]
    write_report(report, docs, args.model)
    journal.unlink()

    table = Table(title="privacy–utility map")
    for column in ("setting", "k", "alpha", "eps", "acc", "acc sign-flip", *methods):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row["label"],
            str(row["cluster_size"]),
            _fmt(row["alpha"], 1),
            _fmt(row["epsilon"], 2),
            _fmt(row["accuracy"]),
            _fmt(row.get("accuracy_byzantine")),
            *[_fmt(row.get(f"psnr_{m}"), 1) for m in methods],
        )
    console.print(table)
    console.print(f"wrote {docs / 'privacy_utility.md'} in {report['total_seconds']:.0f} s")
    if args.json:
        print(json.dumps(report))
    return 0


def _error(error: BaseException | None) -> str | None:
    return None if error is None else f"{type(error).__name__}: {str(error)[-300:]}"


def _float_list(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers, got {text!r}"
        ) from None


_int_list = int_list(1)


def _method_list(text: str) -> list[str]:
    methods = [v.strip() for v in text.split(",") if v.strip()]
    unknown = [m for m in methods if m not in ("idlg", "ig", "diffusion")]
    if not methods or unknown:
        raise argparse.ArgumentTypeError(f"expected methods among idlg,ig,diffusion, got {text!r}")
    return methods


def register_bench(bench_subparsers: argparse._SubParsersAction) -> None:
    """Add ``phalanx bench privacy``."""
    parser = bench_subparsers.add_parser("privacy", help="privacy–utility–robustness map")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="4 nodes, 3 rounds, alpha 1.0, k=4, 4 victims (about 5 minutes)",
    )
    parser.add_argument(
        "--base",
        default=str(DEFAULT_BASE),
        help="base scenario TOML (default node/scenarios/default.toml)",
    )
    parser.add_argument(
        "--model",
        default="mlp",
        choices=["mlp", "cnn"],
        help="model of testbeds and attacks (default %(default)s)",
    )
    parser.add_argument(
        "--nodes", type=int, default=None, help="nodes per testbed (default 8; 4 with --quick)"
    )
    parser.add_argument(
        "--rounds", type=int, default=None, help="rounds per testbed (default 5; 3 with --quick)"
    )
    parser.add_argument(
        "--alphas",
        type=_float_list,
        default=None,
        help="Dirichlet alphas of the non-IID split, e.g. 0.1,1.0 (default 0.1,1.0; 1.0 with "
        "--quick)",
    )
    parser.add_argument(
        "--cluster-sizes",
        type=_int_list,
        default=None,
        help="cluster sizes k, e.g. 1,4,8 (default 1,4,8; 4 with --quick)",
    )
    parser.add_argument(
        "--images",
        type=int,
        default=None,
        help="victim images per attack (default 8; 4 with --quick)",
    )
    parser.add_argument("--ig", action="store_true", help="also run Inverting Gradients")
    parser.add_argument(
        "--ig-iterations",
        type=int,
        default=300,
        help="optimiser steps of Inverting Gradients (default %(default)s)",
    )
    parser.add_argument(
        "--diffusion",
        action="store_true",
        help="also run the diffusion-prior attack (trains the prior once if not cached)",
    )
    parser.add_argument(
        "--prior-steps",
        type=int,
        default=None,
        help="training steps of the diffusion prior if not cached (default 1000)",
    )
    parser.add_argument(
        "--prior-cache",
        default=None,
        help="prior cache directory (default $PHALANX_PRIOR_CACHE or ~/.cache/phalanx/priors)",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="testbeds and attack processes run at once (each pool); size to the cores "
        "(default %(default)s)",
    )
    parser.add_argument(
        "--eval-samples",
        type=int,
        default=1000,
        help="test samples each testbed evaluates on (default %(default)s)",
    )
    parser.add_argument(
        "--only",
        nargs="*",
        default=None,
        metavar="LABEL",
        help="labels of the settings to run, e.g. none 'prune 0.9' (default all)",
    )
    parser.add_argument(
        "--merge",
        default=None,
        metavar="PATH",
        help="add the cluster-sum attack columns to the map in PATH (a privacy_utility.json): "
        "no testbed, no member attack; writes the merged .json/.md/.png into --docs",
    )
    parser.add_argument(
        "--cluster-methods",
        type=_method_list,
        default=None,
        help="with --merge: the cluster-sum columns to compute, e.g. idlg,ig "
        "(default: idlg, plus ig with --ig and diffusion with --diffusion)",
    )
    parser.add_argument("--skip-testbed", action="store_true", help="attacks only")
    parser.add_argument("--skip-attacks", action="store_true", help="testbeds only")
    parser.add_argument(
        "--timeout",
        type=float,
        default=600.0,
        help="seconds per testbed run (default %(default)g)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of victims and attacks (default %(default)s)"
    )
    parser.add_argument(
        "--docs",
        default=str(REPO / "docs"),
        help="where privacy_utility.{json,md,png} go (default: the repository's docs/)",
    )
    parser.add_argument(
        "--json", action="store_true", help="also print the report as one JSON object"
    )
    parser.set_defaults(func=run_bench)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="phalanx bench")
    register_bench(parser.add_subparsers(dest="bench", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
