"""The node's side of SWIM: drives `clustering.membership.SwimMember` over the gRPC transport.

`clustering.membership` is a sans-I/O state machine; this actor owns its clock and sockets. It
ticks the machine a few times per protocol period, sends what the machine returns as
`PING`/`PING_REQ`/`ACK`/`JOIN`/`LEAVE` envelopes (the SWIM message, Ed25519-signed by the
machine, travels as a byte tensor), feeds received envelopes back, and turns the machine's state
changes into records named by the configured peer names (``suspect``, ``dead`` = removed,
``alive`` again after a removal = rejoined).

Identity binding: a peer's SWIM id is ``hex(SHA-256(public key))[:16]`` (`clustering.identity`).
With the peers' public keys configured, an envelope whose SWIM origin is not the key of the
envelope's sender is refused (``identity_mismatch``), and the configured keys are the allow-list
unless membership is ``open``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from phalanx.clustering.identity import NodeIdentity, node_id_from_public_key
from phalanx.clustering.membership import (
    PROTO_KIND_NAMES,
    REJECTION_ERRORS,
    MembershipMessage,
    MemberState,
    Outgoing,
    SwimConfig,
    SwimMember,
)
from phalanx.node import clock
from phalanx.node.codec import Message
from phalanx.node.config import MembershipConfig
from phalanx.node.transport import Transport
from phalanx.v1 import node_pb2 as pb

log = logging.getLogger("phalanx.membership")

MEMBERSHIP_KINDS: frozenset[int] = frozenset(
    pb.MessageKind.Value(name) for name in PROTO_KIND_NAMES.values()
)
_PROTO_KIND = {kind: pb.MessageKind.Value(name) for kind, name in PROTO_KIND_NAMES.items()}
TICKS_PER_PERIOD = 5
INTRODUCE_EVERY_PERIODS = 2
"""How often JOINs go to configured peers SWIM has not heard of yet (`SwimMember.introduce`)."""


class MembershipService:
    """Runs SWIM for one node and answers "who is alive, suspected, removed" by peer name."""

    def __init__(
        self,
        name: str,
        identity: NodeIdentity,
        address: str,
        peers: Mapping[str, str],
        peer_keys: Mapping[str, bytes],
        config: MembershipConfig,
        transport: Transport,
        seed: int,
        on_reject: Callable[[str, str], None],
        record: Callable[[dict[str, Any]], None],
    ) -> None:
        self.name = name
        self.config = config
        self.transport = transport
        self.peers = dict(peers)
        self._on_reject = on_reject
        self._record = record
        self._name_by_address = {address: peer for peer, address in self.peers.items()}
        self._name_by_swim_id = {node_id_from_public_key(k): p for p, k in peer_keys.items()}
        self._swim_id_by_name = {p: i for i, p in self._name_by_swim_id.items()}
        self._name_by_swim_id[identity.node_id] = name
        keyed = set(peer_keys) >= set(self.peers)
        allow_list = None if config.open or not keyed else frozenset(self._name_by_swim_id)
        swim_config = SwimConfig(
            protocol_period=config.period_s,
            ack_timeout=config.ack_timeout_s,
            indirect_probes=config.indirect_probes,
            suspicion_multiplier=config.suspicion_multiplier,
            settle_periods=config.settle_periods,
            allow_list=allow_list,
        )
        self.swim = SwimMember(
            identity, address, sorted(self.peers.values()), swim_config, rng_seed=seed
        )
        self.removed_ever: set[str] = set()
        self.unreachable: frozenset[str] = frozenset()
        """Peers the current round stops waiting for: removed (dead or left) now, or at any time
        since the round began (a peer that crashed and restarted mid-round has lost this round's
        messages and will not complete it). Mere suspicion is not enough: under CPU load live
        nodes miss probes, and not waiting for them would split the honest nodes' dealer sets."""
        self._removed_this_round: set[str] = set()
        self.on_unreachable_change: Callable[[], None] = lambda: None
        self.events: list[dict[str, Any]] = []
        self._in_flight: set[asyncio.Task[bool]] = set()
        self._task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ queries (by peer name)
    def peer_name(self, swim_id: str) -> str | None:
        name = self._name_by_swim_id.get(swim_id)
        if name is None:
            info = self.swim.members().get(swim_id)
            if info is not None:
                name = self._name_by_address.get(info.address)
        return name

    def states(self) -> dict[str, str]:
        """Each configured peer's state in this node's view (``unknown`` before it was heard)."""
        known: dict[str, str] = {}
        for swim_id, info in self.swim.members().items():
            name = self.peer_name(swim_id)
            if name is not None:
                known[name] = info.state.value
        # A removed member whose tombstone expired is still gone until it rejoins.
        return {
            peer: known.get(peer, "dead" if peer in self.removed_ever else "unknown")
            for peer in sorted(self.peers)
        }

    def suspected(self) -> list[str]:
        return [p for p, s in self.states().items() if s == MemberState.SUSPECT.value]

    def removed(self) -> list[str]:
        return [p for p, s in self.states().items() if s in ("dead", "left")]

    def round_view(self, round_: int) -> list[str]:
        """The SWIM view frozen for `round_` (first call wins), as peer names, this node first
        joined or not."""
        frozen = self.swim.snapshot_for_round(round_, clock.now())
        names = {self.peer_name(i) for i in frozen}
        names.add(self.name)
        return sorted(n for n in names if n is not None)

    # ------------------------------------------------------------------ driving
    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="swim")

    async def stop(self, leave: bool = True) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if leave:
            self._send_all(self.swim.leave(clock.now()))
        if self._in_flight:
            await asyncio.wait(self._in_flight, timeout=self.config.period_s)

    async def _run(self) -> None:
        step = self.config.period_s / TICKS_PER_PERIOD
        ticks = 0
        while True:
            try:
                self._send_all(self.swim.tick(clock.now()))
                if ticks % (INTRODUCE_EVERY_PERIODS * TICKS_PER_PERIOD) == 0:
                    unknown = [self.peers[p] for p, s in self.states().items() if s == "unknown"]
                    self._send_all(self.swim.introduce(unknown))
                ticks += 1
                self._drain_events()
            except Exception:  # a bug here must not stop failure detection for good
                log.exception("%s: SWIM tick failed", self.name)
            await asyncio.sleep(step)

    def handle(self, message: Message) -> None:
        """One received membership envelope: authenticate, bind to its sender, apply, answer."""
        payload = message.tensors.get("swim")
        if payload is None or payload.dtype != np.uint8 or payload.ndim != 1:
            self._reject("invalid", message.sender, "membership envelope without a swim tensor")
            return
        try:
            parsed = MembershipMessage.from_bytes(
                payload.tobytes(), self.swim.config.max_message_bytes
            )
            expected = self._swim_id_by_name.get(message.sender)
            if expected is not None and parsed.sender != expected:
                self._reject(
                    "identity_mismatch",
                    message.sender,
                    f"SWIM message signed as {parsed.sender}, not {message.sender}'s key",
                )
                return
            outgoing = self.swim.on_message(parsed, clock.now())
        except REJECTION_ERRORS as error:
            reason = type(error).__name__.removesuffix("Error").lower()
            self._reject(f"membership_{reason}", message.sender, str(error))
            return
        self._send_all(outgoing)
        self._drain_events()

    def _reject(self, reason: str, sender: str, detail: str) -> None:
        log.warning("%s: rejected membership message from %s: %s", self.name, sender, detail)
        self._on_reject(reason, sender)

    def _send_all(self, outgoing: list[Outgoing]) -> None:
        for item in outgoing:
            recipient = self._name_by_swim_id.get(item.recipient) if item.recipient else None
            recipient = recipient or self._name_by_address.get(item.address)
            if recipient is None or recipient == self.name:
                log.debug(
                    "%s: no configured peer at %s; SWIM message dropped", self.name, item.address
                )
                continue
            envelope = Message(
                self.name,
                0,
                _PROTO_KIND[item.message.kind],
                -1,
                {"swim": np.frombuffer(item.payload(), dtype=np.uint8)},
            )
            task = asyncio.get_running_loop().create_task(
                self.transport.send_once(recipient, envelope, self.config.period_s)
            )
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)

    def begin_round(self) -> None:
        """Forget removals undone before this round (rejoined members are waited for again)."""
        self._removed_this_round = set(self.removed())
        self._update_unreachable()

    def _update_unreachable(self) -> None:
        unreachable = frozenset(self.removed()) | self._removed_this_round
        if unreachable != self.unreachable:
            self.unreachable = unreachable
            self.on_unreachable_change()

    def _drain_events(self) -> None:
        events = self.swim.drain_events()
        for event in events:
            name = self.peer_name(event.node_id)
            if name is not None and event.state in (MemberState.DEAD, MemberState.LEFT):
                self._removed_this_round.add(name)
        if events:
            self._update_unreachable()
        for event in events:
            name = self.peer_name(event.node_id)
            if name is None:
                continue
            state = event.state.value
            rejoined = state == "alive" and name in self.removed_ever
            if state in ("dead", "left"):
                self.removed_ever.add(name)
            elif rejoined:
                self.removed_ever.discard(name)
            record = {
                "event": "membership",
                "node": self.name,
                "member": name,
                "state": "rejoined" if rejoined else state,
                "incarnation": event.incarnation,
                "time": time.time(),
            }
            self.events.append(record)
            self._record(record)
            log.info(
                "%s: %s is %s (incarnation %d)", self.name, name, record["state"], event.incarnation
            )
