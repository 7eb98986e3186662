"""Dead viewers are reaped, end to end (issue 13 leftover, part "viewers").

An inner platform that crashes, reboots or loses its network never sends BYE. Real agents on
loopback, a Python platform (UDP SIP) that registers ferry, INVITEs an outer camera and then
vanishes: it stops answering keepalives (the cascade's `platform_lost`), or closes its RTP port
(ICMP port unreachable), or closes its TCP media connection. The stream to it must stop within the
bound, with a `viewer_lost` record (code `viewer_lost`), and in on-demand mode the outer agent must
be told `stop_stream` so the camera's dialog ends.

The first tests drive the viewer sinks of ferry/agents/video_emit.py on real sockets (no agents)."""
from __future__ import annotations

import asyncio
import queue
import shutil
import socket
import struct
import threading
import time
from pathlib import Path

import pytest

import gb28181
from appliance import free_udp_port, read_trail
from ferry import limits
from ferry.agents.video_emit import PassiveTcpSink, make_sink, make_viewer_sink
from ferry.codecs.sip import SipRequest, SipResponse, build_request, new_tag, parse_message, response_to
from ferry.config import InnerVideoOutput
from reverse import add_reverse
from sipp import free_port
from udp_receiver import Receiver

CAMERA = "43090000001320000001"
MAPPED = "4301" + CAMERA[4:]           # the camera's ID as the platform sees it with [signaling] id_map
PLATFORM = "43010000002000000001"
DOMAIN = "4301000000"
POLICY = f"""
policy: media-inner-liveness
version: 1
default: deny
sources:
  cameras: {{kind: devices, ids: ["{CAMERA}"]}}
  platforms: {{kind: addresses, addresses: ["127.0.0.0/8"]}}
destinations:
  police-vms: {{kind: vms}}
  outer-platform: {{kind: platform}}
rules:
  - id: video-cameras
    lane: video
    from: cameras
    to: police-vms
    video: {{codecs: [h264, h265], max_width: 1920, max_height: 1080, max_frame_rate: 30, max_bitrate_kbps: 20000}}
  - id: reverse-platform
    lane: reverse
    from: platforms
    to: outer-platform
    reverse: {{requests: [start_stream, stop_stream]}}
"""

needs_tools = pytest.mark.skipif(not shutil.which("ffmpeg"), reason="ffmpeg not installed")


# --- the viewer sinks on real sockets ---------------------------------------------------------------

def closed_udp_port() -> int:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_a_viewers_udp_sink_reports_the_platforms_closed_port():
    """An unconnected UDP socket never sees ICMP errors; a viewer's has IP_RECVERR, so a closed port
    comes back as ECONNREFUSED on a later send, reported to the viewer's `on_lost`."""
    sink = make_viewer_sink(f"127.0.0.1:{closed_udp_port()}", "udp", "", ("127.0.0.1", 0))
    lost: list[tuple[str, str]] = []
    sink.on_lost = lambda kind, why: lost.append((kind, why))
    try:
        for _ in range(20):
            sink.send([b"\x80" * 200, b"\x80" * 100], True)
            time.sleep(0.01)
    finally:
        sink.close()
    assert len(lost) >= 5 and {k for k, _ in lost} == {"unreachable"}
    assert "refused" in lost[0][1].lower()


def test_a_configured_udp_output_keeps_ignoring_icmp():
    """[[video_output]] udp (a fixed receiver that may start later) is unchanged: no error sticks."""
    sink = make_sink(InnerVideoOutput(destination="police-vms", transport="udp",
                                      address=f"127.0.0.1:{closed_udp_port()}"))
    try:
        results = []
        for _ in range(10):
            results.append(sink.send([b"\x80" * 200], True))
            time.sleep(0.01)
    finally:
        sink.close()
    assert all(results) and sink.errors == 0


def test_a_viewers_tcp_sink_reports_the_platform_closing_and_not_its_own_close():
    async def run() -> tuple[list, list]:
        lost: list[tuple[str, str]] = []
        sink = PassiveTcpSink("127.0.0.1:9", ("127.0.0.1", 0))
        port = sink.sock.getsockname()[1]
        sink.on_lost = lambda kind, why: lost.append((kind, why))
        stop = asyncio.Event()
        await sink.start(stop)
        _, w = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(100):
            if sink.writer is not None:
                break
            await asyncio.sleep(0.02)
        assert sink.send([b"\x80" * 100], True)
        w.close()                                   # the platform closes its media connection
        for _ in range(250):
            if lost:
                break
            await asyncio.sleep(0.02)
        first = list(lost)
        # a second connection, then ferry closes the sink itself: nothing reported
        lost.clear()
        _, w2 = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(100):
            if sink.writer is not None:
                break
            await asyncio.sleep(0.02)
        sink.close()
        await asyncio.sleep(0.3)
        w2.close()
        await asyncio.sleep(0.1)
        stop.set()
        return first, lost

    first, after = asyncio.run(run())
    assert [k for k, _ in first] == ["closed"]        # closed, or reset (ferry's frame unread)
    assert after == []


# --- real agents ---------------------------------------------------------------------------------------

def events(trail: Path, event: str) -> list[dict]:
    return [r for r in read_trail(trail) if r["event"] == event]


class Platform(Receiver):
    """The inner platform over UDP, in Python: ferry's registrar (200 to REGISTER), keepalive MESSAGEs
    answered, INVITE + ACK of a camera, BYE answered — until `vanish()`: from then on it answers
    nothing (a crashed or cut-off platform), but still notes what arrives."""

    def __init__(self) -> None:
        self.answering = True
        self.requests: list[tuple[float, SipRequest]] = []
        self.responses: queue.Queue[SipResponse] = queue.Queue()
        super().__init__()

    def handle(self, data: bytes, addr: tuple[str, int]) -> None:
        msg = parse_message(data)
        if isinstance(msg, SipResponse):
            self.responses.put(msg)
            return
        self.requests.append((time.monotonic(), msg))
        if not self.answering or msg.method == "ACK":
            return
        extra = [("Expires", "3600")] if msg.method == "REGISTER" else []
        self.sock.sendto(response_to(msg, 200, "OK", extra, to_tag=None if msg.to.tag else new_tag()), addr)

    def vanish(self) -> float:
        self.answering = False
        return time.monotonic()

    def seen(self, method: str) -> list[tuple[float, SipRequest]]:
        return [(t, r) for t, r in self.requests if r.method == method]

    def invite(self, ferry: int, device: str, media: str, extra: tuple[tuple[str, str], ...] = (), cseq: int = 1,
               to: str = "") -> SipResponse:
        """INVITE `device` at ferry's SIP port with the SDP media lines `media`; ACK its 200 (`to`: ferry's
        To of the dialog: a re-INVITE in it)."""
        sdp = (f"v=0\r\no={PLATFORM} 0 0 IN IP4 127.0.0.1\r\ns=Play\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
               f"{media}a=recvonly\r\na=rtpmap:96 PS/90000\r\ny=0430100201\r\n").encode()
        if not to:
            self.call = f"live-{new_tag()}@127.0.0.1"
        self.sock.sendto(build_request("INVITE", f"sip:{device}@{DOMAIN}", [
            ("Via", f"SIP/2.0/UDP 127.0.0.1:{self.port};rport;branch=z9hG4bK{new_tag()}"),
            ("From", f"<sip:{PLATFORM}@{DOMAIN}>;tag=pl1"), ("To", to or f"<sip:{device}@{DOMAIN}>"),
            ("Call-ID", self.call), ("CSeq", f"{cseq} INVITE"), ("Max-Forwards", "70"),
            ("Contact", f"<sip:{PLATFORM}@127.0.0.1:{self.port}>"), *extra, ("Content-Type", "application/sdp")], sdp),
            ("127.0.0.1", ferry))
        deadline = time.monotonic() + 30
        while True:
            msg = self.responses.get(timeout=max(0.1, deadline - time.monotonic()))
            if msg.cseq[1] == "INVITE" and msg.status >= 200:
                break
        assert msg.status == 200, msg
        self.sock.sendto(build_request("ACK", msg.contact[0].uri, [
            ("Via", f"SIP/2.0/UDP 127.0.0.1:{self.port};rport;branch=z9hG4bK{new_tag()}"),
            ("From", f"<sip:{PLATFORM}@{DOMAIN}>;tag=pl1"), ("To", msg.header("To") or ""),
            ("Call-ID", self.call), ("CSeq", f"{cseq} ACK"), ("Max-Forwards", "70")]), ("127.0.0.1", ferry))
        return msg



def make(factory, tmp_path: Path, *, platform: Platform | None = None, seconds: float = 40):
    """Both agents, on-demand [media] with the reverse ferry, ferry's test camera pushing to the outer
    agent; with `platform`, [signaling] registers ferry with it (keepalive every second)."""
    policy = tmp_path / "policy"
    policy.mkdir(exist_ok=True)
    (policy / "policy.yaml").write_text(POLICY)
    a = factory(policy_dir=policy)
    add_reverse(a)
    sip = free_port()
    if platform is not None:
        a.append_config("inner", f"""
[signaling]
local = "127.0.0.1:{sip}"
platform = "127.0.0.1:{platform.port}"
platform_id = "{PLATFORM}"
local_id = "43010000002000000099"
password = "not-used-here"
keepalive_interval = 1.0
[signaling.id_map]
prefix = {{ "4309" = "4301" }}
""")
    a.append_config("inner", f"""
[media]
mode = "on-demand"
{"" if platform is not None else f'listen = "127.0.0.1:{sip}"'}
media_address = "127.0.0.1"
port_min = {20000 + sip % 20000}
port_max = {20000 + sip % 20000 + 99}
invite_timeout = 8.0
linger = 1.0
""")
    src = gb28181.make_source(None, "h264", seconds=seconds)
    cam_port = free_udp_port()
    a.append_config("outer", f"""
[[video]]
name = "cam1"
transport = "udp"
listen = "127.0.0.1:{cam_port}"
device_id = "{CAMERA}"
payload = "ps"
destination = "police-vms"
""")
    camera = gb28181.Camera(gb28181.ps_packets(src, "h264", ssrc=0x0BEBC201), ("127.0.0.1", cam_port),
                            transport="udp", realtime=True)
    return a, sip, camera


def stop_stream_told(a) -> list[dict]:
    return [r for r in events(a.outer_audit, "request_received") if r["detail"]["request"] == "stop_stream"]


@pytest.mark.e2e
@pytest.mark.timeout(240)
@needs_tools
def test_a_platform_that_stops_answering_keepalives_has_its_video_ended_and_the_camera_released(
        appliance_factory, tmp_path):
    platform = Platform()
    a, sip, camera = make(appliance_factory, tmp_path, platform=platform)
    rx = Receiver()
    try:
        a.start()
        camera.start()
        a.wait_for(lambda: events(a.inner_audit, "platform_registered"), 30, "ferry registered with the platform")
        a.wait_for(lambda: events(a.inner_audit, "stream_started"), 30, "the camera's stream crossing")
        platform.invite(sip, MAPPED, f"m=video {rx.port} RTP/AVP 96\r\n")
        a.wait_for(lambda: len(rx.times) > 20, 20, "RTP at the viewer")
        vanished = platform.vanish()
        a.wait_for(lambda: events(a.inner_audit, "viewer_lost"), 4 * 1.0 + 20, "the viewer reaped")
        reaped = time.monotonic()
        a.wait_for(lambda: stop_stream_told(a), 20, "stop_stream on the outer agent")
        time.sleep(1.5)               # the camera still sends: nothing more may reach the vanished viewer
        checked = time.monotonic()
        assert not events(a.inner_audit, "stream_ended"), "the camera stopped before the check"
    finally:
        rx.stop()
        platform.stop()
        camera.stop()
        camera.join(60)
        a.stop()
    # the cascade noticed (3 keepalives a second apart unanswered), and the video ended with it
    [lost_platform] = events(a.inner_audit, "platform_lost")
    assert "keepalives" in lost_platform["reason"]
    [lost] = events(a.inner_audit, "viewer_lost")
    assert lost["verdict"] == "lost" and lost["code"] == "viewer_lost" and lost["detail"]["cause"] == "platform_lost"
    assert lost["source"]["device_id"] == CAMERA and lost["destination"] == f"127.0.0.1:{rx.port}"
    assert reaped - vanished < limits.SIG_KEEPALIVE_LOST * 1.0 + 15
    assert rx.times[-1] < checked - 1.0, "RTP still reached the vanished platform"
    assert {430100201} == rx.ssrcs
    # BYE best effort: one, unanswered, not retransmitted
    byes = platform.seen("BYE")
    assert len(byes) == 1 and byes[0][1].call_id == platform.call
    # the camera released: stop_stream over the reverse ferry, at once (no linger for a vanished platform)
    sent = [r["detail"]["request"] for r in events(a.inner_audit, "request_sent")]
    assert sent == ["start_stream", "stop_stream"]
    [told] = stop_stream_told(a)
    assert told["detail"]["device_id"] == CAMERA


@pytest.mark.e2e
@pytest.mark.timeout(240)
@needs_tools
def test_a_viewer_whose_rtp_port_closes_is_reaped_by_icmp_and_the_camera_released(appliance_factory, tmp_path):
    a, sip, camera = make(appliance_factory, tmp_path)
    platform = Platform()
    rx = Receiver()
    try:
        a.start()
        camera.start()
        a.wait_for(lambda: events(a.inner_audit, "stream_started"), 30, "the camera's stream crossing")
        platform.invite(sip, CAMERA, f"m=video {rx.port} RTP/AVP 96\r\n")
        a.wait_for(lambda: len(rx.times) > 20, 20, "RTP at the viewer")
        rx.stop()                    # the platform's RTP port closes: every send now brings ICMP back
        closed = time.monotonic()
        a.wait_for(lambda: platform.seen("BYE"), limits.INNER_MEDIA_UNREACHABLE_FOR + 20, "ferry's BYE")
        byed = time.monotonic()
        again = Receiver(rx.port)     # the port open again: the stream must not come back
        time.sleep(1.5)
        again.stop()
        a.wait_for(lambda: stop_stream_told(a), 20, "stop_stream on the outer agent")
        assert not events(a.inner_audit, "stream_ended"), "the camera stopped before the check"
    finally:
        platform.stop()
        camera.stop()
        camera.join(60)
        a.stop()
    assert limits.INNER_MEDIA_UNREACHABLE_FOR - 0.5 <= byed - closed < limits.INNER_MEDIA_UNREACHABLE_FOR + 15
    assert not again.got, "RTP after the viewer was reaped"
    [lost] = events(a.inner_audit, "viewer_lost")
    assert lost["code"] == "viewer_lost" and lost["detail"]["cause"] == "unreachable"
    assert "refused" in lost["reason"].lower()
    assert [r["detail"]["request"] for r in events(a.inner_audit, "request_sent")] == ["start_stream", "stop_stream"]


@pytest.mark.e2e
@pytest.mark.timeout(240)
@needs_tools
def test_a_tcp_viewer_whose_connection_closes_is_reaped_at_once(appliance_factory, tmp_path):
    a, sip, camera = make(appliance_factory, tmp_path)
    platform = Platform()
    server = socket.create_server(("127.0.0.1", 0))      # the platform listens (a=setup:passive)
    server.settimeout(30)
    port = server.getsockname()[1]
    try:
        a.start()
        camera.start()
        a.wait_for(lambda: events(a.inner_audit, "stream_started"), 30, "the camera's stream crossing")
        accepted: list[socket.socket] = []
        t = threading.Thread(target=lambda: accepted.append(server.accept()[0]), daemon=True)
        t.start()
        platform.invite(sip, CAMERA, f"m=video {port} TCP/RTP/AVP 96\r\na=setup:passive\r\na=connection:new\r\n")
        t.join(30)
        [conn] = accepted
        conn.settimeout(10)
        got = b""
        while len(got) < 20000:
            got += conn.recv(65536)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()                  # reset: the platform's media side is gone
        closed = time.monotonic()
        a.wait_for(lambda: platform.seen("BYE"), 20, "ferry's BYE")
        byed = time.monotonic()
        server.settimeout(2.5 + limits.VIDEO_RECONNECT_DELAY)
        with pytest.raises(socket.timeout):           # ferry does not connect again
            server.accept()
        a.wait_for(lambda: stop_stream_told(a), 20, "stop_stream on the outer agent")
    finally:
        server.close()
        platform.stop()
        camera.stop()
        camera.join(60)
        a.stop()
    assert byed - closed < 10
    [lost] = events(a.inner_audit, "viewer_lost")
    assert lost["code"] == "viewer_lost" and lost["detail"]["cause"] == "closed"
    assert lost["detail"]["transport"] == "tcp"


@pytest.mark.e2e
@pytest.mark.timeout(300)
@needs_tools
def test_a_session_timer_the_platform_stops_refreshing_ends_the_session(appliance_factory, tmp_path):
    """RFC 4028: the platform asks for a 90 s session it refreshes itself, refreshes once, then goes
    quiet (its RTP port stays open: only the session timer can tell). ferry ends the session
    min(32, 90/3) = 30 s before it would expire: 60 s after the refresh."""
    a, sip, camera = make(appliance_factory, tmp_path, seconds=100)
    platform = Platform()
    rx = Receiver()
    timer = (("Session-Expires", "90;refresher=uac"), ("Supported", "timer"))
    media = f"m=video {rx.port} RTP/AVP 96\r\n"
    try:
        a.start()
        camera.start()
        a.wait_for(lambda: events(a.inner_audit, "stream_started"), 30, "the camera's stream crossing")
        ok = platform.invite(sip, CAMERA, media, timer)
        a.wait_for(lambda: len(rx.times) > 20, 20, "RTP at the viewer")
        refreshed = platform.invite(sip, CAMERA, media, timer, cseq=2, to=ok.header("To") or "")
        at = time.monotonic()
        a.wait_for(lambda: platform.seen("BYE"), 60 + 30, "ferry's BYE at the session's end")
        byed = time.monotonic()
        a.wait_for(lambda: stop_stream_told(a), 20, "stop_stream on the outer agent")
        assert not events(a.inner_audit, "stream_ended"), "the camera stopped before the session's end"
    finally:
        rx.stop()
        platform.stop()
        camera.stop()
        camera.join(60)
        a.stop()
    assert ok.header("Session-Expires") == "90;refresher=uac" and ok.header("Require") == "timer"
    assert refreshed.status == 200 and refreshed.header("Session-Expires") == "90;refresher=uac"
    assert refreshed.body == ok.body                  # the refresh changes nothing of the media
    assert 60 - 1 <= byed - at < 60 + 15
    [lost] = events(a.inner_audit, "viewer_lost")
    assert lost["code"] == "viewer_lost" and lost["detail"]["cause"] == "session_expired"
    assert [r["detail"]["request"] for r in events(a.inner_audit, "request_sent")] == ["start_stream", "stop_stream"]
