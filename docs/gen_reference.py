"""Generate the CLI and scenario reference pages from the code, at every docs build.

`mkdocs.yml` loads this file as a hook: `on_files` adds ``reference/cli.md`` (every `phalanx`
subcommand and option, walked from the argparse parser of ``node/cli.py``) and
``reference/scenario.md`` (every scenario and node-file key, walked from the pydantic models of
``node/config.py``, with the names that the registries accept). Nothing is written to disk, so
the pages cannot drift from the code. ``python docs/gen_reference.py OUT_DIR`` writes the two
pages to a folder instead, to read them without a build.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import re
import sys
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

CLI_PAGE = "reference/cli.md"
SCENARIO_PAGE = "reference/scenario.md"


def _module(name: str) -> Any:
    """Import a Phalanx module by its folder name: `phalanx.<name>` once the code lives in the
    single import package, else the top-level `<name>`."""
    try:
        return importlib.import_module(f"phalanx.{name}")
    except ModuleNotFoundError:
        return importlib.import_module(name)


def _cell(text: object) -> str:
    """Text for one cell of a Markdown table: one line, pipes escaped, and `<` escaped outside
    code spans (help texts say `OUT/<id>`, which Markdown would read as an HTML tag)."""
    parts = " ".join(str(text).split()).replace("|", "\\|").split("`")
    return "`".join(p if i % 2 else p.replace("<", "&lt;") for i, p in enumerate(parts))


def _rst_to_md(text: str) -> str:
    """Docstrings use ``literal`` and `name`; Markdown wants `literal`."""
    return re.sub(r"``(.+?)``", r"`\1`", inspect.cleandoc(text))


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def build_cli_parser() -> argparse.ArgumentParser:
    """The whole `phalanx` parser, every subcommand registered in full."""
    parser: argparse.ArgumentParser = _module("node.cli").build_parser(load_all=True)
    return parser


def _subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, str, argparse.ArgumentParser]]:
    """(name, help, parser) of each subcommand of `parser`, in registration order."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
            for name, sub in action.choices.items():
                found.append((name, helps.get(name, ""), sub))
    return found


def _walk(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], str, argparse.ArgumentParser]]:
    for name, help_, sub in _subcommands(parser):
        yield (*path, name), help_, sub
        yield from _walk(sub, (*path, name))


def top_level_commands() -> list[str]:
    """The names `phalanx --help` lists."""
    return [name for name, _help, _sub in _subcommands(build_cli_parser())]


def _option_row(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    formatter = parser._get_formatter()
    if action.option_strings:
        names = ", ".join(f"`{option}`" for option in action.option_strings)
        if action.nargs != 0:
            metavar = formatter._format_args(action, action.dest.upper())
            names += f" `{metavar}`"
    else:
        names = f"`{formatter._format_args(action, action.dest)}`"
    help_ = formatter._expand_help(action) if action.help else ""
    if action.choices is not None and action.metavar is not None:
        help_ += " (one of: " + ", ".join(f"`{c}`" for c in action.choices) + ")"
    default = action.default
    if action.nargs == 0 or default in (None, argparse.SUPPRESS) or action.required:
        shown = ""
    elif isinstance(default, list | tuple):
        shown = f"`{' '.join(map(str, default))}`" if default else ""
    else:
        shown = f"`{default}`"
    return f"| {_cell(names)} | {_cell(shown)} | {_cell(help_)} |"


def cli_markdown() -> str:
    """The CLI reference page."""
    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"  # argparse wraps usage lines at the terminal's width
    try:
        root = build_cli_parser()
        lines = [
            "# CLI reference",
            "",
            "Generated from the `phalanx` argument parser (`node/cli.py` and the modules that "
            "register each subcommand) at every docs build. The same text, shorter, is in "
            "`phalanx COMMAND --help`. Exit codes: "
            "[operations](../operations.md#exit-codes-of-phalanx-node).",
            "",
            "```text",
            root.format_usage().strip(),
            "```",
            "",
            "| command | what it does |",
            "|---|---|",
        ]
        for name, help_, _sub in _subcommands(root):
            anchor = f"phalanx-{name}"
            lines.append(f"| [`phalanx {name}`](#{anchor}) | {_cell(help_)} |")
        lines += ["", "Global options, given before the command:", ""]
        lines += _option_table(root)
        for path, help_, sub in _walk(root):
            lines += _parser_section(sub, ("phalanx", *path), help_)
        return "\n".join(lines) + "\n"
    finally:
        if previous is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = previous


def _parser_section(
    parser: argparse.ArgumentParser, path: tuple[str, ...], help_: str
) -> list[str]:
    depth = min(len(path), 4)
    lines = [f"{'#' * depth} {' '.join(path)}", ""]
    description = parser.description or help_
    if description:
        lines += [_cell(description), ""]
    lines += ["```text", parser.format_usage().strip(), "```", ""]
    subs = _subcommands(parser)
    if subs:
        lines += ["| subcommand | what it does |", "|---|---|"]
        lines += [f"| `{' '.join((*path, n))}` | {_cell(h)} |" for n, h, _s in subs]
        lines.append("")
    lines += _option_table(parser)
    if parser.epilog:
        lines += [_cell(parser.epilog), ""]
    return lines


def _option_table(parser: argparse.ArgumentParser) -> list[str]:
    rows = [
        _option_row(parser, action)
        for action in parser._actions
        if not isinstance(action, argparse._HelpAction | argparse._SubParsersAction)
        and action.help != argparse.SUPPRESS
    ]
    return ["| argument | default | meaning |", "|---|---|---|", *rows, ""] if rows else []


# --------------------------------------------------------------------------------------------
# Scenario and node files
# --------------------------------------------------------------------------------------------

# What the models say nothing about: one line per key, checked by tests/test_docs_build.py to
# name only keys that exist.
NOTES: dict[str, str] = {
    "name": "the run's name, shown in reports",
    "seed": "the public seed: data split, initial model, training, clustering and Byzantine "
    "choice all derive from it, so every honest node computes the same",
    "nodes": "number of peers",
    "rounds": "training rounds",
    "nodes_per_process": "testbed: nodes hosted on one event loop per process (> 1 packs many "
    "peers onto few cores)",
    "data.dataset": "`mnist5k` and `digits` ship with the install; the others need `data.dir`",
    "data.partition": "how the training set is split over the nodes",
    "data.alpha": 'Dirichlet concentration (`partition = "dirichlet"`; smaller is more skewed)',
    "data.shards_per_node": 'label shards per node (`partition = "shards"`)',
    "data.test_fraction": "held-out fraction used to evaluate every node's model",
    "model.name": "the model every node trains (names below)",
    "training.epochs": "local epochs per round",
    "training.batch_size": "local mini-batch size",
    "training.lr": "local SGD learning rate",
    "training.momentum": "local SGD momentum",
    "training.weight_decay": "local SGD weight decay",
    "clustering.strategy": "how peers are grouped into clusters each round (names below)",
    "clustering.cluster_size": "members per cluster (1 = no clusters)",
    "aggregation.rule": "the robust rule over cluster outputs (names below); `mean` is FedAvg",
    "aggregation.secure": "inside each cluster: plaintext sums, SecAgg pairwise masks, or "
    "Shamir secret-shared sums",
    "timeouts.startup_s": "how long a node waits for all peers to report SERVING",
    "timeouts.rpc_s": "deadline of one outgoing RPC",
    "limits.max_message_bytes": "largest message a node accepts",
    "limits.mailbox_size": "messages an actor's mailbox holds before senders are refused",
    "limits.chunk_bytes": "chunk size of streamed messages",
    "membership.indirect_probes": "members asked to ping a suspect on this node's behalf",
    "faults[].round": "fire once the named nodes have recorded this round",
    "faults[].action": "`kill`/`restart` in any testbed; the network faults need `--hosts netns`",
    "faults[].nodes": "node ids the fault acts on",
    "faults[].delay_ms": "added egress delay (`delay`)",
    "faults[].jitter_ms": "uniform jitter around `delay_ms`",
    "faults[].loss_pct": "egress loss in percent (`loss`)",
    "byzantine[].behaviour": "`NAME[:k=v,...]` (names below)",
    "byzantine[].count": "how many nodes, drawn from the seed",
    "byzantine[].nodes": "node ids made Byzantine, besides `count`",
    "byzantine[].start_round": "first round in which they deviate",
    "byzantine[].omniscient": "poisoning attacks see every honest update, not only the "
    "colluders' own",
    "defense.dpsgd": "train locally with DP-SGD instead of plain SGD",
    "defense.noise_multiplier": "DP-SGD noise multiplier z",
    "defense.max_grad_norm": "DP-SGD per-sample clipping bound C",
    "defense.delta": "the delta at which every eps is reported",
    "defense.accountant": "Opacus accountant for DP-SGD",
    "defense.update": "a defense spec applied to each update before it leaves the node "
    "(grammar below)",
    "defense.distributed": "`none`, or distributed DP inside the MPC sum: "
    "`skellam:sigma=S,clip=C` or `dgauss:sigma=S,clip=C` (`z=Z` for `S = Z C`); needs "
    "`aggregation.secure`",
    "node.id": "this node's name; with TLS its certificate's CN",
    "node.host": "address the gRPC server binds",
    "node.port": "gRPC port (0 = any free port)",
    "node.metrics_port": "Prometheus `/metrics` port (unset = no endpoint)",
    "node.out_dir": "where `nodes/<id>.jsonl`, keys and logs go",
    "peers[].id": "the peer's name",
    "peers[].address": "`HOST:PORT` of its gRPC server",
    "peers[].public_key": "its Ed25519 public key, 64 hex characters (required without TLS)",
}

# The same for the keys of a sweep spec (`experiments/spec.py`).
SWEEP_NOTES: dict[str, str] = {
    "name": "the sweep's name: the default results folder is `experiments-out/NAME`",
    "kind": "`testbed`: every cell a testbed run; `inversion`: every cell a gradient-inversion "
    "experiment",
    "description": "one line for the report",
    "base": "the base scenario: a table, or the path of a scenario file",
    "axes": "dotted scenario key = list of values, or a table of labelled values; the cells are "
    "the Cartesian product of the axes and the seeds",
    "seeds": "every cell runs once per seed",
    "metrics": "what the report tabulates",
    "cell_timeout_s": "limit of one cell in seconds (unset: from the scenario's timeouts)",
    "heatmap": "two axes: the rows and columns of the report's heatmap",
    "engine": "`grpc` or `memory`: the testbed engine of every cell (unset: `grpc`)",
    "quick.overrides": "dotted scenario keys set in every cell",
    "quick.axes": "axes that replace the spec's",
    "quick.seeds": "seeds that replace the spec's",
}


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin is typing.Literal:
        return " | ".join(f'"{a}"' if isinstance(a, str) else repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args)
    if origin is list:
        return f"list of {_type_name(args[0])}" if args else "list"
    if annotation is type(None):
        return "unset"
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        return "table"
    return getattr(annotation, "__name__", str(annotation))


_BOUNDS = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}


def _constraints(info: FieldInfo) -> str:
    parts = []
    metadata = list(info.metadata)
    for arg in typing.get_args(info.annotation):  # bounds inside `Annotated[...] | Literal`
        if typing.get_origin(arg) is typing.Annotated:
            metadata += [m for a in typing.get_args(arg)[1:] for m in getattr(a, "metadata", [a])]
    for item in metadata:
        for attribute, sign in _BOUNDS.items():
            value = getattr(item, attribute, None)
            if value is not None:
                parts.append(f"{sign} {value}")
    return ", ".join(dict.fromkeys(parts))


def _default(info: FieldInfo) -> str:
    if info.is_required():
        return "required"
    value = info.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return ""
    if isinstance(value, str):
        return f'`"{value}"`'
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if value is None:
        return "unset"
    return f"`{value}`"


def _model_of(annotation: Any) -> tuple[type[BaseModel] | None, bool]:
    """The model a field holds, and whether it is a list of them (a TOML array of tables)."""
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        return annotation, False
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):  # `Model | None`
        models = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _model_of(models[0]) if len(models) == 1 else (None, False)
    if typing.get_origin(annotation) is list:
        (item,) = typing.get_args(annotation)
        if inspect.isclass(item) and issubclass(item, BaseModel):
            return item, True
    return None, False


def _sections(
    model: type[BaseModel], prefix: str, table: str
) -> Iterator[tuple[str, str, type[BaseModel]]]:
    """(key prefix, TOML table header, model) of `model` and of every table inside it."""
    yield prefix, table, model
    for name, info in model.model_fields.items():
        inner, is_list = _model_of(info.annotation)
        if inner is None:
            continue
        key = f"{prefix}{name}{'[]' if is_list else ''}."
        header = f"[[{table.strip('[]')}.{name}]]" if is_list else f"[{table.strip('[]')}.{name}]"
        if not table:
            header = f"[[{name}]]" if is_list else f"[{name}]"
        yield from _sections(inner, key, header)


def scenario_fields() -> list[str]:
    """Every key of a scenario, dotted (`aggregation.rule`, `byzantine[].behaviour`)."""
    scenario = _module("node.config").Scenario
    return [
        f"{prefix}{name}"
        for prefix, _header, model in _sections(scenario, "", "")
        for name, info in model.model_fields.items()
        if _model_of(info.annotation)[0] is None
    ]


def node_file_fields() -> list[str]:
    """Every key of a node file outside its `[scenario]` table."""
    config = _module("node.config")
    keys = []
    for prefix, _header, model in _sections(config.NodeConfig, "", ""):
        if model is config.Scenario or prefix.startswith("scenario."):
            continue
        keys += [
            f"{prefix}{n}"
            for n, i in model.model_fields.items()
            if _model_of(i.annotation)[0] is None
        ]
    return keys


def _table(
    model: type[BaseModel], prefix: str, header: str, notes: dict[str, str] = NOTES
) -> list[str]:
    lines = [f"## `{header}`" if header else "## Top level", ""]
    if model.__doc__ and model.__doc__ is not BaseModel.__doc__:
        lines += [_rst_to_md(model.__doc__), ""]
    lines += ["| key | type | default | bounds | meaning |", "|---|---|---|---|---|"]
    for name, info in model.model_fields.items():
        if _model_of(info.annotation)[0] is not None:
            continue
        key = f"{prefix}{name}"
        meaning = info.description or notes.get(key, "")
        lines.append(
            f"| `{key}` | {_cell(_type_name(info.annotation))} | {_cell(_default(info))} | "
            f"{_cell(_constraints(info))} | {_cell(meaning)} |"
        )
    return [*lines, ""]


def _names() -> list[str]:
    behaviours = _module("adversary.behaviours").known_behaviours()
    aggregation = _module("learning.aggregation")
    strategies = _module("clustering.strategies").STRATEGIES
    models = _module("learning.models").MODELS
    datasets = _module("learning.data").DATASETS
    defenses = _module("defense.registry").DEFENSES

    def names(values: Any) -> str:
        return ", ".join(f"`{v}`" for v in values)

    return [
        "## Names the keys accept",
        "",
        "Read from the registries at build time; a name outside these lists is refused when the "
        "scenario is read, with a one-line error naming the key.",
        "",
        "| key | names |",
        "|---|---|",
        f"| `data.dataset` | {names(datasets)} |",
        f"| `model.name` | {names(models)} |",
        "| `clustering.strategy` | "
        + names(sorted(set(strategies) - {"locality", "pinned"}))
        + " (`locality` and `pinned` serve `phalanx analyze` only) |",
        f"| `aggregation.rule` | {names(aggregation.AGGREGATION_RULES)} |",
        f"| `aggregation.pre` | {names(aggregation.PRE_AGGREGATORS)} (each `NAME[:k=v,...]`) |",
        f"| `byzantine[].behaviour` | {names(behaviours)} (each `NAME[:k=v,...]`) |",
        f"| `defense.update` | {names(defenses)} (each `NAME:k=v,...`, chained with `+`) |",
        "",
    ]


def _sweep_spec() -> list[str]:
    spec = _module("experiments.spec")
    lines = [
        "# Sweep specs",
        "",
        "`phalanx experiment run SPEC.toml` reads a sweep spec (`experiments/spec.py`); "
        "examples are in `experiments/specs/`. Every cell's scenario is validated against the "
        "tables above before the first cell runs.",
        "",
        '`extends = "parent.toml"` (a path relative to the spec) derives a spec from another: '
        "it takes the parent's keys and replaces those it gives. `[base]` merges key by key, "
        "nested tables too; an axis it names replaces the parent's axis of that name; a "
        "`[quick]` table it gives replaces the parent's whole. Chains are allowed.",
        "",
    ]
    for prefix, header, model in _sections(spec.SweepSpec, "", ""):
        lines += _table(model, prefix, header, SWEEP_NOTES)
    metrics = ", ".join(f"`{m}`" for m in spec.KNOWN_METRICS)
    return [*lines, f"Metrics: {metrics}.", ""]


def scenario_markdown() -> str:
    """The scenario and node-file reference page."""
    config = _module("node.config")
    lines = [
        "# Scenario reference",
        "",
        "Generated from the pydantic models of `node/config.py` at every docs build. A scenario "
        "is a TOML file; every table below is optional, every key has the default shown. An "
        "unknown key or a value out of bounds is refused before anything starts, with one line "
        "naming the key (exit code 2). The default scenario is `node/scenarios/default.toml`; "
        "`phalanx testbed run --help` lists the flags that override single keys.",
        "",
    ]
    for prefix, header, model in _sections(config.Scenario, "", ""):
        lines += _table(model, prefix, header)
    lines += _names()
    lines += _sweep_spec()
    lines += [
        "# Node files",
        "",
        "`phalanx node --config FILE` reads a node file: who this node is (`[node]`), its peers "
        "(`[[peers]]`) and the scenario (`[scenario]`, the tables above under `scenario.`). "
        "`phalanx testbed run` writes examples under `OUT/config/`.",
        "",
    ]
    if config.NodeConfig.__doc__:
        lines += [_rst_to_md(config.NodeConfig.__doc__), ""]
    for prefix, header, model in _sections(config.NodeConfig, "", ""):
        if model is config.NodeConfig or model is config.Scenario or prefix.startswith("scenario."):
            continue
        lines += _table(model, prefix, header)
    return "\n".join(lines) + "\n"


PAGES = {CLI_PAGE: cli_markdown, SCENARIO_PAGE: scenario_markdown}


# --------------------------------------------------------------------------------------------
# mkdocs hook
# --------------------------------------------------------------------------------------------


def on_files(files: Any, config: Any) -> Any:
    """Add the generated pages to the build (mkdocs >= 1.6)."""
    from mkdocs.structure.files import File

    for path, render in PAGES.items():
        files.append(File.generated(config, path, content=render()))
    return files


def main(argv: list[str]) -> int:
    out = Path(argv[0] if argv else "site-reference")
    for path, render in PAGES.items():
        target = out / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(render())
        print(target)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
