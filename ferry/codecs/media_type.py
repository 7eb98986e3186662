"""Media types named from a file's bytes alone (magic numbers, clean UTF-8 text), never from
its name. Pure: the files lane sniffs content on both sides; a policy may name only the types
listed in ``MEDIA_TYPES``.
"""

from __future__ import annotations

import re

from ferry import limits

PDF = "application/pdf"
PNG = "image/png"
JPEG = "image/jpeg"
GIF = "image/gif"
ZIP = "application/zip"
GZIP = "application/gzip"
ELF = "application/x-executable"
DOSEXEC = "application/x-dosexec"
SHELL = "application/x-sh"
TEXT = "text/plain"
OCTET_STREAM = "application/octet-stream"

# Magic numbers, checked in order against the head of the content.
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"%PDF-", PDF),
    (b"\x89PNG\r\n\x1a\n", PNG),
    (b"\xff\xd8\xff", JPEG),
    (b"GIF87a", GIF),
    (b"GIF89a", GIF),
    (b"PK\x03\x04", ZIP),
    (b"PK\x05\x06", ZIP),       # empty archive
    (b"PK\x07\x08", ZIP),       # spanned archive
    (b"\x1f\x8b", GZIP),
    (b"\x7fELF", ELF),
    (b"MZ", DOSEXEC),
    (b"#!", SHELL),
)

# Every value sniff_media_type can return; a policy may only name these.
MEDIA_TYPES: tuple[str, ...] = (
    PDF, PNG, JPEG, GIF, ZIP, GZIP, ELF, DOSEXEC, SHELL, TEXT, OCTET_STREAM,
)

# C0 controls except \t \n \r, DEL, and C1 controls (U+0080..U+009F, which in
# valid UTF-8 are always the two bytes C2 80..C2 9F).
_TEXT_CONTROL = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]|\xc2[\x80-\x9f]")


def sniff_media_type(data: bytes) -> str:
    """Name the media type of ``data`` from its bytes alone (never the file name)."""
    head = bytes(data[: limits.FILE_SNIFF_HEAD])
    for magic, media_type in _MAGIC:
        if head.startswith(magic):
            return media_type
    if _is_clean_text(data):
        return TEXT
    return OCTET_STREAM


def _is_clean_text(data: bytes) -> bool:
    """The whole content is UTF-8 with no control characters but tab, CR, LF."""
    try:
        bytes(data).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return _TEXT_CONTROL.search(data) is None
