"""Phalanx installs as one import package, `phalanx`: the top-level folders are its subpackages
(`phalanx/` links them in), and no module imports them by their bare names, which would work in a
checkout and break in an installed wheel."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO, checkout_wheel

FOLDERS = ("node", "mpc", "learning", "clustering", "adversary", "defense", "deploy")
FOLDERS += ("experiments", "bench")
SKIPPED = {".venv", ".git", "build", "site", "phalanx", "node_modules", ".mypy_cache"}


def _python_files() -> list[Path]:
    files = []
    for folder, dirs, names in os.walk(REPO):
        dirs[:] = [d for d in dirs if d not in SKIPPED and not d.startswith(".")]
        files += [Path(folder) / n for n in names if n.endswith(".py")]
    return files


def test_no_module_imports_a_top_level_folder_by_its_bare_name() -> None:
    bare = []
    for path in _python_files():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            bare += [
                f"{path.relative_to(REPO)}:{node.lineno}: {name}"
                for name in names
                if name.split(".")[0] in FOLDERS
            ]
    assert bare == []


def test_each_top_level_folder_is_a_subpackage_of_phalanx() -> None:
    for folder in FOLDERS:
        link = REPO / "phalanx" / folder
        assert link.is_symlink() and link.resolve() == REPO / folder, folder
    assert (REPO / "phalanx" / "v1").resolve() == REPO / "proto" / "phalanx" / "v1"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return checkout_wheel(tmp_path_factory.mktemp("wheel"))


def test_the_wheel_installs_exactly_one_top_level_name(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (top_level,) = [n for n in names if n.endswith(".dist-info/top_level.txt")]
        assert archive.read(top_level).decode().split() == ["phalanx"]
    tops = {name.split("/")[0] for name in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"phalanx"}
    # the files the subcommands need at run time travel inside it
    for needed in (
        "phalanx/node/scenarios/default.toml",
        "phalanx/node/scenarios/demo.toml",
        "phalanx/deploy/Dockerfile",
        "phalanx/v1/node_pb2.py",
        "phalanx/node/peer.py",
        "phalanx/mpc/__init__.py",
    ):
        assert needed in names, needed


@pytest.mark.slow
def test_a_wheel_installed_testbed_runs_from_an_empty_folder(wheel: Path, tmp_path: Path) -> None:
    """The first command of a `pip install` user: a clean venv, the wheel and its dependencies
    from the package index, then `phalanx testbed run` with the default `--out`."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "torch==2.13.0"], check=True, capture_output=True, timeout=1200)
    subprocess.run([*pip, str(wheel)], check=True, capture_output=True, timeout=1200)
    shown = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "show", "-f", "phalanx"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    listed = shown.split("Files:", 1)[1].split()
    assert {f.split("/")[0] for f in listed if not f.startswith("..")} - {
        f.split("/")[0] for f in listed if ".dist-info" in f.split("/")[0]
    } == {"phalanx"}
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"}}
    run = subprocess.run(
        [
            str(venv / "bin" / "phalanx"),
            "testbed",
            "run",
            "--rounds",
            "1",
            "--dataset",
            "digits",
            "--model",
            "mlp",
            "--no-metrics",
        ],
        cwd=empty,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    summary = json.loads((empty / "phalanx-out" / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["all_digests_identical"]
