"""Issue 12 items 5 and 6 end to end: real agents on loopback, a GB/T 28181 test camera.

- item 5: with `audio: true`, the first program stream map of the rebuilt stream lists the
  G.711 stream as well as the video (a player probing the start must not guess MP2);
- item 6: `ferry audit reconcile` reconciles a video-only run stream by stream (outer
  `stream_started` -> inner `stream_started`/`stream_ended`, access-unit counts equal).
"""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import gb28181
from appliance import free_udp_port, read_trail
from ferry.codecs.mpeg_ps import PsMuxer
from ferry.codecs.rtp import build_rtp
from program_stream import psms
from video_policy import video_limits, video_policy
from waiting import file_size, wait_stable

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240),
              pytest.mark.skipif(not (shutil.which("ffmpeg") and shutil.which("ffprobe")),
                                 reason="ffmpeg/ffprobe not installed")]

CAMERA = "43090000001320000001"
SSRC = 0x0BEBC201


def policy_text(audio: bool) -> str:
    return video_policy("video-inner-e2e", spool=True, video=video_limits(audio=audio))


def appliance(factory, tmp_path: Path, *, audio: bool):
    policy = tmp_path / "policy-src"
    policy.mkdir()
    (policy / "policy.yaml").write_text(policy_text(audio))
    return factory(policy_dir=policy)


def events(trail_dir: Path, event: str) -> list[dict]:
    return [r for r in read_trail(trail_dir) if r["event"] == event]


def camera_packets(codec: str, audio_codec: str | None, seconds: float = 4) -> list[tuple[bytes, float]]:
    """RTP/PS as a camera sends it; with audio: PSM (video + G.711) on keyframes, a G.711 PES per picture."""
    src = gb28181.make_source(None, codec, seconds=seconds)
    mux = PsMuxer(codec, audio_codec)
    out, seq = [], 1000
    frames = gb28181.access_units(src, codec)
    for n, f in enumerate(frames):
        ps = mux.video(f.nal_units, f.pts, f.dts, f.keyframe)
        if audio_codec:
            ps += mux.audio(b"\xd5" * 320, f.pts)
        chunks = [ps[i:i + 1400] for i in range(0, len(ps), 1400)]
        for k, c in enumerate(chunks):
            out.append((build_rtp(96, seq & 0xFFFF, f.pts, SSRC, c, marker=k == len(chunks) - 1), n * 0.04))
            seq += 1
    return out


def run_camera(a, packets, out_dir: Path, udp_out: int = 0) -> None:
    """Start the agents, send the packets, wait until the stream ended on the outer side and the
    inner file output settled, stop the agents (the inner stream ends: its stream_ended).
    `udp_out`: also an RTP/PS output to that port."""
    port = free_udp_port()
    a.append_config("outer", "\n".join([
        "[[video]]", 'name = "cam1"', 'transport = "udp"', f'device_id = "{CAMERA}"', 'payload = "ps"',
        'destination = "police-vms"', "ssrc = 0", f'listen = "127.0.0.1:{port}"']))
    a.append_config("inner", "\n".join([
        "[[video_output]]", 'destination = "police-vms"', 'form = "ps"', 'transport = "file"',
        f'path = "{out_dir}/{{stream}}.ps"']))
    if udp_out:
        a.append_config("inner", "\n".join([
            "[[video_output]]", 'destination = "police-vms"', 'form = "ps"', 'transport = "udp"',
            f'address = "127.0.0.1:{udp_out}"']))
    try:
        a.start()
        camera = gb28181.Camera(packets, ("127.0.0.1", port), transport="udp", realtime=4.0)
        camera.start()
        camera.join(90)
        a.wait_for(lambda: events(a.outer_audit, "stream_ended"), 60, "outer stream_ended")
        wait_stable(lambda: sorted((p.name, file_size(p)) for p in out_dir.glob("*.ps")), 1.0, 60,
                    "the inner agent's file output")
    finally:
        a.stop()


def test_the_first_psm_of_the_rebuilt_stream_lists_the_g711_audio(appliance_factory, tmp_path):
    a = appliance(appliance_factory, tmp_path, audio=True)
    out_dir = a.work / "recordings"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx:       # the RTP/PS output, as a player gets it
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 20)
        rx.bind(("127.0.0.1", 0))
        run_camera(a, camera_packets("h264", "g711a"), out_dir, udp_out=rx.getsockname()[1])
        rx.setblocking(False)
        datagrams = []
        while True:
            try:
                datagrams.append(rx.recv(65536))
            except BlockingIOError:
                break
    [path] = list(out_dir.glob("*.ps"))
    rtp_ps = b"".join(d[12:] for d in datagrams)      # loopback keeps the order of one sender
    for ps in (path.read_bytes(), rtp_ps):
        maps = psms(ps)
        assert maps, "the rebuilt stream has no program stream map"
        assert sorted(maps[0]) == [(0x1B, 0xE0), (0x90, 0xC0)], maps[0]    # video and G.711A, from the start
        assert ps.find(b"\x00\x00\x01\xbc") < ps.find(b"\x00\x00\x01\xc0")  # listed before the first audio PES
    ps = path.read_bytes()
    [inner_end] = events(a.inner_audit, "stream_ended")
    assert inner_end["detail"]["audio_frames"] > 0 and inner_end["detail"]["access_units"] > 0
    # the video still decodes
    frames = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
                             "stream=nb_read_frames", "-of", "csv=p=0", str(path)],
                            capture_output=True, text=True, check=True).stdout.strip()
    assert int(frames) == inner_end["detail"]["access_units"]


def test_audit_reconcile_accounts_for_a_video_only_run_stream_by_stream(appliance_factory, tmp_path):
    a = appliance(appliance_factory, tmp_path, audio=False)
    run_camera(a, camera_packets("h264", None), a.work / "recordings")
    [outer_end] = events(a.outer_audit, "stream_ended")
    [inner_end] = events(a.inner_audit, "stream_ended")
    sent = outer_end["detail"]["access_units"]
    assert sent > 0 and inner_end["detail"]["access_units"] == sent
    ferry = [sys.executable, "-m", "ferry", "audit", "reconcile", str(a.outer_audit), str(a.inner_audit)]
    r = subprocess.run(ferry, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 video stream" in r.stdout and "1 reconciled" in r.stdout, r.stdout
    r = subprocess.run(ferry + ["--json"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads(r.stdout)
    [stream] = report["streams"]
    assert stream["flow"] == outer_end["flow"] and stream["status"] == "reconciled"
    assert stream["sent"] == sent and stream["received"] == sent and stream["missing"] == 0
