"""Feed-cut invariance: a stateful parser's output does not depend on where its input is cut.

Issue 15 item 3. A stream-unit parser (PS demuxer, RFC 4571 deframer, Annex B splitter, the
byte-stream access-unit assembler) is fed the same bytes whole and in random pieces; the
outputs, as plain values, must be equal once the pieces the API documents as cut-dependent
are joined (the `continued` pieces of an unbounded video PES, the running "no start code"
and resynchronisation counts). The RTP depacketisers take whole packets, so their "cut" is
different: see the depacketiser section.
"""

from __future__ import annotations

from ferry.codecs.mpeg_ps import (
    AudioPes, PsDemuxer, PsMuxer, Skipped, StreamInfo, VideoPes, _ts_bytes, pack_header,
)
from ferry.codecs.nal import join_annexb

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
