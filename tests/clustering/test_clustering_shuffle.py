"""Swap-or-not shuffle: a keyed, invertible, well-mixed permutation."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import chisquare

from phalanx.clustering.shuffle import (
    round_key,
    shuffle_permutation,
    shuffle_sequence,
    shuffled_index,
    unshuffled_index,
)

KEY = round_key(b"public seed", 7)


@settings(max_examples=40, deadline=None)
@given(count=st.integers(1, 600), seed=st.binary(max_size=16), round_number=st.integers(0, 99))
def test_permutation_is_a_bijection(count: int, seed: bytes, round_number: int) -> None:
    permutation = shuffle_permutation(count, round_key(seed, round_number))
    assert sorted(permutation) == list(range(count))


@pytest.mark.parametrize("count", [1, 2, 5, 256, 300])
def test_vectorised_permutation_matches_per_index_definition(count: int) -> None:
    assert shuffle_permutation(count, KEY) == [shuffled_index(i, count, KEY) for i in range(count)]


def test_unshuffle_inverts_shuffle() -> None:
    count = 257
    for index in range(0, count, 16):
        assert unshuffled_index(shuffled_index(index, count, KEY), count, KEY) == index


def test_zero_rounds_is_the_identity_and_more_rounds_move_items() -> None:
    assert shuffle_permutation(50, KEY, rounds=0) == list(range(50))
    assert shuffle_permutation(50, KEY) != list(range(50))


def test_key_depends_on_seed_and_round_and_is_deterministic() -> None:
    assert round_key(b"s", 1) == round_key(b"s", 1)
    assert len({round_key(b"s", 1), round_key(b"s", 2), round_key(b"t", 1)}) == 3
    # length prefix: seed bytes cannot spill into the round field
    assert round_key(b"s\x00", 1) != round_key(b"s", 1)
    first = shuffle_sequence(list("abcdefghijkl"), b"s", 1)
    assert first == shuffle_sequence(list("abcdefghijkl"), b"s", 1)
    assert first != shuffle_sequence(list("abcdefghijkl"), b"s", 2)


def test_all_permutations_of_three_are_about_equally_likely() -> None:
    trials = 1200
    counts = Counter(
        tuple(shuffle_permutation(3, round_key(b"uniformity", r))) for r in range(trials)
    )
    observed = [counts[p] for p in itertools.permutations(range(3))]
    assert sum(observed) == trials
    assert chisquare(observed).pvalue > 1e-3


def test_each_item_lands_uniformly_over_positions() -> None:
    count, trials = 10, 1000
    landing = Counter(shuffled_index(0, count, round_key(b"pos", r)) for r in range(trials))
    assert chisquare([landing[p] for p in range(count)]).pvalue > 1e-3


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: shuffled_index(5, 5, KEY), "index"),
        (lambda: shuffled_index(0, 0, KEY), "count"),
        (lambda: shuffle_permutation(3, b"short"), "32 bytes"),
        (lambda: shuffle_permutation(3, KEY, rounds=300), "rounds"),
        (lambda: round_key(b"s", -1), "round"),
        (lambda: round_key("text", 1), "public_seed"),  # type: ignore[arg-type]
    ],
)
def test_bad_input_is_rejected(call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()
