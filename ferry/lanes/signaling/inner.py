"""The inner SIP side: ferry as a lower-level platform of the inner GB/T 28181 platform (cascade).

Pure, in the lane shape (ferry/lanes/work.py): SIP messages from the inner platform and canonical
signaling objects from the link go in, with ``now`` (monotonic) and ``wall``; work comes out
(`SendSip` for the agent's SIP endpoint, `AuditIntent`). The agent (ferry/agents/sip_inner.py)
owns the socket and calls `handle_timer` at `next_timer()`.

What it does
    - Registers ferry with the platform (GB/T 28181 §9.1.2): REGISTER, a 401/407 answered with a
      digest Authorization (ferry's ``local_id`` and password), refreshed when SIG_REFRESH_SHARE of
      the granted expiry has passed (same Call-ID, next CSeq: RFC 3261 §10.2.4), registered again
      after a failure with a doubling wait (SIG_REGISTER_RETRY_MIN..MAX). A 403, or a second
      challenge of the nonce just answered (a wrong password), stops it with an alarm record: the
      operator fixes the configuration and restarts.
    - Keepalive (§9.6): a Notify Keepalive MESSAGE every ``keepalive_interval``; SIG_KEEPALIVE_LOST
      unanswered in a row (or one answered with an error) mark the platform lost (alarm) and
      ferry registers again. The platform lost, or a registration that was up ending, also gives
      `PlatformGone`: the agent has the media part end that platform's video dialogs.
    - Keeps the canonical device list from the signaling objects that crossed: Response Catalog
      items, Notify Catalog events (ON/OFF/ADD/DEL/UPDATE/VLOST/DEFECT), device keepalives (a
      device that sends one is ON), and the last Response DeviceInfo / DeviceStatus per device.
    - Answers the platform's Query Catalog (§9.5) with Response Catalog MESSAGEs, SumNum = the total,
      DeviceList Num = the items of that MESSAGE, at most ``catalog_page_size`` each, every page a
      new MESSAGE sent where the query came from, the next once the one before is answered
      (SIG_CATALOG_WINDOW unanswered at a time); Query DeviceInfo / DeviceStatus of a device from the last
      response that crossed, of ferry itself from ferry's own values; 404 when there is none.
    - Forwards Notify Catalog (device online/offline) and Notify Alarm to the platform.

Protocol break: every message is built here from parsed values (ferry.codecs.manscdp re-parses
the object's XML, the SIP builder writes fresh headers): new Call-ID, tags, branch and CSeq on
every request ferry sends (a registration keeps its Call-ID, as RFC 3261 asks), and the device
IDs the inner platform sees are ferry's, per ``[signaling.id_map]`` (ferry/lanes/signaling/ids.py).
A device with no inner ID is refused (``signaling_unmapped``), never shown under its outer ID.
Responses to the platform's own requests copy the platform's Via/From/To/Call-ID/CSeq, as RFC
3261 §8.2.6 says: those values come from the inner side.

The platform is the peer at ``platform`` (its host: a request from any other host is refused
with 403 and recorded). INVITE, ACK, BYE, CANCEL and INFO belong to the media part when one is
attached (the agent dispatches them); without one, `on_sip` refuses an INVITE with 403 and the
Warning "on-demand video not configured".
"""
from __future__ import annotations

import secrets
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ferry import limits
from ferry.codecs import manscdp
from ferry.codecs.manscdp import Item, Manscdp, ManscdpError
from ferry.codecs.sip import SipError, SipRequest, SipResponse, SipUri, build_request, new_branch, new_call_id, \
    new_tag, response_to
from ferry.codecs.sip_digest import Challenge, DigestError, authorization, parse_challenge
from ferry.lanes.signaling.ids import IdMap
from ferry.lanes.work import AuditIntent
from ferry.pb import ferry_pb2
from ferry.policy.plan import Decision
from ferry.reasons import Reason

LANE = "signaling"
RULE = "ferry-signaling"             # the lane's own refusals (the policy's rules are checked before)
CONTENT_TYPE = "Application/MANSCDP+xml"
USER_AGENT = "ferry"
MEDIA_METHODS = frozenset({"INVITE", "ACK", "BYE", "CANCEL", "INFO"})
ALLOW = "REGISTER, MESSAGE, INVITE, ACK, BYE, CANCEL, INFO, OPTIONS"
_CATALOG_EVENTS = frozenset({"ON", "OFF", "VLOST", "DEFECT", "ADD", "DEL", "UPDATE"})
_ID_FIELDS = ("DeviceID", "BusinessGroupID", "Info/BusinessGroupID")


@dataclass(frozen=True, slots=True)
class SendSip:
    """Send ``data`` (one built SIP message) to ``peer`` (the agent's endpoint address; opaque here)."""

    data: bytes
    peer: Any


@dataclass(frozen=True, slots=True)
class PlatformGone:
    """The platform ferry was registered with is gone (``platform_lost``, or the registration ended):
    the agent has the media part end that platform's video dialogs (``why``: for the records)."""

    why: str


@dataclass(frozen=True, slots=True)
class Settings:
    """What the lane needs of ``[signaling]`` (ferry.config.InnerSignaling), as plain values."""

    local_host: str
    local_port: int
    transport: str                  # "udp" | "tcp"
    platform_host: str
    platform_port: int
    platform_id: str
    platform_domain: str
    local_id: str
    local_domain: str
    password: str
    register_expires: int = 3600
    keepalive_interval: float = 60.0
    catalog_page_size: int = limits.SIG_CATALOG_PAGE


class _Tx:
    """A request ferry sent and waits an answer for (a non-INVITE client transaction, RFC 3261 §17.1.2)."""

    __slots__ = ("kind", "data", "peer", "deadline", "next_retx", "interval", "context")

    def __init__(self, kind: str, data: bytes, peer: Any, now: float, udp: bool, context: dict[str, Any]) -> None:
        self.kind = kind
        self.data = data
        self.peer = peer
        self.deadline = now + limits.SIG_TRANSACTION_TIMEOUT
        self.interval = limits.SIG_T1
        self.next_retx: float | None = now + limits.SIG_T1 if udp else None
        self.context = context


class _Unmapped(Exception):
    def __init__(self, device_id: str) -> None:
        super().__init__(device_id)
        self.device_id = device_id


def _audit(**fields: Any) -> AuditIntent:
    return AuditIntent({k: v for k, v in fields.items() if v is not None})


class InnerSignalingLane:
    """One per inner agent with ``[signaling]``. ``platform``: the endpoint's peer of the platform."""

    def __init__(self, settings: Settings, ids: IdMap, platform: Any, now: float) -> None:
        self.s = settings
        self.ids = ids
        self.platform = platform
        self.udp = settings.transport == "udp"
        self.domain = settings.platform_domain or settings.platform_id[:10]
        self.local_domain = settings.local_domain or settings.local_id[:10]
        self.request_uri = SipUri("sip", settings.platform_id, settings.platform_host, settings.platform_port)
        self.local_uri = SipUri("sip", settings.local_id, self.local_domain)
        self.contact = SipUri("sip", settings.local_id, settings.local_host, settings.local_port)
        self.txs: dict[str, _Tx] = {}            # branch -> transaction
        self.cseq = 0
        self.sn = 0
        # registration
        self.state = "idle"                      # idle | registering | registered | waiting | stopped
        self.registered_since: float | None = None      # wall
        self.reg_call_id = ""
        self.reg_branch: str | None = None
        self.reg_at: float | None = 0.0          # monotonic: (re-)register then; None: never (stopped)
        self.retry_wait = limits.SIG_REGISTER_RETRY_MIN
        self.challenge: Challenge | None = None
        self.nc = 0
        self.expires = settings.register_expires
        # keepalive
        self.keepalive_at: float | None = None
        self.keepalive_missed = 0
        self.keepalive_pending: str | None = None    # branch of the last keepalive, until answered
        # the canonical device list: inner ID -> its catalog item (inner IDs in it)
        self.devices: dict[str, Item] = {}
        self.info: dict[tuple[str, str], Manscdp] = {}    # (inner ID, CmdType) -> last Response
        # catalog pages waiting for the one in flight to be answered (SIG_CATALOG_WINDOW at a time)
        self.pages: deque[tuple[Manscdp, dict[str, Any], Any]] = deque()
        self.pages_in_flight = 0
        self.clock = now                                  # the last now given (for refusal records)
        self.refusal_marks: dict[tuple[str, str], list[Any]] = {}   # (host, code) -> [next record at, withheld]
        self.counters = {"objects": 0, "refused": 0, "forwarded": 0, "queries": 0, "pages": 0,
                         "lost": 0, "registrations": 0, "keepalives": 0}

    # -- status ------------------------------------------------------------------------------
    @property
    def registered(self) -> bool:
        return self.state == "registered"

    def status(self) -> dict[str, Any]:
        return {"registered": self.registered, "state": self.state, "since": self.registered_since,
                "devices": len(self.devices), **self.counters}

    def knows(self, inner_id: str) -> bool:
        """Whether ``inner_id`` is on the canonical device list (for the media part)."""
        return inner_id in self.devices

    # -- timers --------------------------------------------------------------------------------
    def next_timer(self) -> float | None:
        times = [t for t in (self.reg_at, self.keepalive_at) if t is not None]
        for tx in self.txs.values():
            times.append(tx.deadline)
            if tx.next_retx is not None:
                times.append(tx.next_retx)
        return min(times) if times else None

    def handle_timer(self, now: float, wall: float) -> list[Any]:
        out: list[Any] = []
        for branch, tx in list(self.txs.items()):
            if now >= tx.deadline:
                del self.txs[branch]
                out += self._timed_out(branch, tx, now, wall)
            elif tx.next_retx is not None and now >= tx.next_retx:
                tx.interval = min(tx.interval * 2, limits.SIG_T2)
                tx.next_retx = now + tx.interval
                out.append(SendSip(tx.data, tx.peer))
        if self.reg_at is not None and now >= self.reg_at:
            self.reg_at = None
            out += self._register(now, wall, refresh=self.state == "registered")
        if self.keepalive_at is not None and now >= self.keepalive_at:
            out += self._keepalive(now, wall)
        return out

    def start(self, now: float, wall: float) -> list[Any]:
        """The first registration."""
        self.reg_at = now
        return self.handle_timer(now, wall)

    def stop(self, now: float, wall: float) -> list[Any]:
        """Leaving: unregister (Expires: 0), best effort; nothing is sent afterwards."""
        out: list[Any] = []
        if self.state == "registered":
            out = self._register(now, wall, refresh=True, expires=0)
        self.state, self.reg_at, self.keepalive_at = "stopped", None, None
        self.txs.clear()
        self.pages.clear()
        self.pages_in_flight = 0
        return out

    # -- requests ferry sends ----------------------------------------------------------------------
    def _request(self, method: str, kind: str, now: float, *, call_id: str | None = None,
                 extra: Iterable[tuple[str, str]] = (), body: bytes = b"",
                 context: dict[str, Any] | None = None, peer: Any = None) -> tuple[str, bytes] | None:
        """Build and remember one request to the platform; None when too many are in flight."""
        if len(self.txs) >= limits.SIG_PENDING_MAX:
            return None
        self.cseq = self.cseq % 0x7FFFFFFF + 1
        branch = new_branch()
        via_host = self.s.local_host if ":" not in self.s.local_host else f"[{self.s.local_host}]"
        headers = [
            ("Via", f"SIP/2.0/{self.s.transport.upper()} {via_host}:{self.s.local_port};rport;branch={branch}"),
            ("From", f"<{self.local_uri}>;tag={new_tag()}"),
            ("To", f"<sip:{self.s.platform_id}@{self.domain}>"),
            ("Call-ID", call_id or new_call_id(self.s.local_host if ":" not in self.s.local_host else "ferry")),
            ("CSeq", f"{self.cseq} {method}"),
            ("Max-Forwards", "70"),
            *extra,
            ("User-Agent", USER_AGENT),
        ]
        if body:
            headers.append(("Content-Type", CONTENT_TYPE))
        data = build_request(method, self.request_uri, headers, body)
        self.txs[branch] = _Tx(kind, data, self.platform if peer is None else peer, now, self.udp, context or {})
        return branch, data

    def _register(self, now: float, wall: float, *, refresh: bool = False, expires: int | None = None,
                  answer: Challenge | None = None) -> list[Any]:
        if self.state == "stopped":
            return []
        if not refresh and answer is None:
            self.reg_call_id = new_call_id(self.s.local_host if ":" not in self.s.local_host else "ferry")
            self.challenge, self.nc = None, 0
        if self.reg_branch is not None:
            self.txs.pop(self.reg_branch, None)      # a REGISTER at a time (RFC 3261 §10.2)
        want = self.s.register_expires if expires is None else expires
        extra = [("Contact", f"<{self.contact}>"), ("Expires", str(want))]
        challenge = answer or self.challenge
        if challenge is not None:
            self.nc += 1
            try:
                extra.append(("Authorization", authorization(challenge, "REGISTER", str(self.request_uri),
                                                              self.s.local_id, self.s.password,
                                                              secrets.token_hex(8), self.nc)))
            except DigestError as err:
                return self._register_failed(f"cannot answer the platform's challenge: {err}",
                                             Reason.PLATFORM_REFUSED, now, wall)
        made = self._request("REGISTER", "register", now, call_id=self.reg_call_id, extra=extra,
                             context={"expires": want, "authorized": challenge is not None,
                                      "nonce": challenge.nonce if challenge else None, "answered": answer is not None})
        if made is None:
            return self._register_failed("too many requests in flight", Reason.PLATFORM_UNAVAILABLE, now, wall)
        self.reg_branch = made[0]
        if self.state != "registered":
            self.state = "registering"
        return [SendSip(made[1], self.platform)]

    def _keepalive(self, now: float, wall: float) -> list[Any]:
        self.keepalive_at = now + self.s.keepalive_interval
        out: list[Any] = []
        if self.keepalive_pending is not None:
            self.txs.pop(self.keepalive_pending, None)
            self.keepalive_pending = None
            self.keepalive_missed += 1
            if self.keepalive_missed >= limits.SIG_KEEPALIVE_LOST:
                return self._lost(f"{self.keepalive_missed} keepalives in a row unanswered", now, wall)
        self.sn = self.sn % manscdp.SN_MAX + 1
        body = manscdp.build(manscdp.keepalive(self.s.local_id, self.sn), encoding="GB2312")
        made = self._request("MESSAGE", "keepalive", now, body=body)
        if made is not None:
            self.keepalive_pending = made[0]
            self.counters["keepalives"] += 1
            out.append(SendSip(made[1], self.platform))
        return out

    def _message(self, msg: Manscdp, kind: str, now: float, context: dict[str, Any], peer: Any = None) -> list[Any]:
        """One MANSCDP MESSAGE to the platform (``peer``: where its query came from), or its loss recorded."""
        try:
            body = manscdp.build(msg, encoding="GB2312")
        except ManscdpError as err:       # a value the builder refuses: a bug upstream, recorded
            return [self._lost_message(kind, f"cannot build the message: {err}", Reason.SIGNALING_MALFORMED,
                                       context)]
        made = self._request("MESSAGE", kind, now, body=body, context=context, peer=peer)
        if made is None:
            return [self._lost_message(kind, f"more than {limits.SIG_PENDING_MAX} requests to the platform "
                                             "in flight", Reason.PLATFORM_UNAVAILABLE, context)]
        return [SendSip(made[1], self.platform if peer is None else peer)]

    def _lost_message(self, kind: str, why: str, code: Reason, context: dict[str, Any]) -> AuditIntent:
        self.counters["lost"] += 1
        return _audit(event="platform_message_lost", verdict="lost", lane=LANE, code=code,
                      object_id=context.get("object_id"), reason=f"{kind} for the inner platform not delivered: {why}",
                      detail={k: v for k, v in context.items() if k != "object_id"} or None)

    # -- registration outcomes -----------------------------------------------------------------
    def _register_failed(self, why: str, code: Reason, now: float, wall: float, *, stop: bool = False) -> list[Any]:
        was = self.state == "registered"
        self.keepalive_at, self.keepalive_pending, self.keepalive_missed = None, None, 0
        self.registered_since = None
        self.reg_branch = None
        gone: list[Any] = [PlatformGone(f"its registration ended: {why}")] if was else []
        if stop:
            self.state, self.reg_at = "stopped", None
            return [_audit(event="platform_register_refused", verdict="alarm", lane=LANE, code=code,
                           reason=f"the inner platform refused ferry's registration: {why}; not trying again "
                                  "until the agent is restarted (check [signaling] local_id and password)"), *gone]
        self.state = "waiting"
        wait = self.retry_wait
        self.retry_wait = min(self.retry_wait * 2, limits.SIG_REGISTER_RETRY_MAX)
        self.reg_at = now + wait
        return [_audit(event="platform_register_failed", verdict="alarm", lane=LANE, code=code,
                       reason=f"registration with the inner platform failed: {why}; trying again in {wait:g} s",
                       detail={"was_registered": was}), *gone]

    def _lost(self, why: str, now: float, wall: float) -> list[Any]:
        """The platform stopped answering: alarm, and register again at once (new Call-ID)."""
        self.keepalive_at, self.keepalive_pending, self.keepalive_missed = None, None, 0
        self.state, self.registered_since = "waiting", None
        out: list[Any] = [_audit(event="platform_lost", verdict="alarm", lane=LANE, code=Reason.PLATFORM_UNAVAILABLE,
                                 reason=f"inner platform lost: {why}; registering again"), PlatformGone(why)]
        return out + self._register(now, wall)

    def _on_register_response(self, tx: _Tx, msg: SipResponse, now: float, wall: float) -> list[Any]:
        status = msg.status
        if status < 200:
            return []
        self.reg_branch = None
        if status in (401, 407):
            value = msg.header("WWW-Authenticate" if status == 401 else "Proxy-Authenticate")
            if value is None:
                return self._register_failed(f"{status} without a challenge", Reason.PLATFORM_REFUSED, now, wall)
            try:
                challenge = parse_challenge(value)
            except (DigestError, SipError) as err:
                return self._register_failed(f"malformed challenge: {err}", Reason.PLATFORM_REFUSED, now, wall)
            if tx.context["answered"] and challenge.nonce == tx.context["nonce"]:
                return self._register_failed("the password was not accepted (challenged again for the same nonce)",
                                             Reason.PLATFORM_REFUSED, now, wall, stop=True)
            if tx.context["answered"] and tx.context.get("retried"):
                return self._register_failed("challenged again after answering", Reason.PLATFORM_REFUSED, now, wall)
            self.nc = 0
            self.challenge = challenge
            again = self._register(now, wall, refresh=True, expires=tx.context["expires"], answer=challenge)
            if self.reg_branch is not None:
                self.txs[self.reg_branch].context["retried"] = tx.context["answered"]
            return again
        if status == 403:
            return self._register_failed(f"403 {msg.reason}", Reason.PLATFORM_REFUSED, now, wall, stop=True)
        if status >= 300:
            return self._register_failed(f"{status} {msg.reason}", Reason.PLATFORM_REFUSED, now, wall)
        if tx.context["expires"] == 0:
            return []
        granted = msg.expires
        if granted is None:
            for c in msg.contact:
                e = c.uri.param("expires") or dict((k, v) for k, v in c.params).get("expires")
                if e and e.isdigit():
                    granted = int(e)
        expires = granted if granted is not None and granted > 0 else tx.context["expires"]
        self.expires = expires
        self.retry_wait = limits.SIG_REGISTER_RETRY_MIN
        self.reg_at = now + max(1.0, expires * limits.SIG_REFRESH_SHARE)
        self.counters["registrations"] += 1
        if self.state == "registered":
            return []
        self.state, self.registered_since = "registered", wall
        self.keepalive_missed, self.keepalive_pending = 0, None
        out: list[Any] = [_audit(event="platform_registered", verdict="info", lane=LANE,
                                 reason=f"registered with the inner platform {self.s.platform_id} at "
                                        f"{self.s.platform_host}:{self.s.platform_port} for {expires} s",
                                 detail={"local_id": self.s.local_id, "expires": expires,
                                         "devices": len(self.devices)})]
        return out + self._keepalive(now, wall)

    def _timed_out(self, branch: str, tx: _Tx, now: float, wall: float) -> list[Any]:
        if tx.kind == "register":
            if branch != self.reg_branch:
                return []
            self.reg_branch = None
            was = self.state == "registered"
            if was:
                return self._lost("a registration refresh was not answered", now, wall)
            return self._register_failed(f"no answer within {limits.SIG_TRANSACTION_TIMEOUT:g} s",
                                         Reason.PLATFORM_UNAVAILABLE, now, wall)
        if tx.kind == "keepalive":
            return []       # counted when the next keepalive goes
        if tx.kind == "catalog response":
            self.pages_in_flight -= 1
            return [self._lost_message(tx.kind, f"no answer within {limits.SIG_TRANSACTION_TIMEOUT:g} s",
                                       Reason.PLATFORM_UNAVAILABLE, tx.context), *self._next_pages(now)]
        return [self._lost_message(tx.kind, f"no answer within {limits.SIG_TRANSACTION_TIMEOUT:g} s",
                                   Reason.PLATFORM_UNAVAILABLE, tx.context)]

    # -- SIP from the inner side ---------------------------------------------------------------
    def on_sip(self, msg: SipRequest | SipResponse, peer: Any, now: float, wall: float) -> list[Any]:
        """One parsed message from the endpoint (the agent gives media methods to the media part)."""
        self.clock = now
        try:
            if isinstance(msg, SipResponse):
                return self._on_response(msg, now, wall)
            return self._on_request(msg, peer, now, wall)
        except (SipError, ManscdpError) as err:
            # a value the accessors or builders refuse (a header repeated, a name too long):
            # refused here as the endpoint refuses what does not parse
            return self.refused(peer, f"{err}", 0, Reason.MALFORMED_SIP, now)

    def refused(self, peer: Any, reason: str, size: int, code: Reason = Reason.PLATFORM_REQUEST_REFUSED,
                now: float | None = None) -> list[Any]:
        """A message from the inner side refused: by the lane, or by the endpoint (``malformed_sip``).
        Recorded once per sending host and code per SIG_REFUSAL_AUDIT_INTERVAL; the next record says
        how many were refused in between (``detail.suppressed``), so a flood cannot fill the trail."""
        self.counters["refused"] += 1
        t = self.clock if now is None else now
        key = (str(getattr(peer, "host", peer)), str(code))
        mark = self.refusal_marks.get(key)
        if mark is not None and t < mark[0]:
            mark[1] += 1
            return []
        suppressed = mark[1] if mark is not None else 0
        self.refusal_marks.pop(key, None)
        if len(self.refusal_marks) >= limits.SIG_REFUSAL_KEYS_MAX:
            self.refusal_marks.pop(next(iter(self.refusal_marks)))
        self.refusal_marks[key] = [t + limits.SIG_REFUSAL_AUDIT_INTERVAL, 0]
        return [_audit(event="sip_refused", verdict="refused", lane=LANE, code=code,
                       rule=RULE, reason=f"SIP message from {peer} refused: {reason}",
                       size=size or None, source={"address": str(peer)},
                       detail={"suppressed": suppressed} if suppressed else None)]

    def _on_response(self, msg: SipResponse, now: float, wall: float) -> list[Any]:
        vias = msg.via
        branch = vias[0].branch if vias else None
        tx = self.txs.get(branch) if branch else None
        if tx is None:
            return []              # a late retransmission, or not ours: dropped (RFC 3261 §18.1.2)
        if msg.status < 200:
            tx.next_retx = None if tx.next_retx is None else now + limits.SIG_T2
            return []
        assert branch is not None
        del self.txs[branch]
        if tx.kind == "register":
            return self._on_register_response(tx, msg, now, wall)
        if tx.kind == "catalog response":
            self.pages_in_flight -= 1
            out = self._next_pages(now)
            if msg.status >= 300:
                out.insert(0, self._lost_message(tx.kind, f"the platform answered {msg.status} {msg.reason}",
                                                 Reason.PLATFORM_REFUSED, tx.context))
            return out
        if tx.kind == "keepalive":
            if branch == self.keepalive_pending:
                self.keepalive_pending = None
                if msg.status < 300:
                    self.keepalive_missed = 0
                elif self.state == "registered":
                    return self._lost(f"keepalive answered {msg.status} {msg.reason}", now, wall)
            return []
        if msg.status >= 300:
            return [self._lost_message(tx.kind, f"the platform answered {msg.status} {msg.reason}",
                                       Reason.PLATFORM_REFUSED, tx.context)]
        return []

    def _respond(self, req: SipRequest, peer: Any, status: int, reason: str,
                 extra: Iterable[tuple[str, str]] = ()) -> SendSip:
        to_tag = None if req.to.tag is not None else new_tag()
        return SendSip(response_to(req, status, reason, [*extra, ("User-Agent", USER_AGENT)], to_tag=to_tag), peer)

    def _refuse_request(self, req: SipRequest, peer: Any, status: int, reason: str, why: str,
                        warning: bool = True) -> list[Any]:
        extra = [("Warning", _warning(why))] if warning else []
        if status == 405:
            extra.append(("Allow", ALLOW))
        if req.method == "ACK":
            return self.refused(peer, why, len(req.body))
        return [self._respond(req, peer, status, reason, extra),
                *self.refused(peer, f"{req.method}: {why}", len(req.body))]

    def _on_request(self, req: SipRequest, peer: Any, now: float, wall: float) -> list[Any]:
        host = getattr(peer, "host", None)
        if host != self.s.platform_host:
            return self._refuse_request(req, peer, 403, "Forbidden", "not the configured inner platform")
        if req.method in MEDIA_METHODS:
            if req.method == "INVITE":
                return self._refuse_request(req, peer, 403, "Forbidden", "on-demand video not configured")
            if req.method == "ACK":
                return []
            return self._refuse_request(req, peer, 481, "Call/Transaction Does Not Exist", "no such dialog")
        if req.method == "OPTIONS":
            return [self._respond(req, peer, 200, "OK", [("Allow", ALLOW)])]
        if req.method != "MESSAGE":
            return self._refuse_request(req, peer, 405, "Method Not Allowed",
                                        f"{req.method} is not served by ferry")
        if req.content_type != "application/manscdp+xml":
            return self._refuse_request(req, peer, 415, "Unsupported Media Type",
                                        f"Content-Type {req.content_type} is not Application/MANSCDP+xml")
        charset = None
        ctype = req.header("Content-Type") or ""
        for param in ctype.split(";")[1:]:
            k, _, v = param.partition("=")
            if k.strip(" \t").lower() == "charset":
                charset = v.strip(' \t"')
        try:
            query = manscdp.parse(req.body, content_charset=charset)
        except ManscdpError as err:
            return self._refuse_request(req, peer, 400, "Bad Request", f"MANSCDP body refused: {err}")
        if query.root != "Query":
            return [self._respond(req, peer, 200, "OK")]     # a Response / Notify ack of the platform's: taken
        if query.cmd_type == "Catalog":
            return self._answer_catalog(req, query, peer, now)
        if query.cmd_type in ("DeviceInfo", "DeviceStatus"):
            return self._answer_info(req, query, peer, now)
        return self._refuse_request(req, peer, 403, "Forbidden", f"Query {query.cmd_type} is not served by ferry")

    def _answer_catalog(self, req: SipRequest, query: Manscdp, peer: Any, now: float) -> list[Any]:
        target = query.device_id
        if target == self.s.local_id:
            items = list(self.devices.values())
        elif target in self.devices:
            items = [self.devices[target]]
        else:
            return self._refuse_request(req, peer, 404, "Not Found", f"Catalog of unknown device {target}")
        self.counters["queries"] += 1
        out: list[Any] = [self._respond(req, peer, 200, "OK")]
        pages = manscdp.catalog_pages(target, query.sn, items, len(items), self.s.catalog_page_size)
        if len(self.pages) + len(pages) > limits.SIG_PENDING_MAX:
            return self._refuse_request(req, peer, 486, "Busy Here", "too many catalog pages waiting")
        for i, page in enumerate(pages):
            self.pages.append((page, {"page": i + 1, "pages": len(pages), "sn": query.sn}, peer))
        return out + self._next_pages(now)

    def _next_pages(self, now: float) -> list[Any]:
        """Send catalog pages while fewer than SIG_CATALOG_WINDOW are unanswered: a platform that reads
        its socket one MESSAGE at a time gets them in order, each after the 200 of the one before."""
        out: list[Any] = []
        while self.pages and self.pages_in_flight < limits.SIG_CATALOG_WINDOW:
            page, context, peer = self.pages.popleft()
            self.counters["pages"] += 1
            work = self._message(page, "catalog response", now, context, peer)
            if any(isinstance(w, SendSip) for w in work):
                self.pages_in_flight += 1
            out += work
        return out

    def _answer_info(self, req: SipRequest, query: Manscdp, peer: Any, now: float) -> list[Any]:
        target, cmd = query.device_id, query.cmd_type
        if target == self.s.local_id:
            if cmd == "DeviceInfo":
                fields: tuple[tuple[str, str], ...] = (("DeviceName", "ferry"), ("Result", "OK"),
                                                       ("Manufacturer", "ferry"), ("Model", "ferry"),
                                                       ("Channel", str(len(self.devices))))
            else:
                fields = (("Result", "OK"), ("Online", "ONLINE"), ("Status", "OK"))
            answer = Manscdp("Response", cmd, query.sn, target, fields)
        else:
            last = self.info.get((target, cmd))
            if last is None:
                why = ("unknown device" if target not in self.devices else
                       f"no {cmd} response of this device has crossed")
                return self._refuse_request(req, peer, 404, "Not Found", f"{cmd} of {target}: {why}")
            answer = Manscdp(last.root, last.cmd_type, query.sn, last.device_id, last.fields, last.items, last.sum_num)
        self.counters["queries"] += 1
        return [self._respond(req, peer, 200, "OK"),
                *self._message(answer, f"{cmd} response", now, {"sn": query.sn}, peer)]

    # -- canonical signaling objects from the link ---------------------------------------------
    def deliver(self, obj: ferry_pb2.CanonicalObject, decision: Decision, now: float, wall: float, *,
                epoch: int | None = None, blocks: Iterable[int] = ()) -> list[Any]:
        """A signaling object the dispatcher decided to allow: parsed again, mapped, kept, forwarded."""
        ids: dict[str, Any] = {"lane": LANE, "object_id": obj.object_id, "epoch": epoch,
                               "blocks": list(blocks) or None}
        self.counters["objects"] += 1

        def refuse(why: str, code: Reason) -> list[Any]:
            self.counters["refused"] += 1
            return [_audit(event="object_refused", verdict="refused", **ids, rule=RULE, reason=why, code=code,
                           object_type="signaling", source=_source(obj), destination=obj.destination or None)]

        if not obj.HasField("signaling"):
            return refuse("signaling object without a signaling body", Reason.SIGNALING_MALFORMED)
        s = obj.signaling
        try:
            msg = manscdp.parse(s.xml.encode("utf-8"))
        except UnicodeEncodeError:
            return refuse("signaling XML is not valid Unicode", Reason.SIGNALING_MALFORMED)
        except ManscdpError as err:
            return refuse(f"signaling XML refused on the inner side: {err}", Reason.SIGNALING_MALFORMED)
        mismatch = [f"{name} {a!r} in the XML, {b!r} in the object" for name, a, b in (
            ("root", msg.root, s.root), ("CmdType", msg.cmd_type, s.cmd_type), ("DeviceID", msg.device_id, s.device_id),
            ("SN", msg.sn, s.sn)) if a != b]
        if mismatch:
            return refuse("signaling object inconsistent: " + "; ".join(mismatch), Reason.SIGNALING_MALFORMED)
        if msg.dropped:
            return refuse("signaling XML holds elements no schema knows: " + ", ".join(msg.dropped[:8]),
                          Reason.SIGNALING_MALFORMED)
        # The policy decided on the source (the device that registered outside, by its digest); the
        # message may name one of its channels. Both must have an inner ID.
        for outer_id in dict.fromkeys((obj.source.device_id, msg.device_id)):
            if self.ids.map_to_inner(outer_id) is None:
                return refuse(f"device {outer_id} has no inner ID in [signaling.id_map]", Reason.SIGNALING_UNMAPPED)
        inner_id = self.ids.map_to_inner(msg.device_id)
        assert inner_id is not None
        out: list[Any] = []
        what = f"{msg.root} {msg.cmd_type}"
        forwarded = 0
        key = (msg.root, msg.cmd_type)
        if key in (("Response", "Catalog"), ("Notify", "Catalog")):
            items, unmapped = self._map_items(msg.items)
            if unmapped:
                out.append(_audit(event="signaling_items_refused", verdict="refused", **ids, rule=RULE,
                                  code=Reason.SIGNALING_UNMAPPED, source=_source(obj),
                                  reason=f"{len(unmapped)} catalog item(s) with no inner ID in [signaling.id_map] "
                                         "left out", detail={"device_ids": unmapped[:16]}))
            self._keep_items(items, notify=msg.root == "Notify")
            if msg.root == "Notify" and items:
                forwarded = 1
                self.sn = self.sn % manscdp.SN_MAX + 1
                notify = Manscdp("Notify", "Catalog", self.sn, self.s.local_id, items=tuple(items),
                                 sum_num=len(items))
                out += self._forward(notify, what, obj.object_id, now)
        elif key == ("Notify", "Keepalive"):
            self._device_alive(inner_id, msg.device_id)
        elif key in (("Response", "DeviceInfo"), ("Response", "DeviceStatus")):
            try:
                mapped = manscdp.map_ids(msg, self._strict_map)
            except _Unmapped as e:
                return refuse(f"{what}: device {e.device_id} in it has no inner ID", Reason.SIGNALING_UNMAPPED)
            self.info[(inner_id, msg.cmd_type)] = mapped
            if len(self.info) > 2 * limits.SIG_DEVICES_MAX:
                self.info.pop(next(iter(self.info)))
        elif msg.root == "Notify":      # Alarm and other notifications: forwarded under ferry's IDs
            try:
                mapped = manscdp.map_ids(msg, self._strict_map)
            except _Unmapped as e:
                return refuse(f"{what}: device {e.device_id} in it has no inner ID", Reason.SIGNALING_UNMAPPED)
            self.sn = self.sn % manscdp.SN_MAX + 1
            forwarded = 1
            out += self._forward(Manscdp(mapped.root, mapped.cmd_type, self.sn, mapped.device_id, mapped.fields,
                                         mapped.items, mapped.sum_num), what, obj.object_id, now)
        else:
            return refuse(f"{what} has no use on the inner side", Reason.SIGNALING_MALFORMED)
        self.counters["forwarded"] += forwarded
        out.insert(0, _audit(event="object_delivered", verdict="delivered", **ids, rule=decision.rule,
                             reason=decision.reason or None, object_type="signaling", source=_source(obj),
                             destination=obj.destination or None,
                             detail={"root": msg.root, "cmd_type": msg.cmd_type, "inner_id": inner_id,
                                     "forwarded": bool(forwarded), "items": len(msg.items) or None,
                                     "devices": len(self.devices)}))
        return out

    def _forward(self, msg: Manscdp, what: str, object_id: int, now: float) -> list[Any]:
        context = {"object_id": object_id, "message": what}
        if self.state != "registered":
            return [self._lost_message(what, "ferry is not registered with the inner platform",
                                       Reason.PLATFORM_UNAVAILABLE, context)]
        return self._message(msg, what, now, context)

    def _strict_map(self, outer_id: str) -> str:
        inner = self.ids.map_to_inner(outer_id)
        if inner is None:
            raise _Unmapped(outer_id)
        return inner

    def _map_items(self, items: Iterable[Item]) -> tuple[list[Item], list[str]]:
        """Items under inner IDs; an item without one is left out (returned), other unmapped IDs in
        it dropped (a ParentID becomes ferry, which is the parent the inner platform sees)."""
        kept: list[Item] = []
        unmapped: list[str] = []
        for item in items:
            fields: list[tuple[str, str]] = []
            ok = True
            for name, value in item.fields:
                if name in _ID_FIELDS:
                    inner = self.ids.map_to_inner(value)
                    if inner is None:
                        if name == "DeviceID":
                            unmapped.append(value)
                            ok = False
                            break
                        continue
                    value = inner
                elif name == "ParentID":
                    parts = [self.ids.map_to_inner(p) for p in value.split("/")]
                    value = "/".join(p for p in parts if p is not None) or self.s.local_id
                fields.append((name, value))
            if ok:
                kept.append(Item(tuple(fields)))
        return kept, unmapped

    def _keep_items(self, items: Iterable[Item], *, notify: bool) -> None:
        for item in items:
            inner_id = item.device_id
            assert inner_id is not None
            event = (item.get("Event") or "").upper() if notify else ""
            if event == "DEL":
                self.devices.pop(inner_id, None)
                self.info.pop((inner_id, "DeviceInfo"), None)
                self.info.pop((inner_id, "DeviceStatus"), None)
                continue
            old = self.devices.get(inner_id)
            fields = [(n, v) for n, v in item.fields if n != "Event"]
            if event in ("ON", "OFF", "VLOST", "DEFECT"):
                # a status event: the item as known, its Status set (a new device: what came)
                base = old.fields if old is not None else tuple(fields)
                fields = list(_with_status(base, "ON" if event == "ON" else "OFF"))
            if old is None and len(self.devices) >= limits.SIG_DEVICES_MAX:
                continue
            self.devices[inner_id] = Item(tuple(fields))

    def _device_alive(self, inner_id: str, outer_id: str) -> None:
        old = self.devices.get(inner_id)
        if old is None:
            if len(self.devices) < limits.SIG_DEVICES_MAX:
                self.devices[inner_id] = Item((("DeviceID", inner_id), ("Status", "ON")))
        elif old.get("Status") != "ON":
            self.devices[inner_id] = Item(_with_status(old.fields, "ON"))


_ITEM_ORDER = ("DeviceID", "Event", "Name", "Manufacturer", "Model", "Owner", "CivilCode", "Block", "Address",
               "Parental", "ParentID", "BusinessGroupID", "SafetyWay", "RegisterWay", "CertNum", "Certifiable",
               "ErrCode", "EndTime", "Secrecy", "IPAddress", "Port", "Status")


def _with_status(fields: tuple[tuple[str, str], ...], status: str) -> tuple[tuple[str, str], ...]:
    """``fields`` with Status set, in the schema's order (Status before Longitude and Info/...)."""
    rest = [(n, v) for n, v in fields if n != "Status"]
    at = next((i for i, (n, _) in enumerate(rest) if n not in _ITEM_ORDER), len(rest))
    return tuple(rest[:at] + [("Status", status)] + rest[at:])


def _warning(why: str) -> str:
    """A Warning value (RFC 3261 §20.43) saying ``why``: printable ASCII only, no quote, bounded."""
    text = "".join(c if " " <= c <= "~" and c not in '"\\' else "?" for c in why[:160])
    return f'399 ferry "{text}"'


def _source(obj: ferry_pb2.CanonicalObject) -> dict[str, str] | None:
    src = {k: v for k, v in (("device_id", obj.source.device_id), ("address", obj.source.address),
                             ("name", obj.source.name)) if v}
    return src or None
