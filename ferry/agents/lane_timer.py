"""One event-loop timer armed from a pure lane's `next_timer()`.

The lanes' timers are on the monotonic clock, as asyncio's loop clock is (`loop.time()` is
`time.monotonic()`), so a deadline is armed as it is with `call_at`. `fire(now)` gets the
monotonic clock, never earlier than the deadline (the loop may run a handle a clock tick
early). After carrying out work, the owner calls `arm()` again: it re-arms only when the
lane's next deadline moved.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class LaneTimer:
    def __init__(self, next_timer: Callable[[], float | None], fire: Callable[[float], None]) -> None:
        self.next_timer, self.fire = next_timer, fire
        self.at: float | None = None
        self.handle: asyncio.TimerHandle | None = None

    def arm(self, at: float | None = None) -> None:
        """Arm at the lane's next deadline (or at `at`); without a running loop, do nothing."""
        t = self.next_timer() if at is None else at
        if t == self.at:
            return
        self.cancel()
        if t is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self.at = t
        self.handle = loop.call_at(t, self._fired, t)

    def cancel(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
        self.handle = self.at = None

    def _fired(self, t: float) -> None:
        self.handle = self.at = None
        self.fire(max(time.monotonic(), t))
