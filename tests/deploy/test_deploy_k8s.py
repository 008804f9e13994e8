"""Kubernetes manifests: schema-valid, and consistent with what the nodes rely on."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from node.cli import build_parser
from node.config import parse_scenario

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"


def _load(name: str) -> dict:
    return yaml.safe_load((K8S / name).read_text())


def _args(statefulset: dict) -> list[str]:
    return statefulset["spec"]["template"]["spec"]["containers"][0]["args"]


def test_core_manifests_pass_the_kubernetes_schema_strictly() -> None:
    validate = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate")
    for name in ("configmap.yaml", "service.yaml", "statefulset.yaml"):
        validate.validate(_load(name), "1.30.0", strict=True)
    broken = _load("statefulset.yaml")
    broken["spec"]["replicas"] = "four"
    with pytest.raises(validate.ValidationError):
        validate.validate(broken, "1.30.0", strict=True)


def test_peers_are_the_headless_service_dns_names_of_every_replica() -> None:
    statefulset, service = _load("statefulset.yaml"), _load("service.yaml")
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"]
    assert statefulset["spec"]["serviceName"] == service["metadata"]["name"]
    replicas, pod = statefulset["spec"]["replicas"], statefulset["metadata"]["name"]
    args = build_parser().parse_args(_args(statefulset))
    expected = [
        (f"{pod}-{i}", f"{pod}-{i}.{service['metadata']['name']}:{args.port}")
        for i in range(replicas)
    ]
    assert [(p.id, p.address) for p in args.peer] == expected
    assert args.id == "$(POD_NAME)" and args.host == "0.0.0.0"
    env = statefulset["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}} in env


def test_ports_scrape_annotations_and_service_monitor_agree() -> None:
    statefulset, service = _load("statefulset.yaml"), _load("service.yaml")
    monitor = _load("servicemonitor.yaml")
    args = build_parser().parse_args(_args(statefulset))
    container = statefulset["spec"]["template"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"grpc": args.port, "metrics": args.metrics_port}
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == ports
    annotations = statefulset["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == args.metrics_port
    assert monitor["kind"] == "ServiceMonitor"
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    selector = statefulset["spec"]["selector"]["matchLabels"]
    assert selector.items() <= statefulset["spec"]["template"]["metadata"]["labels"].items()
    assert service["spec"]["selector"] == selector


def test_scenario_configmap_is_valid_and_sized_for_the_replicas() -> None:
    import tomllib

    configmap, statefulset = _load("configmap.yaml"), _load("statefulset.yaml")
    scenario = parse_scenario(tomllib.loads(configmap["data"]["scenario.toml"]))
    assert scenario.nodes == statefulset["spec"]["replicas"]
    mount = next(
        m
        for m in statefulset["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
        if m["name"] == "scenario"
    )
    args = build_parser().parse_args(_args(statefulset))
    assert str(args.scenario) == f"{mount['mountPath']}/scenario.toml"
    volume = next(
        v for v in statefulset["spec"]["template"]["spec"]["volumes"] if v["name"] == "scenario"
    )
    assert volume["configMap"]["name"] == configmap["metadata"]["name"]
