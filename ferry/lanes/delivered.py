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

Interrupted deliveries. The agent writes a file's content under a temporary dot-name in the
output folder (``temp_name``: it names ferry and the object ID), journals the ID, writes and
fsyncs the ``object_delivered`` record, and only then renames the file into place. A crash
leaves the temporary file behind; at the next start ``recover`` decides, from what the trail
says of its object, what becomes of it (the rule is in the README's Configuration section):

- the trail has its ``object_delivered`` record, and the content matches the record's size and
  SM3: it is put in place under the record's ``written_as`` (a ``delivery_recovered`` record);
- otherwise it is removed and recorded lost (``object_lost``, code ``delivery_interrupted``);
- the trail already has such a recovery record (a crash during the recovery): the recovery is
  finished without another record.
"""

from __future__ import annotations

import re
import zlib
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from struct import Struct
from typing import Any

from ferry import limits
from ferry.codecs.file_name import check_file_name
from ferry.reasons import Reason

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


# --- interrupted deliveries ---------------------------------------------------------------------

TEMP_PREFIX = ".ferry-object-"
TEMP_SUFFIX = ".tmp"
_TEMP = re.compile(r"\.ferry-object-([1-9][0-9]{0,19})-([0-9a-f]{1,32})\.tmp")
LANE = "files"
RECOVERY_EVENT = "delivery_recovered"


def temp_name(object_id: int, token: str) -> str:
    """The temporary name of an object's file in the output folder: a dot-name (consumers and
    spool watchers skip those) naming ferry and the object ID; ``token`` is lowercase hex."""
    name = f"{TEMP_PREFIX}{object_id}-{token}{TEMP_SUFFIX}"
    if temp_object_id(name) != object_id:
        raise ValueError(f"no temporary name for object {object_id} with token {token!r}")
    return name


def temp_object_id(name: str) -> int | None:
    """The object ID a temporary name was made for, or None if it is not one."""
    m = _TEMP.fullmatch(name)
    if m is None:
        return None
    oid = int(m.group(1))
    return oid if oid < 1 << 64 else None


def is_leftover(name: str) -> bool:
    """A ferry temporary file in an output folder: ours (``temp_name``), or an older version's
    (``.ferry-<pid>-<hex>.tmp``)."""
    return name.startswith(".ferry-") and name.endswith(TEMP_SUFFIX)


@dataclass(frozen=True, slots=True)
class Leftover:
    """A ferry temporary file found in the output folder at start."""

    name: str
    size: int
    sm3: str | None          # hex SM3 of its content; None if it could not be read
    mtime: float             # wall clock: its content was written then

    @property
    def object_id(self) -> int | None:
        return temp_object_id(self.name)


@dataclass(frozen=True, slots=True)
class Recovery:
    """What becomes of one leftover: put in place as ``publish_as``, or removed (None); and
    the record that says so (None when an earlier recovery already recorded it)."""

    leftover: Leftover
    publish_as: str | None
    record: dict[str, Any] | None


def is_recovery_record(rec: dict[str, Any]) -> bool:
    """A record of a recovery (this module's): what a restarted recovery must not repeat."""
    return rec.get("event") == RECOVERY_EVENT or (
        rec.get("event") == "object_lost" and rec.get("code") == Reason.DELIVERY_INTERRUPTED.value)


def recover(left: Leftover, delivered: dict[str, Any] | None, earlier: dict[str, Any] | None) -> Recovery:
    """The fate of a leftover temporary file, from its object's ``object_delivered`` record and an
    earlier recovery record of it (both None if the trail has none)."""
    oid = left.object_id
    if oid is None:
        return Recovery(left, None, {
            "event": "leftover_removed", "verdict": "info", "lane": LANE,
            "reason": f"temporary file {left.name} of no object ferry can name was removed at start",
            "detail": {"temp": left.name, "size": left.size}})
    if earlier is not None:
        again = earlier.get("detail") if earlier.get("event") == RECOVERY_EVENT else None
        name = again.get("written_as") if isinstance(again, dict) else None
        return Recovery(left, name if isinstance(name, str) and check_file_name(name) is None else None, None)
    if delivered is not None:
        detail = delivered.get("detail")
        name = detail.get("written_as") if isinstance(detail, dict) else None
        usable = isinstance(name, str) and check_file_name(name) is None
        if usable and delivered.get("sm3") == left.sm3 and delivered.get("size") == left.size:
            return Recovery(left, name, {
                "event": RECOVERY_EVENT, "verdict": "info", "lane": LANE, "object_id": oid,
                "code": Reason.DELIVERY_INTERRUPTED,
                "reason": (f"the inner agent stopped after the object_delivered record of object {oid} and before "
                           f"the file was put in place: {left.name} put in place as {name} at start"),
                "detail": {"temp": left.name, "written_as": name, "size": left.size}})
        why = ("its content does not match the object_delivered record" if usable
               else "its object_delivered record names no usable file name")
        return Recovery(left, None, _lost(left, oid, f"{why}: {left.name} was removed at start"))
    return Recovery(left, None, _lost(left, oid, f"the inner agent stopped before the object_delivered record of "
                                                 f"object {oid} was written: {left.name} was removed at start"))


def _lost(left: Leftover, oid: int, reason: str) -> dict[str, Any]:
    return {"event": "object_lost", "verdict": "lost", "lane": LANE, "object_id": oid, "object_type": "file",
            "size": left.size, "code": Reason.DELIVERY_INTERRUPTED, "reason": reason,
            "detail": {"temp": left.name}}


def publish_failed(left: Leftover, name: str, error: str) -> dict[str, Any]:
    """The record of a leftover whose recovery could not put it in place (removed instead)."""
    return {"event": "object_lost", "verdict": "lost", "lane": LANE, "object_id": left.object_id,
            "object_type": "file", "size": left.size, "code": Reason.OUTPUT_FAILED,
            "reason": f"cannot put {left.name} in place as {name} at start: {error}; removed",
            "detail": {"temp": left.name, "written_as": name}}
