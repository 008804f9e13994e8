"""The gRPC edge of a Phalanx peer: the daemon that `phalanx node` runs.

A `Node` is a `node.peer.Peer` (the acceptance checks, the round driver, the majority sync) with
a network edge around it: a gRPC server (`node.server.PhalanxServicer`, mutual TLS, the health
service, streaming), the Prometheus endpoint, and a `GrpcTransport` to the other peers. Several
nodes may live in one process (each with its own port, registry and actors) on one event loop.
"""

from __future__ import annotations

import logging
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from phalanx.learning.data import Dataset
from phalanx.node.config import NodeConfig, tls_files
from phalanx.node.peer import Peer, round_seed
from phalanx.node.server import PhalanxServicer
from phalanx.node.transport import GrpcTransport, Transport

log = logging.getLogger(__name__)


def client_credentials(config: NodeConfig) -> grpc.ChannelCredentials | None:
    """Mutual TLS towards the peers, unless this node runs with ``insecure``."""
    if config.node.insecure:
        return None
    ca, cert, key = (Path(str(p)).read_bytes() for p in tls_files(config.node).values())
    return grpc.ssl_channel_credentials(
        root_certificates=ca, private_key=key, certificate_chain=cert
    )


def grpc_wire(peer: Peer) -> Transport:
    """The daemon's transport: one reused channel per peer, deadlines and retries."""
    scenario = peer.scenario
    return GrpcTransport(
        peer.addresses,
        deadline_s=scenario.timeouts.rpc_s,
        chunk_bytes=scenario.limits.chunk_bytes,
        observer=peer.observe_send,
        credentials=client_credentials(peer.config),
        seed=round_seed(scenario.seed, peer.index, 0),
    )


class Node(Peer):
    """A peer daemon: a `Peer` served over gRPC, with health and metrics endpoints."""

    def __init__(self, config: NodeConfig, dataset: Dataset | None = None) -> None:
        super().__init__(config, grpc_wire, dataset)
        self._server: grpc.aio.Server | None = None
        self._health = health.aio.HealthServicer()

    async def start(self) -> None:
        """Bind the gRPC server and metrics endpoint, start the peer, report SERVING."""
        limit = self.scenario.limits.chunk_bytes * 2 + 64 * 1024
        self._server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", limit),
                ("grpc.so_reuseport", 0),
            ]
        )
        servicer = PhalanxServicer(
            self.id,
            self.accept,
            self.status_reply,
            self.scenario.limits.max_message_bytes,
            self.rejected,
            self.model_message,
            self.scenario.limits.chunk_bytes,
            admit=self.admit,
            require_tls_identity=not self.config.node.insecure,
        )
        self._server.add_generic_rpc_handlers((servicer.handler(),))
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        address = f"{self.config.node.host}:{self.config.node.port}"
        try:
            if self.config.node.insecure:
                self.port = self._server.add_insecure_port(address)
            else:
                ca, cert, key = (
                    Path(str(p)).read_bytes() for p in tls_files(self.config.node).values()
                )
                credentials = grpc.ssl_server_credentials(
                    [(key, cert)], root_certificates=ca, require_client_auth=True
                )
                self.port = self._server.add_secure_port(address, credentials)
        except RuntimeError as error:  # grpcio >= 1.60 raises instead of returning 0
            raise OSError(f"{self.id}: cannot bind {address}: {error}") from error
        if self.port == 0:
            raise OSError(f"{self.id}: cannot bind {address}")
        await self._server.start()
        if self.config.node.metrics_port is not None:
            self.metrics_port = self.metrics.serve(
                self.config.node.metrics_port, self.config.node.host
            )
        await super().start()
        await self._health.set("", health_pb2.HealthCheckResponse.SERVING)
        await self._health.set("phalanx.v1.PhalanxNode", health_pb2.HealthCheckResponse.SERVING)
        log.info("%s serving on port %d (metrics %s)", self.id, self.port, self.metrics_port)

    async def stop(self, grace_s: float = 5.0) -> None:
        """Graceful stop: finish the sends under way (relayed outputs), leave the membership
        (SWIM LEAVE), NOT_SERVING, let in-flight calls finish, then close."""
        await self.drain(self.scenario.timeouts.rpc_s if grace_s > 0 else 0.0)
        await self.leave()
        await self._health.enter_graceful_shutdown()
        if self._server is not None:
            await self._server.stop(grace_s)
        await self.close()
