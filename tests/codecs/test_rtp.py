"""RTP packets (RFC 3550 §5.1): every field, every edge, a cross-check against scapy, and fuzzing."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.rtp import RTP, RTPExtension
from scapy.packet import Raw

from ferry.codecs.errors import CodecError, FramingError, RtpError
from ferry.codecs.rtp import RtpPacketWriter, build_rtp, parse_rtp

# RFC 3550 §5.1 fixed header, written out by hand: V=2 P=0 X=0 CC=0 | M=1 PT=96 | seq | ts | SSRC
HAND = bytes.fromhex("80e0 1234 0001e240 deadbeef") + b"payload"


def test_fixed_header_fields_by_hand() -> None:
    p = parse_rtp(HAND)
    assert (p.version, p.padding, p.marker, p.payload_type) == (2, 0, True, 96)
    assert (p.sequence, p.timestamp, p.ssrc) == (0x1234, 123456, 0xDEADBEEF)
    assert p.csrcs == () and p.extension is None
    assert p.payload == b"payload"
    assert build_rtp(96, 0x1234, 123456, 0xDEADBEEF, b"payload", marker=True) == HAND


def test_marker_clear_and_payload_type_bits() -> None:
    data = bytearray(HAND)
    data[1] = 0x7F  # M=0, PT=127
    p = parse_rtp(bytes(data))
    assert p.marker is False and p.payload_type == 127


def test_payload_is_a_view_not_a_copy() -> None:
    data = bytes(HAND)
    p = parse_rtp(data)
    assert isinstance(p.payload, memoryview) and p.payload.readonly
    assert p.payload.obj is data  # no copy of the payload was made


def test_csrcs_extension_padding_together() -> None:
    data = build_rtp(8, 65535, 0xFFFFFFFF, 0, b"xyz", csrcs=(1, 0xFFFFFFFF, 3),
                     extension=(0xBEDE, b"\x10\xaa\x00\x00"), padding=5)
    b0 = data[0]
    assert b0 == 0x80 | 0x20 | 0x10 | 3
    assert len(data) == 12 + 12 + 4 + 4 + 3 + 5
    assert data[-1] == 5 and data[-5:-1] == bytes(4)
    p = parse_rtp(data)
    assert p.csrcs == (1, 0xFFFFFFFF, 3)
    assert p.extension == (0xBEDE, b"\x10\xaa\x00\x00")
    assert p.padding == 5 and p.payload == b"xyz"
    assert p.to_bytes() == data


def test_empty_payload_and_empty_extension() -> None:
    p = parse_rtp(build_rtp(0, 1, 2, 3, b"", extension=(7, b"")))
    assert p.payload == b"" and p.extension == (7, b"")


def test_padding_may_take_everything_after_the_header() -> None:
    data = build_rtp(96, 1, 2, 3, b"", padding=4)
    p = parse_rtp(data)
    assert p.padding == 4 and p.payload == b""


@pytest.mark.parametrize("data,reason", [
    (b"", "shorter"),
    (HAND[:11], "shorter"),
    (bytes((0x40,)) + HAND[1:], "version 1"),
    (bytes((0x00,)) + HAND[1:], "version 0"),
    (bytes((0xC0,)) + HAND[1:], "version 3"),
    (bytes((0x81,)) + HAND[1:12], "CSRC"),  # CC=1 but no room
    (bytes((0x8F,)) + HAND[1:12] + bytes(59), "CSRC"),  # CC=15 needs 60 bytes
    (bytes((0x90,)) + HAND[1:12] + b"\x00\x00", "extension"),  # X but no extension header
    (bytes((0x90,)) + HAND[1:12] + b"\x00\x00\x00\x02" + bytes(7), "extension"),  # 2 words, 7 bytes
    (bytes((0xA0,)) + HAND[1:12] + b"ab\x00", "padding count 0"),
    (bytes((0xA0,)) + HAND[1:12] + b"ab\x04", "padding count 4"),  # only 3 bytes after header
], ids=lambda v: v if isinstance(v, str) else None)
def test_malformed_packets_are_refused(data: bytes, reason: str) -> None:
    with pytest.raises(RtpError):
        parse_rtp(data)


def test_build_refuses_out_of_range_fields() -> None:
    for kwargs in (dict(payload_type=128), dict(sequence=65536), dict(timestamp=-1), dict(ssrc=1 << 32)):
        args = dict(payload_type=96, sequence=0, timestamp=0, ssrc=0) | kwargs
        with pytest.raises(RtpError):
            build_rtp(args["payload_type"], args["sequence"], args["timestamp"], args["ssrc"], b"")
    with pytest.raises(RtpError):
        build_rtp(96, 0, 0, 0, b"", csrcs=tuple(range(16)))
    with pytest.raises(RtpError):
        build_rtp(96, 0, 0, 0, b"", extension=(1, b"abc"))  # not a multiple of 4
    with pytest.raises(RtpError):
        build_rtp(96, 0, 0, 0, b"", padding=256)
    with pytest.raises(RtpError):
        build_rtp(96, 0, 0, 0, b"", csrcs=(1 << 32,))


def test_writer_numbers_packets_and_marks_the_last() -> None:
    w = RtpPacketWriter(96, 0xABCD, sequence=65534)
    packets = [parse_rtp(d) for d in w.write([b"a", b"b", b"c"], 90000)]
    assert [p.sequence for p in packets] == [65534, 65535, 0]
    assert [p.marker for p in packets] == [False, False, True]
    assert {p.timestamp for p in packets} == {90000} and {p.ssrc for p in packets} == {0xABCD}
    assert w.sequence == 1
    assert [p.marker for p in map(parse_rtp, w.write([b"d"], 1, marker_last=False))] == [False]


# --- property tests --------------------------------------------------------------------------

headers = st.fixed_dictionaries({
    "payload_type": st.integers(0, 127),
    "sequence": st.integers(0, 0xFFFF),
    "timestamp": st.integers(0, 0xFFFFFFFF),
    "ssrc": st.integers(0, 0xFFFFFFFF),
    "marker": st.booleans(),
    "csrcs": st.lists(st.integers(0, 0xFFFFFFFF), max_size=15).map(tuple),
    "extension": st.none() | st.tuples(st.integers(0, 0xFFFF),
                                       st.lists(st.binary(min_size=4, max_size=4), max_size=4).map(b"".join)),
    "payload": st.binary(max_size=64),
    "padding": st.integers(0, 255),
})


@settings(max_examples=300, deadline=None)
@given(headers)
def test_build_parse_round_trip(h: dict) -> None:
    data = build_rtp(h["payload_type"], h["sequence"], h["timestamp"], h["ssrc"], h["payload"],
                     marker=h["marker"], csrcs=h["csrcs"], extension=h["extension"], padding=h["padding"])
    p = parse_rtp(data)
    assert (p.payload_type, p.sequence, p.timestamp, p.ssrc, p.marker) == \
        (h["payload_type"], h["sequence"], h["timestamp"], h["ssrc"], h["marker"])
    assert p.csrcs == h["csrcs"] and p.extension == h["extension"] and p.padding == h["padding"]
    assert p.payload == h["payload"]
    assert p.to_bytes() == data


@settings(max_examples=300, deadline=None)
@given(headers)
def test_agrees_with_scapy(h: dict) -> None:
    """Our bytes dissected by scapy, and scapy's bytes parsed by us, give the same fields."""
    data = build_rtp(h["payload_type"], h["sequence"], h["timestamp"], h["ssrc"], h["payload"],
                     marker=h["marker"], csrcs=h["csrcs"], extension=h["extension"], padding=h["padding"])
    s = RTP(data)
    assert (s.version, s.padding, s.extension) == (2, int(h["padding"] > 0), int(h["extension"] is not None))
    assert (s.marker, s.payload_type, s.sequence) == (int(h["marker"]), h["payload_type"], h["sequence"])
    assert (s.timestamp, s.sourcesync, list(s.sync)) == (h["timestamp"], h["ssrc"], list(h["csrcs"]))
    tail = h["payload"] + (bytes(h["padding"] - 1) + bytes((h["padding"],)) if h["padding"] else b"")
    if h["extension"] is not None:
        ext = s[RTPExtension]
        profile, ext_bytes = h["extension"]
        assert ext.header_id == profile and ext.header_len == len(ext_bytes) // 4
        assert b"".join(struct.pack("!I", w) for w in ext.header) == ext_bytes
    assert (bytes(s[Raw].load) if s.haslayer(Raw) else b"") == tail  # scapy leaves padding in the load

    crafted = RTP(version=2, padding=0, extension=0, marker=int(h["marker"]), payload_type=h["payload_type"],
                  sequence=h["sequence"], timestamp=h["timestamp"], sourcesync=h["ssrc"],
                  sync=list(h["csrcs"]), numsync=len(h["csrcs"])) / Raw(h["payload"])
    p = parse_rtp(bytes(crafted))
    assert (p.marker, p.payload_type, p.sequence, p.timestamp, p.ssrc, p.csrcs) == \
        (h["marker"], h["payload_type"], h["sequence"], h["timestamp"], h["ssrc"], h["csrcs"])
    assert p.payload == h["payload"]


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_parse_or_raise_codec_error(data: bytes) -> None:
    try:
        p = parse_rtp(data)
    except CodecError:
        return
    assert p.version == 2 and len(p.payload) + p.padding <= len(data) - 12
    assert p.to_bytes() == data or data[0] & 0x20  # exact unless padding octets were not zeros


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=12, max_size=80).map(lambda b: bytes((0x80 | (b[0] & 0x3F),)) + b[1:]))
def test_version_2_bytes_parse_or_raise_codec_error(data: bytes) -> None:
    """Half the arbitrary inputs above die on the version; these reach the CSRC/extension/padding checks."""
    try:
        p = parse_rtp(bytearray(data))
    except CodecError:
        return
    assert 12 + 4 * len(p.csrcs) <= len(data)


def test_one_error_family() -> None:
    assert issubclass(RtpError, CodecError) and issubclass(FramingError, CodecError)
    assert not issubclass(CodecError, (ValueError, KeyError, IndexError))  # nothing generic is caught by it
