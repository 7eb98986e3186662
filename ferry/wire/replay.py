"""Sliding replay window over block numbers (after wireguard-go replay/replay.go).

Bit i of the bitmap stands for block number `last - i`. A number already marked, or more than
`size - 1` behind the highest marked, is refused. Only authenticated numbers are marked.
"""

from __future__ import annotations

from ferry import limits


class ReplayWindow:
    """Which block numbers of one epoch have been opened."""

    __slots__ = ("size", "last", "_bits", "_mask")

    def __init__(self, size: int = limits.REPLAY_WINDOW) -> None:
        if size < 1:
            raise ValueError("window size must be positive")
        self.size = size
        self.last = -1  # highest marked number, -1 before the first
        self._bits = 0
        self._mask = (1 << size) - 1

    def check(self, n: int) -> bool:
        """True if n may still be accepted (not seen, not too old). Does not change state."""
        if n > self.last:
            return True
        back = self.last - n
        if back >= self.size:
            return False
        return not (self._bits >> back) & 1

    def seen(self, n: int) -> bool:
        """True if n was marked (and is still inside the window)."""
        if n > self.last:
            return False
        back = self.last - n
        return back < self.size and bool((self._bits >> back) & 1)

    def next_seen(self, n: int) -> int | None:
        """The lowest marked number above n still in the window, None if there is none."""
        back = self.last - n
        if back <= 0:
            return None
        below = self._bits & ((1 << min(back, self.size)) - 1)
        return self.last - below.bit_length() + 1 if below else None

    def too_old(self, n: int) -> bool:
        """True if n has fallen out of the window."""
        return self.last - n >= self.size

    def close_through(self, n: int) -> None:
        """Every number up to n counts as opened (a receiver resumed after a restart)."""
        if n > self.last:
            self.last = n
            self._bits = self._mask

    def mark(self, n: int) -> bool:
        """Mark n as opened; False (and no change) if check(n) would refuse it."""
        if n > self.last:
            shift = n - self.last
            self._bits = ((self._bits << shift) | 1) & self._mask if shift < self.size else 1
            self.last = n
            return True
        back = self.last - n
        if back >= self.size or (self._bits >> back) & 1:
            return False
        self._bits |= 1 << back
        return True
