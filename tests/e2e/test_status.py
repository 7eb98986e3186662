"""What operators look at, on real agents: `stream_ended` says how a stream crossed (mode, output
codec, size, bitrate, pictures in/out/dropped) on both sides, and `ferry policy status` shows every
lane's counters (a refused camera counts as refused), uptime and the link state, also as `--json`;
the inner agent's log says when the link goes down and up.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import gb28181
from appliance import free_udp_port, read_trail

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

REMUX_CAM = "43090000001320000001"       # region 4309, serial in the remux rule's range
TRANSCODE_CAM = "43090000001320007000"   # its own rule: transcode to 640x360 H.264
STRANGER = "44000000001320000001"        # Guangdong: no rule

POLICY = f"""
policy: status-e2e
version: 1
default: deny
sources:
  outer-spool: {{kind: spool}}
  cameras:
    kind: devices
    match:
      - region: "4309"
        type: ["132"]
        serial: {{from: "0000000", to: "0000999"}}
  transcode-cameras:
    kind: devices
    ids: ["{TRANSCODE_CAM}"]
destinations:
  inner-spool: {{kind: spool}}
  police-vms: {{kind: vms}}
rules:
  - id: files-text
    lane: files
    from: outer-spool
    to: inner-spool
    files:
      max_size: 65536
      media_types: [text/plain]
      name_pattern: '[a-z]+\\.txt'
  - id: video-remux
    lane: video
    from: cameras
    to: police-vms
    video: {{codecs: [h264, h265], max_width: 1920, max_height: 1080, max_frame_rate: 30, max_bitrate_kbps: 20000}}
  - id: video-transcode
    lane: video
    from: transcode-cameras
    to: police-vms
    video: {{codecs: [h264], max_width: 640, max_height: 360, max_frame_rate: 30, max_bitrate_kbps: 800,
             mode: transcode}}
"""

needs_ffmpeg = pytest.mark.skipif(not shutil.which("ffmpeg"), reason="ffmpeg not installed")


def appliance(factory, tmp_path: Path, **kw):
    policy = tmp_path / "status-policy"
    policy.mkdir(exist_ok=True)
    (policy / "policy.yaml").write_text(POLICY)
    return factory(policy_dir=policy, **kw)


def camera_entry(name: str, device: str, port: int) -> str:
    return "\n".join(["[[video]]", f'name = "{name}"', 'transport = "udp"', f'device_id = "{device}"',
                      'payload = "ps"', 'destination = "police-vms"', f'listen = "127.0.0.1:{port}"'])


def file_output(path: Path) -> str:
    return "\n".join(["[[video_output]]", 'destination = "police-vms"', 'form = "ps"', 'transport = "file"',
                      f'path = "{path}"'])


def events(trail: Path, event: str) -> list[dict]:
    return [r for r in read_trail(trail) if r["event"] == event]


def ferry(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ferry", *map(str, args)], capture_output=True, text=True,
                          timeout=120)


def status(a, *extra) -> subprocess.CompletedProcess:
    return ferry("policy", "status", "--socket", a.inner_socket, "--socket", a.outer_socket, *extra)


@needs_ffmpeg
def test_stream_ended_says_mode_output_and_pictures_on_both_sides(appliance_factory, tmp_path):
    pytest.importorskip("av")      # transcode mode: the `transcode` extra
    a = appliance(appliance_factory, tmp_path)
    ports = {"remux": free_udp_port(), "transcode": free_udp_port()}
    a.append_config("outer", camera_entry("remux", REMUX_CAM, ports["remux"]))
    a.append_config("outer", camera_entry("transcode", TRANSCODE_CAM, ports["transcode"]))
    a.append_config("inner", file_output(a.work / "recordings" / "{stream}.ps"))
    small = gb28181.make_source(None, "h264", size="640x360", seconds=2)       # 50 pictures
    large = gb28181.make_source(None, "h264", size="1280x720", seconds=2)      # 50 pictures, transcoded
    a.start()
    cams = [gb28181.Camera(gb28181.ps_packets(src, "h264", ssrc=0x200 + i), ("127.0.0.1", ports[name]),
                           realtime=2.0).start()
            for i, (name, src) in enumerate((("remux", small), ("transcode", large)))]
    for c in cams:
        c.join(60)
    a.wait_for(lambda: len(events(a.outer_audit, "stream_ended")) == 2, 60, "both outer streams ended")
    a.wait_for(lambda: len(events(a.inner_audit, "stream_started")) == 2, 30, "both streams crossed")
    a.stop()                                         # the inner agent ends its streams as it stops
    outer = {r["flow"].split("-")[0]: r for r in events(a.outer_audit, "stream_ended")}
    inner = {r["flow"].split("-")[0]: r for r in events(a.inner_audit, "stream_ended")}
    assert set(outer) == set(inner) == {"remux", "transcode"}

    o, i = outer["remux"]["detail"], inner["remux"]["detail"]
    assert (o["mode"], o["out_codec"], o["out_size"]) == ("remux", "h264", "640x360")
    assert (o["pictures_in"], o["pictures_out"], o["pictures_dropped"]) == (50, 50, 0)
    assert (i["mode"], i["out_codec"], i["out_size"]) == ("remux", "h264", "640x360")
    assert (i["pictures_in"], i["pictures_out"], i["pictures_dropped"]) == (50, 50, 0)
    assert o["out_bitrate_kbps"] == i["out_bitrate_kbps"] > 0      # the same pictures' bytes over 2 s, both sides

    o, i = outer["transcode"]["detail"], inner["transcode"]["detail"]
    assert (o["codec"], o["width"], o["height"]) == ("h264", 1280, 720)          # the source, as before
    assert (o["mode"], o["out_codec"], o["out_size"]) == ("transcode", "h264", "640x360")
    assert o["pictures_in"] == 50 and 0 < o["pictures_out"] <= 50
    assert o["pictures_dropped"] == 50 - o["pictures_out"]
    assert (i["mode"], i["out_codec"], i["out_size"]) == ("transcode", "h264", "640x360")
    assert i["pictures_in"] == i["pictures_out"] == o["pictures_out"] and i["pictures_dropped"] == 0
    assert o["out_bitrate_kbps"] == i["out_bitrate_kbps"] > 0
    assert "transcode -> h264 640x360" in outer["transcode"]["reason"]
    assert "transcode -> h264 640x360" in inner["transcode"]["reason"]


@needs_ffmpeg
def test_policy_status_counts_every_lane_with_uptime_and_link_state(appliance_factory, tmp_path):
    a = appliance(appliance_factory, tmp_path, management=True)
    port = free_udp_port()
    a.append_config("outer", camera_entry("stranger", STRANGER, port))
    a.append_config("inner", file_output(a.work / "recordings" / "{stream}.ps"))
    a.start()
    a.drop("report.txt", b"all quiet\n")
    a.drop("virus.exe", b"MZ\x90\x00")                                   # refused by the files lane
    cam = gb28181.Camera(gb28181.ps_packets(gb28181.make_source(None, "h264", seconds=1), "h264", ssrc=0x300),
                         ("127.0.0.1", port), realtime=2.0).start()
    cam.join(60)
    a.wait_for(lambda: a.outcomes().get("report.txt") == "delivered" and a.outcomes().get("virus.exe"), 60,
               "the files' outcomes")
    a.wait_for(lambda: events(a.outer_audit, "stream_refused"), 30, "the stranger refused")

    r = status(a, "--json")
    assert r.returncode == 0, r.stderr
    inner, outer = json.loads(r.stdout)
    assert (inner["role"], outer["role"]) == ("inner", "outer")
    assert outer["lanes"]["files"] == {"sent": 1, "refused": 1}
    assert outer["lanes"]["video"]["refused"] == 1 and outer["lanes"]["video"]["refused_streams"] == 1
    assert outer["lanes"]["video"]["access_units"] == 0
    assert inner["lanes"]["files"] == {"delivered": 1, "refused": 0, "lost": 0}
    assert inner["lanes"]["video"]["streams"] == 0
    for agent in (inner, outer):
        assert agent["uptime_s"] > 0 and agent["started"].endswith("Z") and agent["audit"] == "ok"
        assert agent["link"]["state"] == "up" and agent["link"]["since"].endswith("Z"), agent["link"]
        assert agent["counters"]                                        # the flat counters stay
    assert inner["link"]["since_at"] >= inner["started_at"]            # up with the first heartbeat
    assert "sending to 127.0.0.1:" in outer["link"]["detail"]

    text = status(a)
    assert text.returncode == 0, text.stderr
    assert text.stdout.count("; link up since ") == 2
    assert "  files: refused=1 sent=1" in text.stdout and "  files: delivered=1 lost=0 refused=0" in text.stdout
    assert "refused=1" in next(line for line in text.stdout.splitlines() if line.startswith("  video: ") and
                                "refused_streams" in line)

    # the outer agent stops: the inner agent's status and log say the link is down
    a.procs.pop("outer").terminate()
    a.wait_for(lambda: events(a.inner_audit, "link_down"), 30, "link_down on the inner trail")
    a.wait_for(lambda: "link down:" in a.log("inner"), 10, "link down in the inner agent's log")
    r = ferry("policy", "status", "--json", "--socket", a.inner_socket, "--socket", a.outer_socket)
    assert r.returncode == 2                                           # the outer one does not answer
    inner, outer = json.loads(r.stdout)
    assert inner["link"]["state"] == "down" and "heartbeat" in inner["link"]["detail"]
    assert "error" in outer and str(a.outer_socket) in outer["error"]
    a.start_role("outer")
    a.wait_for(lambda: "link up:" in a.log("inner"), 30, "link up in the inner agent's log")
