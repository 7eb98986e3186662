"""Issue 12 item 2: one malformed RTP datagram is dropped alone.

A datagram refused as malformed is counted as malformed, never also as a lost sequence
number, and does not cost the pictures up to the next keyframe: if its sequence number
cannot be read it is no gap; if it can, and the next packets complete the picture, nothing
is lost.
"""
from __future__ import annotations

import shutil
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gb28181
from ferry.codecs.errors import CodecError
from ferry.codecs.rtp import parse_rtp, sequence_of
from ferry.lanes.video import strip_nal_units
from .test_marker_inside_au import marked_per_pes
from .test_outer_lane import CAM, SSRC, Entry, lane_of, records, sealed, timers

pytestmark = pytest.mark.skipif(not shutil.which("ffmpeg"), reason="ffmpeg not installed")


def malformed(kind: str, seq: int, ts: int) -> bytes:
    """A datagram of the stream that parse_rtp refuses, of each kind the issue lists."""
    fixed = struct.pack("!BBHII", 0x80, 96, seq, ts, SSRC)
    body = b"\x00\x00\x01\xba" + bytes(16)
    if kind == "cc15-without-csrcs":
        return bytes([0x8F]) + fixed[1:] + body
    if kind == "extension-past-the-end":
        return bytes([0x90]) + fixed[1:] + struct.pack("!HH", 0xBEDE, 1000) + body
    if kind == "padding-past-the-end":
        return bytes([0xA0]) + fixed[1:] + body[:-1] + bytes([200])
    if kind == "version-1":
        return bytes([0x40]) + fixed[1:] + body
    if kind == "header-of-8-bytes":
        return fixed[:8]
    if kind == "header-of-3-bytes":
        return fixed[:3]
    raise ValueError(kind)


# (kind, its sequence number can be read: it takes one in the stream's numbering)
KINDS = [("cc15-without-csrcs", True), ("extension-past-the-end", True), ("padding-past-the-end", True),
         ("header-of-8-bytes", True), ("version-1", False), ("header-of-3-bytes", False)]


@pytest.fixture(scope="module")
def stream10():
    src = gb28181.make_source(None, "h264", seconds=0.4)          # 10 pictures, one IDR
    frames = gb28181.access_units(src, "h264")
    assert len(frames) == 10 and [f.keyframe for f in frames] == [True] + [False] * 9
    return [d for d, _ in gb28181.ps_packets(src, "h264", ssrc=SSRC)], frames


def damaged(packets: list[bytes], i: int) -> list[bytes]:
    """The packets with packet i arriving malformed (cc15-without-csrcs) with its sequence number
    and timestamp: a damaged header, not a forged one."""
    p = parse_rtp(packets[i])
    return packets[:i] + [malformed("cc15-without-csrcs", p.sequence, p.timestamp)] + packets[i + 1:]


def run(lane, sent) -> list:
    """The lane's work for `sent`, a datagram every 40 ms (slower than the reorder delay: gaps
    time out) after the timers then due, and its close a second after the last."""
    work, t = [], 100.0
    for data in sent:
        t += 0.04
        work += timers(lane, t) + list(lane.datagram("cam", data, CAM, t, 1.7e9 + t))
    work += lane.close(t + 1.0, 1.7e9 + t + 1.0)
    return work


def pictures(frames) -> list[tuple]:
    """The source's pictures as their NAL units cross (SEI stripped)."""
    return [tuple(strip_nal_units("h264", f.nal_units)[0]) for f in frames]


def with_malformed(packets: list[bytes], kind: str, readable: bool, after_picture: int) -> list[bytes]:
    """The packets with one malformed datagram between two pictures; a readable one takes the
    next sequence number (the camera's numbering goes on after it)."""
    ends = [i for i, d in enumerate(packets) if d[1] & 0x80]
    cut = ends[after_picture] + 1
    first = parse_rtp(packets[cut])
    bad = malformed(kind, first.sequence, first.timestamp)
    assert sequence_of(bad) == (first.sequence if readable else None)
    with pytest.raises(Exception):
        parse_rtp(bad)
    if not readable:
        return packets[:cut] + [bad] + packets[cut:]
    renumbered = [d[:2] + struct.pack("!H", (parse_rtp(d).sequence + 1) & 0xFFFF) + d[4:] for d in packets[cut:]]
    return packets[:cut] + [bad] + renumbered


@pytest.mark.parametrize("kind,readable", KINDS, ids=[k for k, _ in KINDS])
@pytest.mark.parametrize("after_picture", [0, 4])
def test_one_malformed_datagram_between_two_pictures_costs_nothing(plan_of, stream10, kind, readable,
                                                                   after_picture):
    packets, frames = stream10
    lane = lane_of(plan_of())
    work = run(lane, [memoryview(bytearray(d)) for d in with_malformed(packets, kind, readable, after_picture)])
    objs = sealed(work)
    assert [tuple(o.access_unit.nal_units) for o in objs] == pictures(frames)   # all 10, whole
    assert not records(work, "stream_loss")
    [ended] = records(work, "stream_ended")
    assert ended["detail"]["malformed_packets"] == 1                    # counted as malformed...
    assert ended["detail"]["lost_packets"] == 0                         # ...not as lost
    assert ended["detail"]["dropped_aus"] == 0 and ended["detail"]["access_units"] == 10


def test_a_malformed_datagram_in_place_of_part_of_a_picture_never_lets_it_cross_cut(plan_of, stream10):
    """The counterpart: a datagram that carried the middle of a picture and arrives malformed
    (its number read, its bytes unknown) loses that picture and those that need it, whole,
    counted as malformed, not lost; nothing truncated crosses."""
    packets, frames = stream10
    ends = [i for i, d in enumerate(packets) if d[1] & 0x80]
    inside = next(i for i in range(ends[0] + 1, len(packets)) if not packets[i][1] & 0x80 and
                  not packets[i - 1][1] & 0x80)                    # neither first nor last of its picture
    sent = damaged(packets, inside)
    lane = lane_of(plan_of())
    work = run(lane, sent)
    source = pictures(frames)
    crossed = [tuple(o.access_unit.nal_units) for o in sealed(work)]
    assert crossed and all(au in source for au in crossed)       # whole pictures of the source only
    assert crossed == source[:len(crossed)] and len(crossed) < 10  # up to the damaged one, then a keyframe wait
    [ended] = records(work, "stream_ended")
    assert ended["detail"]["malformed_packets"] == 1 and ended["detail"]["lost_packets"] == 0


@pytest.mark.parametrize("kind", ["cc15-without-csrcs", "header-of-8-bytes"])
def test_rfc6184_one_malformed_datagram_between_pictures_costs_nothing(plan_of, kind):
    src = gb28181.make_source(None, "h264", seconds=0.4)
    frames = gb28181.access_units(src, "h264")
    packets = [d for d, _ in gb28181.raw_packets(src, "h264", ssrc=SSRC)]
    lane = lane_of(plan_of(), Entry(payload="h264"))
    work = run(lane, with_malformed(packets, kind, True, 3))
    assert [tuple(o.access_unit.nal_units) for o in sealed(work)] == pictures(frames)
    [ended] = records(work, "stream_ended")
    assert ended["detail"]["malformed_packets"] == 1 and ended["detail"]["lost_packets"] == 0


def test_after_a_marker_inside_a_picture_a_malformed_datagram_is_a_discontinuity(plan_of, stream10):
    """A source that marks every PES (issue 12 item 1): once a marker is seen inside a picture,
    a malformed datagram after a marked packet may have been the rest of that picture: it is a
    discontinuity (no truncated picture crosses), still counted malformed, not lost."""
    src = gb28181.make_source(None, "h264", seconds=0.4)
    frames = gb28181.access_units(src, "h264")
    packets = marked_per_pes(src, False)
    # the last PES of picture 3 (a continuation, without a PTS) arrives malformed
    starts = [i for i, d in enumerate(packets) if b"\x00\x00\x01\xba" in d[12:20]]
    last_of_3 = starts[4] - 1
    assert last_of_3 - 1 > starts[3]                          # picture 3 has more than one PES
    sent = damaged(packets, last_of_3)
    lane = lane_of(plan_of())
    work = run(lane, sent)
    source = pictures(frames)
    crossed = [tuple(o.access_unit.nal_units) for o in sealed(work)]
    assert crossed == source[:3]                              # pictures 0-2 whole, then a keyframe wait
    [ended] = records(work, "stream_ended")
    assert ended["detail"]["malformed_packets"] == 1 and ended["detail"]["lost_packets"] == 0


def test_a_malformed_datagram_in_place_of_a_pictures_first_packet_is_a_discontinuity(plan_of, stream10):
    """Right after a marked packet, but it was the first packet of the next picture (its pack
    and PES header): the rest of that picture has no start, so the picture is gone and the
    stream waits for a keyframe; later pictures never cross without the one they follow."""
    packets, frames = stream10
    ends = [i for i, d in enumerate(packets) if d[1] & 0x80]
    first_of_4 = ends[3] + 1
    assert ends[4] > first_of_4                                   # picture 4 has more than one packet
    sent = damaged(packets, first_of_4)
    lane = lane_of(plan_of())
    work = run(lane, sent)
    source = pictures(frames)
    assert [tuple(o.access_unit.nal_units) for o in sealed(work)] == source[:4]
    [ended] = records(work, "stream_ended")
    assert ended["detail"]["malformed_packets"] == 1 and ended["detail"]["lost_packets"] == 0


def test_malformed_datagrams_in_place_of_a_whole_picture_are_a_discontinuity(plan_of, stream10):
    """Every packet of picture 4 arrives malformed: right after a marked packet, with a timestamp
    of their own, and the packet after them has another timestamp: nothing after them starts
    that picture over, so it is gone and the stream waits for a keyframe; picture 5, which
    needs it, never crosses. Counted malformed, not lost."""
    packets, frames = stream10
    ends = [i for i, d in enumerate(packets) if d[1] & 0x80]
    first, last = ends[3] + 1, ends[4]
    sent = list(packets)
    for i in range(first, last + 1):
        p = parse_rtp(packets[i])
        sent[i] = malformed("cc15-without-csrcs", p.sequence, p.timestamp)
    lane = lane_of(plan_of())
    work = run(lane, sent)
    source = pictures(frames)
    assert [tuple(o.access_unit.nal_units) for o in sealed(work)] == source[:4]
    [ended] = records(work, "stream_ended")
    assert ended["detail"]["malformed_packets"] == last + 1 - first and ended["detail"]["lost_packets"] == 0


def test_a_malformed_last_datagram_is_a_discontinuity(plan_of, stream10):
    """The stream's last packet arrives malformed: nothing after it shows what it held; what
    crosses is still whole pictures of the source, in order."""
    packets, frames = stream10
    sent = damaged(packets, len(packets) - 1)
    lane = lane_of(plan_of())
    work = run(lane, sent)
    source = pictures(frames)
    crossed = [tuple(o.access_unit.nal_units) for o in sealed(work)]
    assert crossed == source[:len(crossed)] and len(crossed) >= 8
    [ended] = records(work, "stream_ended")
    assert ended["detail"]["malformed_packets"] == 1 and ended["detail"]["lost_packets"] == 0


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(st.tuples(st.integers(1, 10_000), st.sampled_from([k for k, _ in KINDS]),
                              st.sampled_from(["insert", "replace"])), min_size=1, max_size=4),
       per_pes=st.booleans())
def test_malformed_datagrams_anywhere_never_let_a_damaged_picture_cross(plan_of, stream10, ops, per_pes):
    """Malformed datagrams inserted or in place of any packets (but the first), in a camera's
    RTP/PS or in one marking every PES (issue 12 item 1): what crosses is the source's pictures,
    whole, in order, each after the one it follows (one IDR: a prefix of the source), and each
    malformed datagram is counted once as malformed (never as lost). A datagram in place of a
    packet keeps that packet's RTP timestamp (a damaged header, not a forged one)."""
    packets, frames = stream10
    if per_pes:
        packets = marked_per_pes(gb28181.make_source(None, "h264", seconds=0.4), False)
    sent = list(packets)
    for pos, kind, mode in ops:      # never the last packet: a loss at the very end shows nowhere
        i = 1 + pos % (len(sent) - 2)
        ref = next((parse_rtp(d) for d in sent[i:] if len(d) >= 12 and d[0] == 0x80), None)
        assert ref is not None
        bad = malformed(kind, ref.sequence, ref.timestamp)
        sent = sent[:i] + [bad] + sent[i + (mode == "replace"):]
    lane = lane_of(plan_of())
    work = run(lane, sent)
    source = pictures(frames)
    crossed = [tuple(o.access_unit.nal_units) for o in sealed(work)]
    assert crossed == source[:len(crossed)]
    [ended] = records(work, "stream_ended")
    refused = 0
    for d in sent:
        try:
            parse_rtp(d)
        except CodecError:
            refused += 1
    assert ended["detail"]["malformed_packets"] == refused >= 1
