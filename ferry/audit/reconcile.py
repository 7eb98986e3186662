"""Reconcile the outer and inner trails object by object (DESIGN.md 2.6). Pure.

Every ``object_sent`` on the outer side must meet an inner outcome:
``object_delivered``, ``object_refused`` or ``object_lost`` with its object_id,
or a ``block_lost`` naming a block that carried it (``blocks: [first]`` and ``detail.count``:
a range). Block numbers run on across the key epochs of one outer agent run (a rotation
continues them; a restart begins again at 0), and a ``block_lost`` may name blocks of epochs
whose every announcement was lost (a link cut across rotations: the inner agent names them in
the last epoch it knew, proto/WIRE.md §4): so a ``block_lost`` of epoch E names blocks of the
outer run that used E (runs: the outer trail's ``agent_started`` records; epochs: its
``key_announced`` and ``object_sent`` records). An object both delivered and lost (an ``object_lost``, or a
``block_lost`` of a block that carried it) is a contradiction: listed, and a failure, unless
the outer agent re-sent it after a restart (a second ``object_sent``, ``detail.resent``, same
object ID): then the copy lost on the link does not count, the delivered one does. An outer
``object_lost`` (a kept file that could not be re-sent) accounts for its object too, unless the
inner agent delivered it (an earlier copy arrived): then it counts delivered.

Video is accounted per stream, not per access unit (no ``object_sent`` for an access unit), so
streams are reconciled by their counts. Every outer ``stream_started`` (its ``flow``) must meet
the outer ``stream_ended`` and, if the outer agent sent anything on it, inner
``stream_started``/``stream_ended`` pairs of the same flow (the inner side ends an idle stream
and starts it again: the pairs add up) that received as many objects as were sent: access units
and audio frames sealed (outer ``access_units + audio_frames - dropped_no_audit``) against
those the inner side delivered, refused or dropped. What is missing must be what the inner
trail says was lost on the link: ``object_lost`` records that name no ``object_sent`` (one
object each, shared among the streams that miss some, in flow order), or any ``block_lost``
(a lost block holds an unknown number of objects). Each stream gets a status: ``reconciled``,
``lost_on_link`` (fine), or ``unaccounted`` (missing without a loss in the trail), ``open`` (no
``stream_ended`` on a side), ``excess`` (the inner side received more than was sent),
``unexpected`` (an inner stream the outer agent never started): those are listed, and fail.

The reverse ferry runs the other way: every inner ``request_sent`` (its object ID) must meet an
outer outcome: ``request_received`` (then served or ``request_unserved``), ``request_refused``,
or the reverse link's ``reverse_object_refused`` / ``reverse_object_lost``. A request the inner
agent records before it is sealed names no block, so a request with no outer outcome counts as
lost on the reverse link only while the outer trail names lost reverse blocks
(``reverse_block_lost``, at most REVERSE_REQUESTS_PER_LOST_BLOCK requests per block named);
beyond that it is unaccounted, and fails. An outer ``request_received`` of an ID the inner agent
never sent is an alarm (``reverse_unexpected``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from ferry.audit.records import Record

_SUMMARY = ("seq", "time", "lane", "flow", "object_type", "size", "epoch", "blocks", "rule")
INNER_OUTCOMES = ("object_delivered", "object_refused", "object_lost")
STREAM_EVENTS = ("stream_started", "stream_ended")
REVERSE_OUTCOMES = ("request_received", "request_refused", "reverse_object_refused", "reverse_object_lost")
OUTER_EVENTS = (("object_sent", "object_refused", "object_lost", "agent_started", "key_announced")
                + STREAM_EVENTS + REVERSE_OUTCOMES + ("reverse_block_lost",))   # what reconcile reads of each trail
INNER_EVENTS = INNER_OUTCOMES + ("block_lost", "request_sent") + STREAM_EVENTS
# a reverse request is a small object (a few hundred bytes); a block holds a few kilobytes at most
REVERSE_REQUESTS_PER_LOST_BLOCK = 16
STREAM_OK = ("reconciled", "lost_on_link")


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
    # outer refusals without an object ID (agents before issue 11 gave none to the files lane's
    # builtin refusals: not a regular file, bad name, unreadable, too large): counted all the same
    refused_outer_unnumbered: int = 0
    delivered_and_lost: list[int] = field(default_factory=list)   # both: the trail contradicts itself
    # video streams, one entry per flow: counts on both sides and a status (module doc)
    streams: list[dict[str, Any]] = field(default_factory=list)
    # the reverse ferry (inner -> outer): requests the inner agent sent and what the outer made of them
    reverse_sent: int = 0
    reverse_received: list[int] = field(default_factory=list)
    reverse_refused: list[int] = field(default_factory=list)      # by the outer agent (or its reverse link)
    reverse_lost: list[int] = field(default_factory=list)         # lost on the reverse link
    reverse_unaccounted: list[Record] = field(default_factory=list)   # inner summaries, no outer outcome
    reverse_unexpected: list[Record] = field(default_factory=list)    # received, never sent: an alarm

    @property
    def streams_not_reconciled(self) -> list[dict[str, Any]]:
        return [s for s in self.streams if s["status"] not in STREAM_OK]

    @property
    def ok(self) -> bool:
        return not (self.unaccounted or self.unexpected or self.duplicates or self.delivered_and_lost
                    or self.streams_not_reconciled or self.reverse_unaccounted or self.reverse_unexpected)

    @property
    def exit_status(self) -> int:
        return 0 if self.ok else 1

    def to_dict(self) -> dict[str, Any]:
        return dict(asdict(self), ok=self.ok)


def _id(rec: Record) -> int | None:
    oid = rec.get("object_id")
    return oid if type(oid) is int else None


def _blocks(rec: Record) -> list[int]:
    """The block numbers a record names (whatever else is there is not one)."""
    blocks = rec.get("blocks")
    return [b for b in blocks if type(b) is int] if isinstance(blocks, list) else []


def _epoch(rec: Record) -> int | None:
    epoch = rec.get("epoch")
    return epoch if type(epoch) is int else None


def _count(value: Any) -> int:
    return value if type(value) is int and value >= 0 else 0


class _Streams:
    """Per-flow counts of the stream records of both trails."""

    def __init__(self) -> None:
        self.outer: dict[str, dict[str, Any]] = {}
        self.inner: dict[str, dict[str, Any]] = {}

    def add(self, side: dict[str, dict[str, Any]], rec: Record, outer: bool) -> bool:
        """Take a stream record (True), or say it is none (False)."""
        event, flow = rec.get("event"), rec.get("flow")
        if event not in STREAM_EVENTS or rec.get("lane") != "video" or not isinstance(flow, str):
            return False
        s = side.setdefault(flow, {"started": 0, "ended": 0, "count": 0, "delivered": 0, "refused": 0,
                                   "dropped": 0, "seq": rec.get("seq"), "time": rec.get("time")})
        if event == "stream_started":
            s["started"] += 1
            return True
        s["ended"] += 1
        d = rec.get("detail")
        d = d if isinstance(d, dict) else {}
        if outer:    # sealed: access units and audio frames decided, less those no trail could record
            s["count"] += max(0, _count(d.get("access_units")) + _count(d.get("audio_frames"))
                              - _count(d.get("dropped_no_audit")))
        else:        # everything that arrived: delivered, refused or dropped by the inner agent
            delivered = _count(d.get("access_units")) + _count(d.get("audio_frames"))
            s["delivered"] += delivered
            s["refused"] += _count(d.get("refused"))
            s["dropped"] += _count(d.get("dropped"))
            s["count"] += delivered + _count(d.get("refused")) + _count(d.get("dropped"))
        return True

    def report(self, lost_objects: int, lost_blocks: int) -> list[dict[str, Any]]:
        """One entry per flow. ``lost_objects``: link losses naming no object_sent (one object
        each, handed out in flow order); ``lost_blocks``: blocks lost whose objects nobody knows."""
        out: list[dict[str, Any]] = []
        for flow in sorted(set(self.outer) | set(self.inner)):
            o, i = self.outer.get(flow), self.inner.get(flow)
            entry: dict[str, Any] = {"flow": flow, "sent": None, "received": 0, "delivered": 0, "refused": 0,
                                     "dropped": 0, "missing": 0, "lost_on_link": 0, "inner_streams": 0}
            if i is not None:
                entry.update(received=i["count"], delivered=i["delivered"], refused=i["refused"],
                             dropped=i["dropped"], inner_streams=i["started"])
            if o is None or not o["started"]:
                entry["status"] = "unexpected"        # an inner stream the outer agent never started
                out.append(entry)
                continue
            entry.update(seq=o["seq"], time=o["time"])
            if not o["ended"] or (i is not None and i["ended"] < i["started"]):
                entry["status"] = "open"              # counts unknown: a side never ended it
                out.append(entry)
                continue
            entry["sent"] = o["count"]
            missing = o["count"] - entry["received"]
            entry["missing"] = missing
            if missing == 0:
                entry["status"] = "reconciled"
            elif missing < 0:
                entry["status"] = "excess"
            else:
                take = min(missing, lost_objects)
                lost_objects -= take
                if take == missing or lost_blocks:
                    entry.update(status="lost_on_link", lost_on_link=missing)
                else:
                    entry.update(status="unaccounted", lost_on_link=take)
            out.append(entry)
        return out


def _runs(outer_records: list[Record]) -> dict[int, int]:
    """Key epoch -> the outer agent run that used it (runs counted by ``agent_started`` records;
    the records before the first one are run 0). An epoch number used by two runs (a clock that
    went back across a restart) is the first one's."""
    epoch_run: dict[int, int] = {}
    run = 0
    for rec in outer_records:
        event = rec.get("event")
        if event == "agent_started":
            run += 1
        elif event in ("key_announced", "object_sent"):
            epoch = _epoch(rec)
            if epoch is not None:
                epoch_run.setdefault(epoch, run)
    return epoch_run


def reconcile(outer_records: Iterable[Record], inner_records: Iterable[Record]) -> ReconcileReport:
    """Match outer ``object_sent`` records with inner outcomes, and outer video streams with inner ones."""
    outer_records = list(outer_records)
    epoch_run = _runs(outer_records)
    sent: dict[int, Record] = {}
    by_block: dict[tuple[int, int], list[int]] = {}  # (outer run, block) -> objects it carried
    run = 0
    refused_outer: list[int] = []
    unnumbered = 0
    lost_outer: set[int] = set()     # kept files a restarted outer agent could not re-send
    resent: set[int] = set()         # sent again by a restarted outer agent (same ID): counted once
    streams = _Streams()
    reverse_outcomes: dict[int, tuple[str, Record]] = {}
    reverse_lost_blocks = 0
    for rec in outer_records:
        if streams.add(streams.outer, rec, True):
            continue
        if rec.get("event") == "agent_started":
            run += 1
            continue
        if rec.get("event") == "reverse_block_lost":
            detail = rec.get("detail")
            reverse_lost_blocks += max(1, _count(detail.get("count", 1)) if isinstance(detail, dict) else 1)
            continue
        oid = _id(rec)
        if rec.get("event") in REVERSE_OUTCOMES:
            if oid is not None and (oid not in reverse_outcomes or rec["event"] == "request_received"):
                reverse_outcomes[oid] = (rec["event"], rec)
            continue
        if oid is None:
            if rec.get("event") == "object_refused":
                unnumbered += 1
            continue
        if rec.get("event") == "object_sent":
            if oid not in sent:
                sent[oid] = {"object_id": oid, **{k: rec[k] for k in _SUMMARY if k in rec}}
            elif isinstance(rec.get("detail"), dict) and rec["detail"].get("resent") is True:
                resent.add(oid)
            for b in _blocks(rec):
                by_block.setdefault((run, b), []).append(oid)
        elif rec.get("event") == "object_refused":
            refused_outer.append(oid)
        elif rec.get("event") == "object_lost":
            lost_outer.add(oid)

    deliveries: Counter[int] = Counter()
    refused: set[int] = set()
    lost: set[int] = set()
    unexpected: list[Record] = []
    unmatched: list[Record] = []
    ranges: list[tuple[int, int, int]] = []     # (outer run, first, end) of block_lost records that name a range
    lost_blocks = 0
    reverse_sent: dict[int, Record] = {}
    for rec in inner_records:
        if streams.add(streams.inner, rec, False):
            continue
        event = rec.get("event")
        if event == "request_sent":
            rid = _id(rec)
            if rid is not None and rid not in reverse_sent:
                reverse_sent[rid] = {"object_id": rid, **{k: rec[k] for k in _SUMMARY if k in rec},
                                     **({"request": rec["object_type"]} if "object_type" in rec else {})}
            continue
        if event == "block_lost":
            lost_blocks += 1
            detail = rec.get("detail")
            count = detail.get("count", 1) if isinstance(detail, dict) else 1
            blocks = _blocks(rec)
            epoch = _epoch(rec)
            lost_run = epoch_run.get(epoch) if epoch is not None else None
            if lost_run is None:      # an epoch the outer trail never used: it names none of its objects
                continue
            if type(count) is int and count > 1 and blocks:
                ranges.append((lost_run, blocks[0], blocks[0] + count))   # a range of blocks
            for b in blocks:
                lost.update(by_block.get((lost_run, b), ()))
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

    for (r, b), oids in by_block.items():
        if any(r == lr and first <= b < end for lr, first, end in ranges):
            lost.update(oids)
    lost |= (lost_outer & set(sent)) - set(deliveries)   # not re-sent, but its first copy arrived
    lost -= resent & set(deliveries)   # a copy lost on the link, the re-sent one delivered: delivered
    accounted = set(deliveries) | refused | lost
    rev = _reverse(reverse_sent, reverse_outcomes, reverse_lost_blocks)
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
        refused_outer_unnumbered=unnumbered,
        delivered_and_lost=sorted(lost & set(deliveries)),
        # an inner loss or refusal that names no object_sent: a video object (or one the inner
        # agent could not read), lost on the link or refused before its stream was known
        streams=streams.report(len(unmatched), lost_blocks),
        **rev,
    )


def _reverse(sent: dict[int, Record], outcomes: dict[int, tuple[str, Record]], lost_blocks: int) -> dict[str, Any]:
    """The reverse ferry's part of the report (module doc)."""
    received = sorted(oid for oid, (event, _) in outcomes.items() if oid in sent and event == "request_received")
    refused = sorted(oid for oid, (event, _) in outcomes.items()
                     if oid in sent and event in ("request_refused", "reverse_object_refused"))
    lost = sorted(oid for oid, (event, _) in outcomes.items() if oid in sent and event == "reverse_object_lost")
    missing = [oid for oid in sorted(sent) if oid not in outcomes]
    explained = min(len(missing), lost_blocks * REVERSE_REQUESTS_PER_LOST_BLOCK)
    unexpected = [{"object_id": oid, "event": event, "seq": rec.get("seq"), "time": rec.get("time")}
                  for oid, (event, rec) in sorted(outcomes.items()) if oid not in sent and event == "request_received"]
    return {"reverse_sent": len(sent), "reverse_received": received, "reverse_refused": refused,
            "reverse_lost": sorted(lost + missing[:explained]),
            "reverse_unaccounted": [sent[oid] for oid in missing[explained:]],
            "reverse_unexpected": unexpected}
