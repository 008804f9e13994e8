"""Userspace layer-2 delay line: netem's delay, jitter and loss for kernels without ``sch_netem``.

The shaped node's namespace gets a TAP device as its ``eth0``; a second TAP in the root namespace
is a port of the run's bridge. One forwarder process per shaped node moves Ethernet frames
between the two (`forward`):

- **node egress** (inner TAP -> bridge): each frame is dropped with probability ``loss_pct``
  (Bernoulli, seeded RNG), otherwise released after ``delay_ms + U(-jitter_ms, +jitter_ms)``
  (netem's default uniform jitter, clamped at 0), held in a heap ordered by release time;
- **node ingress** (bridge -> inner TAP): forwarded at once.

So, like ``tc qdisc ... root netem`` on the node's ``eth0``, the whole delay and loss is applied
on the node's egress and a round trip to it grows by ``delay_ms``. One deliberate difference:
frames never overtake each other (release = max(sampled, previous release)), whereas netem
reorders under jitter, which TCP handles worse than a queueing delay.

Run as ``python -m deploy.delayline --netns NS --inner eth0 --outer TAP --seed N`` (root). The
process opens ``TAP`` in its own namespace, enters ``NS`` (so that ``ip netns pids NS`` and the
testbed's cleanup find it) and opens ``eth0`` there, prints one JSON line ``{"ready": ...}``, then
reads JSON lines on stdin: each sets the fields it names (``delay_ms``, ``jitter_ms``,
``loss_pct``) and is answered with the current settings and frame counters. It exits when stdin
closes, and gets SIGTERM when its parent dies. Only the standard library is imported, so it
starts in well under a second.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import fcntl
import heapq
import json
import os
import random
import selectors
import signal
import struct
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
CLONE_NEWNET = 0x40000000
PR_SET_PDEATHSIG = 1
MAX_FRAME = 65536
NETNS_DIR = Path("/run/netns")
READY_TIMEOUT_S = 10.0


class DelayLineError(RuntimeError):
    """The forwarder could not start, or did not answer a command."""


@dataclass(frozen=True)
class Shaping:
    """What to apply to the node's egress: fixed delay, uniform jitter and Bernoulli loss."""

    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss_pct: float = 0.0

    def __post_init__(self) -> None:
        for name in ("delay_ms", "jitter_ms"):
            value = getattr(self, name)
            if not 0.0 <= value <= 60_000.0:
                raise ValueError(f"{name}={value}: expected 0..60000 milliseconds")
        if not 0.0 <= self.loss_pct <= 100.0:
            raise ValueError(f"loss_pct={self.loss_pct}: expected a percentage in 0..100")

    def updated(self, fields: dict[str, Any]) -> Shaping:
        unknown = sorted(set(fields) - {"delay_ms", "jitter_ms", "loss_pct"})
        if unknown:
            raise ValueError(f"unknown shaping fields {unknown}")
        return Shaping(**{**asdict(self), **{k: float(v) for k, v in fields.items()}})


@dataclass
class DelayLine:
    """Release schedule of the node's egress frames (the policy; `forward` does the I/O)."""

    shaping: Shaping
    seed: int
    egress_frames: int = 0
    egress_dropped: int = 0
    ingress_frames: int = 0
    _rng: random.Random = field(init=False, repr=False)
    _last_release: float = field(default=0.0, init=False, repr=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def admit_egress(self, now: float) -> float | None:
        """Release time (seconds, same clock as `now`) of a frame arriving now, or None: dropped.

        Two draws per frame whatever the settings, so the loss pattern for a given seed does not
        depend on the delay.
        """
        self.egress_frames += 1
        lost = self._rng.random() * 100.0 < self.shaping.loss_pct
        offset = self._rng.uniform(-self.shaping.jitter_ms, self.shaping.jitter_ms)
        if lost:
            self.egress_dropped += 1
            return None
        hold_s = max(0.0, self.shaping.delay_ms + offset) / 1000.0
        self._last_release = max(now + hold_s, self._last_release)
        return self._last_release

    def counters(self) -> dict[str, int]:
        return {
            "egress_frames": self.egress_frames,
            "egress_dropped": self.egress_dropped,
            "ingress_frames": self.ingress_frames,
        }


def open_tap(name: str) -> int:
    """Attach to the existing TAP device `name` of the current namespace; a non-blocking fd."""
    if not 1 <= len(name.encode()) <= 15:
        raise ValueError(f"interface name {name!r}: expected 1..15 bytes")
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TAP | IFF_NO_PI))
    except OSError as error:
        os.close(fd)
        raise DelayLineError(f"cannot attach to TAP device {name!r}: {error}") from error
    return fd


def enter_netns(name: str) -> None:
    """Move this (single-threaded) process into the named network namespace (setns(2))."""
    path = NETNS_DIR / name
    fd = os.open(path, os.O_RDONLY)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.setns(fd, CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise DelayLineError(f"setns({path}): {os.strerror(errno)}")
    finally:
        os.close(fd)


def _write_frame(fd: int, frame: bytes) -> None:
    # A TAP write hands the frame to the kernel at once; a full queue means the kernel drops it.
    with contextlib.suppress(BlockingIOError, OSError):
        os.write(fd, frame)


def _drain(fd: int) -> list[bytes]:
    frames = []
    for _ in range(64):  # bounded, so the other side and the timers are served too
        try:
            frames.append(os.read(fd, MAX_FRAME))
        except BlockingIOError:
            break
    return frames


def forward(inner: int, outer: int, line: DelayLine, control: int, reply: IO[str]) -> None:
    """Move frames between the node's TAP (`inner`) and the bridge's TAP (`outer`) until the
    `control` fd reaches end of file; egress frames wait in a heap keyed by release time."""
    selector = selectors.DefaultSelector()
    selector.register(inner, selectors.EVENT_READ, "egress")
    selector.register(outer, selectors.EVENT_READ, "ingress")
    selector.register(control, selectors.EVENT_READ, "control")
    pending: list[tuple[float, int, bytes]] = []
    sequence, commands = 0, b""
    while True:
        now = time.monotonic()
        while pending and pending[0][0] <= now:
            _write_frame(outer, heapq.heappop(pending)[2])
        timeout = max(0.0, pending[0][0] - now) if pending else None
        for key, _events in selector.select(timeout):
            if key.data == "control":
                chunk = os.read(control, 4096)
                if not chunk:
                    return
                commands += chunk
                while b"\n" in commands:
                    text, commands = commands.split(b"\n", 1)
                    reply.write(json.dumps(_command(line, text.decode())) + "\n")
                    reply.flush()
            elif key.data == "ingress":
                for frame in _drain(outer):
                    line.ingress_frames += 1
                    _write_frame(inner, frame)
            else:
                for frame in _drain(inner):
                    release = line.admit_egress(time.monotonic())
                    if release is not None:
                        sequence += 1
                        heapq.heappush(pending, (release, sequence, frame))


def _command(line: DelayLine, text: str) -> dict[str, Any]:
    try:
        fields = json.loads(text)
        if not isinstance(fields, dict):
            raise ValueError("expected a JSON object")
        line.shaping = line.shaping.updated(fields)
    except (ValueError, TypeError) as error:
        return {"error": str(error), **asdict(line.shaping), **line.counters()}
    return {**asdict(line.shaping), **line.counters()}


def _die_with_parent() -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class DelayLineProcess:
    """The testbed's handle on one forwarder: start it, change its shaping, read its counters."""

    netns: str
    inner: str
    outer: str
    seed: int
    process: subprocess.Popen[str] | None = None

    def start(self, cwd: Path | None = None) -> DelayLineProcess:
        command = [sys.executable, "-m", "phalanx.deploy.delayline", "--netns", self.netns]
        command += ["--inner", self.inner, "--outer", self.outer, "--seed", str(self.seed)]
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=cwd or Path(__file__).resolve().parent.parent,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        ready = self._read_reply(READY_TIMEOUT_S)
        if "ready" not in ready:
            raise DelayLineError(f"delay line for {self.netns} did not start: {ready}")
        return self

    def _read_reply(self, timeout_s: float) -> dict[str, Any]:
        assert self.process is not None and self.process.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            if not selector.select(timeout_s):
                raise DelayLineError(f"delay line for {self.netns}: no answer in {timeout_s}s")
        text = self.process.stdout.readline()
        if not text:
            error = self.process.stderr.read() if self.process.stderr else ""
            raise DelayLineError(f"delay line for {self.netns} exited: {error.strip()}")
        reply: dict[str, Any] = json.loads(text)
        return reply

    def command(self, fields: dict[str, float]) -> dict[str, Any]:
        """Send one settings change (empty: none) and return the forwarder's answer."""
        if self.process is None or self.process.poll() is not None or self.process.stdin is None:
            raise DelayLineError(f"delay line for {self.netns} is not running")
        self.process.stdin.write(json.dumps(fields) + "\n")
        self.process.stdin.flush()
        reply = self._read_reply(5.0)
        if "error" in reply:
            raise ValueError(reply["error"])
        return reply

    def configure(self, shaping: Shaping) -> dict[str, Any]:
        return self.command(asdict(shaping))

    def stats(self) -> dict[str, Any]:
        return self.command({})

    def stop(self, timeout_s: float = 5.0) -> None:
        """Close its stdin (it exits), SIGKILL it if it does not; idempotent."""
        if self.process is None:
            return
        with contextlib.suppress(OSError, ValueError):
            if self.process.stdin is not None:
                self.process.stdin.close()
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.delayline", description=__doc__)
    parser.add_argument("--netns", required=True, help="namespace (ip netns) holding --inner")
    parser.add_argument("--inner", required=True, help="the node's TAP, inside --netns")
    parser.add_argument("--outer", required=True, help="the bridge's TAP, in this namespace")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--delay-ms", type=float, default=0.0)
    parser.add_argument("--jitter-ms", type=float, default=0.0)
    parser.add_argument("--loss-pct", type=float, default=0.0)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the testbed's: it stops us
    try:
        shaping = Shaping(args.delay_ms, args.jitter_ms, args.loss_pct)
        outer = open_tap(args.outer)
        enter_netns(args.netns)
        inner = open_tap(args.inner)
    except (OSError, ValueError, DelayLineError) as error:
        print(f"delayline: {error}", file=sys.stderr)
        return 2
    line = DelayLine(shaping, args.seed)
    print(json.dumps({"ready": True, "pid": os.getpid(), **asdict(shaping)}), flush=True)
    forward(inner, outer, line, sys.stdin.fileno(), sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
