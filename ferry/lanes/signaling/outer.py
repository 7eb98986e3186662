"""The outer SIP side (issue 13 item 1): ferry as the upper-level platform of outer GB/T 28181
devices (cameras, NVRs) and lower-level platforms. Pure: SIP messages (parsed by
``ferry.codecs.sip``), the peer they came from, ``now``, ``wall`` and the plan in; work out.

    lane = OuterSignalingLane(settings, ids)
    lane.on_message(msg, peer, plan, now, wall) -> [SendSip | SealObject | AuditIntent]
    lane.on_refused(peer, reason, size, now, wall)      SIP the endpoint could not parse
    lane.next_timer() / lane.handle_timer(plan, now, wall)
    lane.registry                                       ferry.lanes.signaling.registry.Registry

``peer`` is opaque to the lane (the agent's ``Peer``: ``transport``, ``host``, ``port``): replies
go back to it in a ``SendSip(data, peer)``.

REGISTER (GB/T 28181 §9.1.2, RFC 3261 §10 and §22): a device ID no ``[[signaling.device]]`` names
gets 403 (``sip_unknown_device``) before any state is made for it. Without Authorization: 401 with
a fresh nonce (MD5, qop "auth" offered; an answer without qop is accepted, since many devices
ignore it: the nonce is single-use anyway). Nonces are bounded in number (SIGNALING_NONCES_MAX, the
oldest dropped; room for every configured device at once, as when all re-register after a power
cut; and SIGNALING_NONCES_PER_DEVICE per device, so one device ID cannot push out the others)
and age (SIGNALING_NONCE_TTL) and bound to the device they were issued to; a nonce
answered once is remembered (SIGNALING_NONCES_USED_MAX): answering it again is ``nonce_replay``;
a nonce ferry does not hold is ``stale_nonce`` (both: 401 stale=true with a fresh nonce); a wrong
answer is ``wrong_password`` (403). Expires 0 unregisters; a shorter registration than
``register_expires_min`` gets 423 with Min-Expires, a longer one is cut to
``register_expires_max``. A re-register refreshes; an expired registration or SIGNALING_KEEPALIVE
missed keepalives mark the device offline. On coming online ferry asks the device for its catalog
(MESSAGE Query Catalog, its own Call-ID, tag, branch and SN), again after ``catalog_retry``
seconds while no Response Catalog came (SIGNALING_CATALOG_TRIES queries in all).

MESSAGE (§9.3, §9.5, §9.6): from a configured, registered device (and from the address it
registered from), with Content-Type Application/MANSCDP+xml (else 415), a body of at most
SIGNALING_MESSAGE_BODY_MAX bytes (else 413) that ``ferry.codecs.manscdp`` parses (else 400,
``bad_manscdp``: DTDs, entities, XML bombs, charsets, schema), whose DeviceID is the device or
one of its catalog channels (else 403 ``device_mismatch``). Keepalives, catalog pages (SumNum /
Num), DeviceInfo and DeviceStatus responses update the device's state. Then the message becomes a
canonical signaling object (its XML rebuilt from the parsed values, UTF-8) and the policy decides:
allowed, it is sealed with its ``object_sent`` record; refused, a ``signaling_refused`` record.
The device gets 200 OK, except for a refused Notify/Query/Control (403).

A device coming online or going offline crosses as a Notify Catalog whose one Item carries
Event ON / OFF (GB/T 28181-2016 §9.6.2), decided by the policy like any message.

Refusals (``signaling_refused``, rule ``ferry-signaling`` or the policy's) are aggregated per
(code, address, rule, and the device if it is a configured one): the first at once, then one
record per SIGNALING_REFUSAL_AUDIT_INTERVAL summing the rest, so a flood cannot fill the trail;
``counters`` count every one. Passwords are never in a record, a log line or an object.

Retransmissions (RFC 3261 §17.2.2): the response to a request is kept for
SIGNALING_TRANSACTION_TTL (bounded) and sent again for a retransmitted request, which is not
processed twice (a MESSAGE crosses once).
"""
from __future__ import annotations

import heapq
import secrets
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from zoneinfo import ZoneInfo

from ferry import limits
from ferry.codecs import manscdp, sip, sip_digest
from ferry.codecs.manscdp import Item, Manscdp, ManscdpError
from ferry.codecs.sip import SipError, SipRequest, SipResponse, SipUri, parse_uri
from ferry.codecs.sip_digest import Challenge, DigestError
from ferry.lanes.signaling.registrations import Saved
from ferry.lanes.signaling.registry import Registry
from ferry.lanes.work import AuditIntent, ObjectIds, SealObject
from ferry.pb import ferry_pb2
from ferry.policy import Plan
from ferry.reasons import Reason

LANE = "signaling"
RULE = "ferry-signaling"          # the builtin rule of the lane's own refusals
CONTENT_TYPE = "application/manscdp+xml"
# requests and responses the media part takes when one is attached (the contract of issue 13)
MEDIA_METHODS = frozenset({"INVITE", "ACK", "BYE", "CANCEL", "INFO"})
MEDIA_RESPONSE_METHODS = frozenset({"INVITE", "BYE"})
ALLOW = "REGISTER, MESSAGE, ACK, BYE, CANCEL, INVITE, INFO"
# answered 200 even when the policy keeps them from crossing: ferry's own business with the device
_ALWAYS_OK = ("Keepalive",)


@dataclass(frozen=True, slots=True)
class SendSip:
    """Bytes of one SIP message for the agent's endpoint to send to ``peer``."""
    data: bytes
    peer: Any


@dataclass(frozen=True)
class Settings:
    """What the lane needs of ``[signaling]`` (built by the agent; passwords never leave it)."""
    server_id: str
    realm: str
    destination: str
    passwords: Mapping[str, str]
    source: str = ""
    keepalive_timeout: float = limits.SIGNALING_KEEPALIVE_MISSED * limits.SIGNALING_KEEPALIVE_INTERVAL
    register_expires_min: int = limits.SIGNALING_REGISTER_EXPIRES_MIN
    register_expires_max: int = 3600
    catalog_query: bool = True
    catalog_retry: float = limits.SIGNALING_CATALOG_RETRY     # s until an unanswered query is asked again
    local: Mapping[str, tuple[str, int]] | None = None   # transport -> ferry's (host, port) for Via

    def __repr__(self) -> str:       # never the passwords
        return f"Settings(server_id={self.server_id!r}, realm={self.realm!r}, devices={len(self.passwords)})"


def is_media(msg: SipRequest | SipResponse) -> bool:
    """Whether a message belongs to the media part (INVITE dialogs), per the issue 13 contract."""
    if isinstance(msg, SipRequest):
        return msg.method in MEDIA_METHODS
    try:
        return msg.cseq[1] in MEDIA_RESPONSE_METHODS
    except SipError:
        return False


class _Refusals:
    __slots__ = ("code", "address", "rule", "reason", "source", "detail", "count", "total", "last")

    def __init__(self, code: Reason, address: str, rule: str) -> None:
        self.code, self.address, self.rule = code, address, rule
        self.reason = ""
        self.source: dict[str, str] = {}
        self.detail: dict[str, Any] = {}
        self.count = 0
        self.total = 0
        self.last: float | None = None

    def due(self) -> float | None:
        if not self.count or self.last is None:
            return None
        return self.last + limits.SIGNALING_REFUSAL_AUDIT_INTERVAL


@dataclass(slots=True)
class _Nonce:
    device_id: str
    issued: float


Work = SendSip | SealObject | AuditIntent


class OuterSignalingLane:
    def __init__(self, settings: Settings, ids: ObjectIds, *,
                 token: Callable[[int], str] = secrets.token_hex) -> None:
        self.settings = settings
        self.ids = ids
        self.token = token
        self.registry = Registry(settings.keepalive_timeout)
        self._nonces: OrderedDict[str, _Nonce] = OrderedDict()
        self._device_nonces: dict[str, deque[str]] = {}     # device -> its outstanding nonces, oldest first
        self._used: OrderedDict[str, None] = OrderedDict()
        self._transactions: OrderedDict[tuple[Any, ...], tuple[bytes, float]] = OrderedDict()
        self._refusals: dict[tuple[Reason, str, str, str], _Refusals] = {}
        self._soonest: float | None = None
        self._catalog_due: dict[str, tuple[float, int]] = {}     # device -> (when to ask again, tries)
        self._catalog_heap: list[tuple[float, str]] = []
        self._sn = 0
        self._cseq = 0
        self.counters: Counter[str] = Counter()

    # -- the agent's entry points ------------------------------------------------------------------
    def on_message(self, msg: SipRequest | SipResponse, peer: Any, plan: Plan, now: float,
                   wall: float) -> list[Work]:
        """One parsed SIP message from ``peer``."""
        if isinstance(msg, SipResponse):
            self.counters["responses"] += 1     # to ferry's queries: nothing to do
            return []
        self.counters["requests"] += 1
        key = self._transaction_key(msg, peer)
        kept = self._transactions.get(key)
        if kept is not None and kept[1] > now:
            self.counters["retransmissions"] += 1
            return [SendSip(kept[0], peer)]
        work: list[Work] = []
        try:
            if msg.method == "REGISTER":
                work = self._register(msg, peer, plan, now, wall)
            elif msg.method == "MESSAGE":
                work = self._message(msg, peer, plan, now, wall)
            elif msg.method == "ACK":
                return []
            elif msg.method == "INVITE":
                work = [self._respond(msg, peer, 403, "Forbidden", now, extra=(
                    ("Warning", f'399 {self.settings.server_id} "on-demand video not configured"'),))]
            elif msg.method in ("BYE", "CANCEL"):
                work = [self._respond(msg, peer, 481, "Call/Transaction Does Not Exist", now)]
            else:
                work = self._refuse_request(msg, peer, 405, "Method Not Allowed", Reason.UNSUPPORTED_METHOD,
                                            f"method {msg.method} is not served by the outer SIP side", now,
                                            extra=(("Allow", ALLOW),))
        except SipError as e:     # a header the request needs does not parse
            work = self._refuse_request(msg, peer, 400, "Bad Request", Reason.MALFORMED_SIP, str(e), now)
        return work

    def on_refused(self, peer: Any, reason: str, size: int, now: float, wall: float) -> list[Work]:
        """SIP the endpoint could not frame or parse: no answer, a (aggregated) refusal."""
        work: list[Work] = []
        self._refusal(Reason.MALFORMED_SIP, peer, f"malformed SIP: {reason}", now, work,
                      detail={"bytes": size})
        return work

    def next_timer(self) -> float | None:
        times = [t for t in (self.registry.next_timer(), self._soonest, self._next_catalog()) if t is not None]
        return min(times) if times else None

    def _next_catalog(self) -> float | None:
        heap = self._catalog_heap
        while heap:
            t, did = heap[0]
            due = self._catalog_due.get(did)
            if due is not None and due[0] == t:
                return t
            heapq.heappop(heap)
        return None

    def handle_timer(self, plan: Plan, now: float, wall: float) -> list[Work]:
        work: list[Work] = []
        for d, why in self.registry.due(now):
            self.counters["offline"] += 1
            work.append(self._device_record("device_offline", d.device_id, d.peer, f"offline: {why}"))
            work += self._presence(d.device_id, d.peer, "OFF", plan, now, wall)
            self._catalog_due.pop(d.device_id, None)
        while (t := self._next_catalog()) is not None and t <= now:
            _, did = heapq.heappop(self._catalog_heap)
            _, tries = self._catalog_due.pop(did)
            dev = self.registry.get(did)
            if dev is not None and dev.online and dev.contact is not None:
                work += self._query_catalog(did, dev.peer, dev.contact, now, tries + 1)
        work += self._refusals_due(now)
        return work

    def restore(self, saved: Iterable[Saved], peer_of: Callable[[str, str, int], Any], plan: Plan, now: float,
                wall: float) -> list[Work]:
        """The devices a run before this one left online (ferry.lanes.signaling.registrations):
        online again for what their registration had left; one that ran out meanwhile is offline
        (its OFF crosses); one no longer configured is left out. One ``registrations_loaded``."""
        work: list[Work] = []
        restored = expired = dropped = 0
        for s in saved:
            if s.device_id not in self.settings.passwords:
                dropped += 1
                continue
            peer = peer_of(s.transport, s.host, s.port)
            left = min(s.expires_wall - wall, self.settings.register_expires_max)
            if left <= 0:
                expired += 1
                self.counters["offline"] += 1
                work.append(self._device_record("device_offline", s.device_id, peer,
                                                "offline: its registration ran out while the outer agent was down"))
                work += self._presence(s.device_id, peer, "OFF", plan, now, wall)
                continue
            items = tuple(Item(fields) for fields in s.catalog)
            if self.registry.restore(s.device_id, peer, parse_uri(s.contact), left, s.registered_wall, items,
                                     now) is None:
                dropped += 1
                continue
            restored += 1
        work.insert(0, AuditIntent({
            "event": "registrations_loaded", "verdict": "info", "lane": LANE,
            "reason": f"{restored} device(s) online again as an earlier run left them (until their registration "
                      f"runs out, keepalives due from now); {expired} ran out meanwhile; {dropped} no longer "
                      "configured",
            "detail": {"restored": restored, "expired": expired, "dropped": dropped}}))
        return work

    def flush(self, now: float) -> list[Work]:
        """The aggregated refusal records still counted (the agent stopping)."""
        return self._refusals_due(now, final=True)

    # -- REGISTER ------------------------------------------------------------------------------------
    def _register(self, req: SipRequest, peer: Any, plan: Plan, now: float, wall: float) -> list[Work]:
        s = self.settings
        frm, to = req.from_, req.to
        device_id = frm.uri.user or ""
        if to.uri.user != device_id:
            return self._refuse_request(req, peer, 403, "Forbidden", Reason.MALFORMED_SIP,
                                        f"REGISTER of {to.uri.user!r} by {device_id!r}: third-party "
                                        "registration is not served", now)
        password = s.passwords.get(device_id)
        if password is None:
            return self._refuse_request(req, peer, 403, "Forbidden", Reason.SIP_UNKNOWN_DEVICE,
                                        f"REGISTER from device {_short(device_id)}, which no "
                                        "[[signaling.device]] names", now, device_id=device_id)
        expires = self._expires(req)
        contacts = req.contact
        if expires > 0 and not contacts:
            return self._refuse_request(req, peer, 400, "Bad Request", Reason.MALFORMED_SIP,
                                        "REGISTER without a Contact", now, device_id=device_id)
        auth = req.header("Authorization")
        if auth is None:
            self.counters["challenged"] += 1
            return [self._challenge(req, peer, device_id, now, stale=False)]
        try:
            creds = sip_digest.parse_authorization(auth)
        except DigestError as e:
            return self._refuse_request(req, peer, 400, "Bad Request", Reason.MALFORMED_SIP,
                                        f"Authorization: {e}", now, device_id=device_id)
        nonce = self._nonces.get(creds.nonce)
        if nonce is None or nonce.device_id != device_id or now - nonce.issued > limits.SIGNALING_NONCE_TTL:
            work: list[Work] = [self._challenge(req, peer, device_id, now, stale=True)]
            if creds.nonce in self._used:
                self._refusal(Reason.NONCE_REPLAY, peer, f"REGISTER of {device_id} answers a nonce already "
                              "used (a replayed Authorization): challenged afresh", now, work, device_id=device_id)
            else:
                if nonce is not None and nonce.device_id == device_id:    # expired: it serves no more
                    self._drop_nonce(creds.nonce)
                self._refusal(Reason.STALE_NONCE, peer, f"REGISTER of {device_id} answers a nonce ferry does "
                              "not hold (expired, dropped or never issued): challenged afresh", now, work,
                              device_id=device_id)
            return work
        # the nonce is used up whatever the answer: one guess per challenge
        self._drop_nonce(creds.nonce)
        self._remember_used(creds.nonce)
        challenge = Challenge(s.realm, creds.nonce, qop=creds.qop)
        if creds.username != device_id or not sip_digest.verify(creds, "REGISTER", password, challenge):
            self.counters["wrong_password"] += 1
            return self._refuse_request(req, peer, 403, "Forbidden", Reason.WRONG_PASSWORD,
                                        f"REGISTER of {device_id}: the digest answer does not verify "
                                        "(wrong password or username)", now, device_id=device_id)
        if expires == 0:
            was = self.registry.unregister(device_id)
            self._catalog_due.pop(device_id, None)
            work = [self._respond(req, peer, 200, "OK", now, extra=(("Expires", "0"),))]
            if was:
                self.counters["unregistered"] += 1
                work.append(self._device_record("device_unregistered", device_id, peer, "unregistered (Expires 0)"))
                work += self._presence(device_id, peer, "OFF", plan, now, wall)
            return work
        if expires < s.register_expires_min:
            return [self._respond(req, peer, 423, "Interval Too Brief", now,
                                  extra=(("Min-Expires", str(s.register_expires_min)),))]
        granted = min(expires, s.register_expires_max)
        contact = contacts[0]
        came = self.registry.register(device_id, peer, contact.uri, granted, now, wall)
        if came is None:
            return self._refuse_request(req, peer, 503, "Service Unavailable", Reason.SIP_UNKNOWN_DEVICE,
                                        f"REGISTER of {device_id}: the registry is full", now, device_id=device_id)
        self.counters["registered" if came else "refreshed"] += 1
        work = [self._respond(req, peer, 200, "OK", now, extra=(
            ("Contact", f"<{contact.uri}>;expires={granted}"), ("Expires", str(granted)),
            ("Date", _gb_date(wall, plan.timezone))))]
        if came:
            work.append(self._device_record("device_registered", device_id, peer,
                                            f"registered for {granted} s from {peer}"))
            work += self._presence(device_id, peer, "ON", plan, now, wall)
            if s.catalog_query:
                work += self._query_catalog(device_id, peer, contact.uri, now)
        return work

    def _expires(self, req: SipRequest) -> int:
        contacts = req.contact
        if contacts:
            v = contacts[0].uri.param("expires")
            if v is None:
                for k, val in contacts[0].params:
                    if k.lower() == "expires":
                        v = val
            if v is not None:
                if not v.isdigit() or len(v) > 10:
                    raise SipError(f"Contact expires {v[:20]!r} is not a number")
                return int(v)
        e = req.expires
        if e is None:
            return 3600 if contacts or req.header("Contact") != "*" else 0
        return e

    def _challenge(self, req: SipRequest, peer: Any, device_id: str, now: float, stale: bool) -> SendSip:
        nonce = self.token(16)
        mine = self._device_nonces.setdefault(device_id, deque())
        while len(mine) >= limits.SIGNALING_NONCES_PER_DEVICE:
            self._drop_nonce(mine[0])
        while len(self._nonces) >= limits.SIGNALING_NONCES_MAX:
            self._drop_nonce(next(iter(self._nonces)))
        self._nonces[nonce] = _Nonce(device_id, now)
        self._device_nonces.setdefault(device_id, mine).append(nonce)
        value = sip_digest.www_authenticate(Challenge(self.settings.realm, nonce))
        if stale:
            value += ", stale=TRUE"
        return self._respond(req, peer, 401, "Unauthorized", now, extra=(("WWW-Authenticate", value),))

    def _drop_nonce(self, nonce: str) -> None:
        held = self._nonces.pop(nonce, None)
        if held is None:
            return
        mine = self._device_nonces[held.device_id]
        mine.remove(nonce)
        if not mine:
            del self._device_nonces[held.device_id]

    def _remember_used(self, nonce: str) -> None:
        self._used[nonce] = None
        while len(self._used) > limits.SIGNALING_NONCES_USED_MAX:
            self._used.popitem(last=False)

    # -- MESSAGE -------------------------------------------------------------------------------------
    def _message(self, req: SipRequest, peer: Any, plan: Plan, now: float, wall: float) -> list[Work]:
        s = self.settings
        device_id = req.from_.uri.user or ""
        if device_id not in s.passwords:
            return self._refuse_request(req, peer, 403, "Forbidden", Reason.SIP_UNKNOWN_DEVICE,
                                        f"MESSAGE from device {_short(device_id)}, which no [[signaling.device]] "
                                        "names", now, device_id=device_id)
        d = self.registry.get(device_id)
        if d is None or not d.online:
            return self._refuse_request(req, peer, 403, "Forbidden", Reason.NOT_REGISTERED,
                                        f"MESSAGE from device {device_id}, which is not registered", now,
                                        device_id=device_id)
        if getattr(peer, "host", None) != getattr(d.peer, "host", None):
            return self._refuse_request(req, peer, 403, "Forbidden", Reason.NOT_REGISTERED,
                                        f"MESSAGE from device {device_id} at {getattr(peer, 'host', '?')}, "
                                        f"registered from {getattr(d.peer, 'host', '?')}", now, device_id=device_id)
        ctype = req.content_type
        if ctype != CONTENT_TYPE:
            return self._refuse_request(req, peer, 415, "Unsupported Media Type", Reason.UNSUPPORTED_CONTENT_TYPE,
                                        f"MESSAGE from {device_id} with Content-Type {ctype or 'none'}; "
                                        "only Application/MANSCDP+xml is taken", now, device_id=device_id,
                                        extra=(("Accept", "Application/MANSCDP+xml"),))
        if len(req.body) > limits.SIGNALING_MESSAGE_BODY_MAX:
            return self._refuse_request(req, peer, 413, "Request Entity Too Large", Reason.BODY_TOO_LARGE,
                                        f"MESSAGE from {device_id}: body of {len(req.body)} bytes exceeds "
                                        f"{limits.SIGNALING_MESSAGE_BODY_MAX}", now, device_id=device_id)
        try:
            m = manscdp.parse(req.body, content_charset=_charset(req.header("Content-Type") or ""))
        except ManscdpError as e:
            return self._refuse_request(req, peer, 400, "Bad Request", Reason.BAD_MANSCDP,
                                        f"MESSAGE from {device_id}: MANSCDP refused: {e}", now, device_id=device_id)
        if m.device_id != device_id and m.device_id not in d.catalog:
            return self._refuse_request(req, peer, 403, "Forbidden", Reason.DEVICE_MISMATCH,
                                        f"MESSAGE from {device_id} names DeviceID {m.device_id}, neither the device "
                                        "nor one of its catalog channels", now, device_id=device_id)
        d.messages += 1
        self.counters["messages"] += 1
        if m.root == "Notify" and m.cmd_type == "Keepalive":
            self.registry.keepalive(d, now)
        elif m.root == "Response" and m.cmd_type == "Catalog":
            self.registry.learn_catalog(d, m)
            self._catalog_due.pop(device_id, None)      # answered: not asked again
        elif m.root == "Response" and m.cmd_type == "DeviceInfo":
            d.info = m.fields
        elif m.root == "Response" and m.cmd_type == "DeviceStatus":
            d.status = m.fields
        work: list[Work] = []
        allowed = self._cross(m, device_id, peer, plan, wall, work, now)
        if allowed or m.root == "Response" or m.cmd_type in _ALWAYS_OK:
            work.insert(0, self._respond(req, peer, 200, "OK", now))
        else:
            work.insert(0, self._respond(req, peer, 403, "Forbidden", now))
        return work

    # -- crossing -----------------------------------------------------------------------------------
    def _cross(self, m: Manscdp, device_id: str, peer: Any, plan: Plan, wall: float, work: list[Work],
               now: float) -> bool:
        """Make the canonical object of ``m`` and let the policy decide; True if it is sealed."""
        s = self.settings
        xml = manscdp.build(m, encoding="UTF-8").decode("utf-8")
        obj = ferry_pb2.CanonicalObject(
            object_id=self.ids.next(), lane=LANE, destination=s.destination, created=wall,
            source=ferry_pb2.Source(device_id=device_id, address=getattr(peer, "host", ""),
                                    port=int(getattr(peer, "port", 0) or 0), name=s.source),
            signaling=ferry_pb2.SignalingMessage(root=m.root, cmd_type=m.cmd_type, device_id=m.device_id,
                                                 sn=m.sn, xml=xml))
        decision = plan.decide(obj)
        detail: dict[str, Any] = {"root": m.root, "cmd_type": m.cmd_type, "sn": m.sn,
                                  "transport": getattr(peer, "transport", "")}
        if m.device_id != device_id:
            detail["channel"] = m.device_id
        if m.dropped:
            detail["dropped"] = list(m.dropped[:16])
        if not decision.allowed:
            self._refusal(decision.code or Reason.DEFAULT_DENY, peer,
                          f"{m.root} {m.cmd_type} from {device_id}: {decision.reason}", now, work,
                          device_id=device_id, rule=decision.rule, detail=detail)
            return False
        obj.rule = decision.rule
        self.counters["sealed"] += 1
        sent = {"event": "object_sent", "verdict": "sent", "lane": LANE, "object_id": obj.object_id,
                "object_type": f"{m.root}/{m.cmd_type}", "size": len(xml.encode("utf-8")),
                "source": _source(device_id, peer, s.source), "destination": s.destination,
                "rule": decision.rule, "reason": decision.reason, "policy_hash": plan.hash.hex(),
                "detail": detail}
        work.append(SealObject(obj, sent=sent))
        return True

    def _presence(self, device_id: str, peer: Any, event: str, plan: Plan, now: float, wall: float) -> list[Work]:
        """A device online (ON) or offline (OFF), as the catalog notification the inner platform knows."""
        self._sn = (self._sn + 1) % (1 << 31)
        m = Manscdp("Notify", "Catalog", self._sn, device_id,
                    items=(Item((("DeviceID", device_id), ("Event", event))),), sum_num=1)
        work: list[Work] = []
        self._cross(m, device_id, peer, plan, wall, work, now)
        return work

    def _query_catalog(self, device_id: str, peer: Any, contact: SipUri, now: float, tries: int = 1) -> list[Work]:
        """MESSAGE Query Catalog to a device that came online: ferry's own Call-ID, tag, branch, SN.
        Unanswered (no Response Catalog) after ``catalog_retry`` s, it is asked again, at most
        SIGNALING_CATALOG_TRIES times in all."""
        s = self.settings
        if s.catalog_retry > 0 and tries < limits.SIGNALING_CATALOG_TRIES:
            due = now + s.catalog_retry
            self._catalog_due[device_id] = (due, tries)
            heapq.heappush(self._catalog_heap, (due, device_id))
        self._sn = (self._sn + 1) % (1 << 31)
        self._cseq = self._cseq % (1 << 30) + 1
        transport = str(getattr(peer, "transport", "udp"))
        host, port = (s.local or {}).get(transport, ("0.0.0.0", 5060))
        body = manscdp.build(Manscdp("Query", "Catalog", self._sn, device_id), encoding="GB2312")
        uri = SipUri("sip", device_id, getattr(peer, "host", contact.host), getattr(peer, "port", contact.port))
        headers = [
            ("Via", f"SIP/2.0/{transport.upper()} {_hostport(host, port)};rport;branch={sip.new_branch()}"),
            ("From", f"<sip:{s.server_id}@{s.realm}>;tag={sip.new_tag()}"),
            ("To", f"<sip:{device_id}@{s.realm}>"),
            ("Call-ID", f"{self.token(16)}@{host}"),
            ("CSeq", f"{self._cseq} MESSAGE"),
            ("Max-Forwards", "70"),
            ("User-Agent", "ferry"),
            ("Content-Type", "Application/MANSCDP+xml"),
        ]
        self.counters["catalog_queries"] += 1
        return [SendSip(sip.build_request("MESSAGE", uri, headers, body), peer)]

    # -- responses, refusals, records ---------------------------------------------------------------
    @staticmethod
    def _transaction_key(req: SipRequest, peer: Any) -> tuple[Any, ...]:
        """(peer, Call-ID, CSeq, top Via) as sent: a retransmission repeats them (RFC 3261 §17.2.3
        matches on the top Via's branch; the whole value is stricter). Raw values: no parsing."""
        call_id = cseq = via = None
        for name, value in req.headers:
            if name == "Via":
                if via is None:
                    via = value.split(",", 1)[0]
            elif name == "Call-ID":
                call_id = value
            elif name == "CSeq":
                cseq = value
        return (peer, call_id, cseq, via)

    def _respond(self, req: SipRequest, peer: Any, status: int, reason: str, now: float,
                 extra: tuple[tuple[str, str], ...] = ()) -> SendSip:
        to_tag = None
        try:
            if req.to.tag is None:
                to_tag = sip.new_tag()
        except SipError:
            pass
        data = sip.response_to(req, status, reason, (("User-Agent", "ferry"), *extra), to_tag=to_tag)
        key = self._transaction_key(req, peer)
        self._transactions[key] = (data, now + limits.SIGNALING_TRANSACTION_TTL)
        self._transactions.move_to_end(key)
        while len(self._transactions) > limits.SIGNALING_TRANSACTIONS_MAX:
            self._transactions.popitem(last=False)
        self.counters[f"status_{status}"] += 1
        return SendSip(data, peer)

    def _refuse_request(self, req: SipRequest, peer: Any, status: int, text: str, code: Reason, reason: str,
                        now: float, device_id: str = "", extra: tuple[tuple[str, str], ...] = ()) -> list[Work]:
        work: list[Work] = []
        try:
            work.append(self._respond(req, peer, status, text, now, extra))
        except SipError:
            pass        # a request whose headers cannot be answered: refused without an answer
        self._refusal(code, peer, reason, now, work, device_id=device_id,
                      detail={"method": req.method, "status": status})
        return work

    def _refusal(self, code: Reason, peer: Any, reason: str, now: float, work: list[Work], *,
                 device_id: str = "", rule: str = RULE, detail: dict[str, Any] | None = None) -> None:
        """One refusal: a record at once unless one was made for (code, address, rule) in the last
        SIGNALING_REFUSAL_AUDIT_INTERVAL; else counted into the next."""
        self.counters["refused"] += 1
        self.counters[f"refused_{code.value}"] += 1
        address = str(getattr(peer, "host", ""))
        # configured devices apart (their number is bounded by the config), the rest by address
        known = device_id if device_id in self.settings.passwords else ""
        key = (code, address, rule, known)
        agg = self._refusals.get(key)
        if agg is None:
            if len(self._refusals) >= limits.SIGNALING_REFUSAL_KEYS_MAX:
                key = (code, "*", rule, "")
                agg = self._refusals.get(key)
            if agg is None:
                agg = self._refusals[key] = _Refusals(code, key[1], rule)
        agg.count += 1
        agg.total += 1
        agg.reason = reason
        agg.source = _source(device_id, peer, self.settings.source) if key[1] != "*" else {"address": "*"}
        agg.detail = {**(detail or {}), "transport": str(getattr(peer, "transport", ""))}
        if agg.last is None or now - agg.last >= limits.SIGNALING_REFUSAL_AUDIT_INTERVAL:
            work.append(self._refusal_record(agg, now))
        else:
            due = agg.due()
            if due is not None and (self._soonest is None or due < self._soonest):
                self._soonest = due

    def _refusal_record(self, agg: _Refusals, now: float) -> AuditIntent:
        n, agg.count, agg.last = agg.count, 0, now
        reason = agg.reason if n == 1 else f"{n} messages refused, the last: {agg.reason}"
        return AuditIntent({"event": "signaling_refused", "verdict": "refused", "lane": LANE,
                            "source": agg.source, "destination": self.settings.destination, "rule": agg.rule,
                            "reason": reason, "code": agg.code,
                            "detail": {**agg.detail, "messages": n, "total": agg.total}})

    def _refusals_due(self, now: float, final: bool = False) -> list[Work]:
        work: list[Work] = []
        self._soonest = None
        for key, agg in list(self._refusals.items()):
            due = agg.due()
            if due is not None and (final or due <= now):
                work.append(self._refusal_record(agg, now))
            elif not agg.count and agg.last is not None and now - agg.last >= limits.SIGNALING_REFUSAL_AUDIT_INTERVAL:
                del self._refusals[key]
                continue
            due = agg.due()
            if due is not None and (self._soonest is None or due < self._soonest):
                self._soonest = due
        return work

    def _device_record(self, event: str, device_id: str, peer: Any, reason: str) -> AuditIntent:
        return AuditIntent({"event": event, "verdict": "info", "lane": LANE,
                            "source": _source(device_id, peer, self.settings.source), "reason": reason,
                            "detail": {"transport": str(getattr(peer, "transport", "")),
                                       "port": int(getattr(peer, "port", 0) or 0)}})


def _source(device_id: str, peer: Any, name: str) -> dict[str, str]:
    out = {"address": str(getattr(peer, "host", ""))}
    if device_id and len(device_id) == 20 and device_id.isdigit():
        out["device_id"] = device_id
    if name:
        out["name"] = name
    return out


def _short(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:40] + "...")


def _charset(content_type: str) -> str | None:
    for part in content_type.split(";")[1:]:
        k, _, v = part.strip(" \t").partition("=")
        if k.strip(" \t").lower() == "charset":
            return v.strip(" \t").strip('"') or None
    return None


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _gb_date(wall: float, tz: str) -> str:
    """The Date of a REGISTER 200 OK as GB/T 28181 §9.10 sets device clocks: local time of the
    policy's time zone, YYYY-MM-DDTHH:MM:SS.mmm."""
    try:
        zone: Any = ZoneInfo(tz)
    except Exception:       # the plan's zone is validated when the policy loads; UTC if it vanished
        zone = timezone.utc
    t = datetime.fromtimestamp(wall, zone)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}"
