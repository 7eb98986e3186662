"""On-demand and always-on video of outer cameras over SIP, end to end (issue 13 item 3, outer half).

Real agent processes on loopback and ferry's test camera in SIP mode (`python -m ferry.camera
--device-id ... --sip-listen ...`, a separate process): the outer agent INVITEs the camera with a
GB/T 28181 offer, the camera answers and streams RTP/PS to the offered port and SSRC, the stream
crosses in the video lane and the inner agent writes it to a file sink whose decoded frames are
compared with the source's (`ffmpeg -f framemd5`). The camera is killed (kill -9) and restarted:
stream_failed is recorded and the outer agent INVITEs it again. On demand, `ferry ask` on the inner
agent starts, joins and stops the stream across the reverse ferry; a camera the policy refuses is
hung up; a camera registered with [signaling] is INVITEd at its registered contact.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import gb28181
from appliance import free_udp_port, read_trail
from reverse import add_reverse
from video_policy import CAMERAS_0_999, video_policy

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

CAMERA = "43090000001320000001"        # Yiyang (4309), network camera (132)
SERVER = "43090000002000000001"
DOMAIN = "4309000000"

POLICY = video_policy("media-outer-e2e", spool=True, cameras=CAMERAS_0_999)

needs_tools = pytest.mark.skipif(not (shutil.which("ffmpeg") and shutil.which("ffprobe")),
                                 reason="ffmpeg/ffprobe not installed")


def free_port_range(n: int = 8) -> tuple[int, int]:
    """n consecutive ports free for UDP and TCP now (a best effort, as free_udp_port)."""
    for _ in range(50):
        base = free_udp_port()
        if base + n > 65000:
            continue
        ok = True
        for p in range(base, base + n):
            for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                with socket.socket(socket.AF_INET, kind) as s:
                    try:
                        s.bind(("127.0.0.1", p))
                    except OSError:
                        ok = False
        if ok:
            return base, base + n - 1
    raise RuntimeError("no free port range")


def events(trail_dir: Path, event: str) -> list[dict]:
    return [r for r in read_trail(trail_dir) if r["event"] == event]


def media_config(*, mode: str, sip_port: int, ports: tuple[int, int], cam_port: int | None,
                 transport: str = "udp", device: str = CAMERA) -> str:
    lines = ["[media]", f'mode = "{mode}"', 'media_address = "127.0.0.1"', f"port_range = [{ports[0]}, {ports[1]}]",
             'destination = "police-vms"', f'sip_listen = "127.0.0.1:{sip_port}"', f'server_id = "{SERVER}"',
             f'domain = "{DOMAIN}"', "invite_timeout = 3.0", "media_timeout = 5.0", "retry_max = 2.0"]
    if cam_port is not None:
        lines += ["[[media.camera]]", f'device_id = "{device}"', f'contact = "udp:127.0.0.1:{cam_port}"',
                  f'transport = "{transport}"']
    return "\n".join(lines)


class SipCameraProcess:
    """ferry's test camera in SIP mode, as its own process (so that kill -9 is real)."""

    def __init__(self, work: Path, port: int, *, seconds: float = 4, server: int | None = None,
                 device: str = CAMERA, sip_transport: str = "udp") -> None:
        self.work, self.port, self.seconds, self.server, self.device = work, port, seconds, server, device
        self.sip_transport = sip_transport
        self.proc: subprocess.Popen | None = None
        self.runs = 0

    def start(self) -> "SipCameraProcess":
        self.runs += 1
        log = open(self.work / f"camera-{self.runs}.log", "wb")
        cmd = [sys.executable, "-m", "ferry.camera", "--device-id", self.device,
               "--sip-listen", f"127.0.0.1:{self.port}", "--seconds", str(self.seconds),
               "--server-id", SERVER, "--domain", DOMAIN]
        if self.server:
            cmd += ["--sip-server", f"127.0.0.1:{self.server}", "--password", "secret",
                    "--transport", self.sip_transport]
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ,
                                                                                    "PYTHONUNBUFFERED": "1"})
        log.close()
        return self

    def log(self) -> str:
        return "".join((self.work / f"camera-{i}.log").read_text(errors="replace") for i in range(1, self.runs + 1))

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def make(factory, tmp_path: Path, **kw):
    policy = tmp_path / "media-policy"
    policy.mkdir(exist_ok=True)
    (policy / "policy.yaml").write_text(POLICY)
    a = factory(policy_dir=policy, **kw)
    out = a.work / "recordings" / "{stream}.ps"
    a.append_config("inner", "\n".join(['[[video_output]]', 'destination = "police-vms"', 'form = "ps"',
                                        'transport = "file"', f'path = "{out}"']))
    return a


def recordings(a) -> list[Path]:
    return sorted((a.work / "recordings").glob("*.ps"), key=lambda p: p.stat().st_mtime)


@needs_tools
def test_always_on_camera_crosses_bit_exact_and_is_invited_again_after_kill_9(appliance_factory, tmp_path):
    a = make(appliance_factory, tmp_path)
    cam_port, sip_port = free_udp_port(), free_udp_port()
    ports = free_port_range()
    a.append_config("outer", media_config(mode="always-on", sip_port=sip_port, ports=ports, cam_port=cam_port))
    src = gb28181.make_source(None, "h264", seconds=4)
    camera = SipCameraProcess(tmp_path, cam_port, seconds=4).start()
    try:
        a.start()
        # the INVITE is answered, the camera streams its 4 s once, the stream goes silent: the
        # outer agent BYEs (media_lost) and INVITEs again (always-on)
        first = a.wait_for(lambda: events(a.outer_audit, "stream_ended"), 60, "the first stream's end")[0]
        requested = events(a.outer_audit, "stream_requested")
        answered = events(a.outer_audit, "stream_answered")
        assert requested and answered
        req = requested[0]
        assert req["source"]["device_id"] == CAMERA and req["flow"] == f"sip-{CAMERA}-1"
        assert ports[0] <= req["detail"]["port"] <= ports[1]
        ssrc = req["detail"]["ssrc"]
        assert ssrc == "0" + DOMAIN[3:8] + "0001"
        started = [r for r in events(a.outer_audit, "stream_started") if r["flow"].startswith(f"sip-{CAMERA}-1-")]
        assert started and started[0]["detail"]["ssrc"] == int(ssrc)
        assert first["detail"]["access_units"] == 100, first["detail"]
        assert f"invite ssrc {ssrc}" in camera.log()
        a.wait_for(lambda: [r for r in events(a.outer_audit, "stream_failed") if r["code"] == "media_lost"], 30,
                   "stream_failed media_lost")
        a.wait_for(lambda: len(events(a.outer_audit, "stream_requested")) >= 2, 30, "the re-INVITE")
        # the first stream crossed and decodes to the source's frames
        a.wait_for(lambda: [r for r in events(a.inner_audit, "stream_ended")], 60, "the inner stream's end")
        rec = recordings(a)[0]
        assert gb28181.framemd5(rec) == gb28181.framemd5(src)
        # kill -9 the camera while it streams: stream_failed, INVITEs that fail, then it is back
        k = len(events(a.outer_audit, "stream_started"))
        a.wait_for(lambda: len(events(a.outer_audit, "stream_started")) > k, 60, "a stream to kill")
        # kill it mid-stream, once pictures flow (killed before its first whole access unit, the
        # stream is refused no_picture instead, as CI once saw); the camera streams 4 s each time
        time.sleep(1.0)
        n = len(events(a.outer_audit, "stream_failed"))
        camera.kill()
        a.wait_for(lambda: len(events(a.outer_audit, "stream_failed")) > n + 1, 60,
                   "stream_failed after the kill and a failed re-INVITE")
        codes = {r["code"] for r in events(a.outer_audit, "stream_failed")[n:]}
        assert "media_lost" in codes and "invite_timeout" in codes, codes
        m = len(events(a.outer_audit, "stream_started"))
        camera.start()
        a.wait_for(lambda: len(events(a.outer_audit, "stream_started")) > m, 60, "the stream after the restart")
    finally:
        camera.stop()
        a.stop()
    # the agent's stop BYEs the running dialog
    assert events(a.outer_audit, "stream_stopped")
    assert "bye" in camera.log()


@needs_tools
def test_always_on_video_keeps_crossing_with_the_reverse_ferry_dead(appliance_factory, tmp_path):
    """Issue 13 item 4: the forward lanes never depend on the reverse one. Both agents have a
    [reverse] section, but the inner's reverse sender sends into a dead port (the reverse ferry is
    down from the start); the always-on camera is INVITEd, its stream crosses and decodes to the
    source's frames, and the outer agent never heard a reverse key."""
    a = make(appliance_factory, tmp_path)
    policy = tmp_path / "media-policy" / "policy.yaml"      # make() wrote it; the agents read it at start
    policy.write_text(policy.read_text().replace("  police-vms: {kind: vms}\n",
                                                 "  police-vms: {kind: vms}\n  outer-platform: {kind: platform}\n"))
    add_reverse(a, peer_port=free_udp_port())        # nobody listens there
    cam_port, sip_port = free_udp_port(), free_udp_port()
    ports = free_port_range()
    a.append_config("outer", media_config(mode="always-on", sip_port=sip_port, ports=ports, cam_port=cam_port))
    src = gb28181.make_source(None, "h264", seconds=4)
    camera = SipCameraProcess(tmp_path, cam_port, seconds=4).start()
    try:
        a.start()
        a.wait_for(lambda: events(a.inner_audit, "stream_ended"), 90, "the crossed stream's end on the inner side")
    finally:
        camera.stop()
        a.stop()
    assert gb28181.framemd5(recordings(a)[0]) == gb28181.framemd5(src)
    assert not events(a.outer_audit, "reverse_key_accepted")   # the reverse ferry never came up
    assert events(a.outer_audit, "stream_answered")


@needs_tools
@pytest.mark.parametrize("transport, ingest", [("tcp", "tcp-listen"), ("tcp-active", "tcp-connect")])
def test_tcp_media_either_side_connects(appliance_factory, tmp_path, transport, ingest):
    """tcp: ferry offers a=setup:passive, the camera connects; tcp-active: ferry offers
    a=setup:active, the camera listens where its answer says and ferry connects."""
    a = make(appliance_factory, tmp_path)
    cam_port, sip_port = free_udp_port(), free_udp_port()
    ports = free_port_range()
    a.append_config("outer", media_config(mode="always-on", sip_port=sip_port, ports=ports, cam_port=cam_port,
                                          transport=transport))
    src = gb28181.make_source(None, "h264", seconds=4)
    camera = SipCameraProcess(tmp_path, cam_port, seconds=4).start()
    try:
        a.start()
        ended = a.wait_for(lambda: events(a.outer_audit, "stream_ended"), 60, "the TCP stream's end")[0]
        assert ended["detail"]["access_units"] == 100
        started = events(a.outer_audit, "stream_started")[0]
        assert started["detail"]["transport"] == ingest
        a.wait_for(lambda: events(a.inner_audit, "stream_ended"), 60, "the inner stream's end")
        assert gb28181.framemd5(recordings(a)[0]) == gb28181.framemd5(src)
    finally:
        camera.stop()
        a.stop()


@needs_tools
def test_a_camera_the_policy_refuses_is_hung_up(appliance_factory, tmp_path):
    unknown = "44000000001320000001"         # Guangdong: no rule
    a = make(appliance_factory, tmp_path)
    cam_port, sip_port = free_udp_port(), free_udp_port()
    a.append_config("outer", media_config(mode="always-on", sip_port=sip_port, ports=free_port_range(),
                                          cam_port=cam_port, device=unknown))
    camera = SipCameraProcess(tmp_path, cam_port, seconds=20, device=unknown).start()
    try:
        a.start()
        fail = a.wait_for(lambda: events(a.outer_audit, "stream_failed"), 60, "stream_failed of the refused camera")
        assert fail[0]["code"] == "default_deny" and fail[0]["source"]["device_id"] == unknown
        assert events(a.outer_audit, "stream_refused")[0]["code"] == "default_deny"
        a.wait_for(lambda: "bye" in camera.log(), 20, "ferry's BYE at the camera")
        assert not events(a.inner_audit, "stream_started")
        # ferry's own SIP socket (no [signaling]): what does not parse is refused, recorded with its code
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(b"INVITE nonsense\r\n\r\n", ("127.0.0.1", sip_port))
        bad = a.wait_for(lambda: events(a.outer_audit, "media_sip_refused"), 20, "the refusal of malformed SIP")
        assert bad[0]["code"] == "malformed_sip" and bad[0]["source"]["address"] == "127.0.0.1"
    finally:
        camera.stop()
        a.stop()


@needs_tools
@pytest.mark.parametrize("sip", ["udp", "tcp"])
def test_registered_camera_is_invited_at_its_registered_contact(appliance_factory, tmp_path, sip):
    """No configured contact: the camera registers with ferry's [signaling] (digest; SIP over UDP,
    or TCP: then the INVITE, ACK and BYE go on the camera's connection), and the always-on INVITE
    goes to the contact it registered (no_contact until then)."""
    a = make(appliance_factory, tmp_path)
    cam_port, sip_port = free_udp_port(), free_udp_port()
    a.append_config("outer", "\n".join([
        "[signaling]", f'listen_{sip} = "127.0.0.1:{sip_port}"', f'server_id = "{SERVER}"', f'realm = "{DOMAIN}"',
        'destination = "police-vms"', "[[signaling.device]]", f'id = "{CAMERA}"', 'password = "secret"']))
    media = media_config(mode="always-on", sip_port=sip_port, ports=free_port_range(), cam_port=None)
    media = "\n".join(line for line in media.splitlines()
                      if not line.startswith(("sip_listen", "server_id", "domain")))
    a.append_config("outer", media + f'\n[[media.camera]]\ndevice_id = "{CAMERA}"')
    src = gb28181.make_source(None, "h264", seconds=4)
    a.start()
    camera = SipCameraProcess(tmp_path, cam_port, seconds=4, server=sip_port, sip_transport=sip)
    try:
        a.wait_for(lambda: [r for r in events(a.outer_audit, "stream_failed") if r["code"] == "no_contact"], 30,
                   "no_contact before the camera registers")
        camera.start()
        a.wait_for(lambda: "registered" in camera.log(), 30, "the camera's registration")
        ended = a.wait_for(lambda: events(a.outer_audit, "stream_ended"), 60, "the stream's end")[0]
        assert ended["detail"]["access_units"] == 100
        req = [r for r in events(a.outer_audit, "stream_requested")][0]
        assert req["detail"]["contact"] == f"sip:{CAMERA}@127.0.0.1:{cam_port}" + (";transport=tcp" if sip == "tcp"
                                                                                   else "")
        a.wait_for(lambda: events(a.inner_audit, "stream_ended"), 60, "the inner stream's end")
        assert gb28181.framemd5(recordings(a)[0]) == gb28181.framemd5(src)
    finally:
        camera.stop()
        a.stop()


@needs_tools
def test_on_demand_start_join_stop_ptz_and_catalog_through_ferry_ask(appliance_factory, tmp_path):
    """`ferry ask start_stream` on the inner agent crosses the reverse ferry; the outer agent
    INVITEs the camera and its video crosses; a second operator joins the same dialog; the
    camera is BYEd only once both said stop_stream; ptz and catalog_query reach the camera as
    MANSCDP MESSAGEs."""
    from reverse import add_reverse, ask, reverse_policy  # noqa: PLC0415 - tests/support/reverse.py

    policy = reverse_policy(tmp_path / "policy-src", requests="[start_stream, stop_stream, ptz, catalog_query]")
    a = appliance_factory(management=True, policy_dir=policy)
    out = a.work / "recordings" / "{stream}.ps"
    a.append_config("inner", "\n".join(['[[video_output]]', 'destination = "police-vms"', 'form = "ps"',
                                        'transport = "file"', f'path = "{out}"']))
    add_reverse(a)
    cam_port, sip_port = free_udp_port(), free_udp_port()
    a.append_config("outer", media_config(mode="on-demand", sip_port=sip_port, ports=free_port_range(),
                                          cam_port=cam_port))
    camera = SipCameraProcess(tmp_path, cam_port, seconds=60).start()
    try:
        a.start()
        assert not events(a.outer_audit, "stream_requested")      # on demand: nothing until asked
        r = ask(a, "start_stream", CAMERA, "alice", "transport=udp")
        assert r.returncode == 0, r.stdout + r.stderr
        req = a.wait_for(lambda: events(a.outer_audit, "stream_requested"), 30, "the INVITE")[0]
        assert req["detail"]["holders"] == ["alice"]
        a.wait_for(lambda: events(a.outer_audit, "stream_started"), 30, "the stream after start_stream")
        a.wait_for(lambda: events(a.inner_audit, "stream_started"), 30, "the stream crossing")
        r = ask(a, "start_stream", CAMERA, "bob", "transport=udp")
        assert r.returncode == 0, r.stdout + r.stderr
        joined = a.wait_for(lambda: events(a.outer_audit, "stream_joined"), 30, "bob joining")[0]
        assert joined["detail"]["holders"] == ["alice", "bob"] and len(events(a.outer_audit, "stream_requested")) == 1
        assert ask(a, "stop_stream", CAMERA, "alice", f"stream=sip-{CAMERA}-1").returncode == 0
        served = a.wait_for(lambda: [x for x in events(a.outer_audit, "request_served")
                                     if x["object_type"] == "stop_stream"], 30, "alice's stop_stream served")
        assert "still held by bob" in served[0]["reason"], served[0]
        assert not events(a.outer_audit, "stream_stopped")               # bob still holds it
        assert ask(a, "ptz", CAMERA, "bob", "direction=left", "speed=64").returncode == 0
        a.wait_for(lambda: "ptz A50F0102400000" in camera.log(), 30, "the PTZ MESSAGE at the camera")
        assert ask(a, "catalog_query", CAMERA, "bob").returncode == 0
        a.wait_for(lambda: "catalog query" in camera.log(), 30, "the catalog query at the camera")
        assert ask(a, "stop_stream", CAMERA, "bob", f"stream=sip-{CAMERA}-1").returncode == 0
        a.wait_for(lambda: events(a.outer_audit, "stream_stopped"), 30, "stream_stopped after the last stop_stream")
        a.wait_for(lambda: "bye" in camera.log(), 30, "the camera's BYE")
    finally:
        camera.stop()
        a.stop()
