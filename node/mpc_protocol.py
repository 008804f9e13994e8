"""Secure aggregation inside each cluster, driven over gRPC: the `shamir` cluster protocol.

Phases for member i of cluster c (members M, aggregators P = the first `publishers` of M):

1. *keys*: i advertises a fresh per-round X25519 key to M. The node calls `prepare` as soon as
   the round's clusters are known, so this exchange overlaps the local training.
2. *share*: i encodes its update in fixed point, Shamir-shares it t-out-of-|M| (Shamir 1979)
   and sends each holder its share, AES-GCM-encrypted end to end (`mpc.ShamirMember.deal`).
3. *agree*: each holder tells P which dealers it holds valid shares of; each aggregator fixes
   the dealer set D (dealers held by at least t holders and by a majority of those reporting)
   and asks every holder for its partial sum over D. A holder answers one dealer set per round
   (the first aggregator's in rank order, and whoever asks for the same set): partial sums over
   D and D - {x} would reveal x's update as a difference of two cluster sums.
4. *reconstruct*: each aggregator decodes the partial sums as a Reed-Solomon codeword
   (Berlekamp-Welch, `mpc.reconstruct_cluster_sum`), which tolerates |M| - t missing and
   floor((received - t) / 2) lying holders, and publishes (sum over D, D) to every node; a
   reconstruction outside that bound is reported as failed, never as a wrong sum.

No node ever receives another node's update in the clear: holders see single Shamir shares,
aggregators see partial sums (shares of the cluster sum) and the cluster sum.

CPU work (encoding, sharing, encryption, decryption, partial sums, reconstruction, SecAgg mask
expansion) runs in worker threads (`asyncio.to_thread`) so the event loop keeps receiving the
other members' messages meanwhile.

Distributed DP (``defense.distributed`` on): in both protocols each member clips its update to L2
norm C, encodes it and adds its integer noise share of variance ``sigma_int^2 / k`` in GF(p)
before sharing or masking (`node.defenses.DistributedNoise.encode`; Kairouz et al. 2021), so the
reconstructed sum carries the whole calibrated noise and no member ever holds it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import grpc
import numpy as np

from phalanx.mpc import (
    ClusterSession,
    Csprng,
    EncryptedShare,
    FixedPointConfig,
    KeyAdvertisement,
    PartialSum,
    ProtocolViolation,
    ShamirMember,
    ShareRejected,
    decode_sum,
    default_threshold,
    encode,
    packed_length,
    reconstruct_cluster_sum,
)
from phalanx.node import clock
from phalanx.node.codec import Message
from phalanx.node.protocols import (
    ClusterOutput,
    RoundContext,
    _invalid,
    _names,
    await_cluster_outputs,
    broadcast,
    disseminate,
    has_failed,
    publish_failure,
    publish_output,
    sender_cluster_members,
    validate_cluster_output,
    wait_for_publisher,
)
from phalanx.node.server import Rejection
from phalanx.v1 import node_pb2 as pb

if TYPE_CHECKING:
    from phalanx.mpc.field import FieldVector
    from phalanx.node.defenses import DistributedNoise

log = logging.getLogger(__name__)

RejectHook = Callable[[str, str], None]
NoiseSource = Callable[[], "DistributedNoise | None"]
"""Returns the node's distributed-DP noiser (None: no noise); looked up each round, since the
node builds its defenses after its protocol."""
SHARE_OVERHEAD_BYTES = 64  # AES-GCM nonce and tag, with room to spare


def deadline_after(previous_deadline: float, collect_s: float) -> float:
    """Deadline of a wait that follows a phase whose own wait ended at `previous_deadline`:
    one collect window after the later of now and that deadline.

    Our previous phase may end early (every message came) while a peer's runs to its deadline
    (a message it waits for never comes) and only then sends what we wait for now. Anchoring
    the wait on the previous deadline, not on our own finish, leaves that peer a full window.
    Waits still end as soon as every expected message is in, so a fault-free round is no
    slower."""
    return max(clock.now(), previous_deadline) + collect_s


Dealer = Callable[["ShamirMember", "FieldVector", Mapping[str, KeyAdvertisement]], Any]


def _transport_hook(context: RoundContext, name: str) -> Any:
    """The node's transport's own version of a holder step, when it has one: a Byzantine
    transport's ``deal_shares`` (``inconsistent-shares``) or ``partial_sum``
    (``collude-partial``), see `adversary.behaviours.ByzantineTransport`; None otherwise."""
    return getattr(getattr(context.send, "__self__", None), name, None)


def _byzantine_dealer(context: RoundContext) -> Dealer | None:
    return _transport_hook(context, "deal_shares")  # type: ignore[no-any-return]


def agree_dealer_set(held_by: dict[str, Sequence[str]], threshold: int) -> list[str]:
    """Dealers held by at least `threshold` holders and by a majority of the reporting holders.

    Deterministic in its input: two aggregators that received the same reports agree.
    """
    counts: dict[str, int] = {}
    for dealers in held_by.values():
        for dealer in set(dealers):
            counts[dealer] = counts.get(dealer, 0) + 1
    needed = max(threshold, len(held_by) // 2 + 1)
    return sorted(dealer for dealer, count in counts.items() if count >= needed)


def named_liars(
    corrected: Sequence[str], malformed: Mapping[str, str], reports: Mapping[str, Message]
) -> list[str]:
    """The members an aggregator names as liars: holders whose partial sums Berlekamp-Welch
    corrected or that sent malformed ones (their own signed messages convict them), and dealers
    whose shares a strict majority of the reporting holders found failing their checks (one
    Byzantine holder cannot convict an honest dealer alone)."""
    accusations: dict[str, int] = {}
    for report in reports.values():
        for dealer in set(_names(report.meta.get("rejected", ""))):
            accusations[dealer] = accusations.get(dealer, 0) + 1
    needed = len(reports) // 2 + 1
    accused = {dealer for dealer, count in accusations.items() if count >= needed}
    return sorted({*corrected, *malformed, *accused})


def encode_member_update(
    update: np.ndarray,
    fixed_point: FixedPointConfig,
    noise: NoiseSource | None,
    cluster_size: int,
    round_: int,
) -> FieldVector:
    """The field vector a member shares: its fixed-point update, plus its distributed-DP noise
    share when the node has one."""
    noiser = noise() if noise is not None else None
    if noiser is None:
        return encode(update, fixed_point)
    return noiser.encode(update, fixed_point, cluster_size, round_)


def decrypt_shares(
    context: RoundContext, member: Any, received: dict[str, Message]
) -> list[tuple[str, ShareRejected]]:
    """Decrypt and keep each received share (Shamir update shares or SecAgg seed shares); returns
    the shares that failed their checks. Pure CPU work: the protocols run it in a worker thread."""
    rejected = []
    for sender, msg in sorted(received.items()):
        try:
            member.receive_share(
                EncryptedShare(
                    context.round,
                    str(context.my_cluster),
                    sender,
                    msg.recipient,
                    msg.meta.get("purpose", ""),
                    msg.tensors["ciphertext"].tobytes(),
                )
            )
        except ShareRejected as error:
            rejected.append((sender, error))
    return rejected


EarlyTasks = dict[int, "asyncio.Task[Any]"]


def _start_early(
    tasks: EarlyTasks, context: RoundContext, phases: Coroutine[Any, Any, Any]
) -> None:
    """Run a protocol's update-independent phases for `context.round` in the background (they
    overlap the local training); tasks of older rounds are cancelled."""
    for old in [r for r in tasks if r < context.round]:
        tasks.pop(old).cancel()
    if context.round in tasks:
        phases.close()
        return
    tasks[context.round] = asyncio.ensure_future(phases)


async def _take_early(
    tasks: EarlyTasks,
    context: RoundContext,
    phases: Callable[[RoundContext], Coroutine[Any, Any, Any]],
) -> Any:
    """The result of the round's early phases, started now if `prepare` was not called."""
    if context.round not in tasks:
        _start_early(tasks, context, phases(context))
    return await tasks.pop(context.round)


def _partial_message(
    sender: str, cluster: int, partial: PartialSum, dealers: Sequence[str], recipient: str
) -> Message:
    """A holder's partial sum for one aggregator, labelled with the dealer set it covers."""
    return Message(
        sender,
        partial.round,
        pb.MESSAGE_KIND_PARTIAL_SUM,
        cluster,
        {"value": np.frombuffer(partial.value, np.uint8)},
        meta={"dealers": ",".join(dealers)},
        recipient=recipient,
    )


class ShamirClusterProtocol:
    """Threshold secret sharing with robust reconstruction, for malicious share-holders."""

    kinds = frozenset(
        {
            pb.MESSAGE_KIND_MPC_KEYS,
            pb.MESSAGE_KIND_SHARE,
            pb.MESSAGE_KIND_HELD_DEALERS,
            pb.MESSAGE_KIND_DEALER_SET,
            pb.MESSAGE_KIND_PARTIAL_SUM,
            pb.MESSAGE_KIND_CLUSTER_OUTPUT,
        }
    )
    phases = 4
    publishers: int | None = None

    def __init__(
        self,
        fixed_point: FixedPointConfig,
        threshold: int,
        publishers: int,
        on_reject: RejectHook,
        noise: NoiseSource | None = None,
        packing: int = 1,
    ) -> None:
        if packing < 1:
            raise ValueError(f"packing must be >= 1, got {packing}")
        self.fixed_point = fixed_point
        self.threshold = threshold
        self.packing = packing
        self.publishers: int | None = publishers
        self._on_reject = on_reject
        self._noise = noise
        self.last_outcomes: dict[int, str] = {}
        self._early: EarlyTasks = {}

    def threshold_for(self, size: int) -> int:
        return self.threshold or default_threshold("shamir", size)

    def validate(self, message: Message, clusters: Sequence[Sequence[str]], dimension: int) -> None:
        members = sender_cluster_members(message, clusters)
        publishers = members  # which members publish depends on suspicion; checked on use
        kind = message.kind
        if kind == pb.MESSAGE_KIND_CLUSTER_OUTPUT:
            if message.sender not in publishers:
                raise _invalid(
                    f"{message.sender} is not an aggregator of cluster {message.cluster}"
                )
            validate_cluster_output(message, members, dimension)
        elif kind == pb.MESSAGE_KIND_MPC_KEYS:
            key = message.tensors.get("encryption_public")
            if key is None or key.dtype != np.uint8 or key.shape != (32,):
                raise _invalid("key advertisement needs a uint8[32] 'encryption_public'")
        elif kind == pb.MESSAGE_KIND_SHARE:
            blob = message.tensors.get("ciphertext")
            limit = 4 * dimension + SHARE_OVERHEAD_BYTES
            if not message.recipient:
                raise _invalid("share carries no recipient")
            if blob is None or blob.dtype != np.uint8 or blob.ndim != 1 or blob.size > limit:
                raise _invalid(f"share needs a uint8 'ciphertext' of at most {limit} bytes")
        elif kind == pb.MESSAGE_KIND_PARTIAL_SUM:
            value = message.tensors.get("value")
            size = 4 * packed_length(dimension, self.packing)
            if value is None or value.dtype != np.uint8 or value.shape != (size,):
                raise _invalid(f"partial sum needs a uint8[{size}] 'value'")
            names = _names(message.meta.get("dealers", ""))
            if not names or len(set(names)) != len(names) or not set(names) <= set(members):
                raise _invalid(f"partial sum must name its dealers, members of {message.cluster}")
        elif kind in (pb.MESSAGE_KIND_HELD_DEALERS, pb.MESSAGE_KIND_DEALER_SET):
            fields = ("held", "rejected") if kind == pb.MESSAGE_KIND_HELD_DEALERS else ("dealers",)
            for field in fields:
                names = _names(message.meta.get(field, ""))
                if len(set(names)) != len(names) or not set(names) <= set(members):
                    raise _invalid(
                        f"{field} must list distinct members of cluster {message.cluster}"
                    )
            if kind == pb.MESSAGE_KIND_DEALER_SET and message.sender not in publishers:
                raise Rejection(
                    grpc.StatusCode.PERMISSION_DENIED,
                    "invalid",
                    f"{message.sender} is not an aggregator of cluster {message.cluster}",
                )

    def _reject(self, context: RoundContext, sender: str, error: Exception) -> None:
        log.warning(
            "%s round %d: rejected MPC message from %s: %s",
            context.node_id,
            context.round,
            sender,
            error,
        )
        self._on_reject("mpc", sender)

    def prepare(self, context: RoundContext) -> None:
        """Start the update-independent phase (per-round key advertisement and collection) as
        soon as the round's clusters are known, so it overlaps the local training."""
        _start_early(self._early, context, self._keys(context))

    async def _keys(self, context: RoundContext) -> tuple[ShamirMember, dict[str, Any]]:
        """Phase 1: advertise a fresh X25519 key to the cluster and collect the members' keys."""
        me, r, mine = context.node_id, context.round, context.my_cluster
        members = sorted(context.clusters[mine])
        live = [m for m in members if m not in context.suspected or m == me]
        session = ClusterSession(
            tuple(members),
            r,
            str(mine),
            self.threshold_for(len(members)),
            context.dimension,
            self.packing,
        )
        member = ShamirMember(session, me, Csprng(None))
        started = clock.now()
        advert = member.advertise_keys()
        await broadcast(
            context,
            Message(
                me,
                r,
                pb.MESSAGE_KIND_MPC_KEYS,
                mine,
                {"encryption_public": np.frombuffer(advert.encryption_public, np.uint8)},
            ),
            members,
        )
        keys = await context.inbox.wait_for(
            r, pb.MESSAGE_KIND_MPC_KEYS, mine, live, started + context.collect_s
        )
        adverts = {
            sender: KeyAdvertisement(
                r, str(mine), sender, msg.tensors["encryption_public"].tobytes()
            )
            for sender, msg in keys.items()
        }
        return member, adverts

    def _deal(
        self,
        member: ShamirMember,
        update: np.ndarray,
        adverts: dict[str, Any],
        size: int,
        r: int,
        dealer: Dealer | None = None,
    ) -> dict[str, EncryptedShare]:
        encoded = encode_member_update(update, self.fixed_point, self._noise, size, r)
        if dealer is not None:
            return dealer(member, encoded, adverts)
        return member.deal(encoded, adverts)

    async def run(self, context: RoundContext, update: np.ndarray) -> dict[int, ClusterOutput]:
        me, r, mine = context.node_id, context.round, context.my_cluster
        members = sorted(context.clusters[mine])
        publishers = context.publishers_of(mine)
        inbox, collect = context.inbox, context.collect_s
        started = clock.now()

        # 1. keys (sent by `prepare` before training; what is left of the wait is spent here)
        member, adverts = await _take_early(self._early, context, self._keys)
        live = [m for m in members if m not in context.suspected or m == me]
        # Keys that arrived during the training count, and a key still missing gets the deadline
        # it had when keys followed the training (the early wait may have given up on a member
        # the failure detector doubted while every process was still starting).
        keys = inbox.get(r, pb.MESSAGE_KIND_MPC_KEYS, mine)
        if set(live) - keys.keys() - inbox.unreachable():
            keys = await inbox.wait_for(r, pb.MESSAGE_KIND_MPC_KEYS, mine, live, started + collect)
        if keys.keys() - adverts.keys():
            adverts |= {
                sender: KeyAdvertisement(
                    r, str(mine), sender, msg.tensors["encryption_public"].tobytes()
                )
                for sender, msg in keys.items()
                if sender not in adverts
            }
        context.phase_seconds["keys"] = clock.now() - started
        session = member.session
        # A member that advertised no key this round is gone for the round: later phases do not
        # wait for it, so one dead member costs one deadline, not one per phase.
        live = sorted(adverts)

        # 2. share: encoding, Shamir sharing and encryption run in a worker thread, so the event
        # loop keeps receiving the other dealers' shares meanwhile.
        phase = clock.now()
        shares = await asyncio.to_thread(
            self._deal, member, update, adverts, len(members), r, _byzantine_dealer(context)
        )
        for recipient, share in sorted(shares.items()):
            context.post(
                recipient,
                Message(
                    me,
                    r,
                    pb.MESSAGE_KIND_SHARE,
                    mine,
                    {"ciphertext": np.frombuffer(share.ciphertext, np.uint8)},
                    meta={"purpose": share.purpose},
                    recipient=recipient,
                ),
            )
        dealers = [d for d in adverts if d != me]
        share_deadline = phase + collect
        received = await inbox.wait_for(r, pb.MESSAGE_KIND_SHARE, mine, dealers, share_deadline)
        bad_shares = []
        for sender, error in await asyncio.to_thread(decrypt_shares, context, member, received):
            self._reject(context, sender, error)
            bad_shares.append(sender)
        context.phase_seconds["share"] = clock.now() - phase

        # 3. agree on the dealer set, then answer the aggregators with partial sums; a holder
        # also reports the dealers whose shares failed their checks, for the aggregators to name.
        phase = clock.now()
        held = Message(
            me,
            r,
            pb.MESSAGE_KIND_HELD_DEALERS,
            mine,
            meta={"held": ",".join(member.held_dealers()), "rejected": ",".join(bad_shares)},
        )
        await broadcast(context, held, publishers)
        # A holder still waiting for a lost share reports at its share deadline, after ours.
        held_deadline = deadline_after(share_deadline, collect)
        if me in publishers:
            reports = await inbox.wait_for(
                r, pb.MESSAGE_KIND_HELD_DEALERS, mine, live, held_deadline
            )
            agreed = agree_dealer_set(
                {s: _names(m.meta["held"]) for s, m in reports.items()},
                session.reconstruction_threshold,
            )
            if agreed:
                decision = Message(
                    me, r, pb.MESSAGE_KIND_DEALER_SET, mine, meta={"dealers": ",".join(agreed)}
                )
                await broadcast(context, decision, members)
            else:  # no dealer is held widely enough: the outcome is decided now
                await publish_failure(
                    context, f"no dealer held by {session.reconstruction_threshold} holders"
                )
        # In aggregator rank order, each answered as soon as its request arrives: a holder
        # answers one dealer set per round (the first aggregator's), and any other aggregator
        # that asked for the same set.
        requests: dict[str, Message] = {}
        partial_sum = _transport_hook(context, "partial_sum") or type(member).partial_sum
        for publisher in [p for p in publishers if p in adverts]:
            request = await wait_for_publisher(
                context, pb.MESSAGE_KIND_DEALER_SET, publisher, held_deadline + collect
            )
            if request is None:
                continue
            requests[publisher] = request
            dealer_set = _names(request.meta["dealers"])
            try:
                partial = await asyncio.to_thread(partial_sum, member, dealer_set)
            except ValueError as error:
                log.info("%s round %d: no partial sum for %s: %s", me, r, publisher, error)
                continue
            await context.deliver(
                publisher, _partial_message(me, mine, partial, dealer_set, publisher)
            )
        context.phase_seconds["agree"] = clock.now() - phase

        # 4. reconstruct and publish
        phase = clock.now()
        if me in publishers and me in requests:
            agreed = _names(requests[me].meta["dealers"])
            await self._reconstruct_and_publish(context, session, agreed, live, phase)
        elif me in publishers and not has_failed(context, mine, me):  # no notice sent yet
            await publish_failure(context, "no dealer set")
        context.phase_seconds["reconstruct"] = clock.now() - phase
        return await await_cluster_outputs(context, phase, (self.phases + 1) * collect)

    async def _reconstruct_and_publish(
        self,
        context: RoundContext,
        session: ClusterSession,
        agreed: list[str],
        live: list[str],
        since: float,
    ) -> None:
        """Aggregator: robust reconstruction (Berlekamp-Welch) from the partial sums over D, in a
        worker thread; publish (sum, D) to every node or mark the cluster failed."""
        me, r, mine = context.node_id, context.round, context.my_cluster
        wanted = ",".join(agreed)
        # Only holders that reported a share of every agreed dealer can answer: a holder that
        # lacks one stays silent, and waiting for it would only run into the deadline.
        reports = context.inbox.get(r, pb.MESSAGE_KIND_HELD_DEALERS, mine)
        able = [
            s for s in live if s in reports and set(agreed) <= set(_names(reports[s].meta["held"]))
        ]
        arrived = await context.inbox.wait_for(
            r, pb.MESSAGE_KIND_PARTIAL_SUM, mine, able, since + context.collect_s
        )
        partials = [
            PartialSum(r, str(mine), sender, msg.tensors["value"].tobytes())
            for sender, msg in sorted(arrived.items())
            if msg.meta.get("dealers") == wanted
        ]
        outcome = await asyncio.to_thread(reconstruct_cluster_sum, session, partials)
        for sender, reason in outcome.rejections.items():
            self._reject(context, sender, ValueError(reason))
        if outcome.failed or outcome.field_sum is None or not agreed:
            self.last_outcomes[mine] = f"failed: {outcome.reason}"
            log.warning(
                "%s round %d: cluster %d reconstruction failed: %s", me, r, mine, outcome.reason
            )
            await publish_failure(context, f"reconstruction failed: {outcome.reason}")
            return
        if outcome.suspects:
            log.warning(
                "%s round %d: corrected lying holders %s", me, r, ",".join(outcome.suspects)
            )
        liars = named_liars(outcome.suspects, outcome.rejections, reports)
        self.last_outcomes[mine] = "ok"
        total = decode_sum(outcome.field_sum, self.fixed_point, len(agreed))
        output = publish_output(context, total.astype(np.float32), agreed, liars)
        await disseminate(context, output)


class SecAggClusterProtocol:
    """Pairwise masking with double masking (Bonawitz et al., CCS 2017), honest-but-curious.

    The cluster's aggregator is its lowest-ranked member that is not suspected; members talk to
    each other directly where Bonawitz relays through the server.

    1. *keys*: each member advertises per-round X25519 encryption and masking keys.
    2. *seed shares*: each member Shamir-shares its self-mask seed b_i and masking key among the
       advertisers, encrypted end to end.
    3. *agree*: members report whose seed shares they hold; the aggregator fixes the mask set U2.
       Phases 1-3 do not depend on the update: `prepare` starts them before the local training.
    4. *masked input*: y_i = x_i + PRG(b_i) + sum_j +-PRG(s_ij) over U2, sent to the aggregator
       (about one vector per member per round).
    5. *unmask*: the aggregator asks the members for shares of b_j of survivors and of the
       masking keys of dropped members, removes all masks and publishes the sum. A late input is
       never unmasked: a member refuses to reveal both seeds of anyone.
    """

    kinds = frozenset(
        {
            pb.MESSAGE_KIND_MPC_KEYS,
            pb.MESSAGE_KIND_MPC_SEED_SHARES,
            pb.MESSAGE_KIND_HELD_DEALERS,
            pb.MESSAGE_KIND_DEALER_SET,
            pb.MESSAGE_KIND_MASKED_INPUT,
            pb.MESSAGE_KIND_UNMASK,
            pb.MESSAGE_KIND_CLUSTER_OUTPUT,
        }
    )
    phases = 5
    publishers: int | None = 1  # the cluster's one aggregator (Bonawitz's server role)

    def __init__(
        self,
        fixed_point: FixedPointConfig,
        threshold: int,
        on_reject: RejectHook,
        noise: NoiseSource | None = None,
    ) -> None:
        self.fixed_point = fixed_point
        self.threshold = threshold
        self._on_reject = on_reject
        self._noise = noise
        self._early: EarlyTasks = {}

    def threshold_for(self, size: int) -> int:
        return self.threshold or default_threshold("secagg", size)

    def validate(self, message: Message, clusters: Sequence[Sequence[str]], dimension: int) -> None:
        members = sender_cluster_members(message, clusters)
        kind = message.kind
        if kind == pb.MESSAGE_KIND_CLUSTER_OUTPUT:
            validate_cluster_output(message, members, dimension)
        elif kind == pb.MESSAGE_KIND_MPC_KEYS:
            for name in ("encryption_public", "masking_public"):
                key = message.tensors.get(name)
                if key is None or key.dtype != np.uint8 or key.shape != (32,):
                    raise _invalid(f"key advertisement needs a uint8[32] {name!r}")
        elif kind == pb.MESSAGE_KIND_MPC_SEED_SHARES:
            blob = message.tensors.get("ciphertext")
            if (
                not message.recipient
                or blob is None
                or blob.dtype != np.uint8
                or blob.ndim != 1
                or blob.size > 4096
            ):
                raise _invalid("seed share needs a recipient and a uint8 'ciphertext'")
        elif kind == pb.MESSAGE_KIND_MASKED_INPUT:
            value = message.tensors.get("masked")
            if value is None or value.dtype != np.uint8 or value.shape != (4 * dimension,):
                raise _invalid(f"masked input needs a uint8[{4 * dimension}] 'masked'")
        elif kind in (
            pb.MESSAGE_KIND_HELD_DEALERS,
            pb.MESSAGE_KIND_DEALER_SET,
            pb.MESSAGE_KIND_UNMASK,
        ):
            for field in ("held", "dealers", "survivors", "dropped"):
                names = _names(message.meta.get(field, ""))
                if len(set(names)) != len(names) or not set(names) <= set(members):
                    raise _invalid(f"{field} must list distinct members of the cluster")
            if any(
                t.dtype != np.uint8 or t.ndim != 1 or t.size > 4096
                for t in message.tensors.values()
            ):
                raise _invalid("unmasking shares must be small uint8 vectors")

    def _reject(self, context: RoundContext, sender: str, error: Exception) -> None:
        log.warning(
            "%s round %d: rejected secagg message from %s: %s",
            context.node_id,
            context.round,
            sender,
            error,
        )
        self._on_reject("mpc", sender)

    def prepare(self, context: RoundContext) -> None:
        """Start the update-independent phases (keys, seed shares, mask-set agreement) as soon as
        the round's clusters are known, so they overlap the local training. A member that drops
        during training is then a dropped member of U2, recovered as in Bonawitz et al."""
        _start_early(self._early, context, self._setup(context))

    async def _setup(
        self, context: RoundContext
    ) -> tuple[Any, dict[str, Any], list[str], asyncio.Future[None] | None]:
        """Phases 1-3: keys, seed shares and the mask set U2; returns (member, adverts, U2, the
        expansion of the masks, which runs in a worker thread from the seed-share phase on)."""
        from phalanx.mpc import SecAggMember

        me, r, mine = context.node_id, context.round, context.my_cluster
        members = sorted(context.clusters[mine])
        live = [m for m in members if m not in context.suspected or m == me]
        aggregator = context.publishers_of(mine)[0]
        session = ClusterSession(
            tuple(members), r, str(mine), self.threshold_for(len(members)), context.dimension
        )
        member = SecAggMember(session, me, Csprng(None))
        inbox, collect = context.inbox, context.collect_s

        # 1. keys
        started = clock.now()
        advert = member.advertise_keys()
        await broadcast(
            context,
            Message(
                me,
                r,
                pb.MESSAGE_KIND_MPC_KEYS,
                mine,
                {
                    "encryption_public": np.frombuffer(advert.encryption_public, np.uint8),
                    "masking_public": np.frombuffer(advert.masking_public, np.uint8),
                },
            ),
            members,
        )
        keys = await inbox.wait_for(r, pb.MESSAGE_KIND_MPC_KEYS, mine, live, started + collect)
        adverts = {
            s: KeyAdvertisement(
                r,
                str(mine),
                s,
                m.tensors["encryption_public"].tobytes(),
                m.tensors["masking_public"].tobytes(),
            )
            for s, m in keys.items()
        }
        context.phase_seconds["keys_early"] = clock.now() - started
        # A member that advertised no key this round is gone for the round: later phases do not
        # wait for it, so one dead member costs one deadline, not one per phase.
        live = sorted(adverts)

        # 2. seed shares
        phase = clock.now()
        share_deadline = phase + collect
        precompute: asyncio.Future[None] | None = None
        if len(adverts) >= session.threshold:
            outgoing = sorted(member.share_keys(adverts).items())
            # the masks need only the keys: expand them while the shares and U2 are on the wire
            precompute = asyncio.ensure_future(asyncio.to_thread(member.precompute_masks))
            for recipient, share in outgoing:
                context.post(
                    recipient,
                    Message(
                        me,
                        r,
                        pb.MESSAGE_KIND_MPC_SEED_SHARES,
                        mine,
                        {"ciphertext": np.frombuffer(share.ciphertext, np.uint8)},
                        meta={"purpose": share.purpose},
                        recipient=recipient,
                    ),
                )
            others = [d for d in adverts if d != me]
            got = await inbox.wait_for(
                r, pb.MESSAGE_KIND_MPC_SEED_SHARES, mine, others, share_deadline
            )
            for sender, error in await asyncio.to_thread(decrypt_shares, context, member, got):
                self._reject(context, sender, error)
        context.phase_seconds["share_early"] = clock.now() - phase

        # 3. agree on the mask set U2
        phase = clock.now()
        held = member.held_seed_shares()
        await broadcast(
            context,
            Message(me, r, pb.MESSAGE_KIND_HELD_DEALERS, mine, meta={"held": ",".join(held)}),
            [aggregator],
        )
        # A member still waiting for a lost seed share reports at its deadline, after ours.
        held_deadline = deadline_after(share_deadline, collect)
        if me == aggregator:
            reports = await inbox.wait_for(
                r, pb.MESSAGE_KIND_HELD_DEALERS, mine, live, held_deadline
            )
            # U2 within the keys the aggregator holds: it unmasks with them (U2 of U1, Fig. 4)
            agreed = agree_dealer_set(
                {s: _names(m.meta["held"]) for s, m in reports.items()}, session.threshold
            )
            mask_set = [dealer for dealer in agreed if dealer in adverts]
            await broadcast(
                context,
                Message(
                    me, r, pb.MESSAGE_KIND_DEALER_SET, mine, meta={"dealers": ",".join(mask_set)}
                ),
                members,
            )
        decision = await inbox.wait_for(
            r, pb.MESSAGE_KIND_DEALER_SET, mine, [aggregator], held_deadline + collect
        )
        context.phase_seconds["agree_early"] = clock.now() - phase
        mask_set = _names(decision[aggregator].meta["dealers"]) if aggregator in decision else []
        return member, adverts, mask_set, precompute

    async def run(self, context: RoundContext, update: np.ndarray) -> dict[int, ClusterOutput]:
        from phalanx.mpc import MaskedInput, SecAggAggregator, UnmaskingRequest

        me, r, mine = context.node_id, context.round, context.my_cluster
        aggregator = context.publishers_of(mine)[0]
        inbox, collect = context.inbox, context.collect_s
        # 1-3. keys, seed shares, mask set (started by `prepare` before training)
        waited = clock.now()
        member, adverts, mask_set, precompute = await _take_early(self._early, context, self._setup)
        context.phase_seconds["keys"] = clock.now() - waited
        session = member.session

        # 4. masked input to the aggregator (encoding, and what is left of the mask expansion,
        # in a worker thread)
        phase = clock.now()
        if precompute is not None:
            try:
                await precompute
            except Exception as error:  # masked_input then expands the masks itself
                log.warning("%s round %d: mask precomputation failed: %s", me, r, error)
        lacking = member.missing_keys(mask_set) if me in mask_set else []
        if lacking:
            # Their keys came after this member's deadline: without them it cannot mask, so it
            # drops out and the aggregator removes its pairwise masks from the others' inputs.
            log.warning(
                "%s round %d: no key from %s in the mask set; dropping out of the sum",
                me,
                r,
                ", ".join(lacking),
            )
            member.drop_out(mask_set)
        elif me in mask_set:

            def mask() -> Any:
                size = len(session.members)
                encoded = encode_member_update(update, self.fixed_point, self._noise, size, r)
                return member.masked_input(encoded, mask_set)

            masked = await asyncio.to_thread(mask)
            message = Message(
                me,
                r,
                pb.MESSAGE_KIND_MASKED_INPUT,
                mine,
                {"masked": np.frombuffer(masked.masked, np.uint8)},
                recipient=aggregator,
            )
            await context.deliver(aggregator, message)
        context.phase_seconds["masked"] = clock.now() - phase

        # 5. unmask (the aggregator asks; members answer) and publish
        phase = clock.now()
        if me == aggregator and mask_set:
            server = SecAggAggregator(session)
            inputs = await inbox.wait_for(
                r, pb.MESSAGE_KIND_MASKED_INPUT, mine, mask_set, phase + collect
            )
            request = server.unmasking_request(
                adverts,
                mask_set,
                [
                    MaskedInput(r, str(mine), s, m.tensors["masked"].tobytes())
                    for s, m in sorted(inputs.items())
                ],
            )
            ask = Message(
                me,
                r,
                pb.MESSAGE_KIND_UNMASK,
                mine,
                meta={
                    "survivors": ",".join(request.survivors),
                    "dropped": ",".join(request.dropped),
                },
            )
            await broadcast(context, ask, request.survivors)
            responses = await inbox.wait_for(
                r, pb.MESSAGE_KIND_UNMASK, mine, request.survivors, clock.now() + collect
            )
            parsed = [
                _unmask_response(r, mine, s, m) for s, m in sorted(responses.items()) if s != me
            ]
            try:  # the aggregator answers like any member, unless it is outside the mask set
                parsed.append(member.unmask(request))
            except ProtocolViolation as error:
                log.info("%s round %d: no own unmasking shares: %s", me, r, error)
            outcome = server.finalize(parsed)
            if outcome.failed or outcome.field_sum is None:
                log.warning(
                    "%s round %d: cluster %d unmasking failed: %s", me, r, mine, outcome.reason
                )
                await publish_failure(context, f"unmasking failed: {outcome.reason}")
            else:
                total = decode_sum(outcome.field_sum, self.fixed_point, len(outcome.included))
                liars = sorted({*outcome.suspects, *outcome.rejections})
                output = publish_output(context, total.astype(np.float32), outcome.included, liars)
                await disseminate(context, output)
        elif me == aggregator:  # no mask set: the outcome is decided now
            await publish_failure(context, "empty mask set")
        elif mask_set:
            asked = await wait_for_publisher(
                context, pb.MESSAGE_KIND_UNMASK, aggregator, phase + 2 * collect
            )
            if asked is not None:
                ask = asked
                try:
                    response = member.unmask(
                        UnmaskingRequest(
                            r,
                            str(mine),
                            tuple(_names(ask.meta["survivors"])),
                            tuple(_names(ask.meta["dropped"])),
                        )
                    )
                    tensors = {
                        f"self:{k}": np.frombuffer(v, np.uint8)
                        for k, v in response.self_mask_shares.items()
                    }
                    tensors |= {
                        f"key:{k}": np.frombuffer(v, np.uint8)
                        for k, v in response.key_shares.items()
                    }
                    context.post(
                        aggregator,
                        Message(
                            me,
                            r,
                            pb.MESSAGE_KIND_UNMASK,
                            mine,
                            tensors,
                            recipient=aggregator,
                        ),
                    )
                except Exception as error:  # ProtocolViolation: refuse, never reveal twice
                    self._reject(context, aggregator, error)
        context.phase_seconds["unmask"] = clock.now() - phase
        return await await_cluster_outputs(context, phase, (self.phases + 1) * collect)


def _unmask_response(round_: int, cluster: int, sender: str, message: Message) -> Any:
    from phalanx.mpc.messages import UnmaskingResponse

    return UnmaskingResponse(
        round_,
        str(cluster),
        sender,
        {
            k.removeprefix("self:"): v.tobytes()
            for k, v in message.tensors.items()
            if k.startswith("self:")
        },
        {
            k.removeprefix("key:"): v.tobytes()
            for k, v in message.tensors.items()
            if k.startswith("key:")
        },
    )
