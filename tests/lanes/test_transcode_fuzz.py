"""Hostile input to the transcoder: it returns access units or raises CodecError, nothing else."""

from __future__ import annotations

import functools
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ferry.codecs.access_unit import AccessUnit, AccessUnitAssembler
from ferry.codecs.errors import CodecError
from ferry.codecs.nal import split_annexb
from ferry.lanes.transcode import Transcoder
from ferry.pb import ferry_pb2

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ENCODERS = {"h264": ["-c:v", "libx264"], "h265": ["-c:v", "libx265", "-x265-params", "log-level=error"]}


@functools.cache
def source(codec: str) -> tuple[ferry_pb2.AccessUnit, ...]:
    """Ten access units of a small ffmpeg-made stream (pts 3600 apart)."""
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "src"
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25",
                        "-frames:v", "10", *ENCODERS[codec], "-bf", "0", "-f", "h264" if codec == "h264" else "hevc",
                        str(raw)], check=True)
        data = raw.read_bytes()
    a = AccessUnitAssembler(codec)
    aus = []
    for nal in split_annexb(data):
        aus += a.push(nal)
    aus = [au for au in aus + a.flush() if isinstance(au, AccessUnit)]
    out = []
    for i, au in enumerate(aus):
        pb = au.to_pb("fuzz")
        pb.pts = pb.dts = i * 3600
        out.append(pb)
    return tuple(out)


def run(t: Transcoder, aus) -> list:
    out = []
    for au in aus:
        try:
            out += t.push(au)
        except CodecError:
            pass
    try:
        out += t.flush()
    except CodecError:
        pass
    for au in out:
        assert au.width <= t.max_width and au.height <= t.max_height
    return out


@pytest.mark.parametrize("codec", ["h264", "h265"])
@SETTINGS
@given(nals=st.lists(st.binary(max_size=64), max_size=6), pts=st.integers(-2**63, 2**63 - 1))
def test_garbage_nal_units_raise_codec_error_only(codec, nals, pts):
    t = Transcoder(codec, codec, 160, 120, 200, 25)
    au = ferry_pb2.AccessUnit(codec=codec, pts=pts, dts=pts, nal_units=nals)
    run(t, [au, au])


@pytest.mark.parametrize("codec", ["h264", "h265"])
@SETTINGS
@given(data=st.data())
def test_mutated_stream_raises_codec_error_only(codec, data):
    """Real parameter sets and slices with bytes flipped, cut or spliced: pictures or CodecError."""
    aus = [ferry_pb2.AccessUnit() for _ in source(codec)]
    for dst, src in zip(aus, source(codec)):
        dst.CopyFrom(src)
    for _ in range(data.draw(st.integers(1, 4))):
        au = aus[data.draw(st.integers(0, len(aus) - 1))]
        i = data.draw(st.integers(0, len(au.nal_units) - 1))
        nal = bytearray(au.nal_units[i])
        if not nal:
            continue
        how = data.draw(st.sampled_from(["flip", "cut", "splice"]))
        pos = data.draw(st.integers(0, len(nal) - 1))
        if how == "flip":
            nal[pos] ^= data.draw(st.integers(1, 255))
        elif how == "cut":
            del nal[pos:]
        else:
            nal[pos:pos] = data.draw(st.binary(min_size=1, max_size=32))
        au.nal_units[i] = bytes(nal)
    pts = data.draw(st.sampled_from(["steady", "garbage"]))
    if pts == "garbage":
        for au in aus:
            au.pts = au.dts = data.draw(st.integers(-2**40, 2**40))
    run(Transcoder(codec, codec, 160, 120, 200, 25), aus)


@SETTINGS
@given(tail=st.binary(max_size=48))
def test_random_sps_bodies_are_checked_before_decoding(tail):
    """An SPS with a random body either parses within 4x the caps or is refused with CodecError."""
    aus = source("h264")
    sps = b"\x67" + tail
    au = ferry_pb2.AccessUnit()
    au.CopyFrom(aus[0])
    au.nal_units[0] = sps
    t = Transcoder("h264", "h264", 80, 60, 100, 25)
    out = run(t, [au, *aus[1:3]])
    assert all(a.width <= 80 and a.height <= 60 for a in out)
