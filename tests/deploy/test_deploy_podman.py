"""The rendered StatefulSet's pod spec under a real container runtime: `podman play kube`.

Slow (``make test-slow``). It needs root, podman with runc and catatonit (``deploy/ci-setup.sh``
installs and configures them), and builds the image ``localhost/phalanx:test`` of this tree with
``deploy/podman-image.sh``, without a registry (skipped, with the script's error, where it
cannot). Each pod of ``phalanx deploy k8s``'s
StatefulSet becomes a Pod: the template as rendered, with its image, command, user, security
context (capabilities dropped, no privilege escalation, RuntimeDefault seccomp) and probes,
plus what the kubelet and the cluster would add and podman 4.3 does not:

- ``status.podIP`` and ``$(VAR)`` expansion, filled in here;
- the headless Service's DNS, given as ``hostAliases``;
- each pod's own address, a static IP on a private bridge network;
- the ConfigMap, the Secret (files owned by the pod's fsGroup, mode as rendered) and the data
  volume, given as hostPath volumes;
- ``restartPolicy: Never``, so that a crash fails the test instead of looping;
- no ``ports`` list: podman 4.3 would publish each containerPort on the host.

The pods must finish their rounds with identical honest digests. Their readiness probe must
pass inside each container (``podman exec``), their metrics must answer, and
``podman stop`` (SIGTERM) must end each with exit code 0.
"""

from __future__ import annotations

import copy
import json
import os
import random
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from phalanx.deploy.k8s import pod_dns_names
from tests.conftest import REPO
from tests.deploy.test_deploy_k8s_pods import BYZANTINE_POD, ROUNDS, _expand, _render

IMAGE = "localhost/phalanx:test"
pytestmark = pytest.mark.slow


def _podman() -> str:
    podman = shutil.which("podman")
    if podman is None:
        pytest.skip("podman is not installed: run deploy/ci-setup.sh as root")
    if os.geteuid() != 0:
        pytest.skip("the podman test creates a bridge network: run it as root")
    for tool in ("runc", "catatonit"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed: run deploy/ci-setup.sh as root")
    # the image of this tree's code (the dependencies' layer is cached after the first build)
    built = subprocess.run(
        ["bash", str(REPO / "deploy" / "podman-image.sh")],
        capture_output=True,
        text=True,
        timeout=1800,
        env={**os.environ, "PYTHON": sys.executable},
    )
    if built.returncode != 0:
        pytest.skip(f"deploy/podman-image.sh could not build {IMAGE}: {built.stderr[-500:]}")
    return podman


def _run(*argv: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=check)


def _volume_dirs(
    template: dict[str, Any], objects: dict[tuple[str, str], dict[str, Any]], root: Path
) -> dict[str, Path]:
    """Volume name -> a host folder holding what Kubernetes would mount there."""
    import base64

    spec = template["spec"]
    uid = spec["securityContext"]["runAsUser"]
    gid = spec["securityContext"].get("fsGroup", uid)
    folders: dict[str, Path] = {}
    for volume in spec["volumes"]:
        folder = root / volume["name"]
        folder.mkdir(parents=True)
        if "configMap" in volume:
            for key, text in objects[("ConfigMap", volume["configMap"]["name"])]["data"].items():
                (folder / key).write_text(text)
                (folder / key).chmod(0o644)
        elif "secret" in volume:
            secret = objects[("Secret", volume["secret"]["secretName"])]
            for key, encoded in secret["data"].items():
                (folder / key).write_bytes(base64.b64decode(encoded))
                os.chown(folder / key, 0, gid)  # what fsGroup does to a secret volume
                (folder / key).chmod(volume["secret"].get("defaultMode", 0o644))
        else:
            raise AssertionError(f"volume type not emulated: {volume}")
        folder.chmod(0o755)
        folders[volume["name"]] = folder
    return folders


def _pods(
    objects: dict[tuple[str, str], dict[str, Any]], ips: list[str], root: Path
) -> list[dict[str, Any]]:
    statefulset = objects[("StatefulSet", "node")]
    namespace = statefulset["metadata"]["namespace"]
    template = statefulset["spec"]["template"]
    uid = template["spec"]["securityContext"]["runAsUser"]
    shared = _volume_dirs(template, objects, root / "volumes")
    aliases = [{"ip": ip, "hostnames": pod_dns_names(i, namespace)} for i, ip in enumerate(ips)]
    pods = []
    for index, ip in enumerate(ips):
        name = f"{statefulset['metadata']['name']}-{index}"
        spec = copy.deepcopy(template["spec"])
        container = spec["containers"][0]
        container["image"] = IMAGE
        # podman 4.3 publishes every containerPort on the host (Kubernetes does not without a
        # hostPort): the pods reach each other on the bridge, nothing needs publishing
        del container["ports"]
        fields = {"metadata.name": name, "metadata.namespace": namespace, "status.podIP": ip}
        env: dict[str, str] = {}
        for entry in container["env"]:
            if "valueFrom" in entry:
                env[entry["name"]] = fields[entry["valueFrom"]["fieldRef"]["fieldPath"]]
            else:
                env[entry["name"]] = _expand(entry["value"], env)
        container["env"] = [{"name": k, "value": v} for k, v in env.items()]
        container["args"] = [_expand(word, env) for word in container["args"]]
        data = root / "data" / name
        data.mkdir(parents=True)
        os.chown(data, uid, uid)
        spec["volumes"] = [
            {"name": key, "hostPath": {"path": str(folder), "type": "Directory"}}
            for key, folder in shared.items()
        ] + [{"name": "data", "hostPath": {"path": str(data), "type": "Directory"}}]
        spec["hostAliases"] = aliases
        spec["hostname"] = name
        spec["restartPolicy"] = "Never"
        pods.append(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "labels": dict(template["metadata"]["labels"])},
                "spec": spec,
            }
        )
    return pods


def _rounds(data: Path, name: str) -> dict[int, dict[str, Any]]:
    records: dict[int, dict[str, Any]] = {}
    for path in (data / "nodes").glob("*.jsonl"):
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if record.get("event") == "round" and record.get("node") == name:
                records[record["round"]] = record
    return records


@pytest.mark.timeout(2400)
def test_podman_play_kube_runs_the_rendered_pods(tmp_path: Path) -> None:
    podman = _podman()
    objects = _render(tmp_path)
    replicas = objects[("StatefulSet", "node")]["spec"]["replicas"]
    subnet = f"10.{random.randint(200, 250)}.{random.randint(0, 255)}"
    network = f"phalanx-k8s-{os.getpid()}"
    ips = [f"{subnet}.{10 + i}" for i in range(replicas)]
    pods = _pods(objects, ips, tmp_path)
    kube = tmp_path / "pods.yaml"
    kube.write_text(yaml.safe_dump_all(pods, sort_keys=False))
    names = [pod["metadata"]["name"] for pod in pods]
    containers = [f"{name}-{pods[0]['spec']['containers'][0]['name']}" for name in names]
    _run(podman, "network", "create", "--subnet", f"{subnet}.0/24", network)
    try:
        ip_flags = [flag for ip in ips for flag in ("--ip", ip)]
        played = _run(
            podman, "play", "kube", "--network", network, *ip_flags, str(kube), check=False
        )
        assert played.returncode == 0, played.stdout + played.stderr
        deadline = time.monotonic() + 1200
        data = {name: tmp_path / "data" / name for name in names}
        while any(len(_rounds(data[n], n)) < ROUNDS for n in names):
            for container in containers:
                state = _run(podman, "inspect", "--format", "{{.State.Status}}", container)
                if state.stdout.strip() != "running":
                    logs = _run(podman, "logs", container, check=False)
                    pytest.fail(f"{container} is {state.stdout.strip()}:\n{logs.stderr[-4000:]}")
            if time.monotonic() > deadline:
                pytest.fail("the pods did not finish their rounds")
            time.sleep(5)
        probe = pods[0]["spec"]["containers"][0]["readinessProbe"]["exec"]["command"]
        for container, ip in zip(containers, ips, strict=True):
            result = _run(podman, "exec", container, *probe, check=False, timeout=120)
            assert result.returncode == 0 and "SERVING" in result.stdout, result.stderr
            with urllib.request.urlopen(f"http://{ip}:9100/metrics", timeout=30) as reply:
                assert b"phalanx_" in reply.read()
        for container in containers:
            _run(podman, "stop", "--time", "60", container, timeout=120)
            code = _run(podman, "inspect", "--format", "{{.State.ExitCode}}", container)
            assert code.stdout.strip() == "0", _run(podman, "logs", container).stderr[-4000:]
    finally:
        _run(podman, "play", "kube", "--down", str(kube), check=False)
        _run(podman, "network", "rm", "--force", network, check=False)
    honest = [name for name in names if name != BYZANTINE_POD]
    records = {name: _rounds(data[name], name) for name in names}
    for round_ in range(1, ROUNDS + 1):
        digests = {name: records[name][round_]["digest"] for name in honest}
        assert len(set(digests.values())) == 1, (round_, digests)
