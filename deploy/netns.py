"""`phalanx testbed run --hosts netns`: every node in its own Linux network namespace.

Each node gets a namespace ``<prefix>-<node id>`` with one veth (``eth0`` inside) plugged into a
per-run bridge ``<prefix>br`` in the root namespace, and an address ``10.77.<k>.<i+1>/24`` on a
private /24 that no other interface of this machine uses; the bridge holds ``.254`` so that a
Prometheus on this machine can scrape the nodes. Node namespaces get no default route, so their
traffic stays between the namespaces of the run.

Faults from ``scenario.faults`` cross the real network stack:

- ``delay``/``loss``: ``tc qdisc replace dev eth0 root netem delay D J loss L%`` on the node's
  interface (its egress), mechanism ``tc-netem``. Kernels without ``sch_netem`` (minimal VMs)
  get the userspace delay line of `deploy.delayline` instead, mechanism ``delayline``: every
  node that a delay/loss fault of the scenario names is built with a TAP ``eth0`` whose frames
  cross a forwarder process to a TAP port ``<prefix>t<i>`` of the bridge; the forwarder passes
  frames unchanged until the fault sets its delay, jitter and loss (on the node's egress, as
  netem would). Only without ``/dev/net/tun`` does loss fall back to an nftables ``numgen
  random`` drop rule, with the delay recorded as not applied. Each delay/loss record carries
  ``probe_rtt_ms``: median TCP-connect round trips from the host to the node before and after.
- ``partition``: one atomic nftables transaction on the bridge (``bridge <prefix>cut``, forward
  hook) drops frames between ``nodes`` and the others, both directions, so that every node is cut
  at the same instant; ``heal`` deletes it and clears the delay/loss of the named nodes (all
  nodes when none are named). Without the bridge family, per-namespace rules (``inet
  phalanx_partition``) are installed instead, one ``nft -f`` per node, all started together.
- ``kill``/``restart``: SIGKILL the node's process; restart launches it again in its namespace.

A fault fires once every live node has recorded ``round`` (between rounds ``round`` and
``round + 1``); each
applied fault is appended to ``fault_log`` and so lands in ``summary.json``.

Cleanup is guaranteed by three layers: the context manager (and `atexit`, with SIGTERM/SIGHUP
turned into KeyboardInterrupt), and a reaper process that waits on a pipe from the testbed and runs
`cleanup_stale(prefix)` when the pipe closes, which survives even a SIGKILL of the testbed.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import hashlib
import json
import os
import re
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

import tomli_w

from phalanx.deploy.delayline import DelayLineError, DelayLineProcess, Shaping
from phalanx.node.config import (
    FaultConfig,
    NodeConfig,
    NodeSettings,
    PeerConfig,
    Scenario,
    load_scenario,
    with_overrides,
)
from phalanx.node.testbed import (
    REPO_ROOT,
    Fault,
    NodeProcess,
    Testbed,
    _die_with_parent,
    child_environment,
    console,
    node_ids,
    run_testbed,
)

PREFIX_PATTERN = re.compile(r"^[a-z][a-z0-9]{1,8}$")
DEFAULT_PREFIX_STEM = "phx"
GRPC_PORT = 7000
METRICS_PORT = 9100
BRIDGE_HOST = 254
MAX_NODES = 250
PARTITION_TABLE = "phalanx_partition"
SHAPE_TABLE = "phalanx_shape"
SHAPED_ACTIONS = ("delay", "loss")
PROBES = 5


class NetnsError(RuntimeError):
    """A namespace, link or qdisc command failed; the message holds the command and its stderr."""


def check_prefix(prefix: str) -> str:
    """Interface names are limited to 15 bytes, so a prefix is 2..9 lowercase letters/digits."""
    if not PREFIX_PATTERN.match(prefix):
        raise ValueError(
            f"prefix {prefix!r}: expected 2..9 characters, a lowercase letter then lowercase "
            "letters or digits (e.g. 'phx3fa2c1')"
        )
    return prefix


def new_prefix(stem: str = DEFAULT_PREFIX_STEM) -> str:
    """A unique name prefix for one run: ``phx`` followed by six random hex digits."""
    return check_prefix(stem + secrets.token_hex(3))


def _run(command: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise NetnsError(f"{' '.join(command)}: {result.stderr.strip() or result.returncode}")
    return result


def _in_ns(namespace: str, *command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return _run(["ip", "netns", "exec", namespace, *command], check=check)


def list_namespaces(prefix: str) -> list[str]:
    """Names of the network namespaces that start with `prefix`."""
    listing = _run(["ip", "netns", "list"], check=False).stdout
    names = [line.split()[0] for line in listing.splitlines() if line.strip()]
    return sorted(name for name in names if name.startswith(prefix))


def list_links(prefix: str) -> list[str]:
    """Root-namespace interfaces (bridge, host ends of veths) whose names start with `prefix`."""
    listing = _run(["ip", "-o", "link", "show"], check=False).stdout
    names = [line.split(":")[1].strip().split("@")[0] for line in listing.splitlines()]
    return sorted(name for name in names if name.startswith(prefix))


def list_bridge_tables(prefix: str) -> list[str]:
    """Root-namespace nftables ``bridge`` tables (partitions) whose names start with `prefix`."""
    listing = _run(["nft", "list", "tables", "bridge"], check=False).stdout
    names = [line.split()[-1] for line in listing.splitlines() if line.startswith("table")]
    return sorted(name for name in names if name.startswith(prefix))


def cleanup_stale(prefix: str) -> list[str]:
    """Kill the processes in, and delete, every namespace, link and bridge table ``prefix*``.

    Idempotent; returns what it removed. Deleting a namespace also deletes the veth pair whose
    inner end lives there, and with it the namespace's nftables rules and qdiscs. Delay-line
    forwarders live in their node's namespace, so they are killed with its processes; their
    bridge-side TAPs are links ``prefix*``.
    """
    check_prefix(prefix)
    removed: list[str] = []
    for table in list_bridge_tables(prefix):
        _run(["nft", "delete", "table", "bridge", table], check=False)
        removed.append(table)
    for namespace in list_namespaces(prefix):
        pids = _run(["ip", "netns", "pids", namespace], check=False).stdout.split()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, ValueError, PermissionError):
                os.kill(int(pid), signal.SIGKILL)
        _run(["ip", "netns", "delete", namespace], check=False)
        removed.append(namespace)
    for link in list_links(prefix):
        _run(["ip", "link", "delete", link], check=False)
        removed.append(link)
    return removed


@cache
def netem_available() -> bool:
    """Whether this kernel has the ``sch_netem`` qdisc (minimal VM kernels often lack it)."""
    probe = new_prefix("phq")
    try:
        _run(["ip", "netns", "add", probe])
        _in_ns(probe, "ip", "link", "set", "lo", "up")
        return (
            _in_ns(
                probe,
                "tc",
                "qdisc",
                "add",
                "dev",
                "lo",
                "root",
                "netem",
                "delay",
                "1ms",
                check=False,
            ).returncode
            == 0
        )
    except NetnsError:
        return False
    finally:
        _run(["ip", "netns", "delete", probe], check=False)


def netem_arguments(delay_ms: float, jitter_ms: float, loss_pct: float) -> list[str]:
    """The ``tc qdisc ... root`` arguments for netem's delay, uniform jitter and random loss
    (``tc-netem(8)``); times in milliseconds, loss in percent."""
    for name, value in (("delay_ms", delay_ms), ("jitter_ms", jitter_ms), ("loss_pct", loss_pct)):
        if not value >= 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
    if loss_pct > 100:
        raise ValueError(f"loss_pct must be at most 100, got {loss_pct}")
    return ["netem", "delay", f"{delay_ms:g}ms", f"{jitter_ms:g}ms", "loss", f"{loss_pct:g}%"]


def tap_available() -> bool:
    """Whether TAP devices can be made here (``/dev/net/tun``), which the delay line needs."""
    return os.path.exists("/dev/net/tun") and os.access("/dev/net/tun", os.R_OK | os.W_OK)


def probe_rtt_ms(address: str, port: int, count: int = PROBES, timeout_s: float = 3.0) -> float:
    """Median time of `count` TCP connects to ``address:port`` (SYN -> SYN-ACK or RST: one round
    trip through the real stack, whether or not anything listens); NaN if none answered."""
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        try:
            with socket.create_connection((address, port), timeout=timeout_s):
                pass
        except ConnectionRefusedError:
            pass
        except OSError:
            continue
        samples.append((time.perf_counter() - started) * 1000.0)
    return round(statistics.median(samples), 2) if samples else float("nan")


def shaping_seed(seed: int, node_id: str) -> int:
    """The delay line's RNG seed for one node: stable across runs of the same scenario."""
    digest = hashlib.sha256(f"phalanx-delayline/{seed}/{node_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def free_subnet() -> str:
    """The first ``10.77.<k>`` /24 that no address or route of this machine already uses."""
    used = _run(["ip", "-4", "-o", "addr", "show"], check=False).stdout
    used += _run(["ip", "-4", "route", "show"], check=False).stdout
    for k in range(256):
        stem = f"10.77.{k}."
        if stem not in used:
            return stem.rstrip(".")
    raise NetnsError("no free 10.77.<k>.0/24 subnet left on this machine")


@dataclass
class NetnsTestbed(Testbed):
    """A `Testbed` whose nodes run in per-node network namespaces joined by one bridge."""

    prefix: str = field(default_factory=new_prefix)
    subnet: str = ""
    grpc_port: int = GRPC_PORT
    node_metrics_port: int = METRICS_PORT
    addresses: dict[str, str] = field(default_factory=dict)
    shaping: dict[str, dict[str, float]] = field(default_factory=dict)
    delay_line: bool | None = None  # None: only where netem is missing; True: always (tests)
    delay_lines: dict[str, DelayLineProcess] = field(default_factory=dict)
    _fired: set[int] = field(default_factory=set)
    _reaper: subprocess.Popen[bytes] | None = None
    _network_up: bool = False
    _torn_down: bool = False
    _old_handlers: dict[int, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ lifecycle and cleanup
    def __enter__(self) -> NetnsTestbed:
        check_prefix(self.prefix)
        self._start_reaper()
        atexit.register(self.teardown)
        for signum in (signal.SIGTERM, signal.SIGHUP):
            with contextlib.suppress(ValueError):  # not the main thread: atexit + reaper remain
                self._old_handlers[signum] = signal.signal(signum, _raise_interrupt)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.teardown()

    def _start_reaper(self) -> None:
        """A detached watcher that cleans up ``prefix*`` once our end of its pipe closes."""
        if self._reaper is not None:
            return
        self._reaper = subprocess.Popen(
            [sys.executable, "-m", "phalanx.deploy.netns", "reap", self.prefix],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=REPO_ROOT,
            start_new_session=True,
        )

    def teardown(self) -> None:
        """Stop the nodes, delete namespaces, veths and bridge; safe to call more than once."""
        if self._torn_down:
            return
        self._torn_down = True
        with contextlib.suppress(Exception):
            self.stop_all(grace_s=5.0)
        for line in self.delay_lines.values():
            with contextlib.suppress(Exception):
                line.stop(timeout_s=2.0)
        cleanup_stale(self.prefix)
        if self._reaper is not None and self._reaper.stdin is not None:
            self._reaper.stdin.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._reaper.wait(timeout=10)
        for signum, handler in self._old_handlers.items():
            with contextlib.suppress(ValueError):
                signal.signal(signum, handler)
        with contextlib.suppress(Exception):
            atexit.unregister(self.teardown)

    # ------------------------------------------------------------------ network
    def namespace(self, node_id: str) -> str:
        return f"{self.prefix}-{node_id}"

    def _host_veth(self, index: int) -> str:
        return f"{self.prefix}h{index}"

    def _host_tap(self, index: int) -> str:
        return f"{self.prefix}t{index}"

    @property
    def bridge(self) -> str:
        return f"{self.prefix}br"

    @property
    def partition_table(self) -> str:
        return f"{self.prefix}cut"

    def uses_delay_line(self) -> bool:
        """Delay/loss through `deploy.delayline`: forced by ``delay_line``, else where the kernel
        has no netem and TAP devices exist."""
        if self.delay_line is not None:
            if self.delay_line and not tap_available():
                raise NetnsError("delay_line=True but /dev/net/tun is missing or not writable")
            return self.delay_line
        return not netem_available() and tap_available()

    def shaped_nodes(self) -> list[str]:
        """Nodes that a delay or loss fault of the scenario names (they get a delay line)."""
        named = {n for f in self.scenario.faults if f.action in SHAPED_ACTIONS for n in f.nodes}
        return [n for n in self.ids if n in named]

    def setup_network(self) -> None:
        """Bridge in the root namespace, one namespace + veth + address per node."""
        self._start_reaper()
        self.subnet = self.subnet or free_subnet()
        _run(["ip", "link", "add", self.bridge, "type", "bridge"])
        self._network_up = True
        _run(["ip", "addr", "add", f"{self.subnet}.{BRIDGE_HOST}/24", "dev", self.bridge])
        _run(["ip", "link", "set", self.bridge, "up"])
        behind_delay_line = set(self.shaped_nodes()) if self.uses_delay_line() else set()
        for index, node_id in enumerate(self.ids):
            namespace, veth = self.namespace(node_id), self._host_veth(index)
            address = f"{self.subnet}.{index + 1}"
            _run(["ip", "netns", "add", namespace])
            if node_id in behind_delay_line:
                self._plug_delay_line(index, node_id, address)
                continue
            _run(
                [
                    "ip",
                    "link",
                    "add",
                    veth,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    "eth0",
                    "netns",
                    namespace,
                ]
            )
            _run(["ip", "link", "set", veth, "master", self.bridge])
            _run(["ip", "link", "set", veth, "up"])
            _in_ns(namespace, "ip", "link", "set", "lo", "up")
            _in_ns(namespace, "ip", "addr", "add", f"{address}/24", "dev", "eth0")
            _in_ns(namespace, "ip", "link", "set", "eth0", "up")
            self.addresses[node_id] = address

    def _plug_delay_line(self, index: int, node_id: str, address: str) -> None:
        """TAP ``eth0`` in the node's namespace, TAP port on the bridge, a forwarder between."""
        namespace, tap = self.namespace(node_id), self._host_tap(index)
        _run(["ip", "tuntap", "add", "dev", tap, "mode", "tap"])
        _run(["ip", "link", "set", tap, "master", self.bridge])
        _run(["ip", "link", "set", tap, "up"])
        _in_ns(namespace, "ip", "tuntap", "add", "dev", "eth0", "mode", "tap")
        _in_ns(namespace, "ip", "link", "set", "lo", "up")
        _in_ns(namespace, "ip", "addr", "add", f"{address}/24", "dev", "eth0")
        _in_ns(namespace, "ip", "link", "set", "eth0", "up")
        line = DelayLineProcess(namespace, "eth0", tap, shaping_seed(self.scenario.seed, node_id))
        try:
            self.delay_lines[node_id] = line.start(cwd=REPO_ROOT)
        except DelayLineError as error:
            line.stop(timeout_s=1.0)
            raise NetnsError(str(error)) from error
        self.addresses[node_id] = address

    def delay_line_stats(self) -> dict[str, dict[str, Any]]:
        """Settings and frame counters of every running delay line (for ``summary.json``)."""
        stats = {}
        for node_id, line in sorted(self.delay_lines.items()):
            with contextlib.suppress(DelayLineError, OSError, ValueError):
                stats[node_id] = line.stats()
        return stats

    def prepare(self) -> None:
        """Create the namespaces, then write node files that bind each node to its own address."""
        scenario = self.scenario
        if scenario.nodes_per_process != 1:
            raise ValueError(
                f"nodes_per_process={scenario.nodes_per_process}: the netns testbed runs exactly "
                "one node per namespace (use 1)"
            )
        if not 1 <= scenario.nodes <= MAX_NODES:
            raise ValueError(f"nodes={scenario.nodes}: the netns testbed supports 1..{MAX_NODES}")
        self.ids = node_ids(scenario.nodes)
        self.setup_network()
        self.ports = dict.fromkeys(self.ids, self.grpc_port)
        if self.metrics:
            self.metrics_ports = dict.fromkeys(self.ids, self.node_metrics_port)
        peers = [
            PeerConfig(
                id=i,
                address=f"{self.addresses[i]}:{self.grpc_port}",
                public_key=self.identity_key(i),
            )
            for i in self.ids
        ]
        for folder in ("config", "logs", "nodes"):
            (self.out_dir / folder).mkdir(parents=True, exist_ok=True)
        for stale in (self.out_dir / "nodes").glob("*.jsonl"):
            stale.unlink()
        for node_id in self.ids:
            config = NodeConfig(
                node=NodeSettings(
                    id=node_id,
                    host=self.addresses[node_id],
                    port=self.grpc_port,
                    metrics_port=self.metrics_ports.get(node_id),
                    out_dir=str(self.out_dir),
                    insecure=True,
                ),
                peers=peers,
                scenario=scenario,
            )
            path = self.out_dir / "config" / f"{node_id}.toml"
            path.write_text(tomli_w.dumps(config.model_dump(exclude_none=True)))
            self.processes.append(
                NodeProcess(node_id, [node_id], [path], self.out_dir / "logs" / f"{node_id}.log")
            )
        (self.out_dir / "scenario.toml").write_text(
            tomli_w.dumps(scenario.model_dump(exclude_none=True))
        )

    def _start(self, proc: NodeProcess) -> None:
        env = child_environment()
        command = [
            "ip",
            "netns",
            "exec",
            self.namespace(proc.node_ids[0]),
            sys.executable,
            "-m",
            "phalanx.node",
            "node",
        ]
        for path in proc.config_paths:
            command += ["--config", str(path)]
        with open(proc.log_path, "ab") as handle:
            proc.process = subprocess.Popen(
                command,
                stdout=handle,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=REPO_ROOT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )

    def launch(self) -> None:
        """``ip netns exec NS python -m node node --config NODE.toml`` for every node."""
        for proc in self.processes:
            self._start(proc)

    # ------------------------------------------------------------------ faults
    def apply_faults(self, records: dict[str, dict[int, dict[str, Any]]]) -> None:
        """CLI ``--kill`` faults (base class), then the scenario's network and process faults."""
        super().apply_faults(records)
        for number, fault in enumerate(self.scenario.faults):
            if number in self._fired:
                continue
            # Fire between rounds: once every live node has recorded `round`.
            live = [n for n in self.ids if self.process_of(n).returncode is None]
            if not live or not all(fault.round in records.get(n, {}) for n in live):
                continue
            self._fired.add(number)
            entry = {
                "round": fault.round,
                "action": fault.action,
                "nodes": list(fault.nodes),
                "time": time.time(),
                **self.inject(fault),
            }
            self.fault_log.append(entry)
            console.print(
                f"[yellow]fault after round {fault.round}: {fault.action} "
                f"{', '.join(fault.nodes) or 'all'} ({entry['mechanism']})[/]"
            )

    def inject(self, fault: FaultConfig) -> dict[str, Any]:
        """Apply one fault now; returns what was done (merged into the fault's log entry)."""
        unknown = [n for n in fault.nodes if n not in self.ids]
        if unknown:
            raise ValueError(f"fault at round {fault.round} names unknown nodes {unknown}")
        if fault.action in ("kill", "restart"):
            for node_id in fault.nodes:
                proc = self.process_of(node_id)
                proc.killed_by_testbed = True
                if proc.process is not None and proc.returncode is None:
                    proc.process.kill()
                    proc.process.wait()
                if fault.action == "restart":
                    self._start(proc)
            return {"mechanism": "signal" if fault.action == "kill" else "signal+relaunch"}
        if fault.action == "partition":
            side = sorted(set(fault.nodes))
            others = [n for n in self.ids if n not in side]
            return {"mechanism": self._partition(side, others), "groups": [side, others]}
        if fault.action == "heal":
            _run(["nft", "delete", "table", "bridge", self.partition_table], check=False)
            for node_id in self.ids:
                _in_ns(
                    self.namespace(node_id),
                    "nft",
                    "delete",
                    "table",
                    "inet",
                    PARTITION_TABLE,
                    check=False,
                )
            for node_id in fault.nodes or self.ids:
                self.shaping.pop(node_id, None)
                self._shape(node_id)
            shaper = "+delayline" if self.delay_lines else "+tc" if netem_available() else ""
            return {"mechanism": f"nftables{shaper}"}
        for node_id in fault.nodes:
            state = self.shaping.setdefault(
                node_id, {"delay_ms": 0.0, "jitter_ms": 0.0, "loss_pct": 0.0}
            )
            if fault.action == "delay":
                state.update(delay_ms=fault.delay_ms, jitter_ms=fault.jitter_ms)
                if fault.loss_pct:
                    state["loss_pct"] = fault.loss_pct
            else:
                state["loss_pct"] = fault.loss_pct
        before = {n: self._probe(n) for n in fault.nodes}
        mechanisms = {self._shape(node_id) for node_id in fault.nodes}
        record: dict[str, Any] = {
            "mechanism": "+".join(sorted(mechanisms)) or "none",
            "delay_ms": fault.delay_ms,
            "jitter_ms": fault.jitter_ms,
            "loss_pct": fault.loss_pct,
            "probe_rtt_ms": {
                n: {"before": before[n], "after": self._probe(n)} for n in fault.nodes
            },
        }
        lines = {n: s for n, s in self.delay_line_stats().items() if n in fault.nodes}
        if lines:  # the counters at this point, to compare with summary.network.delay_lines
            record["delay_lines"] = lines
        return record

    def _probe(self, node_id: str) -> float:
        return probe_rtt_ms(self.addresses[node_id], self.grpc_port)

    def _partition(self, side: list[str], others: list[str]) -> str:
        """Cut `side` off from `others` in one step; returns the mechanism."""
        if not side or not others:
            return "none"
        group = {
            name: "{ " + ", ".join(self.addresses[n] for n in nodes) + " }"
            for name, nodes in (("side", side), ("others", others))
        }
        # One nft transaction on the bridge: every node is cut at the same instant.
        ruleset = (
            f"table bridge {self.partition_table} {{\n"
            "  chain cut {\n"
            "    type filter hook forward priority 0; policy accept;\n"
            f'    iifname "{self.prefix}*" ip saddr {group["side"]} '
            f"ip daddr {group['others']} drop\n"
            f'    iifname "{self.prefix}*" ip saddr {group["others"]} '
            f"ip daddr {group['side']} drop\n"
            "  }\n}\n"
        )
        applied = subprocess.run(["nft", "-f", "-"], input=ruleset, text=True, capture_output=True)
        if applied.returncode == 0:
            return "nftables-bridge"
        # No bridge family in this kernel: rules in every namespace, all started together.
        pending = []
        for node_id in self.ids:
            cut = others if node_id in side else side
            addresses = "{ " + ", ".join(self.addresses[n] for n in cut) + " }"
            rules = (
                f"table inet {PARTITION_TABLE} {{\n"
                "  chain in { type filter hook input priority 0; policy accept;\n"
                f"    ip saddr {addresses} drop\n  }}\n"
                "  chain out { type filter hook output priority 0; policy accept;\n"
                f"    ip daddr {addresses} drop\n  }}\n}}\n"
            )
            command = ["ip", "netns", "exec", self.namespace(node_id), "nft", "-f", "-"]
            process = subprocess.Popen(
                command, stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
            pending.append((command, process, rules))
        for command, process, rules in pending:
            _out, error = process.communicate(rules)
            if process.returncode != 0:
                raise NetnsError(f"{' '.join(command)}: {error.strip()}")
        return "nftables"

    def _shape(self, node_id: str) -> str:
        """Install the node's current delay/jitter/loss on its egress; returns the mechanism."""
        namespace = self.namespace(node_id)
        state = self.shaping.get(node_id, {})
        delay, jitter, loss = (state.get(k, 0.0) for k in ("delay_ms", "jitter_ms", "loss_pct"))
        _in_ns(namespace, "tc", "qdisc", "del", "dev", "eth0", "root", check=False)
        _in_ns(namespace, "nft", "delete", "table", "inet", SHAPE_TABLE, check=False)
        line = self.delay_lines.get(node_id)
        if line is not None:
            line.configure(Shaping(delay, jitter, loss))
            return "delayline" if (delay or jitter or loss) else "cleared"
        if not (delay or jitter or loss):
            return "cleared"
        if netem_available():
            netem = netem_arguments(delay, jitter, loss)
            _in_ns(namespace, "tc", "qdisc", "replace", "dev", "eth0", "root", *netem)
            return "tc-netem"
        mechanism = "netem-unavailable"
        if loss:
            _in_ns(namespace, "nft", "add", "table", "inet", SHAPE_TABLE)
            _in_ns(
                namespace,
                "nft",
                f"add chain inet {SHAPE_TABLE} out "
                "{ type filter hook output priority 0; policy accept; }",
            )
            _in_ns(
                namespace,
                "nft",
                f"add rule inet {SHAPE_TABLE} out oifname eth0 "
                f"numgen random mod 10000 < {round(loss * 100)} drop",
            )
            mechanism = "nftables-loss" + ("" if not (delay or jitter) else "+delay-not-applied")
        return mechanism


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


def run_netns_testbed(
    scenario: Scenario,
    out_dir: Path,
    timeout_s: float,
    faults: list[Fault] | None = None,
    metrics: bool = True,
    prefix: str | None = None,
) -> dict[str, Any]:
    """Run `scenario` with one namespace per node; cleans up whatever happens.

    Returns the summary (also in ``OUT/summary.json``) with a ``network`` entry added.
    """
    testbed = NetnsTestbed(
        scenario, out_dir, faults=list(faults or []), metrics=metrics, prefix=prefix or new_prefix()
    )
    with testbed:
        summary = run_testbed(testbed, timeout_s)
        summary["network"] = {
            "prefix": testbed.prefix,
            "subnet": f"{testbed.subnet}.0/24",
            "addresses": testbed.addresses,
            "netem": netem_available(),
            "delay_lines": testbed.delay_line_stats(),
        }
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _reap(prefix: str) -> int:
    """Block until the testbed's end of stdin closes (exit or SIGKILL), then clean up."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(OSError):
        while sys.stdin.buffer.read(4096):
            pass
    cleanup_stale(prefix)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m deploy.netns run|clean|reap``: usable before the CLI wiring exists."""
    parser = argparse.ArgumentParser(prog="python -m deploy.netns")
    sub = parser.add_subparsers(dest="action", required=True)
    run = sub.add_parser("run", help="run a scenario with one network namespace per node")
    run.add_argument("scenario", type=Path)
    run.add_argument("--out", type=Path, required=True)
    run.add_argument("--timeout", type=float, default=600.0)
    run.add_argument("--prefix", help="unique name prefix (default: phx + 6 random hex digits)")
    for name in ("clean", "reap"):
        sub.add_parser(name).add_argument("prefix")
    args = parser.parse_args(argv)
    if args.action == "reap":
        return _reap(args.prefix)
    if args.action == "clean":
        removed = cleanup_stale(args.prefix)
        print(f"removed {len(removed)}: {' '.join(removed) or '-'}")
        return 0
    scenario = with_overrides(load_scenario(args.scenario), {})
    summary = run_netns_testbed(scenario, args.out, args.timeout, prefix=args.prefix)
    return 0 if summary["status"] == "completed" else 1


if __name__ == "__main__":
    sys.exit(main())
