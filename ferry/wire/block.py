"""Block plaintext: a sequence of object fragments (proto/WIRE.md).

fragment = object_id u64, total_len u32, offset u32, frag_len u32, then frag_len bytes.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from ferry import limits
from ferry.wire.errors import WireError

FRAGMENT_HEADER = struct.Struct(">QIII")
FRAGMENT_HEADER_SIZE = FRAGMENT_HEADER.size  # 20


class Fragment(NamedTuple):
    """One object fragment of a block plaintext; data is a view into the plaintext."""

    object_id: int
    total_len: int
    offset: int
    data: memoryview


def fragment_header(object_id: int, total_len: int, offset: int, frag_len: int) -> bytes:
    """The 20-byte header of one fragment."""
    return FRAGMENT_HEADER.pack(object_id, total_len, offset, frag_len)


def parse_fragments(plaintext: bytes | memoryview, object_max: int = limits.OBJECT_MAX) -> list[Fragment]:
    """Split a block plaintext into validated fragments; WireError on any inconsistency."""
    view = memoryview(plaintext)
    n = len(view)
    pos = 0
    out: list[Fragment] = []
    unpack = FRAGMENT_HEADER.unpack_from
    seen: dict[int, int] = {}
    while pos < n:
        if n - pos < FRAGMENT_HEADER_SIZE:
            raise WireError("truncated fragment header")
        object_id, total_len, offset, frag_len = unpack(view, pos)
        pos += FRAGMENT_HEADER_SIZE
        if total_len > object_max:
            raise WireError("object too large")
        if frag_len == 0 and total_len != 0:
            raise WireError("empty fragment")
        if offset + frag_len > total_len or (total_len and offset >= total_len):
            raise WireError("fragment beyond object")
        if frag_len > n - pos:
            raise WireError("truncated fragment")
        if object_id in seen:
            raise WireError("object twice in a block")
        seen[object_id] = total_len
        out.append(Fragment(object_id, total_len, offset, view[pos : pos + frag_len]))
        pos += frag_len
    return out
