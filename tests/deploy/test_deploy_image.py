"""The node image's recipe, checked without a container runtime: dependency layer before the
source, a gRPC health check, a non-root user; and the compose testbed generated from an
installed package (not a checkout) gets a build context of its own that builds the same wheel."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

from tests.conftest import REPO, build_wheel, checkout_wheel

DOCKERFILE = REPO / "deploy" / "Dockerfile"
PIP = (sys.executable, "-m", "pip")


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", text)
    result = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            result.append((word.upper(), rest.strip()))
    return result


def _index(instructions: list[tuple[str, str]], word: str, pattern: str) -> int:
    matches = [
        i for i, (w, rest) in enumerate(instructions) if w == word and re.search(pattern, rest)
    ]
    assert matches, f"no {word} matching {pattern!r}"
    return matches[0]


def _requirements_step(instructions: list[tuple[str, str]]) -> str:
    """The Python program of the RUN that lists the dependencies from pyproject.toml."""
    run = instructions[_index(instructions, "RUN", r"pyproject\.toml")][1]
    words = shlex.split(run)
    return words[words.index("-c") + 1]


def test_dependencies_are_a_layer_of_their_own_before_the_source() -> None:
    steps = _instructions(DOCKERFILE.read_text())
    torch = _index(steps, "RUN", r"download\.pytorch\.org/whl/cpu torch==2\.13\.0")
    manifest = _index(steps, "COPY", r"^pyproject\.toml ")
    dependencies = _index(steps, "RUN", r"pip install -r ")
    source = _index(steps, "COPY", r"^\. ")
    install = _index(steps, "RUN", r"pip install --no-deps \.")
    assert torch < manifest < dependencies < source < install
    assert [w for w, _ in steps[:source]].count("COPY") == 1  # only pyproject.toml before


def test_the_requirements_step_lists_exactly_the_project_dependencies(tmp_path: Path) -> None:
    """The dependency layer's program, run here on the checkout's pyproject.toml."""
    steps = _instructions(DOCKERFILE.read_text())
    program = _requirements_step(steps).replace("/tmp/requirements.txt", "requirements.txt")
    shutil.copyfile(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    subprocess.run([sys.executable, "-c", program], cwd=tmp_path, check=True, timeout=60)
    listed = (tmp_path / "requirements.txt").read_text().splitlines()
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert listed == project["dependencies"] and listed[0] == "torch==2.13.0"


def test_health_check_and_non_root_user() -> None:
    steps = _instructions(DOCKERFILE.read_text())
    health = steps[_index(steps, "HEALTHCHECK", r"CMD")][1]
    command = json.loads(health[health.index("CMD") + 3 :])
    assert command[:2] == ["phalanx", "health"] and "127.0.0.1:7000" in command
    user = _index(steps, "USER", r".")
    assert steps[user][1] not in ("root", "0") and user < _index(steps, "ENTRYPOINT", r".")
    assert "useradd --system --uid 10001" in steps[_index(steps, "RUN", r"useradd")][1]
    ignored = (REPO / "deploy" / "Dockerfile.dockerignore").read_text().split()
    assert {".git", ".venv", "tests", "*.egg-info"} <= set(ignored)


def _normal(requirements: list[str]) -> list[str]:
    return [str(Requirement(r)) for r in requirements]


def _wheel_files(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as archive:
        return {n for n in archive.namelist() if ".dist-info/" not in n}


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path]:
    """A real (non-editable) install of this checkout: (site folder, the wheel installed)."""
    base = tmp_path_factory.mktemp("installed")
    wheel = checkout_wheel(base)
    site = base / "site"
    subprocess.run(
        [*PIP, "install", "--no-deps", "--no-compile", "-q", "--target", str(site), str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return site, wheel


def test_compose_from_an_installed_package_writes_its_own_build_context(
    tmp_path: Path, installed: tuple[Path, Path]
) -> None:
    site, wheel = installed
    assert (site / "phalanx" / "deploy" / "Dockerfile").read_bytes() == DOCKERFILE.read_bytes()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(site)  # ahead of the checkout's editable install, if any
    out = tmp_path / "compose"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "phalanx.node",
            "deploy",
            "compose",
            "--nodes",
            "4",
            "--out",
            str(out),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    document = yaml.safe_load((out / "compose.yml").read_text())
    builds = {s["build"]["context"] for s in document["services"].values() if "build" in s}
    assert builds == {"./image"}
    context = out / "image"
    assert (context / "deploy" / "Dockerfile").read_bytes() == DOCKERFILE.read_bytes()
    assert not any(p.name == "site-packages" or p == site for p in (context, *context.parents))
    # The context's pyproject.toml carries the installed distribution's dependencies ...
    project = tomllib.loads((context / "pyproject.toml").read_text())["project"]
    expected = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert _normal(project["dependencies"]) == _normal(expected["dependencies"])
    assert project["scripts"] == expected["scripts"] and project["version"] == expected["version"]
    compose = shutil.which("docker-compose")
    if compose is not None:  # it refuses a build context that does not exist
        check = subprocess.run([compose, "-f", "compose.yml", "config", "-q"], cwd=out, timeout=60)
        assert check.returncode == 0
    # ... and `pip install .` in the image builds the very wheel that was installed.
    rebuilt = build_wheel(context, tmp_path / "rebuilt")
    assert _wheel_files(rebuilt) == _wheel_files(wheel)
