"""NAL units: the Annex B byte stream (H.264 Annex B, H.265 Annex B) and NAL unit headers.

A byte stream is NAL units each preceded by a start code 00 00 01 (00 00 00 01 when the
zero_byte is present); zero bytes before a start code are trailing_zero_8bits of the unit
before. Inside a NAL unit emulation prevention guarantees that 00 00 00/01/02 never occur,
so every 00 00 01 is a start code. Parsers raise only NalError.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable

from ferry import limits
from ferry.codecs.errors import CodecError

START_CODE = b"\x00\x00\x01"


class NalError(CodecError):
    """Malformed NAL unit, Annex B stream or parameter set."""


class NalKind(enum.Enum):
    """What a NAL unit is, for assembly and for the policy's stripping."""

    SLICE = "slice"                  # VCL, not a random access point
    KEY_SLICE = "key_slice"          # IDR (H.264) or IRAP (H.265) VCL
    PARAMETER_SET = "parameter_set"  # VPS, SPS, PPS (and H.264 SPS extension / subset SPS)
    SEI = "sei"
    AUD = "aud"                      # access unit delimiter
    FILLER = "filler"
    END = "end"                      # end of sequence / end of stream (bitstream)
    OTHER = "other"                  # defined by the standard, not needed here (SVC/MVC/3D, DPS)
    RESERVED = "reserved"
    UNSPECIFIED = "unspecified"


def _strip_trailing_zeros(buf: bytes | bytearray, start: int, end: int) -> int:
    while end > start and buf[end - 1] == 0:
        end -= 1
    return end


def split_annexb(data: bytes) -> list[bytes]:
    """The NAL units of a whole Annex B byte stream; bytes before the first start code are ignored."""
    splitter = AnnexBSplitter()
    units = splitter.feed(data)
    units.extend(splitter.flush())
    return units


class AnnexBSplitter:
    """Streaming start-code splitter: `feed(data)` returns the NAL units completed so far.

    A unit is complete when the next start code arrives; `flush()` returns the last one at
    the end of the stream. A unit longer than `max_nal` (+ 3 bytes of slack; trailing zeros
    count) raises NalError, wherever the feeds are cut (bounded buffer).
    """

    __slots__ = ("_buf", "_base", "_scan", "_unit_start", "_max", "skipped", "_zeros")

    def __init__(self, max_nal: int = limits.NAL_MAX) -> None:
        self._buf = bytearray()
        self._base = 0          # stream offset of _buf[0]
        self._scan = 0          # index in _buf from which no start code has been searched yet
        self._unit_start = -1   # index of the current unit's first byte (after its start code)
        self._max = max_nal
        self.skipped = 0        # bytes discarded before a first start code (zero padding aside)
        self._zeros = 0         # zero bytes discarded so far, not counted: padding if a start code follows

    @property
    def pending(self) -> int:
        """Bytes of the unit in progress (its end not seen yet)."""
        return len(self._buf) - self._unit_start if self._unit_start >= 0 else 0

    @property
    def unit_offset(self) -> int | None:
        """Stream offset of the start code (its 00 00 01) of the unit in progress, if any."""
        return self._base + self._unit_start - 3 if self._unit_start >= 0 else None

    @property
    def offset(self) -> int:
        """Stream offset of the next byte to be fed."""
        return self._base + len(self._buf)

    def feed(self, data: bytes) -> list[bytes]:
        """Append bytes; return the NAL units that are now complete."""
        return [nal for _, nal in self.feed_located(data)]

    def feed_located(self, data: bytes) -> list[tuple[int, bytes]]:
        """Like `feed`, with each unit's stream offset (of its 00 00 01 start code)."""
        buf = self._buf
        buf += data
        out: list[tuple[int, bytes]] = []
        pos = self._scan
        while True:
            i = buf.find(START_CODE, pos)
            if i < 0:
                break
            if self._unit_start < 0:  # bytes of a unit whose start code was never seen
                self._discard(0, i)
                self._zeros = 0       # zeros right before a start code are padding
            else:
                if i - self._unit_start > self._max + 3:  # as a partial unit would have been refused
                    raise NalError("NAL unit too long")
                end = _strip_trailing_zeros(buf, self._unit_start, i)
                if end > self._unit_start:
                    out.append((self._base + self._unit_start - 3, bytes(buf[self._unit_start:end])))
            self._unit_start = i + 3
            pos = i + 3
        self._scan = max(pos, len(buf) - 2)
        # drop consumed bytes: everything before the current unit (or all but a partial start code)
        keep = self._unit_start if self._unit_start >= 0 else self._scan
        if self._unit_start < 0 and keep > 0:
            self._discard(0, keep)
        if keep > 0:
            del buf[:keep]
            self._base += keep
            self._scan -= keep
            if self._unit_start >= 0:
                self._unit_start = 0
        # a unit's length counts to its end, the next start code: that may begin 2 bytes from the end
        if len(buf) - 2 > self._max + 3:
            raise NalError("NAL unit too long")
        return out

    def flush(self) -> list[bytes]:
        """End of stream: return the last unit, if any, and reset."""
        out: list[bytes] = []
        if self._unit_start >= 0:
            end = _strip_trailing_zeros(self._buf, self._unit_start, len(self._buf))
            if end > self._unit_start:
                out.append(bytes(self._buf[self._unit_start:end]))
        else:
            self._discard(0, len(self._buf))
        self.reset()
        return out

    def flush_located(self) -> list[tuple[int, bytes]]:
        """Like `flush`, with the unit's stream offset."""
        start = self._base + self._unit_start - 3
        return [(start, nal) for nal in self.flush()]

    def _discard(self, start: int, end: int) -> None:
        """Count buf[start:end], bytes before any start code: zeros only once non-zero bytes follow."""
        nonzero = _strip_trailing_zeros(self._buf, start, end)
        if nonzero > start:
            self.skipped += self._zeros + nonzero - start
            self._zeros = end - nonzero
        else:
            self._zeros += end - start

    def reset(self) -> None:
        """Forget buffered bytes (after a discontinuity); offsets keep counting."""
        self._zeros = 0
        self._base += len(self._buf)
        self._buf = bytearray()
        self._scan = 0
        self._unit_start = -1


def join_annexb(nal_units: Iterable[bytes | bytearray | memoryview], start_code: bytes = b"\x00\x00\x00\x01") -> bytes:
    """An Annex B byte stream of the given NAL units (4-byte start codes by default)."""
    return b"".join(start_code + bytes(n) for n in nal_units)


def canonical_annexb(data: bytes) -> bytes:
    """A byte stream in the form ferry rebuilds every elementary stream: each NAL unit after a
    4-byte start code, nothing before the first, no trailing zero bytes. The source's framing
    (3- or 4-byte start codes, zero padding) is not carried across: compare an output with a
    source in this form (a `keep_sei` output is byte-identical to it where nothing was stripped)."""
    return join_annexb(split_annexb(data))


# --- NAL unit headers -------------------------------------------------------
def h264_nal_type(nal: bytes) -> int:
    """nal_unit_type of an H.264 NAL unit (H.264 §7.3.1: forbidden_zero_bit, nal_ref_idc, type)."""
    if len(nal) < 1:
        raise NalError("empty NAL unit")
    b0 = nal[0]
    if b0 & 0x80:
        raise NalError("forbidden_zero_bit set")
    return b0 & 0x1F


def h265_nal_header(nal: bytes) -> tuple[int, int, int]:
    """(nal_unit_type, nuh_layer_id, TemporalId) of an H.265 NAL unit (H.265 §7.3.1.2)."""
    if len(nal) < 2:
        raise NalError("NAL unit shorter than its header")
    b0, b1 = nal[0], nal[1]
    if b0 & 0x80:
        raise NalError("forbidden_zero_bit set")
    tid_plus1 = b1 & 0x07
    if tid_plus1 == 0:
        raise NalError("nuh_temporal_id_plus1 is 0")
    return (b0 >> 1) & 0x3F, ((b0 & 1) << 5) | (b1 >> 3), tid_plus1 - 1


def h265_nal_type(nal: bytes) -> int:
    """nal_unit_type of an H.265 NAL unit."""
    return h265_nal_header(nal)[0]
