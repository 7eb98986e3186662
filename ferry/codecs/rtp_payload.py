"""What the RTP payload formats for H.264 (RFC 6184) and H.265 (RFC 7798) share.

A depacketizer takes the RTP packets of one stream in sequence order (from a ReorderBuffer) and
returns `RtpAccessUnit`s — the NAL units of one picture, delimited by the marker bit or, when the
marker is lost or never set, by a change of RTP timestamp (RFC 6184 §5.1, RFC 7798 §4.1); a
marker on a fragment before the end of its NAL unit closes nothing (issue 12 item 1) — and
`Dropped` events, each with a reason, for everything it had to discard. A sequence gap drops any
fragmented NAL unit in progress (its middle or end is missing) and marks the access units
around the gap `lossy`. Payload bytes are never trusted: nothing raises, everything is bounded.
"""

from __future__ import annotations

from dataclasses import dataclass

from ferry import limits
from ferry.codecs.rtp import RtpPacket

DEFAULT_MAX_PAYLOAD = 1400  # RTP payload bytes per packet: 1500-byte MTU less IP/UDP/RTP, with room


@dataclass(frozen=True, slots=True)
class RtpAccessUnit:
    """The NAL units (no start codes) carried with one RTP timestamp.

    `lossy`: packets of this access unit, or just before it, were lost or dropped.
    `marker`: closed by the marker bit (False: by a timestamp change or `flush`).
    """

    timestamp: int
    nal_units: tuple[bytes, ...]
    lossy: bool
    marker: bool


@dataclass(frozen=True, slots=True)
class Dropped:
    """`nbytes` of payload discarded at or before packet `sequence`, and why."""

    reason: str
    sequence: int
    nbytes: int


Event = RtpAccessUnit | Dropped


class Depacketizer:
    """Access units from the RTP packets of one stream; a subclass reads its payload format."""

    __slots__ = ("max_bytes", "max_nals", "_last_seq", "_ts", "_nals", "_bytes", "_lossy",
                 "_after_gap", "_discarding", "_orphans", "_fu", "_fu_header", "_fu_type", "_fu_size",
                 "_out", "_seq", "access_units", "dropped")

    def __init__(self, max_bytes: int = limits.RTP_ACCESS_UNIT_MAX,
                 max_nals: int = limits.RTP_ACCESS_UNIT_NALS_MAX) -> None:
        self.max_bytes = max_bytes
        self.max_nals = max_nals
        self._last_seq: int | None = None
        self._ts: int | None = None  # timestamp of the access unit in progress
        self._nals: list[bytes] = []
        self._bytes = 0
        self._lossy = False
        self._after_gap = False
        self._discarding = False  # the access unit in progress overflowed: ignore it to its end
        self._orphans = False  # fragments without their start are expected (already reported)
        self._fu: list[bytes] | None = None  # fragments of the NAL unit in progress
        self._fu_header = b""
        self._fu_type = -1
        self._fu_size = 0
        self._out: list[Event] = []
        self._seq = 0
        self.access_units = 0
        self.dropped = 0

    def push(self, packet: RtpPacket) -> list[Event]:
        out = self._out = []
        seq = self._seq = packet.sequence
        if self._last_seq is not None and seq != (self._last_seq + 1) & 0xFFFF:
            self._gap()
        self._last_seq = seq
        if self._ts is not None and packet.timestamp != self._ts:
            self._close(marker=False)
        if self._ts is None:
            self._ts = packet.timestamp
            self._lossy = self._after_gap
            self._after_gap = False
        if not self._discarding:  # (an overflow is reported once, not once per packet)
            self._payload(packet.payload)
        if packet.marker and self._fu is None:   # a marker inside a fragmented NAL unit is no end
            self._close(marker=True)
        self._out = []
        return out

    def gap(self) -> list[Event]:
        """Packets are missing here (a `Lost` from the ReorderBuffer); sequence gaps are seen anyway."""
        out = self._out = []
        self._gap()
        self._out = []
        return out

    def between_access_units(self) -> bool:
        """Nothing in progress: the last access unit was closed (by its marker), no fragment pending."""
        return self._ts is None and self._fu is None and not self._nals

    def skip_sequence(self) -> None:
        """The next sequence number was taken by a packet that is not this stream's payload (a
        malformed one, between access units): the packet after it is no gap."""
        if self._last_seq is not None:
            self._last_seq = (self._last_seq + 1) & 0xFFFF

    def flush(self) -> list[Event]:
        """End of stream: close the access unit in progress."""
        out = self._out = []
        self._close(marker=False)
        self._out = []
        return out

    # for subclasses

    def _payload(self, payload: memoryview | bytes) -> None:
        raise NotImplementedError

    def _nal(self, nal: bytes) -> None:
        """One complete NAL unit of the access unit in progress."""
        self._fu_abort("fragmented NAL unit without its end")
        self._orphans = False
        self._add(nal)

    def _drop(self, reason: str, nbytes: int) -> None:
        self.dropped += 1
        self._lossy = True
        self._out.append(Dropped(reason, self._seq, nbytes))

    def _fu_start(self, header: bytes, fu_type: int, chunk: memoryview | bytes) -> None:
        self._fu_abort("fragmented NAL unit without its end")
        self._orphans = False
        self._fu = []
        self._fu_header = header
        self._fu_type = fu_type
        self._fu_size = len(header)
        self._fu_add(chunk)

    def _fu_next(self, fu_type: int, chunk: memoryview | bytes, end: bool) -> None:
        """A middle (or, with `end`, the last) fragment."""
        if self._fu is None:
            if not self._orphans:  # the rest of this NAL unit's fragments go silently
                self._drop("fragment without a start", len(chunk))
                self._orphans = True
            return
        if fu_type != self._fu_type:
            self._fu_abort("fragment of another NAL unit type")
            self._drop("fragment of another NAL unit type", len(chunk))
            return
        self._fu_add(chunk)
        if end and self._fu is not None:
            nal = self._fu_header + b"".join(self._fu)
            self._fu = None
            self._add(nal)

    # internals

    def _gap(self) -> None:
        self._fu_abort("fragmented NAL unit lost a fragment")
        self._orphans = True
        self._lossy = True
        self._after_gap = True

    def _fu_add(self, chunk: memoryview | bytes) -> None:
        assert self._fu is not None
        if self._discarding:
            self._fu = None
            return
        self._fu_size += len(chunk)
        if self._bytes + self._fu_size > self.max_bytes:
            self._overflow(self._fu_size)
            return
        self._fu.append(bytes(chunk))

    def _fu_abort(self, reason: str) -> None:
        if self._fu is not None:
            size = self._fu_size
            self._fu = None
            self._drop(reason, size)

    def _add(self, nal: bytes) -> None:
        if self._discarding:
            return
        if self._bytes + len(nal) > self.max_bytes or len(self._nals) >= self.max_nals:
            self._overflow(len(nal))
            return
        self._nals.append(nal)
        self._bytes += len(nal)

    def _overflow(self, nbytes: int) -> None:
        self._fu = None
        self._drop("access unit too large", self._bytes + nbytes)
        self._nals = []
        self._bytes = 0
        self._discarding = True

    def _close(self, marker: bool) -> None:
        self._fu_abort("fragmented NAL unit without its end")
        if self._nals:
            self.access_units += 1
            self._out.append(RtpAccessUnit(self._ts or 0, tuple(self._nals), self._lossy, marker))
        elif self._lossy:  # nothing of it survived: the next access unit follows a loss
            self._after_gap = True
        self._ts = None
        self._nals = []
        self._bytes = 0
        self._lossy = False
        self._discarding = False
        self._orphans = False


def aggregate_groups(nal_units: list[bytes], max_payload: int, header_size: int) -> list[list[bytes]]:
    """Greedy runs of consecutive NAL units that fit one aggregation packet (2-byte size each)."""
    groups: list[list[bytes]] = []
    current: list[bytes] = []
    size = header_size
    for nal in nal_units:
        need = 2 + len(nal)
        if current and size + need <= max_payload:
            current.append(nal)
            size += need
            continue
        current = [nal]
        groups.append(current)
        size = header_size + need
    return groups
