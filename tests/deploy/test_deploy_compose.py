"""The compose testbed generator: files that docker-compose and promtool accept."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

from phalanx.deploy.compose import ComposeSpec, parse_byzantine, register, write_compose
from phalanx.deploy.k8s import UID
from phalanx.deploy.prometheus import dashboard_exprs, dashboard_metric_names
from phalanx.node.config import byzantine_nodes, load_node_config, parse_scenario


def _spec(nodes: int = 4, **extra) -> ComposeSpec:
    scenario = parse_scenario({"nodes": nodes, "rounds": 3, "clustering": {"cluster_size": 2}})
    return ComposeSpec(nodes, scenario, **extra)


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(
            f"{name} is not installed: run deploy/ci-setup.sh (apt-get install "
            f"docker-compose prometheus)"
        )
    return path


def _cli(*argv: str) -> int:
    import argparse

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["deploy", *argv])
    return int(args.func(args))


def test_generated_files_pass_docker_compose_config_with_the_tls_overlay(tmp_path: Path) -> None:
    docker_compose = _tool("docker-compose")
    assert (
        _cli(
            "compose",
            "--nodes",
            "5",
            "--byzantine",
            "3=sign-flip",
            "--tls",
            "--rounds",
            "2",
            "--out",
            str(tmp_path),
        )
        == 0
    )
    result = subprocess.run(
        [docker_compose, "-f", "compose.yml", "-f", "compose.tls.yml", "config"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    merged = yaml.safe_load(result.stdout)
    nodes = [f"node-{i}" for i in range(5)]
    assert sorted(merged["services"]) == sorted([*nodes, "prometheus", "grafana"])
    for name in nodes:
        service = merged["services"][name]
        assert service["build"]["dockerfile"] == "deploy/Dockerfile"
        assert {s["source"] for s in service["secrets"]} == {
            f"{name}-identity",  # compose.yml: the Ed25519 identity key
            "phalanx-ca",  # compose.tls.yml: the CA, certificate and key
            f"{name}-cert",
            f"{name}-key",
        }
    assert merged["services"]["node-3"]["labels"]["org.phalanx.byzantine"] == "sign-flip"
    for name in nodes:  # the secrets exist and the key matches the service name
        assert (tmp_path / "certs" / f"{name}.pem").read_text().startswith("-----BEGIN CERT")


def test_broken_compose_file_is_rejected_by_the_validator(tmp_path: Path) -> None:
    docker_compose = _tool("docker-compose")
    write_compose(_spec(), tmp_path)
    document = yaml.safe_load((tmp_path / "compose.yml").read_text())
    document["services"]["node-1"]["restart"] = {"policy": "sometimes"}
    (tmp_path / "compose.yml").write_text(yaml.safe_dump(document))
    result = subprocess.run(
        [docker_compose, "-f", "compose.yml", "config", "-q"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0  # the validation step really validates


def test_prometheus_config_passes_promtool_and_scrapes_every_node(tmp_path: Path) -> None:
    promtool = _tool("promtool")
    write_compose(_spec(6, byzantine={1: "sign-flip"}), tmp_path)
    config = tmp_path / "prometheus" / "prometheus.yml"
    result = subprocess.run(
        [promtool, "check", "config", str(config)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    static = yaml.safe_load(config.read_text())["scrape_configs"][0]["static_configs"]
    assert [s["targets"] for s in static] == [[f"node-{i}:9100"] for i in range(6)]
    assert [s["labels"]["byzantine"] for s in static] == ["none", "sign-flip", *["none"] * 4]


def test_node_files_agree_with_services_ports_and_peers(tmp_path: Path) -> None:
    write_compose(_spec(3), tmp_path)
    compose = yaml.safe_load((tmp_path / "compose.yml").read_text())
    for i in range(3):
        config = load_node_config(tmp_path / "config" / f"node-{i}.toml")
        assert config.node.id == f"node-{i}" and config.node.host == "0.0.0.0"
        assert [p.address for p in config.peers] == [f"node-{j}:7000" for j in range(3)]
        assert (
            f"./config/node-{i}.toml:/etc/phalanx/node.toml:ro"
            in compose["services"][f"node-{i}"]["volumes"]
        )
    assert config.scenario.rounds == 3


def test_byzantine_flag_makes_the_named_node_deviate_and_labels_it(tmp_path: Path) -> None:
    scenario = parse_scenario(
        {
            "nodes": 5,
            "rounds": 3,
            "seed": 3,
            "clustering": {"cluster_size": 2},
            "byzantine": [{"behaviour": "sign-flip", "count": 1}],
        }
    )
    write_compose(ComposeSpec(5, scenario, {1: "corrupt-partial"}), tmp_path)
    ids = [f"node-{i}" for i in range(5)]
    resolved = {
        i: {
            n: e.behaviour
            for n, e in byzantine_nodes(
                load_node_config(tmp_path / "config" / f"node-{i}.toml").scenario, ids
            ).items()
        }
        for i in range(5)
    }
    # every node file resolves the same Byzantine set: node-1 as asked, one more by the seed
    assert all(r == resolved[0] for r in resolved.values())
    assert resolved[0]["node-1"] == "corrupt-partial" and len(resolved[0]) == 2
    compose = yaml.safe_load((tmp_path / "compose.yml").read_text())
    labels = {
        name: service["labels"]["org.phalanx.byzantine"]
        for name, service in compose["services"].items()
        if name.startswith("node-")
    }
    assert {n: b for n, b in labels.items() if b != "none"} == resolved[0]
    static = yaml.safe_load((tmp_path / "prometheus" / "prometheus.yml").read_text())
    scraped = {
        s["targets"][0].split(":")[0]: s["labels"]["byzantine"]
        for s in static["scrape_configs"][0]["static_configs"]
    }
    assert scraped == labels


@pytest.mark.skipif(os.geteuid() != 0, reason="handing files to uid 10001 needs root")
def test_node_key_files_belong_to_the_image_user_and_the_ca_key_does_not(tmp_path: Path) -> None:
    write_compose(_spec(3, tls=True), tmp_path)
    node_keys = [tmp_path / "keys" / f"node-{i}.pem" for i in range(3)]
    node_keys += [tmp_path / "certs" / f"node-{i}.key" for i in range(3)]
    for path in node_keys:
        info = path.stat()
        assert (info.st_uid, info.st_gid, info.st_mode & 0o777) == (UID, UID, 0o600), path
    assert (tmp_path / "certs" / "ca.key").stat().st_uid == 0


def test_grafana_provisioning_points_at_prometheus_and_the_dashboard(tmp_path: Path) -> None:
    write_compose(_spec(), tmp_path)
    datasource = yaml.safe_load(
        (tmp_path / "grafana/provisioning/datasources/prometheus.yml").read_text()
    )["datasources"][0]
    assert datasource["url"] == "http://prometheus:9090" and datasource["type"] == "prometheus"
    provider = yaml.safe_load(
        (tmp_path / "grafana/provisioning/dashboards/phalanx.yml").read_text()
    )["providers"][0]
    compose = yaml.safe_load((tmp_path / "compose.yml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./grafana/dashboards:{provider['options']['path']}:ro" in mounts
    dashboard = json.loads((tmp_path / "grafana/dashboards/phalanx-dashboard.json").read_text())
    uids = {t["datasource"]["uid"] for p in dashboard["panels"] for t in p["targets"]}
    assert uids == {"${datasource}"}  # the dashboard's datasource variable: any Prometheus
    (variable,) = dashboard["templating"]["list"]
    assert variable["type"] == "datasource" and variable["query"] == datasource["type"]
    for name in ("datasources/prometheus.yml", "dashboards/phalanx.yml"):  # the shipped examples
        shipped = Path("deploy/grafana/provisioning", name).read_text()
        assert (tmp_path / "grafana/provisioning" / name).read_text() == shipped


def test_dashboard_structure_covers_what_operators_watch() -> None:
    dashboard = json.loads(Path("deploy/grafana/phalanx-dashboard.json").read_text())
    assert dashboard["uid"] and dashboard["title"] == "Phalanx"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24 and panel["targets"]
    names = set(dashboard_metric_names(dashboard))
    for needed in (
        "phalanx_round",
        "phalanx_rounds_completed_total",
        "phalanx_round_duration_seconds_sum",
        "phalanx_accuracy_ratio",
        "phalanx_loss",
        "phalanx_bytes_sent_total",
        "phalanx_phase_duration_seconds_sum",
        "phalanx_excluded_nodes",
        "phalanx_messages_rejected_total",
        "phalanx_build_info",
    ):
        assert needed in names, needed
    assert any("by (phase)" in e for e in dashboard_exprs(dashboard))
    assert any("byzantine" in e for e in dashboard_exprs(dashboard))


def test_output_is_deterministic_without_tls(tmp_path: Path) -> None:
    """Written again into the same folder, every byte is the same (the identity keys are kept);
    into a new folder, everything but key material is."""
    write_compose(_spec(), tmp_path / "a")
    first = {p: p.read_bytes() for p in (tmp_path / "a").rglob("*") if p.is_file()}
    write_compose(_spec(), tmp_path / "a")
    assert first and all(p.read_bytes() == data for p, data in first.items())
    write_compose(_spec(), tmp_path / "b")

    def keyless(path: Path) -> bytes:
        lines = path.read_bytes().splitlines()
        return b"\n".join(line for line in lines if not line.startswith(b"public_key"))

    for path in first:
        relative = path.relative_to(tmp_path / "a")
        if relative.parts[0] != "keys":
            assert keyless(path) == keyless(tmp_path / "b" / relative), relative


def test_bad_input_names_the_problem(tmp_path: Path, capsys) -> None:
    with pytest.raises(ValueError, match=r"nodes must be in 2\.\.256, got 1"):
        ComposeSpec(1, _spec(4).scenario)
    with pytest.raises(ValueError, match=r"scenario.nodes \(4\) differs from nodes \(5\)"):
        ComposeSpec(5, _spec(4).scenario)
    with pytest.raises(ValueError, match=r"index 7 is outside 0\.\.3"):
        _spec(4, byzantine={7: "alie"})
    with pytest.raises(ValueError, match="expected INDEX=BEHAVIOUR"):
        parse_byzantine(["sign-flip"])
    assert (
        _cli("compose", "--nodes", "4", "--byzantine", "1=no-such-attack", "--out", str(tmp_path))
        == 2
    )
    assert "no-such-attack" in capsys.readouterr().err
    # valid alone, refused with the scenario: ALIE needs two colluders
    assert _cli("compose", "--nodes", "4", "--byzantine", "1=alie", "--out", str(tmp_path)) == 2
    assert "needs at least 2 colluders" in capsys.readouterr().err


def test_prometheus_config_command_reads_a_testbed_folder(tmp_path: Path, capsys) -> None:
    write_compose(_spec(3), tmp_path)
    assert _cli("prometheus-config", str(tmp_path), "--interval", "1") == 0
    config = yaml.safe_load(capsys.readouterr().out)
    targets = [s["targets"][0] for s in config["scrape_configs"][0]["static_configs"]]
    assert targets == ["127.0.0.1:9100"] * 3  # 0.0.0.0 binds are scraped on loopback
    assert config["global"]["scrape_interval"] == "1s"
    assert _cli("prometheus-config", str(tmp_path / "nowhere")) == 2


def test_dockerfile_is_slim_non_root_with_cpu_torch() -> None:
    text = Path("deploy/Dockerfile").read_text()
    assert "FROM python:3.11-slim" in text
    assert "--index-url https://download.pytorch.org/whl/cpu torch==2.13.0" in text
    assert "\nUSER phalanx\n" in text and "pip install --no-deps ." in text
    assert (
        tomllib.loads(Path("pyproject.toml").read_text())["project"]["dependencies"][0]
        == "torch==2.13.0"
    )
