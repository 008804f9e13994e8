"""`phalanx deploy k8s` and `phalanx certs --k8s`: manifests that validate strictly against the
Kubernetes schema, meet the restricted Pod Security Standard, and are what deploy/k8s/ holds."""

from __future__ import annotations

import base64
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509

from phalanx.deploy.k8s import (
    CORE_FILES,
    documents,
    pod_dns_names,
    render,
    spec_from_scenario,
    tls_secret_document,
    write_k8s_certificates,
)
from phalanx.node.cli import build_parser
from phalanx.node.config import byzantine_nodes, parse_scenario
from tests.conftest import REPO, run_phalanx

K8S = REPO / "deploy" / "k8s"
EXAMPLE_REPLICAS = 6
# the oldest Kubernetes still supported upstream when this was written, and the newest schema
# that kubernetes-validate ships
SCHEMA_VERSIONS = ("1.30.0", "latest")

SMALL = """name = "k8s-test"
rounds = 2
[model]
name = "mlp"
[clustering]
cluster_size = 2
"""


def _load(name: str) -> dict[str, Any]:
    return yaml.safe_load((K8S / name).read_text())


def _container(statefulset: dict[str, Any]) -> dict[str, Any]:
    containers = statefulset["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def _validator() -> Any:
    return pytest.importorskip(
        "kubernetes_validate", reason="pip install kubernetes-validate (the dev extra)"
    )


def _versions(validate: Any) -> list[str]:
    return [validate.latest_version() if v == "latest" else v for v in SCHEMA_VERSIONS]


def test_the_checked_in_example_is_the_generators_output() -> None:
    scenario = (K8S / "scenario.toml").read_text()
    spec = spec_from_scenario(scenario, EXAMPLE_REPLICAS)
    rendered = render(spec)
    on_disk = {path.name for path in K8S.glob("*.yaml")}
    assert on_disk == set(rendered), "deploy/k8s/ holds files the generator does not write"
    for name, text in rendered.items():
        assert (K8S / name).read_text() == text, (
            f"deploy/k8s/{name} differs from the generator's output: run `phalanx deploy k8s "
            f"--replicas {EXAMPLE_REPLICAS} --scenario deploy/k8s/scenario.toml --out deploy/k8s`"
        )
    assert render(spec_from_scenario(scenario, EXAMPLE_REPLICAS)) == rendered  # deterministic


def test_core_manifests_and_the_tls_secret_validate_strictly(tmp_path: Path) -> None:
    validate = _validator()
    write_k8s_certificates(tmp_path, EXAMPLE_REPLICAS)
    secret = yaml.safe_load((tmp_path / "secret.yaml").read_text())
    objects = [_load(name) for name in CORE_FILES] + [secret]
    for version in _versions(validate):
        for document in objects:
            validate.validate(document, version, strict=True)
        broken = _load("statefulset.yaml")
        broken["spec"]["replicas"] = "six"
        with pytest.raises(validate.ValidationError):
            validate.validate(broken, version, strict=True)
        unknown = _load("statefulset.yaml")
        _container(unknown)["securityContext"]["runAsNonRoo"] = True  # strict: no unknown keys
        with pytest.raises(validate.ValidationError):
            validate.validate(unknown, version, strict=True)
        # kubernetes-validate has no schema for the Prometheus Operator's CRD: the ServiceMonitor
        # is checked structurally below instead
        with pytest.raises(validate.SchemaNotFoundError):
            validate.validate(_load("servicemonitor.yaml"), version, strict=True)


def test_kustomize_builds_the_core_objects() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed (kubectl kustomize checks kustomization.yaml)")
    built = subprocess.run(
        [kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    kinds = sorted(doc["kind"] for doc in yaml.safe_load_all(built))
    assert kinds == ["ConfigMap", "Namespace", "Service", "StatefulSet"]


def test_pods_meet_the_restricted_pod_security_standard() -> None:
    """The controls of the `restricted` profile (kubernetes.io/docs/concepts/security/
    pod-security-standards), checked on the pod template; the namespace enforces it too."""
    namespace = _load("namespace.yaml")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    pod = _load("statefulset.yaml")["spec"]["template"]["spec"]
    for forbidden in ("hostNetwork", "hostPID", "hostIPC"):
        assert not pod.get(forbidden)
    allowed_volumes = {"configMap", "secret", "emptyDir", "persistentVolumeClaim", "projected"}
    for volume in pod["volumes"]:
        assert set(volume) - {"name"} <= allowed_volumes, volume
    pod_context = pod["securityContext"]
    assert pod_context["runAsNonRoot"] is True and pod_context["runAsUser"] != 0
    assert pod_context["seccompProfile"] == {"type": "RuntimeDefault"}
    for container in pod["containers"]:
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"] == {"drop": ["ALL"]}
        assert context.get("privileged") is not True
        assert context["runAsNonRoot"] is True
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}
        assert all("hostPort" not in port for port in container["ports"])
    assert pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False  # no PHALANX_* variables from the Service


@pytest.mark.parametrize("replicas", [1, 4, EXAMPLE_REPLICAS])
def test_peers_are_the_dns_names_of_every_replica(replicas: int) -> None:
    single = "rounds = 1\n[clustering]\ncluster_size = 1\n"
    docs = documents(spec_from_scenario(SMALL if replicas > 1 else single, replicas))
    statefulset, service = docs["statefulset.yaml"], docs["service.yaml"]
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"]
    assert statefulset["spec"]["serviceName"] == service["metadata"]["name"]
    assert statefulset["spec"]["replicas"] == replicas
    container = _container(statefulset)
    assert container["command"] == ["phalanx"]
    args = build_parser().parse_args(container["args"])
    name, namespace = statefulset["metadata"]["name"], statefulset["metadata"]["namespace"]
    expected = [
        (
            f"{name}-{i}",
            f"{name}-{i}.{service['metadata']['name']}.{namespace}.svc.cluster.local:7000",
        )
        for i in range(replicas)
    ]
    assert [(p.id, p.address) for p in args.peer] == expected
    assert args.id == "$(POD_NAME)" and args.host == "$(POD_IP)" and args.port == 7000
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["POD_IP"]["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    scenario = parse_scenario(tomllib.loads(docs["configmap.yaml"]["data"]["scenario.toml"]))
    assert scenario.nodes == replicas


def test_tls_comes_from_the_secret_and_the_probes_use_the_health_service() -> None:
    statefulset = _load("statefulset.yaml")
    container, pod = _container(statefulset), statefulset["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert volumes["tls"]["secret"]["secretName"] == "phalanx-tls"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["PHALANX_TLS_CA"] == f"{mounts['tls']}/ca.pem"
    assert env["PHALANX_TLS_CERT"] == f"{mounts['tls']}/$(POD_NAME).pem"
    assert env["PHALANX_TLS_KEY"] == f"{mounts['tls']}/$(POD_NAME).key"
    args = build_parser().parse_args(container["args"])
    assert not args.insecure and args.tls_ca is None  # mutual TLS, files from the environment
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        command = container[probe]["exec"]["command"]
        assert command[:2] == ["sh", "-c"] and "phalanx health" in command[2], probe
        assert '--address "$POD_IP:7000"' in command[2]
    # the scenario ConfigMap is what --scenario reads
    assert str(args.scenario) == f"{mounts['scenario']}/scenario.toml"
    assert volumes["scenario"]["configMap"]["name"] == _load("configmap.yaml")["metadata"]["name"]
    assert args.out == mounts["data"]
    claims = [c["metadata"]["name"] for c in statefulset["spec"]["volumeClaimTemplates"]]
    assert claims == ["data"]


def test_ports_annotations_and_service_monitor_agree() -> None:
    statefulset, service = _load("statefulset.yaml"), _load("service.yaml")
    monitor = _load("servicemonitor.yaml")
    container = _container(statefulset)
    args = build_parser().parse_args(container["args"])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"grpc": args.port, "metrics": args.metrics_port}
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == ports
    annotations = statefulset["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == args.metrics_port
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["kind"] == "ServiceMonitor"
    labels = service["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert monitor["spec"]["namespaceSelector"] == {
        "matchNames": [service["metadata"]["namespace"]]
    }
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics"]
    selector = statefulset["spec"]["selector"]["matchLabels"]
    assert selector.items() <= statefulset["spec"]["template"]["metadata"]["labels"].items()
    assert service["spec"]["selector"] == selector


def _relabel(relabelings: list[dict[str, Any]], pod: str) -> dict[str, str]:
    """Apply Prometheus `replace` relabelings to a target whose pod is `pod`."""
    import re

    labels = {"__meta_kubernetes_pod_name": pod}
    for rule in relabelings:
        assert rule.get("action", "replace") == "replace"
        value = ";".join(labels.get(name, "") for name in rule.get("sourceLabels", []))
        match = re.fullmatch(rule.get("regex", "(.*)"), value)
        if match:
            groups = [match.group(0), *match.groups()]
            replacement = rule.get("replacement", "$1").replace("$$", "\0")
            for number, group in enumerate(groups):
                replacement = replacement.replace(f"${number}", group or "")
            labels[rule["targetLabel"]] = replacement.replace("\0", "$")
    return labels


@pytest.mark.parametrize(
    "byzantine",
    [
        "",
        '[[byzantine]]\nbehaviour = "sign-flip:factor=10"\nnodes = ["node-5"]\n',
        '[[byzantine]]\nbehaviour = "sign-flip"\ncount = 2\n'
        '[[byzantine]]\nbehaviour = "scaling:factor=3"\nnodes = ["node-0"]\n',
    ],
)
def test_service_monitor_labels_each_pod_with_its_behaviour_from_the_scenario(
    byzantine: str,
) -> None:
    text = f'nodes = 6\nseed = 3\n{SMALL}[aggregation]\nrule = "median"\n{byzantine}'
    monitor = documents(spec_from_scenario(text, 6))["servicemonitor.yaml"]
    relabelings = monitor["spec"]["endpoints"][0]["relabelings"]
    pods = [f"node-{i}" for i in range(6)]
    expected = byzantine_nodes(parse_scenario(tomllib.loads(text)), pods)
    if byzantine:
        assert expected  # the case says something
    for pod in pods:
        labels = _relabel(relabelings, pod)
        assert labels["node"] == pod
        assert labels["byzantine"] == (expected[pod].behaviour if pod in expected else "none")


def test_the_example_labels_node_5_byzantine() -> None:
    relabelings = _load("servicemonitor.yaml")["spec"]["endpoints"][0]["relabelings"]
    assert _relabel(relabelings, "node-5")["byzantine"] == "sign-flip:factor=10"
    assert _relabel(relabelings, "node-4")["byzantine"] == "none"


def test_certs_k8s_writes_the_secret_with_every_pod_dns_name(tmp_path: Path) -> None:
    result = run_phalanx(
        "certs", "--k8s", "--nodes", "3", "--namespace", "fl", "--out", str(tmp_path), timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "secret.yaml" in result.stdout
    secret = yaml.safe_load((tmp_path / "secret.yaml").read_text())
    assert secret["kind"] == "Secret" and secret["metadata"]["name"] == "phalanx-tls"
    assert secret["metadata"]["namespace"] == "fl"
    assert sorted(secret["data"]) == sorted(
        ["ca.pem"] + [f"node-{i}.{ext}" for i in range(3) for ext in ("pem", "key")]
    )
    assert (tmp_path / "secret.yaml").stat().st_mode & 0o077 == 0  # it holds private keys
    assert secret == tls_secret_document(tmp_path, 3, "fl")
    for i in range(3):
        pem = base64.b64decode(secret["data"][f"node-{i}.pem"])
        certificate = x509.load_pem_x509_certificate(pem)
        cn = certificate.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
        assert cn == f"node-{i}"  # the identity its peers check its messages against
        sans = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = sans.get_values_for_type(x509.DNSName)
        assert names[: 1 + 4] == [f"node-{i}", *pod_dns_names(i, "fl")]
        assert "localhost" in names  # the probes' server name
    again = run_phalanx("certs", "--k8s", "--nodes", "3", "--out", str(tmp_path), timeout=120)
    assert again.returncode == 2 and "refusing to overwrite" in again.stderr


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--replicas", "4"], "nodes = 6 but --replicas is 4"),
        (["--replicas", "6", "--namespace", "Bad_Name"], "--namespace 'Bad_Name'"),
        (["--replicas", "0"], "--replicas"),
    ],
)
def test_bad_input_is_one_line_with_exit_code_2(
    tmp_path: Path, argv: list[str], message: str
) -> None:
    result = run_phalanx(
        "deploy", "k8s", "--scenario", str(K8S / "scenario.toml"), "--out", str(tmp_path), *argv
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_scenario_without_nodes_gets_the_replica_count(tmp_path: Path) -> None:
    scenario = tmp_path / "s.toml"
    scenario.write_text(SMALL)
    result = run_phalanx(
        "deploy",
        "k8s",
        "--replicas",
        "3",
        "--scenario",
        str(scenario),
        "--out",
        str(tmp_path / "o"),
    )
    assert result.returncode == 0, result.stderr
    configmap = yaml.safe_load((tmp_path / "o" / "configmap.yaml").read_text())
    text = configmap["data"]["scenario.toml"]
    assert tomllib.loads(text)["nodes"] == 3 and text.endswith(SMALL)
