"""The configured mapping between outer device IDs and the IDs the inner platform sees.

Pure. ferry shows the inner GB/T 28181 platform its own device IDs, never the outer ones as
such: `[signaling.id_map]` on the inner agent names them, as a table (one outer ID -> one inner
ID) and/or prefix rules (the leading digits of an outer ID replaced by others of the same length,
the rest kept; e.g. the 8-digit centre code 43090000 -> 43010000). A table entry wins over the
prefix rules. An ID that no entry and no rule maps has no inner ID (`map_to_inner` gives None):
the lane refuses it, it is never forwarded under its outer ID.

The mapping is a bijection on the IDs it maps: two outer IDs never map to one inner ID. The table
is refused if two of its entries share an inner ID, prefix rules if one outer (or inner) prefix
starts another; an outer ID whose prefix image is an inner ID the table gives to another outer
ID has no mapping (and the reverse), so `map_to_outer(map_to_inner(x)) == x` whenever
`map_to_inner(x)` is not None, and the other way round.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

DEVICE_ID = re.compile(r"[0-9]{20}")
_PREFIX = re.compile(r"[0-9]{1,20}")


class IdMapError(ValueError):
    """A mapping that cannot be used; the message names the entry."""


def is_device_id(value: str) -> bool:
    """20 ASCII digits (GB/T 28181 §D: centre 8, industry 2, type 3, serial 7)."""
    return DEVICE_ID.fullmatch(value) is not None


class IdMap:
    """``table``: outer ID -> inner ID; ``prefixes``: (outer prefix, inner prefix) pairs of equal length."""

    __slots__ = ("_to_inner", "_to_outer", "_prefixes")

    def __init__(self, table: Mapping[str, str] | None = None,
                 prefixes: Iterable[tuple[str, str]] = ()) -> None:
        self._to_inner: dict[str, str] = {}
        self._to_outer: dict[str, str] = {}
        for outer, inner in (table or {}).items():
            for what, v in (("outer ID", outer), ("inner ID", inner)):
                if not is_device_id(v):
                    raise IdMapError(f"table entry {outer!r} = {inner!r}: {what} {v!r} is not 20 digits")
            if inner in self._to_outer:
                raise IdMapError(f"table entries {self._to_outer[inner]!r} and {outer!r} both map to {inner!r}")
            self._to_inner[outer] = inner
            self._to_outer[inner] = outer
        self._prefixes: list[tuple[str, str]] = []
        for outer_p, inner_p in prefixes:
            for what, v in (("outer prefix", outer_p), ("inner prefix", inner_p)):
                if not _PREFIX.fullmatch(v):
                    raise IdMapError(f"prefix rule {outer_p!r} -> {inner_p!r}: {what} {v!r} is not 1 to 20 digits")
            if len(outer_p) != len(inner_p):
                raise IdMapError(f"prefix rule {outer_p!r} -> {inner_p!r}: the prefixes differ in length "
                                 f"({len(outer_p)} and {len(inner_p)} digits)")
            for o, i in self._prefixes:
                if o.startswith(outer_p) or outer_p.startswith(o):
                    raise IdMapError(f"prefix rules {o!r} and {outer_p!r} overlap on the outer side")
                if i.startswith(inner_p) or inner_p.startswith(i):
                    raise IdMapError(f"prefix rules {o!r} -> {i!r} and {outer_p!r} -> {inner_p!r} both map "
                                     f"to inner IDs starting {min(i, inner_p, key=len)!r}")
            self._prefixes.append((outer_p, inner_p))

    def __len__(self) -> int:
        return len(self._to_inner) + len(self._prefixes)

    def map_to_inner(self, outer_id: str) -> str | None:
        """The inner ID of ``outer_id``, or None when it has none (refuse the device)."""
        inner = self._to_inner.get(outer_id)
        if inner is not None:
            return inner
        if not is_device_id(outer_id):
            return None
        for o, i in self._prefixes:
            if outer_id.startswith(o):
                candidate = i + outer_id[len(o):]
                # an inner ID the table gives to another device is not this one's
                return None if candidate in self._to_outer else candidate
        return None

    def map_to_outer(self, inner_id: str) -> str | None:
        """The outer ID shown as ``inner_id`` to the inner platform, or None."""
        outer = self._to_outer.get(inner_id)
        if outer is not None:
            return outer
        if not is_device_id(inner_id):
            return None
        for o, i in self._prefixes:
            if inner_id.startswith(i):
                candidate = o + inner_id[len(i):]
                # a device the table maps elsewhere is not shown under its prefix image
                return None if candidate in self._to_inner else candidate
        return None
