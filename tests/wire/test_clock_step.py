"""The sender's wall clock steps (issue 14 item 5): it rotates to an epoch announced from the new
clock, so an epoch announced while its clock was wrong does not stay refused once it is right."""

from __future__ import annotations

import random

import pytest

from ferry import limits
from ferry.wire import KeyRotated, LinkReceiver, LinkSender
from ferry.wire.announce import parse_announcement
from ferry.wire.events import (AnnouncementRefused, BlockLost, BlockSealed, HeartbeatReceived, KeyAccepted,
                               ObjectReceived)
from ferry.wire.frame import TYPE_ANNOUNCEMENT
from ferry.reasons import Reason

NOW, WALL, HOUR = 500.0, 1.7e9, 3600.0


class Pair:
    """A sender and a receiver, each with its own wall clock (offsets from the real time)."""

    def __init__(self, keys, *, sender_off: float = 0.0, receiver_off: float = 0.0, now: float = NOW,
                 receiver: LinkReceiver | None = None, **kw) -> None:
        outer, inner = keys
        self.now, self.sender_off, self.receiver_off = now, sender_off, receiver_off
        self.s = LinkSender(outer_key=outer, inner_public=inner.public_key(), policy_hash=bytes(32), name="o",
                            now=now, wall=self.real + sender_off, rng=random.Random(1).randbytes, **kw)
        self.r = receiver or LinkReceiver(inner_key=inner, outer_public=outer.public_key(), now=now, strict=True)
        self.events: list = []
        self.rotations: list[KeyRotated] = []

    @property
    def real(self) -> float:
        return WALL + (self.now - NOW)

    def run(self, seconds: float, dt: float = 0.25) -> None:
        end = self.now + seconds
        while self.now < end:
            self.now += dt
            s = self.s
            s.flush(self.now, self.real + self.sender_off)
            t = s.get_timer()
            if t is not None and t <= self.now:
                s.handle_timer(self.now, self.real + self.sender_off)
            for d in s.datagrams_to_send(self.now):
                self.r.receive_datagram(d, self.now, self.real + self.receiver_off)
            t = self.r.get_timer()
            if t is not None and t <= self.now:
                self.r.handle_timer(self.now)
            while (e := s.next_event()) is not None:
                if isinstance(e, KeyRotated):
                    self.rotations.append(e)
            while (e := self.r.next_event()) is not None:
                self.events.append(e)

    def of(self, cls) -> list:
        return [e for e in self.events if isinstance(e, cls)]


def test_a_step_within_the_bound_rotates_nothing(keys):
    p = Pair(keys)
    p.run(3.0)
    p.sender_off = limits.CLOCK_STEP_MAX - 0.5      # NTP slewing or a small correction
    p.run(3.0)
    assert p.rotations == [] and p.r.link_up


def test_outer_started_an_hour_ahead_is_refused_then_accepted_once_its_clock_steps_back(keys):
    """Bug 1 of issue 14 item 5, without processes: the sender's epoch starts in the receiver's future
    (not_yet_valid, every repeat); when its clock steps back it rotates at once, and the receiver
    accepts the new epoch (its number above the refused one) and objects cross again."""
    p = Pair(keys, sender_off=HOUR)
    first = p.s.epoch
    p.run(3.0)
    assert {e.reason for e in p.of(AnnouncementRefused)} == {Reason.NOT_YET_VALID}
    assert p.r.current_epoch is None and not p.of(HeartbeatReceived)
    p.sender_off = 0.0                               # NTP corrects the clock
    p.run(1.25)                                     # at the next timer (within HEARTBEAT_INTERVAL)
    [rot] = p.rotations
    assert rot.reason == "clock" and rot.epoch == first + 1 and rot.clock_step == pytest.approx(-HOUR)
    assert p.r.current_epoch == rot.epoch and [e.epoch for e in p.of(KeyAccepted)] == [rot.epoch]
    p.s.submit(7, b"after the step", p.now, p.real)
    p.run(2.0)
    assert [e.object_id for e in p.of(ObjectReceived)] == [7] and p.r.link_up


def test_outer_started_an_hour_behind_gets_an_epoch_above_the_floor_once_its_clock_steps_forward(keys):
    """The reverse case: a sender (re)started with its clock an hour behind numbers its epoch
    int(wall), below the receiver's floor (an earlier run's epoch): `old_epoch`. Once the clock is
    set, the clock rotation numbers the new epoch int(wall), above the floor again."""
    p = Pair(keys)
    p.run(2.0)
    floor = p.r.key_epochs.floor
    assert floor == p.s.epoch
    later = Pair(keys, sender_off=-HOUR, now=p.now, receiver=p.r)   # the restarted sender, clock behind
    later.run(3.0)
    assert floor > later.s.epoch
    assert {e.reason for e in later.of(AnnouncementRefused)} == {Reason.OLD_EPOCH}
    later.sender_off = 0.0
    later.run(1.25)
    [rot] = later.rotations
    assert int(later.real) - 2 <= rot.epoch <= int(later.real) and rot.epoch > floor
    assert later.r.current_epoch == rot.epoch


@pytest.mark.parametrize("step", [HOUR, -HOUR])
def test_a_step_while_the_receiver_agrees_with_the_old_clock_keeps_the_link_up(keys, step):
    """The sender cannot tell which clock is right: the new epoch's validity spans both, so a
    receiver that agrees with the old clock accepts it too (the link stays up; objects made with the
    wrong time are the lanes' to refuse)."""
    p = Pair(keys)
    p.run(2.0)
    p.sender_off = step
    p.run(1.25)                                     # at the next timer (within HEARTBEAT_INTERVAL)
    [rot] = p.rotations
    a = parse_announcement(p.s.announcement)
    real = p.real
    lo, hi = min(real, real + step), max(real, real + step)        # the two clocks (within a timer tick)
    assert lo - 1.5 <= a.not_before <= lo
    assert a.not_after >= hi - 1.5 + limits.KEY_LIFETIME + limits.KEY_OVERLAP
    assert p.r.current_epoch == rot.epoch
    beats = len(p.of(HeartbeatReceived))
    p.run(3.0)
    assert len(p.of(HeartbeatReceived)) > beats and p.r.link_up and not p.of(AnnouncementRefused)


def test_a_step_beyond_the_span_is_announced_from_the_new_clock_only(keys):
    """A clock that was years off (a box without a real-time clock) is not spanned: the new validity
    is from the new clock alone."""
    p = Pair(keys, sender_off=-10 * 365 * 86400.0)
    p.run(1.0)
    p.sender_off = 0.0
    p.run(1.25)                                     # at the next timer (within HEARTBEAT_INTERVAL)
    a = parse_announcement(p.s.announcement)
    assert a.not_before == pytest.approx(p.real, abs=1.0)
    assert a.not_after - a.not_before == pytest.approx(limits.KEY_LIFETIME + limits.KEY_OVERLAP, abs=1.0)


def test_the_clock_rotation_is_announced_after_the_blocks_made_before_it(keys):
    """With track_sent, the step's announcement waits for the blocks made before it, as a rotation's."""
    p = Pair(keys, track_sent=True)
    p.s.submit(1, b"x" * 5000, p.now, p.real)
    p.s.flush(p.now, p.real)
    made = p.s.counters.blocks
    p.s.control_to_send(p.now)
    p.s.handle_timer(p.now + 1.0, p.real + 1.0 + HOUR)
    anns = [c for c in p.s.control_to_send(p.now + 1.0) if c.data[3] == TYPE_ANNOUNCEMENT]
    assert anns and {c.after_block for c in anns} == {made}


def test_an_object_taken_after_the_step_goes_under_the_new_epoch(keys):
    """submit() given the wall clock notices the step before it packs: the object is not sealed
    under the epoch the receiver refuses (the timer would notice it up to a second later)."""
    p = Pair(keys, sender_off=HOUR)
    first = p.s.epoch
    p.run(1.0)
    p.sender_off = 0.0
    p.s.submit(9, b"taken right after the step", p.now, p.real)
    p.s.flush(p.now, p.real)
    sealed = []
    while (e := p.s.next_event()) is not None:
        if isinstance(e, BlockSealed):
            sealed.append(e.epoch)
        elif isinstance(e, KeyRotated):
            p.rotations.append(e)
    assert [r.reason for r in p.rotations] == ["clock"] and sealed == [first + 1]


def test_blocks_of_a_restarted_run_refused_for_its_clock_are_named_lost_once_it_is_keyed(keys):
    """A sender restarted with its clock an hour ahead sends objects under an epoch the receiver
    refuses (not_yet_valid). Once its clock is right and it rotated, the receiver keys the new epoch
    and names the refused epoch's blocks lost (it verified that announcement: they were sent), so
    every object of that run is delivered or lost, none unaccounted."""
    p = Pair(keys)
    p.run(2.0)
    later = Pair(keys, sender_off=HOUR, now=p.now, receiver=p.r)       # the restarted sender
    refused = later.s.epoch
    for oid in range(1, 4):
        later.s.submit(oid, bytes([oid]) * 3000, later.now, later.real + HOUR)
        later.s.flush(later.now, later.real + HOUR)
        later.run(1.0)
    assert {e.reason for e in later.of(AnnouncementRefused)} == {Reason.NOT_YET_VALID}
    later.sender_off = 0.0
    later.s.submit(4, b"after", later.now, later.real)
    later.run(6.0)
    lost = later.of(BlockLost)
    assert [(e.epoch, e.block_no) for e in lost] == [(refused, 0)] and lost[0].count >= 3
    assert [e.object_id for e in later.of(ObjectReceived)] == [4]


def test_a_fresh_receiver_names_no_blocks_of_a_refused_epoch(keys):
    """Without an epoch floor (never keyed, no stored state) a refused announcement may be an old
    capture: its epoch is not taken for the predecessor of the first one keyed, nothing is named lost."""
    p = Pair(keys, sender_off=HOUR)
    for oid in range(1, 3):
        p.s.submit(oid, bytes([oid]) * 3000, p.now, p.real + HOUR)
        p.run(1.0)
    assert p.r.key_epochs.floor == -1 and p.of(AnnouncementRefused)
    p.sender_off = 0.0
    p.run(6.0)
    assert p.r.current_epoch == p.s.epoch and not p.of(BlockLost)
