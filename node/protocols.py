"""How a round's updates become cluster outputs: the pluggable cluster protocols.

A `ClusterProtocol` takes this node's update for round r and returns the output of every cluster
it could obtain. The plaintext protocol (`aggregation.secure = "none"`) runs two phases:

1. *collect*: every dealer sends its update to its cluster's aggregators, the round's
   `publishers` (FedAvg's shape); each aggregator waits for its members' updates until the
   collect deadline and sums those that arrived, in sorted-id order.
2. *publish*: each aggregator sends (sum, included dealers) to every node. Every node then
   picks, per cluster, the output with the most included dealers (ties: the higher-ranked
   publisher), so all nodes that saw the same outputs pick the same one.

The aggregator and publisher roles rotate: each round ranks each cluster's members by a hash of
the public seed, the round and the cluster (`role_order`). A cluster that cannot produce an
output says so with a failure notice (`publish_failure`), so no node waits out a deadline for it.

Only cluster sums leave a cluster in the MPC protocols; in the plaintext protocol the aggregators
see their members' updates by design, and it exists as the baseline.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
from collections.abc import Callable, Collection, Coroutine, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import grpc
import numpy as np

from phalanx.node import clock
from phalanx.node.codec import Message
from phalanx.node.inbox import RoundInbox
from phalanx.node.server import Rejection
from phalanx.node.signing import RELAYED
from phalanx.v1 import node_pb2 as pb

Send = Callable[[str, Message], Coroutine[Any, Any, bool]]


@dataclass(frozen=True)
class ClusterOutput:
    """A cluster's published result: the sum of its included dealers' updates."""

    cluster: int
    total: np.ndarray
    included: tuple[str, ...]
    publisher: str
    liars: tuple[str, ...] = ()
    """Members the publisher caught lying this round (corrected holders, bad dealers)."""

    @property
    def mean(self) -> np.ndarray:
        return self.total / np.float32(len(self.included))


@dataclass
class RoundContext:
    """What a cluster protocol needs to run one round at one node."""

    node_id: str
    round: int
    clusters: Sequence[Sequence[str]]
    dimension: int
    inbox: RoundInbox
    send: Send
    collect_s: float
    publishers: int
    suspected: frozenset[str] = frozenset()
    phase_seconds: dict[str, float] = field(default_factory=dict)
    in_flight: set[asyncio.Task[bool]] = field(default_factory=set)
    model_digest: str = ""
    role_seed: bytes | None = None
    """The public seed that ranks each cluster's members for the aggregator/publisher roles
    each round (`role_order`); None keeps the sorted order in every round."""
    relay: RelayTree | None = None
    """How outputs reach every node: None sends each from its publisher to every node."""

    def post(self, peer: str, message: Message) -> None:
        """Send without waiting: a slow or unreachable peer must not stall this node's phases
        (its retries would push this node past the deadlines the others keep). The node awaits
        or cancels what is still in flight when the round ends."""
        task = asyncio.create_task(self.send(peer, message))
        self.in_flight.add(task)
        task.add_done_callback(self.in_flight.discard)

    async def deliver(self, peer: str, message: Message) -> None:
        """To our own inbox when `peer` is this node, else `post` it."""
        if peer == self.node_id:
            await self.inbox.put(message)
        else:
            self.post(peer, message)

    @property
    def my_cluster(self) -> int:
        for index, members in enumerate(self.clusters):
            if self.node_id in members:
                return index
        raise KeyError(f"{self.node_id} is in no cluster of round {self.round}")

    @property
    def everyone(self) -> list[str]:
        return sorted(node for members in self.clusters for node in members)

    def publishers_of(self, cluster: int) -> list[str]:
        """The members that aggregate and publish `cluster`'s output: the first `publishers` in
        the round's role order (`role_order`) that were not suspected after the previous round.
        The same on every node that agreed on that round; a different member each round, so
        no node carries the roles, and their bytes, round after round."""
        members = sorted(self.clusters[cluster])
        if self.role_seed is not None:
            members = role_order(self.role_seed, self.round, cluster, members)
        trusted = [m for m in members if m not in self.suspected] or members
        return trusted[: self.publishers]


PHASE_HISTORY = 20
"""Rounds of phase times that an adaptive collect window is computed from."""


def collect_window(
    recent_phase_s: Sequence[float], collect_s: float, factor: float | None, floor_s: float
) -> float:
    """The round's collect window: `collect_s`, or with `factor` set and at least 3 rounds
    measured, ``clamp(factor * p95(recent longest phases), floor_s, collect_s)``.

    A failed phase records its whole wait, which raises the percentile again: the window
    shrinks only while phases keep finishing early."""
    if factor is None or len(recent_phase_s) < 3:
        return collect_s
    ordered = sorted(recent_phase_s[-PHASE_HISTORY:])
    p95 = ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]
    return min(collect_s, max(floor_s, factor * p95))


def role_order(seed: bytes, round_: int, cluster: int, members: Collection[str]) -> list[str]:
    """`members` ranked by SHA-256(seed || round || cluster || member): a uniformly random
    order, fresh each round, that every node derives alone from public values."""

    def rank(member: str) -> bytes:
        digest = hashlib.sha256(seed)
        digest.update(f"|roles|{round_}|{cluster}|{member}".encode())
        return digest.digest()

    return sorted(members, key=lambda member: (rank(member), member))


@dataclass(frozen=True)
class RelayTree:
    """Dissemination of cluster outputs along one `fanout`-ary tree per output
    (`clustering.dissemination = "tree"`), instead of from each publisher to every node.

    Every node of the round is ranked once by SHA-256(seed, round) (`role_order` with cluster
    -1). The tree of output j (cluster c, the publisher's role rank p among P publishers,
    j = c P + (p mod P), T = m P outputs) is that ranking rotated by floor(j N / T), without
    its publisher. The publisher sends to positions 0 .. F-1 and the node at position i
    forwards to F (i + 1) .. F (i + 1) + F - 1, as in a heap. Each output crosses N - 1 links,
    as it does sent directly, but the sending is spread: the interior of a tree is its first
    (N - 1)/F positions, and the rotations place each node there in about T/F of the T trees.
    So a node sends about T outputs a round (T (N - 1)/N on average), against N - 1 per
    output for a publisher that sends directly, and the depth is ceil(log_F N) hops.

    A forwarder that believes a child unreachable (SWIM, or two rounds ahead) sends to that
    child's children as well as to the child: under load SWIM declares live nodes dead, and a
    false death then costs F extra sends (a live child forwards too, and the second copies are
    duplicates) instead of the child's output. A relayer that crashes or drops undetected cuts
    off its subtree for that output and round; the post-round state sync repairs the nodes it
    cut off.
    """

    seed: bytes | None
    fanout: int
    publishers: int

    def _order(
        self, round_: int, clusters: Sequence[Sequence[str]], cluster: int, publisher: str
    ) -> list[str]:
        nodes = sorted(node for members in clusters for node in members)
        ranked = role_order(self.seed, round_, -1, nodes) if self.seed is not None else nodes
        members = sorted(clusters[cluster])
        if self.seed is not None:
            members = role_order(self.seed, round_, cluster, members)
        rank = members.index(publisher) if publisher in members else 0
        outputs = max(1, len(clusters) * self.publishers)
        tree = cluster * self.publishers + rank % self.publishers
        shift = tree * len(ranked) // outputs
        rotated = ranked[shift:] + ranked[:shift]
        return [node for node in rotated if node != publisher]

    def children(
        self,
        round_: int,
        clusters: Sequence[Sequence[str]],
        cluster: int,
        publisher: str,
        node: str,
        skip: Collection[str] = (),
    ) -> list[str]:
        """Whom `node` sends `publisher`'s output of `cluster` to (the publisher: the roots)."""
        order = self._order(round_, clusters, cluster, publisher)
        if node == publisher:
            start = 0
        elif node in order:
            start = self.fanout * (order.index(node) + 1)
        else:
            return []
        pending = list(range(start, min(start + self.fanout, len(order))))
        chosen: list[str] = []
        while pending:
            position = pending.pop(0)
            peer = order[position]
            chosen.append(peer)
            if peer in skip:
                first = self.fanout * (position + 1)
                pending += range(first, min(first + self.fanout, len(order)))
        return chosen


class ClusterProtocol(Protocol):
    """Turns one update per dealer into cluster outputs that every node sees."""

    publishers: int | None  # None: as configured (clustering.publishers)

    @property
    def kinds(self) -> frozenset[int]:
        """The message kinds this protocol exchanges (values of `phalanx.v1.MessageKind`)."""
        ...

    def validate(self, message: Message, clusters: Sequence[Sequence[str]], dimension: int) -> None:
        """Raise `Rejection` when `message` cannot belong to this protocol's round."""

    async def run(self, context: RoundContext, update: np.ndarray) -> dict[int, ClusterOutput]:
        """Run the round's phases; return the outputs of the clusters that succeeded."""


def _invalid(detail: str) -> Rejection:
    return Rejection(grpc.StatusCode.INVALID_ARGUMENT, "invalid", detail)


def sender_cluster_members(message: Message, clusters: Sequence[Sequence[str]]) -> list[str]:
    """The sorted members of the message's cluster; rejects an unknown cluster or a sender who
    is not one of them."""
    if not 0 <= message.cluster < len(clusters):
        raise _invalid(f"cluster {message.cluster} does not exist in round {message.round}")
    members = sorted(clusters[message.cluster])
    if message.sender not in members:
        raise _invalid(f"{message.sender} is not a member of cluster {message.cluster}")
    return members


def _check_vector(message: Message, name: str, dimension: int) -> np.ndarray:
    vector = message.tensors.get(name)
    if vector is None:
        raise _invalid(f"{message.kind_name} carries no {name!r} tensor")
    if vector.dtype != np.float32 or vector.shape != (dimension,):
        raise _invalid(
            f"{message.kind_name} tensor {name!r} is {vector.dtype}{list(vector.shape)}, "
            f"the model needs float32[{dimension}]"
        )
    if not np.all(np.isfinite(vector)):
        raise _invalid(f"{message.kind_name} tensor {name!r} holds NaN or infinity")
    return vector


def choose_output(
    context: RoundContext, cluster: int, excluded: Collection[str] = ()
) -> ClusterOutput | None:
    """Per cluster, the published output with the most included dealers (ties: publisher rank),
    ignoring `excluded` publishers, failure notices and publishers named liars by another."""
    got = context.inbox.get(context.round, pb.MESSAGE_KIND_CLUSTER_OUTPUT, cluster)
    ranked = [
        p
        for p in context.publishers_of(cluster)
        if p in got and p not in excluded and FAILED not in got[p].meta
    ]
    if not ranked:
        return None
    # A publisher that another publisher of the cluster caught lying (a corrected holder) is
    # passed over: its own output would not name itself.
    named = {n for p in ranked for n in _names(got[p].meta.get("liars", "")) if n != p}
    ranked = [p for p in ranked if p not in named] or ranked

    def preference(publisher: str) -> tuple[int, int]:
        size = len(got[publisher].meta["included"].split(","))
        return (-size, ranked.index(publisher))

    best = min(ranked, key=preference)
    message = got[best]
    included = tuple(message.meta["included"].split(","))
    liars = tuple(_names(message.meta.get("liars", "")))
    return ClusterOutput(cluster, message.tensors["sum"], included, best, liars)


async def await_cluster_outputs(
    context: RoundContext, since: float, wait_s: float
) -> dict[int, ClusterOutput]:
    """Wait until every cluster's unsuspected publishers have published (or `since + wait_s`),
    then choose one output per cluster."""
    r = context.round

    def complete() -> bool:
        for cluster in range(len(context.clusters)):
            got = context.inbox.get(r, pb.MESSAGE_KIND_CLUSTER_OUTPUT, cluster)
            waiting = [p for p in context.publishers_of(cluster) if p not in context.suspected]
            if not got and set(waiting) - context.inbox.unreachable():
                return False
            if not set(waiting) - context.inbox.unreachable() <= got.keys():
                return False
        return True

    await context.inbox.wait_until(since + wait_s, complete)
    context.phase_seconds["publish"] = clock.now() - since
    return {
        cluster: chosen
        for cluster in range(len(context.clusters))
        if (chosen := choose_output(context, cluster)) is not None
    }


def output_digest(message: Message) -> str:
    """SHA-256 over a published cluster output's sum and included list (for echoes); over the
    reason of a failure notice."""
    if FAILED in message.meta:
        return hashlib.sha256(b"failed|" + message.meta[FAILED].encode()).hexdigest()[:32]
    digest = hashlib.sha256(message.tensors["sum"].astype("<f4").tobytes())
    digest.update(message.meta.get("included", "").encode())
    digest.update(b"|" + message.meta.get("liars", "").encode())
    return digest.hexdigest()[:32]


def echo_report(context: RoundContext) -> str:
    """`cluster:publisher:digest` for every cluster output this node received this round."""
    entries = []
    for cluster in range(len(context.clusters)):
        got = context.inbox.get(context.round, pb.MESSAGE_KIND_CLUSTER_OUTPUT, cluster)
        entries += [f"{cluster}:{p}:{output_digest(m)}" for p, m in sorted(got.items())]
    return ";".join(entries)


def parse_echo(text: str) -> dict[tuple[int, str], str]:
    report: dict[tuple[int, str], str] = {}
    for entry in filter(None, text.split(";")):
        cluster, publisher, digest = entry.split(":")
        report[(int(cluster), publisher)] = digest
    return report


async def echo_outputs(context: RoundContext, wait_s: float) -> tuple[set[str], bool]:
    """One echo step against equivocation (cf. Bracha's echo broadcast, 1987).

    Every node tells every node which cluster outputs it received (as digests). A publisher that
    sent different contents to different reporters is inconsistent: every node drops its outputs
    and chooses among the consistent publishers, so nodes that heard the same echoes choose the
    same outputs. Each echo also carries the digest of the model the sender started the round
    from. Returns the inconsistent publishers and whether the echoing nodes' models diverged.
    Assumes the echoes themselves are honest; Byzantine echoers that lie selectively can still
    split honest nodes, which the post-round majority sync then repairs.
    """
    echo = Message(
        context.node_id,
        context.round,
        pb.MESSAGE_KIND_ECHO,
        -1,
        meta={"outputs": echo_report(context), "model": context.model_digest},
    )
    await broadcast(context, echo, context.everyone)
    live = [n for n in context.everyone if n not in context.suspected or n == context.node_id]
    started = clock.now()
    echoes = await context.inbox.wait_for(
        context.round, pb.MESSAGE_KIND_ECHO, -1, live, started + wait_s
    )
    context.phase_seconds["echo"] = clock.now() - started
    reports = [parse_echo(m.meta["outputs"]) for _, m in sorted(echoes.items())]
    seen = {key for report in reports for key in report}
    inconsistent = set()
    for key in seen:
        # Only two different contents prove equivocation; a reporter that lacks an output may
        # just be late or cut off (omission is left to the post-round majority sync).
        digests = {report[key] for report in reports if key in report}
        if len(digests) > 1:
            inconsistent.add(key[1])
    # Nodes that started this round from different models have diverged (a partition, a lost
    # output): the node then re-joins the majority's state after the round.
    diverged = len({m.meta.get("model", "") for m in echoes.values()}) > 1
    return inconsistent, diverged


def _names(text: str) -> list[str]:
    """The names of a comma-separated metadata field (``included``, ``liars``, ``held``, ...)."""
    return [name for name in text.split(",") if name]


def validate_cluster_output(message: Message, members: Sequence[str], dimension: int) -> None:
    """A cluster output (sum, included dealers, liars) or a failure notice (reason only)."""
    if FAILED in message.meta:
        if message.tensors or set(message.meta) != {FAILED}:
            raise _invalid("a failure notice carries its reason and nothing else")
        if len(message.meta[FAILED]) > 200:
            raise _invalid("failure reason longer than 200 characters")
        return
    _check_vector(message, "sum", dimension)
    included = _names(message.meta.get("included", ""))
    if not included or len(set(included)) != len(included):
        raise _invalid("cluster output lists no or duplicate included dealers")
    if not set(included) <= set(members):
        raise _invalid("cluster output includes dealers outside the cluster")
    liars = _names(message.meta.get("liars", ""))
    if len(set(liars)) != len(liars) or not set(liars) <= set(members):
        raise _invalid("cluster output names liars outside the cluster")


def publish_output(
    context: RoundContext,
    total: np.ndarray,
    included: Sequence[str],
    liars: Sequence[str] = (),
) -> Message:
    """The CLUSTER_OUTPUT message a publisher sends to every node: the sum, its dealers and the
    members it caught lying (signed with the output, so every node names the same ones)."""
    meta = {"included": ",".join(included)}
    if liars:
        meta["liars"] = ",".join(sorted(liars))
    return Message(
        context.node_id,
        context.round,
        pb.MESSAGE_KIND_CLUSTER_OUTPUT,
        context.my_cluster,
        {"sum": total},
        meta=meta,
    )


FAILED = "failed"
"""Metadata key of a failure notice: a CLUSTER_OUTPUT with a reason and no sum."""


async def publish_failure(context: RoundContext, reason: str) -> None:
    """Tell every node that this cluster has no output this round, so that no node waits out
    its publish deadline for it (a failed cluster costs one message, not a deadline)."""
    notice = Message(
        context.node_id,
        context.round,
        pb.MESSAGE_KIND_CLUSTER_OUTPUT,
        context.my_cluster,
        meta={FAILED: reason[:200]},
    )
    await broadcast(context, notice, context.everyone)


def has_failed(context: RoundContext, cluster: int, publisher: str) -> bool:
    """Whether `publisher` sent a failure notice for `cluster` this round."""
    got = context.inbox.get(context.round, pb.MESSAGE_KIND_CLUSTER_OUTPUT, cluster)
    return publisher in got and FAILED in got[publisher].meta


async def wait_for_publisher(
    context: RoundContext, kind: int, publisher: str, deadline: float
) -> Message | None:
    """`publisher`'s message of `kind` in our cluster, waiting until it arrives, the publisher
    gives up on the cluster (failure notice) or is unreachable, or `deadline` passes."""
    inbox, r, mine = context.inbox, context.round, context.my_cluster

    def decided() -> bool:
        return (
            publisher in inbox.get(r, kind, mine)
            or has_failed(context, mine, publisher)
            or publisher in inbox.unreachable()
        )

    await inbox.wait_until(deadline, decided)
    return inbox.get(r, kind, mine).get(publisher)


async def disseminate(context: RoundContext, output: Message) -> None:
    """Send our cluster's output to every node: directly, or signed for every node (`RELAYED`)
    to the roots of its relay tree, whose nodes forward it (`RelayTree`)."""
    if context.relay is None:
        await broadcast(context, output, context.everyone)
        return
    roots = context.relay.children(
        context.round,
        context.clusters,
        output.cluster,
        context.node_id,
        context.node_id,
        skip=context.inbox.unreachable(),
    )
    await broadcast(context, replace(output, recipient=RELAYED), roots)


async def broadcast(context: RoundContext, message: Message, recipients: Sequence[str]) -> None:
    """Put our own copy in the inbox and post it to every other recipient."""
    await context.inbox.put(message)
    for peer in recipients:
        if peer != context.node_id:
            context.post(peer, message)


class PlaintextClusterProtocol:
    """Baseline, as in FedAvg (McMahan et al. 2017): each member sends its update in the clear
    to its cluster's aggregators (the round's `publishers`) only; they sum and publish."""

    kinds = frozenset({pb.MESSAGE_KIND_UPDATE, pb.MESSAGE_KIND_CLUSTER_OUTPUT})
    publishers: int | None = None

    def validate(self, message: Message, clusters: Sequence[Sequence[str]], dimension: int) -> None:
        members = sender_cluster_members(message, clusters)
        if message.kind == pb.MESSAGE_KIND_UPDATE:
            _check_vector(message, "update", dimension)
            return
        validate_cluster_output(message, members, dimension)

    async def run(self, context: RoundContext, update: np.ndarray) -> dict[int, ClusterOutput]:
        me, r, mine = context.node_id, context.round, context.my_cluster
        members = sorted(context.clusters[mine])
        started = clock.now()
        aggregators = context.publishers_of(mine)
        own = Message(me, r, pb.MESSAGE_KIND_UPDATE, mine, {"update": update})
        for aggregator in aggregators:
            await context.deliver(aggregator, own)
        if me in aggregators:
            expected = [m for m in members if m not in context.suspected or m == me]
            received = await context.inbox.wait_for(
                r, pb.MESSAGE_KIND_UPDATE, mine, expected, started + context.collect_s
            )
        context.phase_seconds["collect"] = clock.now() - started

        published = clock.now()
        if me in aggregators:
            included = tuple(sorted(received))
            total = np.zeros(context.dimension, dtype=np.float32)
            for dealer in included:
                total += received[dealer].tensors["update"]
            await disseminate(context, publish_output(context, total, included))

        # Other clusters may still be waiting out their own collect deadline.
        return await await_cluster_outputs(context, published, 2 * context.collect_s)
