"""OuterVideoLane's TCP connections under hostile bytes (issue 12 item 3): property tests.

Whatever a peer sends on any number of connections, cut anywhere: the lane never raises, a
connection becomes a stream only with a valid RTP packet, every stream_ended has its
stream_started, and once every connection is closed no pending connection is left counted.
"""
from __future__ import annotations

import shutil
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ferry import limits
from ferry.codecs.rfc4571 import frame
from .test_outer_lane import Entry, lane_of, records
from .test_stream import plan_maker

pytestmark = pytest.mark.skipif(not shutil.which("ffmpeg"), reason="ffmpeg not installed")


def rtp(seq: int, ssrc: int, payload: bytes) -> bytes:
    return struct.pack("!BBHII", 0x80, 96, seq & 0xFFFF, seq * 3600, ssrc) + payload


chunks = st.one_of(
    st.binary(max_size=300),
    st.builds(lambda s, p: frame(rtp(s, 0x1234, p)) + frame(rtp(s + 1, 0x1234, p)),
              st.integers(0, 65535), st.binary(max_size=64)),
    st.builds(lambda n: b"\x00" * n, st.integers(1, 40)),
)
actions = st.lists(st.tuples(st.sampled_from(["open", "data", "close", "expire"]), st.integers(0, 11),
                             st.integers(0, 3), chunks), max_size=60)


@pytest.fixture(scope="module")
def plan(tmp_path_factory):
    return plan_maker(tmp_path_factory.mktemp("plan"))()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(actions)
def test_hostile_connections_never_raise_and_leave_nothing_pending(plan, steps):
    lane = lane_of(plan, Entry(transport="tcp-listen"))
    open_: list[str] = []
    work: list = []
    now = 100.0
    for kind, which, addr, data in steps:
        now += 0.5
        if kind == "open":
            cid, w = lane.tcp_opened("cam", f"192.0.2.{addr}", 1000 + which, now, 0.0)
            work += w
            if cid is not None:
                open_.append(cid)
        elif open_:
            cid = open_[which % len(open_)]
            if kind == "data" and lane.is_open(cid):
                work += lane.tcp_data(cid, data, now, 0.0)
            elif kind == "close" or (kind == "expire" and lane.tcp_expired(cid, now + 20.0)):
                work += lane.tcp_closed(cid, now + (20.0 if kind == "expire" else 0.0), 0.0)
                open_.remove(cid)
        assert sum(lane._pending_entry.values()) <= limits.VIDEO_TCP_PENDING_PER_ENTRY
        assert all(n <= limits.VIDEO_TCP_PENDING_PER_ADDRESS for n in lane._pending_address.values())
    for cid in open_:
        work += lane.tcp_closed(cid, now + 30.0, 0.0)
    work += lane.close(now + 60.0, 0.0)
    assert not lane._pending_entry and not lane._pending_address and not lane.connections
    started = {r["flow"] for r in records(work, "stream_started")}
    ended = {r["flow"] for r in records(work, "stream_ended")}
    assert ended == started                                    # no end without a start, none left open
    refusals = [r for r in records(work, "stream_refused") if r["flow"] == "cam"]
    assert all(r["code"] in ("too_many_connections", "no_rtp") and r["detail"]["connections"] >= 1
               for r in refusals)
