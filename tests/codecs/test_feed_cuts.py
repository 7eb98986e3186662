"""Feed-cut invariance: a stateful parser's output does not depend on where its input is cut.

Issue 15 item 3. A stream-unit parser (PS demuxer, RFC 4571 deframer, Annex B splitter, the
byte-stream access-unit assembler) is fed the same bytes whole and in random pieces; the
outputs, as plain values, must be equal once the pieces the API documents as cut-dependent
are joined (the `continued` pieces of an unbounded video PES, the running "no start code"
and resynchronisation counts). The RTP depacketisers take whole packets, so their "cut" is
different: see the depacketiser section.
"""

from __future__ import annotations

import dataclasses
import shutil

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import gb28181
from ferry.codecs import rfc4571
from ferry.codecs.access_unit import ByteStreamAssembler
from ferry.codecs.mpeg_ps import (
    AudioPes, PsDemuxer, PsMuxer, Skipped, StreamInfo, VideoPes, _ts_bytes, pack_header,
)
from ferry.codecs.errors import CodecError
from ferry.codecs.nal import AnnexBSplitter, join_annexb
from ferry.codecs.rtp import build_rtp, parse_rtp
from ferry.codecs.rtp_h264 import H264Depacketizer, packetize as packetize_h264
from ferry.codecs.rtp_h265 import H265Depacketizer, packetize as packetize_h265

# moderate example counts: these run beside other suites on two cores
CUTS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                          HealthCheck.data_too_large])

SPS = bytes.fromhex("6764001eacd940a02ff97011000003000100000300320f162d96")
PPS = bytes.fromhex("68ebe3cb22c0")
IDR = b"\x65\x88\x84\x00\x33" + bytes(range(1, 250)) * 4
SLICE = b"\x41\x9a\x02\x11" + bytes(range(1, 200))


def feed_pieces(feed, data: bytes, cuts) -> list:
    """Feed `data` cut at the sorted offsets `cuts`; the concatenated outputs."""
    out = []
    prev = 0
    for c in [*sorted(set(cuts)), len(data)]:
        if prev <= c <= len(data):
            out += feed(data[prev:c])
            prev = c
    return out


# --- MPEG-2 program stream --------------------------------------------------------
def ps_values(events) -> tuple[list[tuple], list[tuple]]:
    """(payload and skip events, stream infos) as plain tuples, cut-dependent pieces joined.

    The pieces of an unbounded video PES (`continued`) join the PES they continue; adjacent
    "no start code" skips add up (they are reported every 64 KiB of garbage per feed). A
    sniffed StreamInfo follows the piece that let the codec be seen, so infos are compared as
    their own sequence.
    """
    out: list[tuple] = []
    infos: list[tuple] = []
    for e in events:
        if isinstance(e, StreamInfo):
            infos.append((e.stream_id, e.stream_type, e.codec, e.source))
        elif isinstance(e, VideoPes) and e.continued and out and out[-1][0] == "video" and out[-1][1] == e.stream_id:
            out[-1] = (*out[-1][:4], out[-1][4] + e.data)
        elif isinstance(e, VideoPes):
            out.append(("video", e.stream_id, e.pts, e.dts, e.data))
        elif isinstance(e, AudioPes):
            out.append(("audio", e.stream_id, e.pts, e.dts, e.data))
        elif isinstance(e, Skipped) and e.reason == "no start code" and out and out[-1][:2] == ("skipped", e.reason):
            out[-1] = ("skipped", e.reason, out[-1][2] + e.nbytes)
        else:
            assert isinstance(e, Skipped)
            out.append(("skipped", e.reason, e.nbytes))
    return out, infos


def ps_run(data: bytes, cuts=()) -> tuple[list[tuple], list[tuple]]:
    d = PsDemuxer()
    return ps_values(feed_pieces(d.feed, data, cuts) + d.flush())


def unbounded_pes_with_stuffing(es: bytes, pts: int, stuffing: int = 200) -> bytes:
    """A video PES of length 0 whose MPEG-2 header carries `stuffing` 0xFF bytes after its PTS."""
    header = b"\x80\x80" + bytes((5 + stuffing,)) + _ts_bytes(2, pts) + b"\xff" * stuffing
    return b"\x00\x00\x01\xe0\x00\x00" + header + es


def test_unbounded_pes_with_header_stuffing_cut_anywhere_in_its_header():
    """Regression (issue 15 item 3): cut inside the PES header, the payload began with header bytes."""
    es = join_annexb([SPS, PPS, IDR])
    for psm in (b"", PsMuxer("h264").program_stream_map()):
        head = pack_header(3600, 50_000) + psm
        pes = unbounded_pes_with_stuffing(es, 3600)
        data = head + pes + PsMuxer("h264").video([SLICE], 7200)
        whole = ps_run(data)
        assert whole[0][0] == ("video", 0xE0, 3600, 3600, es)
        header_end = len(head) + 6 + 3 + 5 + 200
        for cut in range(len(head), header_end + 1):
            assert ps_run(data, [cut]) == whole, cut


def test_codec_of_an_unbounded_pes_is_sniffed_wherever_its_parameter_sets_are_cut():
    """Found by the property test below: a sniffed codec depended on the pieces of an unbounded PES
    (an SPS cut in two was never seen). The info must also come before the piece with the SPS,
    which the video lane would otherwise skip as of an unknown codec."""
    es = join_annexb([SPS, PPS, IDR])
    head = pack_header(3600, 50_000)
    data = head + unbounded_pes_with_stuffing(es, 3600, 0) + PsMuxer("h264").video([SLICE], 7200)
    whole = ps_run(data)
    assert whole[1] == [(0xE0, None, "h264", "sniffed")]
    start = len(head) + 14
    for cut in range(start, start + 4 + len(SPS) + 4):
        assert ps_run(data, [cut]) == whole, cut
    assert ps_run(data, range(len(data))) == whole  # byte by byte
    d = PsDemuxer()
    events = feed_pieces(d.feed, data, range(start + 10))
    info = next(k for k, e in enumerate(events) if isinstance(e, StreamInfo))
    before = b"".join(e.data for e in events[:info] if isinstance(e, VideoPes))
    assert before.strip(b"\x00") == b"", before  # at most the zero_byte of the SPS's start code


def cuts_of(data: st.DataObject, n: int) -> list[int]:
    """Random cut offsets into n bytes: a few anywhere, sometimes byte by byte over a stretch."""
    if n == 0:
        return []
    cuts = data.draw(st.lists(st.integers(0, n), max_size=40), label="cuts")
    if data.draw(st.booleans(), label="byte by byte stretch"):
        a = data.draw(st.integers(0, n), label="stretch at")
        cuts += range(a, min(n, a + 300))
    return cuts


def mutate(data: st.DataObject, seed: bytes, most: int = 6) -> bytes:
    """Overwrite, insert or delete a few bytes (start codes among the candidates)."""
    b = bytearray(seed)
    for _ in range(data.draw(st.integers(0, most), label="mutations")):
        i = data.draw(st.integers(0, len(b)), label="at")
        op = data.draw(st.sampled_from(["set", "insert", "delete", "start code"]), label="op")
        if op == "set" and i < len(b):
            b[i] = data.draw(st.integers(0, 255), label="byte")
        elif op == "insert":
            b[i:i] = data.draw(st.binary(min_size=1, max_size=40), label="inserted")
        elif op == "delete":
            del b[i:i + data.draw(st.integers(1, 300), label="deleted")]
        elif op == "start code":
            code = data.draw(st.sampled_from([0xBA, 0xBB, 0xBC, 0xBE, 0xE0, 0xC0, 0xB9, 0x67, 0x41]), label="code")
            b[i:i] = b"\x00\x00\x01" + bytes((code,))
    return bytes(b)


# --- the PS demuxer: realistic GB/T 28181 streams, field variants, mutations ---------
def _muxed_variants() -> list[bytes]:
    m = PsMuxer("h264", "g711a")
    gb = (m.video([SPS, PPS, IDR], 3600, 0, keyframe=True) + m.audio(b"\xd5" * 160, 3600)
          + m.video([SLICE], 7200) + b"\x00\x00\x01\xbe\x00\x0a" + b"\xff" * 10 + m.video([SLICE], 10800))
    unbounded = (pack_header(0, 50_000) + unbounded_pes_with_stuffing(join_annexb([SPS, PPS, IDR]), 0, 37)
                 + pack_header(3600, 50_000) + unbounded_pes_with_stuffing(join_annexb([SLICE]), 3600, 0))
    mpeg1 = (b"\x00\x00\x01\xba\x21\x00\x01\x00\x01\xc3\x33\x67"
             + b"\x00\x00\x01\xe0" + (9 + len(join_annexb([SPS, PPS]))).to_bytes(2, "big")
             + b"\xff\xff\x40\x20" + _ts_bytes(2, 90) + join_annexb([SPS, PPS]) + b"\x00\x00\x01\xb9")
    big = PsMuxer("h264").video([SPS, PPS, b"\x65\x88" + b"\x11" * 70_000], 0, keyframe=True)
    return [gb, unbounded, mpeg1, b"garbage\x00\x00" * 30 + gb[:700] + gb, big]


_MUXED = _muxed_variants()


@pytest.fixture(scope="module")
def camera_ps() -> list[bytes]:
    """The test camera's RTP/PS (tests/support/gb28181.py), both codecs, as program streams."""
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg not installed")
    out = []
    for codec in ("h264", "h265"):
        src = gb28181.make_source(None, codec, size="320x180", seconds=1, gop=10)
        ps = gb28181.ps_stream(gb28181.ps_packets(src, codec, ssrc=0x0BEBC201))
        out.append(ps[:60_000])
    return out


@CUTS
@given(st.data())
def test_ps_demuxer_cut_anywhere_on_camera_streams(camera_ps, data):
    ps = data.draw(st.sampled_from(camera_ps), label="camera stream")
    if data.draw(st.booleans(), label="mutated"):
        ps = mutate(data, ps)
    assert ps_run(ps, cuts_of(data, len(ps))) == ps_run(ps)


@CUTS
@given(st.data())
def test_ps_demuxer_cut_anywhere_on_field_variants_and_mutations(data):
    ps = mutate(data, data.draw(st.sampled_from(_MUXED), label="stream"), 10)
    assert ps_run(ps, cuts_of(data, len(ps))) == ps_run(ps)


@CUTS
@given(st.binary(max_size=600), st.data())
def test_ps_demuxer_cut_anywhere_on_arbitrary_bytes(ps, data):
    assert ps_run(ps, cuts_of(data, len(ps))) == ps_run(ps)


# --- RFC 4571 deframer ----------------------------------------------------------------
def deframe(stream: bytes, cuts, **kw) -> tuple[list[tuple], tuple]:
    """Frames and skips (adjacent skips of one reason added up: they are reported when back
    in sync or every max_frame bytes), the error that ended it, and the counters."""
    d = rfc4571.Deframer(**kw)
    out: list[tuple] = []
    error = None

    def receive(piece: bytes) -> list[tuple]:
        d.receive(piece)
        got = []
        while (event := d.next_event()) is not None:
            got.append(event)
        return got

    try:
        events = feed_pieces(receive, stream, cuts)
    except CodecError as exc:  # FramingError: with check off, an oversized length
        events, error = [], str(exc)
    for e in events:
        if isinstance(e, rfc4571.Skipped) and out and out[-1][:2] == ("skipped", e.reason):
            out[-1] = ("skipped", e.reason, out[-1][2] + e.nbytes)
        elif isinstance(e, rfc4571.Skipped):
            out.append(("skipped", e.reason, e.nbytes))
        else:
            out.append(("frame", e.data))
    if error is not None:
        return [], (error,)
    return out, (d.frames, d.skipped_bytes, d.resyncs, d.buffered, d.resynchronising)


def rtp_frames(data: st.DataObject) -> bytes:
    ssrc = data.draw(st.sampled_from([0x1234, 0xBEBC201]), label="ssrc")
    payloads = data.draw(st.lists(st.binary(max_size=120), min_size=1, max_size=12), label="payloads")
    pt = data.draw(st.sampled_from([96, 96, 97]), label="pt")
    return b"".join(rfc4571.frame(build_rtp(pt, i, 3600 * i, ssrc, p, marker=i % 3 == 0))
                    for i, p in enumerate(payloads))


@CUTS
@given(st.data())
def test_rfc4571_deframer_cut_anywhere(data):
    """Fed whole or in pieces (each receive drained): the same frames, skips, error and counters."""
    stream = rtp_frames(data)
    if data.draw(st.booleans(), label="mid-frame start"):
        stream = stream[data.draw(st.integers(0, len(stream)), label="start"):]
    stream = mutate(data, stream)
    kw = data.draw(st.sampled_from([
        {}, {"resync": True}, {"resync": True, "payload_type": 96}, {"payload_type": 96, "ssrc": 0x1234},
        {"resync": True, "payload_type": 96, "ssrc": 0xBEBC201}, {"check": False},
        {"check": False, "max_frame": 100, "max_buffer": 1 << 16}, {"resync": True, "max_frame": 64},
    ]), label="deframer")
    cuts = cuts_of(data, len(stream))
    assert deframe(stream, cuts, **kw) == deframe(stream, (), **kw)


# --- Annex B splitter -------------------------------------------------------------
def split_run(stream: bytes, cuts, max_nal: int) -> tuple[list[tuple[int, bytes]], bool]:
    s = AnnexBSplitter(max_nal)
    try:
        units = feed_pieces(s.feed_located, stream, cuts) + s.flush_located()
    except CodecError:
        return [], True
    return units, False


def test_annexb_unit_longer_than_max_nal_is_refused_wherever_cut():
    """Found while writing the property test below: fed whole, a unit past max_nal passed when
    its end came in the same feed; fed in pieces, the partial unit raised NalError."""
    stream = b"\x00\x00\x01" + b"\x11" * 50 + b"\x00\x00\x01\x22"
    whole = split_run(stream, (), 20)
    assert whole == ([], True)
    for cut in range(len(stream) + 1):
        assert split_run(stream, [cut], 20) == whole, cut
    fits = b"\x00\x00\x01" + b"\x11" * 23 + b"\x00\x00\x01\x22"  # 20 + the 3 bytes of slack
    for cut in range(len(fits) + 1):
        assert split_run(fits, [cut], 20) == ([(0, b"\x11" * 23), (26, b"\x22")], False), cut


annexb = st.lists(st.one_of(st.binary(max_size=30), st.binary(min_size=15, max_size=90), st.sampled_from(
    [b"\x00\x00\x01", b"\x00\x00\x00\x01", b"\x00\x00", b"\x00", b"\x00\x00\x00\x00\x00"])), max_size=40).map(b"".join)


@CUTS
@given(annexb, st.sampled_from([20, 20, 60, 1 << 20]), st.data())
def test_annexb_splitter_cut_anywhere(stream, max_nal, data):
    """The same located units, or a NalError in both runs (a unit longer than max_nal)."""
    cuts = cuts_of(data, len(stream))
    assert split_run(stream, cuts, max_nal) == split_run(stream, (), max_nal)


# --- byte-stream access-unit assembler (fed PES payloads incrementally) -----------
def assemble(pes_list, cuts_per_pes, codec: str = "h264") -> list[tuple]:
    b = ByteStreamAssembler(codec)
    events = []
    for (payload, pts, dts), cuts in zip(pes_list, cuts_per_pes):
        first = True

        def feed(piece: bytes) -> list:
            nonlocal first
            got = b.feed(piece, pts, dts, new_pes=first)
            first = False
            return got
        events += feed_pieces(feed, payload, cuts)
    events += b.flush()
    return [(type(e).__name__, dataclasses.astuple(e)) for e in events]


@CUTS
@given(st.data())
def test_byte_stream_assembler_cut_anywhere_in_a_pes(data):
    """A PES payload fed as one piece or as continuation pieces (new_pes=False): the same events."""
    units = [SPS, PPS, IDR, SLICE, SLICE[:30], b"\x06\x05\x01\x80", b"\x09\xf0"]
    pes_list = []
    for k in range(data.draw(st.integers(1, 5), label="PES count")):
        nals = data.draw(st.lists(st.sampled_from(units), min_size=1, max_size=5), label="nals")
        payload = join_annexb(nals, data.draw(st.sampled_from([b"\x00\x00\x01", b"\x00\x00\x00\x01"])))
        payload = mutate(data, payload, 2)
        pes_list.append((payload, 3600 * k if data.draw(st.booleans(), label="pts") else None, None))
    cuts = [cuts_of(data, len(p)) for p, _, _ in pes_list]
    assert assemble(pes_list, cuts) == assemble(pes_list, [() for _ in pes_list])


# --- RTP depacketisers ------------------------------------------------------------------
# Their unit is a whole packet and `push` takes one: there is no batch to cut. What could still
# make the output depend on how packets are handed over is (a) the caller's buffer: `parse_rtp`
# gives a memoryview into it and a receive loop reuses that buffer for the next datagram, so
# whatever is kept must be copied; (b) the other calls interleaved: `flush()` right after a
# packet with the marker bit (the access unit is closed) must be a no-op. Outputs are compared as
# tuples of the events' fields.
def depacketizer_packets(data: st.DataObject, codec: str) -> list[bytes]:
    packetize = packetize_h264 if codec == "h264" else packetize_h265
    if codec == "h264":
        units = [SPS, PPS, IDR, SLICE, b"\x06\x05\x01\x80"]
    else:
        units = [b"\x40\x01\x0c\x01\xff\xff", b"\x42\x01\x01\x01" + bytes(range(1, 40)),
                 b"\x26\x01" + bytes(range(1, 250)) * 3, b"\x02\x01" + bytes(range(1, 100))]
    packets = []
    seq = 0
    for k in range(data.draw(st.integers(1, 6), label="access units")):
        nals = data.draw(st.lists(st.sampled_from(units), min_size=1, max_size=4), label="nals")
        mtu = data.draw(st.sampled_from([40, 200, 1400]), label="mtu")
        payloads = packetize(nals, mtu, aggregate=data.draw(st.booleans(), label="aggregate"))
        for i, p in enumerate(payloads):
            packets.append(build_rtp(96, seq & 0xFFFF, 3600 * k, 1, p, marker=i == len(payloads) - 1))
            seq += 1
    for _ in range(data.draw(st.integers(0, 4), label="damage")):
        i = data.draw(st.integers(0, len(packets) - 1), label="packet")
        op = data.draw(st.sampled_from(["drop", "flip marker", "byte"]), label="op")
        if op == "drop" and len(packets) > 1:
            del packets[i]
        elif op == "flip marker":
            packets[i] = packets[i][:1] + bytes((packets[i][1] ^ 0x80,)) + packets[i][2:]
        elif len(packets[i]) > 12:
            j = data.draw(st.integers(12, len(packets[i]) - 1), label="at")
            packets[i] = packets[i][:j] + bytes((data.draw(st.integers(0, 255)),)) + packets[i][j + 1:]
    return packets


def depacketize(codec: str, packets: list[bytes], *, reuse_buffer: bool, flush_after_marker: bool) -> list[tuple]:
    d = H264Depacketizer() if codec == "h264" else H265Depacketizer()
    out: list = []
    buf = bytearray(2048)
    for raw in packets:
        if reuse_buffer:  # a receive loop's buffer: overwritten by the next datagram
            buf[:] = b"\xaa" * len(buf)
            buf[:len(raw)] = raw
            packet = parse_rtp(memoryview(buf)[:len(raw)])
        else:
            packet = parse_rtp(bytes(raw))
        out += d.push(packet)
        if flush_after_marker and packet.marker and d.between_access_units():
            assert d.flush() == []     # (a marker inside a fragmented NAL unit closes nothing)
    buf[:] = b"\x55" * len(buf)
    out += d.flush()
    return [(type(e).__name__, dataclasses.astuple(e)) for e in out]


@CUTS
@given(st.sampled_from(["h264", "h265"]), st.data())
def test_rtp_depacketizer_output_does_not_depend_on_the_callers_buffer_or_flushes(codec, data):
    packets = depacketizer_packets(data, codec)
    plain = depacketize(codec, packets, reuse_buffer=False, flush_after_marker=False)
    assert depacketize(codec, packets, reuse_buffer=True, flush_after_marker=False) == plain
    assert depacketize(codec, packets, reuse_buffer=False, flush_after_marker=True) == plain


def test_garbage_before_a_truncated_packet_is_counted_as_garbage_wherever_the_feed_is_cut():
    """Regression (found by the property above in CI): flush() used to count the garbage skipped
    since the last report as part of the truncated packet at the end, so how many bytes were named
    "no start code" and how many "truncated packet" depended on where 64 KiB reports fell."""
    data = b"\x01" * 70_000 + b"\x00\x00\x01"
    whole = ps_run(data)
    assert whole == ([("skipped", "no start code", 70_000), ("skipped", "truncated packet", 3)], [])
    for cut in (1, 65_000, 65_540, 69_999, 70_001):
        assert ps_run(data, [cut]) == whole, cut
    small = b"\x01" * 100 + b"\x00\x00\x01"
    assert ps_run(small) == ([("skipped", "no start code", 100), ("skipped", "truncated packet", 3)], [])
