"""Viewers of the inner video lane (issue 13 item 3): a platform's INVITEd session of a device's stream."""
from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from ferry import limits
from ferry.codecs.mpeg_ps import PsDemuxer, VideoPes
from ferry.codecs.rtp import parse_rtp
from ferry.lanes.video import (Emit, InnerVideoLane, SendPackets, ViewerLost, ViewerPackets, ViewerStarted)
from ferry.lanes.work import AuditIntent
from tests.lanes.video.test_inner_lane import Output, au

DEV = "43090000001320000001"


def feed(lane, first, count, now=10.0, stream="cam-1"):
    work = []
    for n in range(first, first + count):
        w = lane.deliver(au(n, stream=stream), "video-cameras", now + n * 0.04, 1.7e9)
        for e in w:
            if isinstance(e, Emit):
                lane.emitted(e, True, 1)
        work += w
    return work


def rtp(packets):
    return [(p.ssrc, p.sequence, p.timestamp, bytes(p.payload), p.payload_type) for p in map(parse_rtp, packets)]


def viewer_packets(work, vid):
    return [p for w in work if isinstance(w, Emit) for o in w.outputs
            if isinstance(o, ViewerPackets) and o.viewer == vid for p in o.packets]


def test_a_viewer_waits_for_the_key_frame_then_gets_its_own_ssrc_sequence_and_timestamps():
    lane = InnerVideoLane([], viewable=True)
    feed(lane, 1, 5)                  # the stream crosses, unwatched
    assert lane.stats["video_unwatched"] == 5 and lane.stats["video_refused"] == 0
    assert lane.flows["cam-1"].unwatched == 5
    lane.add_viewer("v1", DEV, "127.0.0.1:7000", 123456, rng=random.Random(1))
    work = feed(lane, 6, 40)          # key frames at 25 and 50
    started = [w for w in work if isinstance(w, ViewerStarted)]
    assert started == [ViewerStarted("v1", DEV, "cam-1")]
    pk = [parse_rtp(p) for p in viewer_packets(work, "v1")]
    for p in pk:
        object.__setattr__(p, "payload", bytes(p.payload))
    assert pk and all(p.ssrc == 123456 and p.payload_type == 96 for p in pk)
    seqs = [p.sequence for p in pk]
    assert seqs == [(seqs[0] + i) & 0xFFFF for i in range(len(seqs))]
    # the first packet is the key frame at n=25: pack header + system header + PSM first
    assert pk[0].payload[:4] == b"\x00\x00\x01\xba" and b"\x00\x00\x01\xbc" in pk[0].payload
    stamps = sorted({p.timestamp for p in pk})
    assert (stamps[1] - stamps[0]) & 0xFFFFFFFF == 3600     # 90 kHz at 25 fps, from its own start
    ps = PsDemuxer().feed(b"".join(p.payload for p in pk))
    assert sum(isinstance(e, VideoPes) for e in ps) == 21   # n = 25..45
    assert lane.stats["video_delivered"] == 21


def test_two_viewers_share_one_build_with_their_own_numbering_and_a_late_one_starts_at_the_next_key():
    lane = InnerVideoLane([], viewable=True)
    lane.add_viewer("a", DEV, "127.0.0.1:7000", 1111)
    work = feed(lane, 0, 30)
    lane.add_viewer("b", DEV, "127.0.0.1:7002", 2222)
    work += feed(lane, 30, 30)         # key frame at 50
    a = [parse_rtp(p) for p in viewer_packets(work, "a")]
    b = [parse_rtp(p) for p in viewer_packets(work, "b")]
    assert {p.ssrc for p in a} == {1111} and {p.ssrc for p in b} == {2222}
    assert len({p.timestamp for p in a}) == 60 and len({p.timestamp for p in b}) == 10
    # one PS build: b's payloads are exactly a's from the key frame at 50 on
    assert [p.payload for p in b] == [p.payload for p in a][-len(b):]
    assert a[0].sequence != b[0].sequence or a[0].timestamp != b[0].timestamp
    assert lane.viewers["b"].access_units == 10 and lane.viewers["a"].access_units == 60
    # a configured output beside the viewers keeps working
    lane2 = InnerVideoLane([Output()], viewable=True)
    lane2.add_viewer("c", DEV, "127.0.0.1:7000", 3333)
    work2 = feed(lane2, 0, 3)
    outs = [o for w in work2 if isinstance(w, Emit) for o in w.outputs]
    assert sum(isinstance(o, SendPackets) for o in outs) == 3 and sum(isinstance(o, ViewerPackets) for o in outs) == 3


def test_the_stream_ending_loses_its_viewers_and_removal_stops_packets():
    lane = InnerVideoLane([], viewable=True)
    lane.add_viewer("v", DEV, "127.0.0.1:7000", 5)
    feed(lane, 0, 5)
    assert lane.device_streams(DEV)[0][0] == "cam-1" and lane.device_streams("4309" + "0" * 16) == []
    work = lane.handle_timer(10.0 + limits.VIDEO_INNER_IDLE + 1, 1.7e9)
    assert [w for w in work if isinstance(w, ViewerLost)] == [
        ViewerLost("v", DEV, "cam-1", "no access unit for %gs" % limits.VIDEO_INNER_IDLE)]
    assert not lane.viewers["v"].started
    [ended] = [w.fields for w in work if isinstance(w, AuditIntent) and w.fields["event"] == "stream_ended"]
    assert ended["detail"]["unwatched"] == 0 and ended["detail"]["access_units"] == 5
    gone = lane.remove_viewer("v")
    assert gone is not None and gone.counts()["access_units"] == 5
    assert viewer_packets(feed(lane, 25, 5, now=100.0), "v") == []


def test_without_viewable_a_stream_with_no_output_is_refused_as_before():
    lane = InnerVideoLane([])
    work = feed(lane, 0, 2)
    [refused] = [w.fields for w in work if isinstance(w, AuditIntent) and w.fields["event"] == "stream_refused"]
    assert refused["code"] == "no_output" and "video_unwatched" not in lane.stats


def test_viewer_arguments_are_checked():
    lane = InnerVideoLane([], viewable=True)
    with pytest.raises(ValueError):
        lane.add_viewer("x", DEV, "127.0.0.1:1", 1, "tcp", "")
    with pytest.raises(ValueError):
        lane.add_viewer("x", DEV, "127.0.0.1:1", 1, "udp", "active")
    with pytest.raises(ValueError):
        lane.add_viewer("x", DEV, "127.0.0.1:1", 1 << 32)
    lane.add_viewer("x", DEV, "127.0.0.1:1", 1, "tcp", "passive")
    with pytest.raises(ValueError):
        lane.add_viewer("x", DEV, "127.0.0.1:1", 1)


OPS = st.lists(st.one_of(
    st.tuples(st.just("add"), st.integers(0, 3)),
    st.tuples(st.just("remove"), st.integers(0, 3)),
    st.tuples(st.just("frames"), st.integers(1, 40)),
    st.tuples(st.just("idle"), st.just(0))), max_size=20)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(OPS)
def test_any_sequence_of_viewers_and_frames_gives_each_viewer_its_own_contiguous_stream_from_a_key_frame(ops):
    lane = InnerVideoLane([], viewable=True)
    n, now = 0, 10.0
    packets: dict[str, list] = {}
    starts: dict[str, int] = {}
    for op, arg in ops:
        vid = f"v{arg}"
        if op == "add" and vid not in lane.viewers:
            lane.add_viewer(vid, DEV, "127.0.0.1:7000", 1000 + arg)
            packets[vid] = []
        elif op == "remove":
            lane.remove_viewer(vid)
        elif op == "frames":
            for _ in range(arg):
                work = lane.deliver(au(n), "video-cameras", now, 1.7e9)
                for w in work:
                    if isinstance(w, Emit):
                        lane.emitted(w, True, 1)
                        for o in w.outputs:
                            if isinstance(o, ViewerPackets):
                                packets[o.viewer].append((n, [parse_rtp(p) for p in o.packets]))
                    elif isinstance(w, ViewerStarted):
                        starts[w.viewer] = starts.get(w.viewer, 0) + 1
                n += 1
                now += 0.04
        else:
            now += limits.VIDEO_INNER_IDLE + 1
            lane.handle_timer(now, 1.7e9)
    for vid, got in packets.items():
        if not got:
            continue
        ssrc = 1000 + int(vid[1:])
        flat = [p for _, ps in got for p in ps]
        assert {p.ssrc for p in flat} == {ssrc}
        # each run of the viewer (a stream start) begins at a key frame with the PSM
        first_frame = got[0][0]
        assert first_frame % 25 == 0 and b"\x00\x00\x01\xbc" in bytes(got[0][1][0].payload)
        assert starts.get(vid, 0) >= 1
        seqs = [p.sequence for p in flat]
        assert all((b - a) % 65536 == 1 for a, b in zip(seqs, seqs[1:]))
