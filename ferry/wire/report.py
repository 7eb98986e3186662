"""What the receiver tells its caller: counters, the event queue, drops and refusals, bounded.

Every receiver part reports through one `Report`: datagram drops are counted per reason and
become at most one `DatagramsDropped` event per reason per DROP_EVENT_INTERVAL; block and
announcement refusals share one token bucket (REFUSAL_EVENT_RATE), beyond which they are
counted as the drop "refusal_suppressed".
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from ferry.reasons import Reason
from ferry import limits
from ferry.wire.bounded import TokenBucket
from ferry.wire.events import AnnouncementRefused, BlockRefused, DatagramsDropped, ReceiverEvent


@dataclass(slots=True)
class ReceiverCounters:
    """What the receiver has seen since it started."""

    datagrams: int = 0
    bytes: int = 0
    dropped_by_reason: dict[Reason, int] = field(default_factory=dict)
    blocks_ok: int = 0
    blocks_repaired: int = 0
    blocks_lost: int = 0
    blocks_refused: int = 0
    objects: int = 0
    objects_lost: int = 0
    symbols_late: int = 0
    announcements_accepted: int = 0
    announcements_repeated: int = 0
    announcements_refused: int = 0
    heartbeats: int = 0
    internal_errors: int = 0


class Report:
    """Counters and events of one receiver; drop and refusal events are rate-limited."""

    __slots__ = ("counters", "events", "_refusals", "_unreported", "_last")

    def __init__(self, now: float) -> None:
        self.counters = ReceiverCounters()
        self.events: deque[ReceiverEvent] = deque()
        self._refusals = TokenBucket(limits.REFUSAL_EVENT_RATE, now)
        self._unreported: dict[Reason, int] = {}
        self._last: dict[str, float] = {}

    def drop(self, reason: Reason, now: float) -> None:
        """Count one dropped datagram (or fragment) for `reason`."""
        d = self.counters.dropped_by_reason
        d[reason] = d.get(reason, 0) + 1
        self._unreported[reason] = self._unreported.get(reason, 0) + 1
        if now - self._last.get(reason, -1e18) >= limits.DROP_EVENT_INTERVAL:
            self._flush(reason, now)

    def _flush(self, reason: Reason, now: float) -> None:
        count = self._unreported.pop(reason, 0)
        if count:
            self._last[reason] = now
            self.events.append(DatagramsDropped(reason, count))

    def refuse_block(self, epoch: int, block_no: int, reason: Reason, now: float) -> None:
        self.counters.blocks_refused += 1
        if self._refusals.take(now):
            self.events.append(BlockRefused(epoch, block_no, reason))
        else:
            self.drop(Reason.REFUSAL_SUPPRESSED, now)

    def refuse_announcement(self, reason: Reason, epoch: int | None, now: float) -> None:
        self.counters.announcements_refused += 1
        if self._refusals.take(now):
            self.events.append(AnnouncementRefused(reason, epoch))
        else:
            self.drop(Reason.REFUSAL_SUPPRESSED, now)

    def next_timer(self) -> float | None:
        """When the next held-back drop event is due."""
        last = self._last
        times = [last.get(r, 0.0) + limits.DROP_EVENT_INTERVAL for r in self._unreported]
        return min(times) if times else None

    def handle_timer(self, now: float) -> None:
        for reason in list(self._unreported):
            if now - self._last.get(reason, -1e18) >= limits.DROP_EVENT_INTERVAL:
                self._flush(reason, now)
