"""The inner half of on-demand video end to end (issue 13 item 3, media-inner): SIPp as the inner
police platform INVITEs outer cameras from the inner agent, which answers as a GB/T 28181 media
sender and sends the stream crossing for that camera to the SDP address with the platform's SSRC.

Real agent processes on loopback; the outer stream is ferry's test camera (ffmpeg's testsrc2,
RTP/PS over UDP to a configured [[video]] entry); the viewers' RTP is received by UDP sockets of
the test, rebuilt into PS and decoded by ffmpeg (frame hashes against the source's)."""
from __future__ import annotations

import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import gb28181
from appliance import free_udp_port, read_trail
from ferry.config import OuterConfig
from ferry import limits
from ferry.codecs.sip import SipRequest, SipResponse, build_request, parse_message, response_to
from reverse import add_reverse
from sipp import Sipp, free_port
from tshark import LoopbackCapture, tshark_sip
from udp_receiver import Receiver
from video_policy import video_policy

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

CAMERA = "43090000001320000001"        # allowed, streams (always-on: a configured [[video]] entry)
SILENT = "43090000001320000002"        # allowed, never sends
NO_VIDEO = "43090000001320000777"      # named by a source without a video rule
UNKNOWN = "44000000001320000001"       # no source names it
PLATFORM = "43010000002000000001"
DOMAIN = "4301000000"
SCENARIO = Path(__file__).resolve().parents[1] / "support" / "sipp" / "media_inner_invite.xml"

POLICY = video_policy("media-inner-e2e", spool=True, cameras=f'{{kind: devices, ids: ["{CAMERA}", "{SILENT}"]}}',
                      sources=f'  others: {{kind: devices, ids: ["{NO_VIDEO}"]}}\n')

needs_tools = pytest.mark.skipif(not (shutil.which("ffmpeg") and shutil.which("sipp")),
                                 reason="ffmpeg or sipp (Debian sip-tester) not installed")


class TcpReceiver:
    """A platform's TCP media: listens (offer a=setup:passive) or connects (active) and reads RFC 4571 frames."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.data = bytearray()
        self.peer: tuple[str, int] | None = None
        self.closed_at = 0.0
        self.thread: threading.Thread | None = None

    def accept(self) -> None:
        self.server.settimeout(30)
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        try:
            conn, self.peer = self.server.accept()
        except OSError:
            return
        self._read(conn)

    def connect(self, port: int) -> None:
        conn = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.thread = threading.Thread(target=self._read, args=(conn,), daemon=True)
        self.thread.start()

    def _read(self, conn: socket.socket) -> None:
        conn.settimeout(30)
        with conn:
            while True:
                try:
                    chunk = conn.recv(65536)
                except OSError:
                    break
                if not chunk:
                    break
                self.data += chunk
        self.closed_at = time.monotonic()

    def stop(self) -> None:
        self.server.close()
        if self.thread is not None:
            self.thread.join(35)

    def rtp(self) -> list[tuple[int, int, int, bytes]]:
        out, i, d = [], 0, bytes(self.data)
        while i + 2 <= len(d):
            n = struct.unpack_from("!H", d, i)[0]
            pkt = d[i + 2:i + 2 + n]
            if len(pkt) < n:
                break
            _, _, seq, ts, ssrc = struct.unpack_from("!BBHII", pkt)
            out.append((ssrc, seq, ts, pkt[12:]))
            i += 2 + n
        return out


def tcp_scenario(work: Path) -> Path:
    """media_inner_invite.xml offering TCP/RTP/AVP with a=setup:[setup] and a=connection:new."""
    path = work / "media_inner_invite_tcp.xml"
    path.write_text(SCENARIO.read_text().replace(
        "      a=recvonly\n", "      a=recvonly\n      a=setup:[setup]\n      a=connection:new\n"))
    assert "a=setup:[setup]" in path.read_text()
    return path


class Platform:
    """SIPp as the inner platform: one INVITE (media_inner_invite.xml) in a subprocess."""

    def __init__(self, work: Path, ferry_sip: int, device: str, *, rtp_port: int, ssrc: str, hold_ms: int = 1000,
                 name: str = "p", setup: str = "") -> None:
        self.dir = work / f"sipp-{name}"
        self.dir.mkdir(parents=True, exist_ok=True)
        keys = {"platform_id": PLATFORM, "domain": DOMAIN, "device_id": device, "rtp_ip": "127.0.0.1",
                "rtp_port": str(rtp_port), "ssrc": ssrc, "hold_ms": str(hold_ms),
                "media_proto": "TCP/RTP/AVP" if setup else "RTP/AVP"}
        scenario = SCENARIO
        if setup:
            keys["setup"] = setup
            scenario = tcp_scenario(work)
        cmd = ["sipp", f"127.0.0.1:{ferry_sip}", "-sf", str(scenario), "-m", "1", "-l", "1", "-t", "u1",
               "-i", "127.0.0.1", "-p", str(free_udp_port()), "-timeout", "60", "-timeout_error", "-nostdin",
               "-trace_msg", "-message_file", str(self.dir / "msg.log"), "-trace_err",
               "-error_file", str(self.dir / "err.log")]
        for k, v in keys.items():
            cmd += ["-key", k, v]
        self.started = time.monotonic()
        self.proc = subprocess.Popen(cmd, cwd=self.dir, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        self.ended = 0.0

    def wait(self, timeout: float = 90) -> int:
        try:
            _, err = self.proc.communicate(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(5)
        self.ended = time.monotonic()
        assert self.proc.returncode == 0, (self.proc.returncode, err.decode(errors="replace"), self.trace()[-3000:],
                                           self.errors())
        return self.proc.returncode

    def trace(self) -> str:
        p = self.dir / "msg.log"
        return p.read_text(errors="replace") if p.exists() else ""

    def errors(self) -> str:
        p = self.dir / "err.log"
        return p.read_text(errors="replace") if p.exists() else ""

    def final(self) -> int:
        """The INVITE's final status, as SIPp received it."""
        codes = [int(c) for c in re.findall(r"^SIP/2\.0 ([2-6][0-9][0-9]) .*\n(?:.*\n)*?CSeq: 1 INVITE",
                                            self.trace(), re.M)]
        assert codes, self.trace()[-2000:]
        return codes[0]

    def answer_sdp(self) -> str:
        m = re.search(r"^SIP/2\.0 200 OK\r?\n(?:.+\r?\n)*?CSeq: 1 INVITE\r?\n(?:.+\r?\n)*\r?\n((?:[a-z]=.*\r?\n)+)",
                      self.trace(), re.M)
        assert m, self.trace()[-2000:]
        return m.group(1)


def answered_port(p: Platform) -> str | None:
    """The m= port of ferry's 200 OK once SIPp's trace holds all of it (None before)."""
    m = re.search(r"^SIP/2\.0 200 OK\r?\n(?:.+\r?\n)*?CSeq: 1 INVITE\r?\n(?:.+\r?\n)*\r?\n(?:[a-z]=.*\r?\n)*?"
                  r"m=video (\d+) TCP/RTP/AVP", p.trace(), re.M)
    return m.group(1) if m else None


def events(trail: Path, event: str) -> list[dict]:
    return [r for r in read_trail(trail) if r["event"] == event]


def reverse_policy(requests: str) -> str:
    """POLICY plus the inner platform (loopback) as a source and a reverse rule from it to the outer platform."""
    return POLICY.replace("destinations:\n", """  platforms: {kind: addresses, addresses: ["127.0.0.0/8"]}
destinations:
  outer-platform: {kind: platform}
""", 1) + f"""  - id: reverse-platform
    lane: reverse
    from: platforms
    to: outer-platform
    reverse: {{requests: {requests}}}
"""


def make(factory, tmp_path: Path, *, mode: str = "always-on", invite_timeout: float = 8.0, signaling: bool = False,
         requests: str = "[start_stream, stop_stream]"):
    policy = tmp_path / "policy"
    policy.mkdir(exist_ok=True)
    (policy / "policy.yaml").write_text(POLICY if mode == "always-on" else reverse_policy(requests))
    a = factory(policy_dir=policy)
    if mode == "on-demand":
        add_reverse(a)
    sip = free_port()       # [media] listen takes UDP and TCP on it
    if signaling:       # sig-inner's endpoint carries the INVITEs; its id_map shows 4309... as 4301...
        a.append_config("inner", f"""
[signaling]
local = "127.0.0.1:{sip}"
platform = "127.0.0.1:{free_udp_port()}"
platform_id = "{PLATFORM}"
local_id = "43010000002000000099"
password = "not-used-here"
[signaling.id_map]
prefix = {{ "4309" = "4301" }}
""")
    a.append_config("inner", f"""
[media]
mode = "{mode}"
{"" if signaling else f'listen = "127.0.0.1:{sip}"'}
media_address = "127.0.0.1"
port_min = {20000 + sip % 20000}
port_max = {20000 + sip % 20000 + 99}
invite_timeout = {invite_timeout}
linger = 1.0
""")
    return a, sip


def outer_camera(a, seconds: float):
    """ferry's test camera pushing to a configured outer [[video]] entry (as media-outer's dialog would)."""
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
    return src, gb28181.Camera(gb28181.ps_packets(src, "h264", ssrc=0x0BEBC201), ("127.0.0.1", cam_port),
                               transport="udp", realtime=True)


def start_crossing(a, camera) -> None:
    """The agents started, then the camera: returns once its stream crosses."""
    a.start()
    camera.start()
    a.wait_for(lambda: events(a.inner_audit, "stream_started"), 30, "the camera's stream crossing")


@needs_tools
def test_always_on_two_viewers_share_one_crossing_get_their_ssrc_decode_bit_exact_and_stop_at_bye(
        appliance_factory, tmp_path):
    a, sip = make(appliance_factory, tmp_path)
    src, camera = outer_camera(a, 14)
    source_md5 = gb28181.framemd5(src)
    va, vb = Receiver(), Receiver()
    try:
        start_crossing(a, camera)
        pa = Platform(tmp_path, sip, CAMERA, rtp_port=va.port, ssrc="0430100011", hold_ms=6000, name="a")
        time.sleep(0.5)           # the second viewer joins the running stream later (a later key frame)
        pb = Platform(tmp_path, sip, CAMERA, rtp_port=vb.port, ssrc="0430100012", hold_ms=3000, name="b")
        pa.wait()
        pb.wait()
        time.sleep(1.5)           # the camera still sends: nothing may reach a viewer after its BYE
        camera.join(60)
        a.wait_for(lambda: events(a.outer_audit, "stream_ended"), 30, "the outer stream's end")
    finally:
        va.stop()
        vb.stop()
        a.stop()
    assert pa.final() == pb.final() == 200
    sdp = pa.answer_sdp()
    assert "s=Play" in sdp and "y=0430100011" in sdp and "a=sendonly" in sdp and "a=rtpmap:96 PS/90000" in sdp
    assert "c=IN IP4 127.0.0.1" in sdp and re.search(r"^m=video \d+ RTP/AVP 96\r?$", sdp, re.M)
    port = int(re.search(r"^m=video (\d+)", sdp, re.M).group(1))
    # each viewer: its own SSRC (the y= it asked), contiguous sequence numbers, from ferry's answered port
    for rx, ssrc in ((va, 430100011), (vb, 430100012)):
        rows = rx.rtp()
        assert rows, "no RTP reached the viewer"
        assert {r[0] for r in rows} == {ssrc}
        seqs = [r[1] for r in rows]
        assert all((y - x) % 65536 == 1 for x, y in zip(seqs, seqs[1:]))
    assert {addr for _, _, addr in va.got} == {("127.0.0.1", port)}
    # what each viewer got decodes, frame for frame equal to a run of the source's frames
    for rx, name in ((va, "a"), (vb, "b")):
        rebuilt = tmp_path / f"viewer-{name}.ps"
        rebuilt.write_bytes(b"".join(r[3] for r in rx.rtp()))
        got = gb28181.framemd5(rebuilt)
        assert len(got) >= 25, (name, len(got))
        start = source_md5.index(got[0])
        assert got == source_md5[start:start + len(got)], name
    assert len(gb28181.framemd5(tmp_path / "viewer-a.ps")) > len(gb28181.framemd5(tmp_path / "viewer-b.ps"))
    # BYE tears down: no packet after the platform's BYE was answered (the camera sent on)
    for rx, p in ((va, pa), (vb, pb)):
        assert rx.got[-1][0] <= p.ended + 0.2, "RTP after the BYE"
    # one crossing for two viewers: one stream on the outer trail
    assert len(events(a.outer_audit, "stream_started")) == 1
    assert len(events(a.inner_audit, "stream_started")) == 1
    started = events(a.inner_audit, "viewer_started")
    assert sorted(r["detail"]["ssrc"] for r in started) == [430100011, 430100012]
    assert {r["flow"] for r in started} == {events(a.inner_audit, "stream_started")[0]["flow"]}
    ended = events(a.inner_audit, "viewer_ended")
    assert len(ended) == 2 and {r["detail"]["by"] for r in ended} == {"platform"}
    assert len(events(a.inner_audit, "invite_received")) == 2 and not events(a.inner_audit, "invite_refused")


@needs_tools
def test_unknown_403_and_silent_cameras_get_their_sip_errors_in_time(appliance_factory, tmp_path):
    a, sip = make(appliance_factory, tmp_path, invite_timeout=3.0)
    rx = Receiver()
    try:
        a.start()
        unknown = Platform(tmp_path, sip, UNKNOWN, rtp_port=rx.port, ssrc="0430100001", name="unknown")
        refused = Platform(tmp_path, sip, NO_VIDEO, rtp_port=rx.port, ssrc="0430100002", name="refused")
        silent = Platform(tmp_path, sip, SILENT, rtp_port=rx.port, ssrc="0430100003", name="silent")
        for p in (unknown, refused, silent):
            p.wait()
    finally:
        rx.stop()
        a.stop()
    assert (unknown.final(), refused.final(), silent.final()) == (404, 403, 408)
    assert unknown.ended - unknown.started < 5 and refused.ended - refused.started < 5
    assert 3.0 <= silent.ended - silent.started < 3.0 + 5      # the timeout, on a loaded machine
    assert "SIP/2.0 100 Trying" in silent.trace() and "SIP/2.0 100 Trying" not in unknown.trace()
    codes = {r["detail"]["status"]: r["code"] for r in events(a.inner_audit, "invite_refused")}
    assert codes == {404: "unknown_camera", 403: "default_deny", 408: "no_stream"}
    assert not rx.got and not events(a.inner_audit, "viewer_started")


@needs_tools
def test_tcp_viewers_active_and_passive_get_rfc4571_rtp_that_decodes(appliance_factory, tmp_path):
    a, sip = make(appliance_factory, tmp_path)
    src, camera = outer_camera(a, 16)
    source_md5 = gb28181.framemd5(src)
    active, passive = TcpReceiver(), TcpReceiver()
    try:
        start_crossing(a, camera)
        # the platform listens (a=setup:passive): ferry connects to it
        active.accept()
        pa = Platform(tmp_path, sip, CAMERA, rtp_port=active.port, ssrc="0430100041", hold_ms=4000, name="tcp-a",
                      setup="passive")
        # the platform connects (a=setup:active) to the port of ferry's answer
        pp = Platform(tmp_path, sip, CAMERA, rtp_port=9, ssrc="0430100042", hold_ms=4000, name="tcp-p",
                      setup="active")
        port = int(a.wait_for(lambda: answered_port(pp), 30, "ferry's 200 OK to the active platform"))
        passive.connect(port)
        pa.wait()
        pp.wait()
        camera.join(60)
    finally:
        active.stop()
        passive.stop()
        a.stop()
    assert pa.final() == pp.final() == 200
    assert "a=setup:active" in pa.answer_sdp() and "a=setup:passive" in pp.answer_sdp()
    assert "a=connection:new" in pa.answer_sdp() and "TCP/RTP/AVP 96" in pp.answer_sdp()
    for rx, ssrc, name in ((active, 430100041, "active"), (passive, 430100042, "passive")):
        rows = rx.rtp()
        assert rows and {r[0] for r in rows} == {ssrc}, name
        seqs = [r[1] for r in rows]
        assert all((y - x) % 65536 == 1 for x, y in zip(seqs, seqs[1:])), name
        rebuilt = tmp_path / f"tcp-{name}.ps"
        rebuilt.write_bytes(b"".join(r[3] for r in rows))
        got = gb28181.framemd5(rebuilt)
        assert len(got) >= 25, (name, len(got))
        start = source_md5.index(got[0])
        assert got == source_md5[start:start + len(got)], name
    # BYE closes ferry's side of each connection
    assert active.closed_at and active.closed_at <= pa.ended + 1.0
    assert passive.closed_at and passive.closed_at <= pp.ended + 1.0
    assert {(r["detail"]["transport"], r["detail"]["setup"]) for r in events(a.inner_audit, "viewer_started")} == {
        ("tcp", "active"), ("tcp", "passive")}


@needs_tools
def test_with_signaling_the_invite_comes_on_its_endpoint_under_the_mapped_id(appliance_factory, tmp_path):
    a, sip = make(appliance_factory, tmp_path, signaling=True)
    _, camera = outer_camera(a, 8)
    rx, rx2 = Receiver(), Receiver()
    mapped = "4301" + CAMERA[4:]
    try:
        start_crossing(a, camera)
        outer_id = Platform(tmp_path, sip, CAMERA, rtp_port=rx2.port, ssrc="0430100032", name="outer-id")
        p = Platform(tmp_path, sip, mapped, rtp_port=rx.port, ssrc="0430100031", hold_ms=2000)
        outer_id.wait()
        p.wait()
        camera.join(60)
    finally:
        rx.stop()
        rx2.stop()
        a.stop()
    assert p.final() == 200 and outer_id.final() == 404      # the outer ID is not what the platform sees
    assert f"o={mapped} " in p.answer_sdp()
    assert rx.got and {r[0] for r in rx.rtp()} == {430100031} and not rx2.got
    [started] = events(a.inner_audit, "viewer_started")
    assert started["detail"]["inner_id"] == mapped and started["source"]["device_id"] == CAMERA


@needs_tools
@pytest.mark.skipif(not shutil.which("tshark"), reason="tshark not installed")
def test_the_shared_platform_invite_scenario_checks_each_answer_and_tshark_finds_ferrys_sip_well_formed(
        appliance_factory, tmp_path):
    """tests/support/sipp/platform_invite.xml (the "sipp" helper's) fails a call whose final answer is
    not the one expected; a capture of the SIP on ferry's port is dissected by tshark without a fault."""
    a, sip = make(appliance_factory, tmp_path, invite_timeout=3.0)
    _, camera = outer_camera(a, 10)
    rx = Receiver()
    cases = [(CAMERA, "200", "0430100071"), (UNKNOWN, "404", "0430100072"), (NO_VIDEO, "403", "0430100073"),
             (SILENT, "408", "0430100074")]
    try:
        start_crossing(a, camera)
        with LoopbackCapture(tmp_path / "sip.pcap", ports=[sip]) as cap:
            for device, expect, ssrc in cases:
                with Sipp("platform_invite.xml", ("127.0.0.1", sip), work_dir=tmp_path / f"shared-{expect}",
                          variables={"platform_id": PLATFORM, "domain": DOMAIN, "device_id": device,
                                     "rtp_port": rx.port, "ssrc": ssrc, "hold_ms": 1500, "expect": expect},
                          calls=1, timeout=40) as uac:
                    result = uac.wait(60)
                    assert result.successful == 1, result.report()
        camera.join(60)
    finally:
        rx.stop()
        a.stop()
    rows = tshark_sip(cap.path, ports=[sip])
    assert rows and not [r for r in rows if r["malformed"]], [r for r in rows if r["malformed"]]
    statuses = sorted(r["status"] for r in rows if r["status"])
    assert {100, 200, 403, 404, 408} <= set(statuses)
    assert sorted(r["method"] for r in rows if r["method"]).count("INVITE") == 4
    assert {r[0] for r in rx.rtp()} == {430100071}


class PyPlatform:
    """A minimal inner platform in Python (UDP): INVITE, ACK the 200, then wait for ferry's BYE and answer it."""

    def __init__(self, ferry_sip: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(1.0)
        self.port = self.sock.getsockname()[1]
        self.ferry = ("127.0.0.1", ferry_sip)

    def recv(self, timeout: float) -> SipResponse | SipRequest:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                data, _ = self.sock.recvfrom(65536)
            except socket.timeout:
                continue
            return parse_message(data)
        raise AssertionError(f"nothing from ferry within {timeout} s")

    def invite(self, device: str, rtp_port: int, ssrc: str) -> SipResponse:
        sdp = (f"v=0\r\no={PLATFORM} 0 0 IN IP4 127.0.0.1\r\ns=Play\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
               f"m=video {rtp_port} RTP/AVP 96\r\na=recvonly\r\na=rtpmap:96 PS/90000\r\ny={ssrc}\r\n").encode()
        self.call = f"py-{ssrc}@127.0.0.1"
        self.sock.sendto(build_request("INVITE", f"sip:{device}@{DOMAIN}", [
            ("Via", f"SIP/2.0/UDP 127.0.0.1:{self.port};rport;branch=z9hG4bKpy{ssrc}"),
            ("From", f"<sip:{PLATFORM}@{DOMAIN}>;tag=py1"), ("To", f"<sip:{device}@{DOMAIN}>"),
            ("Call-ID", self.call), ("CSeq", "1 INVITE"), ("Max-Forwards", "70"),
            ("Contact", f"<sip:{PLATFORM}@127.0.0.1:{self.port}>"), ("Content-Type", "application/sdp")], sdp),
            self.ferry)
        while True:
            msg = self.recv(20)
            if isinstance(msg, SipResponse) and msg.status >= 200:
                break
        assert msg.status == 200, msg
        self.sock.sendto(build_request("ACK", msg.contact[0].uri, [
            ("Via", f"SIP/2.0/UDP 127.0.0.1:{self.port};rport;branch=z9hG4bKpyack"),
            ("From", f"<sip:{PLATFORM}@{DOMAIN}>;tag=py1"), ("To", msg.header("To") or ""),
            ("Call-ID", self.call), ("CSeq", "1 ACK"), ("Max-Forwards", "70")]), self.ferry)
        return msg

    def await_bye(self, timeout: float) -> SipRequest:
        while True:
            msg = self.recv(timeout)
            if isinstance(msg, SipRequest) and msg.method == "BYE":
                break
        self.sock.sendto(response_to(msg, 200, "OK"), self.ferry)
        return msg

    def close(self) -> None:
        self.sock.close()


@needs_tools
def test_the_stream_ending_makes_ferry_say_bye_to_the_platform(appliance_factory, tmp_path):
    a, sip = make(appliance_factory, tmp_path)
    _, camera = outer_camera(a, 4)
    rx = Receiver()
    platform = PyPlatform(sip)
    try:
        start_crossing(a, camera)
        ok = platform.invite(CAMERA, rx.port, "0430100081")
        camera.join(60)
        stopped = time.monotonic()
        bye = platform.await_bye(limits.VIDEO_INNER_IDLE + 20)      # the inner stream ends when idle
        byed = time.monotonic()
        a.wait_for(lambda: events(a.inner_audit, "viewer_ended"), 10, "viewer_ended")
    finally:
        platform.close()
        rx.stop()
        a.stop()
    assert bye.call_id == platform.call and bye.from_.tag == ok.to.tag and bye.to.tag == "py1"
    assert bye.uri.user == PLATFORM and bye.uri.port == platform.port
    assert byed - stopped < limits.VIDEO_INNER_IDLE + 10
    [ended] = events(a.inner_audit, "viewer_ended")
    assert ended["detail"]["by"] == "ferry" and "the stream ended" in ended["reason"]
    assert rx.got and {r[0] for r in rx.rtp()} == {430100081}
    assert max(t for t, _, _ in rx.got) < byed


@needs_tools
@pytest.mark.parametrize("signaling", [False, True], ids=["media-listen", "signaling-endpoint"])
def test_the_inner_agent_stopping_says_bye_to_its_viewers(appliance_factory, tmp_path, signaling):
    a, sip = make(appliance_factory, tmp_path, signaling=signaling)
    _, camera = outer_camera(a, 8)
    rx = Receiver()
    platform = PyPlatform(sip)
    try:
        start_crossing(a, camera)
        ok = platform.invite("4301" + CAMERA[4:] if signaling else CAMERA, rx.port, "0430100091")
        a.wait_for(lambda: rx.got, 10, "RTP at the viewer")
        a.procs["inner"].send_signal(signal.SIGTERM)
        bye = platform.await_bye(15)
        a.procs["inner"].wait(15)
        camera.join(60)
    finally:
        platform.close()
        rx.stop()
        a.stop()
    assert bye.call_id == platform.call and bye.from_.tag == ok.to.tag
    [ended] = events(a.inner_audit, "viewer_ended")
    assert ended["detail"]["by"] == "ferry" and "stopping" in ended["reason"]


@needs_tools
def test_on_demand_asks_start_stream_over_the_reverse_lane_and_stop_stream_after_the_last_bye(
        appliance_factory, tmp_path):
    a, sip = make(appliance_factory, tmp_path, mode="on-demand")
    _, camera = outer_camera(a, 10)
    rx1, rx2 = Receiver(), Receiver()
    try:
        start_crossing(a, camera)
        p1 = Platform(tmp_path, sip, CAMERA, rtp_port=rx1.port, ssrc="0430100051", hold_ms=2500, name="od1")
        time.sleep(0.3)
        p2 = Platform(tmp_path, sip, CAMERA, rtp_port=rx2.port, ssrc="0430100052", hold_ms=1500, name="od2")
        p1.wait()
        p2.wait()
        a.wait_for(lambda: [r for r in events(a.inner_audit, "request_sent")
                            if r["detail"]["request"] == "stop_stream"], 20, "stop_stream after the linger")
        a.wait_for(lambda: len(events(a.outer_audit, "request_received")) == 2, 20, "both requests on the outer")
        camera.join(60)
    finally:
        rx1.stop()
        rx2.stop()
        a.stop()
    assert p1.final() == p2.final() == 200
    assert {r[0] for r in rx1.rtp()} == {430100051} and {r[0] for r in rx2.rtp()} == {430100052}
    sent = events(a.inner_audit, "request_sent")
    # one start for two viewers (the second joined), one stop after the last BYE and the linger
    assert [r["detail"]["request"] for r in sent] == ["start_stream", "stop_stream"], sent
    assert sent[0]["detail"]["operator"] == PLATFORM and sent[0]["source"]["address"] == "127.0.0.1"
    assert sent[0]["detail"]["params"] == {"transport": "udp"}
    got = events(a.outer_audit, "request_received")
    assert [r["detail"]["request"] for r in got] == ["start_stream", "stop_stream"]
    assert got[0]["detail"]["device_id"] == CAMERA and got[0]["source"]["device_id"] == PLATFORM


@needs_tools
def test_on_demand_a_reverse_refusal_is_403_and_nothing_crosses(appliance_factory, tmp_path):
    a, sip = make(appliance_factory, tmp_path, mode="on-demand", requests="[stop_stream]")
    rx = Receiver()
    try:
        a.start()
        p = Platform(tmp_path, sip, CAMERA, rtp_port=rx.port, ssrc="0430100061", name="od-refused")
        p.wait()
    finally:
        rx.stop()
        a.stop()
    assert p.final() == 403 and not rx.got
    [refused] = events(a.inner_audit, "invite_refused")
    assert refused["code"] == "content_limit" and "reverse request refused" in refused["reason"]
    assert [r["code"] for r in events(a.inner_audit, "request_refused")] == ["content_limit"]
    assert not events(a.outer_audit, "request_received")


MEDIA_OUTER = "media" in OuterConfig.model_fields     # part "media-outer": the outer [media] and its camera


@needs_tools
@pytest.mark.skipif(not MEDIA_OUTER, reason="the whole on-demand path needs media-outer (the outer [media], its "
                                            "start_stream/stop_stream handlers, ferry's camera as a SIP device); "
                                            "it has not landed on main")
def test_on_demand_the_outer_agent_invites_the_camera_and_byes_it(appliance_factory, tmp_path):
    """The whole on-demand path: the platform's INVITE -> start_stream over the reverse ferry -> the
    outer agent INVITEs ferry's test camera (a SIP device) -> its stream crosses -> 200 at the first
    key frame and RTP/PS with the platform's SSRC; BYE -> stop_stream after the linger -> the outer
    agent BYEs the camera."""
    a, sip = make(appliance_factory, tmp_path, mode="on-demand", invite_timeout=20.0)
    cam_sip, outer_sip = free_udp_port(), free_udp_port()
    base = 20000 + outer_sip % 20000
    server = CAMERA[:10] + "2000000002"
    a.append_config("outer", f"""
[media]
mode = "on-demand"
media_address = "127.0.0.1"
port_range = [{base + 200}, {base + 299}]
destination = "police-vms"
sip_listen = "127.0.0.1:{outer_sip}"
server_id = "{server}"
domain = "{CAMERA[:10]}"
[[media.camera]]
device_id = "{CAMERA}"
contact = "udp:127.0.0.1:{cam_sip}"
""")
    log = open(tmp_path / "camera.log", "wb")
    camera = subprocess.Popen([sys.executable, "-m", "ferry.camera", "--device-id", CAMERA, "--sip-listen",
                               f"127.0.0.1:{cam_sip}", "--seconds", "60", "--server-id", server,
                               "--domain", CAMERA[:10]], stdout=log, stderr=subprocess.STDOUT)
    log.close()
    rx = Receiver()
    try:
        a.start()
        p = Platform(tmp_path, sip, CAMERA, rtp_port=rx.port, ssrc="0430100101", hold_ms=4000, name="full")
        p.wait(120)
        a.wait_for(lambda: events(a.outer_audit, "stream_stopped"), 40, "the camera BYEd after stop_stream")
    finally:
        rx.stop()
        camera.terminate()
        camera.wait(15)
        a.stop()
    assert p.final() == 200
    assert rx.got and {r[0] for r in rx.rtp()} == {430100101}
    rebuilt = tmp_path / "full.ps"
    rebuilt.write_bytes(b"".join(r[3] for r in rx.rtp()))
    assert len(gb28181.framemd5(rebuilt)) >= 25
    assert [r["detail"]["request"] for r in events(a.outer_audit, "request_received")] == ["start_stream",
                                                                                           "stop_stream"]
    assert len(events(a.outer_audit, "stream_requested")) == 1
