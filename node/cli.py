"""The `phalanx` command: `node`, `health`, `testbed`, and the subcommands the other rooms register.

Every subcommand returns an exit code; bad input prints one line naming the problem (no
traceback) and exits 2.

Parsing is cheap: the parser imports only the module of the command being run (`COMMANDS`,
`BENCHES`), and those modules import torch, grpc and the rest inside their handlers, so
``phalanx --help`` and every ``phalanx COMMAND --help`` answer without loading them.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import math
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, NoReturn

if TYPE_CHECKING:
    from phalanx.node.config import NodeConfig

EXIT_CONFIG = 2  # bad input (the same code as `node.runner.EXIT_CONFIG`)
EXIT_UNHEALTHY = 1

# Subcommand -> (module that registers it through `register(subparsers)`, its one-line help).
# The help is shown by ``phalanx --help`` without importing the module; a test checks that each
# module registers exactly these names with these helps.
COMMANDS: dict[str, tuple[str, str]] = {
    "node": ("phalanx.node.cli", "run a peer daemon (one or more nodes in this process)"),
    "health": ("phalanx.node.cli", "ask a node's gRPC health service whether it is serving"),
    "testbed": ("phalanx.node.testbed", "local testbeds of real node processes"),
    "simulate": (
        "phalanx.node.testbed",
        "run a scenario with every peer in this process (memory engine)",
    ),
    "analyze": ("phalanx.clustering.cli", "analyses of fault tolerance"),
    "certs": ("phalanx.clustering.certs", "create a CA and per-node certificates for mutual TLS"),
    "attack": ("phalanx.adversary.inversion.cli", "privacy attacks on observed updates"),
    "deploy": (
        "phalanx.deploy.compose",
        "compose and Kubernetes files, Prometheus/Grafana, netns tools",
    ),
    "experiment": (
        "phalanx.experiments.cli",
        "declarative sweeps over real testbeds, stored and reported",
    ),
    "bench": ("phalanx.node.cli", "benchmarks that print ratios measured in one run"),
}
# `phalanx bench NAME` -> (module with `register_bench(bench_subparsers)`, its help).
BENCHES: dict[str, tuple[str, str]] = {
    "rounds": ("phalanx.bench.bench_rounds", "round time: train vs communicate vs aggregate"),
    "scale": ("phalanx.bench.bench_rounds", "many nodes per process: memory per node"),
    "simulate": (
        "phalanx.bench.bench_simulate",
        "memory engine at scale, and its speed-up over the gRPC testbed",
    ),
    "mpc": ("phalanx.bench.bench_mpc", "benchmark secure aggregation inside one cluster"),
    "aggregation": (
        "phalanx.bench.bench_aggregation",
        "time each robust aggregation rule as a ratio to the mean",
    ),
    "inversion": ("phalanx.bench.bench_inversion", "gradient-inversion attack benchmark"),
    "inversion-page": (
        "phalanx.bench.inversion_page",
        "every run of the inversion results page, and its tables redrawn",
    ),
    "dpsgd": (
        "phalanx.bench.bench_dpsgd",
        "DP-SGD throughput against plain training, as a ratio in one run",
    ),
    "privacy": ("phalanx.bench.bench_privacy", "privacy–utility–robustness map"),
    "signing": (
        "phalanx.bench.bench_signing",
        "round time with every message signed, over the same run unsigned",
    ),
    "flower": (
        "phalanx.bench.bench_flower",
        "Phalanx secure rounds beside Flower SecAgg+, interleaved, same workload",
    ),
    "forward-schedule": (
        "phalanx.bench.forward_schedule",
        "forward-noising schedules at matched noise or matched eps: accuracy and iDLG",
    ),
}


class CliError(Exception):
    """A user-facing error: printed as one line, exit code 2."""


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (``PROG: error: MESSAGE``), exit code 2.

    Subparsers inherit the class, so every subcommand reports bad flags the same way.
    """

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_CONFIG, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def int_in(low: int | None = None, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer in [low, high] (either bound optional)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        _check_range(value, low, high, text)
        return value

    parse.__name__ = "integer"
    return parse


def float_in(
    low: float | None = None, high: float | None = None, *, above: float | None = None
) -> Callable[[str], float]:
    """An argparse type: a finite number in [low, high], or strictly greater than `above`."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
        if above is not None and value <= above:
            raise argparse.ArgumentTypeError(f"must be > {above:g}, got {text}")
        _check_range(value, low, high, text)
        return value

    parse.__name__ = "number"
    return parse


def _check_range(value: float, low: float | None, high: float | None, text: str) -> None:
    if low is not None and high is not None and not low <= value <= high:
        raise argparse.ArgumentTypeError(f"must be in {low:g}..{high:g}, got {text}")
    if low is not None and value < low:
        raise argparse.ArgumentTypeError(f"must be >= {low:g}, got {text}")
    if high is not None and value > high:
        raise argparse.ArgumentTypeError(f"must be <= {high:g}, got {text}")


PORT = int_in(0, 65535)


class Peer(NamedTuple):
    """A ``--peer ID=HOST:PORT[#PUBLIC_KEY]`` (validated into a `node.config.PeerConfig` by the
    handler; the key is the peer's Ed25519 public key in hex, needed without TLS)."""

    id: str
    address: str
    public_key: str | None = None


def _peer(text: str) -> Peer:
    node_id, sep, rest = text.partition("=")
    address, _, key = rest.partition("#")
    if not sep or not node_id or ":" not in address:
        raise argparse.ArgumentTypeError(f"--peer {text!r}: expected ID=HOST:PORT[#PUBLIC_KEY]")
    return Peer(node_id, address, key or None)


# Node flags named after their `[node]` keys, for error messages.
_NODE_FLAGS = {"out_dir": "--out"}


def _node_configs(args: argparse.Namespace) -> list[NodeConfig]:
    from phalanx.node.config import (
        ConfigError,
        Scenario,
        load_node_config,
        load_scenario,
        parse_node_config,
        with_overrides,
    )

    if args.config:
        configs = [load_node_config(path) for path in args.config]
        if args.id or args.peer:
            raise ConfigError("give either --config files or --id/--peer flags, not both")
        return configs
    if not args.id:
        raise ConfigError("node: give --config FILE or at least --id and --port")
    scenario = load_scenario(args.scenario) if args.scenario else Scenario()
    scenario = with_overrides(scenario, {"rounds": args.rounds, "seed": args.seed})
    settings = {
        "insecure": args.insecure,
        "tls_ca": args.tls_ca,
        "tls_cert": args.tls_cert,
        "tls_key": args.tls_key,
        "id": args.id,
        "host": args.host,
        "port": args.port,
        "metrics_port": args.metrics_port,
        "out_dir": args.out,
    }
    peers = [{k: v for k, v in peer._asdict().items() if v is not None} for peer in args.peer or []]
    try:
        return [parse_node_config({"node": settings, "peers": peers, "scenario": scenario})]
    except ConfigError as error:
        field, sep, message = str(error).partition(": ")
        if sep and field.startswith("node."):
            key = field.removeprefix("node.")
            field = _NODE_FLAGS.get(key, "--" + key.replace("_", "-"))
        raise ConfigError(f"{field}{sep}{message}") from None


def _cmd_node(args: argparse.Namespace) -> int:
    from phalanx.node.config import ConfigError

    try:
        configs = _node_configs(args)
    except ConfigError as error:
        print(f"phalanx node: {error}", file=sys.stderr)
        return EXIT_CONFIG
    import torch

    from phalanx.node.runner import run_nodes

    torch.set_num_threads(args.torch_threads)
    return run_nodes(configs, linger_s=args.linger)


def _add_node_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "node",
        help=COMMANDS["node"][1],
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
    parser.add_argument("--port", type=PORT, default=0, help="gRPC port (0 = any free port)")
    parser.add_argument(
        "--metrics-port", type=PORT, default=None, help="Prometheus port (default: no metrics)"
    )
    parser.add_argument(
        "--peer",
        action="append",
        type=_peer,
        metavar="ID=HOST:PORT[#KEY]",
        help="a peer (repeatable; the full list is the membership allow-list); KEY is its "
        "Ed25519 public key in hex, required for every peer with --insecure",
    )
    parser.add_argument(
        "--insecure", action="store_true", help="plaintext gRPC: explicit opt-out of mutual TLS"
    )
    parser.add_argument("--tls-ca", help="CA certificate from `phalanx certs`")
    parser.add_argument("--tls-cert", help="this node's certificate")
    parser.add_argument("--tls-key", help="this node's private key")
    parser.add_argument("--scenario", type=Path, help="scenario TOML (default: built-in)")
    parser.add_argument("--rounds", type=int_in(1), help="override the scenario's rounds")
    parser.add_argument("--seed", type=int, help="override the scenario's seed")
    parser.add_argument("--out", default="phalanx-out", help="output folder (default phalanx-out)")
    parser.add_argument(
        "--torch-threads",
        type=int_in(1, 1024),
        default=1,
        help="intra-op threads for torch (default 1: many nodes share the CPU)",
    )
    parser.add_argument(
        "--linger",
        type=float_in(0),
        default=1.0,
        help="seconds to keep serving after the last round (default 1)",
    )
    parser.set_defaults(func=_cmd_node)


def _health_target(args: argparse.Namespace) -> tuple[str, dict[str, str | None], bool]:
    """(address, TLS files, insecure) from the flags, the node file and the environment."""
    import tomllib

    node: dict[str, Any] = {}
    if args.config is not None:
        try:
            node = tomllib.loads(args.config.read_text()).get("node", {})
        except (OSError, tomllib.TOMLDecodeError) as error:
            raise CliError(f"--config {args.config}: {error}") from None
    host = str(node.get("host", "127.0.0.1"))
    host = "127.0.0.1" if host in ("", "0.0.0.0", "::") else host
    address = args.address or f"{host}:{node.get('port', 7000)}"
    files = {
        name: getattr(args, name) or node.get(name) or os.environ.get(f"PHALANX_{name.upper()}")
        for name in ("tls_ca", "tls_cert", "tls_key")
    }
    insecure = bool(args.insecure or node.get("insecure", False) or not any(files.values()))
    return address, files, insecure


def _cmd_health(args: argparse.Namespace) -> int:
    address, files, insecure = _health_target(args)
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    if insecure:
        channel = grpc.insecure_channel(address)
    else:
        missing = [name for name, path in files.items() if not path]
        if missing:
            raise CliError(f"mutual TLS needs {', '.join(missing)}, or --insecure")
        try:
            ca, cert, key = (Path(str(path)).read_bytes() for path in files.values())
        except OSError as error:
            raise CliError(str(error)) from None
        credentials = grpc.ssl_channel_credentials(ca, key, cert)
        options = [("grpc.ssl_target_name_override", args.server_name)]
        channel = grpc.secure_channel(address, credentials, options=options)
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(
                health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout
            )
        except grpc.RpcError as error:
            print(f"phalanx health: {address}: {error.code().name}", file=sys.stderr)
            return EXIT_UNHEALTHY
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    print(f"{address}: {status}")
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else EXIT_UNHEALTHY


def _add_health_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "health",
        help=COMMANDS["health"][1],
        description="Exit 0 when the node's grpc.health.v1 service answers SERVING, 1 when it "
        "does not answer or is not serving (the container image's HEALTHCHECK). Mutual TLS "
        "uses the node's own certificate: --tls-* flags, the node file, or PHALANX_TLS_CA, "
        "PHALANX_TLS_CERT and PHALANX_TLS_KEY; without any, plaintext.",
    )
    parser.add_argument(
        "--address",
        metavar="HOST:PORT",
        help="the node's gRPC address (default: from --config, else 127.0.0.1:7000)",
    )
    parser.add_argument(
        "--config", type=Path, metavar="NODE.toml", help="read port and TLS from this node file"
    )
    parser.add_argument("--insecure", action="store_true", help="plaintext gRPC")
    parser.add_argument("--tls-ca", help="CA certificate of the node")
    parser.add_argument("--tls-cert", help="client certificate (the node's own will do)")
    parser.add_argument("--tls-key", help="client private key")
    parser.add_argument(
        "--server-name",
        default="localhost",
        help="name the node's certificate is checked against (default localhost)",
    )
    parser.add_argument(
        "--service", default="", help="health service name (default: the whole server)"
    )
    parser.add_argument(
        "--timeout", type=float_in(above=0), default=3.0, help="seconds to wait (default 3)"
    )
    parser.set_defaults(func=_cmd_health)


def _optional_module(name: str) -> Any:
    """Import a subcommand module; None only when that module itself is absent."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as error:
        if error.name is not None and name.startswith(error.name):
            return None
        raise


def _selection(argv: Sequence[str]) -> tuple[str | None, str | None]:
    """The command and bench named on the command line, found before parsing."""
    words: list[str] = []
    skip = False
    for word in argv:
        if skip:
            skip = False
        elif word == "--log-level":
            skip = True
        elif not word.startswith("-"):
            words.append(word)
            if len(words) == 2:
                break
    command = words[0] if words else None
    bench = words[1] if command == "bench" and len(words) > 1 else None
    return command, bench


def _register(
    subparsers: argparse._SubParsersAction,  # type: ignore[type-arg]
    table: dict[str, tuple[str, str]],
    hook: str,
    load: Callable[[str, str], bool],
) -> None:
    """Register every entry of `table`: in full when ``load(name, module)``, else a stub that
    only lists the name and help (each module is imported once, for all its names)."""
    loaded: set[str] = set()
    for name, (module_name, help_) in table.items():
        if module_name in loaded:
            continue
        module = _optional_module(module_name) if load(name, module_name) else None
        if module is not None:
            getattr(module, hook)(subparsers)
            loaded.add(module_name)
        elif name not in subparsers.choices:
            subparsers.add_parser(name, help=help_, add_help=False)


def _add_bench_parser(
    subparsers: argparse._SubParsersAction,  # type: ignore[type-arg]
    selected: str | None,
    load_all: bool,
) -> None:
    bench = subparsers.add_parser("bench", help=COMMANDS["bench"][1])
    bench_subparsers = bench.add_subparsers(dest="bench", metavar="BENCH")
    wanted = BENCHES[selected][0] if selected in BENCHES else None
    _register(bench_subparsers, BENCHES, "register_bench", lambda _n, m: load_all or m == wanted)

    def bench_help(_args: argparse.Namespace) -> int:
        bench.print_help()
        return EXIT_CONFIG

    bench.set_defaults(func=bench_help)


def build_parser(argv: Sequence[str] | None = None, *, load_all: bool = True) -> Parser:
    """The `phalanx` parser. With ``load_all=False`` only the command (and bench) that `argv`
    names is registered in full; the others are listed with their help only."""
    command, bench = _selection(argv or []) if not load_all else (None, None)
    parser = Parser(
        prog="phalanx",
        description="Decentralized federated learning that stays private and keeps learning "
        "when some peers lie.",
        allow_abbrev=False,
    )
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_node_parser(subparsers)
    _add_health_parser(subparsers)
    wanted = COMMANDS[command][0] if command in COMMANDS else None
    external = {k: v for k, v in COMMANDS.items() if v[0] != "phalanx.node.cli"}
    _register(subparsers, external, "register", lambda _n, m: load_all or m == wanted)
    _add_bench_parser(subparsers, bench, load_all)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(arguments, load_all=False)
    args = parser.parse_args(arguments)
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
    except KeyboardInterrupt:
        return 130
    except Exception as error:
        if not _is_user_error(error):
            raise
        print(f"phalanx {args.command}: {error}", file=sys.stderr)
        return EXIT_CONFIG


def _is_user_error(error: Exception) -> bool:
    """A `CliError`, or a `node.config.ConfigError` (only a loaded node.config raises one, and
    importing it here would load torch for every command)."""
    config = sys.modules.get("phalanx.node.config")
    return isinstance(error, CliError) or (
        config is not None and isinstance(error, config.ConfigError)
    )


if __name__ == "__main__":
    sys.exit(main())
