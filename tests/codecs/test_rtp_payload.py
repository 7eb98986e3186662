"""RFC 6184 (H.264) and RFC 7798 (H.265) packetization: layouts by hand, loss handling, bounds,
round trips for random NAL units and payload sizes, and fuzzing of the depacketizers."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ferry.codecs import rtp_h264, rtp_h265
from ferry.codecs.errors import CodecError, RtpError
from ferry.codecs.rtp import RtpPacket, RtpPacketWriter, build_rtp, parse_rtp
from ferry.codecs.rtp_h264 import H264Depacketizer
from ferry.codecs.rtp_h265 import H265Depacketizer
from ferry.codecs.rtp_payload import Dropped, RtpAccessUnit

IDR = bytes((0x65,)) + bytes(range(256)) * 4  # nal_ref_idc 3, type 5, 1025 bytes
SPS = bytes((0x67, 0x42, 0x00, 0x1E))
PPS = bytes((0x68, 0xCE, 0x38, 0x80))
H265_IDR = bytes((0x26, 0x01)) + bytes(range(256)) * 4  # type 19 (IDR_W_RADL), TID 1
H265_VPS = bytes((0x40, 0x01, 0x0C, 0x01))
H265_SPS = bytes((0x42, 0x01, 0x01, 0x01))


def packets(payloads: list[bytes], ts: int = 3600, seq: int = 0, marker: bool = True) -> list[RtpPacket]:
    return [parse_rtp(d) for d in RtpPacketWriter(96, 7, seq).write(payloads, ts, marker_last=marker)]


def run(dep, pkts: list[RtpPacket], flush: bool = False) -> list:
    out = [e for p in pkts for e in dep.push(p)]
    return out + dep.flush() if flush else out


# --- H.264 packetizer (RFC 6184) -------------------------------------------------------------

def test_h264_small_nal_units_go_alone() -> None:
    assert rtp_h264.packetize([SPS, PPS], 1400) == [SPS, PPS]


def test_h264_fu_a_layout() -> None:
    out = rtp_h264.packetize([IDR], 500)
    body = IDR[1:]
    assert [len(p) for p in out] == [500, 500, 2 + len(body) - 2 * 498]
    # FU indicator: F|NRI from the NAL (0x60) + type 28; FU header: S/E bits + type 5 (§5.8)
    assert [p[:2] for p in out] == [b"\x7c\x85", b"\x7c\x05", b"\x7c\x45"]
    assert b"".join(p[2:] for p in out) == body


def test_h264_stap_a_layout() -> None:
    out = rtp_h264.packetize([SPS, PPS, IDR], 1000, aggregate=True)
    # STAP-A header F=0, NRI=3 (the highest), type 24; then 16-bit sizes (§5.7.1)
    assert out[0] == b"\x78" + b"\x00\x04" + SPS + b"\x00\x04" + PPS
    assert [p[0] & 0x1F for p in out[1:]] == [28, 28]  # the IDR does not fit: FU-A
    sei = bytes((0x06, 0x05, 0x01, 0x80))
    out = rtp_h264.packetize([sei, IDR[:100], SPS], 1000, aggregate=True)
    assert out == [b"\x78\x00\x04" + sei + b"\x00\x64" + IDR[:100] + b"\x00\x04" + SPS]


def test_h264_packetizer_refuses_what_would_be_misread() -> None:
    for bad in (b"", b"\x00abc", b"\x18abc", b"\x1cabc", b"\x80abc"):  # empty, type 0, STAP-A, FU-A, F
        with pytest.raises(RtpError):
            rtp_h264.packetize([bad])
    with pytest.raises(RtpError):
        rtp_h264.packetize([SPS], 2)


# --- H.264 depacketizer ----------------------------------------------------------------------

def test_h264_access_unit_ends_at_the_marker() -> None:
    dep = H264Depacketizer()
    events = run(dep, packets(rtp_h264.packetize([SPS, PPS, IDR], 300), ts=9000))
    assert events == [RtpAccessUnit(9000, (SPS, PPS, IDR), lossy=False, marker=True)]


def test_h264_timestamp_change_closes_an_unmarked_access_unit() -> None:
    dep = H264Depacketizer()
    first = packets([SPS, PPS], ts=1, seq=0, marker=False)
    second = packets([IDR[:50]], ts=2, seq=2)
    events = run(dep, first + second)
    assert events == [RtpAccessUnit(1, (SPS, PPS), False, False), RtpAccessUnit(2, (IDR[:50],), False, True)]


def test_h264_fu_with_a_missing_middle_is_dropped_with_a_reason() -> None:
    dep = H264Depacketizer()
    fus = packets(rtp_h264.packetize([SPS, IDR], 300), ts=5)  # SPS + 4 FU-A fragments
    events = run(dep, fus[:2] + fus[3:])  # lose the second fragment
    drops = [e for e in events if isinstance(e, Dropped)]
    assert len(drops) == 1 and "lost a fragment" in drops[0].reason and drops[0].sequence == 3
    (au,) = [e for e in events if isinstance(e, RtpAccessUnit)]
    assert au.nal_units == (SPS,) and au.lossy  # the IDR is gone, the AU says so
    assert dep.dropped >= 1


def test_h264_fu_without_start_or_without_end() -> None:
    fus = rtp_h264.packetize([IDR], 300)
    dep = H264Depacketizer()
    events = run(dep, packets(fus[1:], ts=1))  # start missing (first packet of the stream)
    assert {e.reason for e in events if isinstance(e, Dropped)} == {"fragment without a start"}
    assert not [e for e in events if isinstance(e, RtpAccessUnit)]
    dep = H264Depacketizer()
    events = run(dep, packets(fus[:-1] + [SPS], ts=1))  # end missing, then a single NAL unit
    assert [e.reason for e in events if isinstance(e, Dropped)] == ["fragmented NAL unit without its end"]
    assert [e.nal_units for e in events if isinstance(e, RtpAccessUnit)] == [(SPS,)]


def test_h264_access_unit_after_a_gap_is_lossy() -> None:
    dep = H264Depacketizer()
    run(dep, packets([SPS], ts=1, seq=0))
    (au,) = run(dep, packets([PPS], ts=2, seq=5))
    assert au.lossy and au.nal_units == (PPS,)
    (au,) = run(dep, packets([PPS], ts=3, seq=6))
    assert not au.lossy


@pytest.mark.parametrize("payload,reason", [
    (b"", "empty"),
    (b"\x85\x00", "forbidden_zero_bit"),
    (b"\x00\x11", "reserved"),
    (b"\x1e\x11", "reserved"),
    (b"\x19\x00\x00", "STAP-B"),
    (b"\x1a\x00", "MTAP16"),
    (b"\x1b\x00", "MTAP24"),
    (b"\x1d\x80", "FU-B"),
    (b"\x18", "without NAL units"),
    (b"\x18\x00", "truncated"),
    (b"\x18\x00\x05\x67\x42", "does not fit"),
    (b"\x18\x00\x00", "does not fit"),
    (b"\x18\x00\x02\x7c\x00", "header"),  # a FU-A inside a STAP-A
    (b"\x7c\x85", "without a fragment"),
    (b"\x7c\xc5\x00", "both start and end"),
    (b"\x7c\x98\x00", "NAL unit type 24"),
])
def test_h264_malformed_payloads_are_dropped_with_a_reason(payload: bytes, reason: str) -> None:
    dep = H264Depacketizer()
    events = run(dep, packets([payload]))
    assert len(events) == 1 and isinstance(events[0], Dropped) and reason in events[0].reason


def test_depacketizer_bounds_the_access_unit() -> None:
    dep = H264Depacketizer(max_bytes=2000, max_nals=4)
    events = run(dep, packets(rtp_h264.packetize([IDR, IDR, IDR], 400), ts=1))  # 3075 bytes
    assert [e.reason for e in events] == ["access unit too large"]  # once, not per packet
    events = run(dep, packets([SPS] * 5, ts=2, seq=100))
    assert [type(e).__name__ for e in events] == ["Dropped"] and dep.access_units == 0
    (au,) = run(dep, packets([SPS, PPS], ts=3, seq=105))  # the next access unit is fine again
    assert au.nal_units == (SPS, PPS)


# --- H.265 (RFC 7798) ------------------------------------------------------------------------

def test_h265_fu_layout() -> None:
    out = rtp_h265.packetize([H265_IDR], 500)
    body = H265_IDR[2:]
    # payload header: type 49 with F/LayerId/TID of the NAL unit; FU header S/E + type 19 (§4.4.3)
    assert [p[:3] for p in out] == [b"\x62\x01\x93", b"\x62\x01\x13", b"\x62\x01\x53"]
    assert b"".join(p[3:] for p in out) == body
    assert max(len(p) for p in out) == 500


def test_h265_ap_layout() -> None:
    out = rtp_h265.packetize([H265_VPS, H265_SPS, H265_IDR], 1000, aggregate=True)
    # AP payload header: type 48, lowest LayerId (0) and TID (1) (§4.4.2)
    assert out[0] == b"\x60\x01" + b"\x00\x04" + H265_VPS + b"\x00\x04" + H265_SPS
    assert [(p[0] >> 1) & 0x3F for p in out[1:]] == [49, 49]
    layered = bytes((0x4E, 0x0B, 0xAA))  # SEI with LayerId 1, TID 3
    out = rtp_h265.packetize([layered, H265_VPS], 1000, aggregate=True)
    assert out == [b"\x60\x01\x00\x03" + layered + b"\x00\x04" + H265_VPS]
    assert rtp_h265.packetize([layered], 1000, aggregate=True) == [layered]  # one unit: no AP


def test_h265_packetizer_refuses_what_would_be_misread() -> None:
    for bad in (b"\x26", b"\x60\x01ab", b"\x62\x01ab", b"\x26\x00ab", b"\xa6\x01ab"):
        with pytest.raises(RtpError):
            rtp_h265.packetize([bad])


def test_h265_round_trip_with_a_lost_fragment() -> None:
    dep = H265Depacketizer()
    pk = packets(rtp_h265.packetize([H265_VPS, H265_SPS, H265_IDR], 300, aggregate=True), ts=77)
    assert run(dep, pk) == [RtpAccessUnit(77, (H265_VPS, H265_SPS, H265_IDR), False, True)]
    events = run(dep, [parse_rtp(build_rtp(96, (p.sequence + 100) & 0xFFFF, 78, 7, p.payload, marker=p.marker))
                       for i, p in enumerate(pk) if i != 2])
    assert [e.reason for e in events if isinstance(e, Dropped)] == ["fragmented NAL unit lost a fragment"]
    (au,) = [e for e in events if isinstance(e, RtpAccessUnit)]
    assert au.nal_units == (H265_VPS, H265_SPS) and au.lossy


@pytest.mark.parametrize("payload,reason", [
    (b"\x26", "shorter"),
    (b"\xa6\x01\x00", "forbidden_zero_bit"),
    (b"\x26\x00\x00", "temporal_id"),
    (b"\x64\x01\x00", "PACI"),
    (b"\x66\x01\x00", "unspecified"),
    (b"\x60\x01", "without NAL units"),
    (b"\x60\x01\x00", "truncated"),
    (b"\x60\x01\x00\x09\x26\x01", "does not fit"),
    (b"\x60\x01\x00\x02\x62\x01", "RTP packet type"),
    (b"\x60\x00\x00\x02\x26\x01", "TID 0"),
    (b"\x62\x01\x93", "without a fragment"),
    (b"\x62\x01\xd3\x00", "both start and end"),
    (b"\x62\x01\xb0\x00", "NAL unit type 48"),
    (b"\x62\x01\x13\x00", "without a start"),
])
def test_h265_malformed_payloads_are_dropped_with_a_reason(payload: bytes, reason: str) -> None:
    dep = H265Depacketizer()
    events = run(dep, packets([payload]))
    assert len(events) == 1 and isinstance(events[0], Dropped) and reason in events[0].reason


# --- property tests --------------------------------------------------------------------------

def h264_nals():
    header = st.sampled_from([0x01, 0x21, 0x41, 0x65, 0x06, 0x67, 0x68, 0x09, 0x0C, 0x17])
    return st.lists(st.tuples(header, st.binary(max_size=3000)).map(lambda t: bytes((t[0],)) + t[1]),
                    min_size=1, max_size=8)


def h265_nals():
    header = st.tuples(st.integers(0, 47), st.integers(0, 63), st.integers(1, 7)).map(
        lambda t: bytes(((t[0] << 1) | (t[1] >> 5), ((t[1] & 0x1F) << 3) | t[2])))
    return st.lists(st.tuples(header, st.binary(max_size=3000)).map(lambda t: t[0] + t[1]),
                    min_size=1, max_size=8)


@settings(max_examples=200, deadline=None)
@given(st.lists(h264_nals(), min_size=1, max_size=4), st.integers(3, 1500), st.booleans(),
       st.integers(0, 0xFFFF))
def test_h264_round_trip(aus: list[list[bytes]], max_payload: int, aggregate: bool, seq: int) -> None:
    writer = RtpPacketWriter(96, 1, seq)
    dep = H264Depacketizer()
    events = []
    for i, au in enumerate(aus):
        payloads = rtp_h264.packetize(au, max_payload, aggregate=aggregate)
        assert all(len(p) <= max_payload for p in payloads)
        for d in writer.write(payloads, i * 3000):
            events += dep.push(parse_rtp(d))
    assert events == [RtpAccessUnit(i * 3000, tuple(au), False, True) for i, au in enumerate(aus)]


@settings(max_examples=200, deadline=None)
@given(st.lists(h265_nals(), min_size=1, max_size=4), st.integers(4, 1500), st.booleans(),
       st.integers(0, 0xFFFF))
def test_h265_round_trip(aus: list[list[bytes]], max_payload: int, aggregate: bool, seq: int) -> None:
    writer = RtpPacketWriter(96, 1, seq)
    dep = H265Depacketizer()
    events = []
    for i, au in enumerate(aus):
        payloads = rtp_h265.packetize(au, max_payload, aggregate=aggregate)
        assert all(len(p) <= max_payload for p in payloads)
        for d in writer.write(payloads, i * 3000):
            events += dep.push(parse_rtp(d))
    assert events == [RtpAccessUnit(i * 3000, tuple(au), False, True) for i, au in enumerate(aus)]


@settings(max_examples=200, deadline=None)
@given(h264_nals(), st.integers(3, 600), st.data())
def test_h264_any_loss_is_either_delivered_intact_or_reported(nals, max_payload, data) -> None:
    """Lose any packets of an access unit between two intact ones: every NAL unit that comes out
    went in, in order, and the access unit (or, if all of it is gone, the next one) is lossy."""
    pk = packets([SPS], ts=0, seq=0) + packets(rtp_h264.packetize(nals, max_payload), ts=1, seq=1)
    pk += packets([PPS], ts=2, seq=len(pk))
    keep = data.draw(st.lists(st.booleans(), min_size=len(pk) - 2, max_size=len(pk) - 2))
    dep = H264Depacketizer()
    events = run(dep, [pk[0]] + [p for p, k in zip(pk[1:-1], keep) if k] + [pk[-1]], flush=True)
    aus = [e for e in events if isinstance(e, RtpAccessUnit)]
    assert aus[0].nal_units == (SPS,) and aus[-1].nal_units == (PPS,)
    middle = aus[1:-1]
    if all(keep):
        assert middle == [RtpAccessUnit(1, tuple(nals), False, True)] and not aus[-1].lossy
        return
    assert len(middle) <= 1
    for au in middle:
        assert au.lossy
        it = iter(nals)
        assert all(any(n == m for m in it) for n in au.nal_units)  # an ordered subsequence
    assert middle or aus[-1].lossy
    assert not [e for e in events if isinstance(e, Dropped) and "too large" in e.reason]


def _fuzz(dep, chunks: list[tuple[bytes, int, int, bool]]) -> None:
    for payload, seq, ts, marker in chunks:
        for e in dep.push(parse_rtp(build_rtp(96, seq, ts, 1, payload, marker=marker))):
            if isinstance(e, RtpAccessUnit):
                assert 0 < len(e.nal_units) <= dep.max_nals
                assert sum(map(len, e.nal_units)) <= dep.max_bytes
            else:
                assert e.reason
    for e in dep.flush():
        assert isinstance(e, (RtpAccessUnit, Dropped))


fuzz_packets = st.lists(st.tuples(st.binary(max_size=40), st.integers(0, 5), st.integers(0, 2), st.booleans()),
                        max_size=30)


@settings(max_examples=400, deadline=None)
@given(fuzz_packets)
def test_h264_depacketizer_on_arbitrary_payloads(chunks) -> None:
    try:
        _fuzz(H264Depacketizer(max_bytes=100, max_nals=5), chunks)
    except CodecError:
        pass


@settings(max_examples=400, deadline=None)
@given(fuzz_packets)
def test_h265_depacketizer_on_arbitrary_payloads(chunks) -> None:
    try:
        _fuzz(H265Depacketizer(max_bytes=100, max_nals=5), chunks)
    except CodecError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([0x7C, 0x78, 0x62, 0x60, 0x65]), st.integers(0, 255),
                          st.binary(max_size=20)), max_size=30))
def test_fragment_and_aggregate_headers_fuzzed(chunks) -> None:
    """Arbitrary bytes rarely look like FU/STAP; these start with their headers."""
    for dep in (H264Depacketizer(max_bytes=200, max_nals=5), H265Depacketizer(max_bytes=200, max_nals=5)):
        _fuzz(dep, [(bytes((h, b)) + rest, i & 0xFFFF, i // 4, i % 4 == 3)
                    for i, (h, b, rest) in enumerate(chunks)])
