"""The video lane end to end: a GB/T 28181 test camera -> outer agent -> link -> inner agent -> fresh RTP/PS.

Real agent processes on loopback. The inner output goes to a UDP port (captured with tshark) and to
a file sink; the file's decoded frames are compared with the source's (`ffmpeg -f framemd5`).
"""
from __future__ import annotations

import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

import gb28181
from appliance import free_udp_port, read_trail
from udp_receiver import Receiver
from video_policy import CAMERAS_0_999, video_limits, video_policy, video_rule
from waiting import file_size, udp_receive_queues, wait_stable, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

CAMERA = "43090000001320000001"        # Yiyang (4309), network camera (132)
H264_ONLY = "43090000001320005000"     # a camera whose rule allows H.264 only
UNKNOWN = "44000000001320000001"       # Guangdong: no rule

POLICY = video_policy("video-e2e", spool=True, cameras=CAMERAS_0_999,
                      sources=f'  h264-cameras: {{kind: devices, ids: ["{H264_ONLY}"]}}\n',
                      rules=video_rule("video-h264-only", "h264-cameras", video_limits(codecs="[h264]")))

needs_tools = pytest.mark.skipif(not (shutil.which("ffmpeg") and shutil.which("ffprobe")),
                                 reason="ffmpeg/ffprobe not installed")


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_appliance(factory, tmp_path: Path):
    policy = tmp_path / "video-policy"
    policy.mkdir(exist_ok=True)
    (policy / "policy.yaml").write_text(POLICY)
    return factory(policy_dir=policy)


def video_entry(name: str, device: str, *, transport="udp", listen="", connect="", payload="ps", ssrc=0) -> str:
    lines = ['[[video]]', f'name = "{name}"', f'transport = "{transport}"', f'device_id = "{device}"',
             f'payload = "{payload}"', 'destination = "police-vms"', f"ssrc = {ssrc}"]
    if listen:
        lines.append(f'listen = "{listen}"')
    if connect:
        lines.append(f'connect = "{connect}"')
    return "\n".join(lines)


def output_entry(*, transport="udp", address="", path="", form="ps", gso="auto") -> str:
    lines = ['[[video_output]]', 'destination = "police-vms"', f'form = "{form}"', f'transport = "{transport}"',
             f'gso = "{gso}"']
    if address:
        lines.append(f'address = "{address}"')
    if path:
        lines.append(f'path = "{path}"')
    return "\n".join(lines)


def events(trail_dir: Path, event: str) -> list[dict]:
    return [r for r in read_trail(trail_dir) if r["event"] == event]


class Tshark:
    """`tshark -i lo -f "udp port N" -w cap.pcap` for the duration of a test."""

    def __init__(self, port: int, path: Path) -> None:
        self.port, self.path = port, path
        self.log = open(path.with_suffix(".log"), "wb")
        self.proc = subprocess.Popen(["tshark", "-i", "lo", "-f", f"udp port {port}", "-w", str(path)],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        def running() -> None:
            if self.proc.poll() is not None:
                raise AssertionError("tshark did not start: " + path.with_suffix(".log").read_text(errors="replace"))

        wait_until(lambda: b"Capturing on" in path.with_suffix(".log").read_bytes(), 15, "tshark capturing",
                   check=running)
        # tshark says "Capturing on" as dumpcap opens the interface, a moment before its filter is
        # live; nothing outside shows that moment, so this short pause stays
        time.sleep(0.3)

    def stop(self) -> list[tuple[int, int, int, bytes]]:
        """(ssrc, seq, timestamp, payload) of each captured packet, in capture order."""
        wait_stable(lambda: file_size(self.path), 0.5, 15, "the capture file")   # the last packets written
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(15)
        self.log.close()
        out = subprocess.run(["tshark", "-r", str(self.path), "-d", f"udp.port=={self.port},rtp", "-T", "fields",
                              "-e", "rtp.ssrc", "-e", "rtp.seq", "-e", "rtp.timestamp", "-e", "rtp.payload"],
                             capture_output=True, text=True, check=True).stdout
        rows = []
        for line in out.splitlines():
            parts = line.split("\t")
            if len(parts) < 4 or not parts[0]:
                continue
            rows.append((int(parts[0], 16) if parts[0].startswith("0x") else int(parts[0]), int(parts[1]),
                         int(parts[2]), bytes.fromhex(parts[3].replace(":", ""))))
        return rows


class Collector(Receiver):
    """A UDP receiver on loopback (a thread): every datagram, as the receiving application gets it."""

    def stop(self) -> list[bytes]:
        super().stop()
        return self.datagrams


def pack_headers(ps: bytes) -> set[bytes]:
    """The distinct 14-byte MPEG-2 pack headers of a program stream."""
    out, i = set(), ps.find(b"\x00\x00\x01\xba")
    while i >= 0:
        out.add(ps[i:i + 14])
        i = ps.find(b"\x00\x00\x01\xba", i + 4)
    return out


def probe_frames(path: Path) -> tuple[str, int]:
    out = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
                          "stream=codec_name,nb_read_frames", "-of", "csv=p=0", str(path)],
                         capture_output=True, text=True, check=True).stdout.strip()
    codec, frames = out.split(",")[:2]
    return codec, int(frames)


def cross(factory, tmp_path: Path, codec: str, transport: str, *, seconds=10, loss=0.0, capture=True):
    """One camera stream through a real appliance; returns what the test needs to judge it."""
    a = make_appliance(factory, tmp_path)
    src = gb28181.make_source(None, codec, seconds=seconds)
    ssrc = 0x0BEBC201
    packets = gb28181.ps_packets(src, codec, ssrc=ssrc)
    out_port = free_udp_port()
    out_file = a.work / "recordings" / "{stream}.ps"
    if transport == "udp":
        port = free_udp_port()
        a.append_config("outer", video_entry("cam1", CAMERA, listen=f"127.0.0.1:{port}"))
        camera = gb28181.Camera(packets, ("127.0.0.1", port), transport="udp", realtime=4.0, loss=loss, seed=7)
    elif transport == "tcp-listen":
        port = free_tcp_port()
        a.append_config("outer", video_entry("cam1", CAMERA, transport="tcp-listen", listen=f"127.0.0.1:{port}"))
        camera = gb28181.Camera(packets, ("127.0.0.1", port), transport="tcp", realtime=4.0)
    else:
        camera = gb28181.Camera(packets, ("127.0.0.1", 0), transport="tcp-serve", realtime=4.0)
        host, port = camera.address[:2]
        a.append_config("outer", video_entry("cam1", CAMERA, transport="tcp-connect", connect=f"{host}:{port}"))
    # tshark on lo sees a segmentation-offload send uncut: the captured output sends one by one,
    # a second output (the default, gso = "auto") goes to a receiving socket
    a.append_config("inner", output_entry(address=f"127.0.0.1:{out_port}", gso="off"))
    collector = Collector()
    a.append_config("inner", output_entry(address=f"127.0.0.1:{collector.port}"))
    a.append_config("inner", output_entry(transport="file", path=str(out_file)))
    shark = Tshark(out_port, tmp_path / "inner.pcap") if capture else None
    try:
        a.start()
        camera.start()
        dropped = camera.join(60)
        a.wait_for(lambda: events(a.outer_audit, "stream_ended"), 30, "outer stream_ended")
        # the last access units cross: the file output stops growing (stopping the inner agent
        # then ends its stream)
        wait_stable(lambda: sorted((p.name, file_size(p)) for p in out_file.parent.glob("*.ps")), 1.0, 30,
                    "the inner agent's file output")
    finally:
        rows = shark.stop() if shark else []
        a.stop()
        a.received = collector.stop()
    assert len(events(a.inner_audit, "stream_ended")) == 1
    files = list((a.work / "recordings").glob("*.ps"))
    assert len(files) == 1, files
    return a, src, packets, dropped, rows, files[0]


@needs_tools
@pytest.mark.skipif(not shutil.which("tshark"), reason="tshark not installed")
@pytest.mark.parametrize("codec", ["h264", "h265"])
def test_udp_remux_is_bit_exact_with_a_protocol_break(appliance_factory, tmp_path, codec):
    a, src, packets, _, rows, recording = cross(appliance_factory, tmp_path, codec, "udp")
    source_md5 = gb28181.framemd5(src)
    assert len(source_md5) == 250
    assert gb28181.framemd5(recording) == source_md5                 # the file sink: bit-exact
    # tshark: valid RTP, one fresh SSRC, contiguous sequence numbers
    assert rows, "nothing captured on the inner output"
    ssrcs = {r[0] for r in rows}
    assert len(ssrcs) == 1 and 0x0BEBC201 not in ssrcs
    seqs = [r[1] for r in rows]
    assert all((b - a_) % 65536 == 1 for a_, b in zip(seqs, seqs[1:]))
    in_seqs = [gb28181.sequence(p) for p, _ in packets]
    assert seqs[0] != in_seqs[0] and seqs[:50] != in_seqs[:50]
    assert rows[0][2] != int.from_bytes(packets[0][0][4:8], "big")   # fresh RTP timestamps
    # the PS rebuilt from rtp.payload in order: ffprobe finds every frame
    rebuilt = tmp_path / "rebuilt.ps"
    rebuilt.write_bytes(b"".join(r[3] for r in rows))
    assert probe_frames(rebuilt) == ({"h264": "h264", "h265": "hevc"}[codec], 250)
    assert gb28181.framemd5(rebuilt) == source_md5
    # protocol break: none of the input's pack headers crossed
    captured = rebuilt.read_bytes()
    input_headers = pack_headers(gb28181.ps_stream(packets))
    assert input_headers and not any(h in captured for h in input_headers)
    # the default output (segmentation offload): the receiver gets the same datagrams, one send
    # per access unit rather than per packet
    got = a.received
    assert len(got) == len(rows) and all(12 < len(d) <= 12 + 1400 for d in got)
    heads = [struct.unpack_from("!BBHII", d) for d in got]
    assert {h[4] for h in heads} != ssrcs and len({h[4] for h in heads}) == 1     # fresh SSRC per output
    assert all((b[2] - a_[2]) % 65536 == 1 for a_, b in zip(heads, heads[1:]))
    assert [len(d) for d in got] == [len(r[3]) + 12 for r in rows]    # same cut (own SCR and timestamps)
    gso_ps = tmp_path / "gso.ps"
    gso_ps.write_bytes(b"".join(d[12:] for d in got))
    assert gb28181.framemd5(gso_ps) == source_md5
    sends = events(a.inner_audit, "stream_ended")[0]["detail"]["sends"]
    assert sends == len(rows) + 250, (sends, len(rows))     # one by one + one per access unit
    # per-stream records on both sides, no per-access-unit records
    outer, inner = read_trail(a.outer_audit), read_trail(a.inner_audit)
    assert [r["event"] for r in outer if r.get("lane") == "video"] == ["stream_started", "stream_ended"]
    ended = events(a.outer_audit, "stream_ended")[0]
    assert ended["detail"]["access_units"] == 250 and ended["detail"]["lost_packets"] == 0
    assert ended["flow"] == events(a.inner_audit, "stream_ended")[0]["flow"]
    assert events(a.inner_audit, "stream_ended")[0]["detail"]["access_units"] == 250
    assert not [r for r in outer + inner if r["event"] in ("object_sent", "object_refused", "object_delivered")]


@needs_tools
@pytest.mark.parametrize("transport,codec", [("tcp-listen", "h264"), ("tcp-connect", "h265")])
def test_tcp_ingest_is_bit_exact(appliance_factory, tmp_path, transport, codec):
    a, src, _, _, _, recording = cross(appliance_factory, tmp_path, codec, transport, seconds=4, capture=False)
    assert gb28181.framemd5(recording) == gb28181.framemd5(src)
    started = events(a.outer_audit, "stream_started")[0]
    assert started["detail"]["transport"] == transport


@needs_tools
def test_loss_on_ingest_is_audited_and_output_decodes(appliance_factory, tmp_path):
    a, src, _, dropped, _, recording = cross(appliance_factory, tmp_path, "h264", "udp", loss=0.02, capture=False)
    assert dropped
    ended = events(a.outer_audit, "stream_ended")[0]["detail"]
    assert 0 < ended["lost_packets"] <= len(dropped)
    assert ended["dropped_aus"] > 0                     # pictures after a loss wait for the next keyframe
    loss = events(a.outer_audit, "stream_loss")
    assert loss and loss[0]["verdict"] == "lost"
    check = subprocess.run(["ffmpeg", "-v", "error", "-i", str(recording), "-f", "null", "-"],
                           capture_output=True, text=True)
    assert check.returncode == 0
    out = gb28181.framemd5(recording)
    assert 0 < len(out) < 250
    assert set(out) <= set(gb28181.framemd5(src))        # every picture that crossed is bit-exact


@needs_tools
def test_refusals_once_per_stream_with_reasons(appliance_factory, tmp_path):
    a = make_appliance(appliance_factory, tmp_path)
    big = gb28181.make_source(None, "h264", size="3840x2160", seconds=1)
    hevc = gb28181.make_source(None, "h265", seconds=2)
    small = gb28181.make_source(None, "h264", seconds=2)
    cases = {  # name -> (device, source, codec, expected rule, words of the reason)
        "uhd": (CAMERA, big, "h264", "video-cameras", "width 3840 exceeds max_width 1920"),
        "hevc": (H264_ONLY, hevc, "h265", "video-h264-only", "codec 'h265' not allowed"),
        "stranger": (UNKNOWN, small, "h264", "default-deny", "no rule for lane 'video'"),
    }
    ports = {}
    for name, (device, *_rest) in cases.items():
        ports[name] = free_udp_port()
        a.append_config("outer", video_entry(name, device, listen=f"127.0.0.1:{ports[name]}"))
    a.append_config("inner", output_entry(transport="file", path=str(a.work / "recordings" / "{stream}.ps")))
    a.start()
    cams = [gb28181.Camera(gb28181.ps_packets(src, codec, ssrc=0x100 + i), ("127.0.0.1", ports[name]),
                           realtime=4.0).start()
            for i, (name, (_d, src, codec, *_r)) in enumerate(cases.items())]
    for c in cams:
        c.join(60)
    a.wait_for(lambda: len(events(a.outer_audit, "stream_ended")) == 3, 30, "three streams ended")
    a.stop()
    refused = events(a.outer_audit, "stream_refused")
    assert len(refused) == 3                              # one record per stream, not per packet
    by_flow = {r["flow"].split("-")[0]: r for r in refused}
    for name, (device, _src, _codec, rule, words) in cases.items():
        r = by_flow[name]
        assert r["rule"] == rule and words in r["reason"], r
        assert r["source"]["device_id"] == device
    for r in events(a.outer_audit, "stream_ended"):
        assert r["detail"]["access_units"] == 0 and r["detail"]["refused_aus"] > 0
    assert not events(a.inner_audit, "stream_started")    # nothing crossed
    assert not list((a.work / "recordings").glob("*")) if (a.work / "recordings").exists() else True


def free_even_udp_port() -> int:
    for _ in range(50):
        port = free_udp_port()
        if port % 2 == 0 and port < 65535:
            return port
    raise AssertionError("no even UDP port")


@needs_tools
@pytest.mark.parametrize("codec", ["h264", "h265"])
def test_rfc6184_7798_output_plays_in_ffmpeg_through_sdp(appliance_factory, tmp_path, codec):
    """The plain RTP form: ffmpeg receives it through an SDP file on loopback and decodes every frame."""
    a = make_appliance(appliance_factory, tmp_path)
    src = gb28181.make_source(None, codec, seconds=4)
    port, out_port = free_udp_port(), free_even_udp_port()
    a.append_config("outer", video_entry("cam1", CAMERA, listen=f"127.0.0.1:{port}"))
    a.append_config("inner", output_entry(address=f"127.0.0.1:{out_port}", form=codec))
    tap = Collector()     # a second output of the same form, to see when the inner agent has sent everything
    a.append_config("inner", output_entry(address=f"127.0.0.1:{tap.port}", form=codec))
    sdp = tmp_path / "out.sdp"
    sdp.write_text(f"v=0\no=- 0 0 IN IP4 127.0.0.1\ns=ferry\nc=IN IP4 127.0.0.1\nt=0 0\n"
                   f"m=video {out_port} RTP/AVP 96\na=rtpmap:96 {codec.upper()}/90000\n"
                   + ("a=fmtp:96 packetization-mode=1\n" if codec == "h264" else ""))
    md5 = tmp_path / "out.framemd5"
    player = subprocess.Popen(["ffmpeg", "-v", "error", "-protocol_whitelist", "file,udp,rtp", "-buffer_size",
                               str(8 << 20), "-i", str(sdp), "-map", "0:v:0", "-fps_mode", "passthrough",
                               "-f", "framemd5", str(md5)], stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        a.start()
        wait_until(lambda: udp_receive_queues(out_port), 20, "ffmpeg opening its RTP port")
        gb28181.Camera(gb28181.ps_packets(src, codec, ssrc=0x4321), ("127.0.0.1", port), realtime=4.0).start().join(60)
        a.wait_for(lambda: events(a.outer_audit, "stream_ended"), 30, "outer stream_ended")
        # the inner agent has sent the last access units (its tap stops receiving) and ffmpeg has read them
        wait_stable(lambda: len(tap.datagrams), 1.0, 30, "the inner agent's RTP output")
        wait_until(lambda: not any(udp_receive_queues(out_port)), 10, "ffmpeg reading the RTP packets")
    finally:
        player.communicate(b"q", timeout=30)
        a.stop()
        tap.stop()
    got = [line.rsplit(",", 1)[1].strip() for line in md5.read_text().splitlines()
           if line and not line.startswith("#")]
    want = gb28181.framemd5(src)
    # every frame bit-exact and in order; ffmpeg's RTP demuxer may still hold the last one or two
    # when asked to quit (a live receiver never sees the end of the stream)
    assert got == want[:len(got)] and len(got) >= len(want) - 2, (len(got), len(want))


@needs_tools
def test_packets_from_another_address_are_refused_once(appliance_factory, tmp_path):
    a = make_appliance(appliance_factory, tmp_path)
    port = free_udp_port()
    a.append_config("outer", video_entry("cam1", CAMERA, listen=f"127.0.0.1:{port}")
                    + '\nsource_address = "127.0.0.2"')
    a.append_config("inner", output_entry(transport="file", path=str(a.work / "recordings" / "{stream}.ps")))
    a.start()
    src = gb28181.make_source(None, "h264", seconds=2)
    gb28181.send_udp(gb28181.ps_packets(src, "h264", ssrc=0x77), ("127.0.0.1", port))
    a.wait_for(lambda: events(a.outer_audit, "stream_refused"), 20, "stream_refused")
    time.sleep(1)   # time for a second refusal or a stream start, which must not come (scenario: a negative)
    a.stop()
    [r] = events(a.outer_audit, "stream_refused")
    assert r["rule"] == "ferry-video-ingest" and "127.0.0.1 is not 127.0.0.2" in r["reason"]
    assert not events(a.outer_audit, "stream_started") and not events(a.inner_audit, "stream_started")


def test_a_camera_port_in_use_stops_the_outer_agent_with_a_clear_error(appliance_factory):
    """Start-up: the agent binds its cameras' ports first; one in use is exit code 2 and a message
    naming the entry and the address, not a traceback."""
    a = appliance_factory()
    busy = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    busy.bind(("127.0.0.1", 0))
    try:
        port = busy.getsockname()[1]
        a.append_config("outer", video_entry("gate-cam", CAMERA, listen=f"127.0.0.1:{port}"))
        r = subprocess.run([sys.executable, "-m", "ferry", "outer", "--config", str(a.work / "outer.toml")],
                           cwd=a.work, capture_output=True, text=True, timeout=60)
    finally:
        busy.close()
    assert r.returncode == 2, r.stderr
    assert f"video gate-cam: cannot listen on 127.0.0.1:{port} (udp)" in r.stderr
    assert "Traceback" not in r.stderr
