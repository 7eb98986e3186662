"""Dynamic ingest entries of the outer agent's video ingest (issue 13 "media-outer"): a SIP dialog's
UDP port opened at run time takes only its SSRC, ends its stream when closed, and a port in use
is an error named, not an exception; the watcher hears of the dialog's stream."""
from __future__ import annotations

import asyncio
import socket

import pytest

import gb28181
from ingest_host import Host
from ferry.agents.video_ingest import DynamicEntry, VideoIngest
from ferry.codecs.rtp import build_rtp
from ferry.lanes.work import ObjectIds
from ferry.policy import load_plan
from video_policy import video_policy

CAMERA = "43090000001320000001"
POLICY = video_policy("dynamic-ingest-test")


@pytest.fixture
def plan(tmp_path):
    (tmp_path / "policy.yaml").write_text(POLICY)
    return load_plan(tmp_path)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_dialog_port_takes_its_ssrc_and_ends_when_closed(plan):
    src = gb28181.make_source(None, "h264", seconds=1)
    ssrc = 200000001
    packets = gb28181.ps_packets(src, "h264", ssrc=ssrc)
    host = Host()
    heard: list[tuple[str, str]] = []

    async def run() -> None:
        ingest = VideoIngest([], host, lambda: plan, ObjectIds(9))
        ingest.watch = lambda name, event, fields: heard.append((name, event))
        await ingest.start(asyncio.Event())
        port = free_port()
        name = f"sip-{CAMERA}-1"
        assert ingest.open_dynamic(DynamicEntry(name, "udp", CAMERA, ssrc, "police-vms"), "127.0.0.1", port) is None
        # the same port again, as another dialog: an error that names it
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
            busy.bind(("127.0.0.1", 0))
            taken = busy.getsockname()[1]
            error = ingest.open_dynamic(DynamicEntry(f"sip-{CAMERA}-2", "udp", CAMERA, 1, "police-vms"),
                                        "127.0.0.1", taken)
        assert error is not None and str(taken) in error
        assert ingest.open_dynamic(DynamicEntry(name, "udp", CAMERA, ssrc, "police-vms"), "127.0.0.1",
                                   free_port()) == f"video entry {name} exists"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as cam:
            for data, _ in packets:
                cam.sendto(data, ("127.0.0.1", port))
                await asyncio.sleep(0)
            for i in range(20):          # another SSRC on the dialog's port: not taken
                cam.sendto(build_rtp(96, i, 0, 12345, b"\x00" * 100), ("127.0.0.1", port))
        for _ in range(200):
            await asyncio.sleep(0.02)
            if len(host.objects) >= len(gb28181.access_units(src, "h264")) - 1:
                break
        ingest.close_dynamic(name)
        assert name not in ingest.dynamic and name not in ingest.lane.endpoints
        await asyncio.sleep(0.05)
        await ingest.stop()

    asyncio.run(run())
    events = [r["event"] for r in host.records]
    assert "stream_started" in events and "stream_ended" in events
    started = next(r for r in host.records if r["event"] == "stream_started")
    assert started["flow"].startswith(f"sip-{CAMERA}-1-") and started["detail"]["ssrc"] == ssrc
    assert started["source"]["device_id"] == CAMERA and started["destination"] == "police-vms"
    assert {o.access_unit.stream_id for o in host.objects} == {started["flow"]}
    assert len(host.objects) == len(gb28181.access_units(src, "h264"))
    anomalies = [r for r in host.records if r["event"] == "stream_anomaly"]
    assert anomalies and anomalies[0]["code"] == "foreign_ssrc"
    assert (f"sip-{CAMERA}-1", "stream_started") in heard and (f"sip-{CAMERA}-1", "stream_ended") in heard
