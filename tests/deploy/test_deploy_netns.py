"""The network-namespace testbed: real namespaces, nftables partitions, guaranteed cleanup."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tomli_w

from tests.conftest import REPO, phalanx_env


def _netns_usable() -> str | None:
    if os.geteuid() != 0:
        return "needs root (ip netns add)"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (deploy/ci-setup.sh installs it)"
    probe = subprocess.run(["ip", "netns", "add", "phzprobe0"], capture_output=True, text=True)
    subprocess.run(["ip", "netns", "delete", "phzprobe0"], capture_output=True)
    return None if probe.returncode == 0 else f"ip netns add fails here: {probe.stderr.strip()}"


SKIP_REASON = _netns_usable()
pytestmark = pytest.mark.skipif(SKIP_REASON is not None, reason=str(SKIP_REASON))

from phalanx.deploy.netns import (  # noqa: E402
    NetnsTestbed,
    check_prefix,
    cleanup_stale,
    list_links,
    list_namespaces,
    new_prefix,
)


def _scenario(tmp_path: Path, nodes: int, rounds: int, faults: list[dict], **extra) -> Path:
    data: dict = {
        "name": "netns-test",
        "seed": 3,
        "nodes": nodes,
        "rounds": rounds,
        "data": {"dataset": "mnist5k", "partition": "iid", "eval_samples": 200},
        "model": {"name": "mlp"},
        "training": {"epochs": 2},
        "clustering": {"cluster_size": 2},
        "timeouts": {"collect_s": 2.0, "rpc_s": 1.0, "startup_s": 60.0},
        "faults": faults,
        **extra,
    }
    path = tmp_path / "scenario.toml"
    path.write_text(tomli_w.dumps(data))
    return path


def _start(scenario: Path, out: Path, prefix: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "phalanx.deploy.netns",
            "run",
            str(scenario),
            "--out",
            str(out),
            "--prefix",
            prefix,
            "--timeout",
            "400",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=phalanx_env(),
        cwd=REPO,
    )


def _wait_for(predicate, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def _nothing_left(prefix: str) -> bool:
    return not list_namespaces(prefix) and not list_links(prefix)


def _delay_line_processes(prefix: str) -> list[str]:
    found = subprocess.run(
        ["pgrep", "-f", f"deploy.delayline --netns {prefix}-"], capture_output=True, text=True
    )
    return found.stdout.split()


def test_prefix_is_checked_because_interface_names_have_15_bytes() -> None:
    assert check_prefix(new_prefix()).startswith("phx")
    assert new_prefix() != new_prefix()
    with pytest.raises(ValueError, match="prefix 'PHX-1'"):
        check_prefix("PHX-1")
    with pytest.raises(ValueError, match=r"2\.\.9 characters"):
        cleanup_stale("phxwaytoolongprefix")


def test_cleanup_stale_removes_only_its_prefix(tmp_path: Path) -> None:
    mine, other = new_prefix(), new_prefix()
    try:
        for prefix in (mine, other):
            subprocess.run(["ip", "netns", "add", f"{prefix}-node-00"], check=True)
            subprocess.run(["ip", "link", "add", f"{prefix}br", "type", "bridge"], check=True)
        removed = cleanup_stale(mine)
        assert sorted(removed) == sorted([f"{mine}-node-00", f"{mine}br"])
        assert _nothing_left(mine)
        assert list_namespaces(other) == [f"{other}-node-00"]
        assert cleanup_stale(mine) == []  # idempotent
    finally:
        cleanup_stale(other)
    assert _nothing_left(other)


def test_each_node_gets_its_own_namespace_and_address(tmp_path: Path) -> None:
    from phalanx.node.config import load_node_config, parse_scenario

    scenario = parse_scenario({"nodes": 3, "rounds": 1, "clustering": {"cluster_size": 2}})
    testbed = NetnsTestbed(scenario, tmp_path)
    with testbed:
        testbed.prepare()
        assert list_namespaces(testbed.prefix) == [f"{testbed.prefix}-node-0{i}" for i in range(3)]
        configs = [load_node_config(tmp_path / "config" / f"node-0{i}.toml") for i in range(3)]
        hosts = [c.node.host for c in configs]
        assert hosts == [f"{testbed.subnet}.{i}" for i in (1, 2, 3)]
        assert [p.address for p in configs[0].peers] == [f"{h}:7000" for h in hosts]
        inside = subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                testbed.namespace("node-01"),
                "ip",
                "-4",
                "-o",
                "addr",
                "show",
                "dev",
                "eth0",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert f"{hosts[1]}/24" in inside
        routes = subprocess.run(
            ["ip", "netns", "exec", testbed.namespace("node-01"), "ip", "route"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert "default" not in routes  # traffic stays between the run's namespaces
    assert _nothing_left(testbed.prefix)


def test_more_than_one_node_per_process_is_refused(tmp_path: Path) -> None:
    from phalanx.node.config import parse_scenario

    scenario = parse_scenario(
        {"nodes": 4, "nodes_per_process": 2, "clustering": {"cluster_size": 2}}
    )
    with (
        NetnsTestbed(scenario, tmp_path) as testbed,
        pytest.raises(ValueError, match="nodes_per_process=2"),
    ):
        testbed.prepare()
    assert _nothing_left(testbed.prefix)


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGINT])
def test_no_namespace_is_left_after_sigkill_or_ctrl_c(tmp_path: Path, signum: int) -> None:
    from phalanx.deploy.netns import netem_available

    prefix = new_prefix()
    # A delay fault far ahead: where netem is missing, node-01 runs behind a delay line from the
    # start, whose forwarder process and bridge TAP must go too.
    late_delay = {"round": 40, "action": "delay", "nodes": ["node-01"], "delay_ms": 10.0}
    # Paced, so that the interrupt lands mid-run even when 50 rounds of this model take seconds.
    scenario = _scenario(
        tmp_path,
        nodes=2,
        rounds=50,
        faults=[late_delay],
        timeouts={"collect_s": 2.0, "rpc_s": 1.0, "startup_s": 60.0, "round_period_s": 0.5},
    )
    testbed = _start(scenario, tmp_path / "out", prefix)
    try:
        assert _wait_for(lambda: len(list_namespaces(prefix)) == 2, 60), "namespaces never came"
        assert _wait_for(lambda: (tmp_path / "out" / "nodes" / "node-01.jsonl").exists(), 90)
        if not netem_available():
            assert f"{prefix}t1" in list_links(prefix)
            assert len(_delay_line_processes(prefix)) == 1
        testbed.send_signal(signum)
        testbed.wait(timeout=60)
        assert _wait_for(lambda: _nothing_left(prefix), 30), list_namespaces(prefix)
        assert _wait_for(lambda: not _delay_line_processes(prefix), 10)
        if signum == signal.SIGINT:
            summary = json.loads((tmp_path / "out" / "summary.json").read_text())
            assert summary["status"] == "interrupted"
            assert summary["network"]["prefix"] == prefix
    finally:
        testbed.kill()
        cleanup_stale(prefix)


@pytest.mark.slow
@pytest.mark.timeout(600)  # 8 paced rounds of 12 s after the namespaces come up
def test_partition_excludes_the_cut_off_nodes_and_they_rejoin_after_heal(tmp_path: Path) -> None:
    cut = ["node-04", "node-05"]
    faults = [{"round": 2, "action": "partition", "nodes": cut}, {"round": 4, "action": "heal"}]
    prefix = new_prefix()
    # Lock-step rounds: every node starts a round every 12 s, longer than a partitioned round
    # (under 3 s idle; its echo and publish deadlines bound it near 10 s), so both sides stay in
    # the same round, the partition and the heal land between rounds rather than mid-publish,
    # and four rounds follow the heal, so that the rejoined nodes take part in regular rounds
    # before the end. The 4 s collect deadline keeps an unpartitioned node from missing it when
    # the other tests load the 2 CI cores (rounds 1 and 2 must exclude nobody).
    scenario = _scenario(
        tmp_path,
        nodes=6,
        rounds=8,
        faults=faults,
        timeouts={"collect_s": 4.0, "rpc_s": 1.0, "startup_s": 60.0, "round_period_s": 12.0},
    )
    run = _start(scenario, tmp_path / "out", prefix)
    output, _ = run.communicate(timeout=500)
    assert _nothing_left(prefix)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["status"] == "completed", output
    assert [(f["round"], f["action"]) for f in summary["faults"]] == [(2, "partition"), (4, "heal")]
    majority = ["node-00", "node-01", "node-02", "node-03"]
    assert summary["faults"][0]["groups"] == [cut, majority]
    rounds = {r["round"]: r for r in summary["rounds"]}
    assert rounds[1]["excluded"] == rounds[2]["excluded"] == []
    # The cut is atomic and lands between rounds 2 and 3: round 3 splits exactly into two sides.
    assert rounds[3]["excluded"] == cut, output
    assert len({rounds[3]["honest_digests"][n] for n in majority}) == 1, output
    assert set(cut) <= set(rounds[4]["excluded"]), output
    last = rounds[8]
    # After the heal the cut-off nodes adopt the majority's model and take part again.
    assert last["excluded"] == [], output
    assert len(set(last["honest_digests"].values())) == 1, output
    assert last["digests_identical"], output


@pytest.mark.slow
def test_delay_and_loss_on_one_node_rounds_complete_or_exclude_it(tmp_path: Path) -> None:
    from phalanx.deploy.netns import netem_available

    faults = [
        {
            "round": 1,
            "action": "delay",
            "nodes": ["node-03"],
            "delay_ms": 200.0,
            "jitter_ms": 20.0,
            "loss_pct": 5.0,
        }
    ]
    prefix = new_prefix()
    # Paced rounds, so that three full rounds run under the delay after it lands.
    # collect_s well above the added 200 ms: under CPU load an unshaped node must not miss it.
    timeouts = {"collect_s": 4.0, "rpc_s": 2.0, "startup_s": 60.0, "round_period_s": 5.0}
    scenario = _scenario(tmp_path, nodes=4, rounds=4, faults=faults, timeouts=timeouts)
    run = _start(scenario, tmp_path / "out", prefix)
    output, _ = run.communicate(timeout=400)
    assert _nothing_left(prefix)
    assert not _delay_line_processes(prefix)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["status"] == "completed", output
    fault = summary["faults"][0]
    expected = "tc-netem" if netem_available() else "delayline"
    assert (fault["round"], fault["mechanism"], fault["loss_pct"]) == (1, expected, 5.0)
    # The delay really is on the wire: TCP connects from the host to node-03, measured by the
    # testbed right before and after shaping, take 200 ms (+- 20 ms jitter) longer. Medians of
    # 5, so one SYN-ACK lost to the 5% loss (a 1 s retransmission) does not move them.
    probe = fault["probe_rtt_ms"]["node-03"]
    assert 160.0 < probe["after"] - probe["before"] < 300.0, probe
    if expected == "delayline":
        # The forwarder dropped about 5% of node-03's frames after the fault (seeded RNG).
        start = fault["delay_lines"]["node-03"]
        end = summary["network"]["delay_lines"]["node-03"]
        assert (end["delay_ms"], end["jitter_ms"], end["loss_pct"]) == (200.0, 20.0, 5.0)
        frames = end["egress_frames"] - start["egress_frames"]
        dropped = end["egress_dropped"] - start["egress_dropped"]
        assert frames > 1000, end
        assert 0.025 < dropped / frames < 0.075, (dropped, frames)
    collect_s = summary["scenario"]["timeouts"]["collect_s"]
    for record in summary["rounds"]:
        assert record["excluded"] in ([], ["node-03"])
        assert record["digests_identical"]
        # Deadlines: a cluster waits collect_s, outputs wait 2*collect_s, plus RPC retries.
        assert record["duration_s"] < 3 * collect_s + 4 * 1.0 + 15, record
    assert [r["round"] for r in summary["rounds"]] == [1, 2, 3, 4]


@pytest.mark.parametrize(("delay", "jitter", "loss"), [(80.0, 20.0, 5.0), (3.0, 0.0, 0.0)])
def test_netem_arguments_pass_tc_and_install_where_the_kernel_has_netem(
    delay: float, jitter: float, loss: float
) -> None:
    """The netem branch of the shaping: tc parses netem's arguments itself before asking the
    kernel, so on a kernel without ``sch_netem`` the command must fail with the kernel's
    "qdisc kind is unknown" (exit 2), never with tc's argument errors (exit 1); where the
    kernel has netem, the qdisc must be installed with the delay we asked for."""
    from phalanx.deploy.netns import netem_arguments

    namespace = f"{new_prefix()}-tc"
    subprocess.run(["ip", "netns", "add", namespace], check=True)
    try:

        def tc(*args: str) -> subprocess.CompletedProcess[str]:
            command = ["ip", "netns", "exec", namespace, "tc", "qdisc", "add", "dev", "lo"]
            return subprocess.run([*command, "root", *args], capture_output=True, text=True)

        subprocess.run(["ip", "netns", "exec", namespace, "ip", "link", "set", "lo", "up"])
        installed = tc(*netem_arguments(delay, jitter, loss))
        if installed.returncode == 0:
            shown = subprocess.run(
                ["ip", "netns", "exec", namespace, "tc", "qdisc", "show", "dev", "lo"],
                capture_output=True,
                text=True,
            ).stdout
            assert "netem" in shown and f"delay {delay:g}ms" in shown
        else:
            assert installed.returncode == 2 and "qdisc kind is unknown" in installed.stderr
        # Control: an argument tc cannot parse is refused by tc itself, whatever the kernel.
        malformed = tc("netem", "delay", f"{delay:g}ms", "loss", "500%")
        assert malformed.returncode == 1 and "Illegal" in malformed.stderr
    finally:
        subprocess.run(["ip", "netns", "delete", namespace], check=False)


def test_netem_arguments_refuse_impossible_values() -> None:
    from phalanx.deploy.netns import netem_arguments

    assert netem_arguments(80, 20, 5) == ["netem", "delay", "80ms", "20ms", "loss", "5%"]
    with pytest.raises(ValueError, match="loss_pct must be at most 100"):
        netem_arguments(1, 0, 150)
    with pytest.raises(ValueError, match="delay_ms must be >= 0"):
        netem_arguments(-1, 0, 0)
