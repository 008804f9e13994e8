"""The `phalanx` command: `node`, `testbed`, and the subcommands the other rooms register.

Every subcommand returns an exit code; bad input prints one line naming the problem (no
traceback) and exits 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from node.config import (
    ConfigError,
    NodeConfig,
    NodeSettings,
    PeerConfig,
    Scenario,
    load_node_config,
    load_scenario,
    with_overrides,
)
from node.runner import EXIT_CONFIG, run_nodes

# Modules that add subcommands through `register(subparsers)`.
_REGISTERED = (
    "node.testbed",
    "clustering.cli",
    "clustering.certs",
    "adversary.inversion.cli",
    "deploy.compose",
    "experiments.cli",
)
# Modules that add `phalanx bench NAME` through `register_bench(subparsers)`.
_BENCHES = (
    "bench.bench_rounds",
    "bench.bench_mpc",
    "bench.bench_aggregation",
    "bench.bench_inversion",
    "bench.bench_dpsgd",
    "bench.bench_privacy",
    "bench.forward_schedule",
)


class CliError(Exception):
    """A user-facing error: printed as one line, exit code 2."""


def _peer(text: str) -> PeerConfig:
    node_id, sep, address = text.partition("=")
    if not sep or not node_id or ":" not in address:
        raise argparse.ArgumentTypeError(f"--peer {text!r}: expected ID=HOST:PORT")
    return PeerConfig(id=node_id, address=address)


def _node_configs(args: argparse.Namespace) -> list[NodeConfig]:
    if args.config:
        configs = [load_node_config(path) for path in args.config]
        if args.id or args.peer:
            raise ConfigError("give either --config files or --id/--peer flags, not both")
        return configs
    if not args.id:
        raise ConfigError("node: give --config FILE or at least --id and --port")
    scenario = load_scenario(args.scenario) if args.scenario else Scenario()
    scenario = with_overrides(scenario, {"rounds": args.rounds, "seed": args.seed})
    settings = NodeSettings(
        insecure=args.insecure,
        tls_ca=args.tls_ca,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        id=args.id,
        host=args.host,
        port=args.port,
        metrics_port=args.metrics_port,
        out_dir=args.out,
    )
    return [NodeConfig(node=settings, peers=list(args.peer or []), scenario=scenario)]


def _cmd_node(args: argparse.Namespace) -> int:
    try:
        configs = _node_configs(args)
    except ConfigError as error:
        print(f"phalanx node: {error}", file=sys.stderr)
        return EXIT_CONFIG
    import torch

    torch.set_num_threads(args.torch_threads)
    return run_nodes(configs, linger_s=args.linger)


def _add_node_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "node",
        help="run a peer daemon (one or more nodes in this process)",
        description="Run Phalanx peer daemons. Several --config files run several nodes on one "
        "event loop; otherwise the flags describe one node.",
    )
    parser.add_argument(
        "--config",
        action="append",
        type=Path,
        metavar="NODE.toml",
        help="node file with [node], [[peers]] and [scenario]; repeatable",
    )
    parser.add_argument("--id", help="node id")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="gRPC port (0 = any free port)")
    parser.add_argument("--metrics-port", type=int, default=None, help="Prometheus port")
    parser.add_argument(
        "--peer",
        action="append",
        type=_peer,
        metavar="ID=HOST:PORT",
        help="a peer (repeatable); static membership",
    )
    parser.add_argument(
        "--insecure", action="store_true", help="plaintext gRPC: explicit opt-out of mutual TLS"
    )
    parser.add_argument("--tls-ca", help="CA certificate from `phalanx certs`")
    parser.add_argument("--tls-cert", help="this node's certificate")
    parser.add_argument("--tls-key", help="this node's private key")
    parser.add_argument("--scenario", type=Path, help="scenario TOML (default: built-in)")
    parser.add_argument("--rounds", type=int, help="override the scenario's rounds")
    parser.add_argument("--seed", type=int, help="override the scenario's seed")
    parser.add_argument("--out", default="phalanx-out", help="output folder (default phalanx-out)")
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=1,
        help="intra-op threads for torch (default 1: many nodes share the CPU)",
    )
    parser.add_argument(
        "--linger",
        type=float,
        default=1.0,
        help="seconds to keep serving after the last round (default 1)",
    )
    parser.set_defaults(func=_cmd_node)


def _optional_module(name: str) -> ModuleType | None:
    """Import a subcommand module; None only when that module itself is absent."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as error:
        if error.name is not None and name.startswith(error.name):
            return None
        raise


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="phalanx",
        description="Decentralized federated learning that stays private and keeps learning "
        "when some peers lie.",
    )
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_node_parser(subparsers)
    for module_name in _REGISTERED:
        module = _optional_module(module_name)
        if module is not None:
            module.register(subparsers)
    bench = subparsers.add_parser("bench", help="benchmarks that print ratios measured in one run")
    bench_subparsers = bench.add_subparsers(dest="bench", metavar="BENCH")
    for module_name in _BENCHES:
        module = _optional_module(module_name)
        if module is not None:
            module.register_bench(bench_subparsers)

    def bench_help(_args: argparse.Namespace) -> int:
        bench.print_help()
        return EXIT_CONFIG

    bench.set_defaults(func=bench_help)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )
    if not hasattr(args, "func"):
        parser.print_help()
        return EXIT_CONFIG
    try:
        return int(args.func(args))
    except (ConfigError, CliError) as error:
        print(f"phalanx {args.command}: {error}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
