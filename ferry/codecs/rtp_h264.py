"""RTP payload format for H.264 (RFC 6184), non-interleaved mode (packetization-mode 0 and 1).

Packetizer: a NAL unit that fits is sent alone (§5.6), a larger one as FU-A fragments (§5.8);
small neighbours may be aggregated into STAP-A packets (§5.7.1). Depacketizer: single NAL unit,
STAP-A and FU-A packets; STAP-B, MTAP and FU-B belong to the interleaved mode and are dropped.
NAL units are given and returned without start codes.
"""

from __future__ import annotations

from typing import Sequence

from ferry.codecs.errors import RtpError
from ferry.codecs.rtp_payload import DEFAULT_MAX_PAYLOAD, Depacketizer, aggregate_groups

# payload structure types (RFC 6184 §5.2, Table 1)
STAP_A = 24
STAP_B = 25
MTAP16 = 26
MTAP24 = 27
FU_A = 28
FU_B = 29
_INTERLEAVED = {STAP_B: "STAP-B", MTAP16: "MTAP16", MTAP24: "MTAP24", FU_B: "FU-B"}


def packetize(nal_units: Sequence[bytes], max_payload: int = DEFAULT_MAX_PAYLOAD, *,
              aggregate: bool = False) -> list[bytes]:
    """RTP payloads for the NAL units of one access unit, in order (marker on the last one)."""
    if max_payload < 3:
        raise RtpError("max_payload must leave room for FU-A headers (at least 3 bytes)")
    for nal in nal_units:
        if not nal:
            raise RtpError("empty NAL unit")
        if nal[0] & 0x80 or not 1 <= nal[0] & 0x1F <= 23:
            raise RtpError(f"NAL unit header 0x{nal[0]:02x} cannot be sent as a NAL unit (RFC 6184 §5.6)")
    if aggregate:
        return _with_stap_a(nal_units, max_payload)
    out: list[bytes] = []
    for nal in nal_units:
        _single_or_fu_a(bytes(nal), max_payload, out)
    return out


def _with_stap_a(nal_units: Sequence[bytes], max_payload: int) -> list[bytes]:
    out: list[bytes] = []
    run: list[bytes] = []

    def flush_run() -> None:
        for group in aggregate_groups(run, max_payload, 1):
            if len(group) == 1:
                _single_or_fu_a(group[0], max_payload, out)
                continue
            # STAP-A header: F = OR of the Fs, NRI = the highest NRI (RFC 6184 §5.7)
            f = max(n[0] & 0x80 for n in group)
            nri = max(n[0] & 0x60 for n in group)
            parts = [bytes((f | nri | STAP_A,))]
            for n in group:
                parts.append(len(n).to_bytes(2, "big"))
                parts.append(n)
            out.append(b"".join(parts))
        run.clear()

    for nal in nal_units:
        nal = bytes(nal)
        if len(nal) + 3 <= max_payload:
            run.append(nal)
        else:
            flush_run()
            _single_or_fu_a(nal, max_payload, out)
    flush_run()
    return out


def _single_or_fu_a(nal: bytes, max_payload: int, out: list[bytes]) -> None:
    if len(nal) <= max_payload:  # single NAL unit packet (RFC 6184 §5.6)
        out.append(nal)
        return
    # FU-A (RFC 6184 §5.8): FU indicator = F|NRI of the NAL + type 28; FU header = S|E|R=0|type
    indicator = bytes(((nal[0] & 0xE0) | FU_A,))
    nal_type = nal[0] & 0x1F
    step = max_payload - 2
    body = memoryview(nal)[1:]
    for start in range(0, len(body), step):
        s = 0x80 if start == 0 else 0
        e = 0x40 if start + step >= len(body) else 0
        out.append(indicator + bytes((s | e | nal_type,)) + body[start:start + step])


class H264Depacketizer(Depacketizer):
    """Access units of NAL units from RTP/H.264 packets in sequence order (RFC 6184)."""

    __slots__ = ()

    def _payload(self, p: memoryview | bytes) -> None:
        if not p:
            self._drop("empty payload", 0)
            return
        b0 = p[0]
        if b0 & 0x80:  # RFC 6184 §5.3: a receiver may discard a NAL unit with F set
            self._drop("forbidden_zero_bit set", len(p))
            return
        kind = b0 & 0x1F
        if 1 <= kind <= 23:
            self._nal(bytes(p))
        elif kind == STAP_A:
            self._stap_a(p)
        elif kind == FU_A:
            self._fu_a(p)
        elif kind in _INTERLEAVED:
            self._drop(f"{_INTERLEAVED[kind]} needs the interleaved mode (not supported)", len(p))
        else:
            self._drop(f"reserved NAL unit type {kind}", len(p))

    def _stap_a(self, p: memoryview | bytes) -> None:
        """STAP-A (RFC 6184 §5.7.1): header, then (16-bit size, NAL unit) repeated."""
        units = []
        i, n = 1, len(p)
        while i < n:
            if i + 2 > n:
                self._drop("STAP-A size field truncated", len(p))
                return
            size = (p[i] << 8) | p[i + 1]
            i += 2
            if size == 0 or i + size > n:
                self._drop(f"STAP-A unit of {size} bytes does not fit", len(p))
                return
            unit = p[i:i + size]
            if unit[0] & 0x80 or not 1 <= unit[0] & 0x1F <= 23:
                self._drop(f"STAP-A carries NAL unit header 0x{unit[0]:02x}", len(p))
                return
            units.append(bytes(unit))
            i += size
        if not units:
            self._drop("STAP-A without NAL units", len(p))
            return
        for unit in units:
            self._nal(unit)

    def _fu_a(self, p: memoryview | bytes) -> None:
        """FU-A (RFC 6184 §5.8): FU indicator, FU header S|E|R|type, fragment."""
        if len(p) < 3:
            self._drop("FU-A without a fragment", len(p))
            return
        fh = p[1]
        start, end, kind = fh & 0x80, fh & 0x40, fh & 0x1F
        if start and end:
            self._drop("FU-A with both start and end bits", len(p))
        elif not 1 <= kind <= 23:
            self._drop(f"FU-A of NAL unit type {kind}", len(p))
        elif start:
            self._fu_start(bytes(((p[0] & 0xE0) | kind,)), kind, p[2:])
        else:
            self._fu_next(kind, p[2:], bool(end))
