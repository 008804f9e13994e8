"""`phalanx deploy ...`: the docker-compose testbed generator and Prometheus helpers.

``phalanx deploy compose --nodes N [--byzantine I=BEHAVIOUR ...] [--out DIR] [--tls]`` writes::

    DIR/compose.yml                       N node services, Prometheus, Grafana
    DIR/image/                            from an installed package: the image's build context
    DIR/compose.tls.yml                   overlay: mutual-TLS certificates as compose secrets
    DIR/config/node-<i>.toml              one node file per service
    DIR/prometheus/prometheus.yml         scrapes every node's metrics port
    DIR/grafana/provisioning/...          Prometheus datasource + dashboard provider
    DIR/grafana/dashboards/phalanx-dashboard.json
    DIR/certs/                            with --tls: CA and node-<i> certificates
    DIR/keys/node-<i>.pem                 each node's Ed25519 identity key (kept if present)

Services are called ``node-<i>`` so that their DNS names match the certificates written by
`clustering.certs.write_certificates`. Output is deterministic: the same arguments give the same
bytes, key material aside (certificates and identity keys are fresh in a new folder, kept when
the same folder is written again).

The node image is built from ``deploy/Dockerfile``. Run from a source checkout, the build context
is that checkout; run from an installed package, it is ``DIR/image/``: the installed packages
(``deploy/Dockerfile`` among their package data) and a ``pyproject.toml`` with the installed
distribution's name, version, dependencies and entry points, so ``docker compose up --build``
builds the same image from either. ``--context`` names another source tree.

``phalanx deploy prometheus-config OUT`` writes a scrape config for a running testbed from its
``OUT/config/*.toml``; ``phalanx deploy netns-clean PREFIX`` removes a netns run's leftovers.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # node.config pulls in torch: imported where used, so `--help` stays fast
    from phalanx.node.config import NodeConfig, Scenario

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent
DOCKERFILE = "deploy/Dockerfile"  # inside the build context, a checkout's or DIR/image/
GRAFANA_DIR = PACKAGE_DIR / "grafana"
GRPC_PORT = 7000
METRICS_PORT = 9100
PROMETHEUS_IMAGE = "prom/prometheus:v2.53.0"
GRAFANA_IMAGE = "grafana/grafana:11.1.0"
NODE_IMAGE = "phalanx:0.1.0"
DATASOURCE_UID = "phalanx-prometheus"
DASHBOARDS_DIR = "/var/lib/grafana/dashboards"


@dataclass(frozen=True)
class ComposeSpec:
    """What to generate: node count, Byzantine behaviours by node index, TLS, scenario."""

    nodes: int
    scenario: Scenario
    byzantine: dict[int, str] = field(default_factory=dict)
    tls: bool = False
    build_context: str = "./image"

    def __post_init__(self) -> None:
        if not 2 <= self.nodes <= 256:
            raise ValueError(f"nodes must be in 2..256, got {self.nodes}")
        if self.scenario.nodes != self.nodes:
            raise ValueError(
                f"scenario.nodes ({self.scenario.nodes}) differs from nodes ({self.nodes})"
            )
        bad = sorted(i for i in self.byzantine if not 0 <= i < self.nodes)
        if bad:
            raise ValueError(f"--byzantine node index {bad[0]} is outside 0..{self.nodes - 1}")


def service_name(index: int) -> str:
    """``node-<i>``: the compose service, its DNS name, node id and certificate stem."""
    return f"node-{index}"


def identity_secret(index: int) -> str:
    """The compose secret holding node `index`'s Ed25519 identity key (``keys/node-<i>.pem``)."""
    return f"{service_name(index)}-identity"


def effective_scenario(spec: ComposeSpec) -> Scenario:
    """The scenario every node file carries: `spec.scenario` with one ``[[byzantine]]`` entry
    per ``--byzantine INDEX=BEHAVIOUR`` (naming ``node-<INDEX>``), so the named nodes do
    deviate; validated again as a whole (`ConfigError` names what the additions break)."""
    from phalanx.node.config import parse_scenario

    if not spec.byzantine:
        return spec.scenario
    data = spec.scenario.model_dump()
    data["byzantine"] = [
        *data["byzantine"],
        *(
            {"behaviour": behaviour, "nodes": [service_name(index)]}
            for index, behaviour in sorted(spec.byzantine.items())
        ),
    ]
    return parse_scenario(data)


def behaviour_labels(spec: ComposeSpec) -> dict[int, str]:
    """Node index -> behaviour, resolved the way the nodes resolve them
    (`node.config.byzantine_nodes`), for the compose labels and Prometheus' ``byzantine``."""
    from phalanx.node.config import byzantine_nodes

    ids = [service_name(i) for i in range(spec.nodes)]
    chosen = byzantine_nodes(effective_scenario(spec), ids)
    return {int(node[len("node-") :]): entry.behaviour for node, entry in chosen.items()}


def node_config(spec: ComposeSpec, index: int, public_keys: Sequence[str]) -> NodeConfig:
    """The node file of service `index`: binds 0.0.0.0, peers addressed by service name, each
    with its Ed25519 public key (every message is signed; without TLS the keys are what binds a
    message to its sender), its own identity key mounted as a secret."""
    from phalanx.node.config import NodeConfig, NodeSettings, PeerConfig

    peers = [
        PeerConfig(
            id=service_name(i), address=f"{service_name(i)}:{GRPC_PORT}", public_key=public_keys[i]
        )
        for i in range(spec.nodes)
    ]
    return NodeConfig(
        node=NodeSettings(
            id=service_name(index),
            host="0.0.0.0",
            port=GRPC_PORT,
            metrics_port=METRICS_PORT,
            out_dir="/data",
            insecure=not spec.tls,
            identity_key=f"/run/secrets/{identity_secret(index)}",
        ),
        peers=peers,
        scenario=effective_scenario(spec),
    )


def compose_document(spec: ComposeSpec) -> dict[str, Any]:
    """``compose.yml``: N nodes from ``deploy/Dockerfile``, Prometheus and Grafana."""
    services: dict[str, Any] = {}
    behaviours = behaviour_labels(spec)
    for index in range(spec.nodes):
        name = service_name(index)
        services[name] = {
            "build": {"context": spec.build_context, "dockerfile": DOCKERFILE},
            "image": NODE_IMAGE,
            "hostname": name,
            "command": ["node", "--config", "/etc/phalanx/node.toml"],
            "volumes": [f"./config/{name}.toml:/etc/phalanx/node.toml:ro", f"{name}-data:/data"],
            "labels": {
                "org.phalanx.node": name,
                "org.phalanx.byzantine": behaviours.get(index, "none"),
            },
            "secrets": [identity_secret(index)],
            "networks": ["phalanx"],
            "restart": "on-failure",
        }
    services["prometheus"] = {
        "image": PROMETHEUS_IMAGE,
        "command": [
            "--config.file=/etc/prometheus/prometheus.yml",
            "--storage.tsdb.path=/prometheus",
        ],
        "volumes": ["./prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro"],
        "ports": ["127.0.0.1:9090:9090"],
        "networks": ["phalanx"],
        "depends_on": [service_name(i) for i in range(spec.nodes)],
    }
    services["grafana"] = {
        "image": GRAFANA_IMAGE,
        "environment": {
            "GF_AUTH_ANONYMOUS_ENABLED": "true",
            "GF_AUTH_ANONYMOUS_ORG_ROLE": "Viewer",
            "GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH": f"{DASHBOARDS_DIR}/phalanx-dashboard.json",
        },
        "volumes": [
            "./grafana/provisioning:/etc/grafana/provisioning:ro",
            "./grafana/dashboards:/var/lib/grafana/dashboards:ro",
        ],
        "ports": ["127.0.0.1:3000:3000"],
        "networks": ["phalanx"],
        "depends_on": ["prometheus"],
    }
    return {
        "version": "3.8",
        "services": services,
        "networks": {"phalanx": {"driver": "bridge"}},
        "volumes": {f"{service_name(i)}-data": {} for i in range(spec.nodes)},
        "secrets": {
            identity_secret(i): {"file": f"./keys/{service_name(i)}.pem"} for i in range(spec.nodes)
        },
    }


def tls_overlay(spec: ComposeSpec) -> dict[str, Any]:
    """``compose.tls.yml``: CA and per-node key/certificate as secrets under /run/secrets."""
    secrets: dict[str, Any] = {"phalanx-ca": {"file": "./certs/ca.pem"}}
    services: dict[str, Any] = {}
    for index in range(spec.nodes):
        name = service_name(index)
        secrets[f"{name}-cert"] = {"file": f"./certs/{name}.pem"}
        secrets[f"{name}-key"] = {"file": f"./certs/{name}.key"}
        services[name] = {
            "secrets": ["phalanx-ca", f"{name}-cert", f"{name}-key"],
            "environment": {
                "PHALANX_TLS_CA": "/run/secrets/phalanx-ca",
                "PHALANX_TLS_CERT": f"/run/secrets/{name}-cert",
                "PHALANX_TLS_KEY": f"/run/secrets/{name}-key",
            },
        }
    return {"version": "3.8", "services": services, "secrets": secrets}


def grafana_datasource() -> dict[str, Any]:
    """The Prometheus datasource (``deploy/grafana/provisioning/datasources/prometheus.yml``)."""
    return _provisioning("datasources/prometheus.yml")


def grafana_dashboard_provider() -> dict[str, Any]:
    """The dashboard provider (``deploy/grafana/provisioning/dashboards/phalanx.yml``)."""
    return _provisioning("dashboards/phalanx.yml")


def _provisioning(relative: str) -> dict[str, Any]:
    import yaml

    data: dict[str, Any] = yaml.safe_load((GRAFANA_DIR / "provisioning" / relative).read_text())
    return data


def _yaml(data: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)


def write_compose(spec: ComposeSpec, out_dir: str | Path) -> list[Path]:
    """Write every file of the compose testbed under `out_dir`; returns the paths written."""
    import tomli_w

    from phalanx.deploy.prometheus import DASHBOARD_PATH, ScrapeTarget, scrape_config

    out = Path(out_dir)
    behaviours = behaviour_labels(spec)
    files: dict[str, str] = {
        "compose.yml": _yaml(compose_document(spec)),
        "compose.tls.yml": _yaml(tls_overlay(spec)),
        "prometheus/prometheus.yml": _yaml(
            scrape_config(
                [
                    ScrapeTarget(
                        service_name(i),
                        f"{service_name(i)}:{METRICS_PORT}",
                        behaviours.get(i, "none"),
                    )
                    for i in range(spec.nodes)
                ]
            )
        ),
        "grafana/provisioning/datasources/prometheus.yml": (
            GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml"
        ).read_text(),
        "grafana/provisioning/dashboards/phalanx.yml": (
            GRAFANA_DIR / "provisioning" / "dashboards" / "phalanx.yml"
        ).read_text(),
        "grafana/dashboards/phalanx-dashboard.json": DASHBOARD_PATH.read_text(),
    }
    public_keys = identity_keys(out / "keys", spec.nodes)
    for index in range(spec.nodes):
        files[f"config/{service_name(index)}.toml"] = tomli_w.dumps(
            node_config(spec, index, public_keys).model_dump(exclude_none=True)
        )
    written = []
    for relative, text in files.items():
        path = out / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    if spec.tls:
        from phalanx.clustering.certs import write_certificates

        written += write_certificates(out / "certs", spec.nodes, ["localhost"], overwrite=True)
    give_node_secrets_to_image_user(out, spec.nodes)
    return written


def node_secret_files(out: Path, nodes: int) -> list[Path]:
    """The private files a node container reads: its identity key and, with TLS, its TLS key
    (the CA's key is not among them: no node needs it)."""
    files = [out / "keys" / f"{service_name(i)}.pem" for i in range(nodes)]
    return files + [
        path for i in range(nodes) if (path := out / "certs" / f"{service_name(i)}.key").exists()
    ]


def give_node_secrets_to_image_user(out: Path, nodes: int) -> None:
    """Make each node's private files (mode 0600) owned by the image's user, uid
    `deploy.k8s.UID`, so that the container can read the compose secrets it mounts: compose
    bind-mounts a file secret with its owner and mode. Possible only as root (otherwise the CLI
    says what to run)."""
    from phalanx.deploy.k8s import UID

    if os.geteuid() != 0:
        return
    for path in node_secret_files(out, nodes):
        os.chown(path, UID, UID)


def identity_keys(folder: Path, nodes: int) -> list[str]:
    """Each node's Ed25519 identity key under `folder` (``node-<i>.pem``, created once and kept
    on later runs, mode 0600), and the public keys in hex."""
    from phalanx.clustering.identity import NodeIdentity

    folder.mkdir(parents=True, exist_ok=True)
    return [
        NodeIdentity.load_or_generate(folder / f"{service_name(i)}.pem").public_key_bytes.hex()
        for i in range(nodes)
    ]


def source_checkout() -> Path | None:
    """The source tree this module runs from, or None when it runs from an installed package."""
    if (REPO_ROOT / "pyproject.toml").is_file() and (REPO_ROOT / DOCKERFILE).is_file():
        return REPO_ROOT
    return None


def write_image_context(out_dir: str | Path, distribution: str = "phalanx") -> list[Path]:
    """Write an image build context from the installed `distribution`: its packages as installed
    (package data included, ``deploy/Dockerfile`` among it) and a ``pyproject.toml`` that
    builds them again, with the distribution's name, version, dependencies and entry points.
    Returns the paths written."""
    import shutil
    from importlib import metadata

    import tomli_w

    try:
        dist = metadata.distribution(distribution)
    except metadata.PackageNotFoundError:
        raise ValueError(f"{distribution} is not installed: give --context SOURCE_TREE") from None
    top_level = sorted(set((dist.read_text("top_level.txt") or "").split()))
    out = Path(out_dir)
    written: list[Path] = []
    for file in sorted(dist.files or [], key=str):
        parts = file.parts
        if not parts or parts[0] not in top_level or "__pycache__" in parts:
            continue
        target = out.joinpath(*parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(str(dist.locate_file(file))), target)
        written.append(target)
    # The recipe sits where a checkout has it (deploy/), beside the package it installs.
    for name in ("Dockerfile", "Dockerfile.dockerignore"):
        packaged = out / "phalanx" / "deploy" / name
        if packaged.is_file():
            (out / "deploy").mkdir(exist_ok=True)
            shutil.copyfile(packaged, out / "deploy" / name)
            written.append(out / "deploy" / name)
    if not (out / DOCKERFILE).is_file():
        raise ValueError(f"the installed {distribution} lacks {DOCKERFILE}: give --context")
    requires = [r for r in dist.requires or [] if "extra ==" not in r.partition(";")[2]]
    project: dict[str, Any] = {
        "name": dist.metadata["Name"],
        "version": dist.version,
        "dependencies": requires,
        "scripts": {
            entry.name: entry.value
            for entry in dist.entry_points
            if entry.group == "console_scripts"
        },
    }
    if dist.metadata["Requires-Python"]:
        project["requires-python"] = dist.metadata["Requires-Python"]
    pyproject = {
        "build-system": {
            "requires": ["setuptools>=68", "wheel"],
            "build-backend": "setuptools.build_meta",
        },
        "project": project,
        "tool": {
            "setuptools": {
                "packages": {"find": {"include": [f"{name}*" for name in top_level]}},
                "package-data": {"*": ["*"]},
            }
        },
    }
    path = out / "pyproject.toml"
    path.write_text(
        "# Written by `phalanx deploy compose` from the installed package, to build its image.\n"
        + tomli_w.dumps(pyproject)
    )
    return [path, *written]


def parse_byzantine(items: list[str] | None) -> dict[int, str]:
    """``I=BEHAVIOUR`` items (e.g. ``2=sign-flip``, ``3=scaling:factor=10``,
    ``1=corrupt-partial``): any poisoning attack or message-level behaviour, validated."""
    from phalanx.adversary.behaviours import parse_behaviour

    behaviours: dict[int, str] = {}
    for item in items or []:
        index, sep, attack = item.partition("=")
        if not sep or not index.isdigit() or not attack:
            raise ValueError(f"--byzantine {item!r}: expected INDEX=BEHAVIOUR, e.g. 2=sign-flip")
        parse_behaviour(attack)
        behaviours[int(index)] = attack
    return behaviours


def _cmd_compose(args: argparse.Namespace) -> int:
    from phalanx.node.config import (
        ConfigError,
        default_scenario_path,
        load_scenario,
        with_overrides,
    )

    try:
        scenario = load_scenario(args.scenario or default_scenario_path())
        scenario = with_overrides(scenario, {"nodes": args.nodes, "rounds": args.rounds})
        out = Path(args.out)
        checkout = source_checkout()
        if args.context is not None:
            context = args.context
        elif checkout is not None:
            context = os.path.relpath(checkout, out.resolve())
        else:
            context = "./image"
        spec = ComposeSpec(args.nodes, scenario, parse_byzantine(args.byzantine), args.tls, context)
        written = write_compose(spec, out)
        if args.context is None and checkout is None:
            written += write_image_context(out / "image")
    except (ValueError, ConfigError) as error:
        print(f"phalanx deploy compose: {error}", file=sys.stderr)
        return 2
    print(f"wrote {len(written)} files to {out}")
    if os.geteuid() != 0:
        from phalanx.deploy.k8s import UID

        print(
            f"note:     the node image runs as uid {UID} and reads its key files (mode 0600) "
            f"as compose secrets; give them to that uid: cd {out} && sudo chown {UID}:{UID} "
            f"keys/*.pem{' certs/node-*.key' if args.tls else ''}  (rootless podman: "
            f"podman unshare chown {UID}:{UID} ...)"
        )
    overlay = " -f compose.tls.yml" if args.tls else ""
    print(f"validate: cd {out} && docker-compose -f compose.yml{overlay} config -q")
    print(f"run:      cd {out} && docker compose -f compose.yml{overlay} up --build")
    return 0


def _cmd_prometheus_config(args: argparse.Namespace) -> int:
    from phalanx.deploy.prometheus import scrape_config, targets_from_node_configs

    try:
        targets = targets_from_node_configs(Path(args.testbed_out) / "config")
        text = _yaml(scrape_config(targets, interval_s=args.interval))
    except ValueError as error:
        print(f"phalanx deploy prometheus-config: {error}", file=sys.stderr)
        return 2
    if args.write:
        Path(args.write).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


def _cmd_netns_clean(args: argparse.Namespace) -> int:
    from phalanx.deploy.netns import cleanup_stale

    try:
        removed = cleanup_stale(args.prefix)
    except ValueError as error:
        print(f"phalanx deploy netns-clean: {error}", file=sys.stderr)
        return 2
    print(f"removed {len(removed)}: {' '.join(removed) or '-'}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``phalanx deploy compose | k8s | prometheus-config | netns-clean``."""
    from phalanx.deploy.k8s import register_k8s
    from phalanx.node.cli import float_in, int_in

    deploy = subparsers.add_parser(
        "deploy", help="compose and Kubernetes files, Prometheus/Grafana, netns tools"
    )
    sub = deploy.add_subparsers(dest="deploy_command", metavar="ACTION", required=True)
    compose = sub.add_parser("compose", help="generate a docker-compose testbed")
    compose.add_argument(
        "--nodes", type=int_in(2, 256), required=True, help="number of node services (2..256)"
    )
    compose.add_argument(
        "--byzantine",
        action="append",
        metavar="INDEX=BEHAVIOUR",
        help="make node-INDEX Byzantine: an attack (sign-flip, alie, scaling:factor=10, ...) or a "
        "message-level behaviour (corrupt-partial, equivocate, ...); repeatable",
    )
    compose.add_argument(
        "--out", default="phalanx-compose", help="output folder (default phalanx-compose)"
    )
    compose.add_argument(
        "--tls", action="store_true", help="also write certificates for the compose.tls.yml overlay"
    )
    compose.add_argument("--scenario", type=Path, help="scenario TOML (default: built-in)")
    compose.add_argument("--rounds", type=int_in(1), help="override the scenario's rounds")
    compose.add_argument(
        "--context",
        help="docker build context, a source tree with deploy/Dockerfile (default: this source "
        "checkout, or OUT/image/ written from the installed package)",
    )
    compose.set_defaults(func=_cmd_compose)
    register_k8s(sub)
    prom = sub.add_parser("prometheus-config", help="scrape config for a running testbed")
    prom.add_argument("testbed_out", help="the testbed's --out folder (reads config/*.toml)")
    prom.add_argument(
        "--interval",
        type=float_in(above=0),
        default=5.0,
        help="scrape interval, seconds (default 5)",
    )
    prom.add_argument("--write", type=Path, help="write here instead of stdout")
    prom.set_defaults(func=_cmd_prometheus_config)
    clean = sub.add_parser("netns-clean", help="remove namespaces/links left by a netns run")
    clean.add_argument("prefix", help="the run's name prefix (summary.json network.prefix)")
    clean.set_defaults(func=_cmd_netns_clean)
