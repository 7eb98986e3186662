"""LossAccounting: proven blocks still missing are reported lost once, after BLOCK_TIMEOUT."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings, strategies as st

from ferry import limits
from ferry.wire.events import BlockLost, ObjectReceived
from ferry.wire.loss import Ledger, LossAccounting
from ferry.wire.replay import ReplayWindow
from ferry.wire.report import Report
from .wire_sim import Channel, Link


class FakePending:
    def __init__(self) -> None:
        self.seen: dict = {}
        self.notes: dict = {}
        self.abandoned: list = []

    def first_seen(self, key):
        return self.seen.get(key)

    def abandon(self, key) -> bool:
        if key in self.seen:
            del self.seen[key]
            self.abandoned.append(key)
            return True
        return False

    def failure(self, key):
        return self.notes.get(key)

    def known_from(self, epoch, lo, hi):
        known = [b for e, b in [*self.seen, *self.notes] if e == epoch and lo <= b < hi]
        return min(known) if known else None


def _setup(start=0, window=limits.REPLAY_WINDOW):
    report = Report(0.0)
    pending = FakePending()
    lost_calls: list = []
    loss = LossAccounting(report, pending, lost_calls.append)
    led = Ledger(epoch=3, lineage=3, first_block=0, replay=ReplayWindow(window), start=start)
    return loss, led, report, pending, lost_calls


def _lost(report: Report) -> list:
    return [(e.block_no, e.reason) for e in report.events if isinstance(e, BlockLost)]


def _gaps(report: Report) -> list:
    return [(e.block_no, e.count, e.reason) for e in report.events if isinstance(e, BlockLost)]


def test_a_gap_is_lost_after_the_block_timeout_of_its_proof():
    loss, led, report, pending, lost_calls = _setup()
    loss.opened(led, 0, 1.0)
    loss.opened(led, 2, 1.5)  # proves block 1 sent at 1.5
    loss.resolve(led, 1.5)
    assert _lost(report) == [] and led.deadline == 1.5 + limits.BLOCK_TIMEOUT
    loss.resolve(led, 1.5 + limits.BLOCK_TIMEOUT)
    assert _lost(report) == [(1, "missing")] and lost_calls == [(3, 1)]
    assert led.resolved == 3 and led.deadline is None
    loss.resolve(led, 100.0)
    assert len(_lost(report)) == 1  # once


def test_a_pending_block_gets_its_own_grace_and_the_reason_timeout():
    loss, led, report, pending, _ = _setup()
    pending.seen[(3, 0)] = 5.0  # its first symbol came after the proof
    loss.advance(led, 1, 4.0)
    loss.resolve(led, 4.0 + limits.BLOCK_TIMEOUT)
    assert _lost(report) == [] and led.deadline == 5.0 + limits.BLOCK_TIMEOUT
    loss.resolve(led, 5.0 + limits.BLOCK_TIMEOUT)
    assert _lost(report) == [(0, "timeout")] and pending.abandoned == [(3, 0)]


def test_failure_notes_give_the_reason_and_the_window_forces_resolution():
    loss, led, report, pending, _ = _setup(window=8)
    pending.notes[(3, 1)] = "auth"
    loss.opened(led, 0, 0.0)
    loss.opened(led, 20, 0.0)  # blocks 1..12 leave the window of 8: lost at once, one gap
    assert _gaps(report) == [(1, 12, "auth")]


def test_late_joiner_start_from_the_first_heartbeat():
    # a receiver 5 s old meeting an epoch 100 s old joined mid-way: it counts from what it saw
    loss, led, report, _, _ = _setup(start=None)
    led.first_block = 0
    loss.opened(led, 50, 0.0)
    loss.join(led, receiver_age=5.0, epoch_age=100.0, next_block=60, now=0.0)
    assert led.start == 50 and led.missing_before_start(49) and not led.missing_before_start(50)
    # one about as old as the epoch saw its first block: a first block lost is reported
    # (a restarted receiver resumes with its start given and never gets here)
    loss2, led2, _, _, _ = _setup(start=None)
    loss2.join(led2, receiver_age=100.0, epoch_age=100.0 + limits.LATE_JOIN_AGE_MARGIN, next_block=60, now=0.0)
    assert led2.start == 0 and not led2.missing_before_start(0)


def test_the_report_budget_yields_to_the_timer(monkeypatch):
    monkeypatch.setattr(limits, "LOSS_REPORTS_PER_CALL", 3)
    loss, led, report, _, _ = _setup()
    for b in range(1, 20, 2):  # ten gaps of one block: 0, 2, .., 18
        loss.opened(led, b, 0.0)
    loss.resolve(led, limits.BLOCK_TIMEOUT)
    assert len(_lost(report)) == 3 and led.deadline == limits.BLOCK_TIMEOUT
    loss.resolve(led, limits.BLOCK_TIMEOUT)
    loss.resolve(led, limits.BLOCK_TIMEOUT)
    loss.resolve(led, limits.BLOCK_TIMEOUT)
    assert [b for b, _ in _lost(report)] == list(range(0, 20, 2))


# --- issue 10 item 4: a loss once per gap ---------------------------------------------------
@pytest.mark.parametrize("n", [1, 2, 5, 63, 64, 1000, limits.REPLAY_WINDOW - 2])
def test_a_gap_of_any_length_is_one_record(n):
    loss, led, report, _, lost_calls = _setup()
    loss.opened(led, 0, 1.0)
    loss.opened(led, n + 1, 1.0)  # proves blocks 1 .. n sent
    loss.resolve(led, 1.0 + limits.BLOCK_TIMEOUT)
    assert _gaps(report) == [(1, n, "missing")]
    assert report.counters.blocks_lost == n and led.resolved == n + 2
    assert sorted(set(lost_calls)) == sorted({(3, 1), (3, n)})  # the objects at its two ends


def test_gaps_between_opened_blocks_are_one_record_each():
    loss, led, report, _, _ = _setup()
    for b in (0, 3, 4, 10, 11, 12, 40):
        loss.opened(led, b, 1.0)
    loss.resolve(led, 1.0 + limits.BLOCK_TIMEOUT)
    assert _gaps(report) == [(1, 2, "missing"), (5, 5, "missing"), (13, 27, "missing")]


def test_a_gap_with_pending_and_failed_blocks_in_it_is_still_one_record():
    loss, led, report, pending, _ = _setup()
    pending.notes[(3, 5)] = "fec"
    pending.seen[(3, 7)] = 1.0  # some symbols came, never enough
    loss.opened(led, 0, 1.0)
    loss.opened(led, 10, 1.0)
    loss.resolve(led, 1.0 + limits.BLOCK_TIMEOUT)
    assert _gaps(report) == [(1, 9, "fec")]  # the reason of the first block seen in it
    assert pending.abandoned == [(3, 7)]


def test_a_gap_waits_for_its_pending_block_and_is_then_one_record():
    loss, led, report, pending, _ = _setup()
    loss.opened(led, 0, 1.0)
    loss.opened(led, 10, 1.0)
    pending.seen[(3, 6)] = 2.5  # its first symbol after the proof: its own grace
    loss.resolve(led, 1.0 + limits.BLOCK_TIMEOUT)
    assert _gaps(report) == [] and led.deadline == 2.5 + limits.BLOCK_TIMEOUT
    loss.resolve(led, 2.5 + limits.BLOCK_TIMEOUT)
    assert _gaps(report) == [(1, 9, "timeout")]


def test_a_gap_proven_in_two_steps_is_one_record_when_all_of_it_is_due():
    loss, led, report, _, _ = _setup()
    loss.opened(led, 0, 1.0)
    loss.advance(led, 5, 1.0)   # a heartbeat proves blocks 1 .. 4
    loss.opened(led, 9, 2.0)    # block 9 proves 5 .. 8 a second later
    loss.resolve(led, 1.0 + limits.BLOCK_TIMEOUT)
    assert _gaps(report) == [] and led.deadline == 2.0 + limits.BLOCK_TIMEOUT
    loss.resolve(led, 2.0 + limits.BLOCK_TIMEOUT)
    assert _gaps(report) == [(1, 8, "missing")]


def test_a_gap_open_at_the_frontier_reports_what_is_due():
    loss, led, report, _, _ = _setup()
    loss.opened(led, 0, 1.0)
    loss.advance(led, 5, 1.0)   # heartbeats only: nothing after the gap was opened
    loss.advance(led, 9, 3.0)
    loss.resolve(led, 1.0 + limits.BLOCK_TIMEOUT)
    assert _gaps(report) == [(1, 4, "missing")] and led.deadline == 3.0 + limits.BLOCK_TIMEOUT
    loss.resolve(led, 3.0 + limits.BLOCK_TIMEOUT)
    assert _gaps(report) == [(1, 4, "missing"), (5, 4, "missing")]


def test_a_start_given_from_outside_reports_nothing_below_it():
    """The hook for a receiver that persisted its link state: accounting starts at the block
    after the highest its previous run opened; what that run delivered is never reported."""
    loss, led, report, _, _ = _setup(start=None)
    loss.decide_start(led, 500, 1.0)
    loss.opened(led, 505, 1.0)
    loss.resolve(led, 1.0 + limits.BLOCK_TIMEOUT)
    assert _gaps(report) == [(500, 5, "missing")]
    assert led.missing_before_start(499) and not led.missing_before_start(500)


def test_a_gap_held_back_by_a_pending_block_gives_up_nothing_before_it_is_reported():
    loss, led, report, pending, _ = _setup()
    pending.seen[(3, 3)] = 1.0   # due at 1.0 + BLOCK_TIMEOUT
    pending.seen[(3, 6)] = 2.5   # due later: the whole gap waits for it
    loss.opened(led, 0, 1.0)
    loss.opened(led, 10, 1.0)
    loss.resolve(led, 1.0 + limits.BLOCK_TIMEOUT)
    assert _gaps(report) == [] and pending.abandoned == []
    loss.resolve(led, 2.5 + limits.BLOCK_TIMEOUT)
    assert _gaps(report) == [(1, 9, "timeout")] and pending.abandoned == [(3, 3), (3, 6)]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 300), st.floats(0, 3)), max_size=60),
       st.sets(st.integers(0, 300), max_size=10), st.sets(st.integers(0, 300), max_size=10),
       st.integers(0, 320))
def test_property_every_proven_missing_block_is_reported_once_in_one_record_per_gap(
        opens, pending_at, failed_at, heartbeat):
    """Blocks opened in any order at any times, some pending or failed, a heartbeat: once all is
    due, the records are disjoint, cover exactly the proven blocks not opened in time (a block
    that comes after its loss was reported stays lost), and the gaps closed by an opened block
    are one record each."""
    loss, led, report, pending, _ = _setup()
    now = 0.0
    for b in pending_at:
        pending.seen[(3, b)] = 0.5
    for b in failed_at:
        pending.notes[(3, b)] = "fec"
    opened = set()
    for b, dt in opens:
        now += dt
        if led.replay.check(b):
            if b >= led.resolved:  # else it came after its loss was reported: it stays lost
                opened.add(b)
            loss.opened(led, b, now)
        loss.resolve(led, now)
    loss.advance(led, heartbeat, now)
    for _ in range(3):
        now += limits.BLOCK_TIMEOUT
        loss.resolve(led, now)
    got = sorted((e.block_no, e.block_no + e.count) for e in report.events if isinstance(e, BlockLost))
    assert all(a[1] <= b[0] for a, b in zip(got, got[1:]))                    # disjoint
    covered = {n for lo, hi in got for n in range(lo, hi)}
    frontier = max([heartbeat] + [b + 1 for b in opened])
    assert covered == set(range(frontier)) - opened                            # exactly the proven missing
    if opened:
        last = max(opened)
        gaps = [(lo, hi) for lo, hi in got if hi <= last]                      # closed by an opened block
        assert all(hi in opened for _, hi in gaps)                              # each a whole gap
        assert len(gaps) == len({hi for _, hi in gaps})


def test_a_restarted_receiver_never_reports_blocks_of_objects_its_predecessor_delivered(keys):
    """The e2e symptom (issue 10 item 4): a restarted receiver counted losses from the epoch's
    first block and reported the blocks its previous run delivered. A restarted receiver
    resumes from its stored link state (resume.py): it counts from the block after the highest
    its previous run opened, whatever a late (stale) heartbeat says."""
    link = Link(keys, Channel(random.Random(43)))
    link.idle(0.5)
    for oid in range(1, 6):
        link.submit(oid, bytes([oid]) * 30_000)
    link.step()
    delivered = {e.object_id for e in link.of(ObjectReceived)}
    assert delivered == set(range(1, 6))
    link.sender.heartbeat(link.now, link.wall)
    stale = [d for d in link.sender.datagrams_to_send(link.now) if d[3] == 3]  # queued, arrives late
    state = link.receiver.snapshot()
    link.idle(5.0)
    link.receiver = link.new_receiver()  # inner restart, from its stored state
    assert link.receiver.resume(state, link.now, link.wall)
    link.events.clear()
    link.deliver([link.sender.announcement] + stale)
    for oid in range(100, 110):
        link.submit(oid, bytes([oid]) * 3000)
        link.step(0.1)
    link.idle(limits.BLOCK_TIMEOUT * 3)
    lost = {b for e in link.of(BlockLost) for b in range(e.block_no, e.block_no + e.count)}
    theirs = {b for (_, b), ids in link.sealed.items() if set(ids) & delivered}
    assert not lost & theirs, f"{len(lost & theirs)} blocks of delivered objects reported lost"
    assert {e.object_id for e in link.of(ObjectReceived)} >= set(range(100, 110))
