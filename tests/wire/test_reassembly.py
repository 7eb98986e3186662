"""Reassembly: fragments into objects, overlaps and lost neighbours, bounds and timeouts."""

from __future__ import annotations

from ferry import limits
from ferry.wire.block import Fragment
from ferry.wire.events import ObjectLost, ObjectReceived
from ferry.wire.loss import Ledger
from ferry.wire.reassembly import Reassembly
from ferry.wire.replay import ReplayWindow
from ferry.wire.report import Report


def _setup(start=0, first_block=0):
    report = Report(0.0)
    lost: set = set()
    led = Ledger(epoch=4, lineage=4, first_block=first_block, replay=ReplayWindow(), start=start)
    return Reassembly(report, lost), led, report, lost


def _frag(oid, total, off, data):
    return Fragment(oid, total, off, memoryview(data))


def _events(report, cls):
    return [e for e in report.events if isinstance(e, cls)]


def test_whole_and_split_objects():
    ra, led, report, _ = _setup()
    ra.deliver(led, 0, [_frag(1, 3, 0, b"abc"), _frag(2, 6, 0, b"de")], 0.0)
    assert [(e.object_id, e.payload, e.blocks) for e in _events(report, ObjectReceived)] == [(1, b"abc", (0,))]
    assert ra.needs == {(4, 1): {2}}
    ra.deliver(led, 1, [_frag(2, 6, 2, b"fghi")], 0.0)
    assert [(e.object_id, e.payload, e.blocks) for e in _events(report, ObjectReceived)][1] == (2, b"defghi", (0, 1))
    assert not ra.objects and not ra.needs and ra.nbytes == 0
    ra.deliver(led, 2, [_frag(2, 6, 0, b"de")], 0.0)  # already delivered: stale
    assert report.counters.dropped_by_reason == {"stale_fragment": 1}


def test_overlap_and_changed_total_lose_the_object():
    ra, led, report, _ = _setup()
    ra.deliver(led, 0, [_frag(5, 10, 0, b"12345")], 0.0)
    ra.deliver(led, 1, [_frag(5, 10, 4, b"xx")], 0.0)
    ra.deliver(led, 2, [_frag(6, 10, 0, b"12")], 0.0)
    ra.deliver(led, 3, [_frag(6, 11, 2, b"34")], 0.0)
    assert [(e.object_id, e.reason) for e in _events(report, ObjectLost)] == [(5, "overlap"), (6, "inconsistent_total")]
    assert not ra.objects and ra.nbytes == 0


def test_a_lost_neighbour_block_loses_the_object():
    ra, led, report, lost = _setup()
    ra.deliver(led, 5, [_frag(7, 10, 0, b"12345")], 0.0)  # needs block 6
    ra.block_lost((4, 6))
    assert [(e.object_id, e.reason, e.blocks) for e in _events(report, ObjectLost)] == [(7, "block_lost", (5,))]
    lost.add((4, 9))
    ra.deliver(led, 10, [_frag(8, 10, 5, b"12345")], 0.0)  # needs block 9, already lost
    assert _events(report, ObjectLost)[-1].reason == "block_lost"


def test_a_late_joiner_cannot_complete_what_began_before_its_start():
    ra, led, report, _ = _setup(start=50, first_block=0)
    ra.deliver(led, 50, [_frag(9, 10, 5, b"12345")], 0.0)  # needs block 49
    assert _events(report, ObjectLost)[0].reason == "start_missing"


def test_bounds_and_timeout(monkeypatch):
    monkeypatch.setattr(limits, "PENDING_OBJECTS_MAX", 2)
    ra, led, report, _ = _setup()
    for oid in range(3):
        ra.deliver(led, oid * 10, [_frag(oid, 10, 0, b"1")], float(oid))
    assert len(ra.objects) == 2 and _events(report, ObjectLost)[0].reason == "too_many_pending"
    assert ra.next_timer() == limits.OBJECT_TIMEOUT
    ra.handle_timer(1.0 + limits.OBJECT_TIMEOUT)
    assert not ra.objects and not ra.needs and ra.nbytes == 0
    assert [e.reason for e in _events(report, ObjectLost)] == ["too_many_pending", "timeout", "timeout"]
