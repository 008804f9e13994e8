"""The memory engine: every peer of a scenario in this process, on one event loop.

It runs the daemons' code (`node.peer.Peer`: the same acceptance checks, signatures, cluster
protocols, Byzantine wrappers and round driver) over `node.memory.MemoryNetwork` instead of
gRPC, and writes what the gRPC testbed writes (``nodes/*.jsonl``, ``summary.json``,
``report.md`` with its plot). For the same scenario and seed, and without timing-dependent
faults, the honest peers' models are bit-identical to the daemons' in every round
(``tests/node/test_engines_agree.py``).

Peers are light: the data set is loaded once and shared read-only, training runs in a thread
pool the size of the machine (one torch thread each), and a broadcast's payload is encoded once
and shared by its recipients. Faults are applied in the network: ``kill`` and ``restart`` (a new
`Peer` from the same identity and results file, as a restarted process), ``partition``,
``heal``, ``delay`` and ``loss``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import resource
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from phalanx.node.config import FaultConfig, NodeConfig, NodeSettings, PeerConfig, Scenario
from phalanx.node.memory import MemoryNetwork, MemoryTransport, Shaping
from phalanx.node.peer import Peer, cached_dataset, round_seed
from phalanx.node.testbed import (
    ENGINES,
    Fault,
    absolute_paths,
    build_summary,
    console,
    finish_run,
    node_ids,
    print_round,
    read_node_records,
)
from phalanx.node.transport import Transport
from phalanx.node.virtual_time import VirtualTimeLoop

__all__ = ["CLOCKS", "ENGINES", "Simulation", "run_simulation"]

CLOCKS = ("virtual", "real")


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@dataclass
class Simulation:
    """One run of a scenario on the memory engine."""

    scenario: Scenario
    out_dir: Path
    faults: list[Fault] = field(default_factory=list)
    mutual_tls: bool = False
    progress: bool = True
    ids: list[str] = field(default_factory=list)
    configs: dict[str, NodeConfig] = field(default_factory=dict)
    peers: dict[str, Peer] = field(default_factory=dict)
    fault_log: list[dict[str, Any]] = field(default_factory=list)
    killed: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.out_dir = Path(self.out_dir).resolve()
        self.scenario = absolute_paths(self.scenario)
        self.network = MemoryNetwork(
            self.scenario.limits.max_message_bytes,
            self.scenario.limits.chunk_bytes,
            mutual_tls=self.mutual_tls,
            seed=round_seed(self.scenario.seed, 0, 30_000),
        )
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._recorded: dict[str, set[int]] = {}
        self._scenario_faults_fired: set[int] = set()
        self._pending: set[asyncio.Task[None]] = set()
        self._progress: Progress | None = None
        self._progress_task: TaskID | None = None

    # ------------------------------------------------------------------ set-up
    def prepare(self) -> None:
        """Identities and node configurations, as the testbed writes them (without ports)."""
        from phalanx.clustering.identity import NodeIdentity

        self.ids = node_ids(self.scenario.nodes)
        self._check_partition()
        for folder in ("config", "nodes", "keys"):
            (self.out_dir / folder).mkdir(parents=True, exist_ok=True)
        for stale in (self.out_dir / "nodes").glob("*.jsonl"):
            stale.unlink()
        # Identities derive from the seed, so that a run replays exactly (SWIM orders members
        # by the ids their keys give); the simulator is not a security boundary.
        keys = {}
        for node_id in self.ids:
            identity = NodeIdentity.derived(f"phalanx-simulation/{self.scenario.seed}/{node_id}")
            identity.save(self.out_dir / "keys" / f"{node_id}.pem", overwrite=True)
            keys[node_id] = identity.public_key_bytes.hex()
        peers = [PeerConfig(id=i, address=f"memory://{i}", public_key=keys[i]) for i in self.ids]
        for node_id in self.ids:
            self.configs[node_id] = NodeConfig(
                node=NodeSettings(id=node_id, out_dir=str(self.out_dir), insecure=True),
                peers=peers,
                scenario=self.scenario,
            )
        (self.out_dir / "scenario.toml").write_text(
            tomli_w.dumps(self.scenario.model_dump(exclude_none=True))
        )

    def _check_partition(self) -> None:
        """The data split every peer will compute, tried once: a split that leaves a peer
        without data is a configuration error, not a thousand tracebacks."""
        from phalanx.learning.data import partition
        from phalanx.node.config import ConfigError

        data = self.scenario.data
        try:
            partition(
                cached_dataset(self.scenario).train_y,
                self.scenario.nodes,
                data.partition,
                seed=self.scenario.seed,
                alpha=data.alpha,
                shards_per_node=data.shards_per_node,
            )
        except ValueError as error:
            raise ConfigError(
                f"data.partition: {error} ({self.scenario.nodes} peers); use more data, a "
                'larger data.alpha or data.partition = "iid"'
            ) from None

    def _wire(self, peer: Peer) -> Transport:
        return MemoryTransport(
            self.network,
            peer.id,
            peer.addresses,
            observer=peer.observe_send,
            seed=round_seed(self.scenario.seed, peer.index, 0),
        )

    async def _launch(self, node_id: str) -> None:
        peer = Peer(self.configs[node_id], self._wire, cached_dataset(self.scenario))
        peer.round_listeners.append(self._on_round)
        peer.crash = lambda: self._crash(node_id)  # type: ignore[method-assign]
        await peer.start()
        self.peers[node_id] = peer
        self.network.attach(peer)
        self.killed.discard(node_id)
        self._tasks[node_id] = asyncio.get_running_loop().create_task(
            peer.run(), name=f"peer-{node_id}"
        )

    async def _kill(self, node_id: str) -> None:
        """A crash: no goodbye (no SWIM LEAVE); the peer's tasks die with it."""
        self.network.detach(node_id)
        self.killed.add(node_id)
        task = self._tasks.pop(node_id, None)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        peer = self.peers[node_id]
        if peer.swim is not None:
            await peer.swim.stop(leave=False)
        await peer.close()

    def _crash(self, node_id: str) -> None:
        """A peer's ``crash`` behaviour: off the network now, its tasks cancelled next."""
        self.network.detach(node_id)
        self.killed.add(node_id)
        task = asyncio.get_running_loop().create_task(self._kill(node_id))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    # ------------------------------------------------------------------ faults
    def _on_round(self, record: dict[str, Any]) -> None:
        self._recorded.setdefault(record["node"], set()).add(int(record["round"]))
        if self._progress is not None and self._progress_task is not None:
            self._progress.advance(self._progress_task)
        task = asyncio.get_running_loop().create_task(self._apply_faults())
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    def _recorded_by_all_live(self, round_: int) -> bool:
        live = [n for n in self.ids if n not in self.killed]
        return bool(live) and all(round_ in self._recorded.get(n, set()) for n in live)

    async def _apply_faults(self) -> None:
        """The testbed's semantics: ``--kill N@r`` once N recorded r; a restart of a node that
        is down once any node recorded r; a scenario fault once every live node recorded r."""
        for fault in self.faults:
            if fault.done:
                continue
            down = fault.node in self.killed
            if fault.action == "restart" and down:
                if not any(fault.round in seen for seen in self._recorded.values()):
                    continue
            elif fault.round not in self._recorded.get(fault.node, set()):
                continue
            fault.done = True
            if not down:
                await self._kill(fault.node)
                console.print(f"[yellow]fault: killed {fault.node} after round {fault.round}[/]")
            if fault.action == "restart":
                await self._launch(fault.node)
                console.print(f"[yellow]fault: restarted {fault.node}[/]")
            self._log_fault(fault.round, fault.action, [fault.node], "memory")
        for number, scenario_fault in enumerate(self.scenario.faults):
            if number in self._scenario_faults_fired:
                continue
            if scenario_fault.round > 0 and not self._recorded_by_all_live(scenario_fault.round):
                continue
            self._scenario_faults_fired.add(number)
            await self._inject(scenario_fault)

    async def _inject(self, fault: FaultConfig) -> None:
        unknown = [n for n in fault.nodes if n not in self.ids]
        if unknown:
            raise ValueError(f"fault at round {fault.round} names unknown nodes {unknown}")
        if fault.action in ("kill", "restart"):
            for node_id in fault.nodes:
                if node_id not in self.killed:
                    await self._kill(node_id)
                if fault.action == "restart":
                    await self._launch(node_id)
        elif fault.action == "partition":
            self.network.partition(sorted(fault.nodes))
        elif fault.action == "heal":
            self.network.heal(list(fault.nodes) or None)
        else:
            for node_id in fault.nodes:
                shape = self.network.shaping.setdefault(node_id, Shaping())
                if fault.action == "delay":
                    shape.delay_ms, shape.jitter_ms = fault.delay_ms, fault.jitter_ms
                    if fault.loss_pct:
                        shape.loss_pct = fault.loss_pct
                else:
                    shape.loss_pct = fault.loss_pct
        console.print(
            f"[yellow]fault after round {fault.round}: {fault.action} "
            f"{', '.join(fault.nodes) or 'all'} (memory network)[/]"
        )
        self._log_fault(fault.round, fault.action, list(fault.nodes), "memory network")

    def _log_fault(self, round_: int, action: str, nodes: list[str], mechanism: str) -> None:
        self.fault_log.append(
            {
                "round": round_,
                "action": action,
                "nodes": nodes,
                "mechanism": mechanism,
                "time": time.time(),
            }
        )

    def honest_ids(self) -> list[str]:
        from phalanx.node.config import byzantine_nodes

        byzantine = byzantine_nodes(self.scenario, self.ids)
        return [n for n in self.ids if n not in byzantine and n not in self.killed]

    # ------------------------------------------------------------------ the run
    async def run(self, timeout_s: float) -> dict[str, Any]:
        """Every peer's rounds to completion (or the timeout); returns the summary."""
        import torch

        torch.set_num_threads(1)
        loop = asyncio.get_running_loop()
        executor = ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="peer")
        loop.set_default_executor(executor)
        self.prepare()
        scenario = self.scenario
        console.print(
            f"[bold]phalanx simulate[/]: {scenario.nodes} peers in one process (memory engine), "
            f"{scenario.rounds} rounds -> {self.out_dir}"
        )
        baseline = _peak_rss_bytes()
        cached_dataset(scenario)
        progress = self._progress = Progress(
            TextColumn("[bold]rounds recorded"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            disable=not self.progress,
            transient=True,
        )
        started = time.monotonic()
        status = "running"
        with progress:
            self._progress_task = progress.add_task(
                "rounds", total=scenario.nodes * scenario.rounds
            )
            try:
                await self._apply_faults()  # round-0 faults
                for node_id in self.ids:
                    await self._launch(node_id)
                status = await self._wait(started + timeout_s)
            except asyncio.CancelledError:
                status = "interrupted"
                raise
            finally:
                for node_id in list(self._tasks):
                    task = self._tasks[node_id]
                    if not task.done():
                        task.cancel()
                await asyncio.gather(*self._tasks.values(), return_exceptions=True)
                # Every peer stops at once, as the testbed's processes do when the run is
                # over: nobody is left to observe a goodbye, so none is sent.
                live = [p for n, p in self.peers.items() if n not in self.killed]
                for peer in live:
                    if peer.swim is not None:
                        await peer.swim.stop(leave=False)
                for peer in live:
                    with contextlib.suppress(Exception):
                        await peer.close()
                elapsed = time.monotonic() - started
                peak = _peak_rss_bytes()
                summary = finish_run(
                    scenario,
                    self.out_dir,
                    self.honest_ids(),
                    self.fault_log,
                    status,
                    {
                        "peak_rss_bytes_per_process": {"simulation": peak},
                        "peak_rss_bytes_per_node_max": (peak - baseline) / scenario.nodes,
                        "wall_s": elapsed,
                        "messages_delivered": self.network.delivered,
                    },
                    engine="memory",
                )
                executor.shutdown(wait=False, cancel_futures=True)
        return summary

    async def _wait(self, deadline: float) -> str:
        """Until every peer's run ends; prints each round's row once every live peer has it."""
        shown: set[int] = set()
        while True:
            running = [t for t in self._tasks.values() if not t.done()]
            failed = [
                (n, t) for n, t in self._tasks.items() if t.done() and t.exception() is not None
            ]
            if failed:
                node_id, task = failed[0]
                console.print(f"[red]peer {node_id} failed: {task.exception()!r}[/]")
                return "crashed"
            self._show_rounds(shown)
            if not running and not self._pending:
                self._show_rounds(shown)
                return "completed"
            if time.monotonic() > deadline:
                console.print("[red]timed out; stopping the simulation[/]")
                return "timeout"
            await asyncio.wait(running or list(self._pending), timeout=0.5)

    def _show_rounds(self, shown: set[int]) -> None:
        complete = [
            r
            for r in range(1, self.scenario.rounds + 1)
            if r not in shown and self._recorded_by_all_live(r)
        ]
        if not complete:
            return
        starts, rounds = read_node_records(self.out_dir)
        summary = build_summary(
            self.scenario, starts, rounds, self.honest_ids(), self.fault_log, "running"
        )
        for row in summary["rounds"]:
            if row["round"] in complete:
                shown.add(row["round"])
                print_round(row)


def run_simulation(
    scenario: Scenario,
    out_dir: Path,
    timeout_s: float,
    *,
    faults: list[Fault] | None = None,
    mutual_tls: bool = False,
    progress: bool = True,
    clock: str = "virtual",
) -> dict[str, Any]:
    """Run `scenario` on the memory engine in a fresh event loop; returns the summary.

    ``clock = "virtual"`` (the default) runs on `VirtualTimeLoop`: deadlines cost no wall time
    and never expire because this machine is slow. ``"real"`` runs on the daemons' loop
    (uvloop when installed), where they do."""
    if clock not in CLOCKS:
        raise ValueError(f"clock must be one of {CLOCKS}, not {clock!r}")
    simulation = Simulation(
        scenario, Path(out_dir), list(faults or []), mutual_tls=mutual_tls, progress=progress
    )
    loop_factory: Callable[[], asyncio.AbstractEventLoop] = (
        VirtualTimeLoop if clock == "virtual" else _real_time_loop
    )
    with _log_to(simulation.out_dir / "logs" / "simulation.log"):
        try:
            with asyncio.Runner(loop_factory=loop_factory) as runner:
                return runner.run(simulation.run(timeout_s))
        except KeyboardInterrupt:
            console.print("[yellow]interrupted: partial results kept[/]")
            summary_path = simulation.out_dir / "summary.json"
            return dict(json.loads(summary_path.read_text())) if summary_path.exists() else {}


def _real_time_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


@contextlib.contextmanager
def _log_to(path: Path) -> Iterator[None]:
    """The peers' log lines go to one file (the testbed's are in one file per process), so
    that the console shows the round table; errors still reach the console."""
    path.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    consoles = [h for h in root.handlers if isinstance(h, logging.StreamHandler)]
    levels = {h: h.level for h in consoles}
    for console_handler in consoles:
        console_handler.setLevel(max(console_handler.level, logging.ERROR))
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()
        for console_handler, level in levels.items():
            console_handler.setLevel(level)
