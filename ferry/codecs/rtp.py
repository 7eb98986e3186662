"""RTP packets (RFC 3550 §5.1), a sans-IO reorder buffer, and a packet writer.

`parse_rtp` is strict (version 2, padding, CSRC list and header extension must fit the packet)
and cheap: one precompiled `struct.Struct("!BBHII")` for the fixed header, the payload is a
read-only `memoryview` into the caller's bytes (no copy). Copy it (`bytes(p.payload)`) before
reusing a mutable receive buffer.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Sequence

from ferry import limits
from ferry.codecs.errors import RtpError

RTP_VERSION = 2
HEADER = struct.Struct("!BBHII")  # V P X CC | M PT | sequence | timestamp | SSRC (RFC 3550 §5.1)
HEADER_SIZE = HEADER.size  # 12
_EXT_HEADER = struct.Struct("!HH")  # profile-defined, length in 32-bit words (RFC 3550 §5.3.1)
_SEQ_MOD = 1 << 16
_SEQ_HALF = 1 << 15

Buffer = bytes | bytearray | memoryview


@dataclass(frozen=True, slots=True)
class RtpPacket:
    """One RTP packet (RFC 3550 §5.1).

    `padding` is the number of padding octets at the end (0: P bit clear; else it includes the
    count octet itself). `extension` is (profile-defined 16 bits, extension bytes) or None.
    """

    version: int
    padding: int
    marker: bool
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    csrcs: tuple[int, ...]
    extension: tuple[int, bytes] | None
    payload: memoryview | bytes

    def to_bytes(self) -> bytes:
        return build_rtp(
            self.payload_type, self.sequence, self.timestamp, self.ssrc, self.payload,
            marker=self.marker, csrcs=self.csrcs, extension=self.extension, padding=self.padding,
        )


def parse_rtp(data: Buffer) -> RtpPacket:
    """Parse one RTP packet; raise RtpError unless it is well formed (RFC 3550 §5.1, §A.1)."""
    n = len(data)
    if n < HEADER_SIZE:
        raise RtpError(f"packet of {n} bytes is shorter than the RTP header")
    b0, b1, sequence, timestamp, ssrc = HEADER.unpack_from(data, 0)
    if b0 >> 6 != RTP_VERSION:
        raise RtpError(f"RTP version {b0 >> 6}, expected 2")
    cc = b0 & 0x0F
    offset = HEADER_SIZE + 4 * cc
    if offset > n:
        raise RtpError(f"CSRC count {cc} runs past the end of the packet")
    csrcs = struct.unpack_from(f"!{cc}I", data, HEADER_SIZE) if cc else ()
    extension = None
    if b0 & 0x10:  # X bit (RFC 3550 §5.3.1)
        if offset + 4 > n:
            raise RtpError("header extension runs past the end of the packet")
        profile, words = _EXT_HEADER.unpack_from(data, offset)
        start = offset + 4
        offset = start + 4 * words
        if offset > n:
            raise RtpError(f"header extension of {words} words runs past the end of the packet")
        extension = (profile, bytes(data[start:offset]))
    end = n
    padding = 0
    if b0 & 0x20:  # P bit: the last octet counts the padding, itself included (RFC 3550 §5.1)
        padding = data[n - 1]
        if padding == 0 or padding > n - offset:
            raise RtpError(f"padding count {padding} is invalid for {n - offset} bytes after the header")
        end = n - padding
    view = data if isinstance(data, memoryview) else memoryview(data)
    return RtpPacket(
        RTP_VERSION, padding, bool(b1 & 0x80), b1 & 0x7F, sequence, timestamp, ssrc,
        csrcs, extension, view[offset:end].toreadonly(),
    )


def timestamp_of(data: Buffer) -> int | None:
    """The RTP timestamp of a datagram `parse_rtp` may refuse, if its first 8 header bytes are
    there (and it is version 2); else None."""
    if len(data) < 8 or data[0] >> 6 != RTP_VERSION:
        return None
    return int.from_bytes(bytes(data[4:8]), "big")


def sequence_of(data: Buffer) -> int | None:
    """The sequence number of a datagram `parse_rtp` may refuse, if it can be read: RTP version 2
    and the first 4 header bytes present (RFC 3550 §5.1); else None (no sequence number at all)."""
    if len(data) < 4 or data[0] >> 6 != RTP_VERSION:
        return None
    return (data[2] << 8) | data[3]


def build_rtp(
    payload_type: int,
    sequence: int,
    timestamp: int,
    ssrc: int,
    payload: Buffer,
    *,
    marker: bool = False,
    csrcs: Sequence[int] = (),
    extension: tuple[int, bytes] | None = None,
    padding: int = 0,
) -> bytes:
    """Build one RTP version 2 packet (RFC 3550 §5.1). Out-of-range fields raise RtpError."""
    if not 0 <= payload_type <= 0x7F:
        raise RtpError(f"payload type {payload_type} out of range")
    if not 0 <= sequence < _SEQ_MOD or not 0 <= timestamp <= 0xFFFFFFFF or not 0 <= ssrc <= 0xFFFFFFFF:
        raise RtpError("sequence, timestamp or SSRC out of range")
    if len(csrcs) > 15:
        raise RtpError(f"{len(csrcs)} CSRCs, at most 15")
    if not 0 <= padding <= 255:
        raise RtpError(f"padding of {padding} octets out of range")
    b0 = 0x80 | (0x20 if padding else 0) | (0x10 if extension is not None else 0) | len(csrcs)
    parts = [HEADER.pack(b0, (0x80 if marker else 0) | payload_type, sequence, timestamp, ssrc)]
    if csrcs:
        try:
            parts.append(struct.pack(f"!{len(csrcs)}I", *csrcs))
        except struct.error as exc:
            raise RtpError(f"CSRC out of range: {exc}") from None
    if extension is not None:
        profile, ext = extension
        if not 0 <= profile <= 0xFFFF or len(ext) % 4 or len(ext) > 4 * 0xFFFF:
            raise RtpError("header extension must be a 16-bit profile and a multiple of 4 bytes")
        parts.append(_EXT_HEADER.pack(profile, len(ext) // 4))
        parts.append(bytes(ext))
    parts.append(bytes(payload))
    if padding:
        parts.append(bytes(padding - 1) + bytes((padding,)))
    return b"".join(parts)


class RtpPacketWriter:
    """Number payloads as RTP packets of one stream (fresh SSRC and sequence numbers)."""

    __slots__ = ("payload_type", "ssrc", "sequence")

    def __init__(self, payload_type: int, ssrc: int, sequence: int = 0) -> None:
        self.payload_type = payload_type
        self.ssrc = ssrc
        self.sequence = sequence & 0xFFFF

    def write(self, payloads: Sequence[Buffer], timestamp: int, *, marker_last: bool = True) -> list[bytes]:
        """One packet per payload, all with `timestamp`; the marker on the last one (RFC 3550 §5.1)."""
        if not payloads:
            return []
        pt, ssrc, seq = self.payload_type, self.ssrc, self.sequence
        timestamp &= 0xFFFFFFFF
        if not 0 <= pt <= 0x7F or not 0 <= ssrc <= 0xFFFFFFFF or not 0 <= seq < _SEQ_MOD:
            # out of range: let build_rtp say why
            build_rtp(pt, seq, timestamp, ssrc, b"")
        pack = HEADER.pack
        out = [pack(0x80, pt, (seq + i) & 0xFFFF, timestamp, ssrc) + payload
               for i, payload in enumerate(payloads)]
        n = len(out)
        if marker_last:
            out[-1] = pack(0x80, 0x80 | pt, (seq + n - 1) & 0xFFFF, timestamp, ssrc) + payloads[-1]
        self.sequence = (seq + n) & 0xFFFF
        return out


# --- reordering -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Lost:
    """`count` packets from sequence number `first_seq` (mod 2^16) never arrived in time."""

    first_seq: int
    count: int


@dataclass(frozen=True, slots=True)
class Malformed:
    """The packet numbered `sequence` arrived, and was refused as malformed: no gap, its payload
    unknown (the reader decides whether what follows still fits what came before)."""

    sequence: int
    timestamp: int | None = None    # its RTP timestamp, if the header got that far


Released = RtpPacket | Lost | Malformed


class ReorderBuffer:
    """Put the packets of one RTP stream back in sequence order (sans-IO, bounded).

    `push(packet, now)` returns packets released in order and `Lost` events for gaps, in stream
    order. A gap is given up when a later packet has waited `max_delay` seconds, or when a packet
    arrives `capacity` or more ahead of the next expected one. Sequence numbers are extended past
    16 bits internally (RFC 3550 §A.1), so wrap-around is seamless. Late and duplicate packets are
    dropped and counted; the first packet pushed starts the stream, so packets before it are late
    (no start-up delay). Two consecutive packets far behind the stream (a sender restart) resync it.
    Call `poll(now)` at `deadline()` to release packets when no new ones arrive. `skip(sequence,
    now)` takes a malformed packet's number: released in order as `Malformed`, never a gap.
    """

    __slots__ = ("capacity", "max_delay", "_next", "_held", "_bad_seq",
                 "late", "duplicates", "lost", "restarts")

    def __init__(self, capacity: int = limits.RTP_REORDER_CAPACITY,
                 max_delay: float = limits.RTP_REORDER_DELAY) -> None:
        if capacity < 1 or max_delay < 0:
            raise ValueError("capacity must be positive and max_delay non-negative")
        self.capacity = capacity
        self.max_delay = max_delay
        self._next: int | None = None  # extended sequence number expected next
        self._held: dict[int, tuple[RtpPacket | Malformed, float]] = {}
        self._bad_seq: int | None = None
        self.late = 0
        self.duplicates = 0
        self.lost = 0
        self.restarts = 0

    def __len__(self) -> int:
        return len(self._held)

    def push(self, packet: RtpPacket, now: float) -> list[Released]:
        out: list[Released] = []
        if self._next is None:
            self._next = packet.sequence
        delta = (packet.sequence - self._next) % _SEQ_MOD
        if delta >= _SEQ_HALF:  # behind the next expected packet
            behind = _SEQ_MOD - delta
            if behind <= self.capacity or packet.sequence != self._bad_seq:
                self.late += 1
                # far behind: a sender restart if the next packet follows this one (RFC 3550 §A.1)
                self._bad_seq = (packet.sequence + 1) & 0xFFFF if behind > self.capacity else None
                return self._expire(now, out)
            self.restarts += 1
            restart_at = self._next - behind
            self._release_all(out)
            self._next = restart_at
            delta = 0
        self._bad_seq = None
        ext = self._next + delta
        if ext in self._held:
            self.duplicates += 1
            return self._expire(now, out)
        if delta >= self.capacity:  # too far ahead to hold: give up the oldest gaps
            self._release_below(ext - self.capacity + 1, out)
        self._held[ext] = (packet, now)
        self._release_run(out)
        return self._expire(now, out)

    def skip(self, sequence: int, now: float, timestamp: int | None = None) -> list[Released]:
        """A datagram numbered `sequence` was refused as malformed: it fills its place in the
        order (released as `Malformed`) instead of leaving a gap. Before the first packet, late,
        already held or too far ahead to hold, it changes nothing (its number is not trusted
        enough to give anything up for it)."""
        out: list[Released] = []
        if self._next is None:
            return out
        delta = (sequence - self._next) % _SEQ_MOD
        ext = self._next + delta
        if delta >= _SEQ_HALF or delta >= self.capacity or ext in self._held:
            return self._expire(now, out)
        self._held[ext] = (Malformed(sequence, timestamp), now)
        self._release_run(out)
        return self._expire(now, out)

    def advance(self, sequence: int) -> bool:
        """Fast path of `push`: nothing is held and `sequence` is the next expected (or first)
        packet, so it is released at once; True if the caller may use the packet now. False:
        nothing changed, call `push`."""
        if self._held:
            return False
        n = self._next
        if n is None:
            self._next = sequence + 1
        elif (n & 0xFFFF) == sequence:
            self._next = n + 1
        else:
            return False
        self._bad_seq = None
        return True

    def deadline(self) -> float | None:
        """When `poll` should be called next (None: nothing is waiting)."""
        if not self._held:
            return None
        return next(iter(self._held.values()))[1] + self.max_delay   # held in arrival order

    def poll(self, now: float) -> list[Released]:
        """Give up gaps whose later packets have waited `max_delay`."""
        return self._expire(now, [])

    def flush(self) -> list[Released]:
        """Release everything held (end of stream), reporting the gaps between."""
        out: list[Released] = []
        self._release_all(out)
        return out

    # internals

    def _expire(self, now: float, out: list[Released]) -> list[Released]:
        held = self._held
        while held:
            # the longest-waiting packet is the first still held: a dict keeps arrival order
            oldest = next(iter(held))
            if now - held[oldest][1] < self.max_delay:
                break
            self._release_below(oldest + 1, out)
        return out

    def _release_all(self, out: list[Released]) -> None:
        if self._held:
            self._release_below(max(self._held) + 1, out)

    def _release_below(self, limit: int, out: list[Released]) -> None:
        """Release held packets below extended number `limit`, reporting gaps; then the run after."""
        assert self._next is not None
        for ext in sorted(e for e in self._held if e < limit):
            if ext > self._next:
                self._report(ext - self._next, out)
            out.append(self._held.pop(ext)[0])
            self._next = ext + 1
        if limit > self._next:
            self._report(limit - self._next, out)
            self._next = limit
        self._release_run(out)

    def _release_run(self, out: list[Released]) -> None:
        held = self._held
        n = self._next
        while n in held:
            out.append(held.pop(n)[0])
            n += 1
        self._next = n

    def _report(self, count: int, out: list[Released]) -> None:
        assert self._next is not None
        self.lost += count
        out.append(Lost(self._next & 0xFFFF, count))
