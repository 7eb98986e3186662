"""Transcode mode against real peers: ffmpeg-made 1280x720 sources in, caps and a clean decode out."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from ferry.codecs import h264, h265
from ferry.codecs.access_unit import AccessUnit, ByteStreamAssembler
from ferry.codecs.errors import CodecError
from ferry.codecs.mpeg_ps import PsDemuxer, VideoPes
from ferry.codecs.nal import h264_nal_type, h265_nal_type, join_annexb, split_annexb
from ferry.lanes.transcode import Transcoder, fit_size

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")

ENCODERS = {
    "h264": ["-c:v", "libx264"],
    "h265": ["-c:v", "libx265", "-x265-params", "log-level=error"],
}
RAW = {"h264": "h264", "h265": "hevc"}
CAP_W, CAP_H, CAP_KBPS = 640, 360, 500
RATE = 25


def ffmpeg(*args):
    subprocess.run(["ffmpeg", "-v", "error", "-y", *map(str, args)], check=True)


def ffprobe_stream(path) -> dict:
    out = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-show_streams", "-of", "json", str(path)],
                         check=True, capture_output=True).stdout
    return json.loads(out)["streams"][0]


def decoded_frames(path) -> int:
    """Frames ffmpeg decodes from the file; any decode error (with -xerror) fails the run."""
    proc = subprocess.run(["ffmpeg", "-v", "error", "-xerror", "-i", str(path), "-fps_mode", "passthrough",
                           "-f", "framemd5", "-"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "", proc.stderr
    return sum(1 for line in proc.stdout.splitlines() if line and not line.startswith("#"))


def make_source(tmp, codec, size="1280x720", seconds=2, rate=RATE):
    """A program stream from ffmpeg, demuxed and assembled into proto access units (pts/dts from the PES)."""
    ps = tmp / f"src-{codec}-{size}.mpg"
    ffmpeg("-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}", "-t", seconds, *ENCODERS[codec],
           "-f", "mpeg", ps)
    d = PsDemuxer()
    events = d.feed(ps.read_bytes()) + d.flush()
    b = ByteStreamAssembler(codec)
    aus = []
    for e in events:
        if isinstance(e, VideoPes):
            aus += b.feed(e.data, e.pts, e.dts, not e.continued)
    aus += b.flush()
    return [au.to_pb("cam-1") for au in aus if isinstance(au, AccessUnit)]


def transcode(aus, in_codec, out_codec, **kw):
    t = Transcoder(in_codec, out_codec, kw.get("w", CAP_W), kw.get("h", CAP_H), kw.get("kbps", CAP_KBPS),
                   kw.get("rate", RATE))
    out = []
    for au in aus:
        out += t.push(au)
    return t, out + t.flush()


def nal_types(codec, nal_units):
    return [h264_nal_type(n) if codec == "h264" else h265_nal_type(n) for n in nal_units]


SEI_TYPES = {"h264": {h264.SEI}, "h265": {h265.PREFIX_SEI, h265.SUFFIX_SEI}}


@pytest.fixture(scope="module", params=["h264", "h265"])
def source(request, tmp_path_factory):
    codec = request.param
    tmp = tmp_path_factory.mktemp(f"transcode-{codec}")
    aus = make_source(tmp, codec)
    t, out = transcode(aus, codec, codec)
    path = tmp / f"out.{RAW[codec]}"
    path.write_bytes(b"".join(join_annexb(au.nal_units) for au in out))
    return codec, aus, t, out, path


def test_source_is_what_the_test_claims(source):
    codec, aus, _, _, _ = source
    assert len(aus) == 2 * RATE
    assert (aus[0].width, aus[0].height) == (1280, 720)
    assert aus[0].keyframe
    # the source carries its encoder's SEI (x264/x265 settings), which must not cross
    assert any(set(nal_types(codec, au.nal_units)) & SEI_TYPES[codec] for au in aus)


def test_output_fits_the_caps_keeping_aspect(source):
    codec, _, _, out, path = source
    stream = ffprobe_stream(path)
    assert stream["codec_name"] == RAW[codec]
    assert stream["width"] <= CAP_W and stream["height"] <= CAP_H
    assert (stream["width"], stream["height"]) == (640, 360)
    assert {(au.width, au.height) for au in out} == {(640, 360)}
    assert {au.codec for au in out} == {codec}
    assert {au.stream_id for au in out} == {"cam-1"}
    assert all(au.frame_rate == RATE for au in out)


def test_output_decodes_every_frame(source):
    _, aus, t, out, path = source
    assert len(out) == len(aus)          # 25 fps in, 25 fps out: nothing decimated
    assert t.pictures_dropped == 0
    assert decoded_frames(path) == len(out)
    assert int(ffprobe_stream(path)["nb_read_frames"]) == len(out)


def test_bitrate_within_the_cap(source):
    _, _, _, out, _ = source
    nbytes = sum(len(n) for au in out for n in au.nal_units)
    duration = len(out) / RATE
    kbps = nbytes * 8 / duration / 1000
    assert kbps <= CAP_KBPS * 1.2, kbps
    assert kbps > CAP_KBPS * 0.2, kbps   # it did spend bits: a real picture, not a blank
    assert out[-1].bitrate_kbps <= CAP_KBPS * 1.2


def test_timestamps_carried_from_the_input(source):
    _, aus, _, out, _ = source
    pts = [au.pts for au in out]
    assert pts == sorted(au.pts for au in aus)   # presentation order, the source's own clock
    assert all(b > a for a, b in zip(pts, pts[1:]))
    assert all(au.dts == au.pts for au in out)     # no reordering in the output


def test_keyframes_carry_parameter_sets_and_gop_is_one_second(source):
    codec, _, _, out, _ = source
    assert out[0].keyframe
    needed = {h264.SPS, h264.PPS} if codec == "h264" else {h265.VPS, h265.SPS, h265.PPS}
    keys = [i for i, au in enumerate(out) if au.keyframe]
    for i in keys:
        assert needed <= set(nal_types(codec, out[i].nal_units))
    gaps = [b - a for a, b in zip(keys, keys[1:] + [len(out)])]
    assert max(gaps) <= RATE
    assert all(au.keyframe == bool(needed & set(nal_types(codec, au.nal_units))) for au in out)


def test_no_sei_crosses(source):
    codec, aus, _, out, path = source
    assert not any(set(nal_types(codec, au.nal_units)) & SEI_TYPES[codec] for au in out)
    data = path.read_bytes()
    for au in aus:
        for nal, t in zip(au.nal_units, nal_types(codec, au.nal_units)):
            if t in SEI_TYPES[codec]:
                assert nal[2:] not in data
    assert b"x264 - core" not in data and b"x265 (build" not in data
    assert b"x264 - core" in b"".join(n for au in aus for n in au.nal_units) or codec == "h265"


def test_no_source_slice_crosses(source):
    """Fresh coding: no VCL NAL unit of the source appears in the output."""
    codec, aus, _, out, _ = source
    vcl = range(0, 6) if codec == "h264" else range(0, 32)
    src = {bytes(n) for au in aus for n, t in zip(au.nal_units, nal_types(codec, au.nal_units)) if t in vcl}
    got = {bytes(n) for au in out for n, t in zip(au.nal_units, nal_types(codec, au.nal_units)) if t in vcl}
    assert src and got and not src & got


def test_h264_to_h265_and_back(tmp_path):
    aus = make_source(tmp_path, "h264", seconds=1)
    _, out = transcode(aus, "h264", "h265")
    path = tmp_path / "cross.hevc"
    path.write_bytes(b"".join(join_annexb(au.nal_units) for au in out))
    assert ffprobe_stream(path)["codec_name"] == "hevc"
    assert decoded_frames(path) == len(out) == len(aus)
    assert {au.codec for au in out} == {"h265"}


def test_decimates_to_the_output_frame_rate(tmp_path):
    aus = make_source(tmp_path, "h264", seconds=2, rate=50)
    t, out = transcode(aus, "h264", "h264", rate=25)
    assert len(aus) == 100
    assert 48 <= len(out) <= 52
    assert t.pictures_dropped == len(aus) - len(out)
    pts = [au.pts for au in out]
    assert min(b - a for a, b in zip(pts, pts[1:])) >= 0.9 * 90000 / 25
    path = tmp_path / "half.h264"
    path.write_bytes(b"".join(join_annexb(au.nal_units) for au in out))
    assert decoded_frames(path) == len(out)


def test_absent_timestamps_get_a_steady_clock(tmp_path):
    aus = make_source(tmp_path, "h264", seconds=1)
    for au in aus:
        au.pts = au.dts = 0
    _, out = transcode(aus, "h264", "h264")
    assert [au.pts for au in out] == [i * 3600 for i in range(len(aus))]


def test_size_change_reopens_the_encoder(tmp_path):
    first = make_source(tmp_path, "h264", size="1280x720", seconds=1)
    second = make_source(tmp_path, "h264", size="480x640", seconds=1)
    shift = first[-1].pts + 3600 - second[0].pts + 3600
    for au in second:
        au.pts += shift
        au.dts += shift
    _, out = transcode(first + second, "h264", "h264")
    sizes = [(au.width, au.height) for au in out]
    assert sizes[0] == (640, 360) and sizes[-1] == (270, 360)
    change = sizes.index((270, 360))
    assert out[change].keyframe and h264.SPS in nal_types("h264", out[change].nal_units)
    path = tmp_path / "change.h264"
    path.write_bytes(b"".join(join_annexb(au.nal_units) for au in out))
    assert decoded_frames(path) == len(out) == len(first) + len(second)


def test_sps_beyond_four_times_the_caps_is_refused_before_decoding(tmp_path):
    aus = make_source(tmp_path, "h264", seconds=1)
    t = Transcoder("h264", "h264", 160, 90, 100, RATE)   # 1280x720 is 8x the caps
    with pytest.raises(CodecError, match="SPS size 1280x720"):
        t.push(aus[0])
    assert t._decoder is None
    ok = Transcoder("h264", "h264", 320, 180, 100, RATE)  # exactly 4x: admitted
    out = []
    for au in aus[:5]:
        out += ok.push(au)
    out += ok.flush()
    assert len(out) == 5 and (out[0].width, out[0].height) == (320, 180)


@pytest.mark.parametrize("codec", ["h264", "h265"])
def test_slices_before_any_sps_are_refused(tmp_path, codec):
    aus = make_source(tmp_path, codec, seconds=1)
    t = Transcoder(codec, codec, CAP_W, CAP_H, CAP_KBPS, RATE)
    with pytest.raises(CodecError, match="no sequence parameter set"):
        t.push(aus[1])
    assert isinstance(t.push(aus[0]), list)   # the keyframe is then accepted
    with pytest.raises(CodecError, match="codec"):
        wrong = type(aus[0])()
        wrong.CopyFrom(aus[0])
        wrong.codec = "h265" if codec == "h264" else "h264"
        t.push(wrong)


def test_fit_size():
    assert fit_size(1920, 1080, 640, 360) == (640, 360)
    assert fit_size(1280, 720, 640, 360) == (640, 360)
    assert fit_size(720, 1280, 640, 360) == (202, 360)
    assert fit_size(320, 240, 640, 360) == (320, 240)      # never scaled up
    assert fit_size(321, 241, 640, 360) == (320, 240)      # even dimensions
    assert fit_size(4000, 10, 640, 360) == (640, 2)
    with pytest.raises(CodecError):
        fit_size(0, 10, 640, 360)


def test_bad_arguments():
    with pytest.raises(ValueError):
        Transcoder("vp8", "h264", 640, 360, 500, 25)
    with pytest.raises(ValueError):
        Transcoder("h264", "h264", 640, 360, 0, 25)
    with pytest.raises(ValueError):
        Transcoder("h264", "h264", 640, 360, 500, 0)
    with pytest.raises(ValueError):
        Transcoder("h264", "h264", 0, 360, 500, 25)


def test_sei_in_the_source_never_reaches_the_decoder(tmp_path):
    """A52/A53 captions or user data in a source SEI cannot cross through frame side data."""
    aus = make_source(tmp_path, "h264", seconds=1)
    marker = b"FERRY-COVERT-CHANNEL" * 4
    # user_data_unregistered SEI (payloadType 5): 16-byte UUID + marker
    payload = bytes(16) + marker
    sei = bytes([h264.SEI, 5, len(payload)]) + payload + b"\x80"
    for au in aus:
        au.nal_units.insert(len(au.nal_units) - 1, sei)
    _, out = transcode(aus, "h264", "h264")
    data = b"".join(n for au in out for n in au.nal_units)
    assert len(out) == len(aus)
    assert marker[:8] not in data
    assert split_annexb(join_annexb(out[0].nal_units)) == list(out[0].nal_units)


def test_decoder_bounds_pictures_itself(tmp_path, monkeypatch):
    """Should ferry's SPS check ever miss, FFmpeg's max_pixels still refuses the picture."""
    aus = make_source(tmp_path, "h264", seconds=1)
    monkeypatch.setattr(Transcoder, "_check_sps", lambda self, t, nal: setattr(self, "_have_sps", True))
    t = Transcoder("h264", "h264", 160, 90, 100, RATE)   # 1280x720 is 8x the caps
    out, errors = [], []
    for au in aus:
        try:
            out += t.push(au)
        except CodecError as exc:
            errors.append(str(exc))
    try:
        out += t.flush()
    except CodecError as exc:
        errors.append(str(exc))
    assert out == []
    assert errors and all(e.startswith("decoder:") for e in errors)
