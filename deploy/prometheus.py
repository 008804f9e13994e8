"""Prometheus scrape configuration for Phalanx nodes, and the metric names a dashboard uses.

Node metrics carry no per-node label except ``phalanx_build_info``, so every scrape target gets
``node`` (and ``byzantine``: the configured behaviour or ``none``) as target labels; the Grafana
dashboard groups by them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from phalanx.node.config import load_node_config

METRIC_NAME = re.compile(r"\bphalanx_[a-z0-9_]+")
DASHBOARD_PATH = Path(__file__).parent / "grafana" / "phalanx-dashboard.json"
JOB_NAME = "phalanx"


@dataclass(frozen=True)
class ScrapeTarget:
    """One node's metrics endpoint and the labels Prometheus attaches to its series."""

    node: str
    address: str
    byzantine: str = "none"


def scrape_config(
    targets: Iterable[ScrapeTarget], interval_s: float = 5.0, job: str = JOB_NAME
) -> dict[str, Any]:
    """A ``prometheus.yml`` mapping with one static target per node (sorted by node id)."""
    ordered = sorted(targets, key=lambda t: t.node)
    if not ordered:
        raise ValueError("scrape_config: no targets (need at least one node)")
    if interval_s <= 0:
        raise ValueError(f"interval_s must be > 0, got {interval_s}")
    interval = f"{interval_s:g}s"
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "scrape_configs": [
            {
                "job_name": job,
                "metrics_path": "/metrics",
                "static_configs": [
                    {"targets": [t.address], "labels": {"node": t.node, "byzantine": t.byzantine}}
                    for t in ordered
                ],
            }
        ],
    }


def targets_from_node_configs(
    config_dir: str | Path, byzantine: Mapping[str, str] | None = None
) -> list[ScrapeTarget]:
    """Targets from a testbed's ``OUT/config/*.toml`` (host and metrics_port of each node)."""
    paths = sorted(Path(config_dir).glob("*.toml"))
    if not paths:
        raise ValueError(f"{config_dir}: no node *.toml files")
    targets = []
    for path in paths:
        settings = load_node_config(path).node
        if settings.metrics_port is None:
            raise ValueError(f"{path}: node {settings.id} has no metrics_port")
        host = "127.0.0.1" if settings.host in ("0.0.0.0", "") else settings.host
        targets.append(
            ScrapeTarget(
                settings.id,
                f"{host}:{settings.metrics_port}",
                (byzantine or {}).get(settings.id, "none"),
            )
        )
    return targets


def dashboard_exprs(dashboard: Mapping[str, Any]) -> list[str]:
    """Every PromQL ``expr`` of a Grafana dashboard's panels (and rows' nested panels)."""
    exprs: list[str] = []

    def visit(panels: Iterable[Mapping[str, Any]]) -> None:
        for panel in panels:
            exprs.extend(str(t["expr"]) for t in panel.get("targets", []) if t.get("expr"))
            visit(panel.get("panels", []))

    visit(dashboard.get("panels", []))
    return exprs


def dashboard_metric_names(dashboard: Mapping[str, Any] | None = None) -> list[str]:
    """Sorted distinct ``phalanx_*`` series names the dashboard's queries read."""
    if dashboard is None:
        dashboard = json.loads(DASHBOARD_PATH.read_text())
    return sorted(
        {name for expr in dashboard_exprs(dashboard) for name in METRIC_NAME.findall(expr)}
    )
