"""ferry's test camera in SIP mode (ferry.camera.SipCamera) against SIPp, an independent SIP stack
(the shared harness tests/support/sipp.py and its GB/T 28181 scenarios).

- SIPp plays the upper platform (`platform_uas.xml`): the camera's REGISTER gets a 401, its digest
  answer is checked by SIPp's own `verifyauth` against the password in SIPp's CSV, then answered
  200 (a wrong password: 403 and a failed call), over UDP and TCP.
- SIPp plays a platform asking for live video (`platform_invite.xml`): it INVITEs the camera with a
  GB/T 28181 offer (SSRC 0200000123), checks the SDP answer, ACKs and BYEs. Over UDP the RTP the
  camera sends to the offered port is captured with tshark and dissected as RTP with the offered
  SSRC; over TCP (`TCP/RTP/AVP`, the camera connects) the RFC 4571 frames are read here. Either
  way the PS carried decodes in ffmpeg, frame for frame the source's start.
Skipped without sipp, tshark or ffmpeg.
"""
from __future__ import annotations

import shutil
import socket
import subprocess
import threading
from pathlib import Path

import pytest

import gb28181
from sipp import Sipp, free_port
from tshark import LoopbackCapture
from waiting import wait_until

pytestmark = [pytest.mark.skipif(not all(shutil.which(t) for t in ("sipp", "tshark", "ffmpeg", "ffprobe")),
                                 reason="needs sipp (sip-tester), tshark and ffmpeg"), pytest.mark.timeout(120)]

CAMERA = "34020000001320000001"
SERVER = "34020000002000000001"
SSRC = "0200000123"


@pytest.mark.parametrize("password, transport", [("secret", "udp"), ("wrong", "udp"), ("secret", "tcp")])
def test_camera_registers_with_digest_that_sipp_verifies(password, transport):
    events: list[str] = []
    with Sipp("platform_uas.xml", injection_csv=[(CAMERA, "secret")], calls=1,
              transport="t1" if transport == "tcp" else "u1", timeout=20) as platform:
        cam = gb28181.SipCamera([], CAMERA, password=password, server=("127.0.0.1", platform.port),
                                server_id=SERVER, keepalive=3600, log=events.append, sip_transport=transport)
        cam.start()
        try:
            if password == "secret":
                result = platform.wait(30)
                assert cam.registered.wait(10), events
                assert "registered" in events
                (auth,) = [m for m in result.received("REGISTER") if m.header("Authorization")][:1]
                assert f'username="{CAMERA}"' in (auth.header("Authorization") or "")
            else:
                result = platform.wait(30, expect=None)
                assert result.exit_code != 0 and result.failed == 1, result.report()
                assert "register refused 403" in events and not cam.registered.is_set()
        finally:
            cam.stop()


def ffprobe_frames(path: Path) -> tuple[str, int]:
    out = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
                          "stream=codec_name,nb_read_frames", "-of", "csv=p=0", str(path)],
                         capture_output=True, text=True, check=True).stdout.strip()
    codec, frames = out.split(",")[:2]
    return codec, int(frames)


def rtp_rows(pcap: Path, port: int) -> list[tuple[int, int, bytes]]:
    """(ssrc, seq, payload) of each packet tshark dissects as RTP on `port`."""
    out = subprocess.run(["tshark", "-r", str(pcap), "-d", f"udp.port=={port},rtp", "-T", "fields",
                          "-e", "rtp.ssrc", "-e", "rtp.seq", "-e", "rtp.payload"],
                         capture_output=True, text=True, check=True).stdout
    rows = []
    for line in out.splitlines():
        parts = line.split("\t")
        if len(parts) < 3 or not parts[0]:
            continue
        rows.append((int(parts[0], 16) if parts[0].startswith("0x") else int(parts[0]), int(parts[1]),
                     bytes.fromhex(parts[2].replace(":", ""))))
    return rows


def rfc4571_rows(data: bytes) -> list[tuple[int, int, bytes]]:
    rows, i = [], 0
    while i + 2 <= len(data):
        n = int.from_bytes(data[i:i + 2], "big")
        pkt = data[i + 2:i + 2 + n]
        if len(pkt) < n:
            break
        rows.append((int.from_bytes(pkt[8:12], "big"), int.from_bytes(pkt[2:4], "big"), pkt[12:]))
        i += 2 + n
    return rows


@pytest.mark.parametrize("media", ["RTP/AVP", "TCP/RTP/AVP"])
def test_camera_answers_sipp_invite_and_streams_ps_with_the_offered_ssrc(tmp_path, media):
    src = gb28181.make_source(None, "h264", seconds=2)
    packets = gb28181.ps_packets(src, "h264", ssrc=0x0BEBC201)
    events: list[str] = []
    cam = gb28181.SipCamera(packets, CAMERA, server_id=SERVER, realtime=4.0, log=events.append).start()
    rtp_port = free_port()
    tcp = media == "TCP/RTP/AVP"
    received = bytearray()
    sink = socket.socket(socket.AF_INET, socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", rtp_port))       # the offered port exists (UDP), or listens (TCP)

    def accept() -> None:
        sink.listen(1)
        sink.settimeout(30)
        conn, _ = sink.accept()
        with conn:
            while chunk := conn.recv(65536):
                received.extend(chunk)

    reader = threading.Thread(target=accept, daemon=True) if tcp else None
    if reader:
        reader.start()
    pcap = tmp_path / "rtp.pcap"
    try:
        with LoopbackCapture(pcap, [rtp_port]):
            with Sipp("platform_invite.xml", ("127.0.0.1", cam.address[1]), calls=1, timeout=30,
                      variables={"device_id": CAMERA, "platform_id": SERVER, "rtp_port": rtp_port, "ssrc": SSRC,
                                 "hold_ms": 3000, "media_proto": media}) as platform:
                result = platform.wait(40)
            wait_until(lambda: "bye" in events, 10, "the camera's BYE handling")
            if reader:
                reader.join(15)
    finally:
        cam.stop()
        sink.close()
    (ok,) = result.received("200")[:1]
    assert f"y={SSRC}" in ok.body.decode() and "a=sendonly" in ok.body.decode()
    assert any(e.startswith(f"invite ssrc {SSRC}") for e in events), events
    rows = rfc4571_rows(bytes(received)) if tcp else rtp_rows(pcap, rtp_port)
    assert rows, "no RTP received"
    assert {ssrc for ssrc, _, _ in rows} == {int(SSRC)}          # the offered SSRC
    seqs = [s for _, s, _ in rows]
    assert seqs == sorted(seqs) and len(seqs) == len(set(seqs))
    ps = tmp_path / "out.ps"
    ps.write_bytes(b"".join(p for _, _, p in rows))
    codec, frames = ffprobe_frames(ps)
    assert codec == "h264" and frames > 0
    got = gb28181.framemd5(ps)            # what was sent before the BYE: the source's start, frame for frame
    assert got and got == gb28181.framemd5(src)[:len(got)]
