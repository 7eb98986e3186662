"""Reassembly: fragments into objects, overlaps and lost neighbours, bounds and timeouts."""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings, strategies as st

from ferry import limits
from ferry.wire.block import Fragment
from ferry.wire.events import BlockLost, ObjectLost, ObjectReceived
from ferry.wire.loss import Ledger
from ferry.wire.reassembly import Reassembly
from .wire_sim import Channel, Link, block_of
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
    assert ra.needs == {(4, 1): {(4, 2)}}   # block -> (lineage, object id) waiting for it
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
    # its block range: the block that carried it and the one it needed
    assert [(e.object_id, e.reason, e.blocks) for e in _events(report, ObjectLost)] == [(7, "block_lost", (5, 6))]
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


# --- issue 10 item 4, with the receiver: a loss once per gap and once per object ----------
def _send(link: Link, objects: list[tuple[int, bytes]]) -> list[bytes]:
    """Submit objects; the datagrams their sealing produces (the link's sealed map updated)."""
    for oid, payload in objects:
        link.submit(oid, payload)
    link.sender.flush(link.now)
    out = link.sender.datagrams_to_send(link.now)
    link.step(0.0, flush=False)  # collect the sender's events (BlockSealed)
    return out


def _without(datagrams: list[bytes], blocks: set[int]) -> list[bytes]:
    return [d for d in datagrams if block_of(d) is None or block_of(d)[1] not in blocks]


def _blocks_of(link: Link, oid: int) -> list[int]:
    return sorted(b for (_, b), ids in link.sealed.items() if oid in ids)


def _settle(link: Link) -> None:
    link.idle(limits.BLOCK_TIMEOUT * 2)
    for _ in range(4):  # every timer the receiver asks for
        link.now += limits.BLOCK_TIMEOUT
        link.step(0.0)


def test_a_gap_is_one_block_lost_and_an_object_one_object_lost_with_its_block_range(keys):
    link = Link(keys, Channel(random.Random(41)))
    link.idle(1.0)
    big = 200_000  # two multi-block objects with small ones between them
    objects = [(1, b"a" * big)] + [(oid, bytes([oid]) * 3000) for oid in range(2, 12)] + [(12, b"b" * big)]
    datagrams = _send(link, objects)
    b1, b12 = _blocks_of(link, 1), _blocks_of(link, 12)
    assert len(b1) > 6 and len(b12) > 6
    inside = set(b1[2:5])                                  # 3 blocks in the middle of object 1
    across = set(range(b1[-1], b12[3]))                    # from object 1's end into object 12
    assert len(across) >= 4
    link.deliver(_without(datagrams, inside | across))
    _settle(link)
    gaps = sorted((e.block_no, e.count) for e in link.of(BlockLost))
    assert gaps == [(b1[-1], len(across))]                 # one record per gap, whatever its length
    # (the gap inside object 1 is recorded by object 1's object_lost alone: it carried nothing else)
    lost = {e.object_id: e for e in link.of(ObjectLost)}
    assert len(link.of(ObjectLost)) == len(lost) == 2      # once per object
    # object 1 from its first block to its last; object 12 from the block before the first one
    # that came (it needed it) to its last: where it began, the receiver cannot know
    assert lost[1].blocks == (b1[0], b1[-1]) and lost[12].blocks == (max(across), b12[-1])
    acc = link.account()
    assert acc["delivered"] == set(link.sent) - {1, 12} - {oid for oid in range(2, 12)
                                                           if set(_blocks_of(link, oid)) & across}


def test_a_block_that_comes_after_its_loss_was_reported_is_not_delivered(keys):
    """Its objects were accounted lost with the gap: delivering them now would make them both
    delivered and lost (the e2e symptom). The receiver never reports a block of a delivered
    object, nor delivers an object of a block it reported."""
    link = Link(keys, Channel(random.Random(42)))
    link.idle(1.0)
    datagrams = _send(link, [(oid, bytes([oid]) * 1500) for oid in range(1, 40)])
    blocks = sorted(b for _, b in link.sealed)
    late = {blocks[len(blocks) // 2]}
    link.deliver(_without(datagrams, late))
    _settle(link)
    assert [(e.block_no, e.count) for e in link.of(BlockLost)] == [(min(late), 1)]
    in_late = set(link.sealed[(link.sender.epoch, min(late))])
    link.deliver([d for d in datagrams if block_of(d) is not None and block_of(d)[1] in late])  # too late
    _settle(link)
    delivered = {e.object_id for e in link.of(ObjectReceived)}
    assert not delivered & in_late
    assert link.receiver.counters.dropped_by_reason.get("stale_fragment", 0) >= len(in_late)
    link.account()  # nothing both delivered and lost, every object delivered or lost


def test_a_gap_inside_one_known_object_is_recorded_once_by_its_object_lost(keys):
    """Blocks that belong to a known object (it came on both sides of the gap: an object's
    blocks are consecutive, so they carry nothing else) are accounted by its ObjectLost alone;
    a gap that also touches blocks of objects the receiver never saw is a BlockLost."""
    link = Link(keys, Channel(random.Random(44)))
    link.idle(1.0)
    datagrams = _send(link, [(1, b"a" * 300_000), (2, b"b" * 100)])
    b1 = _blocks_of(link, 1)
    inside = set(b1[3:7])
    link.deliver(_without(datagrams, inside))
    _settle(link)
    assert not link.of(BlockLost), link.of(BlockLost)
    [lost] = link.of(ObjectLost)
    assert (lost.object_id, lost.blocks) == (1, (b1[0], b1[-1]))
    link.account()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.integers(1, 120_000), min_size=1, max_size=25), st.sets(st.integers(0, 63), max_size=12),
       st.sets(st.integers(0, 63), max_size=4), st.integers(0, 2**32))
def test_property_any_loss_and_late_blocks_each_object_delivered_or_lost_never_both(
        keys, sizes, dropped, late, seed):
    """Objects of any size, any blocks dropped, some of them coming late (after their loss was
    reported): every object is delivered or lost, none both, each loss recorded once (the link
    simulator's accounting), and gaps are whole: no two block_lost records adjacent."""
    link = Link(keys, Channel(random.Random(seed)))
    link.idle(1.0)
    datagrams = _send(link, [(oid, bytes([oid % 256]) * n) for oid, n in enumerate(sizes)])
    blocks = sorted(b for _, b in link.sealed)
    dropped = {blocks[i % len(blocks)] for i in dropped}
    late = {blocks[i % len(blocks)] for i in late}
    link.deliver(_without(datagrams, dropped | late))
    _settle(link)
    link.deliver([d for d in datagrams if block_of(d) is not None and block_of(d)[1] in late - dropped])
    _settle(link)
    link.account()
    ranges = sorted((e.block_no, e.block_no + e.count) for e in link.of(BlockLost))
    assert all(a[1] < b[0] for a, b in zip(ranges, ranges[1:]))


def test_a_resent_object_from_a_later_run_is_reassembled_again():
    """A restarted outer agent (a new lineage) re-sends an object with its ID: delivered and lost
    objects of the earlier run do not make its fragments stale (the dispatcher drops a duplicate)."""
    ra, led, report, _ = _setup()
    ra.deliver(led, 0, [_frag(1, 3, 0, b"abc"), _frag(2, 6, 0, b"de")], 0.0)
    ra.handle_timer(limits.OBJECT_TIMEOUT + 1)                 # object 2 lost in run 1
    ra.deliver(led, 1, [_frag(1, 3, 0, b"abc")], 1.0)          # same run: stale
    assert report.counters.objects == 1
    later = Ledger(epoch=9, lineage=9, first_block=0, replay=ReplayWindow(), start=0)
    ra.deliver(later, 0, [_frag(1, 3, 0, b"abc"), _frag(2, 6, 0, b"def")], 2.0)
    ra.deliver(later, 1, [_frag(2, 6, 3, b"ghi")], 2.0)
    got = [(e.object_id, e.payload, e.epoch) for e in _events(report, ObjectReceived)]
    assert got == [(1, b"abc", 4), (1, b"abc", 9), (2, b"defghi", 9)]
    assert [e.object_id for e in _events(report, ObjectLost)] == [2]
