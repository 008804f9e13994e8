"""`phalanx --help` and every subcommand's `--help` are fast: they load neither torch nor grpc;
every option says what it does; the command table matches what the modules register."""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys

import pytest

from phalanx.node.cli import BENCHES, COMMANDS, build_parser
from tests.conftest import REPO, phalanx_env

HEAVY = ("torch", "grpc")


def _subparsers(parser: argparse.ArgumentParser) -> argparse._SubParsersAction | None:  # type: ignore[type-arg]
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return actions[0] if actions else None


def _walk(parser: argparse.ArgumentParser, path: tuple[str, ...]):
    """(command path, parser) for `parser` and every parser below it."""
    yield path, parser
    sub = _subparsers(parser)
    if sub is not None:
        for name, child in sub.choices.items():
            yield from _walk(child, (*path, name))


def _command_paths() -> list[tuple[str, ...]]:
    return [path for path, _ in _walk(build_parser(), ())]


# One interpreter answers every `--help` in its own child process: `python -c` per command would
# pay the interpreter's start-up some forty times.
_PROBE = """
import json, subprocess, sys, time
results = {}
for words in json.loads(sys.argv[1]):
    code = (
        "import sys, time; t = time.perf_counter()\\n"
        "from phalanx.node.cli import main\\n"
        "try:\\n    main(sys.argv[1:])\\nexcept SystemExit as e:\\n    code = e.code\\n"
        "else:\\n    code = None\\n"
        "import json\\n"
        "print(json.dumps({'code': code, 'seconds': time.perf_counter() - t, 'heavy': sorted("
        "m for m in sys.modules if m.split('.')[0] in ('torch', 'grpc'))}))"
    )
    run = subprocess.run([sys.executable, "-c", code, *words, "--help"], capture_output=True,
                         text=True)
    results[" ".join(words)] = json.loads(run.stdout.splitlines()[-1])
print(json.dumps(results))
"""


def _probe(paths: list[tuple[str, ...]]) -> dict[str, dict]:
    run = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps([list(p) for p in paths])],
        capture_output=True,
        text=True,
        env=phalanx_env(),
        cwd=REPO,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


PATHS = _command_paths()


@pytest.fixture(scope="module")
def help_runs() -> dict[str, dict]:
    return _probe(PATHS)


@pytest.mark.parametrize("path", PATHS, ids=lambda p: " ".join(p) or "phalanx")
def test_help_loads_neither_torch_nor_grpc(help_runs: dict[str, dict], path) -> None:
    run = help_runs[" ".join(path)]
    assert run["code"] == 0
    assert run["heavy"] == []


def test_top_level_help_is_fast() -> None:
    """`phalanx --help` in a fresh interpreter, timed by `-X importtime` for the import of the
    CLI itself (the figure that does not depend on the machine's load is the module list)."""
    run = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "phalanx.node", "--help"],
        capture_output=True,
        text=True,
        env=phalanx_env(),
        cwd=REPO,
        timeout=60,
    )
    assert run.returncode == 0 and "testbed" in run.stdout
    imported = {line.split("|")[-1].strip() for line in run.stderr.splitlines() if "|" in line}
    roots = {name.split(".")[0] for name in imported}
    assert not roots & {*HEAVY, "pydantic", "numpy", "rich"}, sorted(roots)
    assert "phalanx.node.config" not in imported


@pytest.mark.parametrize("path", PATHS, ids=lambda p: " ".join(p) or "phalanx")
def test_every_option_and_subcommand_has_help(path: tuple[str, ...]) -> None:
    parser = dict(_walk(build_parser(), ()))[path]
    missing = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            missing += [c.dest for c in action._choices_actions if not c.help]
        elif not action.help or action.help == argparse.SUPPRESS:
            missing.append("/".join(action.option_strings) or action.dest)
    assert missing == []


def test_the_command_table_matches_what_each_module_registers() -> None:
    """`COMMANDS` and `BENCHES` list names and helps without importing the modules; the modules
    themselves register exactly those."""
    for table, hook in ((COMMANDS, "register"), (BENCHES, "register_bench")):
        for module_name in sorted({m for m, _ in table.values()} - {"phalanx.node.cli"}):
            parser = argparse.ArgumentParser()
            sub = parser.add_subparsers()
            getattr(importlib.import_module(module_name), hook)(sub)
            registered = {c.dest: c.help for c in sub._choices_actions}
            expected = {n: h for n, (m, h) in table.items() if m == module_name}
            assert registered == expected, module_name
