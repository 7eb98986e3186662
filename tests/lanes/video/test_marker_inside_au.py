"""Issue 12 item 1: an RTP marker inside an access unit is a hint, never a cut inside a NAL unit.

A source that packs one PES per RTP packet and sets the marker on every packet (MPEG-1 pack
headers, recordings packetised per pack, cameras that mark per PES) must cross whole: the
next picture (a new PTS, an AUD, its first slice) ends an access unit, not the marker.
"""
from __future__ import annotations

import shutil
import struct

import pytest

import gb28181
from ferry.codecs.mpeg_ps import PsMuxer
from ferry.codecs.nal import join_annexb
from ferry.codecs.rtp import build_rtp
from ferry.lanes.video import StreamLoss, strip_nal_units
from .test_stream import SSRC, expected_nals, outer, ready, run_fields, source

pytestmark = pytest.mark.skipif(not shutil.which("ffmpeg"), reason="ffmpeg not installed")

PES_MAX = 1000


def _pes_packets(ps: bytes) -> tuple[bytes, list[bytes]]:
    """(what comes before the first video PES, [each video PES]) of one muxed pack."""
    i = ps.index(b"\x00\x00\x01\xe0")
    head, pes = ps[:i], []
    while i < len(ps):
        assert ps[i:i + 4] == b"\x00\x00\x01\xe0"
        n = 6 + struct.unpack_from(">H", ps, i + 4)[0]
        pes.append(ps[i:i + n])
        i += n
    return head, pes


def mpeg1_pack_header(scr: int, mux_rate: int = 50_000) -> bytes:
    """ISO/IEC 11172-1 §2.4.3.2: '0010' SCR (33 bits with markers), mux_rate (22 bits with markers)."""
    scr &= (1 << 33) - 1
    return b"\x00\x00\x01\xba" + bytes((
        0x21 | ((scr >> 29) & 0x0E), (scr >> 22) & 0xFF, ((scr >> 14) & 0xFE) | 1,
        (scr >> 7) & 0xFF, ((scr << 1) & 0xFE) | 1,
        0x80 | ((mux_rate >> 15) & 0x7F), (mux_rate >> 7) & 0xFF, ((mux_rate << 1) & 0xFE) | 1))


def marked_per_pes(src, mpeg1: bool) -> list[bytes]:
    """One pack per frame, its access unit in PES of at most PES_MAX payload bytes (the PTS on
    the first), one PES per RTP packet, the marker set on every packet."""
    mux = PsMuxer("h264", pes_payload_max=PES_MAX)
    packets, seq = [], 1000
    for f in gb28181.access_units(src, "h264"):
        head, pes = _pes_packets(mux.video(f.nal_units, f.pts, f.dts, f.keyframe))
        if mpeg1:
            head = mpeg1_pack_header(f.dts) + head[14:]     # the MPEG-2 pack header has no stuffing
        assert len(pes) >= 1 and all(len(p) <= PES_MAX + 19 + 6 for p in pes)
        for k, p in enumerate(pes):
            packets.append(build_rtp(96, seq, f.pts, SSRC, (head if k == 0 else b"") + p, marker=True))
            seq += 1
    return packets


@pytest.mark.parametrize("mpeg1", [False, True], ids=["mpeg2-pack", "mpeg1-pack"])
def test_a_marker_on_every_pes_loses_nothing_and_decodes_identical(plan_of, tmp_path, mpeg1):
    src = source("h264")
    packets = marked_per_pes(src, mpeg1)
    frames = gb28181.access_units(src, "h264")
    assert len(frames) == 50 and len(packets) > 2 * len(frames)   # pictures really are split
    stream = outer(plan_of(keep_sei=True))
    events = run_fields(stream, packets)
    objs = ready(events)
    assert not [e for e in events if isinstance(e, StreamLoss)]
    assert len(objs) == 50
    crossed = [n for o in objs for n in o.access_unit.nal_units]
    assert crossed == [n for f in frames for n in f.nal_units]
    out = tmp_path / "out.h264"
    out.write_bytes(b"".join(join_annexb(o.access_unit.nal_units) for o in objs))
    want = gb28181.framemd5(src)
    assert len(want) == 50 and gb28181.framemd5(out, "h264") == want
    c = stream.counts
    assert c["dropped_aus"] == 0 and c["skipped_bytes"] == 0 and c.get("dropped_bytes", 0) == 0


def test_without_keep_sei_the_same_pictures_cross(plan_of):
    src = source("h264")
    objs = ready(run_fields(outer(plan_of()), marked_per_pes(src, False)))
    assert [n for o in objs for n in o.access_unit.nal_units] == expected_nals("h264", src)


@pytest.mark.parametrize("codec", ["h264", "h265"])
def test_rfc6184_7798_with_a_marker_on_every_packet_crosses_whole(plan_of, tmp_path, codec):
    """The same source sent as RFC 6184 / RFC 7798 with the marker set on every packet (each
    parameter set and slice its own packet): one access unit per RTP timestamp all the same."""
    src = source(codec)
    packets = [d[:1] + bytes((d[1] | 0x80,)) + d[2:] for d, _ in gb28181.raw_packets(src, codec, ssrc=SSRC)]
    frames = gb28181.access_units(src, codec)
    stream = outer(plan_of(keep_sei=True), payload=codec)
    objs = ready(run_fields(stream, packets))
    assert len(objs) == len(frames) == 50
    assert [tuple(o.access_unit.nal_units) for o in objs] == [tuple(f.nal_units) for f in frames]
    out = tmp_path / f"out.{codec}"
    out.write_bytes(b"".join(join_annexb(o.access_unit.nal_units) for o in objs))
    assert gb28181.framemd5(out, {"h264": "h264", "h265": "hevc"}[codec]) == gb28181.framemd5(src)


def test_a_loss_right_after_a_trusted_marker_keeps_the_picture_before_it(plan_of):
    """A camera whose markers have only ever ended pictures: packets lost right after a marked
    one cost the pictures from the loss on (to the next keyframe), not the marked one before."""
    src = source("h264")
    packets = [d for d, _ in gb28181.ps_packets(src, "h264", ssrc=SSRC)]
    ends = [i for i, d in enumerate(packets) if d[1] & 0x80]
    kept = packets[:ends[4] + 1] + packets[ends[4] + 2:]        # picture 5 loses its first packet
    stream = outer(plan_of())
    events = run_fields(stream, kept, step=0.05)                   # slower than the reorder delay
    objs = ready(events)
    frames = gb28181.access_units(src, "h264")
    assert [tuple(o.access_unit.nal_units) for o in objs][:5] == [
        tuple(strip_nal_units("h264", f.nal_units)[0]) for f in frames[:5]]
    assert stream.counts["lost_packets"] == 1
    assert all(o.access_unit.keyframe for o in objs[5:6])          # then the next keyframe (picture 25)
