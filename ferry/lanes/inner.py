"""The inner agent's dispatcher: link events in, audit intents and lane work out.

Pure. For every object the link delivers: parse the canonical object, check its ID against
the link's, check that the outer agent sealed it under the policy the inner agent runs (or
the previous one within the reload grace; a mismatch raises one alarm per epoch and hash
pair), bound its ``created`` by the inner wall clock, decide again, then hand it to its
lane: files -> ``WriteFile`` work, video -> the video lane (``InnerVideo``). Every other
link event becomes its audit record.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any, Protocol

from google.protobuf.message import DecodeError

from ferry import limits
from ferry.lanes import files
from ferry.lanes.delivered import DeliveredIds
from ferry.lanes.work import AuditIntent
from ferry.pb import ferry_pb2
from ferry.policy.plan import Decision, Plan
from ferry.reasons import Reason
from ferry.wire import events as ev
from ferry.wire.bounded import Recent

CANONICAL_RULE = "ferry-canonical"     # refusals of objects that are not well-formed or not on time
HASH_RULE = "policy-hash"
LANES_RULE = "ferry-lanes"
REPLAY_RULE = "ferry-replay"            # an object delivered before (lanes/delivered.py), or its re-sent copy
DIFFERENT_POLICIES = "outer and inner agents run different policies"


class InnerSignaling(Protocol):
    """What the dispatcher needs of the inner signaling lane (ferry/lanes/signaling/inner.py)."""

    def deliver(self, obj: ferry_pb2.CanonicalObject, decision: Decision, now: float, wall: float, *,
                epoch: int | None = None, blocks: Sequence[int] = ()) -> Sequence[object]: ...


class InnerVideo(Protocol):
    """What the dispatcher needs of the inner video lane (per-stream accounting is its own)."""

    def deliver(self, obj: ferry_pb2.CanonicalObject, decision: Decision, now: float,
                wall: float) -> Sequence[object]: ...

    def refuse(self, obj: ferry_pb2.CanonicalObject, decision: Decision, now: float,
               wall: float) -> Sequence[object]: ...


def _when(t: float) -> str:
    """A wall-clock time for a reason: ISO 8601 UTC where it is one, else the number."""
    if math.isfinite(t) and 0 <= t < 253402300800:
        return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds")
    return repr(t)


def skew_refusal(created: float, wall: float, skew: float = limits.CLOCK_SKEW) -> str | None:
    """Why ``created`` is too far from the inner wall clock ``wall``, or None."""
    if abs(created - wall) <= skew:          # False for NaN too
        return None
    return (f"created {_when(created)} is {abs(created - wall):.6g} s from the inner clock {_when(wall)} "
            f"(allowed skew {skew:.0f} s)")


class InnerDispatch:
    """Link events -> work. ``files_output``: whether the agent has a files spool."""

    def __init__(self, video: InnerVideo, *, files_output: bool, delivered: DeliveredIds | None = None,
                 signaling: InnerSignaling | None = None) -> None:
        self.video = video
        self.signaling = signaling      # [signaling] configured: the lane signaling objects go to
        self.files_output = files_output
        # delivered object IDs within the replay window (the agent journals them, and loads
        # them again after a restart); a replayed object is refused and recorded once
        self.delivered = delivered if delivered is not None else DeliveredIds()
        self.replays_recorded: Recent[int, None] = Recent(limits.REFUSED_RECENT_MAX)
        self.epoch_policy: dict[int, bytes] = {}
        self.mismatch_alarmed: set[tuple[int, bytes, bytes]] = set()   # (epoch, outer hash, inner hash)
        # After a reload, objects the outer agent sealed under the previous hash are still
        # taken (and re-decided under the new plan) until previous_until (monotonic).
        self.previous_hash: bytes | None = None
        self.previous_until = 0.0
        self.counts = {"delivered": 0, "refused": 0, "lost": 0, "replays": 0, "duplicates": 0}

    # -- link events ------------------------------------------------------------------
    def handle(self, e: object, plan: Plan, now: float, wall: float) -> list[Any]:
        """The work of one link event, under ``plan`` (read once by the agent)."""
        if isinstance(e, ev.ObjectReceived):
            return self.on_object(e, plan, now, wall)
        if isinstance(e, ev.BlockLost):
            # a loss is recorded once per gap: its first block, and how many (detail.count)
            return _audit(event="block_lost", verdict="lost", epoch=e.epoch, blocks=[e.block_no], reason=e.reason,
                          code=e.reason, detail={"count": e.count} if e.count > 1 else None)
        if isinstance(e, ev.ObjectLost):
            # ... and once per object, with its block range named the same way
            self.counts["lost"] += 1
            first, last = e.blocks
            return _audit(event="object_lost", verdict="lost", object_id=e.object_id, epoch=e.epoch,
                          blocks=[first], reason=e.reason, code=e.reason,
                          detail={"count": last - first + 1} if last > first else None)
        if isinstance(e, ev.KeyAccepted):
            self.epoch_policy[e.epoch] = e.policy_hash
            out = _audit(event="key_accepted", verdict="info", epoch=e.epoch,
                         reason=f"key epoch {e.epoch} from {e.sender} accepted",
                         detail={"outer_policy_hash": e.policy_hash.hex(), "not_after": e.not_after})
            if not self.hash_accepted(e.policy_hash, plan, now):
                out += self.alarm_mismatch(e.epoch, e.policy_hash, plan)
            return out
        if isinstance(e, ev.AnnouncementRefused):
            return _audit(event="announcement_refused", verdict="refused", epoch=e.epoch, reason=e.reason,
                          code=e.reason)
        if isinstance(e, ev.BlockRefused):
            return _audit(event="block_refused", verdict="refused", epoch=e.epoch, blocks=[e.block_no],
                          reason=e.reason, code=e.reason)
        if isinstance(e, ev.DatagramsDropped):
            return _audit(event="datagrams_dropped", verdict="refused", reason=e.reason, code=e.reason,
                          detail={"count": e.count})
        if isinstance(e, ev.LinkDown):
            return _audit(event="link_down", verdict="alarm", reason="no authenticated heartbeat from the outer agent",
                          detail={"since": e.since})
        if isinstance(e, ev.LinkUp):
            return _audit(event="link_up", verdict="info", reason="authenticated heartbeats again")
        if isinstance(e, ev.InternalError):      # a bug in the receiver: logged there, alarmed here
            return _audit(event="internal_error", verdict="alarm", code=Reason.INTERNAL_ERROR,
                          reason=f"internal error in the link receiver: {e.error}")
        return []

    # -- policy hash agreement with the outer agent -------------------------------------
    def hash_accepted(self, outer_hash: bytes | None, plan: Plan, now: float) -> bool:
        """The outer agent's announced hash is ours, or our previous one within the reload grace."""
        if outer_hash == plan.hash:
            return True
        return outer_hash is not None and outer_hash == self.previous_hash and now < self.previous_until

    def alarm_mismatch(self, epoch: int, outer_hash: bytes | None, plan: Plan) -> list[Any]:
        key = (epoch, outer_hash or b"", plan.hash)
        if key in self.mismatch_alarmed:
            return []
        self.mismatch_alarmed.add(key)
        shown = outer_hash.hex()[:16] if outer_hash else "unknown"
        return _audit(event="policy_mismatch", verdict="alarm", code=Reason.POLICY_MISMATCH, epoch=epoch,
                      policy_hash=plan.hash.hex(),
                      reason=f"outer agent runs policy {shown}, inner runs {plan.hash.hex()[:16]}: "
                             "objects of this epoch are refused",
                      detail={"outer_policy_hash": outer_hash.hex() if outer_hash else None,
                              "inner_policy_hash": plan.hash.hex()})

    def policy_swapped(self, old_hash: bytes, now: float) -> None:
        """A reload: the previous hash stays acceptable for POLICY_RELOAD_GRACE seconds."""
        self.previous_hash = old_hash
        self.previous_until = now + limits.POLICY_RELOAD_GRACE

    def next_timer(self) -> float | None:
        """When check_grace has something to do (monotonic), if ever."""
        return self.previous_until if self.previous_hash is not None else None

    def check_grace(self, plan: Plan, current_epoch: int | None, now: float) -> list[Any]:
        """When the reload grace ends, alarm if the outer agent still runs the previous policy."""
        if self.previous_hash is None or now < self.previous_until:
            return []
        self.previous_hash = None
        outer = self.epoch_policy.get(current_epoch) if current_epoch is not None else None
        if current_epoch is not None and outer not in (None, plan.hash):
            return self.alarm_mismatch(current_epoch, outer, plan)
        return []

    # -- objects ----------------------------------------------------------------------
    def on_object(self, e: ev.ObjectReceived, plan: Plan, now: float, wall: float) -> list[Any]:
        obj = ferry_pb2.CanonicalObject()
        try:
            obj.ParseFromString(e.payload)
        except DecodeError as err:
            self.counts["refused"] += 1
            return _audit(event="object_refused", verdict="refused", object_id=e.object_id, epoch=e.epoch,
                          blocks=list(e.blocks), rule=CANONICAL_RULE, reason=f"malformed canonical object: {err}",
                          code=Reason.MALFORMED_OBJECT)
        if obj.object_id != e.object_id:
            return self.refuse(obj, Decision(False, CANONICAL_RULE, f"object id {obj.object_id} differs from its "
                                             f"link id {e.object_id}", Reason.OBJECT_ID_MISMATCH), e.epoch, e.blocks)
        outer_hash = self.epoch_policy.get(e.epoch)
        video = obj.lane == "video" and (obj.HasField("access_unit") or obj.HasField("audio"))
        out: list[Any] = []
        refusal: Decision | None = None
        if not self.hash_accepted(outer_hash, plan, now):
            out = self.alarm_mismatch(e.epoch, outer_hash, plan)
            refusal = Decision(False, HASH_RULE, DIFFERENT_POLICIES, Reason.POLICY_MISMATCH)
        elif late := skew_refusal(obj.created, wall):
            # Before the decision: a forged created must not satisfy a time-windowed rule.
            refusal = Decision(False, CANONICAL_RULE, late, Reason.CLOCK_SKEW)
        elif not video and (again := self.delivered.refusal(obj.object_id, obj.created)):
            # A copy re-sent by a restarted outer agent (`resent`, under the seal: only it sets
            # that) of an object delivered before is an expected duplicate, not an attack.
            duplicate = obj.resent and obj.object_id in self.delivered
            self.counts["duplicates" if duplicate else "replays"] += 1
            if obj.object_id in self.replays_recorded:   # replayed again: counted, recorded once
                return out
            self.replays_recorded.put(obj.object_id, None)
            if duplicate:
                return out + self.duplicate(obj, e.epoch, e.blocks)
            refusal = Decision(False, REPLAY_RULE, again, Reason.REPLAYED_OBJECT)
        if refusal is not None:
            if video:                # accounted per stream, not per access unit
                self.counts["refused"] += 1
                return out + list(self.video.refuse(obj, refusal, now, wall))
            return out + self.refuse(obj, refusal, e.epoch, e.blocks)
        decision = plan.decide(obj)
        if video:
            if decision.allowed:
                return list(self.video.deliver(obj, decision, now, wall))
            self.counts["refused"] += 1
            return list(self.video.refuse(obj, decision, now, wall))
        if not decision.allowed:
            return self.refuse(obj, decision, e.epoch, e.blocks)
        if obj.lane == "signaling" and self.signaling is not None:
            return list(self.signaling.deliver(obj, decision, now, wall, epoch=e.epoch, blocks=e.blocks))
        if obj.lane != files.LANE or not obj.HasField("file"):
            return self.refuse(obj, Decision(False, LANES_RULE, f"lane {obj.lane!r} has no output on this agent",
                                             Reason.NO_OUTPUT), e.epoch, e.blocks)
        write = files.inner_write(obj, decision, e.epoch, e.blocks, plan)
        if isinstance(write, Decision):
            return self.refuse(obj, write, e.epoch, e.blocks)
        if not self.files_output:
            return self.refuse(obj, Decision(False, files.BUILTIN_RULE, "no files output configured on the inner agent",
                                             Reason.NO_OUTPUT), e.epoch, e.blocks)
        return [write]

    def duplicate(self, obj: ferry_pb2.CanonicalObject, epoch: int, blocks: Sequence[int]) -> list[Any]:
        """A re-sent object already delivered: dropped, recorded once (info: expected after an
        outer restart; reconcile counts the object once)."""
        f = obj.file if obj.HasField("file") else None
        return _audit(event="object_duplicate", verdict="info", lane=obj.lane, object_id=obj.object_id,
                      epoch=epoch, blocks=list(blocks), rule=REPLAY_RULE, code=Reason.DUPLICATE_OBJECT,
                      reason=f"object {obj.object_id} re-sent by the outer agent after a restart was already "
                             "delivered: the copy is dropped",
                      object_type="file" if f is not None else None, size=f.size if f is not None else None,
                      detail={"name": f.name} if f is not None else None)

    def refuse(self, obj: ferry_pb2.CanonicalObject, decision: Decision, epoch: int,
               blocks: Sequence[int]) -> list[Any]:
        self.counts["refused"] += 1
        f = obj.file if obj.HasField("file") else None
        return _audit(event="object_refused", verdict="refused", lane=obj.lane, object_id=obj.object_id,
                      epoch=epoch, blocks=list(blocks), rule=decision.rule, reason=decision.reason, code=decision.code,
                      object_type="file" if f is not None else None, size=f.size if f is not None else None,
                      detail={"name": f.name} if f is not None else None)

    # -- the agent's report on a WriteFile ------------------------------------------------
    def file_written(self, work: files.WriteFile, written_as: str, opened: int) -> list[Any]:
        """The file is in place: journal its ID (``Remember``, before the record), then record it.
        ``opened``: the highest block number opened in its epoch now."""
        self.counts["delivered"] += 1
        ids = work.delivered
        return [self.delivered.remember(ids["object_id"], work.created, ids["epoch"], opened),
                work.written(written_as)]

    def file_lost(self, work: files.WriteFile, error: str) -> list[Any]:
        self.counts["lost"] += 1
        return [work.failed(error)]


def _audit(**fields: Any) -> list[Any]:
    """One audit intent; None values are left out (the trail has no nulls)."""
    return [AuditIntent({k: v for k, v in fields.items() if v is not None})]
