"""OuterStream's transcode protocol: TranscodeRequest / TranscodeEnd out, transcoded / transcode_failed in."""
from __future__ import annotations

import shutil

import pytest

import gb28181
from ferry.codecs.mpeg_ps import PsMuxer
from ferry.codecs.rtp import build_rtp, parse_rtp
from ferry.lanes.video import (BUILTIN_RULE, AccessUnitReady, OuterStream, StreamEnded, StreamRefused,
                               TranscodeCaps, TranscodeEnd, TranscodeRequest)
from .test_stream import CAMERA, SSRC

pytestmark = pytest.mark.skipif(not shutil.which("ffmpeg"), reason="ffmpeg not installed")


def offloaded(plan, **kw) -> OuterStream:
    return OuterStream("cam-1", CAMERA, "192.0.2.10", "ps", "police-vms", lambda: plan, 0.0,
                       offload_transcode=True, **kw)


def feed(stream, packets, step=0.001) -> list:
    events = []
    for i, (data, _offset) in enumerate(packets):
        events += stream.push_rtp(parse_rtp(data), i * step)
    return events


def made(req: TranscodeRequest):
    """What a fake transcoder makes of a request: the same picture, shrunk to the caps."""
    out = type(req.access_unit)()
    out.CopyFrom(req.access_unit)
    out.width, out.height = req.caps.max_width, req.caps.max_height
    return [out]


def packets(seconds=2):
    """The camera's packets, then the start of the next picture (an access unit delimiter):
    a picture is complete when the next one starts, not at its marker (issue 12 item 1)."""
    pk = gb28181.ps_packets(gb28181.make_source(None, "h264", seconds=seconds), "h264", ssrc=SSRC)
    last = parse_rtp(pk[-1][0])
    aud = PsMuxer("h264").video([b"\x09\xf0"], last.timestamp + 3600)
    return pk + [(build_rtp(96, (last.sequence + 1) & 0xFFFF, last.timestamp + 3600, SSRC, aud, marker=True),
                  pk[-1][1] + 0.04)]


def test_requests_are_answered_in_order_and_decided_afresh(plan_of):
    plan = plan_of(max_width=320, max_height=180, mode="transcode")
    stream = offloaded(plan, transcode_queue=100)
    events = feed(stream, packets())
    reqs = [e for e in events if isinstance(e, TranscodeRequest)]
    # the stream never transcodes by itself: nothing is ready until the caller answers
    assert len(reqs) == 50 and not [e for e in events if isinstance(e, AccessUnitReady)]
    assert reqs[0].caps == TranscodeCaps("h264", "h264", 320, 180, 20000, 25.0)
    assert reqs[0].access_unit.keyframe and all(r.stream_id == "cam-1" for r in reqs)
    assert [r.access_unit.pts for r in reqs] == sorted(r.access_unit.pts for r in reqs)
    assert stream.transcode_pending == 50
    ready = []
    for r in reqs:
        ready += [e.obj for e in stream.transcoded(made(r), 5.0) if isinstance(e, AccessUnitReady)]
    assert len(ready) == 50 and all(o.access_unit.width == 320 and o.rule == "video-cameras" for o in ready)
    assert all(o.access_unit.bitrate_kbps == 0 for o in ready)
    # the end: flush request first, StreamEnded only with its answer
    end = stream.close(6.0)
    assert end == [TranscodeEnd("cam-1")] and stream.closed
    assert stream.push_rtp(parse_rtp(packets()[0][0]), 6.5) == []
    last = stream.transcoded([], 7.0)
    assert isinstance(last[-1], StreamEnded) and last[-1].counts["access_units"] == 50
    assert last[-1].counts["duration"] == 6.0     # when the stream closed, not when the flush came back
    assert stream.transcoded([], 8.0) == [] and stream.transcode_failed("late", 8.0) == []


def test_a_transcoder_behind_drops_up_to_the_next_keyframe(plan_of):
    plan = plan_of(max_width=320, max_height=180, mode="transcode")
    stream = offloaded(plan, transcode_queue=4)
    events = feed(stream, packets())   # 2 GOPs of 25, nobody answers
    reqs = [e for e in events if isinstance(e, TranscodeRequest)]
    assert len(reqs) == 4 and stream.transcode_pending == 4
    assert stream.counts["transcode_dropped_aus"] == 46
    for r in reqs:
        assert [type(e) for e in stream.transcoded(made(r), 1.0)] == [AccessUnitReady]
    assert stream.transcode_pending == 0
    assert [type(e) for e in stream.close(2.0)] == [TranscodeEnd]
    [ended] = stream.transcoded([], 3.0)
    assert ended.counts["transcode_dropped_aus"] == 46 and ended.counts["access_units"] == 4


def test_resumes_on_a_keyframe_after_falling_behind(plan_of):
    plan = plan_of(max_width=320, max_height=180, mode="transcode")
    stream = offloaded(plan, transcode_queue=4)
    pk = packets()
    reqs, answered_at = [], None
    for i, (data, _offset) in enumerate(pk):
        for ev in stream.push_rtp(parse_rtp(data), i * 0.001):
            if isinstance(ev, TranscodeRequest):
                reqs.append(ev)
        if len(reqs) == 4 and answered_at is None and stream.counts["transcode_dropped_aus"] > 0:
            answered_at = len(reqs)
            for r in reqs:               # the transcoder catches up in the middle of GOP 1
                stream.transcoded(made(r), i * 0.001)
    assert answered_at == 4
    assert len(reqs) == 8                   # GOP 2's keyframe and 3 more, then behind again
    assert reqs[4].access_unit.keyframe and not any(r.access_unit.keyframe for r in reqs[5:])
    assert stream.counts["transcode_dropped_aus"] == 50 - 8


def test_a_failure_refuses_once_and_later_results_do_not_cross(plan_of):
    plan = plan_of(max_width=320, max_height=180, mode="transcode")
    stream = offloaded(plan, transcode_queue=100)
    reqs = [e for e in feed(stream, packets()) if isinstance(e, TranscodeRequest)]
    assert [type(e) for e in stream.transcoded(made(reqs[0]), 1.0)] == [AccessUnitReady]
    [refused] = stream.transcode_failed("decoder: invalid data", 1.0)
    assert isinstance(refused, StreamRefused) and refused.rule == BUILTIN_RULE
    assert refused.reason == "transcoder: decoder: invalid data" and refused.detail["codec"] == "h264"
    assert stream.transcode_failed("again", 1.0) == []        # once per stream
    assert stream.transcoded(made(reqs[2]), 1.0) == []        # in flight before the refusal: not sent
    for r in reqs[3:]:
        assert stream.transcoded(made(r), 1.0) == []
    assert stream.close(2.0) == [TranscodeEnd("cam-1")]
    [ended] = stream.transcode_failed("flush failed", 3.0)    # a failed end is counted, not refused
    assert isinstance(ended, StreamEnded)
    c = ended.counts
    assert c["access_units"] == 1 and c["refused_aus"] == 1 + 48 and c["dropped_aus"] == 1 + 1   # + the lone AUD


def test_without_transcoding_nothing_is_requested(plan_of):
    stream = OuterStream("cam-1", CAMERA, "192.0.2.10", "ps", "police-vms",
                         lambda: plan_of(max_width=320, max_height=180, mode="transcode"), 0.0)
    events = feed(stream, packets(1)) + stream.close(2.0)
    assert not [e for e in events if isinstance(e, (TranscodeRequest, TranscodeEnd))]
    [r] = [e for e in events if isinstance(e, StreamRefused)]
    assert "not available" in r.reason and isinstance(events[-1], StreamEnded)
    # remux rules never ask for a transcoder, so their streams end at once
    stream = offloaded(plan_of())
    events = feed(stream, packets(1)) + stream.close(2.0)
    assert len([e for e in events if isinstance(e, AccessUnitReady)]) == 25 and isinstance(events[-1], StreamEnded)
