"""Sweep specs: a base scenario, axes of dotted scenario keys, seeds and metrics, from TOML.

A spec is expanded into *cells*, the Cartesian product ``axes x seeds`` in a fixed order (axes in
the order written, values in the order listed, seeds last), so the same spec always yields the
same cell ids and a re-run resumes where it stopped. Every cell's scenario goes through
`node.config.with_overrides` and `parse_scenario`, so an axis naming a key the scenario lacks is
refused up front with that key in the message.

``engine`` picks the testbed engine (``grpc``: node processes over sockets; ``memory``: every
peer in one process over an in-memory network): a top-level key, a ``[quick.overrides]`` key or an
axis. It is not a scenario key: it enters a cell's parameters (and so its hash) only where a spec
sets it, and the runner passes it as ``--engine``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from phalanx.node.config import ConfigError, Scenario, parse_scenario, with_overrides

KNOWN_METRICS = (
    "final_accuracy",
    "accuracy",
    "loss",
    "round_seconds",
    "bytes_sent",
    "failed_round_rate",
    "corrupted_fraction",
    "digests_identical",
    "detection_precision",
    "detection_recall",
    "liar_precision",
    "liar_recall",
    "psnr",
    "ssim",
    "label_accuracy",
    "utility_accuracy",
)
DEFAULT_METRICS = ("final_accuracy", "round_seconds", "bytes_sent")
ENGINES = ("grpc", "memory")
ENGINE_KEY = "engine"


class SpecError(ValueError):
    """A sweep spec problem, worded as ``key: what is wrong``."""


AxisValues = list[Any] | dict[str, Any]


class QuickSpec(BaseModel):
    """Overrides for ``--quick``: smaller base (`overrides`), shorter axes, fewer seeds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    overrides: dict[str, Any] = {}
    axes: dict[str, AxisValues] = {}
    seeds: list[int] | None = None


class SweepSpec(BaseModel):
    """The validated TOML: ``kind``, ``[base]`` (or ``base = "file.toml"``), ``[axes]``, seeds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "sweep"
    kind: Literal["testbed", "inversion"] = "testbed"
    description: str = ""
    base: dict[str, Any] | str = {}
    axes: dict[str, AxisValues] = {}
    seeds: Annotated[list[int], Field(min_length=1)] = [0]
    metrics: list[str] = list(DEFAULT_METRICS)
    quick: QuickSpec | None = None
    cell_timeout_s: Annotated[float, Field(gt=0)] | None = None
    heatmap: list[str] | None = None
    engine: str | None = None

    @field_validator("engine")
    @classmethod
    def _known_engine(cls, engine: str | None) -> str | None:
        if engine is not None:
            _check_engine(engine, "")
        return engine

    @model_validator(mode="after")
    def _heatmap_axes(self) -> SweepSpec:
        if self.heatmap is not None:
            if len(self.heatmap) != 2 or len(set(self.heatmap)) != 2:
                raise ValueError(f"heatmap must name two different axes, got {self.heatmap}")
            for key in self.heatmap:
                if key not in self.axes:
                    raise ValueError(f"heatmap names {key!r}, which is not an axis")
        return self

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, metrics: list[str]) -> list[str]:
        for metric in metrics:
            if metric not in KNOWN_METRICS:
                raise ValueError(f"unknown metric {metric!r}; known: {', '.join(KNOWN_METRICS)}")
        return metrics

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, seeds: list[int]) -> list[int]:
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds must be distinct, got {seeds}")
        return seeds


@dataclass(frozen=True)
class Cell:
    """One point of the grid: axis values (with display labels), a seed, the resolved parameters.

    For ``testbed`` sweeps `params` is the validated scenario as a dict; for ``inversion`` sweeps it
    is the hook's parameter mapping.
    """

    id: str
    index: int
    axes: dict[str, Any]
    labels: dict[str, str]
    seed: int
    params: dict[str, Any]

    @property
    def params_hash(self) -> str:
        return canonical_hash(self.params)


@dataclass(frozen=True)
class ResolvedSpec:
    """A spec with the quick overrides applied and every cell expanded and validated."""

    spec: SweepSpec
    quick: bool
    base: dict[str, Any]
    axes: dict[str, list[tuple[str, Any]]]
    seeds: list[int]
    cells: list[Cell]
    source: str

    @property
    def kind(self) -> str:
        return self.spec.kind

    @property
    def fingerprint(self) -> str:
        """Identifies the grid: a results folder only ever holds one."""
        return canonical_hash(
            {"kind": self.kind, "cells": [[c.id, c.params_hash] for c in self.cells]}
        )


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def canonical_hash(value: Any) -> str:
    """SHA-256 of the sorted-key JSON form: the same mapping always hashes the same."""
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()


def _check_engine(value: Any, where: str) -> str:
    if value not in ENGINES:
        raise SpecError(f"{where}must be one of {', '.join(map(repr, ENGINES))}, got {value!r}")
    return str(value)


def _format_validation(error: ValidationError, prefix: str) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = "unknown key"
    return f"{prefix}{where}: {message}" if where else f"{prefix}{message}"


def _axis_values(key: str, values: AxisValues) -> list[tuple[str, Any]]:
    """``[v1, v2]`` or ``{label = value}``; labels name the values in reports."""
    if isinstance(values, dict):
        pairs = [(str(label), value) for label, value in values.items()]
    else:
        pairs = [(_label(value), value) for value in values]
    if not pairs:
        raise SpecError(f"axes.{key}: needs at least one value")
    labels = [label for label, _ in pairs]
    if len(set(labels)) != len(labels):
        raise SpecError(f"axes.{key}: duplicate values {labels}")
    return pairs


def _label(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, float | int | bool):
        return str(value)
    return canonical_json(value)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise SpecError(f"{path}: no such file") from None
    except tomllib.TOMLDecodeError as error:
        raise SpecError(f"{path}: invalid TOML: {error}") from None


def _deep_merge(parent: dict[str, Any], child: dict[str, Any]) -> dict[str, Any]:
    """`child` over `parent`: tables merge key by key, any other value replaces."""
    merged = dict(parent)
    for key, value in child.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _base_table(data: dict[str, Any], base_dir: Path) -> dict[str, Any] | str:
    """A spec's ``base`` as a table, or its file path made absolute (so it resolves anywhere)."""
    base = data.get("base", {})
    if isinstance(base, str):
        path = Path(base)
        return str(path if path.is_absolute() else base_dir / path)
    if not isinstance(base, dict):
        raise SpecError("base: must be a table or the path of a scenario file")
    return base


def _inherit(parent: dict[str, Any], child: dict[str, Any], parent_dir: Path) -> dict[str, Any]:
    """A spec that ``extends`` another: see `read_spec_data`."""
    merged = {k: v for k, v in parent.items() if k not in ("base", "axes")}
    merged.update({k: v for k, v in child.items() if k not in ("base", "axes")})
    parent_base = _base_table(parent, parent_dir)
    child_base = child.get("base")
    if child_base is None:
        merged["base"] = parent_base
    elif isinstance(child_base, dict):
        if isinstance(parent_base, str):
            parent_base = _read_toml(Path(parent_base))
        merged["base"] = _deep_merge(parent_base, child_base)
    else:
        merged["base"] = child_base
    axes = parent.get("axes", {})
    if not isinstance(axes, dict) or not isinstance(child.get("axes", {}), dict):
        raise SpecError("axes: must be a table of axes")
    merged["axes"] = {**axes, **child.get("axes", {})}
    return merged


def read_spec_data(path: Path, _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A spec file's mapping, with ``extends = "parent.toml"`` resolved.

    A spec that extends another (path relative to the extending file, chains allowed) takes the
    parent's keys and replaces those it gives: ``[base]`` tables merge key by key (a nested table
    such as ``[base.training]`` merges too), an axis it names replaces the parent's axis of that
    name (new axes come after the parent's), and a ``[quick]`` table it gives replaces the
    parent's whole.
    """
    resolved_path = path.resolve()
    if resolved_path in _chain:
        cycle = " -> ".join(str(p) for p in (*_chain, resolved_path))
        raise SpecError(f"extends: a cycle ({cycle})")
    data = _read_toml(path)
    parent_name = data.pop("extends", None)
    if parent_name is None:
        return data
    if not isinstance(parent_name, str):
        raise SpecError(f"{path}: extends: must be the path of a spec file")
    parent_path = Path(parent_name)
    if not parent_path.is_absolute():
        parent_path = path.parent / parent_path
    try:
        parent = read_spec_data(parent_path, (*_chain, resolved_path))
    except SpecError as error:
        message = str(error)
        raise SpecError(
            message if message.startswith(str(parent_path)) else f"{parent_path}: {message}"
        ) from None
    return _inherit(parent, data, parent_path.parent)


def parse_spec(data: dict[str, Any]) -> SweepSpec:
    """Validate a spec mapping; raises `SpecError` naming the bad key."""
    try:
        return SweepSpec.model_validate(data)
    except ValidationError as error:
        raise SpecError(_format_validation(error, "")) from None


def _check_keys(kind: str, keys: list[str], where: str, base: dict[str, Any]) -> None:
    if kind == "testbed":
        return  # checked by with_overrides on every cell, which names the key
    from phalanx.experiments.cells import INVERSION_KEYS

    for key in keys:
        if key not in INVERSION_KEYS:
            raise SpecError(
                f"{where}.{key}: unknown key for an inversion cell; known: "
                f"{', '.join(INVERSION_KEYS)}"
            )


def _testbed_params(base: Scenario, overrides: dict[str, Any], where: str) -> dict[str, Any]:
    try:
        return with_overrides(base, overrides).model_dump()
    except ConfigError as error:
        raise SpecError(f"{where}: {error}") from None


def _resolve_engine(
    spec: SweepSpec,
    base: dict[str, Any],
    overrides: dict[str, Any],
    axes: dict[str, list[tuple[str, Any]]],
) -> str | None:
    """The sweep-wide engine (top level, or ``[quick.overrides]``, popped from `overrides`)."""
    if spec.kind != "testbed":
        if spec.engine is not None:
            raise SpecError("engine: only testbed sweeps have an engine")
        return None
    if ENGINE_KEY in base:
        raise SpecError(
            "base.engine: not a scenario key; give `engine` at the top level of the spec or as "
            "an axis"
        )
    engine = spec.engine
    if ENGINE_KEY in overrides:
        engine = _check_engine(overrides.pop(ENGINE_KEY), "quick.overrides.engine: ")
    for _, value in axes.get(ENGINE_KEY, []):
        _check_engine(value, "axes.engine: ")
    return engine


def resolve_spec(
    spec: SweepSpec, *, quick: bool = False, source: str = "<spec>", base_dir: Path | None = None
) -> ResolvedSpec:
    """Apply ``[quick]`` if asked, load the base, expand and validate every cell."""
    if isinstance(spec.base, str):
        path = Path(spec.base)
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        base = _read_toml(path)
    else:
        base = dict(spec.base)
    axes_raw = dict(spec.axes)
    seeds = list(spec.seeds)
    overrides: dict[str, Any] = {}
    if quick:
        if spec.quick is None:
            raise SpecError("quick: this spec has no [quick] table")
        overrides = dict(spec.quick.overrides)
        for key, values in spec.quick.axes.items():
            if key not in axes_raw:
                raise SpecError(f"quick.axes.{key}: not an axis of this spec")
            axes_raw[key] = values
        seeds = list(spec.quick.seeds) if spec.quick.seeds is not None else seeds
    axes = {key: _axis_values(key, values) for key, values in axes_raw.items()}
    _check_keys(spec.kind, list(axes), "axes", base)
    _check_keys(spec.kind, list(overrides), "quick.overrides", base)
    engine = _resolve_engine(spec, base, overrides, axes)
    if spec.kind == "testbed":
        if "seed" in axes:
            raise SpecError("axes.seed: give seeds with the top-level `seeds` list")
        try:
            base_scenario = parse_scenario(base)
        except ConfigError as error:
            message = str(error)
            raise SpecError(
                f"base: {message.removeprefix('scenario: ')}"
                if message.startswith("scenario: ")
                else f"base.{message}"
            ) from None
        base_scenario = Scenario.model_validate(
            _testbed_params(base_scenario, overrides, "quick.overrides")
        )
        base_params: dict[str, Any] = base_scenario.model_dump()
    else:
        base_params = {**base, **overrides}
    cells: list[Cell] = []
    keys = list(axes)
    grid: list[tuple[tuple[str, Any], ...]] = list(itertools.product(*(axes[k] for k in keys)))
    combos = [(picked, seed) for picked in grid for seed in seeds]
    for index, (picked, seed) in enumerate(combos):
        values = {key: value for key, (_, value) in zip(keys, picked, strict=True)}
        labels = {key: label for key, (label, _) in zip(keys, picked, strict=True)}
        where = "axes(" + ", ".join(f"{k}={labels[k]}" for k in keys) + ")"
        if spec.kind == "testbed":
            scenario_values = {k: v for k, v in values.items() if k != ENGINE_KEY}
            params = _testbed_params(base_scenario, {**scenario_values, "seed": seed}, where)
            params["name"] = f"{spec.name}-{index:04d}"
            cell_engine = values.get(ENGINE_KEY, engine)
            if cell_engine is not None:
                params[ENGINE_KEY] = cell_engine
        else:
            params = {**base_params, **values, "seed": seed}
        key_hash = canonical_hash({"axes": values, "seed": seed})[:10]
        cells.append(Cell(f"c{index:04d}-{key_hash}", index, values, labels, seed, params))
    return ResolvedSpec(spec, quick, base_params, axes, seeds, cells, source)


def load_spec(path: str | Path, *, quick: bool = False) -> ResolvedSpec:
    """Read, validate and expand a spec file; errors name the file and the bad key."""
    path = Path(path)
    try:
        return resolve_spec(
            parse_spec(read_spec_data(path)), quick=quick, source=str(path), base_dir=path.parent
        )
    except SpecError as error:
        message = str(error)
        raise SpecError(
            message if message.startswith(str(path)) else f"{path}: {message}"
        ) from None
