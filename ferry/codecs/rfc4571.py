"""RTP over TCP: RFC 4571 §2 framing (a 16-bit length before each packet), sans-IO.

`Deframer.receive(data)` only buffers; `next_event()` returns a `Frame`, a `Skipped` or None
(need more data); `next_packet()` returns frame bytes only. With `check` on (the default), each
frame must look like an RTP v2 header with the expected payload type and SSRC (when given); a
frame that does not starts a resynchronisation: the stream is scanned forward for a position whose
length is plausible, whose bytes look like that RTP header, AND whose following frame at +2+L
looks the same. Cameras' TCP streams may start mid-packet (DESIGN §6): pass `resync=True`.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

from ferry import limits
from ferry.codecs.errors import FramingError

_LENGTH = struct.Struct("!H")
_RTP_MIN = 12  # an RTP fixed header (RFC 3550 §5.1)
_LOOKAHEAD = 2 + _RTP_MIN  # bytes needed to judge one frame: length + RTP fixed header


@dataclass(frozen=True, slots=True)
class Frame:
    data: bytes


@dataclass(frozen=True, slots=True)
class Skipped:
    """`nbytes` of the TCP stream were discarded while looking for a frame boundary."""

    nbytes: int
    reason: str


def frame(packet: bytes | bytearray | memoryview) -> bytes:
    """Prefix one packet with its 16-bit length (RFC 4571 §2)."""
    if len(packet) > 0xFFFF:
        raise FramingError(f"packet of {len(packet)} bytes does not fit a 16-bit length")
    return _LENGTH.pack(len(packet)) + bytes(packet)


class Deframer:
    """Split a TCP byte stream into RFC 4571 frames (bounded; resynchronising)."""

    __slots__ = ("payload_type", "ssrc", "check", "max_frame", "max_buffer",
                 "_buf", "_pos", "_resync", "_reason", "_pattern", "_pending", "frames", "skipped_bytes", "resyncs")

    def __init__(self, *, payload_type: int | None = None, ssrc: int | None = None,
                 resync: bool = False, check: bool = True,
                 max_frame: int = limits.RFC4571_FRAME_MAX,
                 max_buffer: int = limits.RFC4571_BUFFER_MAX) -> None:
        if not _RTP_MIN <= max_frame <= 0xFFFF or max_buffer < 2 * (2 + max_frame):
            raise ValueError("max_frame must be 12..65535 and max_buffer hold two frames")
        if payload_type is not None and not 0 <= payload_type <= 0x7F:
            raise ValueError("payload type out of range")
        if resync and not check:
            raise ValueError("resynchronising needs check=True")
        self.payload_type = payload_type
        self.ssrc = ssrc
        self.check = check
        self.max_frame = max_frame
        self.max_buffer = max_buffer
        self._buf = bytearray()
        self._pos = 0
        self._resync = resync
        self._reason = "stream starts mid-frame"
        self._pending = 0  # bytes skipped in this resynchronisation, not yet reported
        # a candidate's RTP header: byte 2+0 is V=2 (0x80..0xBF), byte 2+1 is M|PT
        if payload_type is None:
            second = b"."
        else:
            second = b"[" + re.escape(bytes((payload_type,))) + re.escape(bytes((payload_type | 0x80,))) + b"]"
        self._pattern = re.compile(b"(?s)(?=..[\x80-\xbf]" + second + b")")
        self.frames = 0
        self.skipped_bytes = 0
        self.resyncs = 0

    @property
    def buffered(self) -> int:
        return len(self._buf) - self._pos

    @property
    def resynchronising(self) -> bool:
        return self._resync

    def receive(self, data: bytes | bytearray | memoryview) -> None:
        """Buffer bytes from the stream; FramingError if more than `max_buffer` would be held."""
        if self.buffered + len(data) > self.max_buffer:
            raise FramingError(f"more than {self.max_buffer} bytes buffered; drain next_event() first")
        if self._pos and self._pos * 2 >= len(self._buf):
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    def resync(self, reason: str = "requested") -> None:
        """Look for the next frame boundary from the byte after the current position."""
        if not self.check:
            raise FramingError("resynchronising needs check=True")
        self._enter_resync(1, reason)

    def next_packet(self) -> bytes | None:
        """The next frame's bytes, or None; skipped bytes are only counted (`skipped_bytes`)."""
        while True:
            event = self.next_event()
            if event is None or isinstance(event, Frame):
                return None if event is None else event.data

    def next_event(self) -> Frame | Skipped | None:
        if self._resync:
            return self._scan()
        buf, pos = self._buf, self._pos
        if len(buf) - pos < 2:
            return None
        (length,) = _LENGTH.unpack_from(buf, pos)
        if self.check:
            need = min(2 + length, _LOOKAHEAD)
            if len(buf) - pos < need:
                return None
            reason = self._refuse(buf, pos)
            if reason is not None:
                self._enter_resync(1, reason)
                return self._scan()
        elif length > self.max_frame:
            raise FramingError(f"frame of {length} bytes exceeds {self.max_frame}")
        end = pos + 2 + length
        if len(buf) < end:
            return None
        self._pos = end
        self.frames += 1
        return Frame(bytes(buf[pos + 2:end]))

    # internals

    def _refuse(self, buf: bytearray, pos: int) -> str | None:
        """Why the frame at `pos` is not a plausible RTP frame of the expected stream (None: it is)."""
        length = (buf[pos] << 8) | buf[pos + 1]
        if length < _RTP_MIN:
            return f"frame of {length} bytes is too short for RTP"
        if length > self.max_frame:
            return f"frame of {length} bytes exceeds {self.max_frame}"
        if buf[pos + 2] >> 6 != 2:
            return "frame is not RTP version 2"
        if self.payload_type is not None and buf[pos + 3] & 0x7F != self.payload_type:
            return f"payload type {buf[pos + 3] & 0x7F}, expected {self.payload_type}"
        if self.ssrc is not None and int.from_bytes(buf[pos + 10:pos + 14], "big") != self.ssrc:
            return "unexpected SSRC"
        return None

    def _enter_resync(self, skip: int, reason: str) -> None:
        self._resync = True
        self._reason = reason
        self.resyncs += 1
        self._discard(skip)

    def _discard(self, n: int) -> Skipped | None:
        """Skip n bytes; report them once in sync again (or every `max_frame` bytes of garbage)."""
        if n > 0:
            self._pos += n
            self.skipped_bytes += n
            self._pending += n
        if self._pending and (not self._resync or self._pending >= self.max_frame):
            skipped = Skipped(self._pending, self._reason)
            self._pending = 0
            return skipped
        return None

    def _scan(self) -> Frame | Skipped | None:
        """Find a position where this frame and the next both look like the expected stream."""
        buf = self._buf
        pos = self._pos
        while True:
            match = self._pattern.search(buf, pos)
            if match is None:  # keep the last 3 bytes: they may begin a candidate
                return self._discard(max(0, len(buf) - 3 - self._pos))
            cand = match.start()
            if len(buf) - cand < _LOOKAHEAD:
                return self._discard(cand - self._pos)  # None unless much was skipped
            if self._refuse(buf, cand) is None:
                nxt = cand + 2 + ((buf[cand] << 8) | buf[cand + 1])
                if len(buf) - nxt < _LOOKAHEAD:  # wait for the following frame's header
                    return self._discard(cand - self._pos)
                if self._refuse(buf, nxt) is None and self._same_stream(buf, cand, nxt):
                    self._resync = False
                    return self._discard(cand - self._pos) or self.next_event()
            pos = cand + 1

    def _same_stream(self, buf: bytearray, a: int, b: int) -> bool:
        """Both frames carry the same payload type and SSRC (checked when none was given)."""
        return buf[a + 3] & 0x7F == buf[b + 3] & 0x7F and buf[a + 10:a + 14] == buf[b + 10:b + 14]
