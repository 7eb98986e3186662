"""LinkReceiver as a facade: two clocks, bugs that raise under test and alarm in production."""

from __future__ import annotations

import logging
import random

import pytest

from ferry import limits
from ferry.wire import LinkReceiver
from ferry.wire.assembly import BlockAssembly
from ferry.wire.reassembly import Reassembly
from ferry.wire.events import BlockLost, InternalError, KeyRotated, LinkDown, ObjectReceived
from ferry.wire.frame import TYPE_ANNOUNCEMENT
from .wire_helpers import symbols
from .wire_sim import Channel, Link


def _events(r: LinkReceiver) -> list:
    out = []
    while (e := r.next_event()) is not None:
        out.append(e)
    return out


@pytest.mark.parametrize("step", [3600.0, -3600.0])
def test_a_wall_clock_step_neither_fires_nor_stalls_link_timers(keys, step):
    link = Link(keys, Channel(random.Random(1)))
    link.idle(3.0)
    s, r = link.sender, link.receiver
    assert r.link_up and r.current_epoch == s.epoch
    # a partial block (one filler symbol of the current epoch): waits BLOCK_TIMEOUT on `now`
    r.receive_datagram(symbols(s.epoch, 10_000, k=16, m=4, sealed_len=20_000, key=s._key.auth)[0], link.now, link.wall)
    came = link.now
    s_timer, r_timer = s.get_timer(), r.get_timer()
    link.wall_offset += step  # both hosts' wall clocks jump
    assert (s.get_timer(), r.get_timer()) == (s_timer, r_timer)
    # nothing fires early: the sender's timers at their time only, the key not rotated by "an hour"
    # of key lifetime; the step itself rotates it at once (reason "clock"): only its announcements
    s.handle_timer(link.now, link.wall)
    r.handle_timer(link.now)
    sent = s.datagrams_to_send(link.now)
    assert {d[3] for d in sent} == {TYPE_ANNOUNCEMENT} and r.pending_sizes()["blocks"] == 1
    link.deliver(sent)
    assert r.current_epoch == s.epoch   # the receiver's clock stepped too: the new epoch is accepted
    link.collect()
    hb = s.counters.heartbeats
    link.idle(limits.BLOCK_TIMEOUT - 0.5, dt=0.25)
    assert r.pending_sizes()["blocks"] == 1  # not expired by the step
    link.idle(1.0, dt=0.25)
    assert r.pending_sizes()["blocks"] == 0 and link.now >= came + limits.BLOCK_TIMEOUT  # nor stalled
    # heartbeats went on each HEARTBEAT_INTERVAL, the link stayed up, nothing rotated but for the step
    assert s.counters.heartbeats - hb >= int(limits.BLOCK_TIMEOUT / limits.HEARTBEAT_INTERVAL)
    assert r.link_up and not link.of(LinkDown)
    assert [e.reason for e in link.sender_events if isinstance(e, KeyRotated)] == ["clock"]
    # objects still go through under the stepped wall clock
    link.submit(1, b"after the step")
    link.idle(1.0)
    assert [e.payload for e in link.of(ObjectReceived)] == [b"after the step"]
    # the link-dead timer: silence for LINK_DEAD_AFTER on `now`, whatever the wall clock does
    quiet = r.liveness.last  # the last heartbeat; none after it
    assert quiet is not None and r.get_timer() == quiet + limits.LINK_DEAD_AFTER
    link.wall_offset -= step
    r.handle_timer(link.now)
    assert r.link_up
    r.handle_timer(quiet + limits.LINK_DEAD_AFTER - 0.01)
    assert r.link_up
    r.handle_timer(r.get_timer())
    assert not r.link_up and any(isinstance(e, LinkDown) for e in _events(r))


def test_a_wall_step_on_the_sender_alone_keeps_its_heartbeat_period(keys):
    link = Link(keys, Channel(random.Random(2)))
    s = link.sender
    link.step()
    t = s.get_timer()
    assert t is not None
    s.handle_timer(t - 0.01, link.wall + 7200)
    assert s.counters.heartbeats == 0
    s.handle_timer(t, link.wall - 7200)
    assert s.counters.heartbeats == 1 and s.get_timer() == t + limits.HEARTBEAT_INTERVAL


class Boom(Exception):
    pass


def _buggy(keys, strict: bool, monkeypatch) -> LinkReceiver:
    outer, inner = keys

    def add(self, fields, data, now):
        raise Boom(f"assembly broke at block {fields[2]}")  # the message varies, the place does not

    monkeypatch.setattr(BlockAssembly, "add", add)
    return LinkReceiver(inner_key=inner, outer_public=outer.public_key(), now=0.0, strict=strict)


def test_a_bug_raises_under_test(keys, monkeypatch):
    r = _buggy(keys, True, monkeypatch)
    with pytest.raises(Boom):
        r.receive_datagram(symbols(1, 0)[0], 0.0, 1.7e9)


def test_a_bug_in_production_is_logged_once_alarmed_and_the_datagram_dropped(keys, monkeypatch, caplog):
    r = _buggy(keys, False, monkeypatch)
    with caplog.at_level(logging.ERROR, logger="ferry.wire"):
        for i in range(5):
            r.receive_datagram(symbols(1, i)[0], 0.0, 1.7e9)
    records = [rec for rec in caplog.records if rec.name == "ferry.wire"]
    assert len(records) == 1 and records[0].exc_info is not None
    assert r.counters.dropped_by_reason["internal_error"] == 5 and r.counters.internal_errors == 5
    alarms = [e for e in _events(r) if isinstance(e, InternalError)]
    assert alarms == [InternalError("Boom: assembly broke at block 0")]


def test_a_bug_in_a_timer_is_handled_alike(keys, monkeypatch):
    outer, inner = keys
    r = LinkReceiver(inner_key=inner, outer_public=outer.public_key(), now=0.0)

    def boom(self, now):
        raise Boom("timer broke")

    monkeypatch.setattr(Reassembly, "handle_timer", boom)
    r.handle_timer(1.0)
    assert [e for e in _events(r) if isinstance(e, InternalError)] == [InternalError("Boom: timer broke")]
    strict = LinkReceiver(inner_key=inner, outer_public=outer.public_key(), now=0.0, strict=True)
    with pytest.raises(Boom):
        strict.handle_timer(1.0)


def test_a_policy_hash_refresh_leaves_the_unknown_epoch_count_alone(keys):
    # (before the split, a refreshed announcement counted the current epoch's partial blocks as
    # "unknown epoch" ones leaving, driving that bounded count below zero)
    link = Link(keys, Channel(random.Random(3)))
    link.step()
    s, r = link.sender, link.receiver
    r.receive_datagram(symbols(s.epoch, 9_000, k=16, m=4, sealed_len=20_000, key=s._key.auth)[0], link.now, link.wall)
    s.set_policy_hash(b"\x05" * 32, link.now)
    link.step()
    assert r.pending_sizes()["unknown_epoch_blocks"] == 0
    assert not link.of(BlockLost)
