"""Object reassembly: fragments of authenticated blocks into whole objects (bounded, timed out).

An object in one fragment is delivered at once. Otherwise its bytes are gathered with a
`RangeSet` of what arrived; an overlap or a changed total loses the object. Fragments that
continue into the previous or next block record that block as needed: if loss accounting
reports it lost (`block_lost`), or it precedes the accounting start of a late joiner, the
object is lost. At most PENDING_OBJECTS_MAX objects and PENDING_OBJECT_BYTES_MAX bytes wait,
each at most OBJECT_TIMEOUT.

Objects are told apart by lineage and ID (`ObjectKey`): a restarted outer agent (a new
lineage) may re-send an object with the same ID (its `resent` copy); the dispatcher decides
whether it is a duplicate (ferry.lanes.inner), not the reassembly.

A loss is reported once per object (`ObjectLost` with the range of blocks known to carry it:
those that did and the neighbours it needed), never for an object delivered. A block opened
after loss accounting reported it lost (it came too late) is not delivered: its objects are
already accounted as lost (by the gap's `BlockLost`).
"""

from __future__ import annotations

from collections.abc import Container, Sequence

from ferry.reasons import Reason
from ferry import limits
from ferry.wire.block import Fragment
from ferry.wire.bounded import Recent
from ferry.wire.events import ObjectLost, ObjectReceived
from ferry.wire.loss import Ledger, LineageKey
from ferry.wire.ranges import RangeSet
from ferry.wire.report import Report

ObjectKey = tuple[int, int]  # (lineage, object id): a re-sent copy from a later run is another object


class PartialObject:
    """An object in reassembly (authenticated fragments only)."""

    __slots__ = ("total", "buf", "received", "ranges", "blocks", "epoch", "created", "needs")

    def __init__(self, total: int, epoch: int, now: float) -> None:
        self.total = total
        self.buf = bytearray(total)
        self.received = 0
        self.ranges = RangeSet()
        self.blocks: list[int] = []
        self.epoch = epoch
        self.created = now  # monotonic: OBJECT_TIMEOUT
        self.needs: list[LineageKey] = []


class Reassembly:
    """Objects in reassembly, the blocks they still need, and what was delivered or lost."""

    __slots__ = ("objects", "nbytes", "needs", "lost_blocks", "_lost", "_delivered", "_report")

    def __init__(self, report: Report, lost_blocks: Container[LineageKey]) -> None:
        self._report = report
        self.lost_blocks = lost_blocks  # loss accounting's lost blocks
        self.objects: dict[ObjectKey, PartialObject] = {}  # insertion order is creation order
        self.nbytes = 0
        self.needs: dict[LineageKey, set[ObjectKey]] = {}  # block -> objects waiting for it
        self._lost: Recent[ObjectKey, None] = Recent(limits.RECENT_MAX)
        self._delivered: Recent[ObjectKey, None] = Recent(limits.RECENT_MAX)

    def deliver(self, led: Ledger, block_no: int, frags: Sequence[Fragment], now: float) -> None:
        """The fragments of one opened block of an epoch (its ledger)."""
        lineage, epoch = led.lineage, led.epoch
        last = len(frags) - 1
        objects = self.objects
        report = self._report
        if led.start is not None and led.start <= block_no < led.resolved:
            for _ in frags:  # resolved before it was opened: reported lost, it came too late
                report.drop(Reason.STALE_FRAGMENT, now)
            return
        for i, (oid, total, off, data) in enumerate(frags):
            key = (lineage, oid)
            if key in self._lost or key in self._delivered:
                report.drop(Reason.STALE_FRAGMENT, now)
                continue
            ln = len(data)
            obj = objects.get(key)
            if obj is None:
                if off == 0 and ln == total:
                    self._delivered.put(key, None)
                    report.counters.objects += 1
                    report.events.append(ObjectReceived(oid, bytes(data), epoch, (block_no,)))
                    continue
                if len(objects) >= limits.PENDING_OBJECTS_MAX or self.nbytes + total > limits.PENDING_OBJECT_BYTES_MAX:
                    self._object_lost(key, epoch, (block_no, block_no), Reason.TOO_MANY_PENDING)
                    continue
                obj = objects[key] = PartialObject(total, epoch, now)
                self.nbytes += total
            elif obj.total != total:
                self._drop(key, obj, Reason.INCONSISTENT_TOTAL)
                continue
            end = off + ln
            ranges = obj.ranges
            if ranges.overlaps(off, end):
                self._drop(key, obj, Reason.OVERLAP)
                continue
            left = ranges.ends_at(off)
            right = ranges.starts_at(end)
            obj.buf[off:end] = data
            obj.received += ln
            obj.blocks.append(block_no)
            obj.epoch = epoch
            ranges.add(off, end)
            if obj.received == total:
                self._complete(key, obj)
                continue
            if i == 0 and off > 0 and not left:
                if not self._need(led, key, obj, (lineage, block_no - 1)):
                    continue
            if i == last and end < total and not right:
                self._need(led, key, obj, (lineage, block_no + 1))

    def _need(self, led: Ledger, key: ObjectKey, obj: PartialObject, lk: LineageKey) -> bool:
        """Record that obj needs block lk; False (object lost) if that block never comes."""
        obj.needs.append(lk)
        if lk in self.lost_blocks:
            self._drop(key, obj, Reason.BLOCK_LOST)
            return False
        if led.missing_before_start(lk[1]):
            self._drop(key, obj, Reason.START_MISSING)
            return False
        self.needs.setdefault(lk, set()).add(key)
        return True

    def block_lost(self, lk: LineageKey) -> None:
        """Loss accounting reported a block lost: the objects that needed it are lost."""
        for key in sorted(self.needs.pop(lk, ())):
            obj = self.objects.get(key)
            if obj is not None:
                self._drop(key, obj, Reason.BLOCK_LOST)

    def _forget(self, key: ObjectKey, obj: PartialObject) -> None:
        del self.objects[key]
        self.nbytes -= obj.total
        for lk in obj.needs:
            s = self.needs.get(lk)
            if s is not None:
                s.discard(key)
                if not s:
                    del self.needs[lk]

    def _complete(self, key: ObjectKey, obj: PartialObject) -> None:
        self._forget(key, obj)
        self._delivered.put(key, None)
        self._report.counters.objects += 1
        self._report.events.append(ObjectReceived(key[1], bytes(obj.buf), obj.epoch, tuple(obj.blocks)))

    def _drop(self, key: ObjectKey, obj: PartialObject, reason: Reason) -> None:
        self._forget(key, obj)
        known = obj.blocks + [lk[1] for lk in obj.needs]  # the blocks that carried it and those it needed
        self._object_lost(key, obj.epoch, (min(known), max(known)), reason)

    def _object_lost(self, key: ObjectKey, epoch: int, blocks: tuple[int, int], reason: Reason) -> None:
        if key in self._delivered or key in self._lost:  # once per object, never a delivered one
            return
        self._lost.put(key, None)
        self._report.counters.objects_lost += 1
        self._report.events.append(ObjectLost(key[1], epoch, blocks, reason))

    def next_timer(self) -> float | None:
        if not self.objects:
            return None
        return next(iter(self.objects.values())).created + limits.OBJECT_TIMEOUT

    def handle_timer(self, now: float) -> None:
        """Objects incomplete for OBJECT_TIMEOUT are lost."""
        while self.objects:
            key, obj = next(iter(self.objects.items()))
            if obj.created + limits.OBJECT_TIMEOUT > now:
                break
            self._drop(key, obj, Reason.TIMEOUT)
