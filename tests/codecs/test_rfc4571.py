"""RFC 4571 framing: whole and byte-at-a-time, resynchronisation mid-stream, bounds, fuzzing."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ferry.codecs.errors import CodecError, FramingError
from ferry.codecs.rfc4571 import Deframer, Frame, Skipped, frame
from ferry.codecs.rtp import RtpPacketWriter, parse_rtp

SSRC = 0x0BADCAFE


def rtp_packets(sizes: list[int], pt: int = 96, ssrc: int = SSRC, seed: int = 1) -> list[bytes]:
    rng = random.Random(seed)
    return RtpPacketWriter(pt, ssrc, 100).write([rng.randbytes(n) for n in sizes], 3600)


def drain(d: Deframer) -> list[Frame | Skipped]:
    out = []
    while (e := d.next_event()) is not None:
        out.append(e)
    return out


def feed(d: Deframer, stream: bytes, step: int) -> list[Frame | Skipped]:
    out = []
    for i in range(0, len(stream), step):
        d.receive(stream[i:i + step])
        out += drain(d)
    return out


def test_frame_prefixes_the_length() -> None:
    assert frame(b"abc") == b"\x00\x03abc"
    assert frame(b"") == b"\x00\x00"
    assert frame(bytes(65535))[:2] == b"\xff\xff"
    with pytest.raises(FramingError):
        frame(bytes(65536))


@pytest.mark.parametrize("step", [1, 3, 13, 100000])
def test_deframes_whole_or_in_pieces(step: int) -> None:
    packets = rtp_packets([0, 1, 100, 1400, 5000])
    stream = b"".join(map(frame, packets))
    d = Deframer(payload_type=96, ssrc=SSRC)
    events = feed(d, stream, step)
    assert events == [Frame(p) for p in packets]
    assert d.frames == 5 and d.skipped_bytes == 0 and d.buffered == 0


def test_next_packet_returns_bytes_then_none() -> None:
    packets = rtp_packets([10, 20])
    d = Deframer()
    d.receive(b"".join(map(frame, packets)) + b"\x00")
    assert d.next_packet() == packets[0]
    assert d.next_packet() == packets[1]
    assert d.next_packet() is None and d.buffered == 1


@pytest.mark.parametrize("cut", list(range(1, 60)) + [111, 112, 113])
def test_resync_when_the_stream_starts_mid_packet(cut: int) -> None:
    packets = rtp_packets([100, 50, 70, 80, 90])
    stream = b"".join(map(frame, packets))
    d = Deframer(payload_type=96, resync=True)
    events = feed(d, stream[cut:], 1)
    frames = [e.data for e in events if isinstance(e, Frame)]
    skipped = sum(e.nbytes for e in events if isinstance(e, Skipped))
    first_whole = 1 if cut <= 114 else 2
    assert frames == packets[first_whole:]
    assert skipped == len(b"".join(map(frame, packets[:first_whole]))) - cut == d.skipped_bytes
    assert all(isinstance(e, Skipped) for e in events[:1])  # reported before the first frame


def test_resync_at_start_of_an_aligned_stream_skips_nothing() -> None:
    packets = rtp_packets([30, 40, 50])
    d = Deframer(payload_type=96, resync=True)
    assert feed(d, b"".join(map(frame, packets)), 7) == [Frame(p) for p in packets]


def test_a_bad_frame_mid_stream_starts_a_resync() -> None:
    packets = rtp_packets([30, 40, 50, 60])
    good = list(map(frame, packets))
    garbage = b"\x00\x05junk!\x12"
    d = Deframer(payload_type=96)
    events = feed(d, good[0] + garbage + b"".join(good[1:]), 5)
    assert events[0] == Frame(packets[0])
    assert isinstance(events[1], Skipped) and events[1].nbytes == len(garbage)
    assert "too short" in events[1].reason
    assert events[2:] == [Frame(p) for p in packets[1:]]
    assert d.resyncs == 1


@pytest.mark.parametrize("bad,reason", [
    (rtp_packets([40], pt=8)[0], "payload type"),
    (rtp_packets([40], ssrc=1)[0], "SSRC"),
    (b"\x40" + rtp_packets([40])[0][1:], "version"),
])
def test_frames_of_another_stream_are_skipped(bad: bytes, reason: str) -> None:
    packets = rtp_packets([30, 40, 50])
    d = Deframer(payload_type=96, ssrc=SSRC)
    events = feed(d, frame(packets[0]) + frame(bad) + b"".join(map(frame, packets[1:])), 1000)
    assert [e.data for e in events if isinstance(e, Frame)] == packets
    (skip,) = [e for e in events if isinstance(e, Skipped)]
    assert skip.nbytes == len(bad) + 2 and reason in skip.reason


def test_requested_resync_skips_to_the_next_boundary() -> None:
    packets = rtp_packets([30, 40, 50])
    d = Deframer(payload_type=96)
    d.receive(frame(packets[0])[:10])
    d.resync()
    d.receive(frame(packets[0])[10:] + b"".join(map(frame, packets[1:])))
    events = drain(d)
    assert events == [Skipped(len(packets[0]) + 2, "requested"), Frame(packets[1]), Frame(packets[2])]


def test_without_payload_type_both_frames_must_share_pt_and_ssrc() -> None:
    a = rtp_packets([30], pt=8, ssrc=1)[0]
    b = rtp_packets([30] * 60, pt=96, ssrc=2)
    stream = b"\x99" + frame(a) + b"".join(map(frame, b))
    d = Deframer(resync=True, max_frame=1500)
    events = feed(d, stream, 1)
    # a is followed by another stream; candidates inside payloads wait for their "next frame"
    # (at most max_frame on) and are then refuted: none of the stream is lost
    assert [e.data for e in events if isinstance(e, Frame)] == b
    assert [e for e in events if isinstance(e, Skipped)] == [Skipped(1 + len(a) + 2, "stream starts mid-frame")]


def test_buffer_is_bounded() -> None:
    d = Deframer(max_frame=100, max_buffer=300)
    d.receive(bytes(300))
    with pytest.raises(FramingError):
        d.receive(b"x")


def test_unchecked_mode_passes_any_frame_but_bounds_its_size() -> None:
    d = Deframer(check=False, max_frame=100)
    d.receive(b"\x00\x00\x00\x02hi\x00\x65")
    assert d.next_event() == Frame(b"")
    assert d.next_event() == Frame(b"hi")
    with pytest.raises(FramingError):
        d.next_event()


def test_long_garbage_is_reported_in_bounded_pieces() -> None:
    d = Deframer(payload_type=96, resync=True, max_frame=1000, max_buffer=4000)
    total = 0
    for _ in range(50):
        d.receive(bytes(1000))
        total += sum(e.nbytes for e in drain(d))
        assert d.buffered <= 3
    assert d.skipped_bytes == 50000 - d.buffered and total >= 49000


def test_constructor_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        Deframer(max_frame=5)
    with pytest.raises(ValueError):
        Deframer(check=False, resync=True)


# --- property tests --------------------------------------------------------------------------

def _run(stream: bytes, step: int, **kwargs) -> tuple[list, Deframer]:
    d = Deframer(max_frame=2000, max_buffer=8000, **kwargs)
    out = []
    for i in range(0, len(stream), step):
        d.receive(stream[i:i + step])
        while (e := d.next_event()) is not None:
            out.append(e)
            assert d.buffered <= 8000
    return out, d


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), st.sampled_from([1, 2, 7, 1000]),
       st.sampled_from([dict(), dict(payload_type=96), dict(payload_type=96, resync=True),
                        dict(check=False), dict(ssrc=SSRC, resync=True)]))
def test_arbitrary_bytes_only_codec_error_and_bounded(data: bytes, step: int, kwargs: dict) -> None:
    try:
        events, d = _run(data, step, **kwargs)
    except CodecError:
        return
    consumed = sum(len(e.data) + 2 if isinstance(e, Frame) else 0 for e in events) + d.skipped_bytes
    assert consumed + d.buffered == len(data)
    if kwargs.get("check", True):
        for e in events:
            if isinstance(e, Frame):
                assert len(e.data) >= 12 and e.data[0] >> 6 == 2


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(12, 300), min_size=3, max_size=12), st.binary(max_size=200),
       st.sampled_from([1, 5, 1000]), st.integers(0, 2 ** 32 - 1))
def test_garbage_then_stream_recovers_all_but_at_most_the_first_frames(sizes, garbage, step, ssrc) -> None:
    """Whatever comes before, a resyncing deframer finds the real stream; whole or byte by byte,
    the frames it returns are genuine packets of the stream, in order, and it loses at most the
    first one or two (a garbage prefix can imitate at most one frame boundary check)."""
    packets = rtp_packets([s - 12 for s in sizes], ssrc=ssrc)
    stream = garbage + b"".join(map(frame, packets))
    events, d = _run(stream, step, payload_type=96, ssrc=ssrc, resync=True)
    frames = [e.data for e in events if isinstance(e, Frame)]
    real = [f for f in frames if f in packets]
    assert frames[-len(packets) + 2:] == packets[2:]
    assert real == sorted(real, key=packets.index)
    for f in frames:
        p = parse_rtp(f)
        assert p.payload_type == 96 and p.ssrc == ssrc


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(12, 400), min_size=1, max_size=10), st.sampled_from([1, 3, 64, 100000]))
def test_whole_and_piecewise_agree(sizes: list[int], step: int) -> None:
    packets = rtp_packets([s - 12 for s in sizes])
    stream = b"".join(map(frame, packets))
    events, _ = _run(stream, step, payload_type=96)
    assert events == [Frame(p) for p in packets]
