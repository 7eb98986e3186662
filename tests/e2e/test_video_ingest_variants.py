"""Issue 12 items 1 and 2 through real agents: a camera that marks every PES, and one that sends
malformed datagrams between pictures, both decode identical to their sources on the inner side."""
from __future__ import annotations

import shutil
import struct

import pytest

import gb28181
from appliance import free_udp_port
from ferry.codecs.mpeg_ps import PsMuxer
from ferry.codecs.rtp import build_rtp, parse_rtp
from waiting import file_size, wait_stable

from .test_video import events, make_appliance, output_entry, video_entry

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240),
              pytest.mark.skipif(not shutil.which("ffmpeg"), reason="ffmpeg not installed")]

MARKS_EVERY_PES = "43090000001320000011"
SENDS_MALFORMED = "43090000001320000012"
SSRC = 0x0BEBC201


def marked_per_pes(src) -> list[tuple[bytes, float]]:
    """One pack per picture, its access unit in PES of at most 1000 bytes, one PES per RTP
    packet, the marker on every packet."""
    mux = PsMuxer("h264", pes_payload_max=1000)
    out, seq = [], 1
    for n, f in enumerate(gb28181.access_units(src, "h264")):
        ps = mux.video(f.nal_units, f.pts, f.dts, f.keyframe)
        i = ps.index(b"\x00\x00\x01\xe0")
        head, pes = ps[:i], []
        while i < len(ps):
            size = 6 + struct.unpack_from(">H", ps, i + 4)[0]
            pes.append(ps[i:i + size])
            i += size
        for k, p in enumerate(pes):
            out.append((build_rtp(96, seq, f.pts, SSRC, (head if k == 0 else b"") + p, marker=True), n * 0.04))
            seq += 1
    return out


def with_malformed(packets: list[bytes]) -> list[bytes]:
    """A malformed datagram of each kind between pictures 1..6: those whose sequence number can be
    read take the next number (the camera numbers on after them), the others are extra."""
    kinds = [(0x8F, True), (0x90, True), (0xA0, True), ("short", True), (0x40, False), ("tiny", False)]
    for picture, (kind, readable) in enumerate(kinds, start=1):
        ends = [i for i, d in enumerate(packets) if len(d) >= 12 and d[1] & 0x80]
        cut = ends[picture - 1] + 1
        nxt = parse_rtp(packets[cut])
        fixed = struct.pack("!BBHII", 0x80, 96, nxt.sequence, nxt.timestamp, SSRC)
        body = b"\x00\x00\x01\xba" + bytes(16)
        if kind == "short":
            bad = fixed[:8]
        elif kind == "tiny":
            bad = fixed[:3]
        elif kind == 0x90:
            bad = bytes([kind]) + fixed[1:] + struct.pack("!HH", 0xBEDE, 1000) + body
        elif kind == 0xA0:
            bad = bytes([kind]) + fixed[1:] + body[:-1] + bytes([200])
        else:
            bad = bytes([kind]) + fixed[1:] + body
        rest = packets[cut:]
        if readable:
            rest = [d[:2] + struct.pack("!H", (parse_rtp(d).sequence + 1) & 0xFFFF) + d[4:] for d in rest]
        packets = packets[:cut] + [bad] + rest
    return packets


def test_a_marker_on_every_pes_and_malformed_datagrams_cross_decoding_identical(appliance_factory, tmp_path):
    a = make_appliance(appliance_factory, tmp_path)
    long_src = gb28181.make_source(None, "h264", seconds=2)       # 50 pictures
    short_src = gb28181.make_source(None, "h264", seconds=0.4)    # 10 pictures, one IDR
    marked = marked_per_pes(long_src)
    plain = [d for d, _ in gb28181.ps_packets(short_src, "h264", ssrc=SSRC)]
    bad = with_malformed(plain)
    assert len(bad) == len(plain) + 6
    p1, p2 = free_udp_port(), free_udp_port()
    a.append_config("outer", video_entry("marks", MARKS_EVERY_PES, listen=f"127.0.0.1:{p1}"))
    a.append_config("outer", video_entry("malformed", SENDS_MALFORMED, listen=f"127.0.0.1:{p2}"))
    recordings = a.work / "recordings"
    a.append_config("inner", output_entry(transport="file", path=str(recordings / "{stream}.ps")))
    try:
        a.start()
        cams = [gb28181.Camera(marked, ("127.0.0.1", p1), transport="udp", realtime=2.0),
                gb28181.Camera([(d, i * 0.02) for i, d in enumerate(bad)], ("127.0.0.1", p2), transport="udp",
                               realtime=1.0)]
        for c in cams:
            c.start()
        for c in cams:
            assert c.join(60) == []                                   # nothing dropped by the camera
        a.wait_for(lambda: len(events(a.outer_audit, "stream_ended")) == 2, 60, "both outer stream_ended")
        wait_stable(lambda: sorted((p.name, file_size(p)) for p in recordings.glob("*.ps")), 1.0, 30,
                    "the inner agent's file output")
    finally:
        a.stop()
    ended = {r["flow"].split("-")[0]: r["detail"] for r in events(a.outer_audit, "stream_ended")}
    assert ended["marks"]["access_units"] == 50 and ended["marks"].get("dropped_bytes", 0) == 0
    assert ended["malformed"]["access_units"] == 10
    assert ended["malformed"]["malformed_packets"] == 6 and ended["malformed"]["lost_packets"] == 0
    assert not events(a.outer_audit, "stream_loss")
    files = {p.name.split("-")[0]: p for p in recordings.glob("*.ps")}
    assert gb28181.framemd5(files["marks"]) == gb28181.framemd5(long_src)
    assert gb28181.framemd5(files["malformed"]) == gb28181.framemd5(short_src)
