"""The GB/T 28181 test camera (tests/support/gb28181.py) against ffmpeg and ferry's demuxers."""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time

import pytest

import gb28181
from ferry.codecs.access_unit import AccessUnit, ByteStreamAssembler
from ferry.codecs.mpeg_ps import PsDemuxer, StreamInfo, VideoPes
from ferry.codecs.nal import split_annexb
from ferry.codecs.rfc4571 import Deframer
from ferry.codecs.rtp import parse_rtp
from ferry.codecs.rtp_h264 import H264Depacketizer
from ferry.codecs.rtp_h265 import H265Depacketizer
from ferry.codecs.rtp_payload import RtpAccessUnit

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None,
                                reason="ffmpeg not installed")
SSRC = 0x0BEBC201


@pytest.fixture(scope="module", params=["h264", "h265"])
def source(request):
    codec = request.param
    return codec, gb28181.make_source(None, codec, seconds=4)


def demux(ps: bytes, step: int = 1400):
    d = PsDemuxer()
    events = []
    for i in range(0, len(ps), step):
        events += d.feed(ps[i:i + step])
    return events + d.flush()


def test_source_is_cached_and_timed(source):
    codec, path = source
    again = gb28181.make_source(None, codec, seconds=4)
    assert again == path and again.stat().st_mtime == path.stat().st_mtime
    frames = gb28181.access_units(path, codec)
    assert len(frames) == 100 == len(gb28181.source_framemd5(path))
    assert [f.dts for f in frames] == [3600 + 3600 * i for i in range(100)]
    assert [i for i, f in enumerate(frames) if f.keyframe] == [0, 25, 50, 75]


def test_ps_packets_are_rtp_of_a_camera(source):
    codec, path = source
    packets = gb28181.ps_packets(path, codec, ssrc=SSRC, mtu=1000, seq_start=65500)
    parsed = [parse_rtp(p) for p, _ in packets]
    assert {p.ssrc for p in parsed} == {SSRC} and {p.payload_type for p in parsed} == {96}
    assert [p.sequence for p in parsed] == [(65500 + i) & 0xFFFF for i in range(len(parsed))]
    assert max(len(p.payload) for p in parsed) == 1000
    # marker exactly on the last packet of each frame; 90 kHz timestamps 40 ms apart
    ends = [i for i, p in enumerate(parsed) if p.marker]
    assert len(ends) == 100 and ends[-1] == len(parsed) - 1
    stamps = [parsed[i].timestamp for i in ends]
    assert stamps == [3600 + 3600 * i for i in range(100)]
    assert all(parsed[i].timestamp == parsed[i + 1].timestamp for i in range(len(parsed) - 1) if i not in ends)
    # offsets rise and follow the frame times
    offsets = [o for _, o in packets]
    assert offsets == sorted(offsets) and offsets[0] == 0 and 3.9 < offsets[-1] < 4.0
    # each frame begins with a pack header; key frames carry the PSM (00 00 01 BC)
    firsts = [0] + [i + 1 for i in ends[:-1]]
    assert all(bytes(parsed[i].payload[:4]) == b"\x00\x00\x01\xba" for i in firsts)
    frames = gb28181.access_units(path, codec)
    for i, f in zip(firsts, frames):
        j = ends[firsts.index(i)]
        frame_ps = b"".join(bytes(p.payload) for p in parsed[i:j + 1])
        assert (b"\x00\x00\x01\xbc" in frame_ps[:64]) == f.keyframe


def test_ps_packets_demux_to_the_source_nal_units(source):
    codec, path = source
    packets = gb28181.ps_packets(path, codec, ssrc=SSRC)
    events = demux(gb28181.ps_stream(packets))
    infos = [e for e in events if isinstance(e, StreamInfo)]
    assert infos and infos[0].source == "psm" and infos[0].codec == codec
    b = ByteStreamAssembler(codec)
    aus = []
    for e in events:
        if isinstance(e, VideoPes):
            aus += b.feed(e.data, e.pts, e.dts, not e.continued)
    aus += b.flush()
    assert all(isinstance(a, AccessUnit) for a in aus)
    got = [n for a in aus for n in a.nal_units]
    assert got == split_annexb(path.read_bytes())
    assert [a.pts for a in aus] == [3600 + 3600 * i for i in range(100)]


def test_ffprobe_accepts_the_program_stream(source, tmp_path):
    codec, path = source
    ps = tmp_path / "camera.mpg"
    ps.write_bytes(gb28181.ps_stream(gb28181.ps_packets(path, codec, ssrc=SSRC)))
    out = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
                          "stream=codec_name,width,height,nb_read_frames", "-of", "json", str(ps)],
                         check=True, capture_output=True, text=True).stdout
    stream = json.loads(out)["streams"][0]
    assert stream["codec_name"] == {"h264": "h264", "h265": "hevc"}[codec]
    assert (stream["width"], stream["height"], int(stream["nb_read_frames"])) == (640, 360, 100)
    assert gb28181.framemd5(ps) == gb28181.source_framemd5(path)


def test_raw_packets_depacketize_to_the_source(source):
    codec, path = source
    packets = gb28181.raw_packets(path, codec, ssrc=SSRC, payload_type=98, mtu=1200)
    parsed = [parse_rtp(p) for p, _ in packets]
    assert {p.payload_type for p in parsed} == {98} and max(len(p.payload) for p in parsed) <= 1200
    depacketizer = H264Depacketizer() if codec == "h264" else H265Depacketizer()
    aus = []
    for p in parsed:
        aus += depacketizer.push(p)
    aus += depacketizer.flush()
    assert all(isinstance(a, RtpAccessUnit) and a.marker and not a.lossy for a in aus)
    assert [n for a in aus for n in a.nal_units] == split_annexb(path.read_bytes())
    assert len(aus) == 100


def test_loops_keep_time_rising(source):
    codec, path = source
    packets = gb28181.ps_packets(path, codec, ssrc=SSRC, loops=2)
    parsed = [parse_rtp(p) for p, _ in packets]
    stamps = [p.timestamp for p in parsed if p.marker]
    assert len(stamps) == 200 and stamps == sorted(set(stamps))
    assert stamps[100] - stamps[99] == 3600
    assert 7.9 < packets[-1][1] < 8.0
    aus = [a for a in gb28181.access_units(path, codec, loops=2)]
    assert aus[100].keyframe and aus[100].nal_units == aus[0].nal_units


def test_b_frames_are_timed_from_the_container(tmp_path):
    path = gb28181.make_source(tmp_path, "h264", seconds=2, extra="-bf 2")
    frames = gb28181.access_units(path, "h264")
    assert any(f.pts != f.dts for f in frames)
    assert sorted(f.pts for f in frames) == [3600 * (i + 1) + frames[0].pts - 3600 for i in range(50)]
    ps = tmp_path / "b.mpg"
    ps.write_bytes(gb28181.ps_stream(gb28181.ps_packets(path, "h264", ssrc=1)))
    assert gb28181.framemd5(ps) == gb28181.source_framemd5(path)


# --- sending ---------------------------------------------------------------------------------
def udp_receiver():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    s.bind(("127.0.0.1", 0))
    s.settimeout(2.0)
    return s


def receive_all(s, n):
    got = []
    try:
        while len(got) < n:
            got.append(s.recv(65536))
    except TimeoutError:
        pass
    return got


def test_send_udp_with_seeded_loss():
    path = gb28181.make_source(None, "h264", seconds=4)
    packets = gb28181.ps_packets(path, "h264", ssrc=SSRC)
    with udp_receiver() as rx:
        dropped = gb28181.send_udp(packets, rx.getsockname(), loss=0.05, seed=7)
        got = receive_all(rx, len(packets) - len(dropped))
    assert 0.02 * len(packets) < len(dropped) < 0.1 * len(packets)
    assert dropped == gb28181.send_udp(packets, ("127.0.0.1", 9), loss=0.05, seed=7)  # seeded: repeatable
    expected = [p for p, _ in packets if gb28181.sequence(p) not in set(dropped)]
    assert got == expected


def test_camera_paces_in_real_time():
    path = gb28181.make_source(None, "h265", seconds=4)
    packets = gb28181.ps_packets(path, "h265", ssrc=SSRC)[:200]  # about one second
    span = packets[-1][1]
    with udp_receiver() as rx:
        start = time.monotonic()
        cam = gb28181.Camera(packets, rx.getsockname(), realtime=2.0).start()
        first = rx.recv(65536)
        assert first == packets[0][0]
        assert cam.join(10) == []
        elapsed = time.monotonic() - start
        assert len(receive_all(rx, len(packets) - 1)) == len(packets) - 1
    assert span / 2 - 0.05 < elapsed < span / 2 + 0.5


def deframe(data: bytes) -> list[bytes]:
    d = Deframer(resync=True)
    out = []
    for i in range(0, len(data), 4096):
        d.receive(data[i:i + 4096])
        while (p := d.next_packet()) is not None:
            out.append(p)
    assert d.skipped_bytes == 0
    return out


def read_all(conn) -> bytes:
    chunks = []
    while chunk := conn.recv(1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)


def test_send_tcp_frames_rfc4571():
    path = gb28181.make_source(None, "h264", seconds=4)
    packets = gb28181.ps_packets(path, "h264", ssrc=SSRC)
    srv = gb28181.tcp_listener()
    cam = gb28181.Camera(packets, srv.getsockname(), transport="tcp", realtime=False, loss=0.02, seed=3).start()
    srv.settimeout(10)
    conn, _ = srv.accept()
    with conn, srv:
        data = read_all(conn)
    dropped = set(cam.join(10))
    assert dropped and deframe(data) == [p for p, _ in packets if gb28181.sequence(p) not in dropped]


def test_serve_tcp_for_ferry_connecting():
    path = gb28181.make_source(None, "h265", seconds=4)
    packets = gb28181.raw_packets(path, "h265", ssrc=SSRC)
    cam = gb28181.Camera(packets, transport="tcp-serve", realtime=False).start()
    with socket.create_connection(cam.address, timeout=10) as conn:
        data = read_all(conn)
    assert cam.join(10) == []
    assert deframe(data) == [p for p, _ in packets]
