"""`phalanx health` (the image's HEALTHCHECK) asks a real node's gRPC health service."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import tomli_w

from phalanx.clustering.certs import write_certificates
from phalanx.node.testbed import free_ports, release_ports
from tests.conftest import REPO, phalanx_env


def _health(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "phalanx.node", "health", *args],
        capture_output=True,
        text=True,
        env=env or phalanx_env(),
        cwd=REPO,
        timeout=60,
    )


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _wait_for(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def test_health_over_mutual_tls_from_flags_environment_and_node_file(tmp_path: Path) -> None:
    port, ghost = free_ports(2)
    certs = tmp_path / "certs"
    write_certificates(certs, 1, ["localhost"], names=["solo"])
    tls = {
        "tls_ca": str(certs / "ca.pem"),
        "tls_cert": str(certs / "solo.pem"),
        "tls_key": str(certs / "solo.key"),
    }
    config = tmp_path / "solo.toml"
    config.write_text(
        tomli_w.dumps(
            {
                "node": {"id": "solo", "port": port, "out_dir": str(tmp_path / "out"), **tls},
                # A peer that never comes: the node waits for it, serving meanwhile.
                "peers": [{"id": "ghost", "address": f"127.0.0.1:{ghost}"}],
            }
        )
    )
    daemon = subprocess.Popen(
        [sys.executable, "-m", "phalanx.node", "node", "--config", str(config)],
        env=phalanx_env(),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    address = f"127.0.0.1:{port}"
    try:
        assert _wait_for(lambda: _listening(port), 180)
        flags = [f"--{k.replace('_', '-')}={v}" for k, v in tls.items()]
        by_flags = _health("--address", address, *flags)
        assert by_flags.returncode == 0, by_flags.stderr
        assert by_flags.stdout.strip() == f"{address}: SERVING"
        env = phalanx_env() | {f"PHALANX_{k.upper()}": v for k, v in tls.items()}
        assert _health("--address", address, env=env).returncode == 0  # the HEALTHCHECK's way
        assert _health("--config", str(config)).returncode == 0
        plaintext = _health("--address", address, "--insecure")
        assert plaintext.returncode == 1 and "UNAVAILABLE" in plaintext.stderr
    finally:
        daemon.terminate()
        daemon.wait(timeout=60)
        release_ports([port, ghost])
    gone = _health("--address", address, "--insecure", "--timeout", "1")
    assert gone.returncode == 1 and address in gone.stderr


def test_health_input_errors_are_one_line_with_exit_code_2(tmp_path: Path) -> None:
    missing = _health(
        "--tls-ca", str(tmp_path / "nowhere.pem"), "--tls-cert", "x", "--tls-key", "y"
    )
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1
    assert "nowhere.pem" in missing.stderr
    bad = _health("--timeout", "0")
    assert bad.returncode == 2 and "must be > 0" in bad.stderr
