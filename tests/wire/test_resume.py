"""A receiver resumed from a stored LinkState: replays refused, the key at once, losses as one gap."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ferry.wire.events import AnnouncementRefused, BlockLost, KeyAccepted, ObjectReceived
from ferry.wire.resume import LinkState, ResumeError, decode, encode

from .wire_sim import Channel, Link


def _restart(link: Link, state: LinkState) -> bool:
    """The receiver process dies and a new one starts from `state`."""
    link.receiver = link.new_receiver()
    ok = link.receiver.resume(state, link.now, link.wall)
    link.collect()
    return ok


def test_a_resumed_receiver_refuses_a_replay_and_goes_on_at_once(keys):
    link = Link(keys, Channel(random.Random(1)))
    for i in range(1, 6):
        link.submit(i, bytes([i]) * 30_000)
    link.idle(1.0)
    captured = list(link.channel.log)
    assert {e.object_id for e in link.of(ObjectReceived)} == {1, 2, 3, 4, 5}
    state = decode(encode(link.receiver.snapshot()))
    epoch = link.sender.epoch
    assert state.floor == epoch and state.opened[epoch] >= 5 and state.announcement
    link.events.clear()
    assert _restart(link, state)                     # the key at once: no announcement needed
    assert [e.epoch for e in link.of(KeyAccepted)] == [epoch]
    link.deliver(captured)                           # the whole capture again, announcement included
    assert not link.of(ObjectReceived)
    assert link.receiver.counters.dropped_by_reason["replay"] > 0
    # data sent while the receiver was down is one gap; what comes after is delivered
    downtime = link.receiver
    link.receiver = link.new_receiver()              # a receiver nobody feeds: the link is "down"
    for i in range(10, 13):
        link.submit(i, bytes([i]) * 30_000)
    link.idle(0.5)
    link.receiver = downtime
    link.events.clear()
    for i in range(20, 23):
        link.submit(i, bytes([i]) * 30_000)
    link.idle(6.0)
    assert {e.object_id for e in link.of(ObjectReceived)} == {20, 21, 22}
    gaps = link.of(BlockLost)
    assert len(gaps) == 1 and gaps[0].reason == "missing" and gaps[0].count >= 3   # one gap, one record
    lost = list(range(gaps[0].block_no, gaps[0].block_no + gaps[0].count))
    # exactly the blocks sent while it was down: nothing opened before the restart is lost
    assert lost == list(range(state.opened[epoch] + 1, state.opened[epoch] + 1 + len(lost)))


def test_an_older_epoch_is_refused_after_a_restart_once(keys):
    link = Link(keys, Channel(random.Random(2)))
    link.submit(1, b"first run")
    link.idle(1.0)
    old_run = list(link.channel.log)
    link.sender = link.new_sender(epoch=link.sender.epoch + 100)   # the outer agent restarted: newer epoch
    link.submit(2, b"second run")
    link.idle(1.0)
    assert {e.object_id for e in link.of(ObjectReceived)} == {1, 2}
    state = link.receiver.snapshot()
    link.events.clear()
    assert _restart(link, state)
    link.deliver(old_run)
    link.deliver(old_run)
    link.idle(0.5)
    assert not link.of(ObjectReceived)
    refused = link.of(AnnouncementRefused)
    assert [e.reason for e in refused] == ["old_epoch"]            # recorded once, however often replayed


def test_a_stored_announcement_is_checked_again(keys):
    link = Link(keys, Channel(random.Random(3)))
    link.idle(0.5)
    state = link.receiver.snapshot()
    link.wall_offset += 30 * 24 * 3600.0                           # a month later: the key has expired
    link.events.clear()
    assert not _restart(link, state)
    link.deliver([state.announcement] * 3)                         # replayed: counted, recorded once
    assert [e.reason for e in link.of(AnnouncementRefused)] == ["expired"]
    assert link.receiver.counters.announcements_refused == 4
    assert link.receiver.current_epoch is None
    assert link.receiver.key_epochs.floor == state.floor           # the floor holds all the same


def test_encode_decode_roundtrip():
    s = LinkState(17, b"\xfeR\x02\x02abc", {17: 4000, 16: 12})
    assert decode(encode(s)) == s
    assert decode(encode(LinkState())) == LinkState()
    assert s.merged({17: 3999, 18: 5}).opened == {17: 4000, 16: 12, 18: 5}


@given(st.binary(max_size=400), st.integers(0, 400), st.integers(1, 255))
def test_decode_refuses_anything_but_a_good_state(junk, pos, flip):
    good = encode(LinkState(17, b"abc", {17: 4000}))
    for data in (junk, good[: pos % len(good)], good[:pos % len(good)] + bytes([good[pos % len(good)] ^ flip])
                 + good[pos % len(good) + 1:]):
        try:
            got = decode(data)
        except ResumeError:
            continue
        assert got == LinkState(17, b"abc", {17: 4000})            # only whitespace was touched


def test_decode_names_a_checksum_mismatch():
    good = encode(LinkState(17, b"abc", {17: 4000})).replace(b'"floor": 17', b'"floor": 18')
    with pytest.raises(ResumeError, match="checksum"):
        decode(good)
