"""stream_ended says how a stream crossed: mode, output codec, size, bitrate, pictures in/out/dropped.

Both sides, in process: the outer lane (remux, and transcode with the real PyAV transcoder) and
the inner lane (a transcode rule's stream with a refused and an undelivered picture).
"""
from __future__ import annotations

import shutil

import pytest

from ferry.lanes.video import Emit, InnerVideoLane
from ferry.policy.plan import Decision
from ferry.reasons import Reason
from .test_inner_lane import Output, au
from .test_inner_lane import records as inner_records
from .test_outer_lane import feed, lane_of, records, sealed

needs_ffmpeg = pytest.mark.skipif(not shutil.which("ffmpeg"), reason="ffmpeg not installed")


@needs_ffmpeg
def test_an_outer_remux_stream_ends_with_its_mode_output_and_pictures(plan_of, packets):
    lane = lane_of(plan_of())
    work = feed(lane, packets)                     # 2 s of 640x360 H.264, 50 pictures
    closing = lane.close(102.0, 0.0)
    objs = sealed(work) + sealed(closing)          # the last picture leaves at the stream's end
    [ended] = records(closing, "stream_ended")
    d = ended["detail"]
    assert (d["mode"], d["out_codec"], d["out_size"]) == ("remux", "h264", "640x360")
    assert (d["out_width"], d["out_height"]) == (640, 360)
    assert (d["pictures_in"], d["pictures_out"], d["pictures_dropped"]) == (50, 50, 0)
    out_bytes = sum(len(n) for o in objs for n in o.access_unit.nal_units)
    assert d["out_bitrate_kbps"] == round(out_bytes * 8 / (50 / 25) / 1000) > 0     # over 2 s of pictures
    assert "remux -> h264 640x360" in ended["reason"] and "50 in, 50 out, 0 dropped" in ended["reason"]


@needs_ffmpeg
def test_an_outer_stream_the_trail_kept_back_counts_its_pictures_as_dropped(plan_of, packets):
    lane = lane_of(plan_of())
    lane.audit_available = False
    feed(lane, packets)
    [ended] = records(lane.close(102.0, 0.0), "stream_ended")
    d = ended["detail"]
    assert (d["pictures_in"], d["pictures_out"], d["pictures_dropped"]) == (50, 0, 50)
    assert (d["out_codec"], d["out_size"], d["out_bitrate_kbps"]) == ("", "", 0)


@needs_ffmpeg
def test_an_outer_transcoded_stream_reports_the_transcoders_output(plan_of, packets):
    transcoder = pytest.importorskip("ferry.lanes.transcode").Transcoder
    lane = lane_of(plan_of(max_width=320, max_height=240, bitrate=300, mode="transcode"),
                   transcoder_factory=transcoder)
    work = feed(lane, packets)
    work += lane.close(102.0, 0.0)
    objs = sealed(work)
    [ended] = records(work, "stream_ended")
    d = ended["detail"]
    assert objs and all((o.access_unit.width, o.access_unit.height) == (320, 180) for o in objs)
    assert (d["mode"], d["out_codec"], d["out_size"]) == ("transcode", "h264", "320x180")
    assert d["codec"] == "h264" and (d["width"], d["height"]) == (640, 360)     # the source, as before
    assert d["pictures_in"] == 50 and d["pictures_out"] == len(objs)
    assert d["pictures_dropped"] == 50 - len(objs)
    out_bytes = sum(len(n) for o in objs for n in o.access_unit.nal_units)
    assert d["out_bitrate_kbps"] == round(out_bytes * 8 / (len(objs) / 25) / 1000) > 0
    assert ended["reason"].startswith(f"{len(objs)} access units sent")
    assert "transcode -> h264 320x180" in ended["reason"]


def test_an_inner_stream_ends_with_its_rules_mode_and_the_pictures_it_let_go():
    lane = InnerVideoLane([Output()])
    for n in range(10):
        for e in lane.deliver(au(n), "video-social", 10.0 + n * 0.04, 1.7e9, mode="transcode"):
            if isinstance(e, Emit):
                lane.emitted(e, n != 3, 1)                   # picture 3: no output took it
    lane.refuse(au(10), Decision(False, "video-social", "width 16 exceeds max_width 8", Reason.CONTENT_LIMIT),
                10.5, 1.7e9)
    [ended] = inner_records(lane.close(11.0, 0.0), "stream_ended")
    d = ended["detail"]
    assert (d["mode"], d["out_codec"], d["out_size"]) == ("transcode", "h264", "16x16")
    assert (d["pictures_in"], d["pictures_out"], d["pictures_dropped"]) == (11, 9, 2)
    delivered = sum(len(nal) for n in range(10) if n != 3 for nal in au(n).access_unit.nal_units)
    assert d["out_bitrate_kbps"] == round(delivered * 8 / (9 / 25) / 1000)        # 9 pictures at 25/s
    assert "transcode -> h264 16x16" in ended["reason"]


def test_an_inner_stream_defaults_to_remux():
    lane = InnerVideoLane([Output()])
    for e in lane.deliver(au(0), "r", 1.0, 0.0):
        if isinstance(e, Emit):
            lane.emitted(e, True, 1)
    [ended] = inner_records(lane.close(2.0, 0.0), "stream_ended")
    assert ended["detail"]["mode"] == "remux" and ended["detail"]["pictures_out"] == 1
