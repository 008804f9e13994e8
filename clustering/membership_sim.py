"""A deterministic discrete-time network for exercising `SwimMember` without sockets or clocks.

Nodes exchange the real signed bytes (`Outgoing.payload()`), so the simulation covers the wire
format and every check a receiver makes. The clock is simulated; message latency, loss,
partitions and crash/restart are driven by one seeded `random.Random`, so a given seed always
produces the same run. Node keys are derived from the seed (Ed25519 signing is deterministic).
"""

from __future__ import annotations

import hashlib
import heapq
import random
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from phalanx.clustering.identity import NodeIdentity
from phalanx.clustering.membership import (
    REJECTION_ERRORS,
    MembershipEvent,
    Outgoing,
    SwimConfig,
    SwimMember,
)


def deterministic_identity(seed: int, index: int) -> NodeIdentity:
    """An Ed25519 identity whose private key is SHA-256("phalanx-sim/seed/index")."""
    digest = hashlib.sha256(f"phalanx-sim/{seed}/{index}".encode()).digest()
    return NodeIdentity(Ed25519PrivateKey.from_private_bytes(digest))


@dataclass(order=True)
class _InFlight:
    deliver_at: float
    order: int
    source: int = field(compare=False)
    destination: int = field(compare=False)
    payload: bytes = field(compare=False)


@dataclass(frozen=True)
class Rejection:
    """A message a node refused, with the exception it raised."""

    time: float
    node: int
    error: ValueError


class SimNetwork:
    """N `SwimMember`s on a simulated network; node 0 is the seed the others join through.

    `tick_interval` is how often each node's `tick` runs (a tenth of a period by default);
    `latency` bounds the uniform one-way delay; `loss` is the independent drop probability.
    """

    def __init__(
        self,
        size: int,
        seed: int = 0,
        config: SwimConfig | None = None,
        *,
        loss: float = 0.0,
        latency: tuple[float, float] = (0.005, 0.03),
        tick_interval: float | None = None,
        seed_nodes: Sequence[int] = (0,),
    ) -> None:
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        if not 0.0 <= loss < 1.0:
            raise ValueError(f"loss must be in [0, 1), got {loss}")
        if not 0.0 <= latency[0] <= latency[1]:
            raise ValueError(f"latency must be (low, high) with 0 <= low <= high, got {latency}")
        self.size = size
        self.seed = seed
        self.config = config if config is not None else SwimConfig()
        self.loss = loss
        self.latency = latency
        self.tick_interval = (
            tick_interval if tick_interval is not None else self.config.protocol_period / 10
        )
        self.now = 0.0
        self.rng = random.Random(seed)
        self.identities = [deterministic_identity(seed, index) for index in range(size)]
        self.ids = [identity.node_id for identity in self.identities]
        self.addresses = [f"sim://{index}" for index in range(size)]
        self._by_address = {address: index for index, address in enumerate(self.addresses)}
        self.seed_addresses = [self.addresses[index] for index in seed_nodes]
        self.nodes: list[SwimMember | None] = [None] * size
        self._boots = [0] * size
        self._queue: list[_InFlight] = []
        self._order = 0
        self._groups: dict[int, int] | None = None
        self._blocked: set[frozenset[int]] = set()
        self.rejections: list[Rejection] = []
        self.events: list[tuple[int, MembershipEvent]] = []
        self.delivered = 0
        self.trace = hashlib.sha256()
        for index in range(size):
            self.start(index)

    # ---------------------------------------------------------------- control

    def start(self, index: int, incarnation: int = 0) -> SwimMember:
        """Boot node `index` with fresh state (a restart when it ran before)."""
        self._boots[index] += 1
        member = SwimMember(
            self.identities[index],
            self.addresses[index],
            seeds=self.seed_addresses,
            config=self.config,
            rng_seed=self.seed * 1_000_003 + index * 1009 + self._boots[index],
            incarnation=incarnation,
        )
        self.nodes[index] = member
        return member

    def crash(self, index: int) -> None:
        """Stop node `index` abruptly: its state is lost and messages to it are dropped."""
        self.nodes[index] = None

    def leave(self, index: int) -> None:
        """Node `index` leaves gracefully and then stops."""
        member = self._node(index)
        self._send(index, member.leave(self.now))
        self.nodes[index] = None

    def partition(self, *groups: Collection[int]) -> None:
        """Only nodes in the same group can talk; nodes in no group form one more group."""
        self._groups = {}
        for group_index, group in enumerate(groups):
            for node in group:
                self._groups[node] = group_index
        for node in range(self.size):
            self._groups.setdefault(node, len(groups))

    def heal(self) -> None:
        """Remove the partition and every blocked link."""
        self._groups = None
        self._blocked.clear()

    def block_link(self, first: int, second: int) -> None:
        """Drop every message between two nodes (both directions), others unaffected."""
        self._blocked.add(frozenset((first, second)))

    def inject(self, destination: int, payload: bytes) -> None:
        """Deliver raw bytes to a node now, as if from the network (for adversarial tests)."""
        self._deliver(-1, destination, payload)

    # ---------------------------------------------------------------- running

    def run(self, seconds: float) -> None:
        self.run_until(lambda: False, seconds)

    def run_until(self, condition: Callable[[], bool], max_seconds: float) -> bool:
        """Advance until `condition()` holds (checked after each step) or time runs out."""
        end = self.now + max_seconds
        while self.now < end - 1e-9:
            self._step()
            if condition():
                return True
        return condition()

    def _step(self) -> None:
        self.now = round(self.now + self.tick_interval, 9)
        while self._queue and self._queue[0].deliver_at <= self.now:
            item = heapq.heappop(self._queue)
            if self._connected(item.source, item.destination):
                self._deliver(item.source, item.destination, item.payload)
        for index in range(self.size):
            member = self.nodes[index]
            if member is not None:
                self._send(index, member.tick(self.now))
                self._collect(index, member)

    def _deliver(self, source: int, destination: int, payload: bytes) -> None:
        member = self.nodes[destination]
        if member is None:
            return
        self.delivered += 1
        self.trace.update(f"{self.now:.6f}|{source}|{destination}|".encode() + payload)
        try:
            replies = member.on_bytes(payload, self.now)
        except REJECTION_ERRORS as error:
            self.rejections.append(Rejection(self.now, destination, error))
            return
        self._send(destination, replies)
        self._collect(destination, member)

    def _send(self, source: int, outgoing: Sequence[Outgoing]) -> None:
        for item in outgoing:
            destination = self._by_address.get(item.address)
            if destination is None or self.rng.random() < self.loss:
                continue
            low, high = self.latency
            self._order += 1
            heapq.heappush(
                self._queue,
                _InFlight(
                    round(self.now + self.rng.uniform(low, high), 9),
                    self._order,
                    source,
                    destination,
                    item.payload(),
                ),
            )

    def _connected(self, source: int, destination: int) -> bool:
        if frozenset((source, destination)) in self._blocked:
            return False
        if self._groups is None:
            return True
        return self._groups[source] == self._groups[destination]

    def _collect(self, index: int, member: SwimMember) -> None:
        self.events.extend((index, event) for event in member.drain_events())

    # ---------------------------------------------------------------- inspection

    def _node(self, index: int) -> SwimMember:
        member = self.nodes[index]
        if member is None:
            raise ValueError(f"node {index} is not running")
        return member

    def running(self) -> list[int]:
        return [index for index, member in enumerate(self.nodes) if member is not None]

    def view_of(self, index: int) -> list[str]:
        return self._node(index).view()

    def ids_of(self, indices: Collection[int]) -> list[str]:
        return sorted(self.ids[index] for index in indices)

    def views_equal(self, indices: Collection[int], expected: Collection[int]) -> bool:
        """Every node in `indices` has exactly the members `expected` in its view."""
        wanted = self.ids_of(expected)
        return all(self.view_of(index) == wanted for index in indices)
