"""Concurrent testbeds never hand the same port to two nodes, and a taken port is a clean exit."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import phalanx.node.testbed as testbed
from phalanx.node.runner import EXIT_BIND
from tests.conftest import REPO, phalanx_env, run_phalanx

CHILD_LEASE = (
    "import sys, node.testbed as t; print('taken' if t._lease(int(sys.argv[1])) else 'refused')"
)


def _lease_in_child(port: int, leases: Path) -> str:
    env = {**phalanx_env(), "PHALANX_PORT_LEASES": str(leases)}
    result = subprocess.run(
        [sys.executable, "-c", CHILD_LEASE, str(port)],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_a_leased_port_is_refused_to_another_process_until_released(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(testbed, "PORT_LEASES", tmp_path)
    ports = testbed.free_ports(3)
    assert len(set(ports)) == 3
    assert sorted(int(p.name) for p in tmp_path.iterdir()) == sorted(ports)
    assert _lease_in_child(ports[0], tmp_path) == "refused"
    testbed.release_ports(ports)
    assert list(tmp_path.iterdir()) == []
    assert _lease_in_child(ports[0], tmp_path) == "taken"


def test_a_lease_of_a_dead_process_is_taken_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(testbed, "PORT_LEASES", tmp_path)
    finished = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    (tmp_path / "23456").write_text(finished.stdout.strip())
    assert testbed._lease(23456)
    assert (tmp_path / "23456").read_text() == str(os.getpid())


def test_a_node_whose_port_is_taken_exits_with_the_bind_code_and_a_clear_message(
    tmp_path: Path,
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = run_phalanx(
            "node",
            "--id",
            "node-a",
            "--insecure",
            "--port",
            str(port),
            "--out",
            str(tmp_path),
            timeout=120,
        )
    output = result.stdout + result.stderr
    assert result.returncode == EXIT_BIND, output
    assert f"cannot bind 127.0.0.1:{port}" in output
    assert "Traceback" not in output
