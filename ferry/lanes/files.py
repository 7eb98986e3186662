"""The files lane: whole files from the outer spool to the inner spool.

Pure: the agent reads the spool file, this module names its type from its
bytes, checks its name, builds the canonical object, and (inner side)
re-checks that the object is consistent with its own content.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator

from ferry import limits
from ferry.crypto import sm3
from ferry.pb import ferry_pb2

LANE = "files"

# --- media types ------------------------------------------------------------

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


# --- file names ---------------------------------------------------------------

# Characters that render like "/" or "\" and fool a reader or a later tool.
_LOOKALIKE_SEPARATORS = frozenset(
    "\u2215"    # DIVISION SLASH
    "\u2044"    # FRACTION SLASH
    "\uff0f"    # FULLWIDTH SOLIDUS
    "\u29f8"    # BIG SOLIDUS
    "\u2571"    # BOX DRAWINGS LIGHT DIAGONAL UPPER RIGHT TO LOWER LEFT
    "\u2216"    # SET MINUS
    "\u29f5"    # REVERSE SOLIDUS OPERATOR
    "\u29f9"    # BIG REVERSE SOLIDUS
    "\ufe68"    # SMALL REVERSE SOLIDUS
    "\uff3c"    # FULLWIDTH REVERSE SOLIDUS
)
# Not allowed in names on Windows (the inner spool may be shared over SMB).
_WINDOWS_FORBIDDEN = frozenset('<>:"|?*')
# Control, format (bidi overrides), surrogate, private use, unassigned, and
# line/paragraph separators.
_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
_WINDOWS_RESERVED = frozenset(
    ["CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"]
    + [f"{dev}{n}" for dev in ("COM", "LPT") for n in "0123456789\u00b9\u00b2\u00b3"]
)


def check_file_name(name: str) -> str | None:
    """Return why ``name`` is not an acceptable base file name, or None if it is.

    These rules hold whatever the policy says; a policy's name_pattern can only
    narrow them.
    """
    if not isinstance(name, str):
        return "name is not a string"
    if not name:
        return "name is empty"
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:
        return "name is not valid UTF-8"
    if len(encoded) > limits.FILE_NAME_MAX:
        return f"name is {len(encoded)} bytes (max {limits.FILE_NAME_MAX})"
    for ch in name:
        if ch in "/\\":
            return f"name {name!r} contains a path separator"
        if ch in _LOOKALIKE_SEPARATORS:
            return f"name {name!r} contains U+{ord(ch):04X}, which looks like a path separator"
        if ch in _WINDOWS_FORBIDDEN:
            return f"name {name!r} contains {ch!r}, not allowed in file names"
        if unicodedata.category(ch) in _FORBIDDEN_CATEGORIES:
            return f"name {name!r} contains control or invisible character U+{ord(ch):04X}"
    if unicodedata.normalize("NFC", name) != name:
        return f"name {name!r} is not in Unicode NFC form"
    if name in (".", ".."):
        return f"name {name!r} is not a file name"
    if name[0] == ".":
        return f"name {name!r} starts with '.' (hidden file)"
    if name[0] == "-":
        return f"name {name!r} starts with '-'"
    if name[0].isspace():
        return f"name {name!r} starts with a space"
    if name[-1] == "." or name[-1].isspace():
        return f"name {name!r} ends with a space or dot"
    if name.split(".", 1)[0].rstrip(" ").upper() in _WINDOWS_RESERVED:
        return f"name {name!r} is a reserved device name on Windows"
    return None


def output_name_candidates(name: str) -> Iterator[str]:
    """Yield ``name``, then "stem (1).ext", "stem (2).ext", ... (bounded).

    Every candidate passes check_file_name when ``name`` does: stems are
    shortened to keep within FILE_NAME_MAX.
    """
    yield name
    dot = name.rfind(".")
    stem, ext = (name[:dot], name[dot:]) if dot > 0 else (name, "")
    for n in range(1, limits.OUTPUT_NAME_CANDIDATES_MAX):
        suffix = f" ({n}){ext}"
        budget = limits.FILE_NAME_MAX - len(suffix.encode("utf-8"))
        short = _truncate_utf8(stem, budget)
        if not short:
            continue
        candidate = short + suffix
        if check_file_name(candidate) is None:
            yield candidate


def _truncate_utf8(text: str, max_bytes: int) -> str:
    """The longest prefix of ``text`` that is at most ``max_bytes`` in UTF-8."""
    if max_bytes <= 0:
        return ""
    encoded = text.encode("utf-8", "surrogatepass")
    if len(encoded) <= max_bytes:
        return text
    return encoded[:max_bytes].decode("utf-8", "ignore")


# --- canonical objects --------------------------------------------------------

def make_file_object(
    *,
    object_id: int,
    name: str,
    content: bytes,
    source: str,
    destination: str,
    now: float,
) -> ferry_pb2.CanonicalObject:
    """Build the canonical object for one spool file (outer side)."""
    obj = ferry_pb2.CanonicalObject(
        object_id=object_id,
        lane=LANE,
        source=ferry_pb2.Source(name=source),
        destination=destination,
        created=now,
        file=ferry_pb2.FileObject(
            name=name,
            size=len(content),
            media_type=sniff_media_type(content),
            sm3=sm3(content),
            content=content,
        ),
    )
    return obj


def check_file_object(obj: ferry_pb2.CanonicalObject) -> str | None:
    """Return why ``obj`` is not a consistent files-lane object, or None (inner side).

    Checks what the policy takes on trust: the name rules, the declared size
    and SM3 against the content, and the declared media type against the
    content sniffed again.
    """
    if obj.lane != LANE:
        return f"lane {obj.lane!r} is not {LANE!r}"
    if obj.WhichOneof("body") != "file":
        return "object has no file body"
    f = obj.file
    reason = check_file_name(f.name)
    if reason is not None:
        return reason
    length = len(f.content)
    if length > limits.FILE_MAX or f.size > limits.FILE_MAX:
        return f"size {max(length, f.size)} exceeds FILE_MAX {limits.FILE_MAX}"
    if f.size != length:
        return f"declared size {f.size} but content is {length} bytes"
    if f.sm3 != sm3(f.content):
        return "sm3 does not match content"
    sniffed = sniff_media_type(f.content)
    if f.media_type != sniffed:
        return f"declared media type {f.media_type} but content is {sniffed}"
    return None
