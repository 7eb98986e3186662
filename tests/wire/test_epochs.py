"""KeyEpochs: announcements checked cheapest first, validity on the wall clock, timers on `now`."""

from __future__ import annotations

import pytest

from ferry import limits
from ferry.wire.epochs import KeyEpochs
from ferry.wire.events import AnnouncementRefused
from ferry.wire.report import Report

from .wire_helpers import announcement

WALL = 1.7e9 + 100  # the inner wall clock; announcements start at 1.7e9
NOW = 50.0  # the monotonic clock: unrelated to the wall clock


@pytest.fixture
def table(keys):
    outer, inner = keys
    report = Report(NOW)
    return KeyEpochs(inner, outer.public_key(), report, NOW), report


def _refusals(report: Report) -> list[str]:
    return [e.reason for e in report.events if isinstance(e, AnnouncementRefused)]


def test_accept_then_repeat_is_cheap(keys, table):
    outer, inner = keys
    t, report = table
    a = announcement(outer, inner, epoch=10)
    acc = t.accept(a, NOW, WALL)
    assert acc is not None and acc.new and acc.rotated_from is None
    assert t.current is acc.epoch and acc.epoch.key == bytes(range(16))
    assert t.accept(a, NOW, WALL) is None
    assert report.counters.announcements_repeated == 1 and report.counters.announcements_accepted == 1


def test_validity_is_checked_on_the_wall_clock_only(keys, table):
    outer, inner = keys
    t, report = table
    early = announcement(outer, inner, epoch=1, not_before=WALL + limits.CLOCK_SKEW + 10)
    late = announcement(outer, inner, epoch=2, not_before=WALL - 3600 - limits.CLOCK_SKEW - 10)
    assert t.accept(early, NOW, WALL) is None
    assert t.accept(late, NOW, WALL) is None
    assert _refusals(report) == ["not_yet_valid", "expired"]
    # the same announcements against a monotonic `now` that happens to lie in their window: still refused
    assert t.accept(early, WALL + limits.CLOCK_SKEW + 20, WALL) is None


def test_expiry_becomes_a_monotonic_deadline(keys, table):
    outer, inner = keys
    t, _ = table
    acc = t.accept(announcement(outer, inner, epoch=3, lifetime=600.0), NOW, WALL)
    assert acc is not None
    ep = acc.epoch
    # not_after = 1.7e9 + 600; wall = 1.7e9 + 100: 500 s + skew left, on the monotonic clock
    assert ep.expires == pytest.approx(NOW + 500 + limits.CLOCK_SKEW)
    assert t.next_timer() == ep.expires
    assert not ep.retire_due(ep.expires - 0.001) and ep.retire_due(ep.expires + 0.001)


def test_rotation_continues_the_lineage_and_starts_the_overlap(keys, table):
    outer, inner = keys
    t, _ = table
    first = t.accept(announcement(outer, inner, epoch=20), NOW, WALL)
    assert first is not None
    rot = t.accept(announcement(outer, inner, epoch=21, key=bytes(16), first_block=500), NOW + 1, WALL + 1)
    assert rot is not None and rot.rotated_from is first.epoch
    assert rot.epoch.lineage == first.epoch.lineage == 20
    assert rot.epoch.ledger.start == 500
    assert first.epoch.retire_at == NOW + 1 + limits.KEY_OVERLAP
    assert t.current is rot.epoch
    t.retire(rot.epoch)
    assert t.current is first.epoch and list(t.epochs) == [20]


def test_refusals_in_order_of_cost(keys, other_key, table):
    outer, inner = keys
    t, report = table
    assert t.accept(announcement(other_key, inner, epoch=5), NOW, WALL) is None
    assert t.accept(announcement(outer, other_key, epoch=5), NOW, WALL) is None
    assert t.accept(announcement(outer, inner, epoch=9), NOW, WALL) is not None
    assert t.accept(announcement(outer, inner, epoch=8), NOW, WALL) is None
    changed = announcement(outer, inner, epoch=9, key=bytes(16))
    assert t.accept(changed, NOW, WALL) is None
    assert t.accept(b"\xfeR\x02\x02garbage", NOW, WALL) is None
    assert _refusals(report) == ["wrong_outer_key", "wrong_inner_key", "old_epoch", "epoch_changed"]
    assert report.counters.dropped_by_reason == {"bad_announcement": 1}


def test_signature_checks_are_rate_limited(keys, table):
    outer, inner = keys
    t, report = table
    n = int(limits.ANNOUNCE_VERIFY_RATE)
    results = [t.accept(announcement(outer, inner, epoch=100 + i), NOW, WALL) for i in range(n + 3)]
    assert all(r is not None for r in results[:n]) and results[n:] == [None] * 3
    assert report.counters.dropped_by_reason["announcement_rate_limited"] == 3


def test_a_new_policy_hash_refreshes_the_epoch(keys, table):
    outer, inner = keys
    t, _ = table
    t.accept(announcement(outer, inner, epoch=30), NOW, WALL)
    acc = t.accept(announcement(outer, inner, epoch=30, policy_hash=b"\x01" * 32), NOW, WALL)
    assert acc is not None and not acc.new and acc.epoch.policy_hash == b"\x01" * 32
