"""The generated compose testbed under a real container runtime: `podman-compose up`.

Slow (``make test-slow``). It needs root, podman with runc, podman-compose and, on podman's CNI
network backend, the ``dnsname`` plugin so that services find each other by name
(``deploy/ci-setup.sh`` installs them), and builds ``localhost/phalanx:test`` of this tree with
``deploy/podman-image.sh`` (skipped, with the reason, where it cannot).

``phalanx deploy compose --nodes 4 --rounds 2 --byzantine 3=sign-flip --tls`` is run as a user
would, and ``compose.yml`` with the ``compose.tls.yml`` overlay is started unchanged, with one
more override file that only names the locally built image (no registry is reachable, so
``deploy/Dockerfile``'s ``python:3.11-slim`` base cannot be pulled here). Prometheus and Grafana
are left out for the same reason. What runs is what an operator gets: the node services with
their hostnames, bridge network and DNS, the identity keys and TLS files as compose secrets read
by the image's non-root user, the node files as bind mounts and the data volumes.

Every node must finish its rounds and exit 0 without a restart, over mutual TLS, with identical
honest digests in every round, and node-3 must have run as the sign-flip attacker.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.test_deploy_podman import IMAGE, _podman

pytestmark = pytest.mark.slow
NODES = 4
ROUNDS = 2
BYZANTINE = "node-3"


def _run(*argv: str, cwd: Path | None = None, timeout: float = 300) -> str:
    result = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{argv}: {result.stdout[-2000:]}{result.stderr[-2000:]}"
    return result.stdout


def _podman_compose() -> str:
    podman = _podman()
    compose = shutil.which("podman-compose")
    if compose is None:
        pytest.skip("podman-compose is not installed: run deploy/ci-setup.sh as root")
    backend = _run(podman, "info", "--format", "{{.Host.NetworkBackend}}").strip()
    if backend == "cni" and not any(
        Path(folder, "dnsname").exists() for folder in ("/usr/lib/cni", "/opt/cni/bin")
    ):
        pytest.skip(
            "podman's CNI backend lacks the dnsname plugin, so services cannot resolve each "
            "other: apt-get install golang-github-containernetworking-plugin-dnsname"
        )
    return compose


def _events(volume_dir: Path, node: str) -> list[dict[str, Any]]:
    events = []
    for line in (volume_dir / "nodes" / f"{node}.jsonl").read_text().splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return events


@pytest.mark.timeout(2400)
def test_podman_compose_runs_the_generated_testbed_over_tls(tmp_path: Path) -> None:
    compose = _podman_compose()
    out = tmp_path / "testbed"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "phalanx",
            "deploy",
            "compose",
            "--nodes",
            str(NODES),
            "--rounds",
            str(ROUNDS),
            "--byzantine",
            f"{BYZANTINE[len('node-') :]}=sign-flip",
            "--tls",
            "--out",
            str(out),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    names = [f"node-{i}" for i in range(NODES)]
    (out / "compose.podman.yml").write_text(
        "services:\n" + "".join(f"  {name}:\n    image: {IMAGE}\n" for name in names)
    )
    project = f"phalanx-compose-{os.getpid()}"
    files = ["-f", "compose.yml", "-f", "compose.tls.yml", "-f", "compose.podman.yml"]
    base = [compose, "-p", project, *files]
    containers = [f"{project}_{name}_1" for name in names]
    try:
        _run(*base, "up", "-d", *names, cwd=out, timeout=600)
        deadline = time.monotonic() + 1200
        while True:
            states = {
                c: _run("podman", "inspect", "--format", "{{.State.Status}}", c).strip()
                for c in containers
            }
            if all(state == "exited" for state in states.values()):
                break
            if time.monotonic() > deadline:
                pytest.fail(f"the nodes did not finish: {states}")
            time.sleep(5)
        for container in containers:
            inspected = json.loads(_run("podman", "inspect", container))[0]
            logs = subprocess.run(
                ["podman", "logs", container], capture_output=True, text=True, timeout=60
            ).stderr[-3000:]
            assert inspected["State"]["ExitCode"] == 0, f"{container}:\n{logs}"
            assert inspected.get("RestartCount", 0) == 0, f"{container} restarted:\n{logs}"
        volumes = {
            name: Path(
                _run(
                    "podman",
                    "volume",
                    "inspect",
                    "--format",
                    "{{.Mountpoint}}",
                    f"{project}_{name}-data",
                ).strip()
            )
            for name in names
        }
        events = {name: _events(volumes[name], name) for name in names}
    finally:
        subprocess.run([*base, "down", "-v"], cwd=out, capture_output=True, text=True, timeout=600)
        subprocess.run(
            ["podman", "network", "rm", "--force", f"{project}_phalanx"],
            capture_output=True,
            timeout=120,
        )
    starts = {name: next(e for e in events[name] if e["event"] == "start") for name in names}
    assert {name: start.get("byzantine") for name, start in starts.items()} == {
        name: ("sign-flip" if name == BYZANTINE else None) for name in names
    }
    rounds = {
        name: {e["round"]: e for e in events[name] if e["event"] == "round"} for name in names
    }
    for name in names:
        assert sorted(rounds[name]) == list(range(1, ROUNDS + 1)), name
        assert rounds[name][ROUNDS]["excluded"] == [], name
    for round_ in range(1, ROUNDS + 1):
        digests = {rounds[name][round_]["digest"] for name in names if name != BYZANTINE}
        assert len(digests) == 1, (round_, digests)
