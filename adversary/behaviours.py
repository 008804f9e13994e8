"""Byzantine behaviours, chosen by config and applied as wrappers around a role or the transport.

A Byzantine node runs the honest code; its deviations live here:

- `ByzantineTransport` wraps the node's transport and deviates at the message level:
  ``corrupt-partial`` (random field elements as Shamir partial sums), ``collude-partial``
  (partial sums shifted onto another codeword, in concert, see
  `ByzantineTransport.partial_sum`), ``corrupt-output``
  (a noisy cluster sum), ``corrupt-shares`` (flipped ciphertext bytes, which AES-GCM rejects),
  ``inconsistent-shares`` (validly encrypted Shamir shares off the dealer's polynomial, see
  `ByzantineTransport.deal_shares`), ``equivocate`` (a
  different update or cluster output to different receivers), ``withhold`` (omission),
  ``delay`` (past the phase deadline), ``crash`` (SIGKILL itself at a chosen phase) and
  ``replay`` (re-send the previous round's messages).
- `UpdatePoisoner` wraps the learner's output with a model-poisoning attack from
  `adversary.poisoning` (sign flip, scaling, Gaussian, ALIE, IPM, min-max, min-sum, mimic).
  Attacks that need honest statistics see, by default, only what the colluders legitimately
  hold: their own benign updates, exchanged over a gRPC side channel (``MESSAGE_KIND_COLLUDE``).
  ``omniscient=true`` gives them every honest update (recomputed from the public seeds), for
  worst-case studies.
- Data-level attacks transform the training set: ``label-flip`` (y -> C - 1 - y) and
  ``backdoor`` (a white pixel pattern in the corner, relabelled to a target class; Gu et al.
  2017, BadNets).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import signal
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from phalanx.node.codec import Message
from phalanx.node.transport import DelegatingTransport, Transport
from phalanx.v1 import node_pb2 as pb

if TYPE_CHECKING:
    from phalanx.mpc import EncryptedShare, KeyAdvertisement, ShamirMember
    from phalanx.mpc.field import FieldVector
    from phalanx.mpc.messages import PartialSum

log = logging.getLogger(__name__)


class AggregationSettings(Protocol):
    """What `UpdatePoisoner` reads of a scenario's ``[aggregation]`` (node.config)."""

    @property
    def rule(self) -> str: ...

    @property
    def pre(self) -> list[str]: ...

    @property
    def f(self) -> int | str | None: ...


PROTOCOL_BEHAVIOURS = (
    "corrupt-partial",
    "collude-partial",
    "corrupt-output",
    "corrupt-shares",
    "inconsistent-shares",
    "equivocate",
    "withhold",
    "delay",
    "crash",
    "replay",
)
SECRETS = ("negated", "same")
DATA_BEHAVIOURS = ("label-flip", "backdoor")
CLUSTER_AWARE_ATTACKS = frozenset({"alie", "ipm", "alie-adaptive", "ipm-adaptive"})
RULE_AWARE_ATTACKS = frozenset({"alie-adaptive", "ipm-adaptive"})
PHASE_KINDS: dict[str, frozenset[int]] = {
    "train": frozenset({pb.MESSAGE_KIND_UPDATE, pb.MESSAGE_KIND_MPC_KEYS}),
    "share": frozenset({pb.MESSAGE_KIND_SHARE}),
    "agree": frozenset({pb.MESSAGE_KIND_HELD_DEALERS, pb.MESSAGE_KIND_DEALER_SET}),
    "partial": frozenset({pb.MESSAGE_KIND_PARTIAL_SUM}),
    "publish": frozenset({pb.MESSAGE_KIND_CLUSTER_OUTPUT}),
}
KIND_GROUPS: dict[str, frozenset[int]] = {
    "update": frozenset({pb.MESSAGE_KIND_UPDATE}),
    "share": frozenset({pb.MESSAGE_KIND_SHARE}),
    "partial": frozenset({pb.MESSAGE_KIND_PARTIAL_SUM}),
    "output": frozenset({pb.MESSAGE_KIND_CLUSTER_OUTPUT}),
    "all": frozenset(pb.MessageKind.values()) - {pb.MESSAGE_KIND_COLLUDE},
}


def known_behaviours() -> list[str]:
    from phalanx.adversary.poisoning import POISONING_ATTACKS

    return sorted([*PROTOCOL_BEHAVIOURS, *DATA_BEHAVIOURS, *POISONING_ATTACKS])


@dataclass(frozen=True)
class BehaviourSpec:
    """``NAME[:k=v,...]`` parsed: which deviation, its parameters, and from which round."""

    name: str
    params: Mapping[str, Any] = field(default_factory=dict)
    start_round: int = 1

    @property
    def is_poisoning(self) -> bool:
        from phalanx.adversary.poisoning import POISONING_ATTACKS

        return self.name in POISONING_ATTACKS

    @property
    def is_protocol(self) -> bool:
        return self.name in PROTOCOL_BEHAVIOURS


def parse_behaviour(spec: str, start_round: int = 1) -> BehaviourSpec:
    """Parse and validate a behaviour spec such as ``alie``, ``scaling:factor=10`` or
    ``crash:phase=share``; unknown names and parameters are refused with the allowed ones."""
    from phalanx.adversary.poisoning import parse_attack
    from phalanx.learning.aggregation import parse_spec

    name, params = parse_spec(spec)
    name = name.lower()
    allowed: dict[str, tuple[str, ...]] = {
        "corrupt-partial": (),
        "collude-partial": (),
        "corrupt-output": ("scale",),
        "corrupt-shares": (),
        "inconsistent-shares": ("holders", "secret"),
        "equivocate": ("scale",),
        "withhold": ("kinds",),
        "delay": ("seconds",),
        "crash": ("phase",),
        "replay": (),
        "label-flip": (),
        "backdoor": ("target", "fraction"),
    }
    if name in allowed:
        unknown = sorted(set(params) - set(allowed[name]))
        if unknown:
            raise ValueError(
                f"behaviour {name!r}: unknown parameter(s) {unknown}; "
                f"allowed: {list(allowed[name]) or 'none'}"
            )
        if name == "crash" and params.get("phase", "share") not in PHASE_KINDS:
            raise ValueError(f"behaviour 'crash': phase must be one of {sorted(PHASE_KINDS)}")
        if name == "inconsistent-shares":
            holders = params.get("holders", 1)
            if isinstance(holders, bool) or not isinstance(holders, int) or holders < 1:
                raise ValueError("behaviour 'inconsistent-shares': holders must be an integer >= 1")
            if params.get("secret", "negated") not in SECRETS:
                raise ValueError(
                    f"behaviour 'inconsistent-shares': secret must be one of {SECRETS}"
                )
        if name == "withhold":
            kinds = str(params.get("kinds", "all")).split("+")
            if not set(kinds) <= set(KIND_GROUPS):
                raise ValueError(f"behaviour 'withhold': kinds must be from {sorted(KIND_GROUPS)}")
        return BehaviourSpec(name, params, start_round)
    try:
        attack = parse_attack(spec)
    except ValueError as error:
        if "unknown poisoning attack" in str(error):
            raise ValueError(
                f"unknown behaviour {name!r}; known: {', '.join(known_behaviours())}"
            ) from None
        raise
    return BehaviourSpec(attack.name, params, start_round)


def _kill_this_process() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _stable_bit(text: str) -> int:
    return hashlib.sha256(text.encode()).digest()[0] & 1


class ByzantineTransport(DelegatingTransport):
    """Wraps an honest transport and deviates on outgoing messages from `start_round` on."""

    def __init__(
        self,
        inner: Transport,
        spec: BehaviourSpec,
        node_id: str,
        deadline_s: float,
        seed: int,
        on_crash: Callable[[], None] | None = None,
        colluders: frozenset[str] = frozenset(),
    ) -> None:
        super().__init__(inner)
        self.spec = spec
        self.node_id = node_id
        self.colluders = colluders | {node_id}
        """The Byzantine ids this node acts with (``collude-partial`` shifts in concert)."""
        self.deadline_s = deadline_s
        self.rng = np.random.default_rng(seed)
        self._previous: dict[tuple[str, int], Message] = {}
        self.on_crash = on_crash or _kill_this_process
        """How ``crash`` dies: SIGKILL of the daemon's process; the memory engine takes the
        peer off its network instead."""

    async def send(self, peer: str, message: Message) -> bool:
        if message.round < self.spec.start_round or message.kind == pb.MESSAGE_KIND_COLLUDE:
            return await self.inner.send(peer, message)
        name, params = self.spec.name, self.spec.params
        if name == "crash" and message.kind in PHASE_KINDS[str(params.get("phase", "share"))]:
            log.warning("%s: Byzantine crash at phase %s", self.node_id, params.get("phase"))
            self.on_crash()
            return False
        if name == "withhold":
            kinds = frozenset().union(
                *(KIND_GROUPS[k] for k in str(params.get("kinds", "all")).split("+"))
            )
            if message.kind in kinds:
                return False
        if name == "delay":
            await asyncio.sleep(float(params.get("seconds", 1.5 * self.deadline_s)))
        if name == "replay":
            old = self._previous.get((peer, message.kind))
            self._previous[(peer, message.kind)] = message
            if old is not None and old.round < message.round:
                await self.inner.send(peer, old)
        return await self.inner.send(peer, self._tamper(peer, message))

    def deal_shares(
        self,
        member: ShamirMember,
        encoded_update: FieldVector,
        advertisements: Mapping[str, KeyAdvertisement],
    ) -> dict[str, EncryptedShare]:
        """The Shamir dealer's shares (node.mpc_protocol asks the node's transport for them).

        Honest unless ``inconsistent-shares`` is active: then the ``holders`` (default 1) members
        that follow this dealer in the cluster's sorted order get validly encrypted shares of a
        second polynomial (`mpc.inconsistent.deal_inconsistent`), sharing the negated update
        (``secret=negated``, default) or the same one (``secret=same``, fresh coefficients).

        Bound: with r partial sums received and T = t + l - 1, Berlekamp-Welch corrects
        e = floor((r - T) / 2) wrong ones. With a <= e affected holders (and no other errors in
        the cluster) the cluster sum is exactly the honest dealing's and the affected holders,
        not the dealer, are named as liars; with r - a <= e the sum carries the second secret and
        the unaffected holders are named; in between the cluster's reconstruction fails.
        """
        from phalanx.mpc import field as gf
        from phalanx.mpc.inconsistent import deal_inconsistent

        session = member.session
        if self.spec.name != "inconsistent-shares" or session.round < self.spec.start_round:
            return member.deal(encoded_update, advertisements)
        members = list(session.members)
        start = members.index(self.node_id)
        following = members[start + 1 :] + members[:start]
        affected = following[: int(self.spec.params.get("holders", 1))]
        encoded = gf.as_field_vector(encoded_update, "encoded_update")
        if self.spec.params.get("secret", "negated") == "same":
            other = encoded
        else:
            other = gf.sub(np.zeros_like(encoded), encoded)
        log.warning(
            "%s round %d: Byzantine dealer, shares off the polynomial for %s",
            self.node_id,
            session.round,
            ",".join(affected),
        )
        return deal_inconsistent(member, encoded, advertisements, affected, other)

    def partial_sum(self, member: ShamirMember, dealers: Sequence[str]) -> PartialSum:
        """The Shamir holder's partial sum (node.mpc_protocol asks the node's transport for it).

        Honest unless ``collude-partial`` is active: then every colluding holder of the cluster
        adds delta(x) = prod_{h in H} (x - h) to each coordinate of its partial sum, where x is
        its evaluation point and H the points of the first T - 1 honest holders in the sorted
        order (T = t + l - 1, the reconstruction threshold). Every colluder derives the same H
        from the public membership, so they need no message to agree. The partial sums then
        lie on the codeword f + delta, which differs from the true f only at the c colluders
        and agrees with it at H: with s holders and r = floor((s - T) / 2), Berlekamp-Welch
        corrects c <= r liars and names them; from c >= s - T + 1 - r on, the received sums lie
        within r of f + delta, so the decoder returns the sum shifted by delta at the secret
        points and names the s - c - (T - 1) honest holders outside H; in between the
        reconstruction fails.
        """
        from phalanx.mpc import field as gf
        from phalanx.mpc.field import PRIME
        from phalanx.mpc.messages import PartialSum as Partial

        honest = member.partial_sum(dealers)
        session = member.session
        if self.spec.name != "collude-partial" or session.round < self.spec.start_round:
            return honest
        members = list(session.members)
        degree = session.reconstruction_threshold - 1
        roots = [session.point(m) for m in members if m not in self.colluders][:degree]
        x = session.point(self.node_id)
        delta = 1
        for root in roots:
            delta = delta * (x - root) % PRIME
        value = gf.from_bytes(honest.value, session.share_length, "partial sum")
        shifted = gf.add(value, np.full_like(value, delta))
        log.warning(
            "%s round %d: colluding holder, partial sum shifted onto the codeword vanishing at %s",
            self.node_id,
            session.round,
            ",".join(members[h - 1] for h in roots),
        )
        return Partial(honest.round, honest.cluster, honest.sender, gf.to_bytes(shifted))

    def _tamper(self, peer: str, message: Message) -> Message:
        name, kind = self.spec.name, message.kind
        scale = float(self.spec.params.get("scale", 10.0))
        tensors = dict(message.tensors)
        if name == "corrupt-partial" and kind == pb.MESSAGE_KIND_PARTIAL_SUM:
            from phalanx.mpc.field import PRIME

            size = tensors["value"].size // 4
            garbage = self.rng.integers(0, PRIME, size, dtype=np.uint32).astype("<u4")
            tensors["value"] = garbage.view(np.uint8)
        elif name == "corrupt-shares" and kind == pb.MESSAGE_KIND_SHARE:
            blob = tensors["ciphertext"].copy()
            blob[len(blob) // 2] ^= 0xFF
            tensors["ciphertext"] = blob
        elif name == "corrupt-output" and kind == pb.MESSAGE_KIND_CLUSTER_OUTPUT:
            if "sum" not in tensors:  # a failure notice: nothing to corrupt
                return message
            noise = self.rng.standard_normal(tensors["sum"].size).astype(np.float32)
            tensors["sum"] = tensors["sum"] + scale * noise
        elif name == "equivocate" and kind in (
            pb.MESSAGE_KIND_CLUSTER_OUTPUT,
            pb.MESSAGE_KIND_UPDATE,
        ):
            key = "sum" if kind == pb.MESSAGE_KIND_CLUSTER_OUTPUT else "update"
            if key in tensors and _stable_bit(f"{peer}/{message.round}"):
                tensors[key] = tensors[key] * np.float32(-scale)
        else:
            return message
        return Message(
            message.sender,
            message.round,
            message.kind,
            message.cluster,
            tensors,
            message.meta,
            message.recipient,
            message.signature,
        )


def flip_labels(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Label flipping (Tolpegin et al. 2020): y -> C - 1 - y."""
    return (num_classes - 1 - labels).astype(labels.dtype)


def add_backdoor(images: np.ndarray) -> np.ndarray:
    """BadNets trigger (Gu et al. 2017): a 3x3 white square in the bottom-right corner."""
    poisoned = images.copy()
    poisoned[..., -4:-1, -4:-1] = 1.0
    return poisoned


def poison_training_data(
    spec: BehaviourSpec, x: np.ndarray, y: np.ndarray, num_classes: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """The data-level attacks: the node then trains honestly on poisoned data."""
    if spec.name == "label-flip":
        return x, flip_labels(y, num_classes)
    if spec.name == "backdoor":
        target = int(spec.params.get("target", 0))
        fraction = float(spec.params.get("fraction", 0.5))
        rng = np.random.default_rng(seed)
        chosen = rng.random(len(y)) < fraction
        x, y = x.copy(), y.copy()
        x[chosen] = add_backdoor(x[chosen])
        y[chosen] = target
        return x, y
    return x, y


def backdoor_success_rate(predict: Any, x: np.ndarray, y: np.ndarray, target: int) -> float:
    """Attack success rate: share of triggered test images (true class != target) classified
    as the target."""
    keep = y != target
    if not np.any(keep):
        return 0.0
    predictions = predict(add_backdoor(x[keep]))
    return float(np.mean(predictions == target))


class UpdatePoisoner:
    """Wraps the learner's output: returns the attack's update instead of the benign one.

    `colluder_view` yields the honest statistics the attack may use: by default the benign
    updates of all colluders, exchanged over the side channel; with ``omniscient`` every honest
    node's update. ``cluster_size`` (the scenario's, public) is handed to the attacks in
    `CLUSTER_AWARE_ATTACKS`, which then aim at the cluster means the robust rule aggregates;
    an explicit ``cluster_size`` in the behaviour spec wins. ``aggregation`` (the scenario's
    ``rule``, ``pre`` and ``f``) is handed the same way to `RULE_AWARE_ATTACKS`, which tune their
    factor against that rule; they refuse to start without a rule from either place.
    """

    def __init__(
        self,
        spec: BehaviourSpec,
        n: int,
        f: int,
        colluder_view: Any,
        seed: int,
        cluster_size: int = 1,
        aggregation: AggregationSettings | None = None,
    ) -> None:
        from phalanx.adversary.poisoning import AttackSpec, make_params, parse_attack

        self.spec = spec
        params: dict[str, Any] = dict(spec.params)
        attack_name = parse_attack(spec.name).name
        if attack_name in CLUSTER_AWARE_ATTACKS and cluster_size > 1:
            # The rule aggregates cluster means: aim there unless the spec says otherwise.
            params.setdefault("cluster_size", cluster_size)
        if attack_name in RULE_AWARE_ATTACKS:
            if aggregation is not None:
                params.setdefault("rule", aggregation.rule)
                if aggregation.pre:
                    params.setdefault("pre", "+".join(aggregation.pre))
                if aggregation.f is not None:
                    params.setdefault("rule_f", aggregation.f)
            if "rule" not in params:
                raise ValueError(
                    f"behaviour {spec.name!r} tunes its factor against the outer aggregation "
                    "rule: give it as rule=NAME in the behaviour, or pass the scenario's "
                    "aggregation settings"
                )
        self.attack = AttackSpec(attack_name, make_params(attack_name, params))
        self.n, self.f = n, f
        self.colluder_view = colluder_view
        self.seed = seed

    async def __call__(self, update: np.ndarray, round_: int) -> np.ndarray:
        import torch

        if round_ < self.spec.start_round:
            return update
        view = None
        if self.attack.attack.needs_honest_view:
            rows = await self.colluder_view(round_, update)
            if len(rows) < self.attack.attack.min_honest:
                # Colluders' updates missed the deadline: without the statistics the attack
                # needs, send the benign update this round rather than crash the node.
                log.warning(
                    "%s round %d: only %d honest update(s) in view, %s needs %d; sending the "
                    "benign update",
                    self.spec.name,
                    round_,
                    len(rows),
                    self.spec.name,
                    self.attack.attack.min_honest,
                )
                return update
            view = torch.from_numpy(np.stack(rows).astype(np.float32))
        generator = torch.Generator().manual_seed(self.seed + round_)
        poisoned = self.attack.apply(torch.from_numpy(update), view, self.n, self.f, generator)
        return poisoned.to(torch.float32).numpy()
