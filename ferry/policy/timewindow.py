"""Time windows of rules, evaluated in the policy's time zone.

A window is a set of days and a [from, to) time of day in minutes. When
``to < from`` it wraps past midnight and belongs to the day it starts on
(``mon 22:00-06:00`` covers Monday 22:00 to Tuesday 06:00); ``from == to``
is empty. Windows are evaluated on the object's ``created`` time (the outer
agent's clock), so outer and inner agents decide the same.
"""

from __future__ import annotations

import math
import zoneinfo
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from ferry import limits

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def minutes(clock: str) -> int:
    """"HH:MM" -> minutes since midnight (24:00 -> 1440)."""
    return int(clock[:2]) * 60 + int(clock[3:])


@dataclass(frozen=True, slots=True)
class Window:
    days: frozenset[int]   # 0 = Monday
    start: int             # minutes, inclusive
    end: int               # minutes, exclusive; < start wraps; == start is empty

    @classmethod
    def build(cls, days: Sequence[str], start: str, end: str) -> Window:
        return cls(frozenset(DAYS.index(d) for d in days), minutes(start), minutes(end))

    @property
    def empty(self) -> bool:
        return self.start == self.end or not self.days

    def contains(self, weekday: int, minute: int) -> bool:
        if self.start < self.end:
            return weekday in self.days and self.start <= minute < self.end
        if self.start > self.end:
            return (weekday in self.days and minute >= self.start) or \
                ((weekday - 1) % 7 in self.days and minute < self.end)
        return False

    def describe(self) -> str:
        days = ",".join(DAYS[d] for d in sorted(self.days))
        return f"{days} {self.start // 60:02d}:{self.start % 60:02d}-{self.end // 60:02d}:{self.end % 60:02d}"


class Clock:
    """Seconds since the epoch -> (weekday, minute of day) in one time zone.

    Memoized per whole second (bounded); ``local(t)`` is None for a time that
    is not finite or out of range.
    """

    __slots__ = ("zone", "_tz", "_memo")

    def __init__(self, zone: str) -> None:
        self.zone = zone
        self._tz = zoneinfo.ZoneInfo(zone)
        self._memo: dict[int, tuple[int, int]] = {}

    def local(self, t: float) -> tuple[int, int] | None:
        if not math.isfinite(t):
            return None
        second = math.floor(t)
        hit = self._memo.get(second)
        if hit is not None:
            return hit
        try:
            dt = datetime.fromtimestamp(second, self._tz)
        except (ValueError, OverflowError, OSError):
            return None
        result = (dt.weekday(), dt.hour * 60 + dt.minute)
        if len(self._memo) >= limits.POLICY_MEMO_MAX // 16:
            self._memo.clear()
        self._memo[second] = result
        return result


def in_windows(windows: tuple[Window, ...], local: tuple[int, int] | None) -> bool:
    """``local`` (weekday, minute) lies in one of ``windows``."""
    if local is None:
        return False
    weekday, minute = local
    return any(w.contains(weekday, minute) for w in windows)
