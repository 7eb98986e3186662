"""Pacing of the link sender (pure: takes ``now``).

A one-way link cannot push back, so the sender must never exceed the rate the
link and the receiver can take; bursts are limited to ``burst`` bytes.

`Pacer` is one token bucket. `LinkPacer` paces the whole link with one and puts control
datagrams (key announcements, heartbeats) ahead of data within a reserved share of the rate:
a second bucket (CONTROL_SHARE of the rate, CONTROL_BURST bytes) bounds what control may take
first, so a receiver that joins while data is queued gets a key at once, and control can never
starve data (data always has at least 1 - CONTROL_SHARE of the rate; what control leaves
unused is data's too). Control within its share waits only for the link's bucket: at most the
time the link takes to carry it.
"""
from __future__ import annotations

from enum import Enum

from ferry import limits


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


class Next(Enum):
    CONTROL = "control"
    DATA = "data"


class LinkPacer:
    """The link's rate for everything, control first within its share (module docstring)."""

    def __init__(self, rate_bytes_per_s: float, burst: int, now: float, *,
                 control_share: float = limits.CONTROL_SHARE, control_burst: int = limits.CONTROL_BURST) -> None:
        if not 0 < control_share < 1:
            raise ValueError("control_share must be between 0 and 1")
        self.link = Pacer(rate_bytes_per_s, burst, now)
        self.control = Pacer(rate_bytes_per_s * control_share, control_burst, now)

    @property
    def rate(self) -> float:
        return self.link.rate

    def next(self, control: int | None, data: int | None, now: float) -> tuple[Next, float] | None:
        """What goes next, and after how many seconds: the first control datagram waiting
        (`control` bytes) or the data batch waiting (`data` bytes), whichever its buckets let go
        first, control on a tie (so always while its share lasts); None if nothing waits. Ask
        again after waiting: something may have come meanwhile."""
        if control is not None:
            share = self.control.delay(control, now)
            if data is None or share <= self.link.delay(data, now):
                return Next.CONTROL, max(share, self.link.delay(control, now))
        if data is not None:
            return Next.DATA, self.link.delay(data, now)
        return None

    def consume(self, kind: Next, size: int, now: float) -> None:
        """`size` bytes of `kind` went: the link's bucket pays for both, control's for control."""
        self.link.consume(size, now)
        if kind is Next.CONTROL:
            self.control.consume(size, now)
