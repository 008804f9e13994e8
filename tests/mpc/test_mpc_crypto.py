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
