"""`phalanx bench rounds --repeats`: interleaved repeats reduce to medians and paired ratios."""

from __future__ import annotations

import pytest

from phalanx.bench.bench_rounds import (
    _median_row,
    dissemination_of,
    parse_mode,
    run_rounds_bench,
)


def _run(round_s: float, identical: bool = True) -> dict[str, object]:
    return {
        "nodes": 16,
        "model": "mlp",
        "secure": "shamir",
        "round_s": round_s,
        "train_s": round_s / 2,
        "parameters": 118282,
        "digests_identical": identical,
    }


def test_median_row_takes_medians_of_the_repeats_and_of_the_paired_ratios() -> None:
    row = _median_row([_run(1.0), _run(3.0), _run(2.0)], [1.5, 1.1, 1.2])
    assert row["round_s"] == 2.0
    assert row["train_s"] == 1.0
    assert row["parameters"] == 118282
    assert row["repeats"] == 3
    assert row["round_s_runs"] == [1.0, 3.0, 2.0]
    assert row["secure_over_plaintext"] == 1.2
    assert row["digests_identical"] is True


def test_median_row_reports_a_divergent_repeat() -> None:
    row = _median_row([_run(1.0), _run(1.0, identical=False)], [])
    assert row["digests_identical"] is False
    assert "secure_over_plaintext" not in row


@pytest.mark.parametrize(
    ("secure", "repeats"),
    [
        (["none", "bogus"], 1),
        (["none"], 0),
        (["none", "shamir:packing=0"], 1),
        (["none", "secagg:packing=2"], 1),
        (["none", "shamir:threshold=2"], 1),
    ],
)
def test_bad_arguments_are_refused_before_any_testbed_starts(
    secure: list[str], repeats: int
) -> None:
    with pytest.raises(ValueError):
        run_rounds_bench([2], ["mlp"], 2, 2, secure, repeats=repeats)


def test_mode_tokens_name_the_packing() -> None:
    assert parse_mode("none") == ("none", 1)
    assert parse_mode("shamir") == ("shamir", 1)
    assert parse_mode("shamir:packing=2") == ("shamir", 2)
    assert parse_mode("shamir:packing=2:tree") == ("shamir", 2)
    assert parse_mode("secagg:tree") == ("secagg", 1)
    assert dissemination_of("secagg:tree") == "tree"
    assert dissemination_of("none:direct") == "direct"
    assert dissemination_of("shamir:packing=2") is None
    with pytest.raises(ValueError, match="mode options"):
        parse_mode("secagg:packing=2")
    with pytest.raises(ValueError, match="mode options"):
        parse_mode("none:bush")
