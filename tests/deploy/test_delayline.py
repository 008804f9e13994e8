"""The userspace delay line: its release schedule, and real frames between two namespaces."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from phalanx.deploy.delayline import DelayLine, DelayLineProcess, Shaping

UDP_PORT = 7700
ECHO_SERVER = """
import socket, sys
server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
server.bind((sys.argv[1], int(sys.argv[2])))
print("ready", flush=True)
while True:
    data, sender = server.recvfrom(2048)
    server.sendto(data, sender)
"""
# rtt N: N sequential probes, each RTT in ms (None when no answer in 2 s).
# burst N: N datagrams 1 ms apart; count the answers that come back (waiting 2 s after the last).
ECHO_CLIENT = """
import json, socket, sys, time
host, port, mode, count = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
client.connect((host, port))
if mode == "rtt":
    client.settimeout(2.0)
    samples = []
    for i in range(count):
        started = time.perf_counter()
        client.send(b"rtt%d" % i)
        try:
            while client.recv(2048) != b"rtt%d" % i:
                pass
            samples.append((time.perf_counter() - started) * 1000.0)
        except socket.timeout:
            samples.append(None)
    print(json.dumps(samples))
else:
    answers = set()
    client.setblocking(False)
    for i in range(count):  # read while sending: the receive buffer holds only ~300 datagrams
        client.send(b"burst%d" % i)
        time.sleep(0.001)
        try:
            while True:
                answers.add(client.recv(2048))
        except BlockingIOError:
            pass
    client.settimeout(2.0)
    try:
        while len(answers) < count:
            answers.add(client.recv(2048))
    except socket.timeout:
        pass
    print(json.dumps(len(answers)))
"""


# ------------------------------------------------------------------ the schedule (pure)
def test_same_seed_gives_the_same_drops_and_release_times() -> None:
    shaping = Shaping(delay_ms=200.0, jitter_ms=20.0, loss_pct=30.0)
    first, second = DelayLine(shaping, seed=7), DelayLine(shaping, seed=7)
    times = [i * 0.5 for i in range(200)]
    schedule = [first.admit_egress(t) for t in times]
    assert schedule == [second.admit_egress(t) for t in times]
    other = DelayLine(shaping, seed=8)
    assert [other.admit_egress(t) for t in times] != schedule


def test_loss_rate_and_jitter_bounds_hold_over_many_frames() -> None:
    line = DelayLine(Shaping(delay_ms=200.0, jitter_ms=20.0, loss_pct=5.0), seed=1)
    times = [i * 1.0 for i in range(20_000)]  # 1 s apart: no queueing behind earlier frames
    released = {t: line.admit_egress(t) for t in times}
    holds = [(r - t) * 1000.0 for t, r in released.items() if r is not None]
    assert line.egress_dropped == 20_000 - len(holds)
    assert 0.045 < line.egress_dropped / 20_000 < 0.055  # 5% +- 3.2 standard deviations
    assert min(holds) >= 180.0 and max(holds) <= 220.0
    assert abs(statistics.median(holds) - 200.0) < 1.0


def test_frames_never_overtake_each_other_and_zero_shaping_passes_at_once() -> None:
    line = DelayLine(Shaping(delay_ms=50.0, jitter_ms=50.0), seed=3)
    releases = [line.admit_egress(i * 0.001) for i in range(500)]  # back to back: jitter > gap
    assert all(r is not None for r in releases)
    assert releases == sorted(releases)  # type: ignore[type-var]
    idle = DelayLine(Shaping(), seed=3)
    assert [idle.admit_egress(t) for t in (1.0, 2.0)] == [1.0, 2.0]


def test_bad_shaping_is_refused_with_the_field_named() -> None:
    with pytest.raises(ValueError, match="loss_pct=101"):
        Shaping(loss_pct=101.0)
    with pytest.raises(ValueError, match="delay_ms=-1"):
        Shaping(delay_ms=-1.0)
    with pytest.raises(ValueError, match=r"unknown shaping fields \['rate'\]"):
        Shaping().updated({"rate": 1.0})


# ------------------------------------------------------------------ real frames (root, netns)
def _usable() -> str | None:
    if os.geteuid() != 0:
        return "needs root (ip netns, TAP devices)"
    if not os.access("/dev/net/tun", os.R_OK | os.W_OK):
        return "no /dev/net/tun"
    probe = subprocess.run(["ip", "netns", "add", "phzprobe1"], capture_output=True, text=True)
    subprocess.run(["ip", "netns", "delete", "phzprobe1"], capture_output=True)
    return None if probe.returncode == 0 else f"ip netns add fails here: {probe.stderr.strip()}"


needs_netns = pytest.mark.skipif(_usable() is not None, reason=str(_usable()))


def _client(namespace: str, host: str, mode: str, count: int) -> object:
    result = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            namespace,
            sys.executable,
            "-c",
            ECHO_CLIENT,
            host,
            str(UDP_PORT),
            mode,
            str(count),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(result.stdout)


def _median_rtt(namespace: str, host: str, count: int = 21) -> float:
    samples = _client(namespace, host, "rtt", count)
    assert isinstance(samples, list)
    answered = [s for s in samples if s is not None]
    assert len(answered) >= count - 2, samples
    return statistics.median(answered)


def _delay_line_pids(prefix: str) -> list[int]:
    found = subprocess.run(
        ["pgrep", "-f", f"deploy.delayline --netns {prefix}-"], capture_output=True, text=True
    )
    return [int(pid) for pid in found.stdout.split()]


@needs_netns
def test_delay_line_adds_the_configured_delay_and_loss_between_two_namespaces(
    tmp_path: Path,
) -> None:
    """node-00 (veth) sends UDP echoes to node-01 (TAP behind the delay line); the delay line
    holds node-01's egress, so the round trip grows by the configured delay."""
    from phalanx.deploy.netns import NetnsTestbed, list_links, list_namespaces
    from phalanx.node.config import FaultConfig, parse_scenario

    shaped = {"round": 1, "action": "delay", "nodes": ["node-01"], "delay_ms": 200.0}
    scenario = parse_scenario(
        {"nodes": 2, "rounds": 1, "seed": 5, "clustering": {"cluster_size": 2}, "faults": [shaped]}
    )
    testbed = NetnsTestbed(scenario, tmp_path, delay_line=True)
    with testbed:
        testbed.prepare()
        assert list(testbed.delay_lines) == ["node-01"]
        assert f"{testbed.prefix}t1" in list_links(testbed.prefix)  # the bridge's TAP port
        assert _delay_line_pids(testbed.prefix) == [testbed.delay_lines["node-01"].process.pid]  # type: ignore[union-attr]
        client, server = testbed.namespace("node-00"), testbed.namespace("node-01")
        host = testbed.addresses["node-01"]
        echo = subprocess.Popen(
            ["ip", "netns", "exec", server, sys.executable, "-c", ECHO_SERVER, host, str(UDP_PORT)],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert echo.stdout is not None and echo.stdout.readline().strip() == "ready"
            baseline = _median_rtt(client, host)
            fault = FaultConfig(
                round=1, action="delay", nodes=["node-01"], delay_ms=200.0, jitter_ms=20.0
            )
            record = testbed.inject(fault)
            assert record["mechanism"] == "delayline"
            delayed = _median_rtt(client, host)
            added = delayed - baseline
            assert 170.0 < added < 250.0, (baseline, delayed)
            # The testbed's own TCP-connect probe saw the same delay.
            probe = record["probe_rtt_ms"]["node-01"]
            assert 170.0 < probe["after"] - probe["before"] < 250.0, probe

            # 20% loss, no delay: node-01's answers are dropped on its egress.
            testbed.inject(FaultConfig(round=1, action="heal", nodes=["node-01"]))
            loss = FaultConfig(round=1, action="loss", nodes=["node-01"], loss_pct=20.0)
            assert testbed.inject(loss)["mechanism"] == "delayline"
            before = testbed.delay_line_stats()["node-01"]
            answered = _client(client, host, "burst", 600)
            after = testbed.delay_line_stats()["node-01"]
            assert isinstance(answered, int)
            assert 0.13 < 1 - answered / 600 < 0.27, (answered, before, after)
            dropped = after["egress_dropped"] - before["egress_dropped"]
            assert abs(dropped - (600 - answered)) <= 3  # other frames (ARP) may be drawn too

            # A partition cuts the delay-lined node off; healing restores it and clears shaping.
            record = testbed.inject(FaultConfig(round=1, action="partition", nodes=["node-01"]))
            assert record["mechanism"] in ("nftables-bridge", "nftables")
            assert _client(client, host, "burst", 20) == 0
            testbed.inject(FaultConfig(round=1, action="heal"))
            assert _median_rtt(client, host) < 50.0
            assert testbed.delay_line_stats()["node-01"]["loss_pct"] == 0.0
        finally:
            echo.kill()
            echo.wait()
    assert not list_namespaces(testbed.prefix) and not list_links(testbed.prefix)
    assert _delay_line_pids(testbed.prefix) == []


@needs_netns
def test_forwarder_refuses_a_missing_namespace_and_bad_commands(tmp_path: Path) -> None:
    from phalanx.deploy.netns import cleanup_stale, new_prefix

    prefix = new_prefix()
    tap = f"{prefix}t0"
    try:
        subprocess.run(["ip", "tuntap", "add", "dev", tap, "mode", "tap"], check=True)
        failed = subprocess.run(
            [
                sys.executable,
                "-m",
                "phalanx.deploy.delayline",
                "--netns",
                f"{prefix}-none",
                "--inner",
                "eth0",
                "--outer",
                tap,
                "--seed",
                "1",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert failed.returncode == 2
        assert f"{prefix}-none" in failed.stderr
        subprocess.run(["ip", "netns", "add", f"{prefix}-n"], check=True)
        subprocess.run(
            ["ip", "netns", "exec", f"{prefix}-n", "ip", "tuntap", "add", "eth0", "mode", "tap"],
            check=True,
        )
        line = DelayLineProcess(f"{prefix}-n", "eth0", tap, seed=1).start()
        try:
            with pytest.raises(ValueError, match="loss_pct=150"):
                line.command({"loss_pct": 150.0})
            assert line.configure(Shaping(delay_ms=10.0))["delay_ms"] == 10.0  # still running
        finally:
            line.stop()
        assert line.process is not None and line.process.returncode == 0  # stdin closed: exits
    finally:
        cleanup_stale(prefix)
