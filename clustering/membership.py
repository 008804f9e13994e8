"""SWIM-style membership as a pure, deterministic, sans-I/O state machine.

Protocol: Das, Gupta and Motivala, "SWIM: Scalable Weakly-consistent Infection-style Process
Group Membership Protocol" (DSN 2002), with the incarnation ordering of its section 4.2 and the
"tell the suspect" idea of Dadgar et al., "Lifeguard" (2018). The owner calls `tick(now)` a few
times per protocol period and `on_message(message, now)` for each received message; both return
`Outgoing` items the owner sends. Nothing here opens a socket, reads a clock or sleeps.

Failure detection, per protocol period ``T`` (SWIM section 3.1):

* ping one member taken round-robin from a list reshuffled after each full pass (section 4.3,
  so every member is probed within ``2n - 1`` periods);
* no ACK within ``ack_timeout`` -> ``PING_REQ`` to ``k`` random members, which ping on our behalf;
* no ACK by the end of the period -> the member is *suspected* at its incarnation ``i``;
* still suspected after ``suspicion_multiplier * max(1, log10 n) * T`` -> *dead* (removed).

Updates are ordered by incarnation (SWIM section 4.2): ``Alive(j)`` overrides ``Suspect(i)`` and
``Alive(i)`` when ``j > i``; ``Suspect(j)`` overrides ``Alive(i)`` when ``j >= i``; ``Dead(j)``
and ``Left(j)`` override both when ``j >= i``. A node that hears itself suspected or declared
dead refutes with incarnation ``i + 1``. Each update is piggy-backed on at most
``ceil(retransmit_multiplier * ln(n + 1))`` messages (the ``lambda log n`` of section 4.1).

Byzantine hardening beyond SWIM: every message is Ed25519-signed by its sender
(`clustering.identity`), and every ``Alive``/``Left`` claim is self-signed by its subject, so no
node can invent an incarnation, an address, a key or a departure for another node; only
``Suspect``/``Dead`` claims can be made about others, and the subject refutes them. Replays are
caught by a per-sender sliding window over (incarnation, sequence); JOIN floods by token buckets.

Healing: dead members are remembered as tombstones; every `reconnect_periods` periods a node
pings one of them and tells it it was declared dead, so both halves of a healed partition refute
and re-admit each other; a node left alone keeps sending JOIN to its seeds.

Known limits: a Byzantine helper can falsely ACK a PING_REQ (it vouches without proof) and a
Byzantine node can spread Suspect/Dead claims (the subject refutes them, at the cost of churn);
a JOIN is answered at the address it names (bounded by the join buckets); and SWIM is only
eventually consistent, so `snapshot_for_round` agrees across honest nodes only when membership
was stable for `settle_periods` before the round start.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, TypeVar

from phalanx.clustering.identity import (
    NODE_ID_HEX_CHARS,
    PUBLIC_KEY_BYTES,
    SIGNATURE_BYTES,
    IdentityError,
    NodeIdentity,
    NotAllowedError,
    check_allowed,
    signing_payload,
    verify,
    verify_message,
)

WIRE_VERSION = 1
MAX_ADDRESS_CHARS = 256
MAX_UPDATES_PER_MESSAGE = 4096


class MemberState(StrEnum):
    """A member's state in one node's view (SWIM section 4.2 plus graceful leave)."""

    ALIVE = "alive"
    SUSPECT = "suspect"
    DEAD = "dead"
    LEFT = "left"


class MessageKind(StrEnum):
    """Membership message kinds; `PROTO_KIND_NAMES` maps them to `phalanx.v1.MessageKind`."""

    PING = "ping"
    PING_REQ = "ping_req"
    ACK = "ack"
    JOIN = "join"
    LEAVE = "leave"


PROTO_KIND_NAMES: dict[MessageKind, str] = {
    MessageKind.PING: "MESSAGE_KIND_PING",
    MessageKind.PING_REQ: "MESSAGE_KIND_PING_REQ",
    MessageKind.ACK: "MESSAGE_KIND_ACK",
    MessageKind.JOIN: "MESSAGE_KIND_JOIN",
    MessageKind.LEAVE: "MESSAGE_KIND_LEAVE",
}
"""Name of the `phalanx.v1.MessageKind` enum value that carries each membership kind."""

_T = TypeVar("_T")
_IN_VIEW = (MemberState.ALIVE, MemberState.SUSPECT)
_GONE = (MemberState.DEAD, MemberState.LEFT)


# --------------------------------------------------------------------------------------------
# Rejections


class MembershipError(ValueError):
    """Base class of every membership message this node rejects (log it and drop the message)."""


class MalformedMessageError(MembershipError):
    """The bytes or fields do not form a valid membership message."""


class WrongEpochError(MembershipError):
    """The message belongs to another membership epoch (another deployment or a reset)."""


class WrongRecipientError(MembershipError):
    """The message is addressed to another node (a signed message redirected to us)."""


class StaleMessageError(MembershipError):
    """The message is older than the replay window or than the sender's known incarnation."""


class ReplayedMessageError(MembershipError):
    """A message with this (incarnation, sequence) from this sender was already accepted."""


class ForgedUpdateError(MembershipError):
    """A piggy-backed Alive/Left claim is not validly self-signed by the node it is about."""


class JoinRateLimitedError(MembershipError):
    """Too many JOIN requests, from this sender or from everyone together."""


REJECTION_ERRORS: tuple[type[ValueError], ...] = (MembershipError, IdentityError)
"""Catch these around `on_message`/`on_bytes`: every rejection raises one of them."""


# --------------------------------------------------------------------------------------------
# Wire format


def _check_node_id(name: str, value: object, *, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise MalformedMessageError(f"{name} must be a string, got {type(value).__name__}")
    if allow_empty and value == "":
        return value
    if len(value) != NODE_ID_HEX_CHARS or any(c not in "0123456789abcdef" for c in value):
        raise MalformedMessageError(
            f"{name} must be {NODE_ID_HEX_CHARS} lowercase hex characters, got {value[:40]!r}"
        )
    return value


def _check_uint(name: str, value: object, bits: int = 64) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**bits:
        raise MalformedMessageError(f"{name} must be an integer in [0, 2**{bits}), got {value!r}")
    return value


def _check_hex(name: str, value: object, lengths: Collection[int]) -> bytes:
    if not isinstance(value, str):
        raise MalformedMessageError(f"{name} must be a hex string, got {type(value).__name__}")
    try:
        raw = bytes.fromhex(value)
    except ValueError as error:
        raise MalformedMessageError(f"{name} is not valid hex: {error}") from error
    if len(raw) not in lengths:
        raise MalformedMessageError(f"{name} must be {sorted(lengths)} bytes, got {len(raw)}")
    return raw


def _check_address(name: str, value: object) -> str:
    if not isinstance(value, str) or len(value) > MAX_ADDRESS_CHARS:
        raise MalformedMessageError(
            f"{name} must be a string of at most {MAX_ADDRESS_CHARS} characters, got {value!r:.60}"
        )
    return value


@dataclass(frozen=True)
class MemberUpdate:
    """One membership claim: `node_id` is in `state` at `incarnation`.

    ``Alive`` and ``Left`` claims carry the subject's `address`, raw Ed25519 `public_key` and a
    `proof`: the subject's signature over `claim_payload`, so they can be relayed by anyone but
    forged by no one. ``Suspect``/``Dead`` claims carry only id, state and incarnation.
    """

    node_id: str
    state: MemberState
    incarnation: int
    address: str = ""
    public_key: bytes = b""
    proof: bytes = b""

    @property
    def self_signed(self) -> bool:
        return self.state in (MemberState.ALIVE, MemberState.LEFT)

    def to_wire(self) -> list[Any]:
        return [
            self.node_id,
            self.state.value,
            self.incarnation,
            self.address,
            self.public_key.hex(),
            self.proof.hex(),
        ]

    @classmethod
    def from_wire(cls, item: object, name: str = "update") -> MemberUpdate:
        if not isinstance(item, list) or len(item) != 6:
            raise MalformedMessageError(f"{name} must be a list of 6 fields, got {item!r:.80}")
        node_id = _check_node_id(f"{name}.node_id", item[0])
        try:
            state = MemberState(item[1])
        except ValueError as error:
            raise MalformedMessageError(
                f"{name}.state {item[1]!r} is not a member state"
            ) from error
        incarnation = _check_uint(f"{name}.incarnation", item[2])
        address = _check_address(f"{name}.address", item[3])
        if state in (MemberState.ALIVE, MemberState.LEFT):
            public_key = _check_hex(f"{name}.public_key", item[4], (PUBLIC_KEY_BYTES,))
            proof = _check_hex(f"{name}.proof", item[5], (SIGNATURE_BYTES,))
        else:
            public_key = _check_hex(f"{name}.public_key", item[4], (0, PUBLIC_KEY_BYTES))
            proof = _check_hex(f"{name}.proof", item[5], (0,))
        return cls(node_id, state, incarnation, address, public_key, proof)


def claim_payload(epoch: int, address: str, public_key: bytes) -> bytes:
    """Bytes a node signs (via `signing_payload`) to claim Alive/Left at an incarnation.

    ``u64 epoch || u16 len(address) || address || public_key``; the claim kind, the node id and
    the incarnation are bound by `signing_payload(f"swim-{state}", node_id, incarnation, ...)`.
    """
    address_bytes = address.encode("utf-8")
    return (
        epoch.to_bytes(8, "big")
        + len(address_bytes).to_bytes(2, "big")
        + address_bytes
        + bytes(public_key)
    )


def signed_claim(
    identity: NodeIdentity, state: MemberState, incarnation: int, address: str, epoch: int
) -> MemberUpdate:
    """An Alive or Left claim about `identity` itself, signed by it."""
    if state not in (MemberState.ALIVE, MemberState.LEFT):
        raise ValueError(f"state must be alive or left for a self-signed claim, got {state.value}")
    public_key = identity.public_key_bytes
    proof = identity.sign_message(
        f"swim-{state.value}", incarnation, claim_payload(epoch, address, public_key)
    )
    return MemberUpdate(identity.node_id, state, incarnation, address, public_key, proof)


def verify_claim(
    update: MemberUpdate, epoch: int, allow_list: Collection[str] | None = None
) -> None:
    """Raise `ForgedUpdateError` (or `NotAllowedError`) unless a self-signed claim is genuine."""
    if not update.self_signed:
        return
    try:
        verify(
            update.node_id,
            update.public_key,
            signing_payload(
                f"swim-{update.state.value}",
                update.node_id,
                update.incarnation,
                claim_payload(epoch, update.address, update.public_key),
            ),
            update.proof,
            allow_list,
        )
    except NotAllowedError:
        raise
    except IdentityError as error:
        raise ForgedUpdateError(
            f"{update.state.value} claim about {update.node_id!r} at incarnation "
            f"{update.incarnation} is not signed by that node: {error}"
        ) from error


@dataclass(frozen=True)
class MembershipMessage:
    """A signed membership message; `to_bytes` is canonical JSON (sorted keys, no spaces).

    `sequence` counts the sender's messages (never reused within one incarnation); `probe`
    names the sequence an ACK answers (or the requester's probe in a PING_REQ); `target` is the
    node to probe (PING_REQ) or whose liveness an ACK confirms. `origin` is the sender's own
    self-signed Alive claim (Left for LEAVE), so its key, address and incarnation travel along.
    """

    kind: MessageKind
    epoch: int
    sender: str
    sequence: int
    recipient: str
    probe: int
    target: str
    origin: MemberUpdate
    updates: tuple[MemberUpdate, ...] = ()
    signature: bytes = b""

    def _fields(self) -> dict[str, Any]:
        return {
            "v": WIRE_VERSION,
            "kind": self.kind.value,
            "epoch": self.epoch,
            "sender": self.sender,
            "seq": self.sequence,
            "to": self.recipient,
            "probe": self.probe,
            "target": self.target,
            "origin": self.origin.to_wire(),
            "updates": [update.to_wire() for update in self.updates],
        }

    def unsigned_bytes(self) -> bytes:
        """Canonical bytes covered by the signature (every field but the signature)."""
        return _canonical_json(self._fields())

    def to_bytes(self) -> bytes:
        return _canonical_json({**self._fields(), "sig": self.signature.hex()})

    def signed_by(self, identity: NodeIdentity) -> MembershipMessage:
        """This message with `signature` set by `identity` (which must be the sender)."""
        signature = identity.sign(self.signing_bytes())
        return replace(self, signature=signature)

    def signing_bytes(self) -> bytes:
        return signing_payload(
            f"swim-{self.kind.value}", self.sender, self.epoch, self.unsigned_bytes()
        )

    @classmethod
    def from_bytes(cls, data: bytes, max_bytes: int = 1 << 20) -> MembershipMessage:
        """Parse and type-check a message; raises `MalformedMessageError` naming the bad field."""
        if not isinstance(data, bytes | bytearray):
            raise MalformedMessageError(f"message must be bytes, got {type(data).__name__}")
        if len(data) > max_bytes:
            raise MalformedMessageError(
                f"message is {len(data)} bytes, above the limit of {max_bytes} bytes"
            )
        try:
            fields = json.loads(bytes(data).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise MalformedMessageError(f"message is not UTF-8 JSON: {error}") from error
        expected = {"v", "kind", "epoch", "sender", "seq", "to", "probe", "target", "origin"}
        expected |= {"updates", "sig"}
        if not isinstance(fields, dict) or set(fields) != expected:
            got = sorted(fields) if isinstance(fields, dict) else type(fields).__name__
            raise MalformedMessageError(f"message fields must be {sorted(expected)}, got {got}")
        if fields["v"] != WIRE_VERSION:
            raise MalformedMessageError(
                f"wire version {fields['v']!r} is not supported (expected {WIRE_VERSION})"
            )
        try:
            kind = MessageKind(fields["kind"])
        except ValueError as error:
            raise MalformedMessageError(f"kind {fields['kind']!r} is unknown") from error
        updates = fields["updates"]
        if not isinstance(updates, list) or len(updates) > MAX_UPDATES_PER_MESSAGE:
            raise MalformedMessageError(
                f"updates must be a list of at most {MAX_UPDATES_PER_MESSAGE} entries"
            )
        return cls(
            kind=kind,
            epoch=_check_uint("epoch", fields["epoch"]),
            sender=_check_node_id("sender", fields["sender"]),
            sequence=_check_uint("seq", fields["seq"]),
            recipient=_check_node_id("to", fields["to"], allow_empty=True),
            probe=_check_uint("probe", fields["probe"]),
            target=_check_node_id("target", fields["target"], allow_empty=True),
            origin=MemberUpdate.from_wire(fields["origin"], "origin"),
            updates=tuple(
                MemberUpdate.from_wire(item, f"updates[{index}]")
                for index, item in enumerate(updates)
            ),
            signature=_check_hex("sig", fields["sig"], (SIGNATURE_BYTES,)),
        )


def _canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


@dataclass(frozen=True)
class Outgoing:
    """A message for the owner to send: to node `recipient` (empty for a seed whose id is not
    known yet) at `address`."""

    recipient: str
    address: str
    message: MembershipMessage

    def payload(self) -> bytes:
        return self.message.to_bytes()


@dataclass(frozen=True)
class MemberInfo:
    """What one node knows about a member (or a tombstone of a removed one)."""

    node_id: str
    state: MemberState
    incarnation: int
    address: str
    public_key: bytes


@dataclass(frozen=True)
class MembershipEvent:
    """A state change seen by this node, for logs and the run summary."""

    time: float
    node_id: str
    state: MemberState
    incarnation: int


# --------------------------------------------------------------------------------------------
# Configuration and helpers


@dataclass(frozen=True)
class SwimConfig:
    """Protocol parameters; times in seconds of the owner's clock.

    protocol_period: T, one probe per period (SWIM section 3.1).
    ack_timeout: wait for a direct ACK before sending PING_REQs; must be below T.
    indirect_probes: k, members asked to ping on our behalf.
    suspicion_multiplier: a suspect is declared dead after mult * max(1, log10 n) * T.
    retransmit_multiplier: lambda, each update rides on ceil(lambda * ln(n + 1)) messages.
    max_piggyback: updates carried per message at most.
    tombstone_periods: how long dead/left members are remembered (blocks stale Alive claims
        and drives reconnection after a partition).
    reconnect_periods: every that many periods, ping one random dead member (heals partitions).
    join_retry_periods: while no other member is alive, JOIN a seed every that many periods.
    settle_periods: a member enters a round's view only after being alive that long.
    epoch: membership epoch; messages of another epoch are rejected.
    allow_list: accepted node ids, or None for open membership.
    replay_window: sequence numbers accepted out of order per sender.
    join_rate_per_sender / join_burst_per_sender: token bucket per JOIN sender (tokens/s, size).
    join_rate_global / join_burst_global: token bucket over all JOIN requests.
    max_message_bytes: larger messages are rejected unparsed.
    max_tracked_senders: replay windows and join buckets kept at most (least recent evicted).
    snapshot_history: frozen round views kept at most.
    """

    protocol_period: float = 1.0
    ack_timeout: float = 0.35
    indirect_probes: int = 3
    suspicion_multiplier: float = 4.0
    retransmit_multiplier: float = 2.0
    max_piggyback: int = 8
    tombstone_periods: int = 60
    reconnect_periods: int = 3
    join_retry_periods: int = 2
    settle_periods: int = 3
    epoch: int = 0
    allow_list: frozenset[str] | None = None
    replay_window: int = 64
    join_rate_per_sender: float = 0.5
    join_burst_per_sender: int = 3
    join_rate_global: float = 20.0
    join_burst_global: int = 40
    max_message_bytes: int = 1 << 20
    max_tracked_senders: int = 4096
    snapshot_history: int = 16

    def __post_init__(self) -> None:
        positive = {
            "protocol_period": self.protocol_period,
            "suspicion_multiplier": self.suspicion_multiplier,
            "retransmit_multiplier": self.retransmit_multiplier,
            "join_rate_per_sender": self.join_rate_per_sender,
            "join_rate_global": self.join_rate_global,
        }
        for name, value in positive.items():
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        if not 0 < self.ack_timeout < self.protocol_period:
            raise ValueError(
                f"ack_timeout must be in (0, protocol_period={self.protocol_period}), "
                f"got {self.ack_timeout}"
            )
        at_least_one = {
            "max_piggyback": self.max_piggyback,
            "tombstone_periods": self.tombstone_periods,
            "reconnect_periods": self.reconnect_periods,
            "join_retry_periods": self.join_retry_periods,
            "replay_window": self.replay_window,
            "join_burst_per_sender": self.join_burst_per_sender,
            "join_burst_global": self.join_burst_global,
            "max_tracked_senders": self.max_tracked_senders,
            "snapshot_history": self.snapshot_history,
        }
        for name, count in at_least_one.items():
            if not isinstance(count, int) or count < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {count!r}")
        if not isinstance(self.indirect_probes, int) or self.indirect_probes < 0:
            raise ValueError(f"indirect_probes must be an integer >= 0, got {self.indirect_probes}")
        if not isinstance(self.settle_periods, int) or self.settle_periods < 0:
            raise ValueError(f"settle_periods must be an integer >= 0, got {self.settle_periods}")
        if not 0 <= self.epoch < 2**64:
            raise ValueError(f"epoch must be in [0, 2**64), got {self.epoch}")
        if self.max_message_bytes < 1024:
            raise ValueError(f"max_message_bytes must be >= 1024, got {self.max_message_bytes}")
        if self.allow_list is not None:
            object.__setattr__(self, "allow_list", frozenset(self.allow_list))

    def suspicion_timeout(self, members: int) -> float:
        """Seconds from suspicion to death: mult * max(1, log10 n) * T (memberlist's rule)."""
        return (
            self.suspicion_multiplier * max(1.0, math.log10(max(members, 1))) * self.protocol_period
        )

    def retransmit_limit(self, members: int) -> int:
        """Messages each update rides on: ceil(lambda * ln(n + 1)) (SWIM section 4.1)."""
        return max(1, math.ceil(self.retransmit_multiplier * math.log(members + 1)))


class TokenBucket:
    """Classic token bucket: `rate` tokens per second, at most `burst` stored."""

    def __init__(self, rate: float, burst: int, now: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"token bucket needs rate > 0 and burst >= 1, got {rate}, {burst}")
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.updated = now

    def take(self, now: float) -> bool:
        """Spend one token if there is one; time never runs backwards for the bucket."""
        if now > self.updated:
            self.tokens = min(float(self.burst), self.tokens + (now - self.updated) * self.rate)
            self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class ReplayWindow:
    """Anti-replay over (incarnation, sequence), like IPsec's sliding window (RFC 4303, 3.4.3).

    A higher incarnation resets the window; a lower one is stale. Within an incarnation, the
    last `size` sequence numbers are tracked in a bitmap: seen -> replayed, older -> stale.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.incarnation = -1
        self.highest = -1
        self.seen = 0

    def accept(self, sender: str, incarnation: int, sequence: int) -> None:
        if incarnation < self.incarnation:
            raise StaleMessageError(
                f"message from {sender!r} has incarnation {incarnation}, older than the known "
                f"incarnation {self.incarnation}"
            )
        if incarnation > self.incarnation:
            self.incarnation, self.highest, self.seen = incarnation, sequence, 1
            return
        if sequence > self.highest:
            shift = sequence - self.highest
            self.seen = ((self.seen << shift) | 1) & ((1 << self.size) - 1)
            self.highest = sequence
            return
        age = self.highest - sequence
        if age >= self.size:
            raise StaleMessageError(
                f"message from {sender!r} has sequence {sequence}, older than the replay window "
                f"[{self.highest - self.size + 1}, {self.highest}]"
            )
        if self.seen & (1 << age):
            raise ReplayedMessageError(
                f"message from {sender!r} with incarnation {incarnation} and sequence {sequence} "
                "was already received"
            )
        self.seen |= 1 << age


def view_digest(members: Iterable[str]) -> str:
    """SHA-256 hex of the sorted member ids joined by newlines: compare views across nodes."""
    return hashlib.sha256("\n".join(sorted(members)).encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------------------------
# The state machine


@dataclass
class _Member:
    node_id: str
    state: MemberState
    incarnation: int
    address: str
    public_key: bytes
    claim: MemberUpdate  # latest self-signed Alive (or Left) claim, relayed in full views
    changed_at: float
    admitted_at: float
    suspect_deadline: float = math.inf


@dataclass
class _Probe:
    target: str
    sequence: int
    started_at: float
    indirect_sent: bool = False
    acked: bool = False
    helpers: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class _Relay:
    requester: str
    requester_address: str
    requester_probe: int
    target: str
    expires_at: float


class SwimMember:
    """One node's SWIM membership state machine (see the module docstring for the protocol).

    `identity` signs everything; `address` is where others reach this node; `seeds` are the
    addresses of nodes to JOIN through (an empty list makes this node a bootstrap node).
    `incarnation` should exceed any earlier run's; with the default 0 a restarted node learns
    its old incarnation from the JOIN reply and jumps above it. `rng_seed` drives every random
    choice, so equal inputs give equal outputs.
    """

    def __init__(
        self,
        identity: NodeIdentity,
        address: str,
        seeds: Sequence[str] = (),
        config: SwimConfig | None = None,
        rng_seed: int = 0,
        incarnation: int = 0,
    ) -> None:
        self.config = config if config is not None else SwimConfig()
        if not address or len(address) > MAX_ADDRESS_CHARS:
            raise ValueError(
                f"address must have 1 to {MAX_ADDRESS_CHARS} characters, got {address!r}"
            )
        if not 0 <= incarnation < 2**63:
            raise ValueError(f"incarnation must be in [0, 2**63), got {incarnation}")
        check_allowed(identity.node_id, self.config.allow_list)
        self.identity = identity
        self.self_id = identity.node_id
        self.address = address
        self.seeds = tuple(seed for seed in seeds if seed != address)
        self.incarnation = incarnation
        self._rng = random.Random(rng_seed)
        self._sequence = 0
        self._members: dict[str, _Member] = {}
        self._queue: dict[str, tuple[MemberUpdate, int]] = {}
        self._probe_order: list[str] = []
        self._probe: _Probe | None = None
        self._next_probe_at: float | None = None
        self._periods = 0
        self._relays: dict[int, _Relay] = {}
        self._pending_joins: set[int] = set()
        self._next_join_at = -math.inf
        self._seed_cursor = 0
        self._booting = bool(self.seeds)
        self._joined_at: float | None = None
        self._boot_deadline: float | None = None
        self._left = False
        self._windows: OrderedDict[str, ReplayWindow] = OrderedDict()
        self._join_buckets: OrderedDict[str, TokenBucket] = OrderedDict()
        self._global_join_bucket: TokenBucket | None = None
        self._snapshots: OrderedDict[int, tuple[str, ...]] = OrderedDict()
        self._events: list[MembershipEvent] = []
        self._claim = signed_claim(
            identity, MemberState.ALIVE, incarnation, address, self.config.epoch
        )

    # ---------------------------------------------------------------- public queries

    def view(self) -> list[str]:
        """Sorted ids of members alive or suspected, this node included (unless it left)."""
        ids = [m.node_id for m in self._members.values() if m.state in _IN_VIEW]
        if not self._left:
            ids.append(self.self_id)
        return sorted(ids)

    def members(self) -> dict[str, MemberInfo]:
        """Everything known, tombstones included, keyed by node id (this node excluded)."""
        return {
            node_id: MemberInfo(m.node_id, m.state, m.incarnation, m.address, m.public_key)
            for node_id, m in sorted(self._members.items())
        }

    def public_key_of(self, node_id: str) -> bytes | None:
        """Raw Ed25519 key of a known node (for verifying its round messages), or None."""
        if node_id == self.self_id:
            return self.identity.public_key_bytes
        member = self._members.get(node_id)
        return member.public_key if member is not None and member.public_key else None

    def address_of(self, node_id: str) -> str | None:
        if node_id == self.self_id:
            return self.address
        member = self._members.get(node_id)
        return member.address if member is not None and member.address else None

    @property
    def has_left(self) -> bool:
        return self._left

    def pending_updates(self) -> int:
        """Updates still waiting to be piggy-backed (0 once dissemination has finished)."""
        return len(self._queue)

    def drain_events(self) -> list[MembershipEvent]:
        """State changes since the last call, oldest first."""
        events, self._events = self._events, []
        return events

    def snapshot_for_round(self, round_number: int, now: float) -> tuple[str, ...]:
        """The view for round `round_number`, frozen by the first call (later calls return it).

        Rule: this node (once joined) plus every member currently alive or suspected whose
        current life began at least ``settle_periods * T`` ago. The settle delay gives gossip
        time to reach every honest node, so nodes agree when membership did not change during
        that window before the round start. SWIM is only eventually consistent: there is no
        agreement guarantee otherwise; compare `view_digest` of the snapshots on round messages.
        """
        if round_number < 0:
            raise ValueError(f"round_number must be >= 0, got {round_number}")
        frozen = self._snapshots.get(round_number)
        if frozen is not None:
            return frozen
        horizon = now - self.config.settle_periods * self.config.protocol_period
        ids = [
            m.node_id
            for m in self._members.values()
            if m.state in _IN_VIEW and m.admitted_at <= horizon
        ]
        if not self._left and self._joined_at is not None and self._joined_at <= horizon:
            ids.append(self.self_id)
        frozen = tuple(sorted(ids))
        self._snapshots[round_number] = frozen
        while len(self._snapshots) > self.config.snapshot_history:
            self._snapshots.popitem(last=False)
        return frozen

    # ---------------------------------------------------------------- driving

    def tick(self, now: float) -> list[Outgoing]:
        """Advance timers: joins, probe deadlines, suspicion timeouts, the next probe."""
        if self._left:
            return []
        out: list[Outgoing] = []
        period = self.config.protocol_period
        if self._next_probe_at is None:
            self._next_probe_at = now
        if self._boot_deadline is None:
            # Give up on learning an earlier life after a few join attempts.
            self._boot_deadline = now + 3 * self.config.join_retry_periods * period
        if self._booting and now >= self._boot_deadline:
            self._booting = False
        if self._joined_at is None and (not self._booting or self._alive_peers()):
            self._joined_at = now
        out.extend(self._maybe_join(now))
        probe = self._probe
        if (
            probe is not None
            and not probe.acked
            and not probe.indirect_sent
            and now >= probe.started_at + self.config.ack_timeout
        ):
            out.extend(self._send_ping_requests(probe))
        self._expire_suspects(now)
        self._expire_tombstones(now)
        for sequence in [s for s, r in self._relays.items() if r.expires_at <= now]:
            del self._relays[sequence]
        if now >= self._next_probe_at:
            self._finish_probe(now)
            self._periods += 1
            self._next_probe_at = max(self._next_probe_at + period, now + period / 2)
            out.extend(self._start_probe(now))
            if self._periods % self.config.reconnect_periods == 0:
                out.extend(self._reconnect())
        return out

    def leave(self, now: float) -> list[Outgoing]:
        """Leave gracefully: a self-signed Left claim sent to every member in the view."""
        if self._left:
            return []
        self._claim = signed_claim(
            self.identity, MemberState.LEFT, self.incarnation, self.address, self.config.epoch
        )
        out = [
            self._outgoing(MessageKind.LEAVE, m.node_id, m.address)
            for m in sorted(self._members.values(), key=lambda m: m.node_id)
            if m.state in _IN_VIEW
        ]
        self._left = True
        return out

    def on_bytes(self, data: bytes, now: float) -> list[Outgoing]:
        """`on_message` on raw bytes (parses them first)."""
        message = MembershipMessage.from_bytes(data, self.config.max_message_bytes)
        return self.on_message(message, now)

    def on_message(self, message: MembershipMessage, now: float) -> list[Outgoing]:
        """Handle one received message; raises a `REJECTION_ERRORS` member when it is refused."""
        if self._left:
            return []
        self._authenticate(message, now)
        self._apply(message.origin, now)
        for update in message.updates:
            self._apply(update, now)
        if message.kind is MessageKind.PING:
            return [self._reply_ack(message, target=self.self_id)]
        if message.kind is MessageKind.PING_REQ:
            return self._relay_ping(message, now)
        if message.kind is MessageKind.ACK:
            return self._on_ack(message, now)
        if message.kind is MessageKind.JOIN:
            return [self._reply_ack(message, target=self.self_id, full_view=True)]
        return []  # LEAVE: its origin (a Left claim) has been applied

    # ---------------------------------------------------------------- verification

    def _authenticate(self, message: MembershipMessage, now: float) -> None:
        config = self.config
        if message.epoch != config.epoch:
            raise WrongEpochError(
                f"message from {message.sender!r} is for epoch {message.epoch}, "
                f"this node runs epoch {config.epoch}"
            )
        if message.sender == self.self_id:
            raise ReplayedMessageError("message claims to come from this node itself")
        if message.recipient != self.self_id and not (
            message.kind is MessageKind.JOIN and message.recipient == ""
        ):
            raise WrongRecipientError(
                f"{message.kind.value} from {message.sender!r} is addressed to "
                f"{message.recipient!r}, not to this node {self.self_id!r}"
            )
        expected_origin = (
            MemberState.LEFT if message.kind is MessageKind.LEAVE else MemberState.ALIVE
        )
        if message.origin.node_id != message.sender or message.origin.state is not expected_origin:
            raise MalformedMessageError(
                f"{message.kind.value} origin must be a {expected_origin.value} claim by the "
                f"sender {message.sender!r}, got {message.origin.state.value} about "
                f"{message.origin.node_id!r}"
            )
        if message.kind is MessageKind.JOIN:
            if self._global_join_bucket is None:
                self._global_join_bucket = TokenBucket(
                    config.join_rate_global, config.join_burst_global, now
                )
            if not self._global_join_bucket.take(now):
                raise JoinRateLimitedError(
                    f"JOIN from {message.sender!r} refused: more than {config.join_rate_global}/s "
                    f"(burst {config.join_burst_global}) JOIN requests from all senders"
                )
        verify_message(
            f"swim-{message.kind.value}",
            message.sender,
            message.epoch,
            message.unsigned_bytes(),
            message.origin.public_key,
            message.signature,
            config.allow_list,
        )
        verify_claim(message.origin, config.epoch, config.allow_list)
        for update in message.updates:
            verify_claim(update, config.epoch, config.allow_list)
        if message.kind is MessageKind.JOIN:
            # A restarted node reuses low sequence numbers, so JOIN bypasses the replay window;
            # it changes nothing but the reply, and the per-sender bucket bounds replays.
            bucket = self._tracked(
                self._join_buckets,
                message.sender,
                lambda: TokenBucket(config.join_rate_per_sender, config.join_burst_per_sender, now),
            )
            if not bucket.take(now):
                raise JoinRateLimitedError(
                    f"JOIN from {message.sender!r} refused: more than "
                    f"{config.join_rate_per_sender}/s (burst {config.join_burst_per_sender}) "
                    "from this sender"
                )
            return
        window = self._tracked(
            self._windows, message.sender, lambda: ReplayWindow(config.replay_window)
        )
        window.accept(message.sender, message.origin.incarnation, message.sequence)

    def _tracked(self, table: OrderedDict[str, _T], key: str, make: Callable[[], _T]) -> _T:
        entry = table.get(key)
        if entry is None:
            entry = make()
            table[key] = entry
            while len(table) > self.config.max_tracked_senders:
                table.popitem(last=False)
        else:
            table.move_to_end(key)
        return entry

    # ---------------------------------------------------------------- state updates

    def _record(self, member: _Member, now: float) -> None:
        member.changed_at = now
        self._events.append(MembershipEvent(now, member.node_id, member.state, member.incarnation))

    def _enqueue(self, update: MemberUpdate) -> None:
        self._queue[update.node_id] = (update, 0)

    def _apply(self, update: MemberUpdate, now: float) -> None:
        """SWIM section 4.2 ordering of Alive/Suspect/Dead (plus Left) by incarnation."""
        if update.node_id == self.self_id:
            self._about_self(update)
            return
        member = self._members.get(update.node_id)
        state, incarnation = update.state, update.incarnation
        if state is MemberState.ALIVE:
            if member is None:
                member = self._admit(update, now)
                self._insert_probe_target(update.node_id)
            elif incarnation > member.incarnation:
                if member.state in _GONE:
                    member.admitted_at = now
                    self._insert_probe_target(update.node_id)
                elif member.state is MemberState.ALIVE and member.address == update.address:
                    member.incarnation, member.claim = incarnation, update
                    self._enqueue(update)
                    return
                member.state, member.incarnation = state, incarnation
                member.address, member.public_key, member.claim = (
                    update.address,
                    update.public_key,
                    update,
                )
                member.suspect_deadline = math.inf
            else:
                return
        elif state is MemberState.SUSPECT:
            if member is None or member.state in _GONE:
                return
            if not (
                incarnation > member.incarnation
                or (incarnation == member.incarnation and member.state is MemberState.ALIVE)
            ):
                return
            member.state, member.incarnation = state, incarnation
            member.suspect_deadline = now + self.config.suspicion_timeout(len(self.view()))
        else:  # DEAD or LEFT
            if member is None:
                member = self._tombstone_for_stranger(update, now)
                if member is None:
                    return
            elif incarnation < member.incarnation or (
                member.state is MemberState.LEFT
                or (member.state is MemberState.DEAD and state is MemberState.DEAD)
            ):
                return
            member.state, member.incarnation = state, incarnation
            member.suspect_deadline = math.inf
            if state is MemberState.LEFT:
                member.claim = update
        self._record(member, now)
        self._enqueue(update)

    def _tombstone_for_stranger(self, update: MemberUpdate, now: float) -> _Member | None:
        """A Dead or Left rumour about a member this node never heard alive.

        SWIM (Das et al. 2002) has no use for it: there is no one to probe. With a closed
        membership (an allow-list) the member is an expected peer, though, and a node that had
        not met it before it crashed would otherwise never learn that it is gone (the owner
        waits for expected peers until they are reported gone). So keep it as a tombstone; an
        Alive claim at a higher incarnation (a restart) replaces it as for any tombstone, and
        it expires like one. Open membership ignores such rumours, so strangers' names cannot
        grow the table."""
        allowed = self.config.allow_list
        if allowed is None or update.node_id not in allowed:
            return None
        return self._admit(update, now)

    def _admit(self, update: MemberUpdate, now: float) -> _Member:
        """A new entry for `update`'s member, in the state the update gives."""
        member = _Member(
            update.node_id,
            update.state,
            update.incarnation,
            update.address,
            update.public_key,
            update,
            now,
            now,
        )
        self._members[update.node_id] = member
        return member

    def _about_self(self, update: MemberUpdate) -> None:
        """Refute suspicion or death (SWIM 4.2); after a restart, jump above the old life."""
        if self._left:
            return
        booting, self._booting = self._booting, False
        state, incarnation = update.state, update.incarnation
        if state is MemberState.ALIVE:
            stale_life = incarnation > self.incarnation or (
                booting and incarnation == self.incarnation
            )
            if not stale_life:
                return
        elif incarnation < self.incarnation:
            return
        self.incarnation = incarnation + 1
        self._claim = signed_claim(
            self.identity, MemberState.ALIVE, self.incarnation, self.address, self.config.epoch
        )
        self._enqueue(self._claim)

    def _declare(self, member: _Member, state: MemberState, now: float) -> None:
        update = MemberUpdate(member.node_id, state, member.incarnation)
        self._apply(update, now)

    def _expire_suspects(self, now: float) -> None:
        for member in sorted(self._members.values(), key=lambda m: m.node_id):
            if member.state is MemberState.SUSPECT and now >= member.suspect_deadline:
                self._declare(member, MemberState.DEAD, now)

    def _expire_tombstones(self, now: float) -> None:
        keep = self.config.tombstone_periods * self.config.protocol_period
        for node_id in sorted(self._members):
            member = self._members[node_id]
            if member.state in _GONE and now - member.changed_at >= keep:
                del self._members[node_id]
                self._windows.pop(node_id, None)

    # ---------------------------------------------------------------- probing

    def _alive_peers(self) -> list[str]:
        return sorted(m.node_id for m in self._members.values() if m.state in _IN_VIEW)

    def _insert_probe_target(self, node_id: str) -> None:
        # SWIM 4.3: a new member goes to a random position of the round-robin list.
        if node_id in self._probe_order:
            return
        position = self._rng.randint(0, len(self._probe_order))
        self._probe_order.insert(position, node_id)

    def _next_probe_target(self) -> str | None:
        for _ in range(2):
            while self._probe_order:
                candidate = self._probe_order.pop(0)
                member = self._members.get(candidate)
                if member is not None and member.state in _IN_VIEW:
                    return candidate
            self._probe_order = self._alive_peers()
            self._rng.shuffle(self._probe_order)
        return None

    def _start_probe(self, now: float) -> list[Outgoing]:
        target = self._next_probe_target()
        if target is None:
            self._probe = None
            return []
        member = self._members[target]
        ping = self._outgoing(MessageKind.PING, target, member.address)
        self._probe = _Probe(target, ping.message.sequence, now)
        return [ping]

    def _send_ping_requests(self, probe: _Probe) -> list[Outgoing]:
        probe.indirect_sent = True
        helpers = [node_id for node_id in self._alive_peers() if node_id != probe.target]
        chosen = self._rng.sample(helpers, min(self.config.indirect_probes, len(helpers)))
        probe.helpers = set(chosen)
        return [
            self._outgoing(
                MessageKind.PING_REQ,
                helper,
                self._members[helper].address,
                probe=probe.sequence,
                target=probe.target,
            )
            for helper in sorted(chosen)
        ]

    def _finish_probe(self, now: float) -> None:
        probe, self._probe = self._probe, None
        if probe is None or probe.acked:
            return
        member = self._members.get(probe.target)
        if member is not None and member.state is MemberState.ALIVE:
            self._declare(member, MemberState.SUSPECT, now)

    def _relay_ping(self, request: MembershipMessage, now: float) -> list[Outgoing]:
        target = request.target
        if target == self.self_id:
            return [self._reply_ack(request, target=self.self_id)]
        member = self._members.get(target)
        if member is None or member.state in _GONE:
            return []
        ping = self._outgoing(MessageKind.PING, target, member.address)
        self._relays[ping.message.sequence] = _Relay(
            request.sender,
            request.origin.address,
            request.probe,
            target,
            now + self.config.protocol_period,
        )
        return [ping]

    def _on_ack(self, ack: MembershipMessage, now: float) -> list[Outgoing]:
        probe = self._probe
        if (
            probe is not None
            and ack.probe == probe.sequence
            and ack.target == probe.target
            and (ack.sender == probe.target or ack.sender in probe.helpers)
        ):
            probe.acked = True
            return []
        relay = self._relays.get(ack.probe)
        if relay is not None and ack.sender == relay.target:
            del self._relays[ack.probe]
            forwarded = self._outgoing(
                MessageKind.ACK,
                relay.requester,
                relay.requester_address,
                probe=relay.requester_probe,
                target=relay.target,
            )
            return [forwarded]
        if ack.probe in self._pending_joins:
            self._pending_joins.clear()
            self._booting = False
            if self._joined_at is None:
                self._joined_at = now
        return []

    def _reconnect(self) -> list[Outgoing]:
        """Ping one random dead member, telling it so: heals a partition once it is gone."""
        dead = sorted(
            m.node_id
            for m in self._members.values()
            if m.state is MemberState.DEAD and m.address  # a rumoured stranger has none
        )
        if not dead:
            return []
        member = self._members[self._rng.choice(dead)]
        return [self._outgoing(MessageKind.PING, member.node_id, member.address)]

    def introduce(self, addresses: Sequence[str]) -> list[Outgoing]:
        """JOIN messages to `addresses` of nodes this one has not heard of yet.

        SWIM's dissemination is bounded (each update rides on ``lambda log n`` messages), so a
        node that joined through a seed before another node did may never hear of it, and two
        nodes that do not know each other never probe each other. An owner with a configured
        peer list calls this now and then for the peers still unknown: the JOIN carries our
        signed Alive claim, and the reply carries the peer's view.
        """
        if self._left:
            return []
        known = {m.address for m in self._members.values()}
        return [
            self._outgoing(MessageKind.JOIN, "", address)
            for address in addresses
            if address != self.address and address not in known
        ]

    def _maybe_join(self, now: float) -> list[Outgoing]:
        if not self.seeds or self._alive_peers() or now < self._next_join_at:
            return []
        self._next_join_at = now + self.config.join_retry_periods * self.config.protocol_period
        if self._booting and self._seed_cursor == 0 and not self._pending_joins:
            addresses = list(self.seeds)
        else:
            addresses = [self.seeds[self._seed_cursor % len(self.seeds)]]
        self._seed_cursor += 1
        out = [self._outgoing(MessageKind.JOIN, "", address) for address in addresses]
        self._pending_joins.update(item.message.sequence for item in out)
        return out

    # ---------------------------------------------------------------- building messages

    def _piggyback(self, recipient: str) -> tuple[MemberUpdate, ...]:
        limit = self.config.retransmit_limit(len(self.view()))
        chosen = sorted(self._queue.items(), key=lambda item: (item[1][1], item[0]))
        chosen = chosen[: self.config.max_piggyback]
        updates: list[MemberUpdate] = []
        for node_id, (update, sent) in chosen:
            updates.append(update)
            if sent + 1 >= limit:
                del self._queue[node_id]
            else:
                self._queue[node_id] = (update, sent + 1)
        member = self._members.get(recipient)
        if member is not None and member.state is not MemberState.ALIVE:
            # Lifeguard: tell a suspected, dead or departed node so it can refute at once
            # (after a restart or a healed partition it then rejoins with a higher incarnation).
            notice = (
                member.claim
                if member.state is MemberState.LEFT
                else MemberUpdate(member.node_id, member.state, member.incarnation)
            )
            if notice not in updates:
                updates.append(notice)
        return tuple(updates)

    def _full_view(self, recipient: str) -> tuple[MemberUpdate, ...]:
        claims = [
            m.claim
            for m in sorted(self._members.values(), key=lambda m: m.node_id)
            if m.state in _IN_VIEW
        ]
        return tuple(claims) + self._piggyback(recipient)

    def _outgoing(
        self,
        kind: MessageKind,
        recipient: str,
        address: str,
        *,
        probe: int = 0,
        target: str = "",
        updates: tuple[MemberUpdate, ...] | None = None,
    ) -> Outgoing:
        self._sequence += 1
        message = MembershipMessage(
            kind=kind,
            epoch=self.config.epoch,
            sender=self.self_id,
            sequence=self._sequence,
            recipient=recipient,
            probe=probe,
            target=target,
            origin=self._claim,
            updates=self._piggyback(recipient) if updates is None else updates,
        ).signed_by(self.identity)
        return Outgoing(recipient, address, message)

    def _reply_ack(
        self, request: MembershipMessage, *, target: str, full_view: bool = False
    ) -> Outgoing:
        updates = self._full_view(request.sender) if full_view else None
        return self._outgoing(
            MessageKind.ACK,
            request.sender,
            request.origin.address,
            probe=request.sequence if request.kind is not MessageKind.PING_REQ else request.probe,
            target=target,
            updates=updates,
        )
