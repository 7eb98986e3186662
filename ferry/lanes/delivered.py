"""Objects already delivered: the inner agent's defence against a replay after a restart.

Pure. An object's ``created`` must be within CLOCK_SKEW of the inner wall clock
(``inner.skew_refusal``), so a captured object can be replayed only while
``wall <= created + CLOCK_SKEW``. The window keeps each delivered object ID exactly that long
(its *expiry*), and the agent journals every ID it delivers (``Remember`` work, fsync'd) so
that a restarted agent knows them too. An object whose ID is in the window is a replay.

The window is bounded (DELIVERED_IDS_MAX). When it is full the entry that expires first is
forgotten and the *horizon* moves to its expiry: from then on an object whose created + skew
is at or before the horizon is refused as well (it could be the forgotten one), so forgetting never
opens a replay.

Journal record (JOURNAL_RECORD, 32 bytes, big-endian): object_id u64, expiry f64 (wall
clock), epoch u32, the highest block number opened in that epoch when the object was
delivered u64, CRC-32 of the 28 bytes before it. A torn or corrupt record is skipped and
counted, never trusted. A record with object_id 0 (no object has that ID: ``ObjectIds``
counts from 1) carries the horizon in its expiry field, so that compacting the journal
keeps it.
"""

from __future__ import annotations

import zlib
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from struct import Struct

from ferry import limits

JOURNAL_RECORD = Struct(">QdIqI")
RECORD_SIZE = JOURNAL_RECORD.size  # 32
HORIZON_ID = 0
_BODY = Struct(">QdIq")


@dataclass(frozen=True, slots=True)
class Remember:
    """Work for the agent: journal a delivered object durably (before its audit record)."""

    object_id: int
    expiry: float
    epoch: int
    opened: int  # the highest block number opened in `epoch` when it was delivered, -1 if none

    def record(self) -> bytes:
        body = _BODY.pack(self.object_id, self.expiry, self.epoch, self.opened)
        return body + zlib.crc32(body).to_bytes(4, "big")


def parse_journal(data: bytes) -> tuple[list[Remember], int]:
    """The intact records of a journal, and how many were torn or corrupt (skipped)."""
    out: list[Remember] = []
    bad = 0
    whole = len(data) - len(data) % RECORD_SIZE
    for off in range(0, whole, RECORD_SIZE):
        oid, expiry, epoch, opened, crc = JOURNAL_RECORD.unpack_from(data, off)
        if zlib.crc32(data[off : off + RECORD_SIZE - 4]) != crc or expiry != expiry:  # NaN: not ours
            bad += 1
            continue
        out.append(Remember(oid, expiry, epoch, opened))
    if whole != len(data):
        bad += 1  # a torn last record
    return out, bad


class DeliveredIds:
    """Object IDs delivered within the replay window (see the module docstring)."""

    __slots__ = ("_expiry", "_order", "horizon", "max_ids", "skew")

    def __init__(self, *, max_ids: int = limits.DELIVERED_IDS_MAX, skew: float = limits.CLOCK_SKEW) -> None:
        self._expiry: dict[int, float] = {}
        self._order: deque[tuple[float, int]] = deque()  # (expiry, id) in the order remembered
        # the latest expiry forgotten: an object whose created + skew is at or before it is refused
        self.horizon = float("-inf")
        self.max_ids = max_ids
        self.skew = skew

    def __len__(self) -> int:
        return len(self._expiry)

    def __contains__(self, object_id: int) -> bool:
        return object_id in self._expiry

    def refusal(self, object_id: int, created: float) -> str | None:
        """Why an object is a replay, or None."""
        if object_id in self._expiry:
            return f"object {object_id} was already delivered (a replay)"
        if created + self.skew <= self.horizon:   # the same sum as an expiry: no rounding apart
            return (f"object {object_id} is older than the replay horizon (created {created:.3f}, horizon "
                    f"{self.horizon - self.skew:.3f}): it cannot be told from a replay")
        return None

    def remember(self, object_id: int, created: float, epoch: int, opened: int) -> Remember:
        """Note a delivered object; the journal record the agent writes for it."""
        r = Remember(object_id, created + self.skew, epoch, opened)
        self.add(r)
        return r

    def add(self, r: Remember) -> None:
        if r.object_id == HORIZON_ID:
            self.horizon = max(self.horizon, r.expiry)
            return
        if r.object_id in self._expiry:
            return
        self._expiry[r.object_id] = r.expiry
        self._order.append((r.expiry, r.object_id))
        while len(self._expiry) > self.max_ids:
            expiry, oid = self._order.popleft()
            if self._expiry.get(oid) == expiry:
                del self._expiry[oid]
                self.horizon = max(self.horizon, expiry)

    def load(self, records: Iterable[Remember], wall: float) -> None:
        """Records from a journal: those still inside the window (and the horizon)."""
        for r in records:
            if r.expiry >= wall or r.object_id == HORIZON_ID:
                self.add(r)

    def expire(self, wall: float) -> int:
        """Forget the IDs whose replay window has passed; how many."""
        n = 0
        order = self._order
        while order and order[0][0] < wall:
            expiry, oid = order.popleft()
            if self._expiry.get(oid) == expiry:
                del self._expiry[oid]
                n += 1
        return n

    def live(self) -> list[Remember]:
        """What a compacted journal holds: the horizon, then the entries (epoch and opened are
        not kept by the window: 0 and -1)."""
        marker = [Remember(HORIZON_ID, self.horizon, 0, -1)] if self.horizon > float("-inf") else []
        return marker + [Remember(oid, expiry, 0, -1) for oid, expiry in self._expiry.items()]
