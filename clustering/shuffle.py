"""Swap-or-not shuffle: a verifiable pseudo-random permutation keyed by a public seed and a round.

Hoang, Morris and Rogaway, "An Enciphering Scheme Based on a Card Shuffle" (CRYPTO 2012), as
specified for committee selection in Ethereum's beacon chain (`compute_shuffled_index`). For a
domain of size n and a key K, each of R rounds picks a pivot and maps

    flip = (pivot_r - x) mod n,   position = max(x, flip),
    x <- flip   if bit_r(position) == 1   else x,

where ``pivot_r = u64_le(SHA256(K || u8 r)[0:8]) mod n`` and ``bit_r(p)`` is bit ``p mod 8`` of
byte ``(p mod 256) // 8`` of ``SHA256(K || u8 r || u32_le(p // 256))``. Each round is an
involution that swaps x with its mirror image around the pivot or not, so the whole map is a
permutation, and it is its own inverse when the rounds run backwards. Anyone who knows the public
seed and the round recomputes it: the cluster assignment needs no coordinator and can be audited.

The per-round key is ``K = SHA256("phalanx/v1/swap-or-not" || u64 len(seed) || seed || u64 round)``.
`SHUFFLE_ROUNDS` = 90 follows the beacon chain (HMR show ~6 log2 n rounds already suffice).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from typing import TypeVar

import numpy as np

SHUFFLE_ROUNDS = 90
MAX_SHUFFLE_ROUNDS = 256  # the round number is encoded as one byte
MAX_INDEX_COUNT = 2**40
SHUFFLE_DOMAIN = b"phalanx/v1/swap-or-not"

T = TypeVar("T")


def round_key(public_seed: bytes, round: int) -> bytes:
    """Per-round shuffle key: SHA-256 over a domain tag, the length-prefixed seed and the round."""
    if not isinstance(public_seed, bytes | bytearray):
        raise ValueError(f"public_seed must be bytes, got {type(public_seed).__name__}")
    if not 0 <= round < 2**64:
        raise ValueError(f"round must be in [0, 2**64), got {round}")
    header = struct.pack(">Q", len(public_seed))
    return hashlib.sha256(
        SHUFFLE_DOMAIN + header + bytes(public_seed) + struct.pack(">Q", round)
    ).digest()


def _check(count: int, key: bytes, rounds: int) -> None:
    if not 1 <= count <= MAX_INDEX_COUNT:
        raise ValueError(f"count must be in [1, 2**40], got {count}")
    if not 0 <= rounds <= MAX_SHUFFLE_ROUNDS:
        raise ValueError(f"rounds must be in [0, {MAX_SHUFFLE_ROUNDS}], got {rounds}")
    if len(key) != 32:
        raise ValueError(f"key must be 32 bytes (see round_key), got {len(key)}")


def _pivot(key: bytes, shuffle_round: int, count: int) -> int:
    digest = hashlib.sha256(key + bytes([shuffle_round])).digest()
    return int.from_bytes(digest[:8], "little") % count


def _source(key: bytes, shuffle_round: int, block: int) -> bytes:
    return hashlib.sha256(key + bytes([shuffle_round]) + struct.pack("<I", block)).digest()


def shuffled_index(index: int, count: int, key: bytes, rounds: int = SHUFFLE_ROUNDS) -> int:
    """Position of `index` under the swap-or-not permutation of ``range(count)`` keyed by `key`."""
    _check(count, key, rounds)
    if not 0 <= index < count:
        raise ValueError(f"index must be in [0, {count}), got {index}")
    for shuffle_round in range(rounds):
        index = _round_step(index, count, key, shuffle_round)
    return index


def unshuffled_index(index: int, count: int, key: bytes, rounds: int = SHUFFLE_ROUNDS) -> int:
    """Inverse of `shuffled_index`: the rounds are involutions, so run them in reverse order."""
    _check(count, key, rounds)
    if not 0 <= index < count:
        raise ValueError(f"index must be in [0, {count}), got {index}")
    for shuffle_round in reversed(range(rounds)):
        index = _round_step(index, count, key, shuffle_round)
    return index


def _round_step(index: int, count: int, key: bytes, shuffle_round: int) -> int:
    flip = (_pivot(key, shuffle_round, count) - index) % count
    position = max(index, flip)
    source = _source(key, shuffle_round, position // 256)
    bit = (source[(position % 256) // 8] >> (position % 8)) & 1
    return flip if bit else index


def _round_bits(key: bytes, shuffle_round: int, count: int) -> np.ndarray:
    """bit_r(p) for every position p in [0, count), one SHA-256 per block of 256 positions."""
    blocks = (count + 255) // 256
    raw = b"".join(_source(key, shuffle_round, block) for block in range(blocks))
    return np.unpackbits(np.frombuffer(raw, dtype=np.uint8), bitorder="little")[:count]


def shuffle_permutation(count: int, key: bytes, rounds: int = SHUFFLE_ROUNDS) -> list[int]:
    """``[shuffled_index(i, count, key) for i in range(count)]``, vectorised over all indices."""
    _check(count, key, rounds)
    current = np.arange(count, dtype=np.int64)
    for shuffle_round in range(rounds):
        pivot = _pivot(key, shuffle_round, count)
        bits = _round_bits(key, shuffle_round, count)
        flip = (pivot - current) % count
        position = np.maximum(current, flip)
        current = np.where(bits[position] == 1, flip, current)
    return [int(value) for value in current]


def shuffle_sequence(
    items: Sequence[T], public_seed: bytes, round: int, rounds: int = SHUFFLE_ROUNDS
) -> list[T]:
    """Items reordered as ``out[j] = items[shuffled_index(j)]`` with key `round_key(seed, round)`.

    This is the beacon chain's committee convention; pass a sorted sequence so that every node
    starts from the same order.
    """
    if not items:
        return []
    permutation = shuffle_permutation(len(items), round_key(public_seed, round), rounds)
    return [items[source] for source in permutation]
