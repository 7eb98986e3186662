"""File names that are safe to write on the inner side, whatever the policy says: one base
name, UTF-8 in NFC, no separators or look-alikes, no control or invisible characters, no
Windows-reserved names; and the "stem (n).ext" names tried when a name is taken. Pure.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterator

from ferry import limits

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
