"""What binding every message to its sender costs: signed against unsigned rounds.

`phalanx bench signing` starts n nodes in this process (real gRPC over loopback, mutual TLS,
the same node code as the daemons) and runs their rounds with every envelope Ed25519-signed and
verified (``security.sign_messages = true``, the default) or not (``false``, which only TLS makes
safe), switching between the two every round in the order ABBA, so that a drift in the
machine's load favours neither. SWIM is off (it would measure the load on one process's event
loop, not signing); every round message is covered. A round's wall time is the slowest node's;
its CPU time is this process's (all n nodes), which the load of other processes does not
inflate. It reports the
median of each and the ratios signed / unsigned, and times the primitives: one signature and one
verification of an envelope of each payload size, SHA-256 included.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table


def primitive_costs(sizes: list[int], repeats: int = 50) -> list[dict[str, Any]]:
    """Median microseconds to sign and to verify one envelope carrying `size` float32 values."""
    from phalanx.clustering.identity import NodeIdentity
    from phalanx.node.codec import Message
    from phalanx.node.signing import sign_envelope, tensor_digests, verify_envelope
    from phalanx.v1 import node_pb2 as pb

    identity = NodeIdentity.generate()
    rows = []
    for size in sizes:
        tensors = {"update": np.ones(size, dtype=np.float32)}
        sign_s, verify_s, sign_again_s = [], [], []
        for _ in range(repeats):
            message = Message("node-01", 3, pb.MESSAGE_KIND_UPDATE, 0, dict(tensors), {}, "node-00")
            started = time.perf_counter()
            signed = sign_envelope(message, identity)  # first recipient: hashes the tensors
            sign_s.append(time.perf_counter() - started)
            started = time.perf_counter()
            sign_envelope(message, identity)  # every further recipient: the cached digest
            sign_again_s.append(time.perf_counter() - started)
            started = time.perf_counter()
            verify_envelope(signed, identity.public_key_bytes)
            verify_s.append(time.perf_counter() - started)
        tensor_digests.clear()
        rows.append(
            {
                "floats": size,
                "sign_first_us": 1e6 * statistics.median(sign_s),
                "sign_again_us": 1e6 * statistics.median(sign_again_s),
                "verify_us": 1e6 * statistics.median(verify_s),
            }
        )
    return rows


def _nodes(args: argparse.Namespace, folder: Path) -> list[Any]:
    """n keyed nodes with mutual TLS on loopback, in this process."""
    from phalanx.clustering.certs import write_certificates
    from phalanx.clustering.identity import NodeIdentity
    from phalanx.node.config import NodeConfig, NodeSettings, PeerConfig, parse_scenario
    from phalanx.node.node import Node
    from phalanx.node.testbed import free_ports, node_ids

    ids = node_ids(args.nodes)
    write_certificates(folder / "certs", args.nodes, overwrite=True, names=ids)
    identities = {i: NodeIdentity.generate() for i in ids}
    ports = dict(zip(ids, free_ports(args.nodes), strict=True))
    scenario = parse_scenario(
        {
            "seed": 7,
            "nodes": args.nodes,
            "rounds": 2 * args.rounds + 1,
            "data": {"dataset": args.dataset},
            "model": {"name": args.model},
            "clustering": {"cluster_size": args.cluster_size},
            "aggregation": {"secure": args.secure},
            "timeouts": {"collect_s": 30.0},
            # No SWIM: its probes would time out while 16 nodes train on one loop's 2 cores,
            # remove live peers and fail clusters, which measures load, not signing.
            "membership": {"protocol": "off"},
        }
    )
    peers = [
        PeerConfig(id=i, address=f"127.0.0.1:{ports[i]}", public_key=k.public_key_bytes.hex())
        for i, k in identities.items()
    ]
    nodes = []
    for node_id in ids:
        key = folder / "keys" / f"{node_id}.pem"
        key.parent.mkdir(parents=True, exist_ok=True)
        identities[node_id].save(key, overwrite=True)
        settings = NodeSettings(
            id=node_id,
            port=ports[node_id],
            out_dir=str(folder),
            identity_key=str(key),
            tls_ca=str(folder / "certs" / "ca.pem"),
            tls_cert=str(folder / "certs" / f"{node_id}.pem"),
            tls_key=str(folder / "certs" / f"{node_id}.key"),
        )
        nodes.append(Node(NodeConfig(node=settings, peers=peers, scenario=scenario)))
    return nodes


def _set_signing(nodes: list[Any], signed: bool) -> None:
    """Switch signing on every node at once (between rounds: both sides agree)."""
    for node in nodes:
        node.security = node.security.model_copy(update={"sign_messages": signed})
        signer = node.transport
        while not hasattr(signer, "identity"):  # the SigningTransport under any wrapper
            signer = signer.inner
        signer.enabled = signed


async def _measure(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from phalanx.node.peer import model_digest

    torch.set_num_threads(1)
    logging.getLogger("node").setLevel(logging.WARNING)
    logging.getLogger("phalanx").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="phalanx-bench-signing-") as tmp:
        nodes = _nodes(args, Path(tmp))
        for node in nodes:
            await node.start()
        try:
            samples: dict[str, list[tuple[float, float]]] = {"signed": [], "unsigned": []}
            order = ["signed", "unsigned", "unsigned", "signed"]
            for round_ in range(1, 2 * args.rounds + 2):
                label = "signed" if round_ == 1 else order[(round_ - 2) % 4]
                _set_signing(nodes, label == "signed")
                cpu, wall = time.process_time(), time.perf_counter()
                records = await asyncio.gather(*(n.run_round(round_) for n in nodes))
                cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
                if len({model_digest(n.weights) for n in nodes}) != 1:
                    raise RuntimeError(f"round {round_}: the nodes' models differ")
                if any(r["excluded"] or r["failed_clusters"] for r in records):
                    raise RuntimeError(f"round {round_}: a node was excluded or a cluster failed")
                if round_ > 1:  # round 1 warms up channels, TLS sessions and caches
                    samples[label].append((wall, cpu))
                print(f"round {round_:3d} {label:8s} wall {wall:6.3f} s  cpu {cpu:6.3f} s")
        finally:
            await asyncio.gather(*(node.stop(0.5) for node in nodes))

    def median(label: str, index: int) -> float:
        return float(statistics.median(s[index] for s in samples[label]))

    return {
        "nodes": args.nodes,
        "secure": args.secure,
        "model": args.model,
        "dataset": args.dataset,
        "rounds_each": args.rounds,
        "signed_wall_s": median("signed", 0),
        "unsigned_wall_s": median("unsigned", 0),
        "wall_ratio": median("signed", 0) / median("unsigned", 0),
        "signed_cpu_s": median("signed", 1),
        "unsigned_cpu_s": median("unsigned", 1),
        "cpu_ratio": median("signed", 1) / median("unsigned", 1),
        "samples": samples,
        "primitives": primitive_costs([1_000, 100_000, 1_000_000]),
    }


def _cmd_signing(args: argparse.Namespace) -> int:
    result = asyncio.run(_measure(args))
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    console = Console()
    table = Table(
        title=f"n = {args.nodes}, {args.secure}, mutual TLS, {args.rounds} rounds each, ABBA"
    )
    for column in ("", "signed", "unsigned", "signed / unsigned"):
        table.add_column(column, justify="right")
    for name, key in (("round wall s (median)", "wall"), ("round CPU s (median)", "cpu")):
        table.add_row(
            name,
            f"{result[f'signed_{key}_s']:.3f}",
            f"{result[f'unsigned_{key}_s']:.3f}",
            f"{result[f'{key}_ratio']:.3f}",
        )
    console.print(table)
    costs = Table(title="one envelope: Ed25519 + SHA-256 on this machine (median µs)")
    for column in ("float32 values", "sign (first recipient)", "sign (each further)", "verify"):
        costs.add_column(column, justify="right")
    for row in result["primitives"]:
        costs.add_row(
            f"{row['floats']:,}",
            f"{row['sign_first_us']:.0f}",
            f"{row['sign_again_us']:.0f}",
            f"{row['verify_us']:.0f}",
        )
    console.print(costs)
    return 0


def register_bench(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "signing", help="round time with every message signed, over the same run unsigned"
    )
    parser.add_argument("--nodes", type=int, default=16, help="nodes, all in this process")
    parser.add_argument("--rounds", type=int, default=12, help="rounds of each kind (ABBA order)")
    parser.add_argument("--secure", default="shamir", help="aggregation.secure")
    parser.add_argument("--model", default="mlp", help="model")
    parser.add_argument("--dataset", default="digits", help="data set")
    parser.add_argument("--cluster-size", type=int, default=4, help="clustering.cluster_size")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(func=_cmd_signing)
