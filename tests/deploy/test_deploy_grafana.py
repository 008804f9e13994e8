"""The Grafana dashboard: its datasource is a variable (no hard-coded UID), it imports with
`__inputs`, the provisioning examples point at it, and every panel's queries read metrics that
`node.metrics.NodeMetrics` registers."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from phalanx.deploy.prometheus import METRIC_NAME
from phalanx.node.metrics import NodeMetrics
from tests.conftest import REPO

GRAFANA = REPO / "deploy" / "grafana"
DASHBOARD = json.loads((GRAFANA / "phalanx-dashboard.json").read_text())

# The series each metric type exposes (the family name plus these suffixes).
SERIES_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
}


def exported_series() -> set[str]:
    """Every series name a node can export, from the registry of a freshly built NodeMetrics."""
    families = list(NodeMetrics("probe").registry.collect())
    assert families
    return {family.name + suffix for family in families for suffix in SERIES_SUFFIXES[family.type]}


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


PANELS = [p for p in _panels(DASHBOARD["panels"]) if p.get("type") != "row"]


@pytest.mark.parametrize("panel", PANELS, ids=[p["title"] for p in PANELS])
def test_every_query_of_the_panel_names_only_exported_metrics(panel: dict[str, Any]) -> None:
    exported = exported_series()
    assert panel["targets"]
    for target in panel["targets"]:
        names = METRIC_NAME.findall(target["expr"])
        assert names, f"query names no phalanx_ metric: {target['expr']}"
        unknown = sorted(set(names) - exported)
        assert unknown == [], f"{panel['title']}: {target['expr']} reads {unknown}"


def _datasource_refs(node: Any) -> Iterator[Any]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "datasource":
                yield value
            else:
                yield from _datasource_refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _datasource_refs(item)


def test_the_datasource_is_a_variable_filled_on_import() -> None:
    refs = list(_datasource_refs(DASHBOARD["panels"]))
    assert refs and all(r == {"type": "prometheus", "uid": "${datasource}"} for r in refs)
    (variable,) = [v for v in DASHBOARD["templating"]["list"] if v["name"] == "datasource"]
    assert variable["type"] == "datasource" and variable["query"] == "prometheus"
    (source,) = DASHBOARD["__inputs"]
    assert source["type"] == "datasource" and source["pluginId"] == "prometheus"
    assert variable["current"]["value"] == "${" + source["name"] + "}"  # import fills it in
    provisioned = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yml").read_text())
    uid = provisioned["datasources"][0]["uid"]
    assert uid not in json.dumps(DASHBOARD)  # no hard-coded UID left anywhere


def test_provisioning_examples_load_the_dashboard_from_prometheus() -> None:
    datasources = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yml").read_text())
    (datasource,) = datasources["datasources"]
    assert datasources["apiVersion"] == 1 and datasource["type"] == "prometheus"
    assert datasource["url"].startswith("http") and datasource["isDefault"] is True
    providers = yaml.safe_load((GRAFANA / "provisioning/dashboards/phalanx.yml").read_text())
    (provider,) = providers["providers"]
    assert provider["type"] == "file" and Path(provider["options"]["path"]).is_absolute()
