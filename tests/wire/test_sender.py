"""LinkSender on two clocks: timers on `now` (monotonic), validity and epoch numbers on `wall`."""

from __future__ import annotations

import random

from ferry import limits
from ferry.pb import ferry_pb2
from ferry.wire import KeyRotated, LinkSender
from ferry.wire.announce import parse_announcement
from ferry.wire.frame import TYPE_ANNOUNCEMENT, TYPE_HEARTBEAT, heartbeat_nonce

NOW, WALL = 50.0, 1.7e9


def _sender(keys, **kw) -> LinkSender:
    outer, inner = keys
    return LinkSender(outer_key=outer, inner_public=inner.public_key(), policy_hash=bytes(32), name="o",
                      now=NOW, wall=WALL, rng=random.Random(1).randbytes, **kw)


def _events(s: LinkSender) -> list:
    out = []
    while (e := s.next_event()) is not None:
        out.append(e)
    return out


def test_epoch_and_validity_come_from_the_wall_clock(keys):
    s = _sender(keys)
    assert s.epoch == int(WALL)
    a = parse_announcement(s.announcement)
    assert a.not_before == WALL and a.not_after == WALL + limits.KEY_LIFETIME + limits.KEY_OVERLAP
    assert s.get_timer() == NOW + limits.HEARTBEAT_INTERVAL


def test_one_clock_callers_may_omit_wall(keys):
    outer, inner = keys
    s = LinkSender(outer_key=outer, inner_public=inner.public_key(), policy_hash=bytes(32), name="o", now=WALL)
    assert s.epoch == int(WALL) and parse_announcement(s.announcement).not_before == WALL


def test_heartbeat_sent_at_is_wall_clock_and_the_key_lifetime_is_monotonic(keys):
    s = _sender(keys)
    s.datagrams_to_send(NOW)
    s.handle_timer(NOW + 1.0, WALL + 7200.0)  # the wall clock jumped two hours ahead
    (hb,) = [d for d in s.datagrams_to_send(NOW + 1.0) if d[3] == TYPE_HEARTBEAT]
    assert s.counters.heartbeats == 1
    assert not [e for e in _events(s) if isinstance(e, KeyRotated)]  # the key lifetime runs on `now`
    s.handle_timer(NOW + limits.KEY_LIFETIME, WALL + 7200.0 + limits.KEY_LIFETIME - 1.0)
    rotated = [e for e in _events(s) if isinstance(e, KeyRotated)]
    assert rotated == [KeyRotated(int(WALL) + 1, "time")]
    anns = [d for d in s.datagrams_to_send(NOW + limits.KEY_LIFETIME) if d[3] == TYPE_ANNOUNCEMENT]
    # the new epoch's validity starts at the wall clock of its start
    assert parse_announcement(anns[0]).not_before == WALL + 7200.0 + limits.KEY_LIFETIME - 1.0
    assert len(hb) > 16


def test_submit_without_wall_uses_the_last_wall_advanced_by_now(keys):
    s = _sender(keys, key_bytes_max=1)  # every block rotates the key
    s.handle_timer(NOW + 1.0, WALL + 100.0)  # wall - now = WALL + 99 from here on
    s.submit(1, b"x" * 10, NOW + 5.0)
    s.flush(NOW + 5.0)
    anns = [d for d in s.datagrams_to_send(NOW + 5.0) if d[3] == TYPE_ANNOUNCEMENT]
    assert parse_announcement(anns[-1]).not_before == WALL + 104.0


def test_heartbeat_body_carries_the_wall_clock(keys):
    s = _sender(keys)
    s.datagrams_to_send(NOW)
    s.heartbeat(NOW + 0.5, WALL + 0.5)
    (hb,) = s.datagrams_to_send(NOW + 0.5)
    aead = s._key.aead
    body = aead.open(heartbeat_nonce(s.epoch, 0), hb[16:], hb[:16])
    assert ferry_pb2.Heartbeat.FromString(body).sent_at == WALL + 0.5
