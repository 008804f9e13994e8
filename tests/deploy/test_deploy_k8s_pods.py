"""The rendered StatefulSet's pods, started as local processes, train together.

This plays the kubelet and the cluster DNS for `phalanx deploy k8s`'s output, and changes nothing
else: each pod's process gets the container's ``command`` and ``args`` and its ``env`` (downward
API fields and ``$(VAR)`` expanded as the kubelet does), its volumes written at the paths the
manifest mounts (the scenario from the ConfigMap, the certificates from the Secret that
``phalanx certs --k8s`` wrote, an empty data volume; each mount path is placed under the pod's
own folder), and its own loopback address as ``status.podIP``. The pods' DNS names resolve to
those addresses through a hosts file bind-mounted over ``/etc/hosts`` in a private mount
namespace (``unshare``), which is how the nodes resolve peers (the system resolver), so the
``--peer`` addresses are used exactly as rendered. Then the rendered startup, readiness and
liveness probes are run, the metrics port is scraped, and SIGTERM stops every pod with exit 0.
"""

from __future__ import annotations

import base64
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from phalanx.deploy.k8s import pod_dns_names
from tests.conftest import phalanx_env

REPLICAS = 4
ROUNDS = 3
BYZANTINE_POD = "node-3"
SCENARIO = f"""name = "k8s-pods"
seed = 11
nodes = {REPLICAS}
rounds = {ROUNDS}

[data]
dataset = "mnist5k"
partition = "iid"

[model]
name = "mlp"

[clustering]
cluster_size = 2

[aggregation]
rule = "mean"

[[byzantine]]
behaviour = "sign-flip"
nodes = ["{BYZANTINE_POD}"]

[timeouts]
startup_s = 240.0
collect_s = 60.0
"""


def _unshare_prefix() -> list[str]:
    """``unshare --mount`` (with a user namespace when not root), or skip with the reason."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("unshare (util-linux) is not installed: it gives each pod its own /etc/hosts")
    prefix = [unshare, "--mount"] + ([] if os.geteuid() == 0 else ["--map-root-user"])
    probe = subprocess.run(
        [*prefix, "sh", "-c", "mount --bind /etc/hosts /etc/hosts"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if probe.returncode != 0:
        pytest.skip(f"cannot bind-mount /etc/hosts in a mount namespace: {probe.stderr.strip()}")
    return prefix


def _pod_ips(count: int, ports: list[int]) -> list[str]:
    """`count` loopback addresses in a random 127.x.y.0/24 (not 127.0.0.0/24), each free on
    every one of `ports`: concurrent runs of this test do not meet."""
    for _ in range(50):
        base = f"127.{random.randint(1, 254)}.{random.randint(0, 255)}"
        ips = [f"{base}.{i + 1}" for i in range(count)]
        try:
            for ip in ips:
                for port in ports:
                    with socket.socket() as sock:
                        sock.bind((ip, port))
        except OSError:
            continue
        return ips
    pytest.skip("no free loopback /24 for the pods' addresses")


def _expand(value: str, env: dict[str, str]) -> str:
    """The kubelet's ``$(VAR)`` expansion: defined names are replaced, ``$$`` is ``$``, the
    rest is left as written."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))

    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)", replace, value)


class LocalPod:
    """One pod of the StatefulSet as a local process: environment, volumes, address."""

    def __init__(
        self,
        statefulset: dict[str, Any],
        objects: dict[tuple[str, str], dict[str, Any]],
        index: int,
        ip: str,
        root: Path,
        shim: Path,
    ) -> None:
        template = statefulset["spec"]["template"]
        self.name = f"{statefulset['metadata']['name']}-{index}"
        self.ip = ip
        self.root = root / self.name
        self.container = template["spec"]["containers"][0]
        volumes = {v["name"]: v for v in template["spec"]["volumes"]}
        claims = {c["metadata"]["name"] for c in statefulset["spec"]["volumeClaimTemplates"]}
        fields = {
            "metadata.name": self.name,
            "metadata.namespace": statefulset["metadata"]["namespace"],
            "status.podIP": ip,
        }
        self.mounts: dict[str, Path] = {}
        for mount in self.container["volumeMounts"]:
            target = self.root / mount["mountPath"].lstrip("/")
            target.mkdir(parents=True)
            self.mounts[mount["mountPath"]] = target
            volume = volumes.get(mount["name"])
            if volume is None:
                assert mount["name"] in claims, mount
            elif "configMap" in volume:
                data = objects[("ConfigMap", volume["configMap"]["name"])]["data"]
                for key, text in data.items():
                    (target / key).write_text(text)
            elif "secret" in volume:
                secret = objects[("Secret", volume["secret"]["secretName"])]
                mode = volume["secret"].get("defaultMode", 0o644)
                for key, encoded in secret["data"].items():
                    (target / key).write_bytes(base64.b64decode(encoded))
                    (target / key).chmod(mode)
            else:
                raise AssertionError(f"volume type not emulated: {volume}")
        env = {k: v for k, v in phalanx_env().items() if not k.startswith("PHALANX_")}
        env["PATH"] = f"{shim}{os.pathsep}{env.get('PATH', '')}"
        pod_env: dict[str, str] = {}
        for entry in self.container["env"]:
            if "valueFrom" in entry:
                value = fields[entry["valueFrom"]["fieldRef"]["fieldPath"]]
            else:
                value = _expand(entry["value"], pod_env)
            pod_env[entry["name"]] = self.local_paths(value)
        self.env = {**env, **pod_env}
        self.argv = [
            self.local_paths(_expand(word, pod_env))
            for word in [*self.container["command"], *self.container["args"]]
        ]
        self.process: subprocess.Popen[bytes] | None = None
        self.log = self.root / "log.txt"

    def local_paths(self, value: str) -> str:
        """Place every mount path in `value` under this pod's folder."""
        for mount_path, local in sorted(self.mounts.items(), key=lambda item: -len(item[0])):
            value = re.sub(rf"(?<![\w/.]){re.escape(mount_path)}(?=/|$)", str(local), value)
        return value

    @property
    def data(self) -> Path:
        return self.mounts["/data"]

    def start(self, hosts: Path, unshare: list[str]) -> None:
        script = 'mount --bind "$0" /etc/hosts && exec "$@"'
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [*unshare, "sh", "-c", script, str(hosts), *self.argv],
                env=self.env,
                cwd=self.root,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def probe(self, name: str) -> subprocess.CompletedProcess[str]:
        spec = self.container[name]
        return subprocess.run(
            spec["exec"]["command"],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=spec["timeoutSeconds"] + 60,  # the probe's own timeout, plus a loaded CPU
        )

    def rounds(self) -> dict[int, dict[str, Any]]:
        records: dict[int, dict[str, Any]] = {}
        for path in (self.data / "nodes").glob("*.jsonl"):
            for line in path.read_text().splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if record.get("event") == "round" and record.get("node") == self.name:
                    records[record["round"]] = record
        return records

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


def _render(tmp_path: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """`phalanx deploy k8s` and `phalanx certs --k8s`, run as a user would."""
    scenario = tmp_path / "scenario.toml"
    scenario.write_text(SCENARIO)
    out, certs = tmp_path / "manifests", tmp_path / "certs"
    env = phalanx_env()
    for argv in (
        ["deploy", "k8s", "--replicas", str(REPLICAS), "--scenario", str(scenario)],
        ["certs", "--k8s", "--nodes", str(REPLICAS)],
    ):
        folder = out if argv[0] == "deploy" else certs
        result = subprocess.run(
            [sys.executable, "-m", "phalanx.node", *argv, "--out", str(folder)],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=300,
        )
        assert result.returncode == 0, result.stdout + result.stderr
    objects = {}
    for path in [*out.glob("*.yaml"), certs / "secret.yaml"]:
        document = yaml.safe_load(path.read_text())
        if document.get("kind") != "Kustomization":
            objects[(document["kind"], document["metadata"]["name"])] = document
    return objects


@pytest.mark.timeout(900)
def test_rendered_pods_train_together_as_local_processes(tmp_path: Path) -> None:
    unshare = _unshare_prefix()
    objects = _render(tmp_path)
    statefulset = objects[("StatefulSet", "node")]
    namespace = statefulset["metadata"]["namespace"]
    container = statefulset["spec"]["template"]["spec"]["containers"][0]
    ports = [p["containerPort"] for p in container["ports"]]
    ips = _pod_ips(statefulset["spec"]["replicas"], ports)
    # the cluster DNS of the headless Service: every pod's names to its address
    hosts = tmp_path / "hosts"
    hosts.write_text(
        "127.0.0.1 localhost\n"
        + "".join(f"{ip} {' '.join(pod_dns_names(i, namespace))}\n" for i, ip in enumerate(ips))
    )
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "phalanx").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m phalanx.node "$@"\n')
    (shim / "phalanx").chmod(0o755)
    pods = [
        LocalPod(statefulset, objects, i, ip, tmp_path / "pods", shim) for i, ip in enumerate(ips)
    ]
    try:
        for pod in pods:
            pod.start(hosts, unshare)
        deadline = time.monotonic() + 720
        while any(len(pod.rounds()) < ROUNDS for pod in pods):
            for pod in pods:
                assert pod.process is not None
                if pod.process.poll() is not None:
                    pytest.fail(f"{pod.name} exited {pod.process.returncode}:\n{pod.output()}")
            if time.monotonic() > deadline:
                pytest.fail("pods did not finish:\n" + "\n".join(p.output() for p in pods))
            time.sleep(2)
        # the pods linger, serving: the rendered probes pass, the metrics port answers
        for pod in pods:
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                result = pod.probe(probe)
                assert result.returncode == 0, f"{pod.name} {probe}: {result.stderr}"
                assert "SERVING" in result.stdout
            port = next(p["containerPort"] for p in container["ports"] if p["name"] == "metrics")
            with urllib.request.urlopen(f"http://{pod.ip}:{port}/metrics", timeout=30) as reply:
                assert b"phalanx_" in reply.read()
    finally:
        for pod in pods:
            if pod.process is not None and pod.process.poll() is None:
                pod.process.send_signal(signal.SIGTERM)
        codes = {}
        for pod in pods:
            if pod.process is not None:
                try:
                    codes[pod.name] = pod.process.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    pod.process.kill()
                    codes[pod.name] = pod.process.wait()
    assert codes == {pod.name: 0 for pod in pods}, [pod.output() for pod in pods]
    records = {pod.name: pod.rounds() for pod in pods}
    honest = [pod.name for pod in pods if pod.name != BYZANTINE_POD]
    for round_ in range(1, ROUNDS + 1):
        digests = {name: records[name][round_]["digest"] for name in honest}
        assert len(set(digests.values())) == 1, (round_, digests)
        assert all(records[name][round_]["excluded"] == [] for name in honest)
    for pod in pods:  # each pod spoke mutual TLS with its certificate from the Secret
        assert "--insecure" not in pod.argv
