"""Per-peer admission control: a bounded token bucket per authenticated sender identity.

A bucket of `burst` tokens refills at `rate_per_s` (the token-bucket shaper of Turner 1986, as in
RFC 2697's committed burst): a peer may send `burst` messages at once and `rate_per_s` a second
after that. Buckets exist only for allow-listed identities, so their number is bounded by the
peer list, and a bucket is charged only once the sender is authenticated (by its TLS certificate
or its signature), so nobody can spend another peer's tokens by sending in its name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from phalanx.node.clock import now as clock_now


@dataclass
class TokenBucket:
    """`burst` tokens, refilled continuously at `rate_per_s`."""

    rate_per_s: float
    burst: int
    clock: Callable[[], float] = clock_now
    tokens: float = field(init=False)
    updated: float = field(init=False)

    def __post_init__(self) -> None:
        if self.rate_per_s <= 0 or self.burst < 1:
            raise ValueError(
                f"need rate_per_s > 0 and burst >= 1, got {self.rate_per_s} and {self.burst}"
            )
        self.tokens = float(self.burst)
        self.updated = self.clock()

    def take(self) -> bool:
        """Spend one token if there is one; False means the caller is over its rate."""
        now = self.clock()
        self.tokens = min(float(self.burst), self.tokens + (now - self.updated) * self.rate_per_s)
        self.updated = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True


class PeerAdmission:
    """One `TokenBucket` per allow-listed peer; unknown identities get none."""

    def __init__(
        self,
        peers: set[str] | frozenset[str],
        rate_per_s: float,
        burst: int,
        clock: Callable[[], float] = clock_now,
    ) -> None:
        self._buckets = {peer: TokenBucket(rate_per_s, burst, clock) for peer in peers}

    def admit(self, peer: str) -> bool:
        bucket = self._buckets.get(peer)
        return bucket is not None and bucket.take()
