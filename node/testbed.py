"""`phalanx testbed run`: a local testbed of real node processes on 127.0.0.1.

The testbed writes one node file per node, starts the node processes (``nodes_per_process``
nodes each), shows a live per-round table, injects the requested faults (``--kill NODE@ROUND``),
and merges the nodes' own result files into ``OUT/summary.json`` and ``OUT/report.md``.

Children run in their own session and die with the testbed (``PR_SET_PDEATHSIG``), so neither
Ctrl-C nor a crash leaves orphans; the summary is rewritten after every round, so partial
results survive an interruption.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import importlib.util
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil
import tomli_w
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:  # node.config pulls in torch: imported where used, so `--help` stays fast
    from phalanx.node.config import Scenario

console = Console(highlight=False)
REPO_ROOT = Path(__file__).resolve().parent.parent


PORT_LEASES = Path(os.environ.get("PHALANX_PORT_LEASES", "/tmp/phalanx-port-leases"))


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct ports that were free a moment ago, each leased to this process.

    They are drawn below the kernel's ephemeral range (which outgoing connections use, so a port
    picked there can be taken by a client socket before the node binds it), and bound all at
    once before being released. A probe alone cannot see a port that another testbed picked but
    whose node has not bound it yet (seconds later, after its imports), so concurrent testbeds
    (``phalanx experiment run --jobs J``) used to collide. Each port is therefore also leased:
    a file ``PORT_LEASES/<port>`` created exclusively and holding this process's pid, released
    by `release_ports` and reclaimable once that process is gone.
    """
    low, _high = _ephemeral_range()
    candidates = random.SystemRandom().sample(
        range(10_000, max(low, 10_000 + 4 * count)), 8 * count + 64
    )
    sockets: list[socket.socket] = []
    try:
        for port in candidates:
            if not _lease(port):
                continue
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.bind((host, port))
            except OSError:
                sock.close()
                release_ports([port])
                continue
            sockets.append(sock)
            if len(sockets) == count:
                return [s.getsockname()[1] for s in sockets]  # they stay leased
        release_ports(s.getsockname()[1] for s in sockets)
        raise OSError(f"could not find {count} free ports on {host}")
    finally:
        for sock in sockets:
            sock.close()


def release_ports(ports: Iterable[int]) -> None:
    """Give back leases taken by `free_ports` in this process."""
    for port in ports:
        path = PORT_LEASES / str(port)
        with contextlib.suppress(OSError, ValueError):
            if int(path.read_text() or 0) == os.getpid():
                path.unlink()


def _lease(port: int) -> bool:
    """Take the lease on `port`; a lease whose holder process has exited is taken over."""
    PORT_LEASES.mkdir(parents=True, exist_ok=True)
    path = PORT_LEASES / str(port)
    for _ in range(2):
        try:
            descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                holder = int(path.read_text() or 0)
            except (OSError, ValueError):
                holder = 0
            if holder and psutil.pid_exists(holder):
                return False
            with contextlib.suppress(OSError):
                path.unlink()
            continue
        except OSError:
            return True  # no writable lease directory: fall back to the probe alone
        with os.fdopen(descriptor, "w") as handle:
            handle.write(str(os.getpid()))
        return True
    return False


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def node_ids(count: int) -> list[str]:
    width = max(2, len(str(count - 1)))
    return [f"node-{i:0{width}d}" for i in range(count)]


def import_roots() -> list[str]:
    """The folder this process imports the ``phalanx`` package from: a source checkout's root,
    or site-packages."""
    roots: list[str] = []
    for package in ("phalanx",):
        spec = importlib.util.find_spec(package)
        for location in (spec.submodule_search_locations or []) if spec else []:
            root = str(Path(location).resolve().parent)
            if root not in roots:
                roots.append(root)
    return roots


def child_environment() -> dict[str, str]:
    """The environment of a node process: ours, with Phalanx importable from any folder."""
    env = dict(os.environ)
    parts = [*import_roots(), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(parts))
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def absolute_paths(scenario: Scenario) -> Scenario:
    """`scenario` with its file paths (``data.dir``) made absolute against this process's
    folder, so that a node process started elsewhere reads the same files."""
    directory = scenario.data.dir
    if directory is None or Path(directory).is_absolute():
        return scenario
    from phalanx.node.config import with_overrides

    return with_overrides(scenario, {"data.dir": str(Path(directory).resolve())})


def _die_with_parent() -> None:
    """Run in the child before exec: get SIGTERM when the testbed process dies."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class NodeProcess:
    """One child process hosting one or more nodes."""

    name: str
    node_ids: list[str]
    config_paths: list[Path]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    killed_by_testbed: bool = False

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.poll()


@dataclass
class Fault:
    node: str
    round: int
    action: str = "kill"
    done: bool = False


@dataclass
class Testbed:
    """Everything about one local run: where it writes, which processes, which faults."""

    scenario: Scenario
    out_dir: Path
    host: str = "127.0.0.1"
    faults: list[Fault] = field(default_factory=list)
    metrics: bool = True
    audit_traffic: bool = False
    tls_dir: Path | None = None
    processes: list[NodeProcess] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    ports: dict[str, int] = field(default_factory=dict)
    metrics_ports: dict[str, int] = field(default_factory=dict)
    fault_log: list[dict[str, Any]] = field(default_factory=list)
    peak_rss: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Node processes run in another folder: every path they are handed is absolute.
        self.out_dir = Path(self.out_dir).resolve()
        if self.tls_dir is not None:
            self.tls_dir = Path(self.tls_dir).resolve()
        self.scenario = absolute_paths(self.scenario)

    def sample_memory(self) -> None:
        """Track each process's peak resident memory (children included) for the summary."""
        for proc in self.processes:
            if proc.process is None or proc.returncode is not None:
                continue
            with contextlib.suppress(psutil.Error):
                rss = psutil.Process(proc.process.pid).memory_info().rss
                self.peak_rss[proc.name] = max(self.peak_rss.get(proc.name, 0), rss)

    def memory_summary(self) -> dict[str, Any]:
        per_node = [
            self.peak_rss[p.name] / len(p.node_ids)
            for p in self.processes
            if p.name in self.peak_rss
        ]
        return {
            "peak_rss_bytes_per_process": dict(sorted(self.peak_rss.items())),
            "peak_rss_bytes_per_node_max": max(per_node) if per_node else None,
        }

    def prepare(self) -> None:
        """Write the node files: ids, ports, peers, the scenario."""
        from phalanx.node.config import NodeConfig, NodeSettings, PeerConfig

        n = self.scenario.nodes
        self.ids = node_ids(n)
        ports = free_ports(2 * n if self.metrics else n, self.host)
        self.ports = dict(zip(self.ids, ports[:n], strict=True))
        if self.metrics:
            self.metrics_ports = dict(zip(self.ids, ports[n:], strict=True))
        peers = [
            PeerConfig(
                id=i, address=f"{self.host}:{self.ports[i]}", public_key=self.identity_key(i)
            )
            for i in self.ids
        ]
        (self.out_dir / "config").mkdir(parents=True, exist_ok=True)
        (self.out_dir / "logs").mkdir(parents=True, exist_ok=True)
        (self.out_dir / "nodes").mkdir(parents=True, exist_ok=True)
        for stale in (self.out_dir / "nodes").glob("*.jsonl"):
            stale.unlink()
        if self.tls_dir is not None:
            from phalanx.clustering.certs import write_certificates

            write_certificates(self.tls_dir, n, overwrite=True, names=self.ids)
        paths: dict[str, Path] = {}
        for node_id in self.ids:
            config = NodeConfig(
                node=NodeSettings(
                    id=node_id,
                    host=self.host,
                    port=self.ports[node_id],
                    metrics_port=self.metrics_ports.get(node_id),
                    out_dir=str(self.out_dir),
                    audit_traffic=self.audit_traffic,
                    **self.tls_settings(node_id),
                ),
                peers=peers,
                scenario=self.scenario,
            )
            path = self.out_dir / "config" / f"{node_id}.toml"
            path.write_text(tomli_w.dumps(config.model_dump(exclude_none=True)))
            paths[node_id] = path
        per = self.scenario.nodes_per_process
        for start in range(0, n, per):
            group = self.ids[start : start + per]
            name = group[0] if per == 1 else f"proc-{start // per:03d}"
            self.processes.append(
                NodeProcess(
                    name, group, [paths[i] for i in group], self.out_dir / "logs" / f"{name}.log"
                )
            )
        (self.out_dir / "scenario.toml").write_text(
            tomli_w.dumps(self.scenario.model_dump(exclude_none=True))
        )

    def launch(self) -> None:
        for proc in self.processes:
            self.start_process(proc)

    def start_process(self, proc: NodeProcess) -> None:
        command = [sys.executable, "-m", "phalanx.node", "node"]
        for path in proc.config_paths:
            command += ["--config", str(path)]
        handle = open(proc.log_path, "ab")  # noqa: SIM115 - the child owns it
        proc.process = subprocess.Popen(
            command,
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=child_environment(),
            cwd=self.out_dir,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        handle.close()

    def identity_key(self, node_id: str) -> str:
        """Create (or reuse) the node's Ed25519 identity under OUT/keys and return its public key
        in hex, so every node knows every peer's key and signatures are checked from round 1."""
        from phalanx.clustering.identity import NodeIdentity

        keys = self.out_dir / "keys"
        keys.mkdir(parents=True, exist_ok=True)
        return NodeIdentity.load_or_generate(keys / f"{node_id}.pem").public_key_bytes.hex()

    def tls_settings(self, node_id: str) -> dict[str, Any]:
        """Mutual TLS with certificates made by `phalanx certs` for this run, or the explicit
        plaintext opt-out."""
        if self.tls_dir is None:
            return {"insecure": True}
        return {
            "insecure": False,
            "tls_ca": str(self.tls_dir / "ca.pem"),
            "tls_cert": str(self.tls_dir / f"{node_id}.pem"),
            "tls_key": str(self.tls_dir / f"{node_id}.key"),
        }

    def honest_ids(self) -> list[str]:
        """Nodes that are neither Byzantine nor killed by a fault (what the summary vouches for)."""
        from phalanx.node.config import byzantine_nodes

        byzantine = byzantine_nodes(self.scenario, self.ids)
        return [
            n for n in self.ids if n not in byzantine and not self.process_of(n).killed_by_testbed
        ]

    def process_of(self, node_id: str) -> NodeProcess:
        return next(p for p in self.processes if node_id in p.node_ids)

    def apply_faults(self, records: dict[str, dict[int, dict[str, Any]]]) -> None:
        """Kill a node's process once that node has recorded the fault's round; restart a node
        already killed once any node has recorded the restart's round (``--kill N@a
        --restart N@b`` keeps it down from round a to round b)."""
        for fault in self.faults:
            if fault.done:
                continue
            proc = self.process_of(fault.node)
            down = proc.process is not None and proc.returncode is not None
            if fault.action == "restart" and down:
                if not any(fault.round in recorded for recorded in records.values()):
                    continue
            elif fault.round not in records.get(fault.node, {}):
                continue
            if proc.process is not None and proc.returncode is None:
                proc.killed_by_testbed = True
                proc.process.kill()
                proc.process.wait()
                console.print(
                    f"[yellow]fault: killed {proc.name} ({', '.join(proc.node_ids)}) "
                    f"after round {fault.round}[/]"
                )
            if fault.action == "restart":
                self.start_process(proc)
                proc.killed_by_testbed = False
                console.print(f"[yellow]fault: restarted {proc.name}[/]")
            fault.done = True
            self.fault_log.append(
                {
                    "round": fault.round,
                    "action": fault.action,
                    "nodes": proc.node_ids,
                    "time": time.time(),
                }
            )

    def stop_all(self, grace_s: float = 10.0) -> None:
        """SIGTERM every live child, wait for the graceful stop, then SIGKILL what is left."""
        live = [p for p in self.processes if p.process is not None and p.returncode is None]
        for proc in live:
            with contextlib.suppress(ProcessLookupError):
                proc.process.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        deadline = time.monotonic() + grace_s
        for proc in live:
            try:
                proc.process.wait(timeout=max(0.0, deadline - time.monotonic()))  # type: ignore[union-attr]
            except subprocess.TimeoutExpired:
                proc.process.kill()  # type: ignore[union-attr]
                proc.process.wait()  # type: ignore[union-attr]


NodeRounds = dict[str, dict[int, dict[str, Any]]]


def _node_records(out_dir: Path) -> Iterator[dict[str, Any]]:
    """Every record of ``OUT/nodes/*.jsonl``; a torn last line (a node killed mid-write) is
    skipped."""
    for path in sorted((out_dir / "nodes").glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue


def read_node_records(out_dir: Path) -> tuple[dict[str, dict[str, Any]], NodeRounds]:
    """Parse ``OUT/nodes/*.jsonl``: (start records by node, round records by node and round).

    A torn last line (a node killed mid-write) is ignored.
    """
    starts: dict[str, dict[str, Any]] = {}
    rounds: dict[str, dict[int, dict[str, Any]]] = {}
    syncs: list[dict[str, Any]] = []
    for record in _node_records(out_dir):
        if record.get("event") == "start":
            starts[record["node"]] = record
        elif record.get("event") == "round":
            rounds.setdefault(record["node"], {})[record["round"]] = record
        elif record.get("event") == "sync":
            syncs.append(record)
    # A node that adopted the majority's model after round r ended round r with that model.
    for sync in syncs:
        synced = rounds.get(sync["node"], {}).get(sync["round"])
        if synced is not None:
            synced["digest_before_sync"] = synced["digest"]
            synced["digest"] = sync["digest"]
            synced["synced_from"] = sync["source"]
    return starts, rounds


def read_membership_events(out_dir: Path) -> list[dict[str, Any]]:
    """Every SWIM state change any node recorded (``OUT/nodes/*.jsonl``), oldest first."""
    events = [r for r in _node_records(out_dir) if r.get("event") == "membership"]
    return sorted(events, key=lambda e: (e["time"], e["node"], e["member"]))


def membership_timeline(
    events: list[dict[str, Any]], observers: list[str]
) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Per member and SWIM state change (``suspected``, ``removed``, ``left``, ``rejoined``),
    the rounds in which honest observers recorded it and who did, oldest first. A refuted
    suspicion (the member answered again before it was removed) shows as ``suspected`` alone."""
    labels = {"suspect": "suspected", "dead": "removed", "left": "left", "rejoined": "rejoined"}
    timeline: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for event in events:
        label = labels.get(event["state"])
        if label is None or event["node"] not in observers or event["node"] == event["member"]:
            continue
        episodes = timeline.setdefault(event["member"], {}).setdefault(label, [])
        round_ = event.get("during_round")
        if not episodes or episodes[-1]["round"] != round_:
            episodes.append({"round": round_, "observers": []})
        if event["node"] not in episodes[-1]["observers"]:
            episodes[-1]["observers"].append(event["node"])
    return dict(sorted(timeline.items()))


def _sum_by_key(mappings: Iterable[Mapping[str, float]]) -> dict[str, float]:
    total: dict[str, float] = {}
    for mapping in mappings:
        for key, value in mapping.items():
            total[key] = total.get(key, 0) + value
    return dict(sorted(total.items()))


def _max_by_key(mappings: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """Per key, the slowest node's value (a phase is as slow as its slowest participant)."""
    worst: dict[str, float] = {}
    for mapping in mappings:
        for key, value in mapping.items():
            worst[key] = max(worst.get(key, 0.0), value)
    return dict(sorted(worst.items()))


def _detection(quality: Any) -> dict[str, float]:
    """Precision and recall of the trust scores' suspected set against the true Byzantine set
    (known to the testbed only)."""
    return {"precision": quality.precision, "recall": quality.recall}


def _members(record: dict[str, Any], key: str) -> list[str]:
    membership = record.get("membership") or {}
    return list(membership.get(key, []))


def build_summary(
    scenario: Scenario,
    starts: dict[str, dict[str, Any]],
    rounds: dict[str, dict[int, dict[str, Any]]],
    honest: list[str],
    faults: list[dict[str, Any]],
    status: str,
) -> dict[str, Any]:
    """Merge per-node records into the run summary (schema in ARCHITECTURE.md)."""
    from phalanx.clustering.trust import detection_quality
    from phalanx.node.config import byzantine_nodes

    all_rounds = sorted({r for per_node in rounds.values() for r in per_node})
    byzantine_ids = sorted(byzantine_nodes(scenario, node_ids(scenario.nodes)))
    per_round = []
    for r in all_rounds:
        reports = {node: recs[r] for node, recs in sorted(rounds.items()) if r in recs}
        honest_reports = {n: rec for n, rec in reports.items() if n in honest} or reports
        first = next(iter(honest_reports.values()))
        digests = {n: rec["digest"] for n, rec in honest_reports.items()}
        accuracies = [rec["accuracy"] for rec in honest_reports.values()]
        per_round.append(
            {
                "round": r,
                "accuracy": first["accuracy"],
                "accuracy_min": min(accuracies),
                "accuracy_max": max(accuracies),
                "loss": first["loss"],
                "train_loss": sum(rec["train_loss"] for rec in reports.values()) / len(reports),
                "duration_s": max(rec["duration_s"] for rec in reports.values()),
                "train_s": max(rec["train_s"] for rec in reports.values()),
                "communicate_s": max(rec["communicate_s"] for rec in reports.values()),
                "aggregate_s": max(rec["aggregate_s"] for rec in reports.values()),
                "bytes_sent": {n: rec["bytes_sent"] for n, rec in reports.items()},
                "bytes_received": {n: rec["bytes_received"] for n, rec in reports.items()},
                "bytes_sent_balance": byte_balance(
                    {n: rec["bytes_sent"] for n, rec in reports.items()}
                ),
                "bytes_by_kind": _sum_by_key(
                    rec.get("bytes_by_kind", {}) for rec in reports.values()
                ),
                "phase_s": _max_by_key(rec.get("phase_s", {}) for rec in reports.values()),
                "honest_digests": digests,
                "digests_identical": len(set(digests.values())) == 1,
                "clusters": first["clusters"],
                "clusters_identical": all(
                    rec["clusters"] == first["clusters"] for rec in reports.values()
                ),
                "cluster_outputs": first["cluster_outputs"],
                "failed_clusters": first["failed_clusters"],
                "flagged_clusters": first["flagged_clusters"],
                "liars": first.get("liars", []),
                "f": first.get("f"),
                "f_reduced": first.get("f_reduced"),
                "backdoor_success": first.get("backdoor_success"),
                "privacy": {n: rec.get("privacy") for n, rec in reports.items()},
                "excluded": first["excluded"],
                "quarantined_clusters": first.get("quarantined_clusters", []),
                "trust_suspected": (first.get("trust") or {}).get("suspected", []),
                "detection": _detection(
                    detection_quality(
                        (first.get("trust") or {}).get("suspected", []), byzantine_ids
                    )
                ),
                "suspected": sorted(
                    {n for rec in honest_reports.values() for n in _members(rec, "suspected")}
                ),
                "removed": sorted(
                    {n for rec in honest_reports.values() for n in _members(rec, "removed")}
                ),
                "synced": {
                    n: rec["synced_from"] for n, rec in reports.items() if "synced_from" in rec
                },
                "reporting_nodes": sorted(reports),
            }
        )
    return {
        "status": status,
        "scenario": scenario.model_dump(),
        "nodes": {
            node: {
                "samples": rec["samples"],
                "label_histogram": rec["label_histogram"],
                "port": rec["port"],
                "metrics_port": rec["metrics_port"],
            }
            for node, rec in sorted(starts.items())
        },
        "parameters": next(iter(starts.values()))["parameters"] if starts else None,
        "byzantine": {
            node: entry.behaviour
            for node, entry in byzantine_nodes(scenario, node_ids(scenario.nodes)).items()
        },
        "faults": faults,
        "rounds": per_round,
        "final_accuracy": per_round[-1]["accuracy"] if per_round else None,
        "all_digests_identical": all(r["digests_identical"] for r in per_round),
        "bytes_per_node": {
            "sent": byte_balance(_run_totals(per_round, "bytes_sent")),
            "received": byte_balance(_run_totals(per_round, "bytes_received")),
        },
    }


def _run_totals(per_round: list[dict[str, Any]], key: str) -> dict[str, int]:
    """Each node's bytes over the whole run (``key`` is bytes_sent or bytes_received)."""
    totals: dict[str, int] = {}
    for record in per_round:
        for node, count in record[key].items():
            totals[node] = totals.get(node, 0) + count
    return totals


def byte_balance(per_node: Mapping[str, int]) -> dict[str, float]:
    """Maximum, median and their ratio of bytes per node: how far the busiest node (a hot
    spot, such as a fixed aggregator) is above the typical one."""
    if not per_node:
        return {"max": 0, "median": 0, "max_over_median": 0.0}
    most, typical = max(per_node.values()), statistics.median(per_node.values())
    return {
        "max": most,
        "median": typical,
        "max_over_median": round(most / typical, 4) if typical else 0.0,
    }


MPC_KINDS = ("share", "partial_sum", "mpc_keys", "held_dealers", "dealer_set")
"""`bytes_by_kind` entries that exist only because updates are secret-shared."""


def defense_lines(summary: dict[str, Any]) -> list[str]:
    """What the run's secure aggregation, Byzantine peers and robust rule did, one sentence each
    (the report's "What happened" section and the end of `phalanx testbed run`)."""
    scenario, rounds = summary["scenario"], summary["rounds"]
    if not rounds:
        return []
    aggregation, total = scenario["aggregation"], len(rounds)
    lines = []
    if aggregation["secure"] != "none":
        mpc = statistics.median(
            sum(r.get("bytes_by_kind", {}).get(kind, 0) for kind in MPC_KINDS) for r in rounds
        )
        every = statistics.median(sum(r["bytes_sent"].values()) for r in rounds)
        lines.append(
            f"secure aggregation: {aggregation['secure']} inside each cluster of "
            f"{scenario['clustering']['cluster_size']}; its shares, partial sums and keys cost "
            f"{mpc / 1e6:.1f} MB a round ({mpc / max(every, 1):.0%} of all bytes sent), "
            "and every update left its peer only as shares"
        )
    byzantine = summary.get("byzantine") or {}
    if byzantine:
        lines.append(
            "Byzantine peers: "
            + "; ".join(f"{node} ({behaviour})" for node, behaviour in sorted(byzantine.items()))
        )
    named: dict[str, int] = {}
    flagged: dict[int, int] = {}
    for record in rounds:
        for liar in record.get("liars") or []:
            named[liar] = named.get(liar, 0) + 1
        for index in record.get("flagged_clusters") or []:
            flagged[int(index)] = flagged.get(int(index), 0) + 1
    if named:
        lines.append(
            "liars named (holders whose partial sums Berlekamp-Welch corrected, or dealers a "
            "majority of holders rejected): "
            + "; ".join(
                f"{node} in {count} of {total} rounds" for node, count in sorted(named.items())
            )
        )
    rule = aggregation["rule"]
    if flagged:
        clusters = rounds[-1].get("clusters") or []
        described = []
        for index, count in sorted(flagged.items()):
            members = clusters[index] if index < len(clusters) else []
            inside = sorted(set(members) & set(byzantine))
            who = f" (holds {', '.join(inside)})" if inside else ""
            described.append(f"cluster {index}{who} in {count} of {total} rounds")
        lines.append(f"outputs flagged by the {rule} rule: " + "; ".join(described))
    elif rule != "mean":
        lines.append(f"outputs flagged by the {rule} rule: none")
    suspected = rounds[-1].get("trust_suspected") or []
    if byzantine or suspected:
        detection = rounds[-1].get("detection") or {}
        scores = ""
        if detection.get("precision") is not None:
            scores = (
                f" (precision {detection['precision']:.2f}, recall {detection['recall']:.2f}:"
                " a flagged cluster's members are all suspected, since MPC hides which one sent"
                " what)"
            )
        lines.append(f"suspected after the last round: {', '.join(suspected) or 'nobody'}{scores}")
    lines.append(
        f"honest peers' models bit-identical in every round: {summary['all_digests_identical']}"
    )
    return lines


def write_report(summary: dict[str, Any], out_dir: Path) -> Path:
    """`report.md` with an accuracy-per-round plot next to it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = summary["rounds"]
    plot = out_dir / "accuracy.png"
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=120)
    xs = [r["round"] for r in rounds]
    ax.plot(xs, [r["accuracy"] for r in rounds], marker="o", label="test accuracy")
    ax.plot(xs, [r["loss"] for r in rounds], marker="s", linestyle="--", label="test loss")
    ax.set_xlabel("round")
    ax.set_title(f"{summary['scenario']['name']}: {summary['scenario']['nodes']} nodes")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(plot)
    plt.close(fig)
    scenario = summary["scenario"]
    lines = [
        f"# Phalanx testbed run: {scenario['name']}",
        "",
        f"- status: **{summary['status']}**",
        f"- nodes: {scenario['nodes']}, rounds: {scenario['rounds']}, "
        f"cluster size: {scenario['clustering']['cluster_size']} "
        f"({scenario['clustering']['strategy']}), secure: {scenario['aggregation']['secure']}, "
        f"rule: {scenario['aggregation']['rule']}",
        f"- data: {scenario['data']['dataset']} ({scenario['data']['partition']}), "
        f"model: {scenario['model']['name']} ({summary['parameters']} parameters)",
        f"- final accuracy: {summary['final_accuracy']}",
        f"- honest digests identical in every round: {summary['all_digests_identical']}",
        "",
        "![accuracy per round](accuracy.png)",
        "",
        "| round | accuracy | loss | round s | train s | communicate s | aggregate s | MB sent |"
        " excluded |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rounds:
        mb = sum(r["bytes_sent"].values()) / 1e6
        lines.append(
            f"| {r['round']} | {r['accuracy']:.4f} | {r['loss']:.4f} | {r['duration_s']:.2f} | "
            f"{r['train_s']:.2f} | {r['communicate_s']:.2f} | {r['aggregate_s']:.3f} | "
            f"{mb:.1f} | {', '.join(r['excluded']) or '-'} |"
        )
    happened = defense_lines(summary)
    if happened:
        lines += ["", "## What happened", "", *(f"- {line}" for line in happened)]
    if summary["faults"]:
        lines += ["", "## Faults", ""]
        lines += [
            f"- round {f['round']}: {f['action']} {', '.join(f['nodes'])}"
            for f in summary["faults"]
        ]
    report = out_dir / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return report


def _row(r: dict[str, Any]) -> list[str]:
    mb = sum(r["bytes_sent"].values()) / 1e6
    agree = "[green]yes[/]" if r["digests_identical"] else "[red]NO[/]"
    return [
        str(r["round"]),
        f"{r['accuracy']:.4f}",
        f"{r['loss']:.4f}",
        f"{r['duration_s']:.2f}",
        f"{mb:.1f}",
        ", ".join(r["excluded"]) or "-",
        agree,
    ]


COLUMNS = ("round", "accuracy", "loss", "round s", "MB sent", "excluded", "digests agree")


def run_testbed(testbed: Testbed, timeout_s: float) -> dict[str, Any]:
    """Run to completion (or interruption); returns the summary, also written to disk."""
    scenario, out_dir = testbed.scenario, testbed.out_dir
    # Ctrl-C (SIGINT) stops the run and keeps partial results even when we were started with
    # SIGINT ignored (a background job of a non-interactive shell inherits SIG_IGN).
    with contextlib.suppress(ValueError):  # not the main thread: the caller handles signals
        signal.signal(signal.SIGINT, signal.default_int_handler)
    testbed.prepare()
    console.print(
        f"[bold]phalanx testbed[/]: {scenario.nodes} nodes in "
        f"{len(testbed.processes)} processes, {scenario.rounds} rounds -> {out_dir}"
    )
    header = Table(*COLUMNS, title=None, show_edge=False)
    console.print(header)
    testbed.launch()
    status = "running"
    shown: set[int] = set()
    deadline = time.monotonic() + timeout_s
    summary: dict[str, Any] = {}
    try:
        while True:
            time.sleep(0.25)
            starts, rounds = read_node_records(out_dir)
            testbed.apply_faults(rounds)
            testbed.sample_memory()
            # A positive exit code is a bug; death by a signal is a node failure to ride through.
            crashed = [
                p for p in testbed.processes if (p.returncode or 0) > 0 and not p.killed_by_testbed
            ]
            dead_nodes = {
                n for p in testbed.processes if p.returncode is not None for n in p.node_ids
            }
            live_nodes = [n for n in testbed.ids if n not in dead_nodes]
            honest = testbed.honest_ids()
            summary = build_summary(scenario, starts, rounds, honest, testbed.fault_log, status)
            for r in summary["rounds"]:
                complete = all(r["round"] in rounds.get(n, {}) for n in live_nodes)
                if r["round"] not in shown and (complete or not live_nodes):
                    shown.add(r["round"])
                    print_round(r)
            if crashed:
                names = ", ".join(
                    f"{p.name} (exit {p.returncode}, log {p.log_path})" for p in crashed
                )
                console.print(f"[red]node process crashed: {names}; stopping the testbed[/]")
                status = "crashed"
                break
            if all(p.returncode is not None for p in testbed.processes):
                status = "completed"
                break
            if time.monotonic() > deadline:
                console.print(f"[red]timed out after {timeout_s:.0f}s; stopping the testbed[/]")
                status = "timeout"
                break
    except KeyboardInterrupt:
        status = "interrupted"
        console.print("[yellow]interrupted: stopping every node, keeping partial results[/]")
    finally:
        testbed.stop_all()
        release_ports([*testbed.ports.values(), *testbed.metrics_ports.values()])
        summary = finish_run(
            scenario,
            out_dir,
            testbed.honest_ids(),
            testbed.fault_log,
            status,
            testbed.memory_summary(),
            engine="grpc",
        )
    return summary


def print_round(row: dict[str, Any]) -> None:
    """One line of the live round table (`COLUMNS`)."""
    table = Table(*COLUMNS, show_header=False, show_edge=False)
    table.add_row(*_row(row))
    console.print(table)


def finish_run(
    scenario: Scenario,
    out_dir: Path,
    honest: list[str],
    fault_log: list[dict[str, Any]],
    status: str,
    resources: dict[str, Any],
    *,
    engine: str,
) -> dict[str, Any]:
    """The run's summary from the nodes' records (either engine): ``summary.json``, the report
    and its plot, and the membership changes printed."""
    starts, rounds = read_node_records(out_dir)
    summary = build_summary(scenario, starts, rounds, honest, fault_log, status)
    summary["engine"] = engine
    summary["resources"] = resources
    summary["membership"] = membership_timeline(read_membership_events(out_dir), honest)
    for member, seen in summary["membership"].items():
        steps = "; ".join(
            f"{label} in round {', '.join(str(e['round']) for e in shown)}"
            for label, episodes in seen.items()
            # leaving when the last round is over is the run ending, not news
            if (shown := [e for e in episodes if label != "left" or e["round"] != scenario.rounds])
        )
        if steps:
            console.print(f"membership: {member} {steps}")
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    if summary["rounds"]:
        write_report(summary, out_dir)
    return summary


ENGINES = ("grpc", "memory")
"""grpc: the daemons (`node.node.Node`) in processes over sockets; memory: `node.simulate`."""


def _parse_fault(text: str) -> Fault:
    node, sep, round_ = text.partition("@")
    if not sep or not round_.isdigit():
        raise argparse.ArgumentTypeError(f"--kill {text!r}: expected NODE@ROUND, e.g. node-03@2")
    return Fault(node=node, round=int(round_))


def _parse_byzantine(text: str) -> dict[str, Any]:
    count, sep, behaviour = text.partition(":")
    if not sep or not count.isdigit() or not behaviour:
        raise argparse.ArgumentTypeError(
            f"--byzantine {text!r}: expected COUNT:BEHAVIOUR[:k=v,...], e.g. 2:alie"
        )
    return {"count": int(count), "behaviour": behaviour}


def scenario_from_args(args: argparse.Namespace) -> Scenario:
    """The scenario file (or the built-in one) with the flags applied, validated whole: a bad
    name or number is a `ConfigError` naming the field, before any node starts."""
    from phalanx.node.config import (
        ConfigError,
        default_scenario_path,
        load_scenario,
        with_overrides,
    )

    scenario = (
        load_scenario(args.scenario) if args.scenario else load_scenario(default_scenario_path())
    )
    if args.omniscient and not args.byzantine:
        raise ConfigError("--omniscient applies to --byzantine entries; none given")
    # One validation of all the flags together: a Byzantine behaviour may need the secure
    # mode that another flag sets.
    combined: dict[str, Any] = {}
    if args.byzantine:
        start = {"start_round": args.byzantine_from} if args.byzantine_from else {}
        worst_case = {"omniscient": True} if args.omniscient else {}
        combined["byzantine"] = [{**entry, **start, **worst_case} for entry in args.byzantine]
    if args.f is not None:
        combined["aggregation.f"] = args.f
    return with_overrides(
        scenario,
        {
            **combined,
            "nodes": args.nodes,
            "rounds": args.rounds,
            "seed": args.seed,
            "nodes_per_process": args.nodes_per_process,
            "clustering.cluster_size": args.cluster_size,
            "clustering.strategy": args.strategy,
            "clustering.dissemination": args.dissemination,
            "aggregation.secure": args.secure,
            "aggregation.packing": args.packing,
            "aggregation.rule": args.rule,
            "data.dataset": args.dataset,
            "data.partition": args.partition,
            "model.name": args.model,
            "timeouts.collect_s": args.collect_timeout,
            "timeouts.round_period_s": args.round_period,
        },
    )


def _cmd_run(args: argparse.Namespace) -> int:
    scenario = scenario_from_args(args)
    faults = list(args.kill or []) + [
        Fault(node=f.node, round=f.round, action="restart") for f in args.restart or []
    ]
    if args.hosts != "netns":  # the netns testbed injects the scenario's faults itself
        faults += [
            Fault(node=node, round=fault.round, action=fault.action)
            for fault in scenario.faults
            if fault.action in ("kill", "restart")
            for node in fault.nodes
        ]
    unsupported = sorted({f.action for f in scenario.faults} - {"kill", "restart"})
    memory = args.engine == "memory"
    if not memory and args.clock is not None:
        print("phalanx testbed: --clock needs --engine memory", file=sys.stderr)
        return 2
    if memory and args.hosts == "netns":
        print("phalanx testbed: --hosts netns needs --engine grpc", file=sys.stderr)
        return 2
    if memory:
        faults = list(args.kill or []) + [
            Fault(node=f.node, round=f.round, action="restart") for f in args.restart or []
        ]
    elif unsupported and args.hosts != "netns":
        print(f"phalanx testbed: faults {unsupported} need --hosts netns", file=sys.stderr)
        return 2
    ids = node_ids(scenario.nodes)
    for fault in faults:
        if fault.node not in ids:
            print(
                f"phalanx testbed: --kill names unknown node {fault.node!r} "
                f"(nodes are {ids[0]} .. {ids[-1]})",
                file=sys.stderr,
            )
            return 2
    out_dir = Path(args.out).resolve()
    timeout = args.timeout or (
        scenario.timeouts.startup_s + scenario.rounds * (8 * scenario.timeouts.collect_s + 120)
    )
    if memory:
        from phalanx.node.simulate import run_simulation

        summary = run_simulation(
            scenario,
            out_dir,
            timeout,
            faults=faults,
            mutual_tls=args.tls,
            clock=args.clock or "virtual",
        )
    elif args.hosts == "netns":
        from phalanx.deploy.netns import run_netns_testbed

        summary = run_netns_testbed(
            scenario, out_dir, timeout, faults=faults, metrics=not args.no_metrics
        )
    else:
        testbed = Testbed(
            scenario,
            out_dir,
            faults=faults,
            metrics=not args.no_metrics,
            audit_traffic=args.audit_traffic,
            tls_dir=out_dir / "certs" if args.tls else None,
        )
        summary = run_testbed(testbed, timeout)
    for line in defense_lines(summary):
        console.print(f"- {line}", highlight=False)
    console.print(f"summary: {out_dir / 'summary.json'}   report: {out_dir / 'report.md'}")
    console.print(
        f"final accuracy: {summary['final_accuracy']}   honest digests identical: "
        f"{summary['all_digests_identical']}   status: {summary['status']}"
    )
    return 0 if summary["status"] == "completed" else 1


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    testbed = subparsers.add_parser("testbed", help="local testbeds of real node processes")
    sub = testbed.add_subparsers(dest="testbed_command", metavar="ACTION", required=True)
    run = sub.add_parser(
        "run",
        help="run a scenario on 127.0.0.1 and write summary.json",
        description="Run a scenario on real node processes (or, with --engine memory, every "
        "peer in this process). The flags override the scenario file's keys (named in "
        "brackets); names and numbers are checked before any node starts.",
    )
    _add_run_arguments(run)
    _add_clock_argument(run, None)
    run.add_argument(
        "--engine",
        choices=ENGINES,
        default="grpc",
        help="grpc: one daemon process per node group, real sockets; memory: every peer in "
        "this process on one event loop, the same code over an in-memory network",
    )
    run.add_argument(
        "--hosts",
        choices=("loopback", "netns"),
        default="loopback",
        help="loopback: all nodes on 127.0.0.1; netns: one Linux network namespace "
        "per node process, with network faults (needs root)",
    )
    run.set_defaults(func=_cmd_run)
    simulate = subparsers.add_parser(
        "simulate",
        help="run a scenario with every peer in this process (memory engine)",
        description="Run a scenario on the memory engine: the daemons' code, every peer on one "
        "event loop, messages through each peer's acceptance path; writes what `testbed run` "
        "writes. The flags override the scenario file's keys (named in brackets).",
    )
    _add_run_arguments(simulate)
    _add_clock_argument(simulate, "virtual")
    simulate.set_defaults(func=_cmd_run, engine="memory", hosts="loopback")


def _add_clock_argument(parser: argparse.ArgumentParser, default: str | None) -> None:
    parser.add_argument(
        "--clock",
        choices=("virtual", "real"),
        default=default,
        help="memory engine: virtual time (deadlines cost no wall time and never expire "
        "because this machine is slow) or the wall clock (default: virtual)",
    )


def _add_run_arguments(run: argparse.ArgumentParser) -> None:
    from phalanx.node.cli import float_in, int_in

    run.add_argument("scenario", nargs="?", type=Path, help="scenario TOML (default: built-in)")
    run.add_argument("--nodes", type=int_in(1), help="number of nodes [nodes]")
    run.add_argument("--rounds", type=int_in(1), help="training rounds [rounds]")
    run.add_argument("--seed", type=int, help="seed of data, models and clusters [seed]")
    run.add_argument(
        "--cluster-size", type=int_in(1), help="members per cluster [clustering.cluster_size]"
    )
    run.add_argument(
        "--strategy",
        help="cluster assignment strategy, e.g. static, random, balanced [clustering.strategy]",
    )
    run.add_argument(
        "--dissemination",
        choices=("direct", "tree"),
        help="how cluster outputs reach every node: from each publisher directly, or relayed "
        "along rotating trees [clustering.dissemination]",
    )
    run.add_argument(
        "--secure",
        choices=("none", "secagg", "shamir"),
        help="secure aggregation inside each cluster [aggregation.secure]",
    )
    run.add_argument(
        "--packing",
        type=int_in(1),
        help="shamir: coordinates per sharing polynomial (packed sharing; needs t + l - 1 "
        "holders to reconstruct) [aggregation.packing]",
    )
    run.add_argument(
        "--rule", help="aggregation rule over cluster outputs, e.g. mean [aggregation.rule]"
    )
    run.add_argument(
        "--f", type=int_in(0), help="Byzantine cluster outputs the rule tolerates [aggregation.f]"
    )
    run.add_argument(
        "--byzantine",
        action="append",
        type=_parse_byzantine,
        metavar="COUNT:BEHAVIOUR[:k=v]",
        help="make COUNT nodes Byzantine, e.g. 2:alie or 1:crash:phase=share",
    )
    run.add_argument("--byzantine-from", type=int_in(1), help="round the Byzantine nodes start at")
    run.add_argument(
        "--omniscient",
        action="store_true",
        help="worst case: the --byzantine attacks see every honest update, not only the "
        "colluders' own (byzantine[].omniscient)",
    )
    run.add_argument(
        "--dataset",
        help="mnist5k, digits, mnist, fashion-mnist or cifar10 [data.dataset]",
    )
    run.add_argument(
        "--partition",
        choices=("iid", "dirichlet", "shards"),
        help="how the data is split over nodes [data.partition]",
    )
    run.add_argument("--model", help="model architecture, e.g. cnn or mlp [model.name]")
    run.add_argument(
        "--nodes-per-process",
        type=int_in(1),
        help="nodes sharing one process and event loop [nodes_per_process]",
    )
    run.add_argument(
        "--collect-timeout", type=float_in(above=0), help="seconds [timeouts.collect_s]"
    )
    run.add_argument(
        "--round-period",
        type=float_in(0),
        help="start rounds at least this many seconds apart [timeouts.round_period_s]",
    )
    run.add_argument(
        "--kill",
        action="append",
        type=_parse_fault,
        metavar="NODE@ROUND",
        help="kill NODE's process after it records ROUND (repeatable)",
    )
    run.add_argument(
        "--restart",
        action="append",
        type=_parse_fault,
        metavar="NODE@ROUND",
        help="kill NODE's process after ROUND and start it again (repeatable)",
    )
    run.add_argument(
        "--timeout",
        type=float_in(above=0),
        help="overall limit in seconds (default: from the scenario's timeouts)",
    )
    run.add_argument("--no-metrics", action="store_true", help="do not serve Prometheus metrics")
    run.add_argument(
        "--audit-traffic",
        action="store_true",
        help="save every tensor each node receives (privacy audits; large)",
    )
    run.add_argument(
        "--tls",
        action="store_true",
        help="mutual TLS between nodes with certificates made for this run (memory engine: "
        "the network names each sender as a verified certificate would) "
        "(default: plaintext on loopback, the explicit insecure opt-out)",
    )
    run.add_argument("--out", default="phalanx-out", help="output folder (default phalanx-out)")
