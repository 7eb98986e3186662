"""MPEG-2 program stream (ISO/IEC 13818-1 §2.5): a tolerant sans-IO demuxer and a GB/T 28181 muxer.

`PsDemuxer.feed(data) -> events` accepts the variants seen in the field (DESIGN §6): MPEG-2
and MPEG-1 pack headers, with or without system header and program stream map (the codec is
then sniffed from the NAL units), any video stream id 0xE0-0xEF, MPEG-1 PES headers, PES
length 0 (unbounded video PES), PES split across feeds, garbage before the first start code.
It never raises: what it cannot use becomes a `Skipped(reason, nbytes)` event. Buffering is
bounded by one PES packet (6 + 65535 bytes) plus the bytes of one feed.

`PsMuxer` writes the GB/T 28181 shape: pack header (+ system header + PSM before key frames,
and before the next pack after the program changed: `set_streams`, a new PSM version), video
PES on 0xE0 with PTS/DTS, audio PES on 0xC0; the same input gives the same bytes. The map lists
every stream the muxer is given (video, and audio if any), from its first PSM on.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass

from ferry import limits
from ferry.codecs.access_unit import AccessUnit, scan_parameter_sets, sniff_codec
from ferry.codecs.errors import CodecError
from ferry.codecs.nal import join_annexb

PACK = 0xBA
END = 0xB9
SYSTEM_HEADER = 0xBB
PSM = 0xBC
PRIVATE_1 = 0xBD
PADDING = 0xBE
PRIVATE_2 = 0xBF
VIDEO = 0xE0
AUDIO = 0xC0

# stream_type (ISO/IEC 13818-1 Table 2-34; 0x80.. as GB/T 28181 uses them)
STREAM_TYPES = {
    0x01: "mpeg1video", 0x02: "mpeg2video", 0x03: "mp2", 0x04: "mp2", 0x0F: "aac", 0x10: "mpeg4",
    0x1B: "h264", 0x24: "h265", 0x80: "svac", 0x90: "g711a", 0x91: "g711u", 0x92: "g722.1",
    0x93: "g723.1", 0x99: "g729", 0x9B: "svac_audio",
}
STREAM_TYPE_OF = {"h264": 0x1B, "h265": 0x24, "g711a": 0x90, "g711u": 0x91, "aac": 0x0F}

PES_LENGTH_MAX = 65535
TIMESTAMP_MASK = (1 << 33) - 1
_U16 = struct.Struct(">H")


class PsError(CodecError):
    """Malformed program stream structure (reported by the demuxer as a Skipped event)."""


# --- events -------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class VideoPes:
    """Payload of a video PES; `continued` for later pieces of an unbounded (length 0) PES."""

    stream_id: int
    pts: int | None
    dts: int | None
    data: bytes
    continued: bool = False


@dataclass(frozen=True, slots=True)
class AudioPes:
    stream_id: int
    pts: int | None
    dts: int | None
    data: bytes


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """What an elementary stream carries: from the PSM ("psm") or sniffed from NAL units ("sniffed")."""

    stream_id: int
    stream_type: int | None
    codec: str
    source: str


@dataclass(frozen=True, slots=True)
class Skipped:
    """Bytes the demuxer did not use, and why."""

    reason: str
    nbytes: int


PsEvent = VideoPes | AudioPes | StreamInfo | Skipped


def is_video(stream_id: int) -> bool:
    return 0xE0 <= stream_id <= 0xEF


def is_audio(stream_id: int) -> bool:
    return 0xC0 <= stream_id <= 0xDF


# --- CRC-32/MPEG-2 (Annex A) ---------------------------------------------------
def _crc_table() -> list[int]:
    table = []
    for i in range(256):
        c = i << 24
        for _ in range(8):
            c = ((c << 1) ^ 0x04C11DB7) & 0xFFFFFFFF if c & 0x80000000 else (c << 1) & 0xFFFFFFFF
        table.append(c)
    return table


_CRC_TABLE = _crc_table()


def crc32_mpeg2(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for b in data:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _CRC_TABLE[((crc >> 24) ^ b) & 0xFF]
    return crc


# --- field parsers --------------------------------------------------------------
def _timestamp(b: bytes | bytearray, i: int) -> int:
    """33-bit PTS/DTS from 5 bytes (§2.4.3.7); marker bits are not checked (field variants)."""
    return (((b[i] >> 1) & 7) << 30) | (b[i + 1] << 22) | ((b[i + 2] >> 1) << 15) | (b[i + 3] << 7) | (b[i + 4] >> 1)


def _pes_header(b: bytes | bytearray, pos: int, end: int) -> tuple[int | None, int | None, int] | None:
    """(pts, dts, payload offset) of the PES at b[pos:], reading no further than `end`.

    MPEG-2 (§2.4.3.6) and MPEG-1 (ISO/IEC 11172-1 §2.4.3.3) layouts. None: more bytes needed.
    """
    i = pos + 6
    if i >= end:
        return None
    c = b[i]
    if c & 0xC0 == 0x80:  # MPEG-2
        if i + 3 > end:
            return None
        if c & 0x30:
            raise PsError("scrambled PES")
        flags, hdl = b[i + 1] >> 6, b[i + 2]
        payload = i + 3 + hdl
        if flags == 1:
            raise PsError("PTS_DTS_flags 01")
        if hdl < (0, 0, 5, 10)[flags]:
            raise PsError("PES header too short for its timestamps")
        if i + 3 + (0, 0, 5, 10)[flags] > end:
            return None
        pts = _timestamp(b, i + 3) if flags >= 2 else None
        dts = _timestamp(b, i + 8) if flags == 3 else pts
        return pts, dts, payload
    for _ in range(16):  # MPEG-1: stuffing_byte
        if c != 0xFF:
            break
        i += 1
        if i >= end:
            return None
        c = b[i]
    if c & 0xC0 == 0x40:  # STD_buffer_scale / size
        i += 2
        if i >= end:
            return None
        c = b[i]
    if c >> 4 == 2:
        if i + 5 > end:
            return None
        pts = _timestamp(b, i)
        return pts, pts, i + 5
    if c >> 4 == 3:
        if i + 10 > end:
            return None
        return _timestamp(b, i), _timestamp(b, i + 5), i + 10
    if c == 0x0F:
        return None, None, i + 1
    raise PsError("malformed PES header")


def parse_psm(packet: bytes) -> list[tuple[int, int]]:
    """(stream_type, elementary_stream_id) entries of a whole PSM packet (§2.5.4).

    Lengths are checked against each other and the packet; the CRC is not relied on
    (cameras get it wrong), so a CRC that matches proves nothing and one that does not is
    tolerated.
    """
    if len(packet) < 16 or packet[:4] != b"\x00\x00\x01\xbc":
        raise PsError("not a program stream map")
    length = _U16.unpack_from(packet, 4)[0]
    if length > limits.PS_PSM_MAX or 6 + length != len(packet) or length < 10:
        raise PsError("bogus program stream map length")
    info_len = _U16.unpack_from(packet, 8)[0]
    i = 10 + info_len
    if i + 2 > len(packet) - 4:
        raise PsError("bogus program_stream_info_length")
    map_len = _U16.unpack_from(packet, i)[0]
    i += 2
    end = i + map_len
    if end > len(packet) - 4:
        raise PsError("bogus elementary_stream_map_length")
    entries = []
    while i < end:
        if i + 4 > end:
            raise PsError("truncated elementary stream map entry")
        stream_type, es_id, es_info_len = packet[i], packet[i + 1], _U16.unpack_from(packet, i + 2)[0]
        i += 4 + es_info_len
        if i > end:
            raise PsError("bogus elementary_stream_info_length")
        entries.append((stream_type, es_id))
    return entries


# --- demuxer --------------------------------------------------------------------
class PsDemuxer:
    """Sans-IO program stream demuxer: `feed(data) -> events`, `flush() -> events` at the end."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._buf = bytearray()
        self._skip = 0                    # bytes of a skipped packet still to come
        self._unbounded: int | None = None  # stream id of an unbounded video PES in progress
        self._scan = 0                    # bytes of the pending PES already searched for a start code
        self._garbage = 0                 # bytes skipped while looking for a start code
        self._pending: tuple[int, int, int] | None = None  # (sid, total, payload) of an incomplete PES at _buf[0]
        self.streams: dict[int, StreamInfo] = {}

    def feed(self, data: bytes) -> list[PsEvent]:
        buf = self._buf
        buf += data
        pending = self._pending
        if pending is not None:
            # fast path: more bytes of a PES whose header is parsed; done unless it completes or is cut
            sid, total, payload = pending
            n = len(buf)
            if n < total and self._cut(max(payload, self._scan), n, sid) < 0:
                self._scan = max(0, n - 3)
                return []
            self._pending = None
        out: list[PsEvent] = []
        pos = self._run(out)
        del self._buf[:pos]
        if self._garbage > PES_LENGTH_MAX:
            out.append(Skipped("no start code", self._garbage))
            self._garbage = 0
        return out

    def idle(self) -> bool:
        """Nothing held: every packet fed so far was delivered (or skipped) whole."""
        return not self._buf and self._unbounded is None and not self._skip

    def partial_video_pes(self) -> tuple[int | None, bytes] | None:
        """The PTS and first payload bytes (up to 4) of an incomplete video PES the demuxer holds
        at the front of its buffer, or None: what a discontinuity cuts short began there."""
        buf = self._buf
        if self._unbounded is not None or self._skip or len(buf) < 9 or buf[:3] != b"\x00\x00\x01":
            return None
        sid = buf[3]
        if not is_video(sid):
            return None
        try:
            header = _pes_header(buf, 0, len(buf))
        except PsError:
            return None
        if header is None:
            return None
        pts, _dts, payload = header
        return pts, bytes(buf[payload:payload + 4])

    def flush(self) -> list[PsEvent]:
        """End of stream: deliver an unbounded PES in progress, report what is left."""
        out: list[PsEvent] = []
        buf = self._buf
        if self._unbounded is not None and buf:
            self._emit(self._unbounded, None, None, bytes(buf), out, True)
        elif buf:
            if self._garbage:     # skipped before the packet began: garbage, however the feed was cut
                out.append(Skipped("no start code", self._garbage))
                self._garbage = 0
            out.append(Skipped("truncated packet", len(buf)))
        if self._garbage:
            out.append(Skipped("no start code", self._garbage))
        self._reset()
        return out

    # one pass over the buffer; returns the number of bytes consumed
    def _run(self, out: list[PsEvent]) -> int:
        buf = self._buf
        n = len(buf)
        pos = 0
        while True:
            if self._skip:
                step = min(self._skip, n - pos)
                self._skip -= step
                pos += step
                if self._skip:
                    return pos
            if self._unbounded is not None:
                pos, done = self._unbounded_payload(pos, out)
                if not done:
                    return pos
            if n - pos < 4:
                return pos
            if buf[pos] or buf[pos + 1] or buf[pos + 2] != 1 or buf[pos + 3] < END:
                nxt = self._next_start_code(pos + 1)
                if nxt < 0:
                    keep = max(pos, n - 3)
                    self._garbage += keep - pos
                    return keep
                self._garbage += nxt - pos
                pos = nxt
                continue
            if self._garbage:
                out.append(Skipped("no start code", self._garbage))
                self._garbage = 0
            sid = buf[pos + 3]
            if sid == PACK:
                step = self._pack_header(pos)
            elif sid == END:
                step = 4
            else:
                step = self._packet(pos, sid, out)
            if step == 0:
                return pos
            pos += step

    def _next_start_code(self, start: int) -> int:
        """Index of the next 00 00 01 xx with xx a program stream start code (>= 0xB9), or -1."""
        buf = self._buf
        i = buf.find(b"\x00\x00\x01", start)
        while 0 <= i and i + 3 < len(buf):
            if buf[i + 3] >= END:
                return i
            i = buf.find(b"\x00\x00\x01", i + 1)
        return -1 if i < 0 else i  # i + 3 beyond the buffer: wait there

    def _pack_header(self, pos: int) -> int:
        """Bytes of the pack header at pos (MPEG-2 §2.5.3.3 or MPEG-1), 0 if incomplete, 4 if bogus."""
        buf = self._buf
        if len(buf) - pos < 5:
            return 0
        b4 = buf[pos + 4]
        if b4 >> 6 == 1:  # MPEG-2: '01' SCR...
            if len(buf) - pos < 14:
                return 0
            size = 14 + (buf[pos + 13] & 7)
        elif b4 >> 4 == 2:  # MPEG-1: '0010' SCR...
            size = 12
        else:
            self._garbage += 4
            return 4
        return size if len(buf) - pos >= size else 0

    def _packet(self, pos: int, sid: int, out: list[PsEvent]) -> int:
        """Handle the packet with a 16-bit length at pos; bytes consumed, 0 if incomplete."""
        buf = self._buf
        avail = len(buf) - pos
        if avail < 6:
            return 0
        length: int = _U16.unpack_from(buf, pos + 4)[0]
        total = 6 + length
        if sid == PSM:
            if not 10 <= length <= limits.PS_PSM_MAX:
                out.append(Skipped("bogus program stream map length", 4))
                return 4
            if avail < total:
                return 0
            self._psm(bytes(buf[pos:pos + total]), out)
            return total
        if is_video(sid) or is_audio(sid):
            return self._pes(pos, sid, length, out)
        if sid == SYSTEM_HEADER and (length < 6 or (length - 6) % 3):
            out.append(Skipped("bogus system header length", 4))
            return 4
        if sid != SYSTEM_HEADER:
            name = {PADDING: "padding stream", PRIVATE_1: "private stream 1", PRIVATE_2: "private stream 2"}
            out.append(Skipped(name.get(sid, f"stream 0x{sid:02X}"), total))
        step = min(total, avail)
        self._skip = total - step
        return step

    def _pes(self, pos: int, sid: int, length: int, out: list[PsEvent]) -> int:
        buf = self._buf
        avail = len(buf) - pos
        if length == 0 and not is_video(sid):
            out.append(Skipped("audio PES without length", 6))
            return 6
        end = len(buf) if length == 0 else min(len(buf), pos + 6 + length)
        try:
            header = _pes_header(buf, pos, end)
        except PsError as exc:
            return self._bad_pes(pos, length, str(exc), out)
        if header is None:
            if length and avail >= 6 + length:
                return self._bad_pes(pos, length, "malformed PES header", out)
            return 0
        pts, dts, payload = header
        if length == 0:
            if payload > len(buf):  # the header's stuffing is not all here: wait (at most 9 + 255 bytes)
                return 0
            self._unbounded = sid
            self._emit(sid, pts, dts, b"", out)
            return payload - pos
        total = 6 + length
        if payload > pos + total:
            return self._bad_pes(pos, length, "PES header longer than the packet", out)
        # a PES cut short (lost RTP packets): a start code that cannot be payload ends it
        stop = min(len(buf), pos + total)
        cut = self._cut(max(payload, pos + self._scan), stop, sid)
        if cut >= 0:
            self._scan = 0
            out.append(Skipped("truncated PES", cut - pos))
            return cut - pos
        if avail < total:
            self._scan = max(0, stop - pos - 3)
            if not self._garbage:
                self._pending = (sid, total, payload - pos)
            return 0
        self._scan = 0
        self._emit(sid, pts, dts, bytes(memoryview(buf)[payload:pos + total]), out)
        return total

    def _cut(self, start: int, stop: int, sid: int) -> int:
        """Index of a start code in buf[start:stop] that proves the PES truncated, or -1: any
        program stream start code in video, a pack header in audio (whose bytes are arbitrary)."""
        buf = self._buf
        if not is_video(sid):
            i = buf.find(b"\x00\x00\x01\xba", start, stop)
            return i
        i = buf.find(b"\x00\x00\x01", start, stop)
        while 0 <= i and i + 3 < stop:
            if buf[i + 3] >= END:
                return i
            i = buf.find(b"\x00\x00\x01", i + 1, stop)
        return -1

    def _bad_pes(self, pos: int, length: int, reason: str, out: list[PsEvent]) -> int:
        """Skip only the start code: the length of a malformed packet is not trusted either."""
        out.append(Skipped(reason, 4))
        return 4

    def _unbounded_payload(self, pos: int, out: list[PsEvent]) -> tuple[int, bool]:
        """Deliver an unbounded video PES up to the next start code; (new pos, finished).

        While its codec is unknown, bytes that may begin a parameter set are held back until
        the parameter set is decided: the sniffed StreamInfo then comes before the piece that
        carries it, and the pieces a feed is cut into do not change what is sniffed.
        """
        buf = self._buf
        sid = self._unbounded
        assert sid is not None  # called only while an unbounded PES is in progress
        i = self._next_start_code(pos)
        finished = i >= 0 and i + 3 < len(buf)
        stop = i if finished else max(pos, len(buf) - 3)
        if sid not in self.streams:
            codec, safe = scan_parameter_sets(buf, pos, i if finished else len(buf), finished)
            if codec is not None:
                self._sniffed(sid, codec, out)
            else:
                stop = min(stop, safe)
        if stop > pos:
            self._emit(sid, None, None, bytes(buf[pos:stop]), out, True)
        if finished:
            self._unbounded = None
            return stop, True
        return stop, False

    def _sniffed(self, sid: int, codec: str, out: list[PsEvent]) -> None:
        info = StreamInfo(sid, None, codec, "sniffed")
        self.streams[sid] = info
        out.append(info)

    def _emit(self, sid: int, pts: int | None, dts: int | None, data: bytes, out: list[PsEvent],
              continued: bool = False) -> None:
        if is_video(sid):
            if data and sid not in self.streams:
                codec = sniff_codec(data)
                if codec is not None:
                    self._sniffed(sid, codec, out)
            out.append(VideoPes(sid, pts, dts, data, continued))
        else:
            out.append(AudioPes(sid, pts, dts, data))

    def _psm(self, packet: bytes, out: list[PsEvent]) -> None:
        try:
            entries = parse_psm(packet)
        except PsError as exc:
            out.append(Skipped(str(exc), len(packet)))
            return
        for stream_type, es_id in entries:
            if not (is_video(es_id) or is_audio(es_id)):
                continue
            info = StreamInfo(es_id, stream_type, STREAM_TYPES.get(stream_type, "unknown"), "psm")
            if self.streams.get(es_id) != info:
                self.streams[es_id] = info
                out.append(info)


# --- muxer ---------------------------------------------------------------------
def _ts_bytes(prefix: int, ts: int) -> bytes:
    ts &= TIMESTAMP_MASK
    return bytes((
        (prefix << 4) | (((ts >> 30) & 7) << 1) | 1,
        (ts >> 22) & 0xFF,
        (((ts >> 15) & 0x7F) << 1) | 1,
        (ts >> 7) & 0xFF,
        ((ts & 0x7F) << 1) | 1,
    ))


def pack_header(scr: int, mux_rate: int) -> bytes:
    """MPEG-2 pack header (§2.5.3.3), SCR extension 0, no stuffing."""
    scr &= TIMESTAMP_MASK
    return b"\x00\x00\x01\xba" + bytes((
        0x44 | (((scr >> 30) & 7) << 3) | ((scr >> 28) & 3),
        (scr >> 20) & 0xFF,
        (((scr >> 15) & 0x1F) << 3) | 0x04 | ((scr >> 13) & 3),
        (scr >> 5) & 0xFF,
        ((scr & 0x1F) << 3) | 0x04,
        0x01,
        (mux_rate >> 14) & 0xFF,
        (mux_rate >> 6) & 0xFF,
        ((mux_rate & 0x3F) << 2) | 0x03,
        0xF8,
    ))


class PsMuxer:
    """GB/T 28181 program stream writer: `video(...)` and `audio(...)` return bytes."""

    def __init__(self, video_codec: str = "h264", audio_codec: str | None = None,
                 mux_rate: int = 50_000, pes_payload_max: int = PES_LENGTH_MAX - 13) -> None:
        if video_codec not in ("h264", "h265"):
            raise ValueError(f"unsupported video codec {video_codec!r}")
        if audio_codec is not None and audio_codec not in STREAM_TYPE_OF:
            raise ValueError(f"unsupported audio codec {audio_codec!r}")
        if not 1 <= pes_payload_max <= PES_LENGTH_MAX - 13:
            raise ValueError("pes_payload_max out of range")
        self.video_codec = video_codec
        self.audio_codec = audio_codec
        self.mux_rate = mux_rate & 0x3FFFFF
        self.pes_payload_max = pes_payload_max
        self.psm_version = 0          # program_stream_map_version: + 1 (mod 32) for each change
        self._map_due = False         # the program changed: the next pack carries the new map
        self._scr = 0

    def set_streams(self, video_codec: str, audio_codec: str | None) -> None:
        """What the program carries from now on. A change gets a new map (the next version) in the
        next pack, ahead of the PES it concerns, key frame or not."""
        if video_codec not in ("h264", "h265"):
            raise ValueError(f"unsupported video codec {video_codec!r}")
        if audio_codec is not None and audio_codec not in STREAM_TYPE_OF:
            raise ValueError(f"unsupported audio codec {audio_codec!r}")
        if (video_codec, audio_codec) != (self.video_codec, self.audio_codec):
            self.video_codec, self.audio_codec = video_codec, audio_codec
            self.psm_version = (self.psm_version + 1) & 0x1F
            self._map_due = True

    def system_header(self) -> bytes:
        """System header (§2.5.3.5) listing video 0xE0 and audio 0xC0."""
        rate = self.mux_rate
        streams = b"\xe0\xe4\x00"  # P-STD buffer: scale 1024, 1024 units
        if self.audio_codec:
            streams += b"\xc0\xc0\x20"  # scale 128, 32 units
        body = bytes((
            0x80 | ((rate >> 15) & 0x7F), (rate >> 7) & 0xFF, ((rate & 0x7F) << 1) | 1,
            (1 if self.audio_codec else 0) << 2,
            0xE1,  # audio lock, video lock, marker, video_bound 1
            0x7F,
        )) + streams
        return b"\x00\x00\x01\xbb" + _U16.pack(len(body)) + body

    def program_stream_map(self) -> bytes:
        """Program stream map (§2.5.4) with its CRC-32."""
        entries = bytes((STREAM_TYPE_OF[self.video_codec], VIDEO, 0, 0))
        if self.audio_codec:
            entries += bytes((STREAM_TYPE_OF[self.audio_codec], AUDIO, 0, 0))
        # current_next_indicator 1, reserved, version; reserved, marker; no program_stream_info
        body = bytes((0xE0 | self.psm_version, 0xFF, 0, 0)) + _U16.pack(len(entries)) + entries
        head = b"\x00\x00\x01\xbc" + _U16.pack(len(body) + 4) + body
        return head + struct.pack(">I", crc32_mpeg2(head))

    def _pes(self, sid: int, data: bytes, pts: int | None, dts: int | None) -> bytes:
        out = []
        first = True
        for i in range(0, max(len(data), 1), self.pes_payload_max):
            chunk = data[i:i + self.pes_payload_max]
            if first and pts is not None and dts is not None and (dts & TIMESTAMP_MASK) != (pts & TIMESTAMP_MASK):
                header = b"\x84\xc0\x0a" + _ts_bytes(3, pts) + _ts_bytes(1, dts)
            elif first and pts is not None:
                header = b"\x84\x80\x05" + _ts_bytes(2, pts)
            else:
                header = b"\x80\x00\x00"
            first = False
            out.append(bytes((0, 0, 1, sid)) + _U16.pack(len(header) + len(chunk)) + header + chunk)
        return b"".join(out)

    def video(self, nal_units: Iterable[bytes | bytearray | memoryview], pts: int | None, dts: int | None = None,
              keyframe: bool = False) -> bytes:
        """One access unit: pack header, (system header, PSM on key frames and after a change of
        the program), video PES.

        Without a PTS the PES carries no timestamps and the SCR repeats the previous one.
        """
        if pts is None:
            dts = None
        elif dts is None:
            dts = pts
        if dts is not None:
            self._scr = dts
        head = pack_header(self._scr, self.mux_rate)
        if keyframe or self._map_due:
            head += self._program()
        return head + self._pes(VIDEO, join_annexb(nal_units), pts, dts)

    def _program(self) -> bytes:
        """System header and PSM (what a player needs to know the streams)."""
        self._map_due = False
        return self.system_header() + self.program_stream_map()

    def access_unit(self, au: AccessUnit) -> bytes:
        """`video` for an access_unit.AccessUnit (its codec must be this muxer's)."""
        if au.codec != self.video_codec:
            raise ValueError("access unit codec differs from the muxer's")
        return self.video(au.nal_units, au.pts, au.dts, au.keyframe)

    def audio(self, payload: bytes, pts: int) -> bytes:
        """One audio frame: pack header (system header and PSM after a change of the program)
        and an audio PES on 0xC0."""
        if not self.audio_codec:
            raise ValueError("muxer has no audio stream")
        if len(payload) > self.pes_payload_max:
            raise ValueError("audio frame larger than one PES")
        self._scr = pts
        head = pack_header(pts, self.mux_rate)
        if self._map_due:
            head += self._program()
        return head + self._pes(AUDIO, payload, pts, pts)
