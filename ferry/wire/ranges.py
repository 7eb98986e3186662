"""A set of byte ranges: sorted, disjoint, half-open [start, end), neighbours merged.

The object reassembly's record of which bytes of an object arrived (aioquic's rangeset,
wireguard-go's replay package: a tiny structure with its own tests).
"""

from __future__ import annotations

from collections.abc import Iterator


class RangeSet:
    """Disjoint half-open ranges of integers, kept sorted and merged."""

    __slots__ = ("_ranges",)

    def __init__(self) -> None:
        self._ranges: list[list[int]] = []

    def __len__(self) -> int:
        return len(self._ranges)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return ((r[0], r[1]) for r in self._ranges)

    def overlaps(self, start: int, end: int) -> bool:
        """True if any held range shares a number with [start, end)."""
        for r in self._ranges:
            if start < r[1] and r[0] < end:
                return True
            if r[0] >= end:
                break
        return False

    def ends_at(self, n: int) -> bool:
        """True if a held range ends exactly at n (the range [.., n) is a left neighbour)."""
        return any(r[1] == n for r in self._ranges)

    def starts_at(self, n: int) -> bool:
        """True if a held range starts exactly at n (a right neighbour of [.., n))."""
        return any(r[0] == n for r in self._ranges)

    def add(self, start: int, end: int) -> None:
        """Insert [start, end), which must not overlap a held range; merges touching neighbours."""
        ranges = self._ranges
        i = 0
        while i < len(ranges) and ranges[i][1] < start:
            i += 1
        if i < len(ranges) and ranges[i][1] == start:
            ranges[i][1] = end
            if i + 1 < len(ranges) and ranges[i + 1][0] == end:
                ranges[i][1] = ranges[i + 1][1]
                del ranges[i + 1]
        elif i < len(ranges) and ranges[i][0] == end:
            ranges[i][0] = start
        else:
            ranges.insert(i, [start, end])
