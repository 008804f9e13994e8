"""Bad names and numbers are refused before anything starts: one line on stderr naming the field,
exit code 2, no traceback. Table-driven, through `phalanx`'s own `main` (the parsing and
validation a subprocess would run, without paying the interpreter's start-up per row); one row
also runs as a real process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from phalanx.node.cli import main
from tests.conftest import REPO, phalanx_env

# A testbed row that passed validation would start nodes: these keep such a mistake short.
GUARD = ("--nodes", "2", "--cluster-size", "2", "--rounds", "1", "--timeout", "1")

# (id, extra scenario TOML or None, argv after `phalanx`, words the error line must contain)
CASES = [
    ("strategy", None, ["testbed", "run", *GUARD, "--strategy", "nope"], ["strategy", "'nope'"]),
    (
        "strategy-analysis-only",
        None,
        ["testbed", "run", *GUARD, "--strategy", "locality"],
        ["strategy", "'locality'", "static"],
    ),
    ("rule", None, ["testbed", "run", *GUARD, "--rule", "nope"], ["aggregation rule", "'nope'"]),
    (
        "pre-aggregator",
        '[aggregation]\npre = ["nnm", "nope"]\n',
        ["testbed", "run", *GUARD],
        ["pre-aggregator", "'nope'"],
    ),
    (
        "behaviour",
        None,
        ["testbed", "run", *GUARD, "--byzantine", "1:nope"],
        ["behaviour", "'nope'"],
    ),
    (
        "behaviour-parameter",
        None,
        ["testbed", "run", "--nodes", "4", "--timeout", "1", "--byzantine", "2:alie:zz=1"],
        ["zz"],
    ),
    ("dataset", None, ["testbed", "run", *GUARD, "--dataset", "nope"], ["data.dataset"]),
    ("model", None, ["testbed", "run", *GUARD, "--model", "nope"], ["model", "'nope'"]),
    (
        "defense",
        '[defense]\nupdate = "nope"\n',
        ["testbed", "run", *GUARD],
        ["defense.update", "'nope'"],
    ),
    ("partition", None, ["testbed", "run", *GUARD, "--partition", "nope"], ["--partition"]),
    ("secure", None, ["testbed", "run", *GUARD, "--secure", "nope"], ["--secure"]),
    ("nodes", None, ["testbed", "run", "--nodes", "0"], ["--nodes", ">= 1"]),
    ("nodes-not-a-number", None, ["testbed", "run", "--nodes", "many"], ["--nodes", "integer"]),
    (
        "nodes-too-many",
        None,
        ["testbed", "run", "--nodes", "5000", "--timeout", "1"],
        ["nodes", "4096"],
    ),
    ("rounds", None, ["testbed", "run", "--rounds", "0"], ["--rounds"]),
    ("cluster-size", None, ["testbed", "run", *GUARD[:2], "--cluster-size", "3"], ["larger"]),
    ("collect-timeout", None, ["testbed", "run", "--collect-timeout", "0"], ["> 0"]),
    ("round-period", None, ["testbed", "run", "--round-period", "-1"], [">= 0"]),
    ("timeout", None, ["testbed", "run", "--timeout", "nan"], ["finite"]),
    ("byzantine-from", None, ["testbed", "run", "--byzantine-from", "0"], [">= 1"]),
    ("f", None, ["testbed", "run", "--f", "-1"], ["--f"]),
    ("kill", None, ["testbed", "run", *GUARD, "--kill", "node-99@1"], ["node-99"]),
    ("port-negative", None, ["node", "--id", "a", "--port", "-5"], ["--port", "0..65535"]),
    ("port-too-large", None, ["node", "--id", "a", "--port", "70000"], ["--port"]),
    ("metrics-port", None, ["node", "--id", "a", "--metrics-port", "-1"], ["--metrics-port"]),
    ("torch-threads", None, ["node", "--id", "a", "--torch-threads", "0"], ["--torch-threads"]),
    ("linger", None, ["node", "--id", "a", "--linger", "-1"], ["--linger"]),
    ("node-rounds", None, ["node", "--id", "a", "--rounds", "0"], ["--rounds"]),
    ("peer", None, ["node", "--id", "a", "--peer", "b"], ["ID=HOST:PORT"]),
    (
        "node-scenario-name",
        '[clustering]\nstrategy = "nope"\ncluster_size = 2\n',
        ["node", "--id", "a", "--insecure"],
        ["strategy", "'nope'"],
    ),
    ("compose-nodes", None, ["deploy", "compose", "--nodes", "1"], ["--nodes", "2..256"]),
    (
        "compose-behaviour",
        None,
        ["deploy", "compose", "--nodes", "4", "--byzantine", "1=nope"],
        ["nope"],
    ),
    ("experiment-jobs", None, ["experiment", "run", "spec.toml", "--jobs", "0"], ["--jobs"]),
    ("health-timeout", None, ["health", "--timeout", "-1"], ["--timeout"]),
    (
        "analyze",
        None,
        ["analyze", "clusters", "--nodes", "0", "--faulty", "0", "--cluster-size", "1"],
        ["--nodes"],
    ),
    ("command", None, ["nope"], ["invalid choice"]),
]


@pytest.mark.parametrize(
    ("scenario", "argv", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_input_is_one_line_and_exit_code_2(
    tmp_path: Path, monkeypatch, capsys, scenario: str | None, argv: list[str], words: list[str]
) -> None:
    monkeypatch.chdir(tmp_path)  # nothing may be written here either
    argv = list(argv)
    if scenario is not None:
        path = tmp_path / "scenario.toml"
        clustering = "" if "[clustering]" in scenario else "[clustering]\ncluster_size = 2\n"
        path.write_text("nodes = 2\n" + clustering + scenario)
        argv += ["--scenario", str(path)] if argv[0] == "node" else [str(path)]
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2, captured.out + captured.err
    assert len(lines) == 1, captured.err
    assert "Traceback" not in captured.err
    assert all(word in lines[0] for word in words), lines[0]
    assert list(tmp_path.iterdir()) in ([], [tmp_path / "scenario.toml"])  # nothing started


def test_a_bad_name_through_a_real_process(tmp_path: Path) -> None:
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "phalanx.node",
            "testbed",
            "run",
            "--strategy",
            "nope",
            "--out",
            "x",
        ],
        capture_output=True,
        text=True,
        env=phalanx_env(),
        cwd=tmp_path,
        timeout=300,
    )
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr.startswith("phalanx testbed: ") and len(run.stderr.splitlines()) == 1
    assert "unknown strategy 'nope'" in run.stderr and not (tmp_path / "x").exists()


def test_a_sweep_with_a_bad_name_in_one_cell_runs_no_cell(tmp_path: Path, capsys) -> None:
    spec = (REPO / "experiments" / "specs" / "cluster-study.toml").read_text()
    assert '"clustering.strategy" = ["static", "random"]' in spec
    bad = tmp_path / "bad.toml"
    bad.write_text(spec.replace('["static", "random"]', '["static", "nope"]'))
    code = main(["experiment", "run", str(bad), "--out", str(tmp_path / "out")])
    error = capsys.readouterr().err
    assert code == 2 and len(error.strip().splitlines()) == 1
    assert "strategy=nope" in error and "unknown strategy 'nope'" in error
    assert not (tmp_path / "out").exists()
