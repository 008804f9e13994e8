"""The transport-free core of a Phalanx peer: learner, aggregator and share-holder in one.

A `Peer` accepts messages (`accept`, the acceptance checks in order), runs rounds (`run_round`,
which reads top-down: train, cluster protocol, robust combination, evaluate, record) and syncs
with the majority (`sync_with_majority`). It talks to the others only through a `Transport`,
which the engine around it supplies: `node.node.Node` puts a gRPC server and `GrpcTransport`
around it (the daemons), `node.simulate` an in-memory network (many peers on one event loop).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import os
import signal
import time
from collections.abc import Awaitable, Callable, Collection, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import grpc
import numpy as np
import torch

from phalanx.adversary.behaviours import (
    DATA_BEHAVIOURS,
    ByzantineTransport,
    UpdatePoisoner,
    backdoor_success_rate,
    parse_behaviour,
    poison_training_data,
)
from phalanx.clustering.identity import NodeIdentity
from phalanx.clustering.strategies import (
    DEFAULT_SUSPICION_THRESHOLD,
    ClusterAssignment,
    compute_assignment,
)
from phalanx.clustering.trust import SuspicionTracker
from phalanx.learning.data import Dataset, label_histogram, load_dataset, partition
from phalanx.learning.models import build_model
from phalanx.learning.train import (
    TrainConfig,
    evaluate,
    flatten_parameters,
    load_flat_parameters,
    train_local,
    warm_up_training,
)
from phalanx.node import clock
from phalanx.node.actors import Actor, FunctionActor, Supervisor
from phalanx.node.admission import PeerAdmission
from phalanx.node.codec import Message, kind_name
from phalanx.node.config import (
    ByzantineConfig,
    ConfigError,
    NodeConfig,
    Scenario,
    byzantine_nodes,
    check_peer_keys,
    tolerated_faults,
)
from phalanx.node.defenses import NodeDefense
from phalanx.node.inbox import DuplicateMessage, RoundInbox
from phalanx.node.metrics import NodeMetrics
from phalanx.node.protocols import (
    PHASE_HISTORY,
    ClusterOutput,
    ClusterProtocol,
    PlaintextClusterProtocol,
    RelayTree,
    RoundContext,
    choose_output,
    collect_window,
    echo_outputs,
    parse_echo,
)
from phalanx.node.server import Rejection
from phalanx.node.signing import (
    RELAYED,
    SignatureError,
    SigningTransport,
    verify_envelope,
    verify_model_request,
    verify_relay,
)
from phalanx.node.swim_service import MEMBERSHIP_KINDS, MembershipService
from phalanx.node.transport import Transport
from phalanx.v1 import node_pb2 as pb

log = logging.getLogger(__name__)

UpdateTransform = Callable[[np.ndarray, int], Awaitable[np.ndarray]]
VERIFY_IN_THREAD_BYTES = 1 << 20
"""Envelopes with more payload than this are hashed for their signature check in a worker
thread (hashlib releases the GIL), so the event loop keeps serving meanwhile."""
STARTUP_POLL_FIRST_S = 0.2
"""First pause between two readiness polls of the peers still missing at start-up."""
STARTUP_POLL_LONGEST_S = 1.0
"""Longest pause between readiness polls (the pause doubles from `STARTUP_POLL_FIRST_S`)."""
STARTUP_HEALTH_TIMEOUT_S = 5.0
"""Deadline of one start-up health check (capped by `timeouts.rpc_s`)."""
UNDER_WAY_SAMPLE = 3
"""Serving peers asked per poll whether the run is under way (see `Peer.wait_for_peers`)."""


def under_way_sample(serving: Sequence[str], poll: int) -> list[str]:
    """The `UNDER_WAY_SAMPLE` serving peers asked at start-up poll `poll`, rotating over all."""
    if len(serving) <= UNDER_WAY_SAMPLE:
        return list(serving)
    start = poll * UNDER_WAY_SAMPLE % len(serving)
    return [serving[(start + i) % len(serving)] for i in range(UNDER_WAY_SAMPLE)]


def unresponsive_after(
    view: Sequence[str],
    clusters: Sequence[Sequence[str]],
    outputs: Mapping[int, ClusterOutput],
) -> frozenset[str]:
    """The peers the next round does not wait for: those that a published cluster output left
    out (they sent nothing its publisher could use), and peers in no cluster.

    The members of a cluster without an output are not among them. A failed cluster (too many
    lying holders for Berlekamp-Welch, a silent publisher) says nothing about which of its members
    answered, and treating them all as gone makes the next round skip their keys and shares,
    which fails more clusters, until nobody is waited for. The set depends only on the agreed
    clusters and outputs, so every node that agreed on the round computes the same one (the
    publishers of the next round are chosen with it).
    """
    undecided = {
        node for index, members in enumerate(clusters) if index not in outputs for node in members
    }
    included = {node for output in outputs.values() for node in output.included}
    return frozenset(set(view) - included - undecided)


def pooled_tests(
    clusters: int,
    flagged: Collection[int],
    published: Collection[int],
    missing_severity: float,
) -> dict[int, float]:
    """The round's pooled tests for the suspicion scores (`clustering.trust`): severity 1 for a
    cluster the outer rule flagged or quarantined, `missing_severity` for one that published no
    output, and 0 (a negative test) for the rest, which are left out of the mapping.

    A cluster of honest members always publishes, so a missing output is a positive pooled test
    in Dorfman's sense: under Shamir it means more than floor((s - t)/2) lying holders, where
    Berlekamp-Welch names no one; otherwise a withholding or crashed publisher.
    """
    missing = [index for index in range(clusters) if index not in published]
    severity = dict.fromkeys(missing, missing_severity) if missing_severity > 0 else {}
    return severity | dict.fromkeys(flagged, 1.0)


_DATASETS: dict[tuple[str, str | None, int, float], Dataset] = {}


def cached_dataset(scenario: Scenario) -> Dataset:
    """Load the scenario's data set once per process (nodes sharing a process share it)."""
    key = (scenario.data.dataset, scenario.data.dir, scenario.seed, scenario.data.test_fraction)
    if key not in _DATASETS:
        _DATASETS[key] = load_dataset(
            scenario.data.dataset, scenario.data.dir, scenario.seed, scenario.data.test_fraction
        )
    return _DATASETS[key]


def model_digest(weights: torch.Tensor) -> str:
    """SHA-256 of the model's float32 parameter bytes: equal digests mean bit-identical models."""
    return hashlib.sha256(weights.numpy().tobytes()).hexdigest()


def round_seed(seed: int, node_index: int, round_: int) -> int:
    """A per-(node, round) seed derived from the scenario seed, stable across processes."""
    digest = hashlib.sha256(f"{seed}/{node_index}/{round_}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF


def public_seed(seed: int) -> bytes:
    return hashlib.sha256(f"phalanx-public-seed/{seed}".encode()).digest()


@dataclass(frozen=True)
class TrainJob:
    round: int
    weights: torch.Tensor
    done: asyncio.Future[tuple[np.ndarray, float, float]]


async def _settle(tasks: set[asyncio.Task[bool]], timeout_s: float) -> None:
    """Give in-flight sends a last moment to finish, then cancel the rest."""
    pending = set(tasks)
    if not pending:
        return
    _done, late = await asyncio.wait(pending, timeout=timeout_s)
    for task in late:
        task.cancel()
    await asyncio.gather(*late, return_exceptions=True)


class ResultsWriter:
    """Appends one JSON line per event to ``OUT/nodes/<id>.jsonl``.

    Every line is flushed to the OS at once, so a process that dies loses nothing written. Round
    records are also fsynced, so a machine that loses power loses at most the round in
    progress. Membership events are not fsynced one by one: at n = 128 SWIM emits thousands, and
    an fsync each blocked the event loop long enough to miss probe deadlines (the next fsync
    makes them durable too)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._handle = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def write(self, record: Mapping[str, Any], durable: bool = True) -> None:
        self._handle.write(json.dumps(record, sort_keys=True) + "\n")
        self._handle.flush()
        if durable:
            os.fsync(self._handle.fileno())

    def close(self) -> None:
        self._handle.close()


class TooFewOutputs(ValueError):
    """Fewer cluster outputs arrived than the aggregation rule can run on."""


@dataclass(frozen=True)
class GlobalStep:
    """One round's global update and how the rule produced it."""

    delta: np.ndarray
    flagged: list[int]
    f: int
    """The f the rule ran with (``aggregation.f = "auto"``: the most it tolerates)."""
    f_reduced: dict[str, int] | None = None
    """Set when fewer outputs arrived than configured clusters and the configured f exceeded
    what the rule tolerates for them: ``{"configured": f, "used": f'}``. Never silent."""


def combine_cluster_outputs(
    outputs: Mapping[int, ClusterOutput],
    rule: str,
    f: int | Literal["auto"],
    pre: list[str] | None = None,
) -> GlobalStep:
    """The global step from cluster outputs, in ascending cluster order (bit-reproducible).

    ``mean``: FedAvg over dealers, sum_c S_c / sum_c |c|. Other rules: the registered robust
    rule over the cluster means S_c/|c|, with ``f = "auto"`` meaning the largest f it tolerates
    for the outputs received. Raises `TooFewOutputs` when the rule cannot run on that many rows
    even at f = 0 (Krum: m > 2).
    """
    order = sorted(outputs)
    if rule == "mean" and not pre:
        total = np.zeros_like(outputs[order[0]].total)
        for cluster in order:
            total += outputs[cluster].total
        count = sum(len(outputs[c].included) for c in order)
        return GlobalStep(total / np.float32(count), [], 0)
    from phalanx.learning.aggregation import get_rule

    means = torch.from_numpy(np.stack([outputs[c].mean for c in order]))
    robust = get_rule(rule, pre=pre or None)
    if robust.max_f(len(order)) < 0:
        raise TooFewOutputs(
            f"aggregation rule {rule!r} cannot run on {len(order)} cluster outputs "
            f"({robust.breakdown})"
        )
    tolerated = max(robust.max_f(len(order)), 0)
    reduced = None
    if f == "auto":
        used = tolerated
    else:
        used = min(int(f), tolerated)
        if used < int(f):
            # Fewer outputs arrived than configured clusters: the configuration was checked
            # against the full count, so this is only known now, and it is recorded.
            reduced = {"configured": int(f), "used": used}
    report = robust.aggregate_with_report(means, used)
    flagged = [order[i] for i in report.flagged]
    return GlobalStep(report.value.to(torch.float32).numpy(), flagged, used, reduced)


class Peer:
    """A peer without its network edge: trains, aggregates, holds shares, runs the rounds.

    `wire` builds the transport to the other peers (given this peer, so that it can observe its
    sends); the peer signs above it and any Byzantine behaviour wraps it."""

    def __init__(
        self,
        config: NodeConfig,
        wire: Callable[[Peer], Transport],
        dataset: Dataset | None = None,
    ) -> None:
        check_peer_keys(config)
        self.config = config
        self.scenario = config.scenario
        self.id = config.node.id
        self.addresses = {peer.id: peer.address for peer in config.peers if peer.id != self.id}
        self.view = sorted({self.id, *self.addresses})
        self.index = self.view.index(self.id)
        self.out_dir = Path(config.node.out_dir)
        self.identity = self._load_identity()
        self.peer_keys = {
            peer.id: bytes.fromhex(peer.public_key)
            for peer in config.peers
            if peer.public_key and peer.id != self.id
        }
        self.metrics = NodeMetrics(self.id)
        self.swim: MembershipService | None = None
        self._background: set[asyncio.Task[object]] = set()
        self.inbox = RoundInbox()
        self.inbox.unreachable = self.unreachable
        self.protocol: ClusterProtocol = self._cluster_protocol()
        clustering = self.scenario.clustering
        self.relay = (
            RelayTree(
                public_seed(self.scenario.seed),
                clustering.relay_fanout,
                self.protocol.publishers or clustering.publishers,
            )
            if clustering.dissemination == "tree"
            else None
        )
        self._forwarded: set[tuple[int, int, str]] = set()
        self.current_round = 1
        self.completed_round = 0
        self.peers_ahead: dict[str, int] = {}
        self.phase = "starting"
        self.suspected: frozenset[str] = frozenset()
        self._bytes_sent: dict[int, int] = {}
        self._bytes_by_kind: dict[int, dict[str, int]] = {}
        self._bytes_received: dict[int, int] = {}
        self._assignments: dict[int, ClusterAssignment] = {}
        self.trust = SuspicionTracker()
        self._trust_after: dict[int, dict[str, float]] = {0: {}}
        self._longest_phase_s: list[float] = []  # per round, for an adaptive collect window
        self.port = config.node.port
        self.metrics_port: int | None = None
        self.supervisor = Supervisor(on_restart=self._actor_restarted)

        scenario = self.scenario
        self.dataset = dataset or cached_dataset(scenario)
        parts = partition(
            self.dataset.train_y,
            len(self.view),
            scenario.data.partition,
            seed=scenario.seed,
            alpha=scenario.data.alpha,
            shards_per_node=scenario.data.shards_per_node,
        )
        mine = parts[self.index]
        self.train_x, self.train_y = self.dataset.train_x[mine], self.dataset.train_y[mine]
        limit = scenario.data.eval_samples or len(self.dataset.test_y)
        self.test_x, self.test_y = self.dataset.test_x[:limit], self.dataset.test_y[:limit]
        torch.manual_seed(scenario.seed)
        self.model = build_model(
            scenario.model.name, self.dataset.input_shape, self.dataset.num_classes
        )
        self.weights = flatten_parameters(self.model)
        # training.mode = "synthetic": a fixed update of model.synthetic_dim coordinates, no
        # training, no evaluation (learning/synthetic.py); the model vector is that long.
        self.synthetic: np.ndarray | None = None
        if scenario.training.mode == "synthetic":
            from phalanx.learning.synthetic import probe_indices, synthetic_update

            dim = scenario.model.synthetic_dim
            self.synthetic = synthetic_update(scenario.seed, self.index, dim)
            self.synthetic_probe = probe_indices(dim)
            self.weights = torch.zeros(dim, dtype=torch.float32)
        self._digest_of: tuple[torch.Tensor, str] | None = None
        self.dimension = self.weights.numel()
        self.train_config = TrainConfig(**scenario.training.model_dump(exclude={"mode"}))
        self.defense = NodeDefense(scenario.defense, self.index, scenario.seed, len(self.view))

        self.security = scenario.security
        self.admission = PeerAdmission(
            set(self.addresses), self.security.peer_rate_per_s, self.security.peer_burst
        )
        self.transport: Transport = SigningTransport(
            wire(self), self.identity, enabled=self.security.sign_messages, owner=self.id
        )
        size = scenario.limits.mailbox_size
        self.learner: Actor[TrainJob] = FunctionActor("learner", self._train, size)
        self.aggregator: Actor[Message] = FunctionActor("aggregator", self._store, size)
        self.shareholder: Actor[Message] = FunctionActor("shareholder", self._store, size)
        self.membership: Actor[Message] = FunctionActor("membership", self._membership, size)
        self.results = ResultsWriter(self.out_dir / "nodes" / f"{self.id}.jsonl")
        self.round_listeners: list[Callable[[dict[str, Any]], None]] = []
        self.side_channels: dict[int, Actor[Message]] = {}
        self.transform_update: UpdateTransform | None = None
        self.byzantine = byzantine_nodes(scenario, self.view)
        self.backdoor = next(
            (
                parse_behaviour(b.behaviour)
                for b in self.byzantine.values()
                if b.behaviour.startswith("backdoor")
            ),
            None,
        )
        if self.id in self.byzantine:
            self._turn_byzantine(self.byzantine[self.id])

    def _load_identity(self) -> NodeIdentity:
        """This node's long-term Ed25519 key: the configured file, or OUT/keys/<id>.pem created
        on first start and reused after a restart (so a restarted node keeps its SWIM id)."""
        path = Path(self.config.node.identity_key or self.out_dir / "keys" / f"{self.id}.pem")
        path.parent.mkdir(parents=True, exist_ok=True)
        identity = NodeIdentity.load_or_generate(path)
        own = next((p.public_key for p in self.config.peers if p.id == self.id), None)
        if own is not None and own != identity.public_key_bytes.hex():
            raise ConfigError(
                f"node {self.id}: the key in {path} does not match this node's public_key in "
                "the peers list"
            )
        return identity

    def _turn_byzantine(self, entry: ByzantineConfig) -> None:
        """Wrap this node's roles with its configured deviation (the honest code is unchanged)."""
        spec = parse_behaviour(entry.behaviour, entry.start_round)
        seed = round_seed(self.scenario.seed, self.index, 10_000)
        log.warning(
            "%s is Byzantine: %s from round %d", self.id, entry.behaviour, entry.start_round
        )
        if spec.is_protocol:
            self.transport = ByzantineTransport(
                self.transport,
                spec,
                self.id,
                self.scenario.timeouts.collect_s,
                seed,
                on_crash=lambda: self.crash(),
                colluders=frozenset(
                    node
                    for node, other in self.byzantine.items()
                    if other.behaviour == entry.behaviour
                ),
            )
        elif spec.name in DATA_BEHAVIOURS:
            self.train_x, self.train_y = poison_training_data(
                spec, self.train_x, self.train_y, self.dataset.num_classes, seed
            )
        else:
            colluders = sorted(self.byzantine)
            view = self._omniscient_view if entry.omniscient else self._colluder_view
            # Attacks that need honest statistics aim at what the outer rule aggregates: cluster
            # means when clusters are on (adversary.poisoning, ``cluster_size``).
            self.transform_update = UpdatePoisoner(
                spec,
                len(self.view),
                len(colluders),
                view,
                seed,
                cluster_size=self.scenario.clustering.cluster_size,
                aggregation=self.scenario.aggregation,
            )
            self.side_channels[pb.MESSAGE_KIND_COLLUDE] = self.aggregator

    async def _colluder_view(self, round_: int, benign: np.ndarray) -> list[np.ndarray]:
        """Benign updates of every colluder, shared over the gRPC side channel."""
        colluders = sorted(self.byzantine)
        share = Message(self.id, round_, pb.MESSAGE_KIND_COLLUDE, -1, {"update": benign})
        await self.inbox.put(share)
        await asyncio.gather(*(self.transport.send(c, share) for c in colluders if c != self.id))
        got = await self.inbox.wait_for(
            round_,
            pb.MESSAGE_KIND_COLLUDE,
            -1,
            colluders,
            clock.now() + self.scenario.timeouts.collect_s,
        )
        return [got[c].tensors["update"] for c in sorted(got)]

    async def _omniscient_view(self, round_: int, benign: np.ndarray) -> list[np.ndarray]:
        """Every honest node's update this round, recomputed from the public seeds."""

        def work() -> list[np.ndarray]:
            scenario = self.scenario
            parts = partition(
                self.dataset.train_y,
                len(self.view),
                scenario.data.partition,
                seed=scenario.seed,
                alpha=scenario.data.alpha,
                shards_per_node=scenario.data.shards_per_node,
            )
            model = build_model(
                scenario.model.name, self.dataset.input_shape, self.dataset.num_classes
            )
            rows = []
            for index, node_id in enumerate(self.view):
                if node_id in self.byzantine:
                    continue
                load_flat_parameters(model, self.weights)
                train_local(
                    model,
                    self.dataset.train_x[parts[index]],
                    self.dataset.train_y[parts[index]],
                    self.train_config,
                    seed=round_seed(scenario.seed, index, round_),
                )
                rows.append((flatten_parameters(model) - self.weights).numpy())
            return rows

        return await asyncio.to_thread(work)

    def _cluster_protocol(self) -> ClusterProtocol:
        aggregation = self.scenario.aggregation
        if aggregation.secure == "none":
            return PlaintextClusterProtocol()
        from phalanx.mpc import FixedPointConfig
        from phalanx.node.defenses import DistributedNoise
        from phalanx.node.mpc_protocol import ShamirClusterProtocol

        fixed_point = FixedPointConfig(aggregation.clip, aggregation.frac_bits)

        def noise() -> DistributedNoise | None:  # self.defense is built after the protocol
            return self.defense.distributed

        if aggregation.secure == "shamir":
            return ShamirClusterProtocol(
                fixed_point,
                aggregation.threshold,
                self.scenario.clustering.publishers,
                self.rejected,
                noise,
                packing=aggregation.packing,
            )
        from phalanx.node.mpc_protocol import SecAggClusterProtocol

        return SecAggClusterProtocol(fixed_point, aggregation.threshold, self.rejected, noise)

    # ----------------------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        """Start the actors and the membership protocol, and record the start."""
        for actor in (self.learner, self.aggregator, self.shareholder, self.membership):
            self.supervisor.start(actor)
        if self.scenario.membership.protocol == "swim":
            self._start_membership()
        self.results.write(
            {
                "event": "start",
                "node": self.id,
                "index": self.index,
                "pid": os.getpid(),
                "port": self.port,
                "metrics_port": self.metrics_port,
                "samples": len(self.train_y),
                "label_histogram": label_histogram(self.train_y, self.dataset.num_classes),
                "parameters": self.dimension,
                "byzantine": self.byzantine[self.id].behaviour
                if self.id in self.byzantine
                else None,
                "identity": self.identity.node_id,
                "time": time.time(),
            }
        )

    def _start_membership(self) -> None:
        own = next((p.address for p in self.config.peers if p.id == self.id), None)
        address = own or f"{self.config.node.host}:{self.port}"
        self.swim = MembershipService(
            self.id,
            self.identity,
            address,
            self.addresses,
            self.peer_keys,
            self.scenario.membership,
            self.transport,
            round_seed(self.scenario.seed, self.index, 20_000),
            self.rejected,
            lambda record: self.results.write(
                {**record, "during_round": self.current_round}, durable=False
            ),
        )
        self.swim.on_unreachable_change = self._poke_inbox
        self.swim.start()

    def unreachable(self) -> frozenset[str]:
        """Peers this round should not wait for: removed by SWIM, or already two rounds ahead
        (they finished this round and will send nothing more for it)."""
        ahead = {p for p, r in self.peers_ahead.items() if r > self.current_round + 1}
        removed = self.swim.unreachable if self.swim is not None else frozenset()
        return removed | ahead

    def _poke_inbox(self) -> None:
        self._spawn(self.inbox.poke())

    def _spawn(self, work: Coroutine[Any, Any, object]) -> None:
        """Run `work` in the background, kept referenced until it ends."""
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def weights_digest(self) -> str:
        """`model_digest` of the current weights, computed once per weights tensor (peers ask
        for it in every status poll; the weights are replaced, never changed in place)."""
        cached = self._digest_of
        if cached is None or cached[0] is not self.weights:
            cached = self._digest_of = (self.weights, model_digest(self.weights))
        return cached[1]

    def crash(self) -> None:
        """Die at once, as a crash does (the ``crash`` behaviour): SIGKILL of this process,
        unless the engine that hosts the peer replaces it."""
        os.kill(os.getpid(), signal.SIGKILL)

    async def stop(self) -> None:
        """Graceful stop: finish the sends under way, leave the membership, then close."""
        await self.drain(self.scenario.timeouts.rpc_s)
        await self.leave()
        await self.close()

    async def drain(self, grace_s: float) -> None:
        """Wait (at most `grace_s`) for the background sends already started: outputs this node
        relays and its broadcasts still reach their receivers when it stops after its round."""
        pending = [task for task in self._background if not task.done()]
        if pending:
            await asyncio.wait(pending, timeout=grace_s)

    async def leave(self) -> None:
        """Tell the others we go (SWIM LEAVE)."""
        self.phase = "stopping"
        if self.swim is not None:
            await self.swim.stop(leave=True)

    async def close(self) -> None:
        """Close the transport, stop the actors and the metrics, close the results file."""
        await self.transport.close()
        await self.supervisor.stop()
        self.metrics.close()
        self.results.close()

    async def wait_for_peers(self) -> list[str]:
        """Wait (up to timeouts.startup_s) until every peer reports SERVING; returns the missing.

        Only the peers still missing are asked again, after a pause that doubles from
        `STARTUP_POLL_FIRST_S` to `STARTUP_POLL_LONGEST_S`: n nodes starting together cost about
        n^2 health checks in all, instead of n^2 every fifth of a second, which at n = 128 on two
        cores kept every node too busy to answer anyone in time.

        A node that (re)starts while the others are already running does not wait for the dead:
        as soon as a strict majority of the view serves and one of them has completed a round
        (asked of `UNDER_WAY_SAMPLE` serving peers per poll), the run is under way without the
        missing peers, so this node syncs with the majority that answers and joins it."""
        deadline = clock.now() + self.scenario.timeouts.startup_s
        health_timeout_s = min(self.scenario.timeouts.rpc_s, STARTUP_HEALTH_TIMEOUT_S)
        missing = sorted(self.addresses)
        majority = len(self.view) // 2 + 1
        pause_s = STARTUP_POLL_FIRST_S
        poll = 0
        while missing and clock.now() < deadline:
            ready = await asyncio.gather(
                *(self.transport.serving(p, health_timeout_s) for p in missing)
            )
            missing = [p for p, ok in zip(missing, ready, strict=True) if not ok]
            if not missing:
                break
            serving = sorted(set(self.addresses) - set(missing))
            if len(serving) + 1 >= majority and await self._run_under_way(
                under_way_sample(serving, poll)
            ):
                log.warning(
                    "%s: the run is under way; joining without %s", self.id, ", ".join(missing)
                )
                return missing
            await asyncio.sleep(min(pause_s, max(0.0, deadline - clock.now())))
            pause_s = min(2 * pause_s, STARTUP_POLL_LONGEST_S)
            poll += 1
        if missing:
            log.warning("%s starting without %s", self.id, ", ".join(missing))
        return missing

    async def _run_under_way(self, peers: Sequence[str]) -> bool:
        replies = await asyncio.gather(*(self.transport.status(p, 1.0) for p in peers))
        return any(r is not None and r.completed_round > 0 for r in replies)

    # ----------------------------------------------------------------------------- receive
    def assignment(self, round_: int) -> ClusterAssignment:
        if round_ not in self._assignments:
            clustering = self.scenario.clustering
            view = self.view
            if self.swim is not None and self.scenario.membership.view == "swim":
                view = self.swim.round_view(round_)
            self._assignments[round_] = compute_assignment(
                view,
                round_,
                public_seed(self.scenario.seed),
                clustering.strategy,
                min(clustering.cluster_size, len(view)),
                trust=self._trust_for(round_),
            )
            for old in [r for r in self._assignments if r < round_ - 2]:
                del self._assignments[old]
        return self._assignments[round_]

    def _trust_for(self, round_: int) -> dict[str, float]:
        """Suspicion scores that round `round_`'s clusters are drawn with: those after round
        ``round_ - 2``, which every node has finished before any message of `round_` can reach
        it (messages of round r are accepted from round r - 1 on), so early validation and the
        round itself use the same scores."""
        known = [r for r in self._trust_after if r <= round_ - 2]
        return self._trust_after[max(known)] if known else {}

    # Acceptance, in order (docs/security.md): who is speaking (allow-list, TLS identity), is it
    # really them (signature), may they speak now (admission), then what they say (round window,
    # kind, shape, slot). Nothing before a check that refuses changes any state.
    def _known_sender(self, sender: str, tls_identity: str | None) -> None:
        if sender not in self.addresses:
            raise Rejection(
                grpc.StatusCode.PERMISSION_DENIED,
                "unknown_sender",
                f"sender {sender!r} is not a peer of {self.id}",
            )
        if tls_identity is not None and tls_identity != sender:
            raise Rejection(
                grpc.StatusCode.UNAUTHENTICATED,
                "impersonation",
                f"a caller with the certificate of {tls_identity!r} sent as {sender!r}",
            )

    def _charge(self, sender: str) -> None:
        if not self.admission.admit(sender):
            raise Rejection(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                "rate_limited",
                f"{sender} exceeds {self.security.peer_rate_per_s:g} messages/s "
                f"(burst {self.security.peer_burst})",
            )

    def admit(self, header: pb.Header, tls_identity: str | None) -> None:
        """The checks a header allows before its payload is decoded or buffered: a known sender,
        the TLS identity it came with, and (with TLS, where the caller is authenticated already)
        its admission budget."""
        if header.relayed_by:
            self._known_sender(header.relayed_by, tls_identity)
            self._known_sender(header.sender, None)
        else:
            self._known_sender(header.sender, tls_identity)
        if tls_identity is not None:
            self._charge(tls_identity)

    async def _authenticate(self, message: Message) -> None:
        """The sender's signature over the whole envelope, when signing is on and its key is
        configured (without TLS, `check_peer_keys` makes sure every peer has one)."""
        key = self.peer_keys.get(message.sender)
        if not self.security.sign_messages or key is None:
            return
        await self._verify_envelope(message, key)

    async def _verify_envelope(self, message: Message, key: bytes, note: str = "") -> None:
        """`verify_envelope` (in a thread for a large payload), a failure as `bad_signature`
        with `note` appended."""
        try:
            if message.payload_bytes() > VERIFY_IN_THREAD_BYTES:
                await asyncio.to_thread(verify_envelope, message, key)
            else:
                verify_envelope(message, key)
        except SignatureError as error:
            raise Rejection(
                grpc.StatusCode.UNAUTHENTICATED, "bad_signature", f"{error}{note}"
            ) from None

    async def _authenticate_relay(self, message: Message, tls_identity: str | None) -> None:
        """A cluster output that a peer forwards for its publisher: the relayer is a peer and
        signed this hop to us (it is charged for it), the publisher is a peer and signed the
        output for every node (`node.signing`)."""
        self._known_sender(message.relayed_by, tls_identity)
        self._known_sender(message.sender, None)
        if self.relay is None:
            raise Rejection(
                grpc.StatusCode.FAILED_PRECONDITION,
                "relay_refused",
                f"{message.relayed_by} relayed a message of {message.sender}, but "
                f'clustering.dissemination is not "tree" on {self.id}',
            )
        if message.kind != pb.MESSAGE_KIND_CLUSTER_OUTPUT or message.recipient != RELAYED:
            raise Rejection(
                grpc.StatusCode.INVALID_ARGUMENT,
                "relay_refused",
                f"{message.relayed_by} relayed {message.kind_name} of {message.sender} "
                f"addressed to {message.recipient!r}: only cluster outputs signed for every "
                f"node ({RELAYED!r}) are relayed",
            )
        relayer_key = self.peer_keys.get(message.relayed_by)
        publisher_key = self.peer_keys.get(message.sender)
        if relayer_key is None or publisher_key is None:
            unkeyed = message.relayed_by if relayer_key is None else message.sender
            raise Rejection(
                grpc.StatusCode.FAILED_PRECONDITION,
                "relay_refused",
                f"no public key for {unkeyed}: a relayed output is trusted only for its signatures",
            )
        try:
            verify_relay(message, relayer_key, self.id)
        except SignatureError as error:
            raise Rejection(grpc.StatusCode.UNAUTHENTICATED, "bad_signature", str(error)) from None
        if tls_identity is None:
            self._charge(message.relayed_by)  # authenticated by its relay signature just now
        await self._verify_envelope(message, publisher_key, f" (relayed by {message.relayed_by})")

    def _forward(self, message: Message) -> None:
        """Pass a cluster output signed for every node on to our children in its relay tree,
        once per (round, cluster, publisher)."""
        if self.relay is None or message.recipient != RELAYED:
            return
        slot = (message.round, message.cluster, message.sender)
        if slot in self._forwarded:
            return
        self._forwarded = {s for s in self._forwarded if s[0] >= message.round - 2}
        self._forwarded.add(slot)
        children = self.relay.children(
            message.round,
            self.assignment(message.round).clusters,
            message.cluster,
            message.sender,
            self.id,
            skip=self.unreachable(),
        )
        for child in children:
            self._spawn(self.transport.send(child, message))

    async def accept(self, message: Message, tls_identity: str | None = None) -> None:
        """Validate an incoming message and hand it to the actor of its role."""
        if message.relayed_by:
            await self._authenticate_relay(message, tls_identity)
        else:
            self._known_sender(message.sender, tls_identity)
            await self._authenticate(message)
            if tls_identity is None:
                self._charge(message.sender)  # authenticated by its signature just now
        signed_for_all = message.recipient == RELAYED and message.kind == (
            pb.MESSAGE_KIND_CLUSTER_OUTPUT
        )
        if message.recipient != self.id and not signed_for_all:
            raise Rejection(
                grpc.StatusCode.INVALID_ARGUMENT,
                "wrong_recipient",
                f"message is addressed to {message.recipient!r}, not {self.id!r}",
            )
        if message.kind in MEMBERSHIP_KINDS:
            # SWIM has its own incarnations and replay windows; rounds do not apply to it.
            if self.swim is None:
                raise Rejection(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    "unsupported_kind",
                    f"{message.kind_name}: membership.protocol is off on {self.id}",
                )
            self.membership.tell(message)
            self.metrics.messages_received.labels(message.kind_name).inc()
            return
        if message.round > self.current_round + 1:
            # Accepted as a progress report, its content dropped: the (authenticated) sender has
            # finished our round and will send nothing more for it, so stop waiting for it.
            if message.sender not in self.peers_ahead:
                self._poke_inbox()
            self.peers_ahead[message.sender] = max(
                int(message.round), self.peers_ahead.get(message.sender, 0)
            )
            self.metrics.messages_received.labels(message.kind_name).inc()
            return
        if message.round < self.current_round:
            raise Rejection(
                grpc.StatusCode.FAILED_PRECONDITION,
                "unknown_round",
                f"round {message.round} is outside the accepted window "
                f"[{self.current_round}, {self.current_round + 1}]",
            )
        kind = message.kind
        if kind in self.side_channels:
            target: Actor[Message] = self.side_channels[kind]
        elif kind == pb.MESSAGE_KIND_ECHO:
            try:
                parse_echo(message.meta.get("outputs", ""))
            except ValueError:
                raise Rejection(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "invalid",
                    "echo must list cluster:publisher:digest entries",
                ) from None
            target = self.aggregator
        elif kind in self.protocol.kinds:
            self.protocol.validate(message, self.assignment(message.round).clusters, self.dimension)
            if self.inbox.get(message.round, kind, message.cluster).get(message.sender):
                raise Rejection(
                    grpc.StatusCode.ALREADY_EXISTS,
                    "duplicate",
                    f"{message.kind_name} from {message.sender} for round "
                    f"{message.round} already received",
                )
            target = self.aggregator
        else:
            raise Rejection(
                grpc.StatusCode.FAILED_PRECONDITION,
                "unsupported_kind",
                f"{message.kind_name} is not used with aggregation.secure="
                f"{self.scenario.aggregation.secure!r}",
            )
        target.tell(message)
        self._forward(message)
        if self.config.node.audit_traffic:
            self._audit(
                f"recv-r{message.round}-{message.kind_name}-{message.sender}", message.tensors
            )
        nbytes = message.payload_bytes()
        self._bytes_received[message.round] = self._bytes_received.get(message.round, 0) + nbytes
        self.metrics.bytes_received.labels(message.kind_name).inc(nbytes)
        self.metrics.messages_received.labels(message.kind_name).inc()

    def _audit(self, stem: str, tensors: Mapping[str, np.ndarray]) -> None:
        folder = self.out_dir / "audit" / self.id
        folder.mkdir(parents=True, exist_ok=True)
        for name, tensor in tensors.items():
            np.save(folder / f"{stem}-{name}.npy", tensor)

    async def _store(self, message: Message) -> None:
        try:
            await self.inbox.put(message)
        except DuplicateMessage as duplicate:
            reason = "equivocation" if duplicate.equivocation else "duplicate"
            log.warning("%s: %s", self.id, duplicate)
            self.rejected(reason, message.sender)

    async def _membership(self, message: Message) -> None:
        if self.swim is not None:
            self.swim.handle(message)

    def rejected(self, reason: str, sender: str) -> None:
        self.metrics.messages_rejected.labels(reason).inc()

    def _actor_restarted(self, role: str, error: BaseException) -> None:
        self.metrics.actor_restarts.labels(role).inc()

    def observe_send(
        self, peer: str, message: Message, nbytes: int, seconds: float, ok: bool
    ) -> None:
        rpc = "deliver" if message.payload_bytes() else "send"
        self.metrics.rpc_latency.labels(rpc).observe(seconds)
        if not ok:
            self.metrics.rpc_failures.labels(rpc).inc()
            return
        name = kind_name(message.kind)
        self._bytes_sent[message.round] = self._bytes_sent.get(message.round, 0) + nbytes
        per_kind = self._bytes_by_kind.setdefault(message.round, {})
        per_kind[name] = per_kind.get(name, 0) + nbytes
        self.metrics.bytes_sent.labels(name).inc(nbytes)
        self.metrics.messages_sent.labels(name).inc()

    def status_reply(self) -> pb.StatusReply:
        return pb.StatusReply(
            node_id=self.id,
            round=self.current_round,
            model_digest=self.weights_digest(),
            phase=self.phase,
            completed_round=self.completed_round,
        )

    async def model_message(self, request: pb.ModelRequest, tls_identity: str | None) -> Message:
        """The model after the last completed round, for an allow-listed peer's state transfer:
        the requester is named by its TLS certificate or signs the request (`node.signing`)."""
        self._known_sender(request.requester, tls_identity)
        key = self.peer_keys.get(request.requester)
        if self.security.sign_messages and key is not None:
            try:
                verify_model_request(request, key, self.id, self.security.model_request_skew_s)
            except SignatureError as error:
                raise Rejection(
                    grpc.StatusCode.UNAUTHENTICATED, "bad_signature", str(error)
                ) from None
        self._charge(request.requester)
        digest = self.weights_digest()
        if request.round != self.completed_round or request.digest != digest:
            raise Rejection(
                grpc.StatusCode.FAILED_PRECONDITION,
                "stale_model",
                f"this node holds round {self.completed_round} ({digest[:12]}), "
                f"not round {request.round} ({request.digest[:12]})",
            )
        return Message(
            self.id,
            self.completed_round,
            pb.MESSAGE_KIND_MODEL,
            -1,
            {"weights": self.weights.numpy()},
            meta={"digest": digest},
        )

    async def sync_with_majority(self, wait_s: float) -> dict[str, Any] | None:
        """Adopt the model that more than half of the view holds, if ours differs or is behind.

        Peers report (completed round, model digest) through `Status`; when a strict majority of
        the view agrees on a state that is not ours and not behind ours, fetch that model from
        one of them and verify its digest before adopting it. This lets a node that was
        partitioned, restarted or split off by a lost output rejoin the honest majority. Returns
        what was adopted, or None.
        """
        deadline = clock.now() + wait_s
        needed = len(self.view) // 2 + 1
        # Several polls must fit in the window: a peer still cut off makes its Status wait the
        # whole timeout, and a fixed 2 s would spend all of a collect_s = 2 s window on one poll
        # taken before the heal.
        status_s = min(2.0, max(0.5, wait_s / 3))
        while True:
            mine = (self.completed_round, self.weights_digest())
            replies = await asyncio.gather(
                *(
                    self.transport.status(p, status_s)  # type: ignore[attr-defined]
                    for p in sorted(self.addresses)
                )
            )
            holders: dict[tuple[int, str], list[str]] = {mine: [self.id]}
            for peer, reply in zip(sorted(self.addresses), replies, strict=True):
                if reply is not None:
                    state = (int(reply.completed_round), reply.model_digest)
                    holders.setdefault(state, []).append(peer)
                    # It answers, so it is reachable again (a healed partition): wait for it in
                    # the next round instead of running that round without it.
                    self.suspected = self.suspected - {peer}
            majority = [state for state, nodes in holders.items() if len(nodes) >= needed]
            if not majority and clock.now() >= deadline - 0.5:
                # No strict majority (a partition healed into several groups): fall back to the
                # plurality, held by at least f + 1 nodes so that an honest node holds it, with a
                # deterministic tie-break, so that every node that sees the same states converges.
                declared = tolerated_faults(self.scenario)
                faults = len(self.byzantine) if declared == "auto" else declared
                floor = max(2, faults + 1)
                ranked = sorted(holders.items(), key=lambda kv: (-len(kv[1]), -kv[0][0], kv[0][1]))
                if len(ranked[0][1]) >= floor:
                    majority = [ranked[0][0]]
            if majority:
                target = max(majority)
                if target == mine:
                    return None
                if target[0] >= mine[0]:
                    adopted = await self._adopt(target, sorted(holders[target]))
                    if adopted is not None:
                        return adopted
                    # Every holder answered stale_model: they moved on to a later round while
                    # we polled. Poll again (until the deadline) instead of keeping our model.
            if clock.now() >= deadline:
                return None
            await asyncio.sleep(0.3)

    async def _adopt(self, state: tuple[int, str], holders: list[str]) -> dict[str, Any] | None:
        round_, digest = state
        for peer in holders:
            message = await self.transport.fetch_model(
                peer,
                pb.ModelRequest(requester=self.id, round=round_, digest=digest),
                self.scenario.limits.max_message_bytes,
            )
            if message is None:
                continue
            weights = message.tensors.get("weights")
            if weights is None or weights.shape != (self.dimension,) or weights.dtype != np.float32:
                log.warning("%s: %s sent a model of the wrong shape", self.id, peer)
                continue
            candidate = torch.from_numpy(weights.copy())
            if model_digest(candidate) != digest:
                log.warning("%s: %s sent a model that does not match its digest", self.id, peer)
                continue
            behind = self.completed_round
            self.weights, self.completed_round = candidate, round_
            # Our own exclusions came from rounds the majority did not share (we ran them cut off
            # or alone): they say nothing about the peers any more.
            self.suspected = frozenset()
            event = {
                "event": "sync",
                "node": self.id,
                "round": round_,
                "digest": digest,
                "source": peer,
                "was_at_round": behind,
                "time": time.time(),
            }
            self.results.write(event)
            log.warning("%s adopted the majority model of round %d from %s", self.id, round_, peer)
            return event
        return None

    # ----------------------------------------------------------------------------- learner
    async def _train(self, job: TrainJob) -> None:
        if self.synthetic is not None:
            job.done.set_result((self.synthetic.copy(), 0.0, 0.0))
            return

        def work() -> tuple[np.ndarray, float, float]:
            started = time.perf_counter()
            load_flat_parameters(self.model, job.weights)
            result, _epsilon = self.defense.train(
                self.model,
                self.train_x,
                self.train_y,
                self.train_config,
                seed=round_seed(self.scenario.seed, self.index, job.round),
            )
            delta = (flatten_parameters(self.model) - job.weights).numpy()
            return delta, result.loss, time.perf_counter() - started

        try:
            job.done.set_result(await asyncio.to_thread(work))
        except Exception as error:
            job.done.set_exception(error)
            raise

    async def _evaluate(self) -> tuple[float, float]:
        if self.synthetic is not None:
            return 0.0, 0.0

        def work() -> tuple[float, float]:
            load_flat_parameters(self.model, self.weights)
            return evaluate(self.model, self.test_x, self.test_y)

        return await asyncio.to_thread(work)

    async def _backdoor_success(self) -> float:
        assert self.backdoor is not None
        target = int(self.backdoor.params.get("target", 0))

        def work() -> float:
            load_flat_parameters(self.model, self.weights)
            self.model.eval()

            def predict(x: np.ndarray) -> np.ndarray:
                with torch.no_grad():
                    return self.model(torch.from_numpy(x)).argmax(dim=1).numpy()

            return backdoor_success_rate(predict, self.test_x, self.test_y, target)

        return await asyncio.to_thread(work)

    # ----------------------------------------------------------------------------- rounds
    async def run_round(self, round_: int) -> dict[str, Any]:
        """Train, run the cluster protocol, combine cluster outputs, evaluate, record."""
        self.current_round = round_
        self.metrics.current_round.set(round_)
        self.inbox.forget_before(round_)
        if self.swim is not None:
            self.swim.begin_round()
        started = clock.now()
        assignment = self.assignment(round_)
        timeouts = self.scenario.timeouts
        window = collect_window(
            self._longest_phase_s,
            timeouts.collect_s,
            timeouts.adaptive_factor,
            timeouts.adaptive_floor_s,
        )
        context = RoundContext(
            node_id=self.id,
            round=round_,
            clusters=assignment.clusters,
            dimension=self.dimension,
            inbox=self.inbox,
            send=self.transport.send,
            collect_s=window,
            publishers=self.protocol.publishers or self.scenario.clustering.publishers,
            suspected=self.suspected,
            model_digest=self.weights_digest(),
            role_seed=public_seed(self.scenario.seed),
            relay=self.relay,
        )
        prepare = getattr(self.protocol, "prepare", None)
        if prepare is not None:  # update-independent MPC phases (keys) overlap the training
            prepare(context)

        self.phase = "train"
        done: asyncio.Future[tuple[np.ndarray, float, float]] = (
            asyncio.get_running_loop().create_future()
        )
        await self.learner.ask(TrainJob(round_, self.weights.clone(), done))
        update, train_loss, train_s = await done
        # The defense is part of what an honest node does; a Byzantine node deviates from that.
        update = self.defense.protect(update, round_)
        if self.transform_update is not None:
            update = await self.transform_update(update, round_)
        if self.config.node.audit_traffic:
            self._audit(f"own-r{round_}", {"update": update})

        self.phase = "communicate"
        communicate_started = clock.now()
        inconsistent: set[str] = set()
        diverged = False
        try:
            outputs = await self.protocol.run(context, update.astype(np.float32, copy=False))
            if self.scenario.clustering.echo:
                inconsistent, diverged = await echo_outputs(context, window)
                if inconsistent:
                    log.warning(
                        "%s round %d: publishers %s equivocated; dropping their outputs",
                        self.id,
                        round_,
                        ",".join(sorted(inconsistent)),
                    )
                    outputs = {
                        cluster: chosen
                        for cluster in range(len(assignment.clusters))
                        if (chosen := choose_output(context, cluster, inconsistent)) is not None
                    }
        finally:
            await _settle(context.in_flight, self.scenario.timeouts.rpc_s)
        communicate_s = clock.now() - communicate_started
        if context.phase_seconds:
            self._longest_phase_s = [
                *self._longest_phase_s[-PHASE_HISTORY + 1 :],
                max(context.phase_seconds.values()),
            ]

        self.phase = "aggregate"
        aggregate_started = clock.now()
        flagged: list[int] = []
        received = outputs
        # `isolate`: the quarantine clusters' outputs are left out of the global step, as long
        # as another cluster's output remains. A quarantine cluster stays flagged for the trust
        # scores whether or not it produced an output (its suspects failing their own
        # reconstruction must not clear their scores and send them back among the trusted).
        quarantined = set(assignment.quarantined)
        if quarantined and set(outputs) - quarantined:
            outputs = {c: o for c, o in outputs.items() if c not in quarantined}
        else:
            quarantined = set()
        step_skipped: str | None = None
        step: GlobalStep | None = None
        if outputs:
            try:
                step = combine_cluster_outputs(
                    outputs,
                    self.scenario.aggregation.rule,
                    tolerated_faults(self.scenario),
                    self.scenario.aggregation.pre,
                )
            except TooFewOutputs as error:
                # No global step this round rather than a crash; the round is irregular, so
                # the node re-syncs with the majority afterwards.
                step_skipped = str(error)
                log.warning("%s round %d: no global step: %s", self.id, round_, error)
            else:
                flagged = step.flagged
                self.weights = self.weights + torch.from_numpy(step.delta)
                if step.f_reduced is not None:
                    log.warning(
                        "%s round %d: f reduced from %d to %d (%d cluster outputs)",
                        self.id,
                        round_,
                        step.f_reduced["configured"],
                        step.f_reduced["used"],
                        len(outputs),
                    )
        self.completed_round = round_
        # Group testing across reshuffled clusters: every member of a flagged or quarantined
        # cluster becomes more suspected (`clustering.trust`), and so does every member of a
        # cluster that published no output (with `clustering.missing_output_suspicion`).
        liars = sorted({liar for out in outputs.values() for liar in out.liars})
        if round_ > (self.trust.last_round or 0):
            self.trust.update(
                round_,
                assignment.clusters,
                pooled_tests(
                    len(assignment.clusters),
                    flagged=[*flagged, *quarantined],
                    published=received,
                    missing_severity=self.scenario.clustering.missing_output_suspicion,
                ),
                named=liars,
            )
            self._trust_after[round_] = self.trust.scores
            for old in [r for r in self._trust_after if r < round_ - 3]:
                del self._trust_after[old]
        aggregate_s = clock.now() - aggregate_started

        self.phase = "evaluate"
        accuracy, loss = await self._evaluate()
        backdoor = await self._backdoor_success() if self.backdoor is not None else None
        included = sorted({node for out in outputs.values() for node in out.included})
        excluded = sorted(set(self.view) - set(included))
        self.suspected = unresponsive_after(self.view, assignment.clusters, received)
        duration = clock.now() - started
        record = {
            "event": "round",
            "node": self.id,
            "round": round_,
            "accuracy": accuracy,
            "loss": loss,
            "train_loss": train_loss,
            "duration_s": duration,
            "train_s": train_s,
            "communicate_s": communicate_s,
            "aggregate_s": aggregate_s,
            "phase_s": context.phase_seconds,
            "collect_window_s": window,
            "bytes_sent": self._bytes_sent.pop(round_, 0),
            "bytes_received": self._bytes_received.pop(round_, 0),
            "bytes_by_kind": dict(sorted(self._bytes_by_kind.pop(round_, {}).items())),
            "digest": self.weights_digest(),
            "clusters": assignment.as_lists(),
            "cluster_outputs": {
                str(c): {"included": list(o.included), "publisher": o.publisher}
                for c, o in sorted(outputs.items())
            },
            "failed_clusters": sorted(set(range(len(assignment.clusters))) - set(received)),
            "step_skipped": step_skipped,
            "flagged_clusters": flagged,
            "liars": liars,
            "f": step.f if step is not None else None,
            "f_reduced": step.f_reduced if step is not None else None,
            "backdoor_success": backdoor,
            "excluded": excluded,
            "equivocating_publishers": sorted(inconsistent),
            "diverged": diverged,
            "privacy": self.defense.privacy_report(),
            "membership": self._membership_report(),
            "trust": {
                "suspected": sorted(self.trust.suspected(DEFAULT_SUSPICION_THRESHOLD)),
                "scores": {n: round(v, 4) for n, v in self.trust.scores.items()},
            },
            "quarantined_clusters": sorted(quarantined),
            "time": time.time(),
        }
        if self.synthetic is not None:
            # The global step at a few coordinates, so that a benchmark can check the aggregate
            # against the known sum of the synthetic updates (learning/synthetic.py).
            record["synthetic_probe"] = {
                "indices": self.synthetic_probe,
                "step": [float(step.delta[i]) for i in self.synthetic_probe]
                if step is not None
                else None,
            }
        self.results.write(record)
        for listener in self.round_listeners:
            listener(record)
        self.metrics.rounds_completed.inc()
        self.metrics.round_duration.observe(duration)
        for phase, seconds in (
            ("train", train_s),
            ("communicate", communicate_s),
            ("aggregate", aggregate_s),
        ):
            self.metrics.phase_duration.labels(phase).observe(seconds)
        self.metrics.accuracy.set(accuracy)
        self.metrics.loss.set(loss)
        self.metrics.train_loss.set(train_loss)
        self.metrics.excluded.set(len(excluded))
        for role, actor in (("learner", self.learner), ("aggregator", self.aggregator)):
            self.metrics.mailbox_depth.labels(role).set(actor.mailbox.qsize())
        log.info(
            "%s round %d: accuracy %.4f loss %.4f in %.2fs (excluded: %s)",
            self.id,
            round_,
            accuracy,
            loss,
            duration,
            ",".join(excluded) or "none",
        )
        return record

    def _membership_report(self) -> dict[str, Any] | None:
        """SWIM's view at the end of the round: who is suspected and who was removed."""
        if self.swim is None:
            return None
        states = self.swim.states()
        for state in ("alive", "suspect", "dead", "left", "unknown"):
            self.metrics.members.labels(state).set(sum(1 for s in states.values() if s == state))
        return {"suspected": self.swim.suspected(), "removed": self.swim.removed()}

    async def run(self) -> None:
        """All rounds of the scenario; a node that starts late or falls out of step first joins
        the majority's state (`sync_with_majority`), at a round boundary."""
        if self.synthetic is None:
            await asyncio.to_thread(
                warm_up_training, self.model, self.train_x, self.train_y, self.train_config
            )
        missing = await self.wait_for_peers()
        if self.swim is not None and self.scenario.membership.view == "swim":
            await self._wait_for_settled_membership(len(self.view) - len(missing))
        if await self.sync_with_majority(wait_s=2.0) is not None:
            await self._join_at_round_boundary()
        period = self.scenario.timeouts.round_period_s
        if period > 0:
            await self._sleep_to_grid(period)
        while self.completed_round < self.scenario.rounds:
            record = await self.run_round(self.completed_round + 1)
            behind = len(self.peers_ahead) >= len(self.view) // 2
            irregular = (
                record["step_skipped"]
                or record["excluded"]
                or record["failed_clusters"]
                or record["equivocating_publishers"]
                or record["diverged"]
            )
            if irregular or behind:
                # Something irregular happened: make sure we still hold the majority's model.
                self.peers_ahead.clear()
                await self.sync_with_majority(wait_s=self.scenario.timeouts.collect_s)
            if period > 0:
                await self._sleep_to_grid(period)
        self.phase = "done"
        self.results.write({"event": "done", "node": self.id, "time": time.time()})

    @staticmethod
    async def _sleep_to_grid(period: float) -> None:
        """Paced rounds start on a wall-clock grid shared by every node (NTP-synchronized
        hosts; on virtual time, the loop's clock), so a node that restarted or re-synced starts
        its next round with the others."""
        now = clock.wall()
        await asyncio.sleep(math.ceil(now / period + 1e-9) * period - now)

    async def _wait_for_settled_membership(self, expected: int) -> None:
        """With ``membership.view = "swim"``, round 1's view is SWIM's: wait (up to
        timeouts.startup_s) until every serving peer is alive in it, then for the settle time,
        so that every node freezes the same first view."""
        assert self.swim is not None
        membership = self.scenario.membership
        deadline = clock.now() + self.scenario.timeouts.startup_s
        while len(self.swim.swim.view()) < expected and clock.now() < deadline:
            await asyncio.sleep(membership.period_s / 4)
        await asyncio.sleep((membership.settle_periods + 1) * membership.period_s)

    async def _join_at_round_boundary(self) -> None:
        """A restarted or late node that just adopted the majority's model of round R sits out
        round R + 1 and adopts its result: the majority started R + 1 without it (its peers
        still count it removed, and their round messages to it were lost), so taking part would
        give it a model of its own. It joins in step from round R + 2, by when SWIM has spread
        its return."""
        adopted = self.completed_round
        deadline = clock.now() + 4 * self.scenario.timeouts.collect_s + 10.0
        needed = len(self.view) // 2
        while clock.now() < deadline:
            replies = await asyncio.gather(
                *(self.transport.status(p, 2.0) for p in sorted(self.addresses))
            )
            done = [r for r in replies if r is not None and r.completed_round > adopted]
            if len(done) >= needed or self.completed_round >= self.scenario.rounds:
                break
            await asyncio.sleep(0.2)
        await self.sync_with_majority(wait_s=2.0)
