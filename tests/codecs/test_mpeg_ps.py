"""MPEG-2 program stream demuxer (field variants, bounds, fuzz) and GB/T 28181 muxer."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings, strategies as st

from ferry.codecs.access_unit import AccessUnit, ByteStreamAssembler
from ferry.codecs.mpeg_ps import (
    AudioPes, PsDemuxer, PsError, PsMuxer, Skipped, StreamInfo, VideoPes, _ts_bytes, crc32_mpeg2,
    pack_header, parse_psm,
)
from ferry.codecs.nal import join_annexb

SPS = bytes.fromhex("6764001eacd940a02ff97011000003000100000300320f162d96")
PPS = bytes.fromhex("68ebe3cb22c0")
IDR = b"\x65\x88\x84\x00\x33" + bytes(range(1, 250)) * 4
SLICE = b"\x41\x9a\x02\x11" + bytes(range(1, 200))
MPEG1_PACK = b"\x00\x00\x01\xba\x21\x00\x01\x00\x01\xc3\x33\x67"


def pes(sid, payload, pts=None, dts=None, length=None):
    if pts is None:
        head = b"\x80\x00\x00"
    elif dts is None:
        head = b"\x80\x80\x05" + _ts_bytes(2, pts)
    else:
        head = b"\x80\xc0\x0a" + _ts_bytes(3, pts) + _ts_bytes(1, dts)
    n = len(head) + len(payload) if length is None else length
    return bytes((0, 0, 1, sid)) + struct.pack(">H", n) + head + payload


def mpeg1_pes(sid, payload, pts):
    head = b"\xff\xff" + b"\x40\x20" + _ts_bytes(2, pts)  # stuffing, STD buffer, PTS
    return bytes((0, 0, 1, sid)) + struct.pack(">H", len(head) + len(payload)) + head + payload


def demux(data, step=None):
    d = PsDemuxer()
    out = []
    if step is None:
        out += d.feed(data)
    else:
        for i in range(0, len(data), step):
            out += d.feed(data[i:i + step])
    return out + d.flush()


def video(events):
    return [e for e in events if isinstance(e, VideoPes)]


# --- demuxer ------------------------------------------------------------------
def test_gb28181_shape_with_psm():
    m = PsMuxer("h265", "g711a")
    data = m.video([b"\x40\x01\x0c", b"\x26\x01\xaf"], 3600, 0, keyframe=True) + m.audio(b"\xd5" * 160, 3600)
    events = demux(data)
    infos = [e for e in events if isinstance(e, StreamInfo)]
    assert [(i.stream_id, i.stream_type, i.codec, i.source) for i in infos] == [
        (0xE0, 0x24, "h265", "psm"), (0xC0, 0x90, "g711a", "psm")]
    (v,) = video(events)
    assert (v.stream_id, v.pts, v.dts) == (0xE0, 3600, 0)
    assert v.data == join_annexb([b"\x40\x01\x0c", b"\x26\x01\xaf"])
    (a,) = [e for e in events if isinstance(e, AudioPes)]
    assert (a.stream_id, a.pts, a.data) == (0xC0, 3600, b"\xd5" * 160)
    assert not [e for e in events if isinstance(e, Skipped)]


def test_psm_repeated_on_key_frames_reports_once():
    m = PsMuxer("h264")
    data = b"".join(m.video([SPS, PPS, IDR], i * 3600, keyframe=True) for i in range(3))
    events = demux(data)
    assert len([e for e in events if isinstance(e, StreamInfo)]) == 1
    assert len(video(events)) == 3


def test_mpeg1_pack_and_pes_headers_and_sniffed_codec():
    es = join_annexb([SPS, PPS, IDR])
    data = MPEG1_PACK + mpeg1_pes(0xE2, es, 9000) + MPEG1_PACK + b"\x00\x00\x01\xe2\x00\x05\x0f" + b"\x00\x00\x01\x09"
    events = demux(data)
    assert events[0] == StreamInfo(0xE2, None, "h264", "sniffed")
    v = video(events)
    assert (v[0].pts, v[0].dts, v[0].data) == (9000, 9000, es)
    assert (v[1].pts, v[1].data) == (None, b"\x00\x00\x01\x09")


def test_mpeg2_pack_stuffing_system_header_padding_private():
    pack = pack_header(1000, 100)[:-1] + b"\xfb" + b"\xff\xff\xff"  # 3 stuffing bytes
    system = PsMuxer("h264").system_header()
    data = pack + system + b"\x00\x00\x01\xbe\x00\x04\xff\xff\xff\xff" + b"\x00\x00\x01\xbd\x00\x02\x01\x02" \
        + pes(0xE0, b"\x00\x00\x01\x09\xf0", 5)
    events = demux(data)
    assert [e for e in events if isinstance(e, Skipped)] == [
        Skipped("padding stream", 10), Skipped("private stream 1", 8)]
    assert video(events)[0].data == b"\x00\x00\x01\x09\xf0"


def test_pes_split_across_feeds_byte_by_byte():
    m = PsMuxer("h264")
    data = b"".join(m.video([SPS, PPS, IDR] if i == 0 else [SLICE], i * 3600, keyframe=i == 0) for i in range(4))
    whole = video(demux(data))
    assert video(demux(data, 1)) == whole and video(demux(data, 7)) == whole
    assert [v.pts for v in whole] == [0, 3600, 7200, 10800]


def test_large_access_unit_split_into_pes_of_at_most_65535():
    big = b"\x65\x88" + b"\x11" * 150_000
    data = PsMuxer("h264").video([SPS, PPS, big], 0, keyframe=True)
    v = video(demux(data))
    assert len(v) == 3 and [x.pts for x in v] == [0, None, None]
    assert b"".join(x.data for x in v) == join_annexb([SPS, PPS, big])
    i = 0
    while (i := data.find(b"\x00\x00\x01\xe0", i)) >= 0:
        assert struct.unpack_from(">H", data, i + 4)[0] <= 65535
        i += 4


def test_unbounded_video_pes():
    es = join_annexb([SPS, PPS, IDR])
    data = MPEG1_PACK + pes(0xE0, es, 0, length=0) + MPEG1_PACK + pes(0xE0, join_annexb([SLICE]), 3600, length=0)
    for step in (None, 1, 13):
        events = demux(data, step)
        pieces = video(events)
        assert pieces[0].pts == 0 and not pieces[0].continued
        first = b"".join(p.data for p in pieces[:pieces.index(next(p for p in pieces if p.pts == 3600))])
        assert first == es
        assert b"".join(p.data for p in pieces) == es + join_annexb([SLICE])


def test_pes_length_65535_with_20_bytes_present_is_cut_by_next_pack():
    cut = pes(0xE0, b"\x00\x00\x01\x41" + b"\x22" * 8, 0, length=65535)
    assert len(cut) == 26
    good = MPEG1_PACK + pes(0xE0, join_annexb([SLICE]), 3600)
    d = PsDemuxer()
    first = d.feed(MPEG1_PACK + cut)
    assert first == [] and len(d._buf) < 100
    events = d.feed(good) + d.flush()
    assert Skipped("truncated PES", len(cut)) in events
    assert [v.pts for v in video(events)] == [3600]


def test_audio_pes_truncation_needs_a_pack_header():
    m = PsMuxer("h264", "g711u")
    cut = pes(0xC0, b"\x00\x00\x01\xe0" + b"\x55" * 10, 0, length=400)   # audio bytes that look like a start code
    events = demux(cut + m.audio(b"\x7f" * 160, 1800))
    assert events[0] == Skipped("truncated PES", len(cut))
    assert [e.pts for e in events if isinstance(e, AudioPes)] == [1800]


def test_stream_starting_mid_packet_resynchronises():
    m = PsMuxer("h264")
    data = m.video([SPS, PPS, IDR], 0, keyframe=True) + m.video([SLICE], 3600)
    tail = data[57:]
    events = demux(tail)
    assert isinstance(events[0], Skipped) and events[0].reason == "no start code"
    assert [v.pts for v in video(events)] == [3600]


def test_bogus_psm_lengths_refused():
    psm = PsMuxer("h264").program_stream_map()
    assert parse_psm(psm) == [(0x1B, 0xE0)]
    for bad in (psm[:4] + b"\xff\xff" + psm[6:], psm[:8] + b"\x40\x00" + psm[10:], psm[:10] + b"\x00\x40" + psm[12:]):
        with pytest.raises(PsError):
            parse_psm(bad)
    events = demux(b"\x00\x00\x01\xbc\xff\xff" + bytes(30) + pes(0xE0, b"\x00\x00\x01\x09\xf0", 0))
    assert Skipped("bogus program stream map length", 4) in events
    assert video(events)[0].data == b"\x00\x00\x01\x09\xf0"
    events = demux(psm[:10] + b"\x00\x40" + psm[12:])
    assert events == [Skipped("bogus elementary_stream_map_length", len(psm))]


def test_psm_crc_is_computed_but_not_required():
    psm = PsMuxer("h264").program_stream_map()
    assert crc32_mpeg2(psm) == 0  # CRC-32/MPEG-2 over data + CRC is zero
    broken = psm[:-4] + b"\x00\x00\x00\x00"
    assert [e.codec for e in demux(broken) if isinstance(e, StreamInfo)] == ["h264"]


def test_malformed_pes_header_skipped():
    bad = b"\x00\x00\x01\xe0\x00\x08\x80\x40\x05" + bytes(5)  # PTS_DTS_flags 01
    scrambled = b"\x00\x00\x01\xe0\x00\x03\xb0\x00\x00"
    events = demux(bad + scrambled + pes(0xE0, b"\x01", 7))
    skipped = [e for e in events if isinstance(e, Skipped)]
    assert [e.reason for e in skipped if e.reason != "no start code"] == ["PTS_DTS_flags 01", "scrambled PES"]
    assert sum(e.nbytes for e in skipped) == len(bad + scrambled)
    assert [v.pts for v in video(events)] == [7]


# --- muxer ----------------------------------------------------------------------
def test_muxer_is_deterministic_and_round_trips_access_units():
    aus = [([SPS, PPS, IDR], 7200, 3600, True), ([SLICE], 14400, 7200, False), ([SLICE], 10800, 10800, False)]
    m = PsMuxer("h264")
    data = b"".join(m.video(n, p, d, k) for n, p, d, k in aus)
    assert data == b"".join(PsMuxer("h264").video(n, p, d, k) for n, p, d, k in aus)
    assert data.startswith(b"\x00\x00\x01\xba\x44")
    assert data.count(b"\x00\x00\x01\xbc") == 1 and data.count(b"\x00\x00\x01\xbb") == 1
    b = ByteStreamAssembler("h264")
    got = []
    for e in demux(data, 100):
        if isinstance(e, VideoPes):
            got += b.feed(e.data, e.pts, e.dts, not e.continued)
    got += b.flush()
    assert all(isinstance(g, AccessUnit) for g in got)
    assert [(g.nal_units, g.pts, g.dts, g.keyframe) for g in got] == [(tuple(n), p, d, k) for n, p, d, k in aus]


def test_timestamps_wrap_at_33_bits():
    data = PsMuxer("h264").video([SLICE], (1 << 33) + 5)
    assert video(demux(data))[0].pts == 5


# --- fuzz -----------------------------------------------------------------------
_SEED = (PsMuxer("h264", "g711a").video([SPS, PPS, IDR[:40]], 3600, 0, True)
         + PsMuxer("h264", "g711a").audio(b"\xd5" * 8, 1))


def _check_bounded(data, step):
    d = PsDemuxer()
    events = []
    for i in range(0, len(data), step):
        events += d.feed(data[i:i + step])
        assert len(d._buf) <= 6 + 65535 + step
    events += d.flush()
    for e in events:
        assert isinstance(e, (VideoPes, AudioPes, StreamInfo, Skipped))
    return events


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.integers(1, 50))
def test_demuxer_on_arbitrary_bytes(data, step):
    _check_bounded(data, step)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_demuxer_on_mutated_streams(data):
    seed = bytearray(_SEED)
    for _ in range(data.draw(st.integers(1, 6))):
        i = data.draw(st.integers(0, len(seed) - 1))
        seed[i] = data.draw(st.integers(0, 255))
    whole = _check_bounded(bytes(seed), len(seed))
    one = _check_bounded(bytes(seed), 1)
    join = lambda ev: b"".join(e.data for e in ev if isinstance(e, (VideoPes, AudioPes)))  # noqa: E731
    assert join(one) == join(whole)


def test_pes_65535_in_a_20_byte_packet_byte_by_byte():
    d = PsDemuxer()
    packet = pes(0xE0, b"\x00\x00\x01\x65\x88\x84\x00\x33\x01\x02\x03", 0, length=65535)[:20]
    for b in packet:
        assert d.feed(bytes([b])) == []
    assert len(d._buf) == 20
    assert d.flush() == [Skipped("truncated packet", 20)]


def test_malformed_pes_header_with_bogus_length_does_not_swallow_what_follows():
    bad = b"\x00\x00\x01\xe0\xff\xff\x80\x40\x05" + bytes(5)
    events = demux(bad + MPEG1_PACK + pes(0xE0, b"\x00\x00\x01\x09\xf0", 11))
    assert [v.pts for v in video(events)] == [11]
    assert sum(e.nbytes for e in events if isinstance(e, Skipped)) == len(bad)
