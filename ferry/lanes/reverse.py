"""The reverse lane (issue 13 item 3, DESIGN.md section 3 "reverse requests"): small requests of a
closed schema on a second ferry the other way, from the inner agent (its sender) to the outer
agent (its receiver). Pure: requests, the plan and two clocks in, work out.

A request is ``ReverseRequest{request, device_id, params, operator}`` in a canonical object of lane
``reverse``. Its *source* is the requesting platform or workstation on the inner network
(``source.address``, and ``source.device_id`` where the platform's GB/T 28181 ID is known): a
reverse rule's ``from`` names it like any source; its ``to`` names the destination the request is
for (``[reverse] destination`` of the inner agent, or what the caller gives). The operator is
recorded and rate-limited, not matched by the policy.

Both sides run the same checks, in this order, and each refusal carries its code:

1. the closed schema (``check_request``): a known request, a 20-digit device ID, an operator name,
   only the parameters that request takes, each well-formed (``bad_request``);
2. the policy: ``plan.decide`` over the reverse rules (``default_deny``, ``content_limit`` for a
   request the rule does not list, ``outside_time_window``);
3. the device: some devices source of the policy must name it (``unknown_device``);
4. the rates: a token bucket per operator and one per device, both with the rule's ``rate`` where
   it has one, else ``REVERSE_*`` in ferry/limits.py (``rate_limited``; a refusal takes no token).

The inner side (``InnerReverseLane.ask``) returns the ``request_sent`` record and the object to
seal; the outer side (``OuterReverseLane.take``) checks again what the link brought (a compromised
inner host cannot widen the policy, the schema or the rates), refuses replays and stale
``created`` times, and returns a ``ReverseAction`` for the agent to hand to whoever serves it.

Replays across the outer agent's restarts (``ReverseFloor``): the inner agent numbers its requests
with its run id (its start second) above a counter (``ObjectIds``), so the IDs it sends only grow,
also across its own restarts. The outer agent keeps the highest request ID it took (its state
directory, written before a request is served: ferry/agents/reverse_receiver.py) and a restarted
agent refuses every ID at or below it (``replayed_object``): a capture of an earlier request is
refused, the next request of the same inner run is above it. A state file that cannot be read
sets ``not_before`` instead: requests created before the restart plus CLOCK_SKEW are refused (a
captured one cannot be younger), later ones are taken.
"""
from __future__ import annotations

import math
import re
import zlib
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import DecodeError

from ferry import limits
from ferry.lanes.inner import skew_refusal
from ferry.lanes.work import AuditIntent, ObjectIds, SealObject
from ferry.pb import ferry_pb2
from ferry.policy.plan import Decision, Plan, RateSpec
from ferry.reasons import Reason
from ferry.wire import events as ev
from ferry.wire.bounded import Recent

LANE = "reverse"
SCHEMA_RULE = "ferry-reverse-lane"      # refusals of the lane's own checks (schema, device, replay, skew)
REQUESTS = ("start_stream", "stop_stream", "ptz", "catalog_query")
DEVICE_ID = re.compile(r"[0-9]{20}\Z")
OPERATOR = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,%d}\Z" % (limits.REVERSE_OPERATOR_MAX - 1))
STREAM_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,63}\Z")
PTZ_HEX = re.compile(r"[0-9A-Fa-f]{16}\Z")
SPEED = re.compile(r"[1-9][0-9]{0,2}\Z")
DIRECTIONS = ("left", "right", "up", "down", "upleft", "upright", "downleft", "downright",
              "zoomin", "zoomout", "stop")


# --- the closed schema ------------------------------------------------------------------

def ptz_cmd_problem(text: str) -> str | None:
    """Why ``text`` is not a GB/T 28181 PTZCmd (A.3: 8 bytes in hex) for pan, tilt and zoom, or None.

    Byte 1 is A5H; byte 2 a version (high nibble) and a check (low nibble: the sum of byte 1's
    nibbles and byte 2's high nibble, mod 16); byte 4 the instruction, PTZ only (its two high bits
    0: no focus/iris, preset, cruise or scan instructions); byte 8 the sum of bytes 1-7 mod 256."""
    if not PTZ_HEX.match(text):
        return "ptz cmd must be 16 hex digits (8 bytes)"
    b = bytes.fromhex(text)
    if b[0] != 0xA5:
        return f"ptz cmd byte 1 is {b[0]:02X}H, not A5H"
    if b[1] & 0x0F != ((b[0] >> 4) + (b[0] & 0x0F) + (b[1] >> 4)) & 0x0F:
        return "ptz cmd byte 2 check nibble is wrong"
    if b[3] & 0xC0:
        return f"ptz cmd instruction {b[3]:02X}H is not a pan/tilt/zoom instruction"
    if b[3] & 0x03 == 0x03 or b[3] & 0x0C == 0x0C or b[3] & 0x30 == 0x30:
        return f"ptz cmd instruction {b[3]:02X}H asks two opposite directions at once"
    if b[7] != sum(b[:7]) & 0xFF:
        return "ptz cmd checksum (byte 8) is wrong"
    return None


def _param_problem(request: str, params: Mapping[str, str]) -> str | None:
    keys = set(params)
    if request == "start_stream":
        if keys - {"transport"}:
            return f"start_stream takes only transport, not {', '.join(sorted(keys - {'transport'}))}"
        if params.get("transport", "udp") not in ("udp", "tcp"):
            return "start_stream transport must be udp or tcp"
        return None
    if request == "stop_stream":
        if keys != {"stream"}:
            return "stop_stream takes exactly stream (the stream or session id)"
        if not STREAM_ID.match(params["stream"]):
            return "stop_stream stream must be 1-64 letters, digits and ._:@-"
        return None
    if request == "ptz":
        if keys == {"cmd"}:
            return ptz_cmd_problem(params["cmd"])
        if not keys or keys - {"direction", "speed"} or "direction" not in keys:
            return "ptz takes cmd (a PTZCmd in hex), or direction and an optional speed"
        if params["direction"] not in DIRECTIONS:
            return f"ptz direction must be one of {', '.join(DIRECTIONS)}"
        speed = params.get("speed", "1")
        if not SPEED.match(speed) or int(speed) > 255:
            return "ptz speed must be an integer 1-255"
        return None
    if keys:       # catalog_query
        return "catalog_query takes no parameters"
    return None


def check_request(request: str, device_id: str, params: Mapping[str, str], operator: str) -> str | None:
    """Why this request is outside the closed schema, or None. Total over any str input."""
    if request not in REQUESTS:
        return f"unknown request {request[:40]!r} (known: {', '.join(REQUESTS)})"
    if not DEVICE_ID.match(device_id):
        return f"device ID {device_id[:40]!r} is not 20 ASCII digits"
    if not OPERATOR.match(operator):
        return (f"operator {operator[:40]!r} must be 1-{limits.REVERSE_OPERATOR_MAX} letters, digits "
                "and ._@- starting with a letter or digit")
    if len(params) > limits.REVERSE_PARAMS_MAX:
        return f"{len(params)} parameters (at most {limits.REVERSE_PARAMS_MAX})"
    for k, v in params.items():
        if len(k) > 32 or len(v) > limits.REVERSE_PARAM_VALUE_MAX:
            return f"parameter {k[:32]!r} is too long"
    return _param_problem(request, params)


# --- rates ---------------------------------------------------------------------------------

class ReverseRates:
    """Token buckets per operator and per device (LRU, at most REVERSE_RATE_STATE_MAX of each).
    Deterministic given ``now``; a clock stepping back refills nothing."""

    __slots__ = ("_buckets", "_max", "_slack")

    def __init__(self, max_entries: int = limits.REVERSE_RATE_STATE_MAX, slack: int = 0) -> None:
        self._buckets: OrderedDict[tuple[str, str], list[float]] = OrderedDict()
        self._max = max_entries
        self._slack = slack      # tokens deeper than the rule's burst (the outer side's: see OuterReverseLane)

    def _level(self, key: tuple[str, str], spec: RateSpec, now: float) -> list[float]:
        depth = float(spec.burst + self._slack)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = [depth, now]
            self._buckets[key] = bucket
            while len(self._buckets) > 2 * self._max:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            if now > bucket[1]:
                bucket[0] = min(depth, bucket[0] + (now - bucket[1]) * spec.per_second)
                bucket[1] = now
        return bucket

    def take(self, operator: str, device_id: str, rule_rate: RateSpec | None, now: float) -> str | None:
        """Take a token from both buckets, or say which is empty (and take none)."""
        op_spec = rule_rate or RateSpec(limits.REVERSE_OPERATOR_RATE, limits.REVERSE_OPERATOR_BURST)
        dev_spec = rule_rate or RateSpec(limits.REVERSE_DEVICE_RATE, limits.REVERSE_DEVICE_BURST)
        op = self._level(("operator", operator), op_spec, now)
        dev = self._level(("device", device_id), dev_spec, now)
        if op[0] < 1.0:
            return f"rate limit {op_spec.describe()} exceeded for operator {operator!r}"
        if dev[0] < 1.0:
            return f"rate limit {dev_spec.describe()} exceeded for device {device_id}"
        op[0] -= 1.0
        dev[0] -= 1.0
        return None


# --- the checks both sides run -----------------------------------------------------------------

def _params(r: Any) -> dict[str, str]:
    return dict(r.params)


def judge(obj: ferry_pb2.CanonicalObject, plan: Plan, rates: ReverseRates, now: float) -> Decision:
    """Schema, policy, device, rates: the decision for one request object."""
    r = obj.reverse
    problem = check_request(r.request, r.device_id, _params(r), r.operator)
    if problem is not None:
        return Decision(False, SCHEMA_RULE, problem, Reason.BAD_REQUEST)
    d = plan.decide(obj)
    if not d.allowed:
        return d
    if not plan.device_sources(r.device_id):
        return Decision(False, SCHEMA_RULE, f"device {r.device_id} is named by no devices source of policy "
                        f"{plan.name}", Reason.UNKNOWN_DEVICE)
    rule = plan.rule(d.rule)
    limited = rates.take(r.operator, r.device_id, rule.rate if rule is not None else None, now)
    if limited is not None:
        return Decision(False, d.rule, limited, Reason.RATE_LIMITED)
    return d


def _fields(obj: ferry_pb2.CanonicalObject) -> dict[str, Any]:
    r = obj.reverse
    src = obj.source
    return {"lane": LANE, "object_id": obj.object_id or None, "destination": obj.destination or None,
            "source": {k: v for k, v in (("address", src.address), ("device_id", src.device_id)) if v} or None,
            "object_type": r.request[:64] or None,
            "detail": {"request": r.request[:64], "device_id": r.device_id[:64], "operator": r.operator[:64],
                       "params": {k[:32]: v[:64] for k, v in list(r.params.items())[:8]}}}


def refusal(obj: ferry_pb2.CanonicalObject, d: Decision, **more: Any) -> AuditIntent:
    return AuditIntent({"event": "request_refused", "verdict": "refused", "rule": d.rule, "reason": d.reason,
                        "code": d.code or Reason.BAD_REQUEST, **_fields(obj), **more})


# --- inner side: the sender of the reverse ferry -----------------------------------------------

class InnerReverseLane:
    """``ask`` -> [AuditIntent(request_sent), SealObject] or [AuditIntent(request_refused)]."""

    def __init__(self, ids: ObjectIds, destination: str) -> None:
        self.ids = ids
        self.destination = destination
        self.rates = ReverseRates()
        self.counts = {"sent": 0, "refused": 0}

    def ask(self, request: str, device_id: str, params: Mapping[str, str], operator: str, plan: Plan,
            now: float, wall: float, *, address: str = "", platform_id: str = "",
            destination: str = "") -> list[Any]:
        obj = ferry_pb2.CanonicalObject(lane=LANE, destination=destination or self.destination, created=wall)
        obj.source.address = address
        obj.source.device_id = platform_id
        r = obj.reverse
        r.request, r.device_id, r.operator = request, device_id, operator
        try:
            r.params.update(params)
        except (TypeError, ValueError) as e:      # not str -> str
            self.counts["refused"] += 1
            return [refusal(obj, Decision(False, SCHEMA_RULE, f"parameters: {e}", Reason.BAD_REQUEST))]
        d = judge(obj, plan, self.rates, now)
        obj.object_id = self.ids.next()
        if not d.allowed:
            self.counts["refused"] += 1
            return [refusal(obj, d)]
        obj.rule = d.rule
        self.counts["sent"] += 1
        sent = AuditIntent({"event": "request_sent", "verdict": "sent", "rule": d.rule,
                            "reason": f"{request} of {device_id} for {operator}: {d.reason}", **_fields(obj)})
        return [sent, SealObject(obj, None)]


# --- outer side: the receiver of the reverse ferry ---------------------------------------------

@dataclass(frozen=True, slots=True)
class ReverseAction:
    """Outer: an allowed request, for the handler registered for ``request`` to carry out."""

    request: str
    device_id: str
    params: Mapping[str, str]
    operator: str
    object_id: int
    destination: str = ""
    source: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ReverseFloor:
    """Outer: what the reverse lane keeps across the agent's restarts. A request whose object ID is
    at or below ``object_id`` (the highest taken by an earlier run), or created at or before
    ``not_before`` (wall seconds; 0: none), is refused as a replay."""

    object_id: int = 0
    not_before: int = 0


FLOOR_MAGIC = b"ferry-reverse-floor 1 "
_FLOOR = re.compile(rb"ferry-reverse-floor 1 ([0-9]{1,20}) ([0-9]{1,12}) ([0-9a-f]{8})\n\Z")


def encode_floor(f: ReverseFloor) -> bytes:
    """One line: the magic, the object ID, not_before, and a CRC-32 of what comes before it."""
    body = FLOOR_MAGIC + b"%d %d" % (f.object_id, f.not_before)
    return body + b" %08x\n" % zlib.crc32(body)


def decode_floor(data: bytes) -> ReverseFloor:
    """``encode_floor``'s bytes back; ValueError (saying why) for anything else."""
    m = _FLOOR.match(data)
    if m is None:
        raise ValueError("not a reverse floor line (torn or corrupt)")
    body = data[:m.start(3) - 1]
    if zlib.crc32(body) != int(m.group(3), 16):
        raise ValueError("checksum mismatch (corrupt)")
    oid = int(m.group(1))
    if oid >= 1 << 64:
        raise ValueError(f"object ID {oid} out of range")
    return ReverseFloor(oid, int(m.group(2)))


def restart_floor(stored: ReverseFloor | None, usable: bool, wall: float) -> ReverseFloor:
    """The floor of a starting outer agent: the stored one; none on a first start (``stored`` None,
    ``usable``); after a state it could not use, one that refuses every request created before
    now plus the allowed clock skew (a captured request cannot be younger than that, and a
    request created later is taken: the refusal ends)."""
    if usable:
        return stored or ReverseFloor()
    return ReverseFloor(0, math.ceil(wall + limits.CLOCK_SKEW))


class OuterReverseLane:
    """``take`` -> [AuditIntent(request_received), ReverseAction] or [AuditIntent(request_refused)].

    Its rate buckets are REVERSE_OUTER_SLACK tokens deeper than the inner's. The link is one way, so
    the inner never learns of a refusal here, and a request it let through must not be refused for
    the link's timing: requests the inner spent refills on can arrive bunched (held back by a lost
    key announcement or a cut), at a bucket that sat full meanwhile. The slack covers that; a
    compromised inner host ignoring the rate still gets only burst + slack at once, then the rate."""

    def __init__(self, floor: ReverseFloor | None = None) -> None:
        self.rates = ReverseRates(slack=limits.REVERSE_OUTER_SLACK)
        self.seen: Recent[int, None] = Recent(limits.REVERSE_SEEN_MAX)
        self.counts = {"received": 0, "refused": 0}
        self.floor = floor or ReverseFloor()      # from before this run: fixed while it lasts
        self.high = self.floor.object_id          # the highest object ID taken: to keep before serving

    def state(self) -> ReverseFloor:
        """What to keep for the next run (``high`` grows as requests are taken)."""
        return ReverseFloor(self.high, self.floor.not_before)

    def take(self, e: ev.ObjectReceived, plan: Plan, now: float, wall: float) -> list[Any]:
        """A whole object from the reverse link."""
        link = {"epoch": e.epoch, "blocks": list(e.blocks[:1])}
        obj = ferry_pb2.CanonicalObject()
        if len(e.payload) > limits.REVERSE_OBJECT_MAX:
            return self._refuse(obj, Decision(False, SCHEMA_RULE, f"{len(e.payload)} bytes exceed "
                                              f"{limits.REVERSE_OBJECT_MAX}", Reason.BAD_REQUEST), e, link)
        try:
            obj.ParseFromString(e.payload)
        except DecodeError as err:
            return self._refuse(obj, Decision(False, SCHEMA_RULE, f"malformed canonical object: {err}",
                                              Reason.MALFORMED_OBJECT), e, link)
        return self.take_object(obj, plan, now, wall, link_id=e.object_id, link=link)

    def take_object(self, obj: ferry_pb2.CanonicalObject, plan: Plan, now: float, wall: float, *,
                    link_id: int | None = None, link: dict[str, Any] | None = None) -> list[Any]:
        link = link or {}
        oid = obj.object_id
        if link_id is not None and oid != link_id:
            return self._refuse(obj, Decision(False, SCHEMA_RULE, f"object id {oid} differs from its link id "
                                              f"{link_id}", Reason.OBJECT_ID_MISMATCH), None, link)
        if obj.lane != LANE or obj.WhichOneof("body") != "reverse":
            return self._refuse(obj, Decision(False, SCHEMA_RULE, f"not a reverse request (lane {obj.lane[:20]!r}, "
                                              f"body {obj.WhichOneof('body')})", Reason.BAD_REQUEST), None, link)
        late = skew_refusal(obj.created, wall)
        if late is not None:
            return self._refuse(obj, Decision(False, SCHEMA_RULE, late, Reason.CLOCK_SKEW), None, link)
        if obj.created <= self.floor.not_before:
            return self._refuse(obj, Decision(False, SCHEMA_RULE, f"request {oid} created {obj.created:.3f}, not "
                                              f"after {self.floor.not_before}: the reverse state was unusable at "
                                              "the outer agent's start, requests older than it plus the clock skew "
                                              "are refused", Reason.REPLAYED_OBJECT), None, link)
        if oid >> 32 > obj.created + 1:
            return self._refuse(obj, Decision(False, SCHEMA_RULE, f"object id {oid}: its run {oid >> 32} begins "
                                              f"after the request's creation {obj.created:.3f}",
                                              Reason.BAD_REQUEST), None, link)
        if oid <= self.floor.object_id:
            return self._refuse(obj, Decision(False, SCHEMA_RULE, f"request {oid} is not above {self.floor.object_id}"
                                              ", the highest taken before the outer agent's restart",
                                              Reason.REPLAYED_OBJECT), None, link)
        if oid in self.seen:
            return self._refuse(obj, Decision(False, SCHEMA_RULE, f"request {oid} taken before",
                                              Reason.REPLAYED_OBJECT), None, link)
        self.seen.put(oid, None)
        if oid > self.high:
            self.high = oid
        d = judge(obj, plan, self.rates, now)
        if not d.allowed:
            return self._refuse(obj, d, None, link)
        self.counts["received"] += 1
        r = obj.reverse
        src = {k: v for k, v in (("address", obj.source.address), ("device_id", obj.source.device_id)) if v}
        action = ReverseAction(r.request, r.device_id, _params(r), r.operator, oid, obj.destination, src)
        received = AuditIntent({"event": "request_received", "verdict": "delivered", "rule": d.rule,
                                "reason": f"{r.request} of {r.device_id} for {r.operator}: {d.reason}",
                                **_fields(obj), **link})
        return [received, action]

    def _refuse(self, obj: ferry_pb2.CanonicalObject, d: Decision, e: ev.ObjectReceived | None,
                link: dict[str, Any]) -> list[Any]:
        self.counts["refused"] += 1
        intent = refusal(obj, d, **link)
        if e is not None:
            intent.fields["object_id"] = e.object_id
        return [intent]


def unserved(action: ReverseAction, why: str, code: Reason) -> AuditIntent:
    """Outer: the record of an allowed request nobody served (no handler, or it failed)."""
    return AuditIntent({"event": "request_unserved", "verdict": "refused", "rule": SCHEMA_RULE, "lane": LANE,
                        "object_id": action.object_id, "reason": why, "code": code,
                        "object_type": action.request,
                        "detail": {"request": action.request, "device_id": action.device_id,
                                   "operator": action.operator}})
