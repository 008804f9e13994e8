"""Key agreement, PRG and AEAD share encryption: tamper and replay rejection."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from phalanx.mpc.crypto import (
    Csprng,
    KeyPair,
    ShareAuthenticationError,
    ShareContext,
    decrypt_share,
    encrypt_share,
    keystream_reader,
    prg_field_vector,
    share_key,
)
from phalanx.mpc.field import PRIME


def _pair() -> tuple[KeyPair, KeyPair, Csprng]:
    rng = Csprng(1)
    return KeyPair.generate(rng), KeyPair.generate(rng), rng


def test_both_sides_derive_the_same_key_and_roundtrip() -> None:
    alice, bob, rng = _pair()
    context = ShareContext("p", 3, "c1", "alice", "bob")
    sender_key = share_key(alice.private, bob.public, context)
    recipient_key = share_key(bob.private, alice.public, context)
    assert sender_key == recipient_key
    ciphertext = encrypt_share(sender_key, context, b"share-bytes", rng)
    assert decrypt_share(recipient_key, context, ciphertext) == b"share-bytes"


@pytest.mark.parametrize(
    "other",
    [
        ShareContext("p", 4, "c1", "alice", "bob"),  # replay into the next round
        ShareContext("p", 3, "c2", "alice", "bob"),  # another cluster
        ShareContext("p", 3, "c1", "alice", "carol"),  # another recipient
        ShareContext("q", 3, "c1", "alice", "bob"),  # another phase
    ],
)
def test_replay_to_another_context_fails(other: ShareContext) -> None:
    alice, bob, rng = _pair()
    context = ShareContext("p", 3, "c1", "alice", "bob")
    ciphertext = encrypt_share(share_key(alice.private, bob.public, context), context, b"x", rng)
    with pytest.raises(ShareAuthenticationError, match="failed authentication"):
        decrypt_share(share_key(bob.private, alice.public, other), other, ciphertext)


def test_tampered_ciphertext_fails() -> None:
    alice, bob, rng = _pair()
    context = ShareContext("p", 0, "c", "alice", "bob")
    key = share_key(alice.private, bob.public, context)
    ciphertext = bytearray(encrypt_share(key, context, b"payload", rng))
    ciphertext[15] ^= 1
    with pytest.raises(ShareAuthenticationError):
        decrypt_share(key, context, bytes(ciphertext))
    with pytest.raises(ShareAuthenticationError, match="shorter"):
        decrypt_share(key, context, b"short")


def test_prg_is_deterministic_uniform_and_seed_sensitive() -> None:
    first = prg_field_vector(b"a" * 32, 200_000)
    assert np.array_equal(first, prg_field_vector(b"a" * 32, 200_000))
    assert not np.array_equal(first, prg_field_vector(b"b" * 32, 200_000))
    assert int(first.max()) < PRIME
    assert stats.kstest(first / PRIME, "uniform").pvalue > 1e-3
    with pytest.raises(ValueError, match="32 bytes"):
        prg_field_vector(b"short", 10)


def test_seeded_csprng_reproducible_and_unseeded_differs() -> None:
    assert Csprng(5).random_bytes(32) == Csprng(5).random_bytes(32)
    assert Csprng(5).random_bytes(32) != Csprng(6).random_bytes(32)
    assert Csprng(None).random_bytes(32) != Csprng(None).random_bytes(32)


class _ScriptedKeystream:
    """A keystream that returns fixed bytes, to force the PRG's rare rejected words."""

    def __init__(self, data: bytes) -> None:
        self._data, self._at = data, 0

    def update(self, data: bytes) -> bytes:
        out = self._data[self._at : self._at + len(data)]
        self._at += len(data)
        assert len(out) == len(data), "the script ran out"
        return out

    def update_into(self, data: bytes | memoryview, buf: bytearray) -> int:
        out = self.update(bytes(data))
        buf[: len(out)] = out
        return len(out)


@pytest.mark.parametrize("length", [1, 7, 40_000, 70_001])
def test_blocked_mask_sum_equals_the_prg_vectors_also_where_words_are_redrawn(
    length: int,
) -> None:
    """`seal_masks` adds the keystreams block by block; the words equal to p (2^-31 each in a
    real keystream) must still get the redraws `prg_field_vector` gives them, from the bytes
    after the first 4 * length, with the term's sign."""
    from phalanx.mpc.field import uniform_from_bytes
    from phalanx.mpc.secagg import MASK_BLOCK, seal_masks

    assert MASK_BLOCK < 40_000  # the longer lengths span blocks

    rng = np.random.default_rng(length)
    scripts = []
    for forced in ([0, length - 1], [length // 2]):
        words = rng.integers(0, 2**32, size=length + 8, dtype=np.uint32)
        words[forced] = [0x7FFFFFFF, 0xFFFFFFFF][: len(forced)]  # both mask to p
        words[length] = 0xFFFFFFFF  # the first redraw is rejected too
        scripts.append(words.astype("<u4").tobytes())
    bases = [rng.integers(0, PRIME, size=length, dtype=np.uint32) for _ in range(2)]
    plus_ref, minus_ref = (
        uniform_from_bytes(keystream_reader(_ScriptedKeystream(script)), length)
        for script in scripts
    )
    expected = (
        bases[0].astype(np.int64) + bases[1] + plus_ref.astype(np.int64) - minus_ref
    ) % PRIME
    sealed = seal_masks(
        bases, [_ScriptedKeystream(scripts[0])], [_ScriptedKeystream(scripts[1])], length
    )
    assert sealed.dtype == np.uint32
    assert np.array_equal(sealed, expected.astype(np.uint32))


def test_blocked_mask_sum_of_real_seeds_equals_the_whole_vectors() -> None:
    from phalanx.mpc.secagg import _seal_masks

    length = 100_003
    seeds = [bytes([i]) * 32 for i in range(5)]
    base = np.arange(length, dtype=np.uint32)
    whole = base.astype(np.int64) + prg_field_vector(seeds[0], length)
    whole += prg_field_vector(seeds[1], length)
    for seed in seeds[2:]:
        whole -= prg_field_vector(seed, length)
    assert np.array_equal(_seal_masks([base], seeds[:2], seeds[2:], length), whole % PRIME)
