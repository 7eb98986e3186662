"""LinkSender on two clocks: timers on `now` (monotonic), validity and epoch numbers on `wall`."""

from __future__ import annotations

import random
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ferry import limits
from ferry.pb import ferry_pb2
from ferry.wire import BlockLost, HeartbeatReceived, KeyRotated, LinkReceiver, LinkSender, UnsealedBlock, seal
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
    # the step rotates the key at once ("clock"); the key lifetime runs on `now` from there
    assert [e.reason for e in _events(s) if isinstance(e, KeyRotated)] == ["clock"]
    stepped = s.epoch
    s.handle_timer(NOW + limits.KEY_LIFETIME, WALL + 7200.0 + limits.KEY_LIFETIME - 1.0)
    assert not [e for e in _events(s) if isinstance(e, KeyRotated)]   # an hour of `now` after the rotation: not yet
    s.handle_timer(NOW + 1.0 + limits.KEY_LIFETIME, WALL + 7200.0 + limits.KEY_LIFETIME)
    rotated = [e for e in _events(s) if isinstance(e, KeyRotated)]
    assert rotated == [KeyRotated(stepped + 1, "time")]
    anns = [d for d in s.datagrams_to_send(NOW + limits.KEY_LIFETIME) if d[3] == TYPE_ANNOUNCEMENT]
    # the new epoch's validity starts at the wall clock of its start
    assert parse_announcement(anns[-1]).not_before == WALL + 7200.0 + limits.KEY_LIFETIME
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


# --- control datagrams ahead of data (proto/WIRE.md §3a) ---------------------------------------

def _kinds(datagrams) -> str:
    """One letter per datagram: A announcement, H heartbeat, s symbol."""
    return "".join({TYPE_ANNOUNCEMENT: "A", TYPE_HEARTBEAT: "H"}.get(d[3], "s") for d in datagrams)


def _heartbeat(hb: bytes, aead) -> ferry_pb2.Heartbeat:
    epoch, seq = struct.unpack(">IQ", hb[4:16])
    return ferry_pb2.Heartbeat.FromString(aead.open(heartbeat_nonce(epoch, seq), hb[16:], hb[:16]))


def test_items_to_send_keeps_the_order_made_and_control_to_send_takes_control_apart(keys):
    s = _sender(keys)
    s.submit(1, b"x" * 30_000, NOW)                     # one block full, the next begun
    s.heartbeat(NOW, WALL)
    s.submit(2, b"y" * 100, NOW)
    s.flush(NOW)
    assert _kinds(s.datagrams_to_send(NOW)) == "AAA" + "s" * 20 + "H" + "s" * 20   # as made
    s.submit(3, b"z" * 30_000, NOW)
    s.heartbeat(NOW, WALL)
    s.flush(NOW)
    control = s.control_to_send(NOW)
    assert _kinds([c.data for c in control]) == "H" and control[0].after_block == 0
    assert _kinds(s.datagrams_to_send(NOW)) == "s" * 40     # the data only: control went first
    assert s.control_to_send(NOW) == [] and s.datagrams_to_send(NOW) == []


def test_a_heartbeat_claims_only_the_blocks_reported_sent(keys):
    """A heartbeat that overtakes queued blocks must not prove them sent: the receiver would
    report them lost BLOCK_TIMEOUT later, while they wait their turn at the link rate."""
    outer, inner = keys
    s = _sender(keys, seal=False, track_sent=True)
    r = LinkReceiver(inner_key=inner, outer_public=outer.public_key(), now=NOW, strict=True)
    for i in range(10):
        s.submit(i, bytes(23_000), NOW)
    s.flush(NOW)
    assert s.counters.blocks == 10
    for c in s.control_to_send(NOW):                     # the announcement, ahead of the data
        r.receive_datagram(c.data, NOW, WALL)
    s.blocks_sent(4)                                     # blocks 0-3 have left
    s.heartbeat(NOW + 0.1, WALL + 0.1)
    (hb,) = s.control_to_send(NOW + 0.1)
    body = _heartbeat(hb.data, s._key.aead)
    assert (body.next_block, body.blocks_sent) == (4, 4)
    blocks = [i for i in s.items_to_send(NOW) if isinstance(i, UnsealedBlock)]
    for b in blocks[:4]:                                 # what left arrives, then the heartbeat
        for d in seal(b):
            r.receive_datagram(d, NOW + 0.1, WALL + 0.1)
    r.receive_datagram(hb.data, NOW + 0.1, WALL + 0.1)
    now = NOW + 0.1
    for _ in range(5):                                   # blocks 4-9 are still queued: not lost
        now += limits.BLOCK_TIMEOUT
        r.handle_timer(now)
    events = []
    while (e := r.next_event()) is not None:
        events.append(e)
    assert not [e for e in events if isinstance(e, BlockLost)], events
    assert [e.counters["next_block"] for e in events if isinstance(e, HeartbeatReceived)] == [4]
    s.blocks_sent(99)                                    # never beyond what was made
    s.heartbeat(now, WALL + 1)
    assert _heartbeat(s.control_to_send(now)[0].data, s._key.aead).next_block == 10
    s.blocks_sent(2)                                     # never back
    s.heartbeat(now, WALL + 1)
    assert _heartbeat(s.control_to_send(now)[0].data, s._key.aead).next_block == 10


def test_without_track_sent_a_heartbeat_claims_every_block_made(keys):
    s = _sender(keys)
    s.submit(1, bytes(50_000), NOW)
    s.flush(NOW)
    s.heartbeat(NOW, WALL)
    assert _heartbeat(s.control_to_send(NOW)[-1].data, s._key.aead).next_block == 3
    with pytest.raises(ValueError):
        s.blocks_sent(1)


def test_a_rotation_waits_for_the_previous_epochs_blocks_and_the_wire_epoch_is_announced(keys):
    """A rotation's announcement proves the previous epoch's blocks below its first_block sent:
    it waits for them (after_block). Until they have left, the repeats announce the epoch on the
    wire (the key a receiver joining now needs) and heartbeats are sealed under it."""
    s = _sender(keys, seal=False, track_sent=True, key_bytes_max=3 * 23_000)
    old_epoch, old_aead = s.epoch, s._key.aead
    (first,) = {c.data for c in s.control_to_send(NOW)}
    for i in range(4):
        s.submit(i, bytes(23_000), NOW)
    s.flush(NOW)
    assert [e.reason for e in _events(s) if isinstance(e, KeyRotated)] == ["bytes"]
    new_epoch, new_first_block = s.epoch, 3
    rotation = s.control_to_send(NOW)
    assert len(rotation) == limits.ANNOUNCE_REPEAT_ON_ROTATE
    assert {c.after_block for c in rotation} == {new_first_block}
    assert parse_announcement(rotation[0].data).first_block == new_first_block
    s.blocks_sent(1)                                     # blocks 1-2 of the old epoch still queued
    s.handle_timer(NOW + limits.ANNOUNCE_INTERVAL, WALL + limits.ANNOUNCE_INTERVAL)
    repeat, hb = s.control_to_send(NOW + limits.ANNOUNCE_INTERVAL)
    assert repeat.data == first and repeat.after_block <= 1
    assert struct.unpack(">I", hb.data[4:8])[0] == old_epoch
    assert _heartbeat(hb.data, old_aead).next_block == 1
    s.blocks_sent(new_first_block)                       # the old epoch's blocks have all left
    s.handle_timer(NOW + 2 * limits.ANNOUNCE_INTERVAL, WALL + 2 * limits.ANNOUNCE_INTERVAL)
    repeat, hb = s.control_to_send(NOW + 2 * limits.ANNOUNCE_INTERVAL)
    assert repeat.data == rotation[0].data and struct.unpack(">I", hb.data[4:8])[0] == new_epoch
    assert _heartbeat(hb.data, s._key.aead).next_block == new_first_block


def test_a_new_policy_hash_is_announced_after_the_blocks_sealed_under_the_old_one(keys):
    s = _sender(keys, seal=False, track_sent=True)
    (old,) = {c.data for c in s.control_to_send(NOW)}
    for i in range(3):
        s.submit(i, bytes(23_000), NOW)                   # blocks 0-2, under the old policy
    s.flush(NOW)
    s.set_policy_hash(b"\x01" * 32, NOW)
    new = s.control_to_send(NOW)
    assert len({c.data for c in new}) == 1 and parse_announcement(new[0].data).policy_hash == b"\x01" * 32
    assert {c.after_block for c in new} == {3}
    s.handle_timer(NOW + limits.ANNOUNCE_INTERVAL, WALL + limits.ANNOUNCE_INTERVAL)
    assert s.control_to_send(NOW + limits.ANNOUNCE_INTERVAL)[0].data == old   # blocks 0-2 still queued
    s.blocks_sent(3)
    s.handle_timer(NOW + 2 * limits.ANNOUNCE_INTERVAL, WALL + 2 * limits.ANNOUNCE_INTERVAL)
    assert s.control_to_send(NOW + 2 * limits.ANNOUNCE_INTERVAL)[0].data == new[0].data


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(["submit", "heartbeat", "flush", "policy", "take", "control", "timer"]),
                          st.integers(0, 60_000)), max_size=30))
def test_any_sequence_keeps_the_made_order_and_loses_nothing(keys, ops):
    """Taken in any mix of control_to_send and items_to_send, every datagram comes out once, and
    items_to_send keeps the order made: a heartbeat comes after every block it claims and before
    every later block."""
    s = _sender(keys, key_bytes_max=100_000)
    now, wall, out, control = NOW, WALL, [], []
    aeads = {s.epoch: s._key.aead}                           # each epoch's cipher (one rotation per op at most)
    for i, (op, n) in enumerate(ops):
        if op == "submit":
            s.submit(i, bytes(n), now)
        elif op == "heartbeat":
            s.heartbeat(now, wall)
        elif op == "flush":
            s.flush(now)
        elif op == "policy":
            s.set_policy_hash(n.to_bytes(32, "big"), now)
        elif op == "take":
            out += s.datagrams_to_send(now)
        elif op == "control":
            control += [c.data for c in s.control_to_send(now)]
        else:
            now, wall = now + limits.ANNOUNCE_INTERVAL, wall + limits.ANNOUNCE_INTERVAL
            s.handle_timer(now, wall)
        aeads[s.epoch] = s._key.aead
    s.flush(now)
    aeads[s.epoch] = s._key.aead
    out += s.datagrams_to_send(now)
    assert len(out) + len(control) == s.counters.datagrams
    assert sum(map(len, out)) + sum(map(len, control)) == s.counters.bytes
    seen_blocks = -1
    for d in out:
        if d[3] == TYPE_HEARTBEAT:
            epoch = struct.unpack(">I", d[4:8])[0]
            hb = _heartbeat(d, aeads[epoch])
            assert hb.next_block == seen_blocks + 1
        elif d[3] == TYPE_ANNOUNCEMENT:
            assert parse_announcement(d).first_block <= seen_blocks + 1   # after the blocks before it
        else:
            block_no = struct.unpack(">Q", d[8:16])[0]
            assert block_no in (seen_blocks, seen_blocks + 1)
            seen_blocks = block_no
