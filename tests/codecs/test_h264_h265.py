"""H.264 and H.265 parameter sets: crafted SPS, limits, NAL classes, and ffmpeg's own streams vs ffprobe."""

from __future__ import annotations

import json
import shutil
import subprocess
from fractions import Fraction

import pytest
from hypothesis import given, settings, strategies as st

from ferry.codecs import h264, h265
from ferry.codecs.errors import CodecError
from ferry.codecs.nal import NalError, NalKind, split_annexb

needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")


class BitWriter:
    def __init__(self) -> None:
        self.bits: list[int] = []

    def u(self, n: int, v: int) -> "BitWriter":
        self.bits += [(v >> (n - 1 - i)) & 1 for i in range(n)]
        return self

    def ue(self, v: int) -> "BitWriter":
        code = v + 1
        return self.u(code.bit_length() - 1, 0).u(code.bit_length(), code)

    def se(self, v: int) -> "BitWriter":
        return self.ue(2 * v - 1 if v > 0 else -2 * v)

    def rbsp(self) -> bytes:
        bits = self.bits + [1]
        bits += [0] * (-len(bits) % 8)
        return bytes(int("".join(map(str, bits[i:i + 8])), 2) for i in range(0, len(bits), 8))


def escape(rbsp: bytes) -> bytes:
    out, zeros = bytearray(), 0
    for b in rbsp:
        if zeros >= 2 and b <= 3:
            out.append(3)
            zeros = 0
        out.append(b)
        zeros = zeros + 1 if b == 0 else 0
    return bytes(out)


def h264_sps(width_mbs=40, height_units=23, frame_mbs_only=1, crop=None, timing=None, profile=66,
             chroma=1) -> bytes:
    w = BitWriter().u(8, profile).u(8, 0).u(8, 30).ue(0)
    if profile == 100:
        w.ue(chroma)
        if chroma == 3:
            w.u(1, 0)
        w.ue(0).ue(0).u(1, 0).u(1, 1)  # scaling matrix present
        for i in range(12 if chroma == 3 else 8):
            w.u(1, 1 if i == 0 else 0)
            if i == 0:
                for _ in range(16):
                    w.se(1)
    w.ue(0).ue(0).ue(4)  # log2_max_frame_num-4, poc type 0, log2_max_poc_lsb-4
    w.ue(2).u(1, 0).ue(width_mbs - 1).ue(height_units - 1).u(1, frame_mbs_only)
    if not frame_mbs_only:
        w.u(1, 0)
    w.u(1, 1)
    if crop:
        w.u(1, 1)
        for c in crop:
            w.ue(c)
    else:
        w.u(1, 0)
    if timing:
        w.u(1, 1).u(1, 0).u(1, 0).u(1, 0).u(1, 0).u(1, 1).u(32, timing[0]).u(32, timing[1]).u(1, 1)
    else:
        w.u(1, 0)
    return b"\x67" + escape(w.rbsp())


def h265_sps(width=1920, height=1088, window=(0, 0, 0, 4), timing=(1, 25), sub_layers=1) -> bytes:
    w = BitWriter().u(4, 0).u(3, sub_layers - 1).u(1, 1)
    w.u(2, 0).u(1, 0).u(5, 1).u(32, 0x60000000).u(48, 0).u(8, 93)
    for _ in range(sub_layers - 1):
        w.u(1, 1).u(1, 1)
    if sub_layers > 1:
        w.u(2 * (8 - (sub_layers - 1)), 0)
        for _ in range(sub_layers - 1):
            w.u(88, 0).u(8, 90)
    w.ue(0).ue(1).ue(width).ue(height)
    if window:
        w.u(1, 1)
        for c in window:
            w.ue(c)
    else:
        w.u(1, 0)
    w.ue(0).ue(0).ue(4).u(1, 1)
    for _ in range(sub_layers):
        w.ue(4).ue(2).ue(0)
    w.ue(0).ue(3).ue(0).ue(3).ue(0).ue(0)
    w.u(1, 0).u(1, 0).u(1, 1).u(1, 0)  # scaling off, amp, sao, pcm off
    w.ue(2)  # two short-term RPS, the second predicted from the first
    w.ue(2).ue(1).ue(0).u(1, 1).ue(1).u(1, 1).ue(0).u(1, 1)
    w.u(1, 1).u(1, 0).ue(0)
    w.u(1, 1).u(1, 0).u(1, 1).u(1, 1).u(1, 0).u(1, 1)  # inter RPS: 4 used flags (one with use_delta)
    w.u(1, 0).u(1, 1).u(1, 1)  # no long-term, tmvp, strong intra smoothing
    if timing:
        w.u(1, 1).u(1, 0).u(1, 0).u(1, 0).u(1, 0).u(3, 0).u(1, 0).u(1, 1).u(32, timing[0]).u(32, timing[1])
        w.u(1, 0).u(1, 0)
    else:
        w.u(1, 0)
    w.u(1, 0)
    return b"\x42\x01" + escape(w.rbsp())


# --- H.264 --------------------------------------------------------------------
def test_h264_sps_size_crop_and_timing():
    sps = h264.parse_sps(h264_sps(120, 68, crop=(0, 0, 0, 4), timing=(1001, 60000)))
    assert (sps.profile_idc, sps.level_idc, sps.width, sps.height) == (66, 30, 1920, 1080)
    assert sps.frame_rate == pytest.approx(29.97, abs=0.01)


def test_h264_sps_interlaced_and_high_profile_scaling_lists():
    sps = h264.parse_sps(h264_sps(45, 18, frame_mbs_only=0, crop=(0, 0, 0, 0), profile=100, chroma=1))
    assert (sps.width, sps.height, sps.frame_mbs_only, sps.frame_rate) == (720, 576, False, 0.0)
    sps444 = h264.parse_sps(h264_sps(20, 15, crop=(1, 1, 1, 1), profile=100, chroma=3))
    assert (sps444.width, sps444.height, sps444.chroma_format_idc) == (318, 238, 3)


def test_h264_sps_absurd_sizes_refused():
    with pytest.raises(NalError):
        h264.parse_sps(h264_sps(6250, 6250))       # 100000x100000
    with pytest.raises(NalError):
        h264.parse_sps(h264_sps(600, 10))          # 9600 wide
    with pytest.raises(NalError):
        h264.parse_sps(h264_sps(2, 2, crop=(8, 8, 0, 0)))  # cropped to nothing


def test_h264_sps_truncated_or_wrong_type():
    good = h264_sps(timing=(1, 50))
    for n in range(1, len(good) - 1):
        with pytest.raises(NalError):
            h264.parse_sps(good[:n])
    with pytest.raises(NalError):
        h264.parse_sps(b"\x68" + good[1:])


def test_h264_classes():
    kinds = {t: h264.nal_kind(t) for t in range(32)}
    assert kinds[5] is NalKind.KEY_SLICE and kinds[1] is NalKind.SLICE
    assert kinds[6] is NalKind.SEI and kinds[9] is NalKind.AUD and kinds[12] is NalKind.FILLER
    assert kinds[7] is kinds[8] is kinds[15] is NalKind.PARAMETER_SET
    assert kinds[17] is kinds[23] is NalKind.RESERVED
    assert kinds[0] is kinds[24] is kinds[31] is NalKind.UNSPECIFIED
    assert h264.classify(b"\x65\x88") is NalKind.KEY_SLICE


# --- H.265 --------------------------------------------------------------------
def test_h265_sps_conformance_window_and_timing():
    sps = h265.parse_sps(h265_sps())
    assert (sps.width, sps.height, sps.profile_idc, sps.level_idc) == (1920, 1080, 1, 93)
    assert sps.frame_rate == 25.0


def test_h265_sps_sub_layers_and_no_vui():
    sps = h265.parse_sps(h265_sps(1280, 720, window=None, timing=None, sub_layers=3))
    assert (sps.width, sps.height, sps.max_sub_layers, sps.frame_rate) == (1280, 720, 3, 0.0)


def test_h265_sps_absurd_sizes_refused():
    for size in ((100000, 100000), (8200, 64), (64, 64 * 200)):
        with pytest.raises(NalError):
            h265.parse_sps(h265_sps(*size, window=None))
    with pytest.raises(NalError):
        h265.parse_sps(h265_sps(64, 64, window=(40, 0, 0, 0)))


def test_h265_truncated():
    good = h265_sps()
    for n in range(0, len(good) - 1):
        with pytest.raises(NalError):
            h265.parse_sps(good[:n])


def test_h265_classes():
    assert h265.nal_kind(19) is h265.nal_kind(21) is h265.nal_kind(16) is NalKind.KEY_SLICE
    assert h265.nal_kind(1) is h265.nal_kind(9) is NalKind.SLICE
    assert h265.nal_kind(32) is h265.nal_kind(33) is h265.nal_kind(34) is NalKind.PARAMETER_SET
    assert h265.nal_kind(35) is NalKind.AUD and h265.nal_kind(38) is NalKind.FILLER
    assert h265.nal_kind(39) is h265.nal_kind(40) is NalKind.SEI
    assert h265.nal_kind(12) is h265.nal_kind(45) is NalKind.RESERVED
    assert h265.nal_kind(50) is NalKind.UNSPECIFIED


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=80))
def test_sps_parsers_raise_only_codec_error(data):
    for parse, prefix in ((h264.parse_sps, b"\x67"), (h265.parse_sps, b"\x42\x01"), (h265.parse_vps, b"\x40\x01")):
        try:
            sps = parse(prefix + data)
        except CodecError:
            continue
        assert 0 < sps.width <= 8192 and 0 < sps.height <= 8192 if hasattr(sps, "width") else True


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 700), st.integers(1, 700), st.integers(0, 5), st.integers(0, 5))
def test_h264_sps_sizes_round_trip(wm, hm, cl, cb):
    nal = h264_sps(wm, hm, crop=(cl, 0, 0, cb))
    width, height = wm * 16 - 2 * cl, hm * 16 - 2 * cb
    if 0 < width <= 8192 and 0 < height <= 8192:
        sps = h264.parse_sps(nal)
        assert (sps.width, sps.height) == (width, height)
    else:
        with pytest.raises(NalError):
            h264.parse_sps(nal)


# --- ffmpeg's streams ---------------------------------------------------------
def _ffprobe(path) -> dict:
    out = subprocess.run(["ffprobe", "-v", "error", "-show_streams", "-of", "json", str(path)],
                         check=True, capture_output=True).stdout
    return json.loads(out)["streams"][0]


CASES = [
    ("libx264", "h264", "640x360", "25", []),
    ("libx264", "h264", "322x238", "30000/1001", ["-pix_fmt", "yuv444p"]),
    ("libx264", "h264", "720x576", "25", ["-flags", "+ildct+ilme", "-pix_fmt", "yuv422p"]),
    ("libx265", "hevc", "640x360", "25", []),
    ("libx265", "hevc", "330x250", "30000/1001", ["-pix_fmt", "yuv422p"]),
]


@needs_ffmpeg
@pytest.mark.parametrize("encoder,fmt,size,rate,extra", CASES)
def test_sps_matches_ffprobe(tmp_path, encoder, fmt, size, rate, extra):
    path = tmp_path / f"s.{fmt}"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}", "-t", "0.2",
                    "-c:v", encoder, *extra, *(["-x265-params", "log-level=error"] if fmt == "hevc" else []),
                    "-f", fmt, str(path)], check=True)
    units = split_annexb(path.read_bytes())
    if fmt == "h264":
        sps = h264.parse_sps(next(u for u in units if u[0] & 0x1F == 7))
    else:
        sps = h265.parse_sps(next(u for u in units if u[0] >> 1 == 33))
    probe = _ffprobe(path)
    assert (sps.width, sps.height) == (probe["width"], probe["height"])
    assert sps.frame_rate == pytest.approx(float(Fraction(probe["r_frame_rate"])), rel=1e-6)
