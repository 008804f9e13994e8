"""`phalanx bench forward-schedule --matched-eps`: the level shapes of ``forward-dp`` compared at
the same (eps, delta) spend the same eps and release noise of their own shape."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from phalanx.bench.forward_schedule import (
    DELTA,
    SCHEDULES,
    default_clip,
    main,
    matched_eps_rows,
    released_noise_std,
)
from phalanx.defense import alpha_bar_schedule, parse_defense

EPS = 200.0
ROUNDS = 4


def _report(capsys: pytest.CaptureFixture[str], *extra: str) -> dict[str, Any]:
    argv = ["--matched-eps", f"{EPS:g}", "--rounds", str(ROUNDS), "--nodes", "2", "--seeds", "1"]
    assert main([*argv, "--dataset", "digits", "--no-attacks", "--json", *extra]) == 0
    report: dict[str, Any] = json.loads(capsys.readouterr().out)
    return report


def test_matched_eps_rows_spend_the_same_eps_with_their_own_noise_shape(
    capsys: pytest.CaptureFixture[str],
) -> None:
    report = _report(capsys)
    assert report["settings"]["matched_eps"] == EPS
    assert report["settings"]["clip"] == default_clip() == 1.0
    rows = {row["label"]: row for row in report["rows"]}
    assert list(rows) == ["none", *SCHEDULES]
    assert rows["none"]["epsilon_spent"] is None
    assert rows["none"]["noise_std_by_round"] == [0.0] * ROUNDS

    # Same eps, from the nodes' own ledgers (NodeDefense.privacy_report): never above the target
    # (the calibration picks the least noise with eps <= target) and within the integer-level
    # grid's slack of it.
    spent = [rows[label]["epsilon_spent"] for label in SCHEDULES]
    assert all(0.9 * EPS <= eps <= EPS for eps in spent), spent
    assert max(spent) - min(spent) <= 0.05 * EPS, spent

    alpha_bar = alpha_bar_schedule("cosine", 1000)
    for label in SCHEDULES:
        row = rows[label]
        assert row["spec"].startswith(f"forward-dp:eps={EPS:g},rounds={ROUNDS},")
        assert f"levels={label}" in row["spec"]
        # The released noise is sqrt(1 - abar_t) C per round (C = 1), measured on zero updates.
        expected = [math.sqrt(1 - alpha_bar[t]) for t in row["levels"]]
        assert row["noise_std_by_round"] == pytest.approx(expected, rel=0.05)
        assert 0 < row["final_accuracy_median"] <= 1
        assert "psnr_early" not in row  # --no-attacks

    decreasing = rows["decreasing"]["noise_std_by_round"]
    increasing = rows["increasing"]["noise_std_by_round"]
    constant = rows["constant"]["noise_std_by_round"]
    assert decreasing[0] > 2 * decreasing[-1]
    assert increasing[-1] > 2 * increasing[0]
    assert max(constant) < 1.05 * min(constant)
    # At matched eps the constant level lies between the linear shapes' extremes.
    assert decreasing[-1] < constant[0] < decreasing[0]


def test_clip_scales_the_noise_but_not_the_levels() -> None:
    ones, halves = matched_eps_rows(EPS, ROUNDS, 1.0), matched_eps_rows(EPS, ROUNDS, 0.5)
    for one, half in zip(ones[1:], halves[1:], strict=True):
        assert one.levels(ROUNDS) == half.levels(ROUNDS)
        assert f"delta={DELTA:g}" in one.spec
        noise_one = released_noise_std(one, ROUNDS)
        noise_half = released_noise_std(half, ROUNDS)
        assert noise_half == pytest.approx([n / 2 for n in noise_one], rel=0.05)


def test_matched_eps_is_checked_before_training() -> None:
    with pytest.raises(ValueError, match="out of reach"):
        matched_eps_rows(0.01, 500)
    assert parse_defense(matched_eps_rows(EPS, ROUNDS)[1].spec) is not None


def test_delta_is_the_nodes_delta() -> None:
    """`DELTA` is a literal (the bench's --help loads no pydantic or torch); it stays the
    nodes' own."""
    from phalanx.node.defenses import DefenseConfig

    assert DefenseConfig().delta == DELTA
