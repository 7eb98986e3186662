"""A real peer: ffmpeg receives our RFC 6184 / RFC 7798 packets over UDP loopback and decodes them
bit-exactly (framemd5 equal to decoding the source file directly)."""

from __future__ import annotations

import random
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from waiting import udp_receive_queues, wait_until

from ferry.codecs import rtp_h264, rtp_h265
from ferry.codecs.rtp import ReorderBuffer, RtpPacketWriter, parse_rtp
from ferry.codecs.rtp_h264 import H264Depacketizer
from ferry.codecs.rtp_h265 import H265Depacketizer

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")

FFMPEG = ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error"]


def split_annexb(data: bytes) -> list[bytes]:
    """NAL units of an Annex B byte stream (3- or 4-byte start codes; trailing zeros dropped)."""
    starts = [m.end() for m in re.finditer(b"\x00\x00\x01", data)]
    nals = []
    for i, s in enumerate(starts):
        end = starts[i + 1] - 3 if i + 1 < len(starts) else len(data)
        nals.append(data[s:end].rstrip(b"\x00"))
    return [n for n in nals if n]


def access_units(nals: list[bytes], hevc: bool) -> list[list[bytes]]:
    """Group NAL units into access units: a new one starts at a parameter set/SEI/AUD or at the
    first slice of a picture, once the current one has a picture (enough for x264/x265 output)."""
    aus: list[list[bytes]] = []
    current: list[bytes] = []
    has_vcl = False
    for nal in nals:
        if hevc:
            kind = (nal[0] >> 1) & 0x3F
            vcl = kind < 32
            first = vcl and bool(nal[2] & 0x80)  # first_slice_segment_in_pic_flag
            prefix = kind in (32, 33, 34, 35, 39)
        else:
            kind = nal[0] & 0x1F
            vcl = kind in (1, 5)
            first = vcl and bool(nal[1] & 0x80)  # first_mb_in_slice == 0 (ue(v) "1")
            prefix = kind in (6, 7, 8, 9)
        if has_vcl and (prefix or first):
            aus.append(current)
            current, has_vcl = [], False
        current.append(nal)
        has_vcl = has_vcl or vcl
    if current:
        aus.append(current)
    return aus


def hashes(framemd5: str) -> list[str]:
    return [line.rsplit(",", 1)[1].strip() for line in framemd5.splitlines() if line and not line.startswith("#")]


def free_port_pair() -> int:
    for _ in range(100):
        port = random.randrange(20000, 60000, 2)
        socks = []
        try:
            for p in (port, port + 1):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return port
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free UDP port pair")


def udp_listening(port: int) -> bool:
    needle = f":{port:04X} "
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            if needle in Path(table).read_text():
                return True
        except OSError:
            pass
    return False


def rtcp_bye(ssrc: int) -> bytes:
    """A compound RTCP packet (RFC 3550 §6.1): an empty RR (PT 201), then a BYE (PT 203, §6.6)."""
    return bytes((0x80, 201, 0, 1)) + ssrc.to_bytes(4, "big") + bytes((0x81, 203, 0, 1)) + ssrc.to_bytes(4, "big")


def encode(tmp_path: Path, hevc: bool) -> Path:
    out = tmp_path / ("src.hevc" if hevc else "src.h264")
    codec = ["-c:v", "libx265", "-x265-params", "log-level=error", "-f", "hevc"] if hevc else \
        ["-c:v", "libx264", "-bsf:v", "h264_mp4toannexb", "-f", "h264"]
    subprocess.run(FFMPEG + ["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25", "-t", "2", *codec, str(out)],
                   check=True, timeout=120)
    return out


def framemd5(args: list[str], timeout: float = 60) -> list[str]:
    run = subprocess.run(FFMPEG + args + ["-fps_mode", "passthrough", "-f", "framemd5", "-"],
                         capture_output=True, timeout=timeout, check=True)
    return hashes(run.stdout.decode())


@pytest.mark.parametrize("hevc,max_payload,aggregate", [
    (False, 1400, False),
    (False, 200, True),
    (True, 1400, True),
    (True, 300, False),
])
def test_ffmpeg_decodes_our_rtp_bit_exact(tmp_path: Path, hevc: bool, max_payload: int, aggregate: bool) -> None:
    source = encode(tmp_path, hevc)
    expected = framemd5(["-i", str(source)])
    assert len(expected) == 50

    aus = access_units(split_annexb(source.read_bytes()), hevc)
    assert len(aus) == 50
    packetize = rtp_h265.packetize if hevc else rtp_h264.packetize
    ssrc = 0x1234ABCD
    writer = RtpPacketWriter(96, ssrc, sequence=65500)  # wraps around during the stream
    packets = []
    for i, au in enumerate(aus):
        packets += writer.write(packetize(au, max_payload, aggregate=aggregate), 90000 + i * 3600)
    assert all(len(p) <= 12 + max_payload for p in packets)

    # our own depacketizer gives back exactly the access units, even from jittered packets put
    # back in order by a ReorderBuffer
    rng = random.Random(max_payload)
    jittered = [packets[0]]  # the first packet to arrive starts the stream (earlier ones would be late)
    jittered += [p for _, p in sorted((i + rng.uniform(0, 6), p) for i, p in enumerate(packets[1:]))]
    assert jittered != packets
    reorder = ReorderBuffer(capacity=64, max_delay=1.0)
    ordered = [e for i, p in enumerate(jittered) for e in reorder.push(parse_rtp(p), i * 0.001)]
    ordered += reorder.flush()
    assert [p.to_bytes() for p in ordered] == packets and reorder.lost == 0
    depacketizer = H265Depacketizer() if hevc else H264Depacketizer()
    events = [e for p in ordered for e in depacketizer.push(p)]
    assert [list(e.nal_units) for e in events] == aus
    assert not any(e.lossy for e in events) and all(e.marker for e in events)

    port = free_port_pair()
    sdp = tmp_path / "stream.sdp"
    sdp.write_text(
        "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=ferry\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=video {port} RTP/AVP 96\r\n"
        + ("a=rtpmap:96 H265/90000\r\n" if hevc else
           "a=rtpmap:96 H264/90000\r\na=fmtp:96 packetization-mode=1\r\n"))
    receiver = subprocess.Popen(
        FFMPEG + ["-protocol_whitelist", "file,udp,rtp", "-reorder_queue_size", "0", "-i", str(sdp),
                  "-fps_mode", "passthrough", "-f", "framemd5", "-"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        def running() -> None:
            assert receiver.poll() is None, receiver.stderr.read().decode()

        wait_until(lambda: udp_listening(port), 20, "ffmpeg opening its RTP port", check=running)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for p in packets:
                s.sendto(p, ("127.0.0.1", port))
                time.sleep(0.0005)    # the send pace (scenario): a burst would overflow ffmpeg's socket
            # the BYE ends ffmpeg's input: first let it read every RTP packet sent ...
            wait_until(lambda: udp_receive_queues(port) and not any(udp_receive_queues(port)), 10,
                       "ffmpeg reading the RTP packets", check=running)
            # ... and demux them: its UDP thread moves datagrams into a FIFO of its own, and nothing
            # outside shows when the demuxer has caught up, so this one short pause stays
            time.sleep(0.2)
            s.sendto(rtcp_bye(ssrc), ("127.0.0.1", port + 1))
        out, err = receiver.communicate(timeout=30)
    finally:
        if receiver.poll() is None:
            receiver.kill()
            receiver.communicate()
    got = hashes(out.decode())
    assert got == expected, err.decode()[-2000:]


@pytest.mark.parametrize("hevc", [False, True])
def test_we_depacketize_ffmpeg_rtp(tmp_path: Path, hevc: bool) -> None:
    """ffmpeg's RTP muxer (STAP-A/AP for parameter sets, FU-A/FU for big slices) -> our
    depacketizer gives back exactly the source's access units."""
    source = encode(tmp_path, hevc)
    aus = access_units(split_annexb(source.read_bytes()), hevc)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        subprocess.run(FFMPEG + ["-i", str(source), "-c", "copy", "-f", "rtp", "-pkt_size", "1000",
                                 f"rtp://127.0.0.1:{port}?rtcpport={port}"],
                       check=True, timeout=60, stdout=subprocess.DEVNULL)
        s.setblocking(False)
        datagrams = []
        while True:
            try:
                datagrams.append(s.recv(65536))
            except BlockingIOError:
                break
    packets = [parse_rtp(d) for d in datagrams if not 200 <= d[1] <= 204]  # RTCP SR/BYE share the port
    assert len({p.ssrc for p in packets}) == 1
    if hevc:
        kinds = {(p.payload[0] >> 1) & 0x3F for p in packets}
        assert {48, 49} <= kinds  # AP and FU both exercised
    else:
        kinds = {p.payload[0] & 0x1F for p in packets}
        assert {24, 28} <= kinds  # STAP-A and FU-A both exercised
    depacketizer = H265Depacketizer() if hevc else H264Depacketizer()
    events = [e for p in packets for e in depacketizer.push(p)] + depacketizer.flush()
    # ffmpeg's raw HEVC parser leaves the first zero of the next 4-byte start code on a NAL unit
    # (Annex B trailing_zero_8bits, not part of the NAL unit): compare without trailing zeros
    assert [[n.rstrip(b"\x00") for n in e.nal_units] for e in events] == aus
    assert not any(e.lossy for e in events) and depacketizer.dropped == 0
