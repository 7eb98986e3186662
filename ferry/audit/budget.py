"""The audit budget of link refusals: a per-reason hourly cap, and a record of what it withheld. Pure.

Under attack the link receiver reports refusals and drops without end, each kind already
aggregated (one ``datagrams_dropped`` per reason per second with a ``count``; refusals of
blocks and announcements at most ``REFUSAL_EVENT_RATE`` a second). Written one by one they
would grow the trail without bound. ``RefusalBudget`` sits where the agent writes records:

- the records it caps are the link's refusals of things that are not objects: the events in
  ``CAPPED_EVENTS`` (``datagrams_dropped``, ``block_refused``, ``announcement_refused``)
  with a reason ``code`` (``ferry.reasons.Reason``). Every other record passes unchanged, so
  each object's fate (delivered, refused, lost) is always written;
- time is cut into windows of ``window`` seconds (monotonic ``now``, from the budget's
  creation): in each window at most ``cap`` records of each (event, code) are written;
  beyond that they are withheld and counted: how many records, and the sum of the
  ``detail.count`` they carried (1 for a record without one);
- when a window in which something was withheld has ended (the agent's timer calls
  ``handle_timer`` at ``next_timer()``; failing that, the next record offered does it), and
  when the agent stops (``close``), one ``audit_suppressed`` record (verdict ``info``) lists per
  (event, code) the records withheld and the count they stood for.

So per window and reason the trail holds at most ``cap`` records, plus one summary per window
for all reasons. The keys are (event, Reason) pairs, so state and summary are bounded by
``len(CAPPED_EVENTS) * len(Reason)`` whatever the input.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ferry import limits
from ferry.audit.errors import RecordError
from ferry.audit.records import Record, format_time
from ferry.reasons import Reason

CAPPED_EVENTS = frozenset({"datagrams_dropped", "block_refused", "announcement_refused"})
SUMMARY_EVENT = "audit_suppressed"
_CODES = frozenset(r.value for r in Reason)

Key = tuple[str, str]     # (event, code)


@dataclass(slots=True)
class Withheld:
    """What one (event, code) had withheld in a window: records, and the count they stood for."""

    records: int = 0
    count: int = 0


def capped_key(fields: Record) -> Key | None:
    """The (event, code) a record is capped under, or None if it is always written."""
    event, code = fields.get("event"), fields.get("code")
    if type(event) is not str or event not in CAPPED_EVENTS or not isinstance(code, str):
        return None
    code = str(code)          # a Reason is its value
    return (event, code) if code in _CODES else None


def record_count(fields: Record) -> int:
    """How many refusals or datagrams a record stands for: its ``detail.count``, else 1."""
    detail = fields.get("detail")
    n = detail.get("count") if type(detail) is dict else None
    return n if type(n) is int and n >= 1 else 1


class RefusalBudget:
    """At most ``cap`` records per (event, code) per window; one summary of the rest."""

    def __init__(self, cap: int, now: float, window: float = limits.AUDIT_REFUSAL_WINDOW) -> None:
        if type(cap) is not int or cap < 0:
            raise ValueError("cap must be an integer >= 0")
        if not (math.isfinite(window) and window > 0) or not math.isfinite(now):
            raise ValueError("window must be positive and now finite")
        self.cap = cap
        self.window = window
        self.origin = now                       # windows are [origin + i*window, origin + (i+1)*window)
        self.index = 0                          # the current window
        self.written: dict[Key, int] = {}       # records written in the current window
        self.withheld: dict[Key, Withheld] = {}  # ... and withheld (since the last summary)
        self.first_wall: float | None = None    # wall clock of the first and last withheld record
        self.last_wall: float | None = None
        self.just_capped: Key | None = None     # set by offer(): its record was the first withheld of its key

    # -- the agent's three calls -------------------------------------------------------
    def offer(self, fields: Record, now: float, wall: float) -> list[Record]:
        """The records to write, in order, for ``fields`` offered at ``now``: a summary of a
        window that has ended (if it withheld anything), then ``fields`` unless withheld."""
        out = self._roll(now)
        self.just_capped = None
        key = capped_key(fields)
        if key is None:
            return out + [fields]
        n = self.written.get(key, 0)
        if n < self.cap:
            self.written[key] = n + 1
            return out + [fields]
        w = self.withheld.get(key)
        if w is None:
            w = self.withheld[key] = Withheld()
            self.just_capped = key
        w.records += 1
        w.count += record_count(fields)
        if self.first_wall is None:
            self.first_wall = wall
        self.last_wall = wall
        return out

    def next_timer(self) -> float | None:
        """When ``handle_timer`` has a summary to write (monotonic), if ever."""
        return self.origin + (self.index + 1) * self.window if self.withheld else None

    def handle_timer(self, now: float) -> list[Record]:
        """The summary of a window that has ended, if it withheld anything."""
        return self._roll(now)

    def close(self) -> list[Record]:
        """The summary of what is withheld so far (the agent stops): at most one record."""
        return self._summary()

    # -- internals ------------------------------------------------------------------------
    def _roll(self, now: float) -> list[Record]:
        if not math.isfinite(now):
            return []
        index = math.floor((now - self.origin) / self.window)
        if now >= self.origin + (self.index + 1) * self.window:   # next_timer's own sum: due means due
            index = max(index, self.index + 1)                     # (the division may round below it)
        if index <= self.index:                 # the same window (or a clock that went back)
            return []
        self.index = index
        self.written.clear()
        return self._summary()

    def _summary(self) -> list[Record]:
        if not self.withheld:
            return []
        withheld = [{"event": e, "code": c, "records": w.records, "count": w.count}
                    for (e, c), w in sorted(self.withheld.items())]
        records = sum(w.records for w in self.withheld.values())
        count = sum(w.count for w in self.withheld.values())
        self.withheld = {}
        first, last = self.first_wall, self.last_wall
        self.first_wall = self.last_wall = None
        detail: Record = {"cap": self.cap, "window": self.window, "records": records, "count": count,
                          "withheld": withheld}
        if first is not None and last is not None and math.isfinite(first) and math.isfinite(last):
            try:
                detail.update(first=format_time(first), last=format_time(last))
            except RecordError:   # a wall clock out of range: the counts still stand
                pass
        return [{"event": SUMMARY_EVENT, "verdict": "info", "detail": detail,
                 "reason": f"{records} link refusal records over the cap of {self.cap} per reason per "
                           f"{self.window:g} s were counted, not written (standing for {count} refusals "
                           "or dropped datagrams)"}]
