"""Reading an MPEG-2 program stream in tests: the program stream maps it carries."""
from __future__ import annotations

from ferry.codecs.mpeg_ps import parse_psm


def psms(ps: bytes) -> list[list[tuple[int, int]]]:
    """The (stream_type, stream_id) entries of every PSM in a program stream, in order."""
    out, i = [], ps.find(b"\x00\x00\x01\xbc")
    while i >= 0:
        length = int.from_bytes(ps[i + 4:i + 6], "big")
        out.append(parse_psm(ps[i:i + 6 + length]))
        i = ps.find(b"\x00\x00\x01\xbc", i + 6 + length)
    return out
