"""Issue 12 items 3 and 4, end to end: what a hostile or broken source costs the outer agent.

Item 3: idle TCP connections to a `tcp-listen` entry must not lock anyone out. Item 4: a stream
that delivers nothing says why, once; what the lane drops in bulk leaves a trace.
Real agent processes on loopback; the sources are made with ffmpeg (ferry.camera).
"""
from __future__ import annotations

import shutil
import socket
import time

import pytest

import gb28181
from appliance import free_udp_port, read_trail, uncoded
from tests.lanes.video.test_stream_reasons import huge_sps, packets_of
from .test_video import CAMERA, events, free_tcp_port, make_appliance, output_entry, video_entry

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300),
              pytest.mark.skipif(not shutil.which("ffmpeg"), reason="ffmpeg not installed")]

ATTACKER = "127.0.0.2"      # the idle connections' source address (loopback: any 127/8 address)


def idle_connections(port: int, n: int) -> list[socket.socket]:
    """`n` TCP connections from ATTACKER that send nothing."""
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind((ATTACKER, 0))
        s.settimeout(20)
        s.connect(("127.0.0.1", port))
        socks.append(s)
    return socks


def closed_by_peer(s: socket.socket) -> bool:
    s.setblocking(False)
    try:
        return s.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def test_300_idle_connections_lock_nobody_out(appliance_factory, tmp_path):
    """300 connections that never send a byte: a UDP camera on another entry and a TCP camera on
    the same entry (another address) still cross whole; the idle ones are closed (first-byte
    timeout or at once over the pending limits), never become streams, and are recorded in a few
    aggregated records, not one per connection."""
    a = make_appliance(appliance_factory, tmp_path)
    tcp_port, udp_port = free_tcp_port(), free_udp_port()
    a.append_config("outer", video_entry("gate", CAMERA, transport="tcp-listen", listen=f"127.0.0.1:{tcp_port}"))
    a.append_config("outer", video_entry("yard", CAMERA, listen=f"127.0.0.1:{udp_port}"))
    a.append_config("inner", output_entry(transport="file", path=str(a.work / "recordings" / "{stream}.ps")))
    src = gb28181.make_source(None, "h264", seconds=2)
    socks: list[socket.socket] = []
    try:
        a.start()
        socks = idle_connections(tcp_port, 300)
        # the agent has taken the connections in: some were refused over the pending limits
        a.wait_for(lambda: [r for r in events(a.outer_audit, "stream_refused") if r["flow"] == "gate"], 60,
                   "the idle connections refused")
        udp_cam = gb28181.Camera(gb28181.ps_packets(src, "h264", ssrc=0x1001), ("127.0.0.1", udp_port),
                                 realtime=4.0).start()
        tcp_cam = gb28181.Camera(gb28181.ps_packets(src, "h264", ssrc=0x1002), ("127.0.0.1", tcp_port),
                                 transport="tcp", realtime=4.0).start()
        udp_cam.join(60)
        tcp_cam.join(60)
        a.wait_for(lambda: len(events(a.outer_audit, "stream_ended")) >= 2, 60, "both cameras' streams ended")
        a.wait_for(lambda: len(events(a.inner_audit, "stream_ended")) >= 2, 60, "both streams ended inside")
        # every idle connection is closed by the agent: at once, or after the first-byte timeout
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not all(closed_by_peer(s) for s in socks):
            time.sleep(0.5)
        still_open = sum(not closed_by_peer(s) for s in socks)
    finally:
        for s in socks:
            s.close()
        a.stop()
    outer, inner = read_trail(a.outer_audit), read_trail(a.inner_audit)
    started = [r for r in outer if r["event"] == "stream_started"]
    ended = [r for r in outer if r["event"] == "stream_ended"]
    assert sorted(r["flow"].split("-")[0] for r in started) == ["gate", "yard"], started
    assert sorted(r["flow"] for r in ended) == sorted(r["flow"] for r in started)   # no end without a start
    for r in ended:
        assert r["detail"]["access_units"] == 50 and r["detail"]["refused_aus"] == 0, r
    inner_ended = [r for r in inner if r["event"] == "stream_ended"]
    assert sorted(r["detail"]["access_units"] for r in inner_ended) == [50, 50]
    for f in (a.work / "recordings").glob("*.ps"):
        assert gb28181.framemd5(f) == gb28181.framemd5(src)
    assert still_open == 0
    # the lock-out attempt: aggregated records with a code, not one per connection
    attempt = [r for r in outer if r["event"] == "stream_refused" and r["flow"] == "gate"]
    assert 1 <= len(attempt) <= 6, attempt
    assert all(r["rule"] == "ferry-video-ingest" and r["source"]["address"] == ATTACKER for r in attempt)
    assert {r["code"] for r in attempt} <= {"too_many_connections", "no_rtp"}
    assert sum(r["detail"]["connections"] for r in attempt) == 300
    assert not [r for r in outer if "more than 256 video streams" in r.get("reason", "")]
    assert uncoded(outer) == [] and uncoded(inner) == []


def test_streams_that_deliver_nothing_say_why_once_and_a_second_ssrc_leaves_a_trace(appliance_factory, tmp_path):
    """Item 4 through real agents: an SPS claiming 100000x100000 and a stream without a keyframe
    each get exactly one stream_refused with the parser's reason; packets of a second SSRC on a
    working camera's port get one aggregated stream_anomaly while its 50 pictures cross."""
    frames = gb28181.access_units(gb28181.make_source(None, "h264", seconds=2), "h264")
    Frame = type(frames[0])
    huge = packets_of([Frame(tuple(huge_sps() if n[0] & 0x1F == 7 else n for n in fr.nal_units), fr.pts, fr.dts,
                             fr.keyframe) for fr in frames], ssrc=0x2001)
    nokey = packets_of([Frame(tuple(n for n in fr.nal_units if n[0] & 0x1F != 5), fr.pts, fr.dts, False)
                        for fr in frames], ssrc=0x2002)
    ours, theirs = packets_of(frames, ssrc=0x2003), packets_of(frames, ssrc=0x2004)
    mixed = [p for pair in zip(ours, theirs) for p in pair]
    a = make_appliance(appliance_factory, tmp_path)
    ports = {name: free_udp_port() for name in ("huge", "nokey", "mixed")}
    for name, port in ports.items():
        a.append_config("outer", video_entry(name, CAMERA, listen=f"127.0.0.1:{port}"))
    a.append_config("inner", output_entry(transport="file", path=str(a.work / "recordings" / "{stream}.ps")))
    try:
        a.start()
        for name, packets in (("huge", huge), ("nokey", nokey), ("mixed", mixed)):
            gb28181.send_udp([(p, 0.0) for p in packets], ("127.0.0.1", ports[name]))
        a.wait_for(lambda: len(events(a.outer_audit, "stream_ended")) == 3, 60, "three streams ended")
        a.wait_for(lambda: events(a.inner_audit, "stream_ended"), 60, "the mixed stream ended inside")
    finally:
        a.stop()
    outer = read_trail(a.outer_audit)
    by_entry: dict[str, list[dict]] = {}
    for r in outer:
        if r.get("lane") == "video":
            by_entry.setdefault(r["flow"].split("-")[0], []).append(r)
    [refused] = [r for r in by_entry["huge"] if r["event"] == "stream_refused"]
    assert refused["code"] == "stream_check" and refused["rule"] == "ferry-video-ingest"
    assert "100000x100000" in refused["reason"]
    [refused] = [r for r in by_entry["nokey"] if r["event"] == "stream_refused"]
    assert refused["code"] == "no_picture" and "no keyframe" in refused["reason"]
    assert not [r for r in by_entry["mixed"] if r["event"] == "stream_refused"]
    [anomaly] = [r for r in by_entry["mixed"] if r["event"] == "stream_anomaly"]
    assert anomaly["code"] == "foreign_ssrc" and anomaly["detail"]["packets"] >= 16
    [inner_ended] = events(a.inner_audit, "stream_ended")
    assert inner_ended["detail"]["access_units"] == 50
    assert uncoded(outer) == []
