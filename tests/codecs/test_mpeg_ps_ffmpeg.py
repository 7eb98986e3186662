"""Real peers: ffmpeg's own program streams demuxed bit-exact, and ferry's PS read back by ffmpeg."""

from __future__ import annotations

import json
import shutil
import subprocess
from fractions import Fraction

import pytest

from ferry.codecs.access_unit import AccessUnit, AccessUnitAssembler, ByteStreamAssembler
from ferry.codecs.mpeg_ps import PsDemuxer, PsMuxer, Skipped, StreamInfo, VideoPes
from ferry.codecs.nal import split_annexb

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")

ENCODERS = {
    "h264": ["-c:v", "libx264"],
    "h265": ["-c:v", "libx265", "-x265-params", "log-level=error"],
}
RAW_FORMAT = {"h264": ("h264", "h264_mp4toannexb"), "h265": ("hevc", "hevc_mp4toannexb")}
SOURCE = ["-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25", "-t", "1"]


def ffmpeg(*args):
    subprocess.run(["ffmpeg", "-v", "error", "-y", *map(str, args)], check=True)


def ffprobe(path, *args) -> dict:
    out = subprocess.run(["ffprobe", "-v", "error", *args, "-of", "json", str(path)], check=True,
                         capture_output=True).stdout
    return json.loads(out)


def framemd5(path) -> list[str]:
    out = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-fps_mode", "passthrough", "-f", "framemd5", "-"],
                         check=True, capture_output=True, text=True).stdout
    return [line.rsplit(",", 1)[1].strip() for line in out.splitlines() if line and not line.startswith("#")]


@pytest.fixture(scope="module", params=["h264", "h265"])
def media(request, tmp_path_factory):
    codec = request.param
    tmp = tmp_path_factory.mktemp(codec)
    fmt, bsf = RAW_FORMAT[codec]
    raw = tmp / f"raw.{fmt}"
    ffmpeg(*SOURCE, *ENCODERS[codec], "-bsf:v", bsf, "-f", fmt, raw)
    for container in ("mpeg", "vob"):
        ffmpeg(*SOURCE, *ENCODERS[codec], "-f", container, tmp / f"ffmpeg.{container}")
    return codec, tmp, raw


def raw_access_units(codec, raw):
    a = AccessUnitAssembler(codec)
    out = []
    for nal in split_annexb(raw.read_bytes()):
        out += a.push(nal)
    return out + a.flush()


def demux_access_units(codec, data, step):
    d = PsDemuxer()
    events = []
    for i in range(0, len(data), step):
        events += d.feed(data[i:i + step])
    events += d.flush()
    b = ByteStreamAssembler(codec)
    aus = []
    for e in events:
        if isinstance(e, VideoPes):
            aus += b.feed(e.data, e.pts, e.dts, not e.continued)
    return events, aus + b.flush()


@pytest.mark.parametrize("container", ["mpeg", "vob"])
def test_ffmpeg_ps_demuxes_to_the_raw_stream(media, container):
    codec, tmp, raw = media
    ps = (tmp / f"ffmpeg.{container}").read_bytes()
    expected = raw_access_units(codec, raw)
    packets = ffprobe(tmp / f"ffmpeg.{container}", "-show_packets", "-select_streams", "v:0")["packets"]
    assert len(expected) == len(packets) == 25
    for step in (len(ps), 1400, 97):
        events, aus = demux_access_units(codec, ps, step)
        infos = [e for e in events if isinstance(e, StreamInfo)]
        assert [(i.codec, i.source) for i in infos] == [(codec, "sniffed")]  # ffmpeg writes no PSM
        assert all(isinstance(a, AccessUnit) for a in aus)
        assert [a.nal_units for a in aus] == [a.nal_units for a in expected]   # bit-exact
        # ffmpeg's muxer gives a PES's PTS to the first frame starting in it only: the others have none
        assert [(a.pts, a.dts) for a in aus] == [
            (int(p["pts"]), int(p["dts"])) if "pts" in p else (None, None) for p in packets]
        assert [a.keyframe for a in aus] == ["K" in p["flags"] for p in packets]
        assert all(e.reason == "padding stream" for e in events if isinstance(e, Skipped))
    stream = ffprobe(raw, "-show_streams")["streams"][0]
    assert {(a.width, a.height) for a in aus} == {(stream["width"], stream["height"])}
    assert aus[0].frame_rate == float(Fraction(stream["r_frame_rate"]))


def test_ferry_ps_read_by_ffmpeg_bit_exact(media):
    codec, tmp, raw = media
    _, aus = demux_access_units(codec, (tmp / "ffmpeg.mpeg").read_bytes(), 1 << 20)
    muxer = PsMuxer(codec)
    ours = tmp / "ferry.ps"
    ours.write_bytes(b"".join(muxer.access_unit(a) for a in aus))
    stream = ffprobe(ours, "-count_frames", "-show_streams")["streams"][0]
    assert stream["codec_name"] == {"h264": "h264", "h265": "hevc"}[codec]
    assert int(stream["nb_read_frames"]) == len(aus) == 25
    assert (stream["width"], stream["height"]) == (640, 360)
    assert framemd5(ours) == framemd5(raw)
    # and what we wrote demuxes to the same access units again
    _, again = demux_access_units(codec, ours.read_bytes(), 1500)
    assert [(a.nal_units, a.pts, a.dts, a.keyframe) for a in again] == [
        (a.nal_units, a.pts, a.dts, a.keyframe) for a in aus]
