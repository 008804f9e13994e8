"""Process-level driver: run one or more nodes on one event loop, handle signals, exit codes.

Exit codes of ``phalanx node`` (documented in docs/operations.md):

- 0: all rounds done, or stopped gracefully by SIGTERM;
- 1: an unexpected error (a bug: the traceback is in the log);
- 2: bad configuration (a one-line message names the field);
- 3: cannot bind the gRPC or metrics port;
- 4: the data set cannot be loaded;
- 130: interrupted by SIGINT (Ctrl-C).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Sequence
from typing import Any

from phalanx.node.config import NodeConfig

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_CONFIG = 2
EXIT_BIND = 3
EXIT_DATA = 4
EXIT_INTERRUPTED = 130


def install_event_loop_policy() -> str:
    """Use uvloop when it is installed; returns the loop implementation's name."""
    try:
        import uvloop
    except ImportError:
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"


async def serve_nodes(configs: Sequence[NodeConfig], linger_s: float = 1.0) -> int:
    """Start every node, run their rounds, and stop them all gracefully; returns an exit code."""
    from phalanx.learning.data import DatasetError
    from phalanx.node.config import ConfigError, check_peer_keys, check_tls
    from phalanx.node.node import Node

    try:
        for config in configs:
            check_tls(config.node)
            check_peer_keys(config)
    except ConfigError as error:
        log.error("%s", error)
        print(f"phalanx node: {error}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        nodes = [Node(config) for config in configs]
    except DatasetError as error:
        log.error("data: %s", error)
        return EXIT_DATA
    # Before any node starts: a node's "start" record tells supervisors it may be signalled, so
    # a SIGTERM right after it must already stop gracefully.
    loop = asyncio.get_running_loop()
    stop_signal: asyncio.Future[int] = loop.create_future()
    for signum, code in ((signal.SIGTERM, EXIT_OK), (signal.SIGINT, EXIT_INTERRUPTED)):

        def request_stop(code: int = code, signum: int = signum) -> None:
            log.info("received %s: stopping gracefully", signal.Signals(signum).name)
            if not stop_signal.done():
                stop_signal.set_result(code)

        loop.add_signal_handler(signum, request_stop)

    started: list[Node] = []
    try:
        for node in nodes:
            await node.start()
            started.append(node)
    except OSError as error:
        log.error("bind: %s", error)
        for node in started:
            await node.stop(0)
        return EXIT_BIND

    rounds: asyncio.Future[list[None]] = asyncio.gather(*(node.run() for node in nodes))
    waiting: list[asyncio.Future[Any]] = [rounds, stop_signal]
    done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    code = EXIT_OK
    if stop_signal in done:
        code = stop_signal.result()
        rounds.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await rounds
    else:
        failure = rounds.exception()
        if failure is not None:
            log.error("round driver failed", exc_info=failure)
            code = EXIT_ERROR
        # Peers that are a little behind may still send to us; stay up briefly.
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(stop_signal), timeout=linger_s)
    for node in nodes:
        await node.stop()
    return code


def run_nodes(configs: Sequence[NodeConfig], linger_s: float = 1.0) -> int:
    install_event_loop_policy()
    return asyncio.run(serve_nodes(configs, linger_s))
