"""RTP payload format for H.265/HEVC (RFC 7798), without DONL (sprop-max-don-diff = 0).

The payload header is the 2-byte NAL unit header: F(1) Type(6) LayerId(6) TID(3) (§1.1.4).
Packetizer: single NAL unit packets (§4.4.1), FU fragments, type 49 (§4.4.3), optional
aggregation packets, type 48 (§4.4.2). Depacketizer: the same three; PACI (type 50) and the
unspecified types 51-63 are dropped. NAL units are given and returned without start codes.
"""

from __future__ import annotations

from typing import Sequence

from ferry.codecs.errors import RtpError
from ferry.codecs.rtp_payload import DEFAULT_MAX_PAYLOAD, Depacketizer, aggregate_groups

AP = 48
FU = 49
PACI = 50
_PACKET_TYPES = (AP, FU, PACI)


def nal_type(header0: int) -> int:
    return (header0 >> 1) & 0x3F


def _check_nal(nal: bytes | memoryview) -> str | None:
    """Why `nal` cannot travel as a NAL unit (None: it can)."""
    if len(nal) < 2:
        return "NAL unit shorter than its 2-byte header"
    if nal[0] & 0x80:
        return "forbidden_zero_bit set"
    if nal_type(nal[0]) > 47:
        return f"NAL unit type {nal_type(nal[0])} is an RTP packet type"
    if nal[1] & 0x07 == 0:
        return "nuh_temporal_id_plus1 is 0"
    return None


def packetize(nal_units: Sequence[bytes], max_payload: int = DEFAULT_MAX_PAYLOAD, *,
              aggregate: bool = False) -> list[bytes]:
    """RTP payloads for the NAL units of one access unit, in order (marker on the last one)."""
    if max_payload < 4:
        raise RtpError("max_payload must leave room for FU headers (at least 4 bytes)")
    nals = [bytes(n) for n in nal_units]
    for nal in nals:
        reason = _check_nal(nal)
        if reason:
            raise RtpError(reason)
    out: list[bytes] = []
    if not aggregate:
        for nal in nals:
            _single_or_fu(nal, max_payload, out)
        return out
    run: list[bytes] = []
    for nal in nals + [b""]:  # b"": end of the access unit
        if nal and len(nal) + 4 <= max_payload:
            run.append(nal)
            continue
        for group in aggregate_groups(run, max_payload, 2):
            out.append(group[0] if len(group) == 1 else _ap(group))
        run = []
        if nal:
            _single_or_fu(nal, max_payload, out)
    return out


def _ap(group: list[bytes]) -> bytes:
    """Aggregation packet (RFC 7798 §4.4.2): F = OR, LayerId and TID = the lowest of the units."""
    f = max(n[0] & 0x80 for n in group)
    layer = min(((n[0] & 1) << 5) | (n[1] >> 3) for n in group)
    tid = min(n[1] & 0x07 for n in group)
    parts = [bytes((f | (AP << 1) | (layer >> 5), ((layer & 0x1F) << 3) | tid))]
    for n in group:
        parts.append(len(n).to_bytes(2, "big"))
        parts.append(n)
    return b"".join(parts)


def _single_or_fu(nal: bytes, max_payload: int, out: list[bytes]) -> None:
    if len(nal) <= max_payload:  # single NAL unit packet (RFC 7798 §4.4.1)
        out.append(nal)
        return
    # FU (RFC 7798 §4.4.3): payload header with type 49, FU header S|E|FuType, fragment
    header = bytes(((nal[0] & 0x81) | (FU << 1), nal[1]))
    kind = nal_type(nal[0])
    step = max_payload - 3
    body = memoryview(nal)[2:]
    for start in range(0, len(body), step):
        s = 0x80 if start == 0 else 0
        e = 0x40 if start + step >= len(body) else 0
        out.append(header + bytes((s | e | kind,)) + body[start:start + step])


class H265Depacketizer(Depacketizer):
    """Access units of NAL units from RTP/H.265 packets in sequence order (RFC 7798)."""

    __slots__ = ()

    def _payload(self, p: memoryview | bytes) -> None:
        if len(p) < 2:
            self._drop("payload shorter than the payload header", len(p))
            return
        kind = nal_type(p[0])
        if kind == AP:
            self._ap(p)
            return
        if kind == FU:
            self._fu_packet(p)
            return
        reason = "PACI packets are not supported" if kind == PACI else _check_nal(p)
        if kind > PACI:
            reason = f"unspecified payload type {kind}"
        if reason:
            self._drop(reason, len(p))
        else:
            self._nal(bytes(p))

    def _ap(self, p: memoryview | bytes) -> None:
        """AP (RFC 7798 §4.4.2): payload header, then (16-bit size, NAL unit) repeated."""
        if p[0] & 0x80 or p[1] & 0x07 == 0:
            self._drop("AP payload header has F set or TID 0", len(p))
            return
        units = []
        i, n = 2, len(p)
        while i < n:
            if i + 2 > n:
                self._drop("AP size field truncated", len(p))
                return
            size = (p[i] << 8) | p[i + 1]
            i += 2
            if i + size > n:
                self._drop(f"AP unit of {size} bytes does not fit", len(p))
                return
            unit = p[i:i + size]
            reason = _check_nal(unit)
            if reason:
                self._drop(f"AP unit: {reason}", len(p))
                return
            units.append(bytes(unit))
            i += size
        if not units:
            self._drop("AP without NAL units", len(p))
            return
        for unit in units:
            self._nal(unit)

    def _fu_packet(self, p: memoryview | bytes) -> None:
        """FU (RFC 7798 §4.4.3): payload header, FU header S|E|FuType, fragment."""
        if len(p) < 4:
            self._drop("FU without a fragment", len(p))
            return
        if p[0] & 0x80 or p[1] & 0x07 == 0:
            self._drop("FU payload header has F set or TID 0", len(p))
            return
        fh = p[2]
        start, end, kind = fh & 0x80, fh & 0x40, fh & 0x3F
        if start and end:
            self._drop("FU with both start and end bits", len(p))
        elif kind in _PACKET_TYPES or kind > PACI:
            self._drop(f"FU of NAL unit type {kind}", len(p))
        elif start:
            self._fu_start(bytes(((p[0] & 0x81) | (kind << 1), p[1])), kind, p[3:])
        else:
            self._fu_next(kind, p[3:], bool(end))
