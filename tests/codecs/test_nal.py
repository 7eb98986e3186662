"""Annex B splitter, NAL unit headers and the RBSP bit reader."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from ferry.codecs.bitreader import BitReader, unescape_rbsp
from ferry.codecs.errors import CodecError
from ferry.codecs.nal import (
    AnnexBSplitter, NalError, h264_nal_type, h265_nal_header, join_annexb, split_annexb,
)


# --- splitter -----------------------------------------------------------------
def test_split_three_and_four_byte_start_codes_and_trailing_zeros():
    stream = b"\x00\x00\x00\x01\x67\xaa" + b"\x00\x00\x01\x68\xbb\x00\x00" + b"\x00\x00\x01\x65\x01\x02\x00"
    assert split_annexb(stream) == [b"\x67\xaa", b"\x68\xbb", b"\x65\x01\x02"]


def test_leading_garbage_and_empty_units_are_ignored():
    stream = b"\xff\xfe\x00\x00\x01\x00\x00\x01\x09\xf0\x00\x00\x00\x01"
    assert split_annexb(stream) == [b"\x09\xf0"]
    assert split_annexb(b"\x01\x02\x03") == []


def test_streaming_matches_whole_for_every_cut():
    units = [b"\x67\x64\x00\x1e", b"\x68\xeb", b"\x06\x05\xff\x00\x03\x00\x80", b"\x65" + bytes(range(1, 200))]
    stream = join_annexb(units) + b"\x00\x00"
    for cut in range(len(stream) + 1):
        s = AnnexBSplitter()
        got = s.feed(stream[:cut]) + s.feed(stream[cut:]) + s.flush()
        assert got == units, cut


def test_offsets_point_at_start_codes():
    stream = b"\x00\x00\x00\x01\x09\x10" + b"\x00\x00\x01\x41\x9a"
    s = AnnexBSplitter()
    located = s.feed_located(stream[:3]) + s.feed_located(stream[3:]) + s.flush_located()
    assert located == [(1, b"\x09\x10"), (6, b"\x41\x9a")]
    assert stream[1:4] == stream[6:9] == b"\x00\x00\x01"


def test_splitter_is_bounded():
    s = AnnexBSplitter(max_nal=1000)
    s.feed(b"\x00\x00\x01\x65")
    with pytest.raises(NalError):
        for _ in range(20):
            s.feed(b"\x11" * 100)
    s.reset()
    assert s.feed(b"\x00\x00\x01\x09\xf0\x00\x00\x01") == [b"\x09\xf0"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=40), max_size=8), st.integers(1, 17))
def test_split_round_trip_of_escaped_units(raw_units, step):
    # units as an encoder writes them: no 00 00 0x inside, no trailing zero byte
    units = []
    for u in raw_units:
        u = u.replace(b"\x00\x00", b"\x00\x00\x03")
        if u.endswith(b"\x00"):
            u += b"\x80"
        units.append(u)
    stream = join_annexb(units, b"\x00\x00\x01")
    s = AnnexBSplitter()
    got = []
    for i in range(0, len(stream), step):
        got += s.feed(stream[i:i + step])
    got += s.flush()
    assert got == units


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), st.integers(1, 64))
def test_splitter_on_arbitrary_bytes(data, step):
    s = AnnexBSplitter(max_nal=256)
    try:
        got = []
        for i in range(0, len(data), step):
            got += s.feed(data[i:i + step])
        got += s.flush()
    except CodecError:
        return
    assert all(b"\x00\x00\x01" not in u and u and u[-1] != 0 for u in got)
    assert sum(map(len, got)) <= len(data)


# --- NAL unit headers ---------------------------------------------------------
def test_h264_header():
    assert h264_nal_type(b"\x67") == 7
    assert h264_nal_type(b"\x65\x88") == 5
    with pytest.raises(NalError):
        h264_nal_type(b"")
    with pytest.raises(NalError):
        h264_nal_type(b"\xe5")


def test_h265_header():
    assert h265_nal_header(b"\x40\x01") == (32, 0, 0)
    assert h265_nal_header(b"\x26\x01\xaf") == (19, 0, 0)
    assert h265_nal_header(b"\x02\x0b") == (1, 1, 2)
    for bad in (b"\x40", b"\x40\x00", b"\xc0\x01"):
        with pytest.raises(NalError):
            h265_nal_header(bad)


# --- bit reader ---------------------------------------------------------------
def test_unescape():
    assert unescape_rbsp(b"\x00\x00\x03\x01\x00\x00\x03") == b"\x00\x00\x01\x00\x00"
    assert unescape_rbsp(b"\x00\x00\x03\x00\x00\x03\x00") == b"\x00\x00\x00\x00\x00"
    assert unescape_rbsp(b"\x12\x34") == b"\x12\x34"


def test_exp_golomb_known_codes():
    # 1 | 010 | 011 | 00100 | 00101 -> ue 0,1,2,3,4 ; then se of codes 010 (1), 011 (-1)
    r = BitReader(bytes([0b10100110, 0b01000010, 0b10100110]))
    assert [r.ue() for _ in range(5)] == [0, 1, 2, 3, 4]
    assert r.se() == 1 and r.se() == -1
    assert r.bits_left == 1


def test_fixed_width_reads_and_bounds():
    r = BitReader(b"\xab\xcd\xef")
    assert r.u(4) == 0xA and r.u(12) == 0xBCD and r.flag() is True
    with pytest.raises(NalError):
        r.u(8)
    r2 = BitReader(b"")
    for call in (lambda: r2.u(1), r2.ue, r2.se, lambda: r2.skip(1)):
        with pytest.raises(NalError):
            call()


def test_exp_golomb_limits():
    with pytest.raises(NalError):  # 32 leading zeros
        BitReader(b"\x00\x00\x00\x00\xff\xff\xff\xff\xff").ue()
    assert BitReader(b"\x00\x00\x00\x01\xff\xff\xff\xfe").ue() == (1 << 32) - 2
    with pytest.raises(NalError):
        BitReader(b"\x00\x80").ue(maximum=100)  # 255 > 100


def test_more_rbsp_data():
    r = BitReader(b"\xa0")  # 1 0 1 [stop bit] 0...
    assert r.more_rbsp_data()
    r.u(2)
    assert not r.more_rbsp_data()


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=40), st.lists(st.sampled_from(["u", "ue", "se", "flag"]), max_size=30))
def test_bitreader_raises_only_nal_error(data, ops):
    r = BitReader(unescape_rbsp(data))
    try:
        for op in ops:
            before = r.position
            value = r.u(5) if op == "u" else getattr(r, op)()
            assert r.position > before
            if op == "ue":
                assert 0 <= value <= (1 << 32) - 2
    except NalError:
        pass
    assert 0 <= r.position <= len(unescape_rbsp(data)) * 8
