"""Reconcile the outer and inner trails object by object (DESIGN.md 2.6). Pure.

Every ``object_sent`` on the outer side must meet an inner outcome:
``object_delivered``, ``object_refused`` or ``object_lost`` with its object_id,
or a ``block_lost`` naming (epoch, block) of a block that carried it (``blocks: [first]``
and ``detail.count``: a range). An object both delivered and lost (an ``object_lost``, or a
``block_lost`` of a block that carried it) is a contradiction: listed, and a failure.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from ferry.audit.records import Record

_SUMMARY = ("seq", "time", "lane", "flow", "object_type", "size", "epoch", "blocks", "rule")
INNER_OUTCOMES = ("object_delivered", "object_refused", "object_lost")


@dataclass(frozen=True)
class ReconcileReport:
    """What became of each object the outer agent sent."""

    sent: int = 0
    unaccounted: list[Record] = field(default_factory=list)  # outer summaries, no inner outcome
    delivered: list[int] = field(default_factory=list)
    refused_inner: list[int] = field(default_factory=list)
    lost: list[int] = field(default_factory=list)
    unexpected: list[Record] = field(default_factory=list)   # inner delivered an id never sent: an alarm
    # inner refused or lost an id the outer trail holds no object_sent for: lanes accounted
    # per stream (video) record no object_sent per access unit; listed, not a failure
    unmatched: list[Record] = field(default_factory=list)
    duplicates: list[int] = field(default_factory=list)    # delivered more than once
    refused_outer: list[int] = field(default_factory=list)
    delivered_and_lost: list[int] = field(default_factory=list)   # both: the trail contradicts itself

    @property
    def ok(self) -> bool:
        return not (self.unaccounted or self.unexpected or self.duplicates or self.delivered_and_lost)

    @property
    def exit_status(self) -> int:
        return 0 if self.ok else 1

    def to_dict(self) -> dict[str, Any]:
        return dict(asdict(self), ok=self.ok)


def _id(rec: Record) -> int | None:
    oid = rec.get("object_id")
    return oid if type(oid) is int else None


def reconcile(outer_records: Iterable[Record], inner_records: Iterable[Record]) -> ReconcileReport:
    """Match outer ``object_sent`` records with inner outcomes."""
    sent: dict[int, Record] = {}
    by_block: dict[tuple[int | None, int], list[int]] = {}  # (epoch, block) -> objects it carried
    refused_outer: list[int] = []
    for rec in outer_records:
        oid = _id(rec)
        if oid is None:
            continue
        if rec.get("event") == "object_sent" and oid not in sent:
            sent[oid] = {"object_id": oid, **{k: rec[k] for k in _SUMMARY if k in rec}}
            epoch = rec.get("epoch")
            for b in rec.get("blocks") or ():
                by_block.setdefault((epoch, b), []).append(oid)
        elif rec.get("event") == "object_refused":
            refused_outer.append(oid)

    deliveries: Counter[int] = Counter()
    refused: set[int] = set()
    lost: set[int] = set()
    unexpected: list[Record] = []
    unmatched: list[Record] = []
    runs: list[tuple[Any, int, int]] = []     # (epoch, first, end) of block_lost records that name a run
    for rec in inner_records:
        event = rec.get("event")
        if event == "block_lost":
            count = (rec.get("detail") or {}).get("count", 1)
            if isinstance(count, int) and count > 1 and rec.get("blocks"):
                runs.append((rec.get("epoch"), rec["blocks"][0], rec["blocks"][0] + count))   # a run of blocks
            for b in rec.get("blocks") or ():
                lost.update(by_block.get((rec.get("epoch"), b), ()))
            continue
        if event not in INNER_OUTCOMES:
            continue
        oid = _id(rec)
        if oid is None:
            continue
        if oid not in sent:
            entry = {"object_id": oid, "event": event, "seq": rec.get("seq"), "time": rec.get("time")}
            (unexpected if event == "object_delivered" else unmatched).append(entry)
            continue
        if event == "object_delivered":
            deliveries[oid] += 1
        elif event == "object_refused":
            refused.add(oid)
        else:
            lost.add(oid)

    for (epoch, b), oids in by_block.items():
        if any(epoch == e and first <= b < end for e, first, end in runs):
            lost.update(oids)
    accounted = set(deliveries) | refused | lost
    return ReconcileReport(
        sent=len(sent),
        unaccounted=[s for oid, s in sorted(sent.items()) if oid not in accounted],
        delivered=sorted(deliveries),
        refused_inner=sorted(refused),
        lost=sorted(lost),
        unexpected=unexpected,
        unmatched=unmatched,
        duplicates=sorted(oid for oid, n in deliveries.items() if n > 1),
        refused_outer=sorted(refused_outer),
        delivered_and_lost=sorted(lost & set(deliveries)),
    )
