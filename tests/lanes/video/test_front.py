"""The front end of an outer stream: RTP/PS and RFC 6184/7798 payloads -> access units."""
from __future__ import annotations

import shutil

import pytest

import gb28181
from ferry.codecs.access_unit import AccessUnit
from ferry.codecs.access_unit import Dropped as AuDropped
from ferry.codecs.rtp import parse_rtp
from ferry.lanes.video.front import PsFront, RtpFront
from .test_stream import SSRC

pytestmark = pytest.mark.skipif(not shutil.which("ffmpeg"), reason="ffmpeg not installed")


class Sink:
    """A gate that only records."""

    def __init__(self) -> None:
        self.need_key = False
        self.aus: list[AccessUnit] = []
        self.dropped: list[AuDropped] = []
        self.audio_frames: list = []
        self.calls = 0

    def access_units(self, events, now, out) -> None:
        self.calls += 1
        for ev in events:
            (self.aus if isinstance(ev, AccessUnit) else self.dropped).append(ev)

    def audio(self, ev, codec, now, out) -> None:
        self.audio_frames.append((ev, codec))


def counts() -> dict[str, int]:
    return {"skipped_bytes": 0}


@pytest.fixture(scope="module", params=["h264", "h265"])
def src(request):
    return request.param, gb28181.make_source(None, request.param, seconds=1)


def test_a_marking_camera_gets_each_picture_when_the_next_one_starts(src):
    """The marker is a hint (gathering), not the end of a picture: a source may mark inside one
    (issue 12 item 1). A picture is complete when the next one's first packet is in."""
    codec, path = src
    sink = Sink()
    front = PsFront(sink, counts())
    pictures = 0
    for data, _ in gb28181.ps_packets(path, codec, ssrc=SSRC):
        p = parse_rtp(data)
        front.gathered(memoryview(data)[12:], p.marker, 0.0, [])
        if p.marker:
            pictures += 1
            assert len(sink.aus) == pictures - 1      # the last one waits for the next start
    front.close(0.0, [])
    assert len(sink.aus) == 25 and front.markers and front.codec == codec
    assert sink.aus[0].keyframe and (sink.aus[0].width, sink.aus[0].height) == (640, 360)


def test_without_markers_pictures_come_one_behind_and_all_by_the_close(src):
    codec, path = src
    sink = Sink()
    front = PsFront(sink, counts())
    for data, _ in gb28181.ps_packets(path, codec, ssrc=SSRC):
        front.gathered(memoryview(data)[12:], False, 0.0, [])
    assert not front.markers and 23 <= len(sink.aus) < 25
    front.close(0.0, [])
    assert len(sink.aus) == 25


def test_a_discontinuity_forgets_the_partial_pack_and_continues(src):
    codec, path = src
    sink = Sink()
    c = counts()
    front = PsFront(sink, c)
    packets = [parse_rtp(d) for d, _ in gb28181.ps_packets(path, codec, ssrc=SSRC)]
    cut = len(packets) // 2
    for p in packets[:cut]:
        front.packet(p, 0.0, [])
    front.discontinuity(0.0, [])                     # a few packets lost
    for p in packets[cut + 3:]:
        front.packet(p, 0.0, [])
    front.close(0.0, [])
    assert 20 <= len(sink.aus) < 25                  # what the loss touched is gone, the rest crossed
    assert sink.aus[-1].pts == packets[-1].timestamp  # up to the last picture


def test_plain_rtp_gives_one_access_unit_per_timestamp_and_a_lossy_one_asks_for_a_keyframe(src):
    codec, path = src
    sink = Sink()
    c = counts()
    front = RtpFront(codec, sink, c)
    packets = [parse_rtp(d) for d, _ in gb28181.raw_packets(path, codec, ssrc=SSRC)]
    for p in packets:
        front.packet(p, 0.0, [])
    front.close(0.0, [])
    assert len(sink.aus) == 25 and sink.aus[0].keyframe and front.codec == codec
    assert not sink.need_key
    front = RtpFront(codec, sink, c)
    fu = next(i for i, p in enumerate(packets) if len(p.payload) > 1000 and not p.marker)   # inside a picture
    for p in packets[:fu] + packets[fu + 1:]:
        front.packet(p, 0.0, [])
    assert sink.need_key
