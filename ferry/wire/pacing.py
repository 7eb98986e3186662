"""Token-bucket pacing of the link sender (pure: takes ``now``).

A one-way link cannot push back, so the sender must never exceed the rate the
link and the receiver can take; bursts are limited to ``burst`` bytes.
"""
from __future__ import annotations


class Pacer:
    def __init__(self, rate_bytes_per_s: float, burst: int, now: float) -> None:
        if rate_bytes_per_s <= 0 or burst <= 0:
            raise ValueError("rate and burst must be positive")
        self.rate = float(rate_bytes_per_s)
        self.burst = float(burst)
        self.tokens = float(burst)
        self.updated = now

    def _refill(self, now: float) -> None:
        if now > self.updated:
            self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
            self.updated = now

    def delay(self, size: int, now: float) -> float:
        """Seconds to wait before ``size`` bytes may go (0 if they may go now)."""
        self._refill(now)
        need = min(float(size), self.burst)
        return 0.0 if self.tokens >= need else (need - self.tokens) / self.rate

    def consume(self, size: int, now: float) -> None:
        self._refill(now)
        self.tokens -= size          # may go negative: the debt delays the next batch
