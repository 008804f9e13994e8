"""No silent caps on f: refused at configuration time, or recorded when only known at run time."""

from __future__ import annotations

import numpy as np
import pytest

from phalanx.learning.aggregation import get_rule
from phalanx.node.config import ConfigError, parse_scenario, tolerated_faults
from phalanx.node.peer import combine_cluster_outputs
from phalanx.node.protocols import ClusterOutput


def _scenario(**aggregation: object) -> dict:
    return {
        "nodes": 6,
        "clustering": {"cluster_size": 2},  # 3 cluster outputs
        "aggregation": aggregation,
        "byzantine": [{"behaviour": "sign-flip", "count": 2}],
    }


def test_an_f_beyond_the_rules_breakdown_point_is_refused_at_configuration() -> None:
    assert get_rule("krum").max_f(3) == 0
    with pytest.raises(ConfigError, match=r"aggregation\.f = 2 exceeds what .krum. tolerates"):
        parse_scenario(_scenario(rule="krum", f=2))
    with pytest.raises(ConfigError, match=r"aggregation\.f = 1 exceeds what .mean. tolerates"):
        parse_scenario(_scenario(rule="mean", f=1))
    # Unset, f is the Byzantine count, and each round records where the rule needed less.
    assert tolerated_faults(parse_scenario(_scenario(rule="krum"))) == 2


def test_auto_and_the_mean_baseline_are_explicit() -> None:
    assert tolerated_faults(parse_scenario(_scenario(rule="krum", f="auto"))) == "auto"
    assert tolerated_faults(parse_scenario(_scenario(rule="mean"))) == 0  # the mean takes no f
    six_outputs = {**_scenario(rule="median"), "clustering": {"cluster_size": 1}}
    assert tolerated_faults(parse_scenario(six_outputs)) == 2


def _outputs(count: int) -> dict[int, ClusterOutput]:
    rng = np.random.default_rng(0)
    return {
        c: ClusterOutput(c, rng.standard_normal(5).astype(np.float32) * 2, ("a", "b"), "a")
        for c in range(count)
    }


def test_fewer_outputs_at_run_time_record_f_reduced() -> None:
    rule = get_rule("trimmed-mean")
    assert rule.max_f(4) == 1 and rule.max_f(6) == 2
    step = combine_cluster_outputs(_outputs(4), "trimmed-mean", 2)
    assert step.f == 1 and step.f_reduced == {"configured": 2, "used": 1}
    full = combine_cluster_outputs(_outputs(6), "trimmed-mean", 2)
    assert full.f == 2 and full.f_reduced is None
    auto = combine_cluster_outputs(_outputs(4), "trimmed-mean", "auto")
    assert auto.f == 1 and auto.f_reduced is None
    np.testing.assert_array_equal(auto.delta, step.delta)
