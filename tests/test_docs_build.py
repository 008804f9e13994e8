"""The user documentation builds strictly, and its generated reference covers the code.

`mkdocs build --strict` fails on a nav entry without a page, a broken internal link or anchor;
the reference pages come from `docs/gen_reference.py` (a mkdocs hook), so these tests also fail
when generation breaks or leaves out a subcommand or a scenario key.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import typing
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from pydantic import BaseModel

ROOT = Path(__file__).resolve().parents[1]


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_reference", ROOT / "docs/gen_reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GEN = _generator()


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models a field holds: itself, `list[Model]` or `Model | None`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]


def _keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every leaf key of `model`, dotted, `[]` after arrays of tables (walked independently of
    the generator, so that a generator that skips a table is caught)."""
    keys = []
    for name, info in model.model_fields.items():
        inner = _models_in(info.annotation)
        if inner:
            suffix = "[]" if typing.get_origin(info.annotation) is list else ""
            keys += _keys(inner[0], f"{prefix}{name}{suffix}.")
        else:
            keys.append(f"{prefix}{name}")
    return keys


def test_cli_reference_names_every_subcommand() -> None:
    page = GEN.cli_markdown()
    commands = GEN._module("node.cli").COMMANDS
    benches = GEN._module("node.cli").BENCHES
    assert commands and benches
    for name in commands:
        assert f"\n## phalanx {name}\n" in page, name
    for name in benches:
        assert f"\n### phalanx bench {name}\n" in page, name
    assert "`--byzantine`" in page and "`--rule`" in page  # options, not only headings


def test_scenario_reference_names_every_field() -> None:
    config = GEN._module("node.config")
    page = GEN.scenario_markdown()
    scenario_keys = _keys(config.Scenario)
    assert "aggregation.rule" in scenario_keys and "byzantine[].behaviour" in scenario_keys
    node_keys = [k for k in _keys(config.NodeConfig) if not k.startswith("scenario.")]
    sweep_keys = _keys(GEN._module("experiments.spec").SweepSpec)
    for key in scenario_keys + node_keys + sweep_keys:
        assert f"| `{key}` |" in page, key
    assert GEN.scenario_fields() == scenario_keys


def test_notes_name_only_real_keys() -> None:
    config = GEN._module("node.config")
    real = set(_keys(config.Scenario)) | set(_keys(config.NodeConfig))
    assert set(GEN.NOTES) <= real, sorted(set(GEN.NOTES) - real)
    sweep = set(_keys(GEN._module("experiments.spec").SweepSpec))
    assert set(GEN.SWEEP_NOTES) <= sweep, sorted(set(GEN.SWEEP_NOTES) - sweep)


def test_strict_build(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs", reason="mkdocs is not installed (pip install '.[docs]')")
    pytest.importorskip(
        "material", reason="mkdocs-material is not installed (pip install '.[docs]')"
    )
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    cli = (tmp_path / "site/reference/cli/index.html").read_text()
    assert "phalanx testbed run" in cli
    assert (tmp_path / "site/reference/scenario/index.html").is_file()
