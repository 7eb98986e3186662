"""Access unit assembly: boundaries, keyframes, PTS by PES, active SPS, drops and bounds."""

from __future__ import annotations

from hypothesis import given, settings, strategies as st

from ferry import limits
from ferry.codecs.access_unit import (
    AccessUnit, AccessUnitAssembler, ByteStreamAssembler, Dropped, sniff_codec,
)
from ferry.codecs.nal import join_annexb

# captured from libx264 / libx265 (testsrc2 640x360 at 25 fps)
SPS264 = bytes.fromhex("6764001eacd940a02ff97011000003000100000300320f162d96")
PPS264 = bytes.fromhex("68ebe3cb22c0")
VPS265 = bytes.fromhex("40010c01ffff01600000030090000003000003003f959809")
SPS265 = bytes.fromhex("42010101600000030090000003000003003fa00502016965959a4932bc05a02000000300200000030321")
PPS265 = bytes.fromhex("4401c172b46240")
IDR = b"\x65\x88\x84\x00\x33"      # first_mb_in_slice 0
SLICE = b"\x41\x9a\x02\x11"        # first_mb_in_slice 0
SLICE_2ND = b"\x41\x40\x02\x11"    # first_mb_in_slice 1 (code 010)
SEI = b"\x06\x05\x01\x80"
AUD = b"\x09\xf0"
IDR265 = b"\x26\x01\xaf\x10"        # IDR_W_RADL, first_slice_segment_in_pic_flag 1
TRAIL265 = b"\x02\x01\xd0\x20"
TRAIL265_2ND = b"\x02\x01\x50\x20"   # first_slice_segment_in_pic_flag 0


def run(codec, nals, **kw):
    a = AccessUnitAssembler(codec)
    out = []
    for n in nals:
        out += a.push(n, **kw)
    return out + a.flush()


def test_h264_boundaries_by_first_mb_and_parameter_sets():
    out = run("h264", [SPS264, PPS264, SEI, IDR, SLICE, SLICE_2ND, SEI, SLICE, AUD, SLICE])
    assert [e.nal_units for e in out] == [(SPS264, PPS264, SEI, IDR), (SLICE, SLICE_2ND), (SEI, SLICE), (AUD, SLICE)]
    assert [e.keyframe for e in out] == [True, False, False, False]
    assert all((e.width, e.height, e.frame_rate, e.codec) == (640, 360, 25.0, "h264") for e in out)


def test_h265_boundaries_and_irap():
    out = run("h265", [VPS265, SPS265, PPS265, IDR265, TRAIL265, TRAIL265_2ND, TRAIL265])
    assert [e.nal_units for e in out] == [(VPS265, SPS265, PPS265, IDR265), (TRAIL265, TRAIL265_2ND), (TRAIL265,)]
    assert [e.keyframe for e in out] == [True, False, False]
    assert (out[0].width, out[0].height, out[0].frame_rate) == (640, 360, 25.0)


def test_no_active_sps_drops_until_one_arrives():
    out = run("h264", [SLICE, SLICE, SPS264, PPS264, IDR])
    assert [type(e) for e in out] == [Dropped, Dropped, AccessUnit]
    assert out[0].reason == "no active SPS"


def test_refused_sps_drops_its_access_unit_and_later_ones():
    bad = b"\x67\x42\x00\x1e" + b"\xff" * 8
    out = run("h264", [SPS264, PPS264, IDR, bad, PPS264, IDR, SLICE])
    assert isinstance(out[0], AccessUnit)
    assert isinstance(out[1], Dropped) and "parameter set" in out[1].reason
    assert isinstance(out[2], Dropped) and out[2].reason == "no active SPS"


def test_malformed_nal_drops_the_access_unit():
    out = run("h264", [SPS264, PPS264, IDR, SLICE, b"\xc1\x00", SLICE])
    assert isinstance(out[0], AccessUnit) and isinstance(out[1], Dropped) and isinstance(out[2], AccessUnit)


def test_pts_from_pes_goes_to_first_access_unit_starting_in_it():
    b = ByteStreamAssembler("h264")
    frame1 = join_annexb([SPS264, PPS264, IDR])
    frame2 = join_annexb([SLICE])
    out = b.feed(frame1[:10], 3600, 0)           # frame 1 starts in PES 1
    out += b.feed(frame1[10:] + frame2, 7200, 3600)  # frame 2 starts in PES 2 (PTS 7200)
    out += b.feed(join_annexb([SLICE_2ND]), None, None)  # more of frame 2, no PTS
    out += b.feed(join_annexb([SLICE]), 10800, 7200)
    out += b.flush()
    assert [(e.pts, e.dts) for e in out] == [(3600, 0), (7200, 3600), (10800, 7200)]
    assert out[1].nal_units == (SLICE, SLICE_2ND)


def test_new_pts_at_pes_start_ends_access_unit_without_other_boundary():
    b = ByteStreamAssembler("h264")
    out = b.feed(join_annexb([SPS264, PPS264, IDR]), 0)
    out += b.feed(join_annexb([SLICE_2ND]), 3600)   # a camera whose first slice got lost
    out += b.flush()
    assert [e.pts for e in out] == [0, 3600]


def test_same_pts_in_several_pes_stays_one_access_unit():
    b = ByteStreamAssembler("h264")
    out = b.feed(join_annexb([SPS264, PPS264, IDR]), 0) + b.feed(join_annexb([SLICE_2ND]), 0) + b.flush()
    assert len(out) == 1 and out[0].nal_units == (SPS264, PPS264, IDR, SLICE_2ND)


def test_discontinuity_drops_partial_access_unit():
    b = ByteStreamAssembler("h264")
    b.feed(join_annexb([SPS264, PPS264, IDR]) + b"\x00\x00\x01\x41\x9a", 0)
    dropped = b.discontinuity()
    assert len(dropped) == 1 and isinstance(dropped[0], Dropped)
    out = b.feed(join_annexb([SLICE]), 3600) + b.flush()
    assert [e.pts for e in out] == [3600] and out[0].nal_units == (SLICE,)


def test_access_unit_size_is_bounded():
    a = AccessUnitAssembler("h264")
    out = a.push(SPS264) + a.push(PPS264) + a.push(IDR)
    for _ in range(limits.ACCESS_UNIT_NALS_MAX + 5):
        out += a.push(SLICE_2ND)
    out += a.push(SLICE) + a.flush()
    assert isinstance(out[0], Dropped) and out[0].reason == "access unit too large"
    assert len(a._nals) == 0 and isinstance(out[1], AccessUnit)


def test_to_pb():
    au = run("h264", [SPS264, PPS264, IDR], pts=90, dts=0)[0]
    pb = au.to_pb("cam1")
    assert (pb.stream_id, pb.codec, pb.keyframe, pb.pts, pb.dts, pb.width, pb.height) == (
        "cam1", "h264", True, 90, 0, 640, 360)
    assert list(pb.nal_units) == [SPS264, PPS264, IDR]


def test_sniff_codec():
    assert sniff_codec(join_annexb([AUD, SPS264, PPS264])) == "h264"
    assert sniff_codec(join_annexb([VPS265, SPS265])) == "h265"
    assert sniff_codec(join_annexb([SLICE, IDR])) is None
    assert sniff_codec(b"\x00\x00\x01\x67") is None


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["h264", "h265"]), st.lists(st.binary(max_size=12), max_size=30),
       st.lists(st.one_of(st.none(), st.integers(0, 1 << 33)), min_size=1, max_size=4))
def test_assembler_never_raises(codec, nals, ptss):
    a = AccessUnitAssembler(codec)
    prefix = [SPS264, PPS264] if codec == "h264" else [VPS265, SPS265, PPS265]
    total = 0
    for i, n in enumerate(prefix + nals):
        for e in a.push(n, pts=ptss[i % len(ptss)], pes=i, pes_start=True):
            total += e.nbytes if isinstance(e, Dropped) else e.size
    for e in a.flush():
        total += e.nbytes if isinstance(e, Dropped) else e.size
    assert total == sum(map(len, prefix + nals))
