"""Prometheus metrics of one node, in its own registry (several nodes may share a process).

Conventions (ARCHITECTURE.md): prefix ``phalanx_``, base units, ``_total`` counters, histograms
for latencies, bounded labels (``kind``, ``phase``, ``rpc``, ``role``, ``cluster``).
"""

from __future__ import annotations

import threading
from importlib import metadata
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, start_http_server

ROUND_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300)
RPC_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


def package_version() -> str:
    try:
        return metadata.version("phalanx")
    except metadata.PackageNotFoundError:
        return "0+unknown"


class NodeMetrics:
    """All metrics one node exports; build info names the node so dashboards tell peers apart."""

    def __init__(self, node_id: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.build_info = Info("phalanx_build", "Build information.", registry=r)
        self.build_info.info({"version": package_version(), "node": node_id})
        self.rounds_completed = Counter(
            "phalanx_rounds_completed", "Rounds this node completed.", registry=r
        )
        self.current_round = Gauge("phalanx_round", "Round the node is working on.", registry=r)
        self.round_duration = Histogram(
            "phalanx_round_duration_seconds",
            "Wall time of a whole round.",
            buckets=ROUND_BUCKETS,
            registry=r,
        )
        self.phase_duration = Histogram(
            "phalanx_phase_duration_seconds",
            "Wall time of each round phase.",
            ["phase"],
            buckets=ROUND_BUCKETS,
            registry=r,
        )
        self.bytes_sent = Counter(
            "phalanx_bytes_sent", "Payload bytes sent, by message kind.", ["kind"], registry=r
        )
        self.bytes_received = Counter(
            "phalanx_bytes_received",
            "Payload bytes received, by message kind.",
            ["kind"],
            registry=r,
        )
        self.messages_sent = Counter(
            "phalanx_messages_sent", "Messages sent, by kind.", ["kind"], registry=r
        )
        self.messages_received = Counter(
            "phalanx_messages_received", "Messages accepted, by kind.", ["kind"], registry=r
        )
        self.messages_rejected = Counter(
            "phalanx_messages_rejected", "Messages refused, by reason.", ["reason"], registry=r
        )
        self.rpc_latency = Histogram(
            "phalanx_rpc_duration_seconds",
            "Client-side latency of outgoing RPCs.",
            ["rpc"],
            buckets=RPC_BUCKETS,
            registry=r,
        )
        self.rpc_failures = Counter(
            "phalanx_rpc_failures", "Outgoing RPCs that failed after retries.", ["rpc"], registry=r
        )
        self.accuracy = Gauge(
            "phalanx_accuracy_ratio",
            "Test accuracy of the model after the last round.",
            registry=r,
        )
        self.loss = Gauge(
            "phalanx_loss", "Test loss of the model after the last round.", registry=r
        )
        self.train_loss = Gauge(
            "phalanx_train_loss", "Mean local training loss in the last round.", registry=r
        )
        self.excluded = Gauge(
            "phalanx_excluded_nodes", "Nodes excluded from the last round.", registry=r
        )
        self.members = Gauge(
            "phalanx_members",
            "Configured peers by SWIM state in this node's view (alive, suspect, dead, left, "
            "unknown).",
            ["state"],
            registry=r,
        )
        self.actor_restarts = Counter(
            "phalanx_actor_restarts",
            "Actor loops restarted by the supervisor.",
            ["role"],
            registry=r,
        )
        self.mailbox_depth = Gauge(
            "phalanx_mailbox_depth",
            "Messages waiting in an actor's mailbox.",
            ["role"],
            registry=r,
        )
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def serve(self, port: int, host: str = "127.0.0.1") -> int:
        """Serve ``/metrics`` over HTTP; returns the bound port (useful with port 0)."""
        self._server, self._thread = start_http_server(port, addr=host, registry=self.registry)
        return int(self._server.server_port)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
