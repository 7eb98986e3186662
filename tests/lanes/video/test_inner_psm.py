"""Issue 12 item 5: the first program stream map of a rebuilt stream lists every stream the
policy lets through (G.711 audio too), not only the video.

A GB/T 28181 source whose PSM lists H.264 and G.711 (and sends a G.711 PES per picture) goes
through the outer stream (OuterStream) and the inner stream (InnerStream, form "ps") in process.
"""
from __future__ import annotations

import shutil

import pytest

import gb28181
from ferry.codecs.mpeg_ps import PsMuxer, crc32_mpeg2
from ferry.codecs.rtp import build_rtp, parse_rtp
from ferry.lanes.video import AccessUnitReady, InnerStream, OuterStream
from ferry.pb import ferry_pb2
from ferry.policy import load_plan
from program_stream import psms
from video_policy import video_limits, video_policy

pytestmark = pytest.mark.skipif(not shutil.which("ffmpeg"), reason="ffmpeg not installed")

CAMERA = "43090000001320000001"
SSRC = 0x0BEBC201


def policy_text(audio: bool) -> str:
    return video_policy("video-audio-psm", video=video_limits(codecs="[h264]", audio=audio))


def plan(tmp_path, audio: bool):
    d = tmp_path / f"policy-{audio}"
    d.mkdir()
    (d / "policy.yaml").write_text(policy_text(audio))
    return load_plan(d)


def camera_packets(audio_codec: str, frames: int = 30) -> list[bytes]:
    """RTP/PS as a camera with audio sends it: PSM (video + audio) on keyframes, an audio PES per picture."""
    src = gb28181.make_source(None, "h264", seconds=2)
    mux = PsMuxer("h264", audio_codec)
    packets, seq = [], 100
    for f in gb28181.access_units(src, "h264")[:frames]:
        ps = mux.video(f.nal_units, f.pts, f.dts, f.keyframe) + mux.audio(b"\xd5" * 320, f.pts)
        chunks = [ps[i:i + 1400] for i in range(0, len(ps), 1400)]
        for k, c in enumerate(chunks):
            packets.append(build_rtp(96, seq, f.pts, SSRC, c, marker=k == len(chunks) - 1))
            seq += 1
    return packets


def rebuilt(tmp_path, audio_codec: str, audio_allowed: bool) -> bytes:
    p = plan(tmp_path, audio_allowed)
    stream = OuterStream("cam-1", CAMERA, "192.0.2.10", "ps", "police-vms", lambda: p, 0.0)
    events = []
    for i, data in enumerate(camera_packets(audio_codec)):
        events += stream.push_rtp(parse_rtp(data), i * 0.001)
    events += stream.close(10.0)
    objs = [e.obj for e in events if isinstance(e, AccessUnitReady)]
    assert objs and objs[0].HasField("access_unit") and objs[0].access_unit.keyframe
    inner = InnerStream("ps", 0.0)
    return b"".join(inner.container(o)[0] for o in objs)


@pytest.mark.parametrize("audio_codec,stream_type", [("g711a", 0x90), ("g711u", 0x91)])
def test_the_first_psm_lists_the_audio_the_policy_lets_through(tmp_path, audio_codec, stream_type):
    ps = rebuilt(tmp_path, audio_codec, True)
    maps = psms(ps)
    assert maps, "no program stream map in the rebuilt stream"
    assert sorted(maps[0]) == sorted([(0x1B, 0xE0), (stream_type, 0xC0)])  # the first PSM
    assert ps.find(b"\x00\x00\x01\xbc") < ps.find(b"\x00\x00\x01\xc0")        # before the first audio PES
    assert all(sorted(m) == sorted(maps[0]) for m in maps)


def test_without_audio_in_the_policy_the_psm_lists_only_the_video(tmp_path):
    ps = rebuilt(tmp_path, "g711a", False)
    maps = psms(ps)
    assert maps and all(m == [(0x1B, 0xE0)] for m in maps)
    assert b"\x00\x00\x01\xc0" not in ps


def test_a_program_that_changes_gets_a_new_map_version_ahead_of_its_pes():
    """The audio an access unit announced is not what arrives: a new PSM (next version, valid CRC)
    goes ahead of the first audio PES; an unchanged program repeats its map on keyframes only."""

    def obj(n, key, audio=None):
        o = ferry_pb2.CanonicalObject(lane="video", destination="police-vms", object_id=n)
        if audio:
            o.audio.CopyFrom(ferry_pb2.AudioFrame(stream_id="s", codec=audio, pts=n * 3600, payload=b"\xff" * 160))
        else:
            o.access_unit.CopyFrom(ferry_pb2.AccessUnit(stream_id="s", codec="h264", keyframe=key, pts=n * 3600,
                                                        dts=n * 3600, nal_units=[b"\x65\x88" if key else b"\x41\x9a"],
                                                        audio_codec="g711a"))
        return o

    inner = InnerStream("ps", 0.0)
    parts = [inner.container(o)[0] for o in (obj(1, True), obj(2, False), obj(3, False, "g711u"), obj(4, False))]
    assert [psms(p) for p in parts] == [[[(0x1B, 0xE0), (0x90, 0xC0)]], [], [[(0x1B, 0xE0), (0x91, 0xC0)]], []]
    for p, version in ((parts[0], 0), (parts[2], 1)):
        i = p.find(b"\x00\x00\x01\xbc")
        length = int.from_bytes(p[i + 4:i + 6], "big")
        psm = p[i:i + 6 + length]
        assert psm[6] & 0x1F == version and crc32_mpeg2(psm) == 0      # CRC over the whole map: residue 0
    assert parts[2].find(b"\x00\x00\x01\xbc") < parts[2].find(b"\x00\x00\x01\xc0")
    # an access unit naming no audio (or something that is not G.711) changes nothing
    o = obj(5, True)
    o.access_unit.audio_codec = "mp3"
    assert psms(inner.container(o)[0]) == [[(0x1B, 0xE0), (0x91, 0xC0)]]
