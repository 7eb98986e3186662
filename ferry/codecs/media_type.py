"""Media types named from a file's bytes alone (magic numbers, clean UTF-8 text), never from
its name; and the one table of which name extensions claim which types. Pure: the files lane
sniffs content on both sides; a policy may name only the types listed in ``MEDIA_TYPES``.
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


# Name extensions (lower case, without the dot) that claim a type: a file whose name ends in one
# must have that type by content (``extension_refusal``). An extension not listed claims
# nothing: the policy's media_types and name_pattern alone decide such a file.
EXTENSION_TYPES: dict[str, frozenset[str]] = {
    ext: frozenset(types)
    for exts, types in (
        (("pdf",), (PDF,)),
        (("png",), (PNG,)),
        (("jpg", "jpeg", "jpe", "jfif"), (JPEG,)),
        (("gif",), (GIF,)),
        (("zip", "docx", "xlsx", "pptx", "odt", "ods", "odp", "epub"), (ZIP,)),
        (("gz", "tgz"), (GZIP,)),
        (("exe", "dll", "sys", "scr", "cpl", "ocx", "efi"), (DOSEXEC,)),
        (("so", "elf"), (ELF,)),
        (("sh", "bash"), (SHELL,)),
        (("txt", "text", "csv", "tsv", "log", "md", "json", "xml", "yaml", "yml", "ini", "cfg", "conf"),
         (TEXT,)),
    )
    for ext in exts
}


def name_extension(name: str) -> str:
    """The last extension of ``name``, lower case, without the dot ("" if none)."""
    dot = name.rfind(".")
    return name[dot + 1:].lower() if dot > 0 else ""


def extension_refusal(name: str, media_type: str) -> str | None:
    """Why ``name``'s extension disagrees with the type detected from content, or None."""
    ext = name_extension(name)
    claimed = EXTENSION_TYPES.get(ext)
    if claimed is None or media_type in claimed:
        return None
    return (f"name {name!r} ends in .{ext}, which claims {' or '.join(sorted(claimed))}, "
            f"but the content is {media_type}")
