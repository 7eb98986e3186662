"""The gate of an outer stream: keyframe wait, NAL unit stripping, bitrate, decision, refusal."""
from __future__ import annotations

import shutil

import pytest

import gb28181
from ferry.codecs import h264
from ferry.codecs.access_unit import AccessUnit
from ferry.codecs.mpeg_ps import AudioPes
from ferry.codecs.nal import NalKind
from ferry.lanes.video import BUILTIN_RULE, AccessUnitReady, StreamRefused
from ferry.lanes.video.front import PsFront
from ferry.lanes.video.gate import BitrateMeter, Gate
from .test_front import Sink
from .test_stream import CAMERA, SSRC

pytestmark = pytest.mark.skipif(not shutil.which("ffmpeg"), reason="ffmpeg not installed")


@pytest.fixture(scope="module")
def aus() -> list[AccessUnit]:
    """2 s of 640x360 H.264, a keyframe every 10 pictures, as the PS front end gives them."""
    path = gb28181.make_source(None, "h264", seconds=2, gop=10)
    sink = Sink()
    front = PsFront(sink, {"skipped_bytes": 0})
    for data, _ in gb28181.ps_packets(path, "h264", ssrc=SSRC):
        front.gathered(memoryview(data)[12:], bool(data[1] & 0x80), 0.0, [])
    front.close(0.0, [])
    assert len(sink.aus) == 50
    return sink.aus


COUNTS = ("access_units", "au_bytes", "refused_aus", "dropped_aus", "stripped_nal_units", "audio_frames",
          "dropped_audio")


def gate_of(plan, wall=1.7e9) -> Gate:
    return Gate("cam-1", (CAMERA, "192.0.2.10", 5000), "police-vms", lambda: plan, dict.fromkeys(COUNTS, 0), wall)


def run(gate: Gate, aus, t0=0.0) -> list:
    out: list = []
    for i, au in enumerate(aus):
        gate.access_units([au], t0 + i * 0.04, out)
    return out


def test_allowed_access_units_cross_stripped_and_stamped(plan_of, aus):
    gate = gate_of(plan_of())
    out = run(gate, aus)
    objs = [e.obj for e in out if isinstance(e, AccessUnitReady)]
    assert len(objs) == 50 and gate.counts["access_units"] == 50
    kinds = {h264.classify(n) for o in objs for n in o.access_unit.nal_units}
    assert NalKind.SEI not in kinds and gate.counts["stripped_nal_units"] >= 1     # x264 writes an SEI
    o = objs[0]
    assert (o.created, o.rule, o.source.device_id, o.source.port) == (1.7e9, "video-cameras", CAMERA, 5000)
    assert o.access_unit.bitrate_kbps > 0 and gate.rule_id == "video-cameras"
    assert gate.counts["au_bytes"] == sum(len(n) for o in objs for n in o.access_unit.nal_units)


def test_keep_sei_puts_the_sei_back(plan_of, aus):
    out = run(gate_of(plan_of(keep_sei=True)), aus[:1])
    [ready] = out
    assert NalKind.SEI in {h264.classify(n) for n in ready.obj.access_unit.nal_units}


def test_the_gate_waits_for_a_keyframe_at_the_start_and_after_a_loss(plan_of, aus):
    gate = gate_of(plan_of())
    out = run(gate, aus[3:25])                 # starts mid-GOP: pictures 3..9 wait for picture 10
    assert gate.counts["dropped_aus"] == 7 and out[0].obj.access_unit.keyframe
    gate.need_key = True                       # what the stream does after a loss
    out = run(gate, aus[25:35])                # 25..29 wait for 30
    assert gate.counts["dropped_aus"] == 12 and out[0].obj.access_unit.keyframe


def test_the_first_refusal_refuses_the_stream_once(plan_of, aus):
    gate = gate_of(plan_of(max_width=320, max_height=180))
    out = run(gate, aus)
    [refused] = out
    assert isinstance(refused, StreamRefused) and "width" in refused.reason, refused
    assert refused.detail["width"] == 640 and gate.counts["refused_aus"] == 50 and gate.refused is refused


def test_transcode_mode_without_a_transcoder_is_refused_by_the_lane(plan_of, aus):
    gate = gate_of(plan_of(mode="transcode"))
    [refused] = run(gate, aus[:5])
    assert refused.rule == BUILTIN_RULE and refused.reason == "transcode mode is not available on this agent"


def test_audio_crosses_only_under_a_rule_that_allows_it(plan_of, aus):
    frame = AudioPes(0xC0, 3600, None, b"\xd5" * 320)
    gate = gate_of(plan_of(audio=True))
    out: list = []
    gate.audio(frame, "g711a", 0.0, out)
    assert out == [] and gate.counts["dropped_audio"] == 1        # before the stream's video: no rule yet
    run(gate, aus[:1])
    gate.audio(frame, "g711a", 0.0, out)
    [ready] = out
    assert ready.obj.audio.codec == "g711a" and ready.obj.audio.payload == frame.data
    denied = gate_of(plan_of(audio=False))
    run(denied, aus[:1])
    denied.audio(frame, "g711a", 0.0, out)
    assert denied.counts["dropped_audio"] == 1 and len(out) == 1


def test_the_bitrate_meter_takes_the_larger_of_media_and_arrival_time():
    m = BitrateMeter()
    for i in range(50):                        # 25 pictures/s of media time, 10 kB each: 2 Mbit/s
        kbps = m.add(10_000, i * 3600, i * 0.04)
    assert 1900 <= kbps <= 2100
    m = BitrateMeter()
    for i in range(700):                       # the same timestamps, arriving 5 times as fast
        kbps = m.add(10_000, i * 3600, i * 0.008)
    assert 9000 <= kbps <= 10_500
