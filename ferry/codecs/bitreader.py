"""Bounds-checked bit reader for RBSP syntax (H.264/H.265 §7.2): u(n), ue(v), se(v).

Every read past the end, and every Exp-Golomb code longer than 32 bits, raises NalError.
"""

from __future__ import annotations

from ferry.codecs.nal import NalError

UE_MAX = (1 << 32) - 2   # the largest ue(v) the standards use (uvlcSize 32 bits)
_LEADING_ZEROS_MAX = 31


def unescape_rbsp(data: bytes) -> bytes:
    """Remove emulation_prevention_three_byte (00 00 03 -> 00 00) from NAL unit bytes (§7.4.1)."""
    i = data.find(b"\x00\x00\x03")
    if i < 0:
        return bytes(data)
    out = bytearray()
    start = 0
    while i >= 0:
        out += data[start:i + 2]
        start = i + 3
        i = data.find(b"\x00\x00\x03", start)
    out += data[start:]
    return bytes(out)


class BitReader:
    """Reads an RBSP most significant bit first."""

    __slots__ = ("_data", "_pos", "_nbits")

    def __init__(self, data: bytes) -> None:
        self._data = bytes(data)
        self._pos = 0
        self._nbits = len(self._data) * 8

    @property
    def position(self) -> int:
        """Bits read so far."""
        return self._pos

    @property
    def bits_left(self) -> int:
        return self._nbits - self._pos

    def u(self, n: int) -> int:
        """n-bit unsigned integer, 0 <= n <= 64."""
        if n == 0:
            return 0
        if not 0 < n <= 64:
            raise NalError("bad bit count")
        pos = self._pos
        end = pos + n
        if end > self._nbits:
            raise NalError("read past the end of the RBSP")
        first = pos >> 3
        last = (end + 7) >> 3
        chunk = int.from_bytes(self._data[first:last], "big")
        chunk >>= (last << 3) - end
        self._pos = end
        return chunk & ((1 << n) - 1)

    def flag(self) -> bool:
        """u(1) as a bool."""
        return bool(self.u(1))

    def skip(self, n: int) -> None:
        if n < 0 or self._pos + n > self._nbits:
            raise NalError("skip past the end of the RBSP")
        self._pos += n

    def ue(self, maximum: int = UE_MAX) -> int:
        """ue(v) Exp-Golomb (§9.1); values above `maximum` raise NalError."""
        zeros = 0
        while self.u(1) == 0:
            zeros += 1
            if zeros > _LEADING_ZEROS_MAX:
                raise NalError("Exp-Golomb code too long")
        value = (1 << zeros) - 1 + self.u(zeros)
        if value > maximum:
            raise NalError("Exp-Golomb value out of range")
        return value

    def se(self, limit: int = 1 << 31) -> int:
        """se(v) signed Exp-Golomb (§9.1.1); |value| above `limit` raises NalError."""
        k = self.ue()
        value = (k + 1) >> 1 if k & 1 else -(k >> 1)
        if not -limit <= value <= limit:
            raise NalError("signed Exp-Golomb value out of range")
        return value

    def more_rbsp_data(self) -> bool:
        """True while data remains before the rbsp_stop_one_bit (§7.2)."""
        if self._pos >= self._nbits:
            return False
        data = self._data
        last = len(data) - 1
        while last >= 0 and data[last] == 0:
            last -= 1
        if last < 0:
            return False
        b = data[last]
        stop_bit = last * 8 + 7 - ((b & -b).bit_length() - 1)
        return self._pos < stop_bit
