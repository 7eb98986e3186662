"""The inner platform's INVITEs of outer cameras, answered by ferry as a GB/T 28181 media sender (issue 13 item 3).

Pure: SIP messages (ferry.codecs.sip values) with the plan and two clocks in, work out. The
agent glue (ferry.agents.media_inner) carries the work out: `SendSip` on the inner SIP endpoint,
`StartViewer` / `StopViewer` on the inner video lane's viewers (ferry.lanes.video.viewers: the
agent makes the UDP/TCP sink), `Ask` on the reverse lane (on-demand mode only), `AuditIntent`
on the trail. It answers with `viewer_started` (the viewer's first key frame went out),
`viewer_lost` (its stream ended), `viewer_failed` (its sink could not be made) and `asked`
(the reverse lane's verdict), and runs `handle_timer` at `next_timer()`.

One INVITE, one dialog, one viewer:

1. An INVITE from an address other than the platform's (`allow_from`: [signaling] platform and
   [media] allow_from) -> 403 (`platform_request_refused`, recorded once a minute per host). The
   Request-URI's user is the ID the inner platform sees (sig-inner's ID mapping gives the outer
   device ID: `map_to_outer`). No mapping, or a device no devices source of the policy names ->
   404 Not Found (`unknown_camera`). The policy has no video rule for it -> 403 Forbidden
   (`default_deny`). The SDP offer must be a live PS offer: s=Play, m=video with RTP/AVP (UDP)
   or TCP/RTP/AVP (a=setup active/passive/actpass), payload type 96 PS/90000, not
   a=sendonly/inactive; else 488 Not Acceptable Here (400 Bad Request when the SDP does not
   parse) (`bad_offer`). More than `max_viewers`, `max_viewers_per_device`, or no free port in
   `port_range` -> 486 Busy Here (`viewers_busy`). Each refusal is an `invite_refused` record.
2. Otherwise 100 Trying at once (a UDP INVITE is not retransmitted), a viewer of the device's
   stream (`StartViewer`: the platform's c=/m= address, the SSRC of its y=, UDP or TCP and the
   setup that answers its a=setup), and in on-demand mode `Ask("start_stream", outer ID,
   {"transport": udp|tcp}, operator = the From user)` unless a stream of the device is already
   asked for (a second INVITE joins it). The reverse lane refusing -> 403 (486 when the code is
   `rate_limited`), with the reverse lane's code.
3. The 200 OK goes when the viewer's first key frame went out (`viewer_started`): a real camera
   answers once it can send, and a platform that receives the 200 expects media at once — so
   a camera that never starts is a SIP error (408 Request Timeout after `invite_timeout`,
   `no_stream`), not a silent session the platform has to give up on. The answer's SDP: s=Play,
   o= and c= the local media address, m=video <port> the same transport, a=sendonly,
   a=rtpmap:96 PS/90000, y= the platform's SSRC (kept), and for TCP a=setup (the other role:
   active when the offer is passive, passive when it is active or actpass) and a=connection:new.
   Always-on mode asks nothing: the viewer joins the stream already crossing (the next key
   frame answers), and a camera whose stream does not cross within the timeout gets 408.
4. Over UDP the 200 is retransmitted (T1 doubling to T2) until the ACK; none within 64*T1 ->
   BYE. CANCEL before the answer: 200 to the CANCEL, 487 to the INVITE. A re-INVITE is refused
   488 (a live session's media does not change), INFO (MANSRTSP playback control) 405 with
   Allow. BYE from the platform: 200, the viewer stops (`viewer_ended`, by "platform"). The
   stream ending (`viewer_lost`) or the agent stopping: ferry sends BYE (`viewer_ended`, by
   "ferry"). In on-demand mode the device's last viewer gone, after `linger` seconds:
   `Ask("stop_stream", outer ID, {"stream": <its stream id or device ID>})` for the operator that
   asked for it (the outer side holds a camera's stream per operator).

5. Dead viewers are reaped (a platform that crashes or loses its network never sends BYE):
   `platform_gone(host)` (the cascade lost the platform, or its registration ended) ends every
   dialog from that host (one BYE, not retransmitted; 503 to an INVITE waiting; on-demand
   `stop_stream` at once, no linger); `viewer_unreachable` (a UDP send refused by ICMP) for
   INNER_MEDIA_UNREACHABLE_FOR and `viewer_closed` (its TCP connection closed) end the viewer's
   dialog (BYE, retransmitted; the linger). Each gets `viewer_lost` (code viewer_lost,
   `detail.cause`) instead of `viewer_ended`. A dialog whose BYE ferry sent (state "ending") no
   longer holds its camera.

Every message ferry sends is built from parsed values by ferry.codecs.sip (the builder refuses
CR/LF in any value); a request or SDP that does not parse gets 400 where it can be answered.
"""
from __future__ import annotations

import random
import re
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ferry import limits
from ferry.codecs.sdp import Origin, RtpMap, Sdp, SdpError, build_sdp, parse_sdp
from ferry.codecs.sip import (SipError, SipRequest, SipResponse, SipUri, build_request, new_branch,
                              new_tag, parse_name_addr, response_to)
from ferry.lanes.work import AuditIntent
from ferry.policy.plan import Plan
from ferry.reasons import Reason

MODES = ("on-demand", "always-on")
_STREAM = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,63}")      # the reverse lane's stream parameter
_DELTA = re.compile(r"[0-9]{1,10}")
ALLOW = "INVITE, ACK, BYE, CANCEL"
LANE = "video"


# --- settings and work ----------------------------------------------------------------------------

@dataclass(frozen=True)
class MediaSettings:
    """What the lane needs of `[media]` (ferry.config.InnerMedia) and of the SIP endpoint."""
    mode: str = "always-on"
    media_address: str = "127.0.0.1"      # the IPv4 address in the answer's o= and c=
    port_range: tuple[int, int] = (30000, 30999)   # local media ports: UDP send, TCP listen
    invite_timeout: float = limits.INNER_MEDIA_INVITE_TIMEOUT
    max_viewers: int = limits.INNER_MEDIA_MAX_VIEWERS
    max_viewers_per_device: int = limits.INNER_MEDIA_MAX_VIEWERS_PER_DEVICE
    linger: float = limits.INNER_MEDIA_LINGER
    sip_host: str = "127.0.0.1"           # ferry's SIP address (Contact, Via of its BYE)
    sip_port: int = 5060
    user_agent: str = "ferry"
    allow_from: tuple[str, ...] = ()      # platform addresses whose INVITEs are taken (empty: any)


@dataclass(frozen=True, slots=True)
class SendSip:
    """Bytes of one SIP message for `peer` (the endpoint's Peer the request came from)."""
    data: bytes
    peer: Any


@dataclass(frozen=True, slots=True)
class StartViewer:
    """Make a viewer of `device_id`'s stream: RTP/PS to `address` with `ssrc`; `local_port` is the
    port the answer names (UDP: sent from; TCP passive: listened on; TCP active: 0, any)."""
    viewer: str
    device_id: str
    address: str
    ssrc: int
    transport: str            # "udp" | "tcp"
    setup: str                # "" | "active" (ferry connects) | "passive" (ferry listens)
    local_port: int


@dataclass(frozen=True, slots=True)
class StopViewer:
    viewer: str


@dataclass(frozen=True, slots=True)
class Ask:
    """A reverse request (on-demand mode); the agent answers with `asked(key, ...)`."""
    key: str
    request: str
    device_id: str
    params: dict[str, str]
    operator: str
    address: str = ""         # the platform's address: the reverse request's source
    platform_id: str = ""     # the platform's GB/T 28181 ID (the From URI's user)


MediaWork = SendSip | StartViewer | StopViewer | Ask | AuditIntent


# --- dialogs ---------------------------------------------------------------------------------------

@dataclass
class _Dialog:
    call_id: str
    invite: SipRequest
    peer: Any
    branch: str
    inner_id: str
    device_id: str            # the outer device ID
    operator: str
    tag: str
    viewer: str
    offer: Sdp
    ssrc: int
    transport: str
    setup: str
    local_port: int
    started: float
    deadline: float           # proceeding: the 408; answered: give up waiting for the ACK
    state: str = "proceeding"  # proceeding | answered | confirmed | ending
    last: bytes = b""         # the last response to the INVITE (retransmissions)
    resend_at: float = 0.0
    interval: float = limits.INNER_MEDIA_T1
    bye: bytes = b""
    bye_cseq: int = 0
    stream_id: str = ""
    asked: bool = False       # its start_stream was asked for (on-demand)
    failed_ports: list[int] = field(default_factory=list)   # media ports some other program held
    refused_since: float = 0.0   # its RTP sends refused by ICMP (port unreachable) since then...
    refused_last: float = 0.0    # ... the last time ...
    refused_sends: int = 0       # ... this many times (0: none lately)
    session: int = 0             # RFC 4028 session interval, the platform refreshing (0: no session timer)
    refresh_cseq: int = 0        # the last refresh (re-INVITE) answered, and its 200 (retransmissions)
    refresh_ok: bytes = b""

    @property
    def udp(self) -> bool:
        return getattr(self.peer, "transport", "udp") == "udp"


def _is_sip_id(text: str | None) -> bool:
    return text is not None and len(text) == 20 and text.isascii() and text.isdigit()


class InnerMediaLane:
    """The inner platform's live-video dialogs with ferry (see the module doc)."""

    def __init__(self, settings: MediaSettings, map_to_outer: Callable[[str], str | None],
                 rng: random.Random | None = None) -> None:
        if settings.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {settings.mode!r}")
        self.s = settings
        self.map_to_outer = map_to_outer
        self.rng = rng or random.SystemRandom()
        self.dialogs: dict[str, _Dialog] = {}
        self.ended: OrderedDict[str, tuple[float, bytes, Any]] = OrderedDict()   # call id -> (until, last, peer)
        self.ports_used: set[int] = set()
        self.linger: dict[str, tuple[float, str]] = {}    # device -> (stop_stream at, stream id): on-demand
        self.asker: dict[str, tuple[str, str]] = {}       # device -> (address, platform ID) of its start_stream
        self.streaming: set[str] = set()                  # devices asked for (on-demand), not yet stopped
        self.strangers: OrderedDict[str, tuple[float, int]] = OrderedDict()   # host -> (quiet until, suppressed)
        self._viewer_seq = 0
        self.counters = {"invites": 0, "answered": 0, "refused": 0, "cancelled": 0, "ended": 0, "reaped": 0}

    # -- SIP in ---------------------------------------------------------------------------------
    def on_sip(self, msg: SipRequest | SipResponse, peer: Any, plan: Plan | None, now: float,
               wall: float) -> list[MediaWork]:
        """One message the SIP endpoint took (the sig glue hands INVITE/ACK/BYE/CANCEL/INFO and
        responses to INVITE/BYE here). Never raises on hostile input: what does not parse gets
        400 where it can be answered, else is dropped."""
        work: list[MediaWork] = []
        try:
            if isinstance(msg, SipResponse):
                self._response(msg, now, work)
            elif msg.method == "INVITE":
                self._invite(msg, peer, plan, now, wall, work)
            elif msg.method == "ACK":
                self._ack(msg, now)
            elif msg.method == "BYE":
                self._bye(msg, peer, now, wall, work)
            elif msg.method == "CANCEL":
                self._cancel(msg, peer, now, wall, work)
            elif msg.method == "INFO":
                self._reply(msg, peer, 405, "Method Not Allowed", work, extra=[("Allow", ALLOW)])
                self._audit_refused(work, msg, peer, "", "", Reason.NOT_SUPPORTED,
                                    "INFO (MANSRTSP playback control) is not taken for live video", 405)
            else:
                self._reply(msg, peer, 405, "Method Not Allowed", work, extra=[("Allow", ALLOW)])
        except (SipError, SdpError) as exc:
            if isinstance(msg, SipRequest) and msg.method != "ACK":
                self._reply(msg, peer, 400, "Bad Request", work, warning=str(exc))
        return work

    def _reply(self, req: SipRequest, peer: Any, status: int, reason: str, work: list[MediaWork], *,
               tag: str | None = None, extra: list[tuple[str, str]] | None = None, body: bytes = b"",
               warning: str = "") -> bytes:
        headers = list(extra or [])
        if warning:
            text = "".join(ch if " " <= ch <= "~" and ch != '"' else "?" for ch in warning)[:200]
            headers.append(("Warning", f'399 ferry "{text}"'))
        headers.append(("User-Agent", self.s.user_agent))
        to_tag = tag
        try:
            if to_tag is not None and parse_name_addr(req.header("To") or "").tag is not None:
                to_tag = None
        except SipError:
            to_tag = None
        try:
            data = response_to(req, status, reason, headers, body, to_tag=to_tag)
        except SipError:
            return b""              # a request that cannot be answered (no To, bad values): dropped
        work.append(SendSip(data, peer))
        return data

    # -- INVITE -----------------------------------------------------------------------------------
    def _invite(self, req: SipRequest, peer: Any, plan: Plan | None, now: float, wall: float,
                work: list[MediaWork]) -> None:
        call_id = req.call_id
        vias = req.via
        branch = (vias[0].branch or "") if vias else ""
        dialog = self.dialogs.get(call_id)
        to = req.to
        if dialog is not None and to.tag is None:
            if branch == dialog.branch:         # a retransmission
                if dialog.last:
                    work.append(SendSip(dialog.last, peer))
            else:
                self._reply(req, peer, 400, "Bad Request", work, warning="Call-ID of another INVITE")
            return
        if to.tag is not None:                 # a re-INVITE
            if dialog is None:
                self._reply(req, peer, 481, "Call/Transaction Does Not Exist", work)
                return
            if dialog.session and to.tag == dialog.tag and dialog.state == "confirmed" and \
                    self._refresh(dialog, req, peer, now, work):
                return
            self._reply(req, peer, 488, "Not Acceptable Here", work,
                        warning="a live session's media does not change")
            self._audit_refused(work, req, peer, dialog.inner_id, dialog.device_id, Reason.NOT_SUPPORTED,
                                "re-INVITE of a live session refused: its media does not change", 488)
            return
        old = self.ended.get(call_id)
        if old is not None:                    # a retransmission of one ferry answered and ended
            if old[1]:
                work.append(SendSip(old[1], peer))
            return
        self.counters["invites"] += 1
        inner_id = req.uri.user or ""
        sender = req.from_
        if sender.tag is None:
            raise SipError("From has no tag")
        operator = sender.uri.user or sender.uri.host
        tag = new_tag()

        def refuse(status: int, reason: str, code: Reason, why: str, device: str = "") -> None:
            last = self._reply(req, peer, status, reason, work, tag=tag, warning=why)
            self._remember(call_id, last, peer, now)
            self._audit_refused(work, req, peer, inner_id, device, code, why, status, operator)

        host = str(getattr(peer, "host", ""))
        if self.s.allow_from and host not in self.s.allow_from:
            # not the platform: answered, and recorded once a minute per host (a flood cannot fill the trail)
            last = self._reply(req, peer, 403, "Forbidden", work, tag=tag, warning="not the inner platform")
            self._remember(call_id, last, peer, now)
            until, quiet = self.strangers.get(host, (0.0, 0))
            if now < until:
                self.strangers[host] = (until, quiet + 1)
                return
            self.strangers.pop(host, None)
            self.strangers[host] = (now + limits.INNER_MEDIA_STRANGER_INTERVAL, 0)
            while len(self.strangers) > limits.INNER_MEDIA_STRANGERS_MAX:
                self.strangers.popitem(last=False)
            self._audit_refused(work, req, peer, inner_id, "", Reason.PLATFORM_REQUEST_REFUSED,
                                f"INVITE from {host}, not from the inner platform ([signaling] platform, [media] "
                                f"allow_from); {quiet} more from it since the last record", 403, operator,
                                suppressed=quiet)
            return
        work.append(AuditIntent(dict(
            event="invite_received", verdict="info", lane=LANE, flow=inner_id[:64],
            source={"device_id": operator[:64], "address": host},
            reason=f"INVITE for {inner_id[:40]!r} from {operator[:40]!r}")))
        device = self.map_to_outer(inner_id) if _is_sip_id(inner_id) else None
        if device is None:
            refuse(404, "Not Found", Reason.UNKNOWN_CAMERA, f"no camera {inner_id[:40]!r}: ferry maps no outer device "
                   "to it")
            return
        if plan is not None:
            sources = plan.device_sources(device)
            if not sources:
                refuse(404, "Not Found", Reason.UNKNOWN_CAMERA, f"no camera {inner_id!r}: the policy names no "
                       f"device {device}", device)
                return
            if not any(r.lane == "video" and r.source in sources for r in plan.rules):
                refuse(403, "Forbidden", Reason.DEFAULT_DENY, f"no video rule for device {device}", device)
                return
        try:
            offer = parse_sdp(req.body)
        except SdpError as exc:
            refuse(400, "Bad Request", Reason.BAD_OFFER, f"SDP offer: {exc}", device)
            return
        problem = _offer_problem(offer, req.content_type)
        if problem:
            refuse(488, "Not Acceptable Here", Reason.BAD_OFFER, problem, device)
            return
        session = _session_interval(req)
        if session < 0:
            last = self._reply(req, peer, 422, "Session Interval Too Small", work, tag=tag,
                               extra=[("Min-SE", str(limits.INNER_MEDIA_MIN_SE))])
            self._remember(call_id, last, peer, now)
            self._audit_refused(work, req, peer, inner_id, device, Reason.NOT_SUPPORTED,
                                f"Session-Expires under ferry's Min-SE {limits.INNER_MEDIA_MIN_SE} s", 422, operator)
            return
        same = sum(1 for d in self.dialogs.values() if d.device_id == device and d.state != "ending")
        live = sum(1 for d in self.dialogs.values() if d.state != "ending")
        if live >= self.s.max_viewers or len(self.dialogs) >= limits.INNER_MEDIA_DIALOGS_MAX:
            refuse(486, "Busy Here", Reason.VIEWERS_BUSY, f"{live} viewers: the most ferry serves ([media] "
                   f"max_viewers {self.s.max_viewers})", device)
            return
        if same >= self.s.max_viewers_per_device:
            refuse(486, "Busy Here", Reason.VIEWERS_BUSY, f"{same} viewers of device {device}: the most "
                   f"([media] max_viewers_per_device {self.s.max_viewers_per_device})", device)
            return
        tcp = offer.transport == "TCP/RTP/AVP"
        setup = ("passive" if offer.setup == "active" else "active") if tcp else ""
        port = 0
        if not tcp or setup == "passive":      # tcp active: ferry connects from any port (m= port 9)
            port = self._port()
            if port == 0:
                refuse(486, "Busy Here", Reason.VIEWERS_BUSY, f"no free media port in {self.s.port_range[0]}-"
                       f"{self.s.port_range[1]}", device)
                return
        ssrc_text = offer.ssrc or self._ssrc(inner_id)
        self._viewer_seq += 1
        d = _Dialog(call_id, req, peer, branch, inner_id, device, operator, tag, f"v{self._viewer_seq}", offer,
                    int(ssrc_text), "tcp" if tcp else "udp", setup, port, now, now + self.s.invite_timeout)
        d.session = session
        self.dialogs[call_id] = d
        d.last = self._reply(req, peer, 100, "Trying", work)
        work.append(StartViewer(d.viewer, device, f"{offer.connection}:{offer.media_port}", d.ssrc, d.transport,
                                setup, port))
        if self.s.mode == "on-demand":
            self.linger.pop(device, None)
            if device not in self.streaming:
                self.streaming.add(device)
                self.asker[device] = (host, operator[:64])
                d.asked = True
                work.append(Ask(call_id, "start_stream", device, {"transport": d.transport}, operator[:64],
                                host, operator[:64]))

    def _port(self, avoid: frozenset[int] = frozenset()) -> int:
        lo, hi = self.s.port_range
        span = hi - lo + 1
        if len(self.ports_used) >= span:
            return 0
        start = self.rng.randrange(span)
        for i in range(span):
            p = lo + (start + i) % span
            if p % 2 == 0 and p not in self.ports_used and p not in avoid:   # RTP on even ports (RFC 3550 §11)
                self.ports_used.add(p)
                return p
        return 0

    def _ssrc(self, inner_id: str) -> str:
        """A live SSRC when the offer has no y=: 0, the domain's 5 digits (ID digits 4-8), 4 random."""
        return "0" + inner_id[3:8] + f"{self.rng.randrange(10000):04d}"

    # -- the stream -------------------------------------------------------------------------------
    def viewer_started(self, viewer: str, stream_id: str, now: float, wall: float) -> list[MediaWork]:
        """The viewer's first key frame went out: the 200 OK with the answer."""
        work: list[MediaWork] = []
        d = self._by_viewer(viewer)
        if d is None or d.state != "proceeding":
            return work
        d.stream_id = stream_id
        body = build_sdp(self._answer(d))
        contact = f"<sip:{d.inner_id}@{self.s.sip_host}:{self.s.sip_port}>"
        d.last = self._reply(d.invite, d.peer, 200, "OK", work, tag=d.tag,
                             extra=[("Contact", contact), *self._timer_headers(d), ("Content-Type", "application/sdp")],
                             body=body)
        d.state, d.deadline = "answered", now + limits.INNER_MEDIA_ACK_TIMEOUT
        d.interval, d.resend_at = limits.INNER_MEDIA_T1, now + limits.INNER_MEDIA_T1
        self.counters["answered"] += 1
        work.append(AuditIntent(dict(
            event="viewer_started", verdict="info", lane=LANE, flow=stream_id,
            source={"device_id": d.device_id}, destination=self._dest(d),
            reason=f"{d.operator} watches {d.inner_id} (device {d.device_id}) over {d.transport}"
                   f"{'/' + d.setup if d.setup else ''}: SSRC {d.ssrc}, answered after {now - d.started:.3f} s",
            detail={"inner_id": d.inner_id, "operator": d.operator, "ssrc": d.ssrc, "transport": d.transport,
                    "setup": d.setup, "address": f"{d.offer.connection}:{d.offer.media_port}",
                    "local_port": d.local_port, "mode": self.s.mode, "call_id": d.call_id[:128]})))
        return work

    def viewer_lost(self, viewer: str, why: str, now: float, wall: float) -> list[MediaWork]:
        """The stream the viewer watched ended: BYE (an answered dialog); a proceeding one waits on."""
        work: list[MediaWork] = []
        d = self._by_viewer(viewer)
        if d is not None and d.state in ("answered", "confirmed"):
            self._hang_up(d, f"the stream ended ({why})", now, work)
        return work

    def platform_gone(self, host: str, why: str, now: float, wall: float) -> list[MediaWork]:
        """The inner platform at `host` is gone (the cascade's `platform_lost`: keepalives unanswered, or
        its registration ended): every dialog of its own ends (`viewer_lost`, BYE best effort, once; 503
        to an INVITE still waiting), and in on-demand mode the cameras nobody else watches are released
        at once (`stop_stream`, no linger: the platform that would come back for them is gone)."""
        work: list[MediaWork] = []
        devices: set[str] = set()
        for d in [x for x in self.dialogs.values() if str(getattr(x.peer, "host", "")) == host]:
            if d.state == "ending":          # ferry's BYE already out: no answer will come
                self._forget(d, now)
                continue
            devices.add(d.device_id)
            self._reap(d, "platform_lost", f"the inner platform {host} is lost ({why})", now, work, keep=False)
        for device in devices:
            if device in self.linger:
                self.linger[device] = (now, self.linger[device][1])
        work += self._release(now)
        return work

    def viewer_unreachable(self, viewer: str, why: str, now: float, wall: float) -> list[MediaWork]:
        """A send of the viewer's RTP was refused by ICMP (ECONNREFUSED: port unreachable; the agent's
        UDP sink sees it on the next send). Refused sends for INNER_MEDIA_UNREACHABLE_FOR seconds (at
        least INNER_MEDIA_UNREACHABLE_MIN, none INNER_MEDIA_UNREACHABLE_GAP apart): the viewer is dead,
        reaped (`viewer_lost`, BYE). Before the answer the INVITE's own timeout decides."""
        work: list[MediaWork] = []
        d = self._by_viewer(viewer)
        if d is None or d.state not in ("answered", "confirmed"):
            return work
        if d.refused_sends and now - d.refused_last > limits.INNER_MEDIA_UNREACHABLE_GAP:
            d.refused_sends = 0
        if d.refused_sends == 0:
            d.refused_since = now
        d.refused_sends += 1
        d.refused_last = now
        if d.refused_sends >= limits.INNER_MEDIA_UNREACHABLE_MIN and \
                now - d.refused_since >= limits.INNER_MEDIA_UNREACHABLE_FOR:
            self._reap(d, "unreachable", f"its RTP port {self._dest(d)} refused the video for "
                       f"{now - d.refused_since:.1f} s ({d.refused_sends} sends: {why})", now, work)
        return work

    def viewer_closed(self, viewer: str, why: str, now: float, wall: float) -> list[MediaWork]:
        """The viewer's TCP connection (established) closed or was reset by the platform: reaped at once."""
        work: list[MediaWork] = []
        d = self._by_viewer(viewer)
        if d is not None and d.state in ("answered", "confirmed"):
            self._reap(d, "closed", f"its TCP media connection closed ({why})", now, work)
        return work

    def viewer_failed(self, viewer: str, why: str, now: float, wall: float, *,
                      port_taken: bool = False) -> list[MediaWork]:
        """The viewer's sink could not be made: its media port held by another program (`port_taken`:
        made again on another port, up to INNER_MEDIA_PORT_TRIES ports), or anything else: 500 before
        the answer, BYE after."""
        work: list[MediaWork] = []
        d = self._by_viewer(viewer)
        if d is None:
            return work
        if port_taken and d.state == "proceeding" and d.local_port and \
                len(d.failed_ports) + 1 < limits.INNER_MEDIA_PORT_TRIES:
            self.ports_used.discard(d.local_port)
            d.failed_ports.append(d.local_port)
            port = self._port(frozenset(d.failed_ports))
            if port:
                self._viewer_seq += 1
                work.append(StopViewer(d.viewer))
                d.viewer, d.local_port = f"v{self._viewer_seq}", port
                offer = d.offer
                work.append(StartViewer(d.viewer, d.device_id, f"{offer.connection}:{offer.media_port}", d.ssrc,
                                        d.transport, d.setup, port))
                return work
            d.local_port = 0
        if d.state == "proceeding":
            self._fail(d, 500, "Server Internal Error", Reason.OUTPUT_FAILED, f"media output: {why}", now, work)
        elif d.state != "ending":
            self._hang_up(d, f"media output failed: {why}", now, work)
        return work

    def asked(self, key: str, accepted: bool, code: str, reason: str, now: float, wall: float) -> list[MediaWork]:
        """The reverse lane's verdict on the start_stream of dialog `key` (its Call-ID)."""
        work: list[MediaWork] = []
        d = self.dialogs.get(key)
        if d is None or accepted:
            return work
        self.streaming.discard(d.device_id)
        self.asker.pop(d.device_id, None)
        busy = code == Reason.RATE_LIMITED
        try:
            rc = Reason(code)
        except ValueError:
            rc = Reason.DEFAULT_DENY
        for other in [x for x in self.dialogs.values() if x.device_id == d.device_id and x.state == "proceeding"]:
            self._fail(other, 486 if busy else 403, "Busy Here" if busy else "Forbidden", rc,
                       f"reverse request refused: {reason}", now, work)
        return work

    # -- ACK, BYE, CANCEL, responses ----------------------------------------------------------------
    def _ack(self, req: SipRequest, now: float) -> None:
        d = self.dialogs.get(req.call_id)
        if d is not None and d.state == "answered" and req.to.tag == d.tag:
            d.state, d.deadline = "confirmed", self._expiry(d, now)

    def _bye(self, req: SipRequest, peer: Any, now: float, wall: float, work: list[MediaWork]) -> None:
        d = self.dialogs.get(req.call_id)
        if d is None or req.to.tag != d.tag or d.state == "proceeding":
            self._reply(req, peer, 481, "Call/Transaction Does Not Exist", work)
            return
        self._reply(req, peer, 200, "OK", work)
        if d.state != "ending":
            self._end(d, "platform", "BYE from the platform", now, work)
        else:                               # both sent BYE: ours is answered by theirs
            self._forget(d, now)

    def _cancel(self, req: SipRequest, peer: Any, now: float, wall: float, work: list[MediaWork]) -> None:
        d = self.dialogs.get(req.call_id)
        branch = req.via[0].branch if req.via else None
        if d is None or branch != d.branch:
            self._reply(req, peer, 481, "Call/Transaction Does Not Exist", work)
            return
        self._reply(req, peer, 200, "OK", work)
        if d.state != "proceeding":
            return                          # answered already: CANCEL has no effect (RFC 3261 §9.2)
        d.last = self._reply(d.invite, d.peer, 487, "Request Terminated", work, tag=d.tag)
        self.counters["cancelled"] += 1
        work.append(AuditIntent(dict(
            event="invite_cancelled", verdict="info", lane=LANE, flow=d.inner_id,
            source={"device_id": d.device_id}, reason=f"{d.operator} cancelled the INVITE for {d.inner_id} before "
                                                        f"the answer ({now - d.started:.3f} s)")))
        self._drop(d, now, work)

    def _response(self, resp: SipResponse, now: float, work: list[MediaWork]) -> None:
        number, method = resp.cseq
        d = self.dialogs.get(resp.call_id)
        if d is None or method != "BYE" or d.state != "ending" or number != d.bye_cseq or resp.status < 200:
            return
        self._forget(d, now)

    # -- time -------------------------------------------------------------------------------------
    def next_timer(self) -> float | None:
        times = [d.deadline for d in self.dialogs.values() if d.deadline]
        times += [d.resend_at for d in self.dialogs.values() if d.state in ("answered", "ending") and d.udp]
        times += [t for t, _ in self.linger.values()]
        if self.ended:
            times.append(next(iter(self.ended.values()))[0])
        return min(times, default=None)

    def handle_timer(self, now: float, wall: float) -> list[MediaWork]:
        work: list[MediaWork] = []
        for d in list(self.dialogs.values()):
            if d.state == "proceeding" and now >= d.deadline:
                self._fail(d, 408, "Request Timeout", Reason.NO_STREAM,
                           f"no key frame of device {d.device_id}'s stream within {self.s.invite_timeout:g} s", now,
                           work)
            elif d.state == "answered" and now >= d.deadline:
                self._hang_up(d, f"no ACK for the 200 OK within {limits.INNER_MEDIA_ACK_TIMEOUT:g} s", now, work)
            elif d.state == "confirmed" and d.deadline and now >= d.deadline:
                self._reap(d, "session_expired", f"no session refresh within its {d.session} s session interval "
                           "(RFC 4028)", now, work)
            elif d.state == "ending" and now >= d.deadline:
                self._forget(d, now)
            elif d.state in ("answered", "ending") and d.udp and now >= d.resend_at:
                work.append(SendSip(d.last if d.state == "answered" else d.bye, d.peer))
                d.interval = min(d.interval * 2, limits.INNER_MEDIA_T2)
                d.resend_at = now + d.interval
        work += self._release(now)
        while self.ended and next(iter(self.ended.values()))[0] <= now:
            self.ended.popitem(last=False)
        return work

    def _release(self, now: float) -> list[MediaWork]:
        """On-demand: `stop_stream` for each device whose linger is over and nobody watches."""
        work: list[MediaWork] = []
        for device, (at, stream) in list(self.linger.items()):
            if now >= at:
                del self.linger[device]
                if not self._watched(device):
                    self.streaming.discard(device)
                    stopped = self.asker.pop(device, ("", ""))
                    # the operator that asked for it stops it (the outer side holds the stream per operator)
                    stream = stream if _STREAM.fullmatch(stream) else device
                    work.append(Ask("", "stop_stream", device, {"stream": stream}, stopped[1] or "ferry",
                                    stopped[0], stopped[1]))
        return work

    def close(self, now: float, wall: float) -> list[MediaWork]:
        """The agent stops: BYE to every answered platform, 503 to every INVITE waiting."""
        work: list[MediaWork] = []
        for d in list(self.dialogs.values()):
            if d.state == "proceeding":
                self._fail(d, 503, "Service Unavailable", Reason.NO_STREAM, "the inner agent is stopping", now, work)
            elif d.state in ("answered", "confirmed"):
                self._hang_up(d, "the inner agent is stopping", now, work)
        return work

    # -- endings ----------------------------------------------------------------------------------
    def _fail(self, d: _Dialog, status: int, reason: str, code: Reason, why: str, now: float,
              work: list[MediaWork]) -> None:
        """A final error to a proceeding INVITE."""
        d.last = self._reply(d.invite, d.peer, status, reason, work, tag=d.tag, warning=why)
        self._audit_refused(work, d.invite, d.peer, d.inner_id, d.device_id, code, why, status, d.operator)
        self._drop(d, now, work)

    def _reap(self, d: _Dialog, cause: str, why: str, now: float, work: list[MediaWork], *, keep: bool = True) -> None:
        """A dead viewer ends: `viewer_lost` (code viewer_lost), BYE (answered; `keep`: retransmitted
        until answered, else sent once) or 503 (still proceeding), the viewer stops."""
        self.counters["reaped"] += 1
        work.append(AuditIntent(dict(
            event="viewer_lost", verdict="lost", lane=LANE, flow=d.stream_id or d.inner_id, code=Reason.VIEWER_LOST,
            source={"device_id": d.device_id}, destination=self._dest(d),
            reason=f"{d.operator}'s viewer of {d.inner_id} reaped: {why}; ferry "
                   f"{'answered 503' if d.state == 'proceeding' else 'sent BYE'} (after {now - d.started:.1f} s)",
            detail={"cause": cause, "by": "ferry", "state": d.state, "inner_id": d.inner_id, "operator": d.operator,
                    "ssrc": d.ssrc, "transport": d.transport, "call_id": d.call_id[:128],
                    "duration": round(now - d.started, 3)})))
        if d.state == "proceeding":
            d.last = self._reply(d.invite, d.peer, 503, "Service Unavailable", work, tag=d.tag, warning=why)
            self._drop(d, now, work)
        else:
            self._hang_up(d, why, now, work, lost=True, keep=keep)

    def _hang_up(self, d: _Dialog, why: str, now: float, work: list[MediaWork], *, lost: bool = False,
                 keep: bool = True) -> None:
        """ferry's BYE (UAS side of the dialog: From = the INVITE's To with our tag); `lost`: recorded
        already (`_reap`); `keep`: the dialog waits for the BYE's answer (retransmitting over UDP)."""
        d.bye_cseq = 1
        try:
            target = d.invite.contact[0].uri if d.invite.contact else d.invite.from_.uri
        except SipError:
            target = d.invite.from_.uri
        transport = "TCP" if not d.udp else "UDP"
        to_header = d.invite.header("To") or ""
        headers = [("Via", f"SIP/2.0/{transport} {self.s.sip_host}:{self.s.sip_port};rport;branch={new_branch()}"),
                   ("From", f"{to_header};tag={d.tag}"), ("To", d.invite.header("From") or ""),
                   ("Call-ID", d.call_id), ("CSeq", f"{d.bye_cseq} BYE"), ("Max-Forwards", "70"),
                   ("User-Agent", self.s.user_agent)]
        try:
            d.bye = build_request("BYE", SipUri("sip", target.user, target.host, target.port), headers)
            work.append(SendSip(d.bye, d.peer))
        except SipError:
            d.bye = b""
        if lost:
            self.counters["ended"] += 1
            self._drop(d, now, work)
        else:
            self._end(d, "ferry", why, now, work)
        if d.bye and keep:
            d.state, d.deadline = "ending", now + limits.INNER_MEDIA_BYE_TIMEOUT
            d.interval, d.resend_at = limits.INNER_MEDIA_T1, now + limits.INNER_MEDIA_T1
            self.dialogs[d.call_id] = d

    def _end(self, d: _Dialog, by: str, why: str, now: float, work: list[MediaWork]) -> None:
        """A dialog that was answered ends: `viewer_ended`, the viewer stops."""
        self.counters["ended"] += 1
        work.append(AuditIntent(dict(
            event="viewer_ended", verdict="info", lane=LANE, flow=d.stream_id or d.inner_id,
            source={"device_id": d.device_id}, destination=self._dest(d),
            reason=f"{d.operator} stopped watching {d.inner_id}: {why} (after {now - d.started:.1f} s)",
            detail={"by": by, "inner_id": d.inner_id, "operator": d.operator, "ssrc": d.ssrc,
                    "duration": round(now - d.started, 3)})))
        self._drop(d, now, work)

    def _drop(self, d: _Dialog, now: float, work: list[MediaWork]) -> None:
        """The dialog's viewer stops; it is remembered to answer retransmissions; on-demand linger."""
        if self.dialogs.pop(d.call_id, None) is not None:
            work.append(StopViewer(d.viewer))
            self.ports_used.discard(d.local_port)
        self._remember(d.call_id, d.last, d.peer, now)
        if self.s.mode == "on-demand" and d.device_id in self.streaming and not self._watched(d.device_id):
            self.linger[d.device_id] = (now + self.s.linger, d.stream_id or d.device_id)

    def _forget(self, d: _Dialog, now: float) -> None:
        self.dialogs.pop(d.call_id, None)

    def _remember(self, call_id: str, last: bytes, peer: Any, now: float) -> None:
        self.ended.pop(call_id, None)
        self.ended[call_id] = (now + limits.INNER_MEDIA_ENDED_KEEP, last, peer)
        while len(self.ended) > limits.INNER_MEDIA_ENDED_MAX:
            self.ended.popitem(last=False)

    # -- session timer (RFC 4028) -------------------------------------------------------------------
    def _timer_headers(self, d: _Dialog) -> list[tuple[str, str]]:
        if not d.session:
            return []
        return [("Session-Expires", f"{d.session};refresher=uac"), ("Require", "timer"), ("Allow", ALLOW)]

    @staticmethod
    def _expiry(d: _Dialog, now: float) -> float:
        """When ferry gives up waiting for the platform's refresh: the interval less min(32, a third),
        as the side not refreshing sends its BYE (RFC 4028 §10); 0: no session timer."""
        return now + d.session - min(32.0, d.session / 3) if d.session else 0.0

    def _refresh(self, d: _Dialog, req: SipRequest, peer: Any, now: float, work: list[MediaWork]) -> bool:
        """A re-INVITE of a dialog with a session timer: a session refresh when its media stays the
        same (no SDP, or the same address, port and transport): 200 with ferry's answer again."""
        number = req.cseq[0]
        if number == d.refresh_cseq and d.refresh_ok:     # a retransmission
            work.append(SendSip(d.refresh_ok, peer))
            return True
        if req.body:
            offer = parse_sdp(req.body)
            if (offer.connection, offer.media_port, offer.transport) != \
                    (d.offer.connection, d.offer.media_port, d.offer.transport):
                return False
        if number <= d.invite.cseq[0] or number <= d.refresh_cseq:
            return False
        session = _session_interval(req)
        if session > 0:
            d.session = session
        contact = f"<sip:{d.inner_id}@{self.s.sip_host}:{self.s.sip_port}>"
        d.refresh_ok = self._reply(req, peer, 200, "OK", work, extra=[
            ("Contact", contact), *self._timer_headers(d), ("Content-Type", "application/sdp")],
            body=build_sdp(self._answer(d)))
        d.refresh_cseq = number
        d.deadline = self._expiry(d, now)
        return True

    # -- helpers ----------------------------------------------------------------------------------
    def _watched(self, device: str) -> bool:
        """Whether a dialog still wants `device`'s stream: one ending (ferry's BYE sent, its answer
        awaited, perhaps from a platform that is gone) does not hold the camera."""
        return any(d.device_id == device and d.state != "ending" for d in self.dialogs.values())

    def _by_viewer(self, viewer: str) -> _Dialog | None:
        for d in self.dialogs.values():
            if d.viewer == viewer:
                return d
        return None

    @staticmethod
    def _dest(d: _Dialog) -> str:
        return f"{d.offer.connection}:{d.offer.media_port}"

    def _answer(self, d: _Dialog) -> Sdp:
        tcp = d.transport == "tcp"
        port = d.local_port if d.local_port else 9
        return Sdp(origin=Origin(d.inner_id, "0", "0", self.s.media_address), session_name="Play",
                   connection=self.s.media_address, media_port=port, transport=d.offer.transport,
                   payload_types=(96,), rtpmaps=(RtpMap(96, "PS", 90000),), direction="sendonly",
                   setup=d.setup if tcp else None, connection_mode="new" if tcp else None,
                   ssrc=f"{d.ssrc:010d}")

    def _audit_refused(self, work: list[MediaWork], req: SipRequest, peer: Any, inner_id: str, device: str,
                       code: Reason, why: str, status: int, operator: str = "", suppressed: int = 0) -> None:
        self.counters["refused"] += 1
        src: dict[str, str] = {"address": str(getattr(peer, "host", ""))}
        if device:
            src["device_id"] = device
        work.append(AuditIntent(dict(
            event="invite_refused", verdict="refused", lane=LANE, flow=inner_id[:64], source=src,
            rule="ferry-media", reason=f"{req.method} {status}: {why}", code=code,
            detail={"status": status, "inner_id": inner_id[:64], "operator": operator[:64],
                    **({"suppressed": suppressed} if suppressed else {})})))


def _session_interval(req: SipRequest) -> int:
    """The RFC 4028 session interval ferry keeps for this INVITE, the platform refreshing: 0 when it
    asks for none, cannot refresh (no `Supported: timer`) or wants ferry to (refresher=uas: ferry sends
    no refreshes, so it takes no timer), -1 when the timer it asks for is under ferry's Min-SE (422).
    SipError when the header does not parse (400)."""
    value = req.header("Session-Expires")
    if value is None:
        return 0
    delta, *params = [p.strip(" \t") for p in value.split(";")]
    if not _DELTA.fullmatch(delta):
        raise SipError(f"Session-Expires {value[:40]!r}: not delta-seconds")
    refresher = ""
    for p in params:
        name, _, v = p.partition("=")
        if name.strip(" \t").lower() == "refresher":
            refresher = v.strip(" \t").lower()
    supported = {t.strip(" \t").lower() for v in req.header_all("Supported") for t in v.split(",")}
    if "timer" not in supported or refresher == "uas":
        return 0
    seconds = int(delta)
    if seconds < limits.INNER_MEDIA_MIN_SE:
        return -1
    return min(seconds, limits.INNER_MEDIA_SESSION_EXPIRES_MAX)


def _offer_problem(offer: Sdp, content_type: str | None) -> str | None:
    """Why an SDP offer is not one ferry answers live (None: it is)."""
    if content_type not in (None, "application/sdp"):
        return f"body is {content_type}, not application/sdp"
    if offer.session_name != "Play":
        return f"s={offer.session_name}: ferry serves live video only (s=Play)"
    if offer.media != "video":
        return f"m={offer.media}: ferry sends video only"
    if 96 not in offer.payload_types:
        return "the offer does not list payload type 96 (PS/90000)"
    ps = [m for m in offer.rtpmaps if m.payload_type == 96]
    if ps and (ps[0].encoding.upper() != "PS" or ps[0].clock_rate != 90000):
        return f"payload type 96 is {ps[0]} in the offer, not PS/90000"
    if offer.direction in ("sendonly", "inactive"):
        return f"a={offer.direction}: the platform must receive"
    if offer.media_port == 0 and offer.transport == "RTP/AVP":
        return "m=video port 0"
    if offer.ssrc is not None and offer.ssrc[0] != "0":
        return f"y={offer.ssrc}: not a live SSRC (first digit 0)"
    return None


__all__ = ["MODES", "MediaSettings", "InnerMediaLane", "SendSip", "StartViewer", "StopViewer", "Ask", "MediaWork"]
