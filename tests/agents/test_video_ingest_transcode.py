"""The outer agent's video ingest transcodes off the event loop: the loop stays responsive."""
from __future__ import annotations

import asyncio
import shutil
import socket
import threading
import time

import pytest

import gb28181
from ingest_host import Host
from ferry.agents import video_ingest
from ferry.config import OuterVideo
from ferry.agents.video_ingest import VideoIngest
from ferry.lanes.work import ObjectIds
from ferry.codecs.nal import split_annexb
from ferry.policy import load_plan
from video_policy import video_limits, video_policy

pytestmark = pytest.mark.skipif(not shutil.which("ffmpeg"), reason="ffmpeg not installed")

CAMERA = "43090000001320000001"
SSRC = 0x0BEBC201
POLICY = video_policy("transcode-agent-test", video=video_limits(
    codecs="[h264]", max_width=1280, max_height=720, max_bitrate_kbps=2000, mode="transcode"))


def _ingest(plan, entries) -> tuple[VideoIngest, Host]:
    host = Host()
    return VideoIngest(entries, host, lambda: plan, ObjectIds(7)), host


@pytest.fixture
def plan(tmp_path):
    (tmp_path / "policy.yaml").write_text(POLICY)
    return load_plan(tmp_path)


ENTRY = OuterVideo(name="cam", listen="127.0.0.1:9", device_id=CAMERA, destination="police-vms")


async def _run(ingest: VideoIngest, frames_of_packets, rate: float, burst: int) -> float:
    """Feed the packets `burst` pictures at a time, paced at `rate` pictures/s; the ticker's worst lateness."""
    worst = 0.0
    done = False

    async def ticker() -> None:
        nonlocal worst
        while not done:
            t0 = time.perf_counter()
            await asyncio.sleep(0.01)
            worst = max(worst, time.perf_counter() - t0 - 0.01)

    tick = asyncio.create_task(ticker())
    await asyncio.sleep(0.02)
    start = time.perf_counter()
    for i in range(0, len(frames_of_packets), burst):
        for pkts in frames_of_packets[i:i + burst]:
            for data in pkts:
                ingest.udp_packet(ENTRY.name, data, ("192.0.2.10", 5000))
        wait = start + (i + burst) / rate - time.perf_counter()
        await asyncio.sleep(max(wait, 0.0))
    await asyncio.sleep(0.3)   # the loop keeps running while transcodes are in flight (scenario: the ticker watches)
    await ingest.stop()     # ends the stream: the transcoder flushes on its thread
    done = True
    await tick
    return worst


def _by_picture(packets) -> list[list[bytes]]:
    """The PS packets grouped per picture (the marker bit ends one)."""
    out, cur = [], []
    for data, _offset in packets:
        cur.append(data)
        if data[1] & 0x80:
            out.append(cur)
            cur = []
    return out + ([cur] if cur else [])


def test_event_loop_stays_responsive_while_720p_h264_is_transcoded(plan, monkeypatch):
    Transcoder = video_ingest.transcoder_factory()     # PyAV's, imported where the agent imports it
    assert Transcoder is not None
    threads = set()

    class Recording(Transcoder):
        def push(self, au):
            threads.add(threading.get_ident())
            return super().push(au)

    monkeypatch.setattr(video_ingest, "transcoder_factory", lambda: Recording)
    src = gb28181.make_source(None, "h264", size="1280x720", seconds=3, extra="-b:v 4M -maxrate 4M -bufsize 4M")
    pictures = _by_picture(gb28181.ps_packets(src, "h264", ssrc=SSRC))
    ingest, agent = _ingest(plan, [ENTRY])
    worst = asyncio.run(_run(ingest, pictures, rate=25, burst=5))
    assert worst < 0.1, f"the event loop stalled {worst * 1000:.0f} ms"
    assert threads and threading.main_thread().ident not in threads     # never on the loop's thread
    objs = agent.objects
    assert len(objs) >= 70, len(objs)    # 75 pictures; the last ones come from the flush at stop
    assert objs[0].access_unit.keyframe and all(o.rule == "video-cameras" for o in objs)
    assert all(o.access_unit.width == 1280 and o.access_unit.height == 720 for o in objs)
    pts = [o.access_unit.pts for o in objs]
    assert pts == sorted(pts) and len(set(pts)) == len(pts)             # order kept
    slices = {n for n in split_annexb(src.read_bytes()) if n[0] & 0x1F in (1, 5)}   # parameter sets may match
    assert not slices & {n for o in objs for n in o.access_unit.nal_units}           # pictures coded afresh
    started = [r for r in agent.records if r["event"] == "stream_started"]
    [ended] = [r for r in agent.records if r["event"] == "stream_ended"]
    assert len(started) == 1 and ended["detail"]["access_units"] == len(objs)
    assert ended["rule"] == "video-cameras" and not ingest.lane.streams and not ingest.transcodes


class Slow:
    """A transcoder slower than real time (it sleeps, as PyAV releases the GIL): output = input."""

    def __init__(self, *caps) -> None:
        self.caps = caps

    def push(self, au):
        time.sleep(0.08)
        return [au]

    def flush(self):
        return []


def test_a_slow_transcoder_drops_to_the_next_keyframe_and_the_loop_keeps_running(plan, monkeypatch):
    monkeypatch.setattr(video_ingest, "transcoder_factory", lambda: Slow)
    src = gb28181.make_source(None, "h264", size="640x360", seconds=4, gop=25)
    pictures = _by_picture(gb28181.ps_packets(src, "h264", ssrc=SSRC))
    ingest, agent = _ingest(plan, [ENTRY])
    worst = asyncio.run(_run(ingest, pictures, rate=25, burst=1))
    assert worst < 0.1, f"the event loop stalled {worst * 1000:.0f} ms"
    objs = agent.objects
    [ended] = [r for r in agent.records if r["event"] == "stream_ended"]
    c = ended["detail"]
    assert c["transcode_dropped_aus"] > 0 and c["access_units"] == len(objs)
    assert c["access_units"] + c["transcode_dropped_aus"] == 100
    pts = [o.access_unit.pts for o in objs]
    assert pts == sorted(pts)
    # after each gap the output resumes on a keyframe: it never references a picture that did not cross
    step = 3600
    for prev, cur in zip(objs, objs[1:]):
        if cur.access_unit.pts - prev.access_unit.pts > step:
            assert cur.access_unit.keyframe


def test_no_audit_no_transfer_for_transcoded_streams(plan, monkeypatch):
    monkeypatch.setattr(video_ingest, "transcoder_factory", lambda: Slow)
    monkeypatch.setattr(Slow, "push", lambda self, au: [au])
    src = gb28181.make_source(None, "h264", size="640x360", seconds=1)
    pictures = _by_picture(gb28181.ps_packets(src, "h264", ssrc=SSRC))
    ingest, agent = _ingest(plan, [ENTRY])
    agent.available = False
    asyncio.run(_run(ingest, pictures, rate=100, burst=5))
    assert agent.objects == []
    [ended] = [r for r in agent.records if r["event"] == "stream_ended"]
    assert ended["detail"]["dropped_no_audit"] == 25 and ingest.stats["video_dropped_no_audit"] == 25


def test_bind_takes_every_listening_port_at_once_and_names_the_entry_on_failure(plan):
    """The agent binds the cameras' ports before its own ephemeral link socket (bind()); a port in
    use is an error that says which entry and address."""
    busy = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    busy.bind(("127.0.0.1", 0))
    free = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    free.bind(("127.0.0.1", 0))
    tcp_port = free.getsockname()[1]
    free.close()
    try:
        udp = OuterVideo(name="cam-udp", listen="127.0.0.1:%d" % busy.getsockname()[1], device_id=CAMERA,
                         destination="police-vms")
        with pytest.raises(OSError, match="video cam-udp: cannot listen on 127.0.0.1:%d \\(udp\\)"
                           % busy.getsockname()[1]):
            _ingest(None, [udp])[0].bind()
        tcp = OuterVideo(name="cam-tcp", transport="tcp-listen", listen=f"127.0.0.1:{tcp_port}",
                         device_id=CAMERA, destination="police-vms")
        ingest, _ = _ingest(None, [tcp])
        ingest.bind()
        with socket.create_connection(("127.0.0.1", tcp_port), timeout=2):
            pass                                   # listening before start()
        ingest.listeners["cam-tcp"].close()
    finally:
        busy.close()
