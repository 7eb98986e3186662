"""Where a file's format ends: the offset just past the last byte that belongs to a PNG, JPEG,
GIF, ZIP or PDF, found by walking its structure (never by searching for an end marker that a
thumbnail, a comment or compressed data may also hold). Pure.

``format_end(data, media_type)`` returns that offset, or None for a type whose end is not
defined here (text, gzip, executables, octet-stream). It raises ``FormatError`` when the walk
cannot reach the end: a truncated file, a length or offset that points outside it, a
structure that is not the format's. Whatever lies between the end and ``len(data)`` is
trailing data (a ZIP appended to a picture, a script after a PDF) that the files lane refuses.

Every walk is linear in the size of the data: each step moves forward by at least one byte
(most by a length field), or uses one ``re``/``find`` pass over a region not read before.

- PNG (ISO/IEC 15948 section 5): the 8-byte signature, then chunks (length, type, data, CRC-32)
  from IHDR to IEND; lengths below 2^31, types of four ASCII letters, each CRC checked.
- JPEG (ITU-T T.81 annex B): SOI, then marker segments walked by their lengths (so an EOI in an
  APP1 Exif thumbnail is skipped with its segment), entropy-coded data after each SOS up to the
  next marker that is not a stuffed 0xFF00 or a restart marker, until EOI.
- GIF (GIF89a specification sections 17-27): header, logical screen descriptor and its global
  colour table, then image descriptors (local colour table, LZW code size, data sub-blocks)
  and extensions (label, sub-blocks) until the trailer 0x3B.
- ZIP (APPNOTE.TXT 4.3): the end of central directory record whose central directory (walked
  entry by entry, ZIP64 locator and record included) lies right before it; the record and its
  comment end the archive.
- PDF (ISO 32000-1 section 7.5.5): the last ``%%EOF`` marker and an optional end of line
  (CRLF, LF or CR). Incremental updates append after an earlier ``%%EOF``: only bytes after the
  last one count.
"""

from __future__ import annotations

import re
import struct
import zlib

from ferry import limits
from ferry.codecs import media_type as mt
from ferry.codecs.errors import CodecError


class FormatError(CodecError):
    """The content does not walk to its format's end (truncated or malformed)."""


def format_end(data: bytes, media_type: str) -> int | None:
    """The offset just past the end of ``data``'s format, or None if the type has no end here."""
    walker = _WALKERS.get(media_type)
    if walker is None:
        return None
    view = bytes(data)
    return walker(view)


def has_format_end(media_type: str) -> bool:
    """Whether ``format_end`` finds the end of this type (PNG, JPEG, GIF, ZIP, PDF)."""
    return media_type in _WALKERS


# --- PNG --------------------------------------------------------------------------------

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_U32 = struct.Struct(">I")


def _png_end(data: bytes) -> int:
    if not data.startswith(_PNG_SIGNATURE):
        raise FormatError("PNG: no signature")
    pos, n, first = len(_PNG_SIGNATURE), len(data), True
    while True:
        if pos + 12 > n:
            raise FormatError(f"PNG: truncated chunk header at {pos} (no IEND)")
        length = int(_U32.unpack_from(data, pos)[0])
        kind = data[pos + 4:pos + 8]
        if length >= 1 << 31:
            raise FormatError(f"PNG: chunk length {length} at {pos} is 2^31 or more")
        if not kind.isalpha() or not kind.isascii():
            raise FormatError(f"PNG: chunk type {kind!r} at {pos} is not four ASCII letters")
        if first and kind != b"IHDR":
            raise FormatError(f"PNG: first chunk is {kind.decode('ascii')}, not IHDR")
        first = False
        end = pos + 8 + length + 4
        if end > n:
            raise FormatError(f"PNG: chunk {kind.decode('ascii')} at {pos} runs past the end of the file")
        (crc,) = _U32.unpack_from(data, end - 4)
        if zlib.crc32(data[pos + 4:end - 4]) != crc:
            raise FormatError(f"PNG: chunk {kind.decode('ascii')} at {pos} fails its CRC")
        if kind == b"IEND":
            if length:
                raise FormatError("PNG: IEND chunk is not empty")
            return end
        pos = end


# --- JPEG -------------------------------------------------------------------------------

# After an SOS header: the next marker that ends the entropy-coded data (0xFF fill bytes may
# precede it: this finds the last of them). 0xFF00 is a stuffed data byte and 0xFFD0..0xFFD7
# are restart markers, both part of the data. One byte after 0xFF, no repetition: linear.
_JPEG_SCAN_END = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})     # TEM, RST0..7: no length field


def _jpeg_end(data: bytes) -> int:
    if not data.startswith(b"\xff\xd8"):
        raise FormatError("JPEG: no SOI marker")
    pos, n = 2, len(data)
    while True:
        if pos >= n or data[pos] != 0xFF:
            raise FormatError(f"JPEG: expected a marker at {pos} (no EOI)")
        while pos < n and data[pos] == 0xFF:      # fill bytes before a marker
            pos += 1
        if pos >= n:
            raise FormatError("JPEG: file ends in fill bytes (no EOI)")
        marker = data[pos]
        pos += 1
        if marker == 0xD9:                         # EOI
            return pos
        if marker == 0xD8 or marker == 0x00:
            raise FormatError(f"JPEG: unexpected marker 0xFF{marker:02X} at {pos - 2}")
        if marker in _STANDALONE:
            continue
        if pos + 2 > n:
            raise FormatError(f"JPEG: truncated segment length at {pos}")
        length = (data[pos] << 8) | data[pos + 1]
        if length < 2:
            raise FormatError(f"JPEG: segment length {length} at {pos} is below 2")
        pos += length
        if pos > n:
            raise FormatError(f"JPEG: segment 0xFF{marker:02X} runs past the end of the file")
        if marker == 0xDA:                         # SOS: entropy-coded data follows
            m = _JPEG_SCAN_END.search(data, pos)
            if m is None:
                raise FormatError("JPEG: scan data runs to the end of the file (no EOI)")
            pos = m.start()                        # at the marker's (last) 0xFF


# --- GIF --------------------------------------------------------------------------------

def _gif_sub_blocks(data: bytes, pos: int, what: str) -> int:
    """Skip data sub-blocks (a size byte, then that many bytes) to just past the terminator."""
    n = len(data)
    while True:
        if pos >= n:
            raise FormatError(f"GIF: {what} runs past the end of the file (no trailer)")
        size = data[pos]
        pos += 1 + size
        if size == 0:
            return pos


def _gif_end(data: bytes) -> int:
    if not (data.startswith(b"GIF87a") or data.startswith(b"GIF89a")):
        raise FormatError("GIF: no GIF87a/GIF89a header")
    n = len(data)
    if n < 13:
        raise FormatError("GIF: truncated logical screen descriptor")
    flags = data[10]
    pos = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    while True:
        if pos >= n:
            raise FormatError("GIF: no trailer (0x3B)")
        block = data[pos]
        if block == 0x3B:
            return pos + 1
        if block == 0x2C:                          # image descriptor
            if pos + 10 > n:
                raise FormatError(f"GIF: truncated image descriptor at {pos}")
            flags = data[pos + 9]
            pos += 10 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
            pos += 1                               # LZW minimum code size
            pos = _gif_sub_blocks(data, pos, "image data")
        elif block == 0x21:                        # extension: label, then sub-blocks
            pos = _gif_sub_blocks(data, pos + 2, f"extension 0x{data[pos + 1] if pos + 1 < n else 0:02X}")
        else:
            raise FormatError(f"GIF: unknown block 0x{block:02X} at {pos}")


# --- ZIP --------------------------------------------------------------------------------

_EOCD = b"PK\x05\x06"
_EOCD_FMT = struct.Struct("<4sHHHHIIH")          # 22 bytes
_ZIP64_LOCATOR = struct.Struct("<4sIQI")          # 20 bytes
_ZIP64_EOCD = struct.Struct("<4sQHHIIQQQQ")       # 56 bytes
_CENTRAL = struct.Struct("<4sHHHHHHIIIHHHHHII")   # 46 bytes


def _zip_end(data: bytes) -> int:
    """The end of the last end-of-central-directory record whose central directory lies right
    before it (an archive's own, not one inside a member or a comment)."""
    pos = len(data)
    # Signatures inside trailing data are passed over, at most ZIP_END_CANDIDATES of them: each
    # try walks a central directory, so a file made of signatures must not cost more.
    for _ in range(limits.ZIP_END_CANDIDATES):
        pos = data.rfind(_EOCD, 0, pos)
        if pos < 0:
            raise FormatError("ZIP: no end of central directory record")
        end = _zip_record_end(data, pos)
        if end is not None:
            return end
    raise FormatError(f"ZIP: none of the last {limits.ZIP_END_CANDIDATES} end of central directory "
                      "signatures ends a central directory")


def _zip_record_end(data: bytes, pos: int) -> int | None:
    """The end of the EOCD record at ``pos`` if its central directory checks out, else None."""
    n = len(data)
    if pos + 22 > n:
        return None
    _sig, disk, cd_disk, here, total, cd_size, cd_offset, comment = _EOCD_FMT.unpack_from(data, pos)
    end: int = pos + 22 + int(comment)
    if end > n or disk != 0 or cd_disk != 0 or here != total:
        return None
    cd_end = pos
    if 0xFFFF in (here, total) or 0xFFFFFFFF in (cd_size, cd_offset):
        loc = pos - 20
        if loc < 0 or data[loc:loc + 4] != b"PK\x06\x07":
            return None
        _s, _d, rec, _disks = _ZIP64_LOCATOR.unpack_from(data, loc)
        if rec + 56 > loc or data[rec:rec + 4] != b"PK\x06\x06":
            return None
        fields = _ZIP64_EOCD.unpack_from(data, rec)
        rec_size, total, cd_size, cd_offset = fields[1], fields[7], fields[8], fields[9]
        if rec + 12 + rec_size != loc:
            return None
        cd_end = rec
    if cd_offset + cd_size != cd_end:
        return None
    p = cd_offset
    for _ in range(total):
        if p + 46 > cd_end or data[p:p + 4] != b"PK\x01\x02":
            return None
        f = _CENTRAL.unpack_from(data, p)
        p += 46 + f[10] + f[11] + f[12]
    if p != cd_end:
        return None
    return end


# --- PDF --------------------------------------------------------------------------------

def _pdf_end(data: bytes) -> int:
    if not data.startswith(b"%PDF-"):
        raise FormatError("PDF: no %PDF- header")
    pos = data.rfind(b"%%EOF")
    if pos < 0:
        raise FormatError("PDF: no %%EOF marker")
    end = pos + 5
    if data.startswith(b"\r\n", end):
        return end + 2
    if data.startswith(b"\n", end) or data.startswith(b"\r", end):
        return end + 1
    return end


_WALKERS = {mt.PNG: _png_end, mt.JPEG: _jpeg_end, mt.GIF: _gif_end, mt.ZIP: _zip_end, mt.PDF: _pdf_end}
