"""GB/T 28181 device IDs and the index that matches them against sources.

A device ID is exactly 20 ASCII digits: an 8-digit centre/region code
(GB/T 2260 administrative code + grass-roots unit), a 2-digit industry code,
a 3-digit type code and a 7-digit serial number. Nothing else is an ID: not 19
or 21 digits, not full-width or Arabic-Indic digits, not surrounding spaces.
The check compares characters with the ASCII set "0123456789" (never
``str.isdigit``, which admits '²' and '٣').
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ferry import limits

DIGITS = "0123456789"
ID_LENGTH = 20


def is_ascii_digits(s: object, length: int) -> bool:
    """``s`` is a str of exactly ``length`` ASCII digits."""
    return type(s) is str and len(s) == length and s.isascii() and not s.strip(DIGITS)


@dataclass(frozen=True, slots=True)
class DeviceId:
    region8: str     # digits 1-8: centre/region code
    industry: str    # digits 9-10
    type: str        # digits 11-13
    serial: str      # digits 14-20


def parse_device_id(s: object) -> DeviceId | None:
    """The fields of ``s`` if it is exactly 20 ASCII digits, else None."""
    if not is_ascii_digits(s, ID_LENGTH):
        return None
    assert isinstance(s, str)
    return DeviceId(s[:8], s[8:10], s[10:13], s[13:])


@dataclass(frozen=True, slots=True)
class DeviceMatcher:
    """All given fields must hold (AND); an empty field matches anything."""

    region: str                       # prefix of region8: "", 2, 4, 6 or 8 digits
    industries: frozenset[str]        # 2-digit codes; empty = any
    types: frozenset[str]             # 3-digit codes; empty = any
    serial: tuple[str, str] | None    # inclusive 7-digit range

    def matches(self, s: str) -> bool:
        """``s`` must already be a well-formed ID."""
        if not s.startswith(self.region):
            return False
        if self.industries and s[8:10] not in self.industries:
            return False
        if self.types and s[10:13] not in self.types:
            return False
        if self.serial is not None and not (self.serial[0] <= s[13:] <= self.serial[1]):
            return False
        return True


class DeviceIndex:
    """Device ID -> names of the sources whose ``ids`` or ``match`` hold for it.

    Matchers are indexed by region prefix (lookups, not scans); results are
    memoized (bounded, cleared when full) and interned so equal results are
    the same frozenset object. Treat as immutable after construction: the
    memo is a cache, invisible from outside.
    """

    __slots__ = ("_ids", "_by_prefix", "_memo", "_interned", "_memo_max")

    def __init__(
        self,
        sources: Iterable[tuple[str, Iterable[str], Iterable[DeviceMatcher]]],
        memo_max: int = limits.POLICY_MEMO_MAX,
    ) -> None:
        ids: dict[str, set[str]] = {}
        by_prefix: dict[str, list[tuple[str, DeviceMatcher]]] = {}
        for name, source_ids, matchers in sources:
            for i in source_ids:
                ids.setdefault(i, set()).add(name)
            for m in matchers:
                by_prefix.setdefault(m.region, []).append((name, m))
        self._ids = {k: frozenset(v) for k, v in ids.items()}
        self._by_prefix = {k: tuple(v) for k, v in by_prefix.items()}
        self._memo: dict[object, frozenset[str]] = {}
        self._interned: dict[frozenset[str], frozenset[str]] = {}
        self._memo_max = memo_max

    def sources_for(self, device_id: object) -> frozenset[str]:
        """Names of the sources matching ``device_id`` (empty if malformed)."""
        try:
            return self._memo[device_id]
        except (KeyError, TypeError):
            pass
        found = self._resolve(device_id)
        if type(device_id) is str:
            if len(self._memo) >= self._memo_max:
                self._memo.clear()
                self._interned.clear()
            found = self._interned.setdefault(found, found)
            self._memo[device_id] = found
        return found

    def _resolve(self, s: object) -> frozenset[str]:
        if not is_ascii_digits(s, ID_LENGTH):
            return frozenset()
        assert isinstance(s, str)
        names = set(self._ids.get(s, ()))
        for n in (0, 2, 4, 6, 8):
            for name, m in self._by_prefix.get(s[:n], ()):
                if name not in names and m.matches(s):
                    names.add(name)
        return frozenset(names)
