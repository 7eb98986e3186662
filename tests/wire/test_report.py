"""Report: drop counting with at most one DatagramsDropped per reason per interval; refusals rate-limited."""

from __future__ import annotations

from ferry import limits
from ferry.wire.events import AnnouncementRefused, BlockRefused, DatagramsDropped
from ferry.wire.report import Report


def _drain(r: Report) -> list:
    out = list(r.events)
    r.events.clear()
    return out


def test_drops_are_counted_each_and_reported_once_per_interval():
    r = Report(now=0.0)
    for _ in range(100):
        r.drop("bad_magic", 0.0)
    assert r.counters.dropped_by_reason == {"bad_magic": 100}
    assert _drain(r) == [DatagramsDropped("bad_magic", 1)]  # the first at once, the rest held
    assert r.next_timer() == limits.DROP_EVENT_INTERVAL
    r.handle_timer(limits.DROP_EVENT_INTERVAL - 0.01)
    assert _drain(r) == []
    r.handle_timer(limits.DROP_EVENT_INTERVAL)
    assert _drain(r) == [DatagramsDropped("bad_magic", 99)]
    assert r.next_timer() is None


def test_refusals_share_one_bucket_and_overflow_into_a_drop_reason():
    r = Report(now=0.0)
    n = int(limits.REFUSAL_EVENT_RATE)
    for i in range(n):
        r.refuse_block(1, i, "auth", 0.0)
    r.refuse_announcement("bad_signature", 7, 0.0)
    events = _drain(r)
    assert events[:n] == [BlockRefused(1, i, "auth") for i in range(n)]
    assert events[n:] == [DatagramsDropped("refusal_suppressed", 1)]
    assert r.counters.blocks_refused == n and r.counters.announcements_refused == 1
    r.refuse_announcement("expired", 8, 10.0)  # the bucket refilled
    assert _drain(r) == [AnnouncementRefused("expired", 8)]
