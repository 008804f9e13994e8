"""In-process secure sum: the node's phase functions run with in-memory message passing.

:func:`secure_sum` drives exactly the phase methods of :class:`mpc.secagg.SecAggMember`,
:class:`mpc.secagg.SecAggAggregator`, :class:`mpc.shamir_protocol.ShamirMember` and
:func:`mpc.shamir_protocol.reconstruct_cluster_sum` that a node drives over the network, so the
experiments and privacy attacks see the same object an aggregator sees. Faults are simulated:

* ``drop``: secagg members that go silent after sharing their seeds (their input is excluded
  and their pairwise masks recovered, Bonawitz et al. 2017); shamir holders that go silent after
  dealing (their update is still included; their partial sum is missing).
* ``lie``: members that answer the reconstruction phase with uniformly random field vectors
  (wrong partial sums in shamir, wrong seed shares in secagg).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

from phalanx.mpc import field as gf
from phalanx.mpc.crypto import Csprng
from phalanx.mpc.encoding import FixedPointConfig, clip_update, decode_sum, encode
from phalanx.mpc.messages import (
    EncryptedShare,
    KeyAdvertisement,
    MaskedInput,
    PartialSum,
    UnmaskingResponse,
)
from phalanx.mpc.secagg import SEED_ELEMENTS, SecAggAggregator, SecAggMember
from phalanx.mpc.session import ClusterSession, default_threshold
from phalanx.mpc.shamir_protocol import ShamirMember, reconstruct_cluster_sum

Mode = Literal["none", "secagg", "shamir"]
MODES: tuple[str, ...] = ("none", "secagg", "shamir")
PHASES: tuple[str, ...] = ("encode_share", "sum", "reconstruct")


@dataclass(frozen=True)
class SecureSumResult:
    """Outcome of one secure sum over a cluster of k members.

    Attributes:
        value: decoded cluster sum (d,) in float64, or None when ``failed``.
        failed: the protocol could not produce a verified sum (never a wrong value).
        reason: why it failed.
        included: member indices whose updates are in ``value``.
        suspects: member indices caught sending wrong shares or partial sums.
        compute_s: seconds per node for each phase in :data:`PHASES` and ``total``.
        bytes_sent: bytes sent by each member (index order), all protocol messages.
        max_abs_error: max |value - float sum of the clipped included updates| (nan if failed).
        field_sum: the reconstructed field vector (None for mode "none" or failure).
        threshold: the Shamir threshold used (None for mode "none").
    """

    value: npt.NDArray[np.float64] | None
    failed: bool
    reason: str
    included: tuple[int, ...]
    suspects: tuple[int, ...]
    compute_s: dict[str, float]
    bytes_sent: tuple[int, ...]
    max_abs_error: float
    field_sum: gf.FieldVector | None = None
    threshold: int | None = None
    rejections: dict[str, str] = field(default_factory=dict)


def member_name(index: int) -> str:
    """Canonical member id for index ``index`` (sorting names preserves index order)."""
    return f"m{index:05d}"


def _validate(
    updates: npt.ArrayLike, mode: str, drop: Iterable[int], lie: Iterable[int]
) -> tuple[npt.NDArray[np.floating], set[int], set[int]]:
    array = np.asarray(updates)
    if array.ndim != 2 or array.shape[0] < 1 or array.shape[1] < 1:
        raise ValueError(f"updates must have shape (k, d) with k, d >= 1, got {array.shape}")
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"updates must be float32 or float64, got {array.dtype}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    k = array.shape[0]
    drop_set, lie_set = set(drop), set(lie)
    outside = sorted(i for i in drop_set | lie_set if not 0 <= i < k)
    if outside:
        raise ValueError(f"drop/lie indices must be in [0, {k}), got {outside}")
    if drop_set & lie_set:
        raise ValueError(f"a member cannot both drop and lie: {sorted(drop_set & lie_set)}")
    if mode != "none" and k < 2:
        raise ValueError(
            "secure aggregation refuses a cluster of one member (its sum is its update)"
        )
    return array, drop_set, lie_set


class _Clock:
    """Per-member, per-phase compute time (perf_counter, metrics only, never in results)."""

    def __init__(self, k: int) -> None:
        self.seconds = {phase: np.zeros(k) for phase in PHASES}

    def run(self, phase: str, member: int, function, *args):  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        result = function(*args)
        self.seconds[phase][member] += time.perf_counter() - start
        return result

    def per_node(self, active: dict[str, list[int]]) -> dict[str, float]:
        summary = {
            phase: float(np.mean(self.seconds[phase][active[phase]])) if active[phase] else 0.0
            for phase in PHASES
        }
        summary["total"] = sum(summary[phase] for phase in PHASES)
        return summary


def secure_sum(
    updates: npt.ArrayLike,
    mode: Mode = "shamir",
    threshold: int | None = None,
    drop: Iterable[int] = frozenset(),
    lie: Iterable[int] = frozenset(),
    seed: int = 0,
    config: FixedPointConfig | None = None,
    max_errors: int | None = None,
    round_number: int = 0,
    cluster: str = "c0",
    packing: int = 1,
) -> SecureSumResult:
    """Sum the rows of ``updates`` (k, d) with the chosen secure-aggregation protocol.

    ``threshold`` defaults to :func:`mpc.session.default_threshold`. ``packing`` (shamir only)
    puts that many coordinates in each sharing polynomial (Franklin & Yung 1992): shares and
    partial sums are ``packing`` times shorter, reconstruction needs t + packing - 1 holders.
    The config is checked so that a sum of k clipped values cannot wrap. Same inputs and seed
    give bit-identical output.
    """
    if packing != 1 and mode != "shamir":
        raise ValueError(f"packing applies to mode 'shamir' only, got mode={mode!r}")
    array, drop_set, lie_set = _validate(updates, mode, drop, lie)
    config = config or FixedPointConfig()
    k, d = array.shape
    if mode == "none":
        included = tuple(i for i in range(k) if i not in drop_set)
        value = np.sum(array[list(included)].astype(np.float64), axis=0) if included else None
        plain_sent = tuple(0 if i in drop_set else HEADER_PLAIN + 4 * d for i in range(k))
        return SecureSumResult(
            value,
            value is None,
            "" if included else "everyone dropped",
            included,
            (),
            {p: 0.0 for p in (*PHASES, "total")},
            plain_sent,
            0.0,
        )
    config.check_no_overflow(k)
    session = ClusterSession(
        tuple(member_name(i) for i in range(k)),
        round_number,
        cluster,
        threshold if threshold is not None else default_threshold(mode, k),
        d,
        packing,
    )
    master = Csprng(seed)
    rngs = [master.child(member_name(i)) for i in range(k)]
    rounding = np.random.default_rng(seed)
    clock = _Clock(k)
    sent = [0] * k
    encoded = [clock.run("encode_share", i, encode, array[i], config, rounding) for i in range(k)]
    if mode == "secagg":
        return _run_secagg(array, encoded, session, rngs, drop_set, lie_set, clock, sent, config)
    return _run_shamir(
        array, encoded, session, rngs, drop_set, lie_set, clock, sent, config, max_errors
    )


HEADER_PLAIN = 32


def _finish(
    array: npt.NDArray[np.floating],
    field_sum: gf.FieldVector | None,
    failed: bool,
    reason: str,
    included: tuple[int, ...],
    suspects: tuple[int, ...],
    compute: dict[str, float],
    sent: list[int],
    config: FixedPointConfig,
    threshold: int,
    rejections: dict[str, str],
) -> SecureSumResult:
    value = None
    error = float("nan")
    if not failed and field_sum is not None:
        value = decode_sum(field_sum, config, array.shape[0])
        clipped = [clip_update(array[i], config) for i in included]
        expected = np.sum(clipped, axis=0) if clipped else np.zeros(array.shape[1])
        error = float(np.max(np.abs(value - expected)))
    return SecureSumResult(
        value,
        failed,
        reason,
        included,
        suspects,
        compute,
        tuple(sent),
        error,
        field_sum if not failed else None,
        threshold,
        rejections,
    )


def _run_shamir(
    array: npt.NDArray[np.floating],
    encoded: list[gf.FieldVector],
    session: ClusterSession,
    rngs: list[Csprng],
    drop_set: set[int],
    lie_set: set[int],
    clock: _Clock,
    sent: list[int],
    config: FixedPointConfig,
    max_errors: int | None,
) -> SecureSumResult:
    k = session.size
    names = session.members
    members = [ShamirMember(session, names[i], rngs[i]) for i in range(k)]
    adverts: dict[str, KeyAdvertisement] = {}
    for i, member in enumerate(members):
        adverts[names[i]] = clock.run("encode_share", i, member.advertise_keys)
        sent[i] += adverts[names[i]].wire_size() * (k - 1)
    outbox: list[EncryptedShare] = []
    for i, member in enumerate(members):
        messages = clock.run("encode_share", i, member.deal, encoded[i], adverts)
        outbox.extend(messages[name] for name in sorted(messages))
        sent[i] += sum(message.wire_size() for message in messages.values())
    rejections: dict[str, str] = {}
    for message in outbox:
        recipient = names.index(message.recipient)
        clock.run("sum", recipient, members[recipient].receive_share, message)
    dealers = names  # every member dealt; the node agrees on this set over the network
    partial_sums: list[PartialSum] = []
    for i, member in enumerate(members):
        if i in drop_set:
            continue
        partial = clock.run("sum", i, member.partial_sum, dealers)
        if i in lie_set:
            garbage = rngs[i].field_elements(session.share_length)
            partial = PartialSum(
                partial.round, partial.cluster, partial.sender, gf.to_bytes(garbage)
            )
        partial_sums.append(partial)
        sent[i] += partial.wire_size()
    aggregator = min(i for i in range(k) if i not in drop_set) if len(drop_set) < k else 0
    outcome = clock.run(
        "reconstruct", aggregator, reconstruct_cluster_sum, session, partial_sums, max_errors
    )
    rejections.update(outcome.rejections)
    alive = [i for i in range(k) if i not in drop_set]
    compute = clock.per_node(
        {"encode_share": list(range(k)), "sum": alive, "reconstruct": [aggregator]}
    )
    return _finish(
        array,
        outcome.field_sum,
        outcome.failed,
        outcome.reason,
        tuple(range(k)),
        tuple(names.index(s) for s in outcome.suspects),
        compute,
        sent,
        config,
        session.threshold,
        rejections,
    )


def _run_secagg(
    array: npt.NDArray[np.floating],
    encoded: list[gf.FieldVector],
    session: ClusterSession,
    rngs: list[Csprng],
    drop_set: set[int],
    lie_set: set[int],
    clock: _Clock,
    sent: list[int],
    config: FixedPointConfig,
) -> SecureSumResult:
    k = session.size
    names = session.members
    members = [SecAggMember(session, names[i], rngs[i]) for i in range(k)]
    adverts: dict[str, KeyAdvertisement] = {}
    for i, member in enumerate(members):
        adverts[names[i]] = clock.run("encode_share", i, member.advertise_keys)
        sent[i] += adverts[names[i]].wire_size() * (k - 1)
    outbox: list[EncryptedShare] = []
    for i, member in enumerate(members):
        messages = clock.run("encode_share", i, member.share_keys, adverts)
        outbox.extend(messages[name] for name in sorted(messages))
        sent[i] += sum(message.wire_size() for message in messages.values())
    for message in outbox:
        recipient = names.index(message.recipient)
        clock.run("encode_share", recipient, members[recipient].receive_share, message)
    mask_set = names  # U2: every member shared its seeds; dropouts happen after this phase
    masked: list[MaskedInput] = []
    for i, member in enumerate(members):
        if i in drop_set:
            continue
        message = clock.run("encode_share", i, member.masked_input, encoded[i], mask_set)
        masked.append(message)
        sent[i] += message.wire_size()
    alive = [i for i in range(k) if i not in drop_set]
    aggregator_index = alive[0] if alive else 0
    aggregator = SecAggAggregator(session)
    request = clock.run(
        "reconstruct", aggregator_index, aggregator.unmasking_request, adverts, mask_set, masked
    )
    responses: list[UnmaskingResponse] = []
    if len(request.survivors) >= session.threshold:
        for i in alive:
            response = clock.run("sum", i, members[i].unmask, request)
            if i in lie_set:
                response = _lying_response(response, rngs[i])
            responses.append(response)
            sent[i] += response.wire_size()
    outcome = clock.run("reconstruct", aggregator_index, aggregator.finalize, responses)
    compute = clock.per_node(
        {"encode_share": list(range(k)), "sum": alive, "reconstruct": [aggregator_index]}
    )
    return _finish(
        array,
        outcome.field_sum,
        outcome.failed,
        outcome.reason,
        tuple(names.index(s) for s in outcome.included),
        tuple(names.index(s) for s in outcome.suspects),
        compute,
        sent,
        config,
        session.threshold,
        outcome.rejections,
    )


def _lying_response(response: UnmaskingResponse, rng: Csprng) -> UnmaskingResponse:
    def garbage() -> bytes:
        return gf.to_bytes(rng.field_elements(SEED_ELEMENTS))

    return UnmaskingResponse(
        response.round,
        response.cluster,
        response.sender,
        {name: garbage() for name in response.self_mask_shares},
        {name: garbage() for name in response.key_shares},
    )


@dataclass(frozen=True)
class AggregatorView:
    """Everything the aggregator learns about the inputs.

    ``cluster_sum`` is the decoded sum (None if failed); ``individual_updates`` is set only in
    mode "none", where the aggregator receives every update in the clear.
    """

    mode: str
    cluster_sum: npt.NDArray[np.float64] | None
    individual_updates: npt.NDArray[np.float64] | None
    included: tuple[int, ...]


def aggregator_view(
    updates: npt.ArrayLike,
    mode: Mode = "shamir",
    threshold: int | None = None,
    drop: Iterable[int] = frozenset(),
    lie: Iterable[int] = frozenset(),
    seed: int = 0,
    config: FixedPointConfig | None = None,
    packing: int = 1,
) -> AggregatorView:
    """The exact object an aggregator sees, for privacy attacks (runs :func:`secure_sum`)."""
    result = secure_sum(updates, mode, threshold, drop, lie, seed, config, packing=packing)
    individual = None
    if mode == "none":
        individual = np.asarray(updates, dtype=np.float64)[list(result.included)]
    return AggregatorView(mode, result.value, individual, result.included)
