"""Liveness: up on an authenticated heartbeat, down LINK_DEAD_AFTER (monotonic) later; open_heartbeat."""

from __future__ import annotations

from ferry import limits
from ferry.crypto import SM4GCM
from ferry.pb import ferry_pb2
from ferry.wire.epochs import KeyEpochs
from ferry.wire.events import LinkDown, LinkUp
from ferry.wire.liveness import Liveness, open_heartbeat
from ferry.wire.report import Report
from ferry.wire.seal import seal_heartbeat

from .wire_helpers import announcement


def test_up_and_down_on_the_monotonic_clock():
    report = Report(0.0)
    live = Liveness(report)
    assert live.next_timer() is None
    live.heartbeat(10.0, 1.7e9)
    live.heartbeat(11.0, 1.7e9 + 1)
    assert list(report.events) == [LinkUp()] and live.up
    assert live.next_timer() == 11.0 + limits.LINK_DEAD_AFTER
    live.handle_timer(11.0 + limits.LINK_DEAD_AFTER - 0.01)
    assert live.up
    live.handle_timer(11.0 + limits.LINK_DEAD_AFTER)
    assert not live.up and list(report.events)[-1] == LinkDown(1.7e9 + 1)  # since: wall clock
    assert live.next_timer() is None


def test_open_heartbeat(keys):
    outer, inner = keys
    report = Report(0.0)
    epochs = KeyEpochs(inner, outer.public_key(), report, 0.0)
    epochs.accept(announcement(outer, inner, epoch=3), 0.0, 1.7e9)
    aead = SM4GCM(bytes(range(16)))

    def hb(seq, epoch=3, **kw):
        body = ferry_pb2.Heartbeat(seq=seq, epoch=epoch, sent_at=1.7e9, next_block=5, **kw).SerializeToString()
        return seal_heartbeat(aead, epoch, seq, body)

    got = open_heartbeat(hb(1), epochs, report, 0.0)
    assert got is not None and got[0].epoch == 3 and got[1].next_block == 5
    assert open_heartbeat(hb(1), epochs, report, 0.0) is None  # replay
    bad = bytearray(hb(2))
    bad[-1] ^= 1
    assert open_heartbeat(bytes(bad), epochs, report, 0.0) is None
    assert open_heartbeat(seal_heartbeat(aead, 4, 1, b""), epochs, report, 0.0) is None
    assert open_heartbeat(b"\xfeR\x02\x03", epochs, report, 0.0) is None
    assert report.counters.dropped_by_reason == {
        "heartbeat_replay": 1, "heartbeat_auth": 1, "heartbeat_unknown_epoch": 1, "bad_heartbeat": 1}
