"""The inner agent's viewer sinks (media-inner): UDP from the answered port, TCP passive from the platform only."""
from __future__ import annotations

import asyncio
import socket
import struct

import pytest

from ferry.agents.video_emit import PassiveTcpSink, PortTaken, UdpSink, VideoEmitter, make_viewer_sink
from ferry.lanes.video import ViewerStarted
from tests.lanes.video.test_inner_lane import au

DEV = "43090000001320000001"


class Host:
    def __init__(self) -> None:
        self.records: list[dict] = []

    def audit(self, **fields):
        self.records.append(fields)

    def audit_available(self) -> bool:
        return True


def free_port(kind=socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_udp_viewer_sends_from_its_answered_port_with_its_ssrc_from_the_key_frame():
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(5)
    local = free_port()
    em = VideoEmitter(Host(), [], viewable=True)
    started = []
    em.on_viewer = started.append
    assert em.add_viewer("v1", DEV, f"127.0.0.1:{rx.getsockname()[1]}", 1234, "udp", "", ("127.0.0.1", local)) is None
    for n in range(20, 30):
        em.deliver(au(n), type("D", (), {"rule": "video-cameras"})(), 1.0 + n * 0.04, 1.7e9)
    assert started == [ViewerStarted("v1", DEV, "cam-1")]
    data, addr = rx.recvfrom(65536)
    assert addr == ("127.0.0.1", local) and struct.unpack_from("!I", data, 8)[0] == 1234
    # the same port again: refused with a reason, nothing made
    why = em.add_viewer("v2", DEV, "127.0.0.1:9", 1, "udp", "", ("127.0.0.1", local))
    assert why is not None and str(local) in why and "v2" not in em.lane.viewers
    assert isinstance(why, PortTaken)          # the media part picks another port for it
    assert em.remove_viewer("v1") is not None and not em.viewer_sinks
    em.close(1.7e9)
    rx.close()


def test_a_passive_tcp_viewer_takes_the_platforms_connection_only():
    async def run() -> None:
        port = free_port(socket.SOCK_STREAM)
        sink = make_viewer_sink("127.0.0.1:40000", "tcp", "passive", ("127.0.0.1", port))
        assert isinstance(sink, PassiveTcpSink)
        stop = asyncio.Event()
        await sink.start(stop)
        # another host (127.0.0.2 is loopback too) is closed at once
        other = socket.create_connection(("127.0.0.1", port), source_address=("127.0.0.2", 0), timeout=5)
        other.settimeout(5)
        await asyncio.sleep(0.2)
        assert other.recv(10) == b""
        other.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(100):
            if sink.writer is not None:
                break
            await asyncio.sleep(0.02)
        assert sink.send([b"\x80" + bytes(20)], keyframe=False) is False      # waits for a key frame
        assert sink.send([b"\x80" + bytes(20)], keyframe=True) is True
        head = await asyncio.wait_for(reader.readexactly(2), 5)
        assert struct.unpack("!H", head)[0] == 21
        sink.close()
        writer.close()

    asyncio.run(run())


def test_a_bad_viewer_sink_is_refused():
    with pytest.raises(OSError):
        make_viewer_sink("127.0.0.1:9", "udp", "", ("192.0.2.1", 30000))   # not a local address
    assert isinstance(make_viewer_sink("127.0.0.1:9", "udp", "", ("127.0.0.1", 0)), UdpSink)
