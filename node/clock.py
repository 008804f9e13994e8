"""The clock the peers' deadlines and phase timings read: the running event loop's.

On the daemons' loops (asyncio, uvloop) that is the monotonic clock. On the memory engine's
`node.simulate.VirtualTimeLoop` it is virtual time, which stands still while any peer computes
and jumps to the next deadline when every peer waits, so deadlines cost no wall time and never
expire because the simulating machine is slow.
"""

from __future__ import annotations

import asyncio
import time


def now() -> float:
    """Seconds on the running loop's clock (the monotonic clock outside a loop)."""
    try:
        return asyncio.get_running_loop().time()
    except RuntimeError:
        return time.monotonic()


def wall() -> float:
    """Seconds since the epoch on the running loop's terms: wall time on a real-time loop, the
    loop's own clock on a virtual one (where all peers share it exactly)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return time.time()
    return loop.time() if getattr(loop, "is_virtual", False) else time.time()
