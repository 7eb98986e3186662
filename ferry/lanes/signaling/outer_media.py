"""Ferry as the upper platform that pulls video from outer cameras (GB/T 28181 §9.2): pure.

`OuterMediaLane` keeps, per camera, who wants its video and the one INVITE dialog that brings it:

    start(device_id, transport, operator, ...)   a holder more (a reverse start_stream, or always-on)
    stop(device_id, operator, ...)               a holder less; the last one BYEs the camera
    ingest_ready(session, error, ...)            the agent opened (or could not open) the media port
    on_sip(msg, peer, ...)                       a request or response of a media dialog
    media_started / media_ended(session, ...)    the ingest stream of the dialog began / ended
    media_refused(session, code, reason, ...)    the video lane refused it (policy, checks): BYE
    handle_timer(now, wall) at next_timer()      retransmits, timeouts, always-on retries
    close(now, wall)                             the agent stops: BYE every dialog

and returns work: `OpenIngest` / `CloseIngest` (a dynamic ingest port of the video lane),
`SendSip` (bytes to a peer) and `AuditIntent` (stream_requested, stream_answered, stream_failed
with a code, stream_stopped). The agent owns sockets and clocks; `contact_of(device_id)` (the
registry of registered devices, or a configured contact) says where a camera is.

A dialog (one `_Session`, named ``sip-<device_id>-<n>``, also the ingest entry's name):

    opening --ingest_ready--> inviting --1xx--> proceeding --2xx/ACK--> confirmed --media--> streaming
        any: final error, timeout, media lost -> failed (ACK / CANCEL / BYE as RFC 3261 says)
        confirmed/streaming: our stop -> BYE (ending); the camera's BYE -> 200, stopped

The offer (GB/T 28181-2016 §9.2.2, annex F): ``s=Play``, ``c``/``m`` = media_address and the
port ferry opened, ``a=recvonly``, ``a=rtpmap:96 PS/90000``, TCP with ``a=setup:passive`` (ferry
listens, the camera connects; transport "tcp") or ``a=setup:active`` (transport "tcp-active": port 9
offered, ferry connects to the address of the camera's answer, `OpenIngest.connect`) and
``a=connection:new``, ``y=`` the SSRC ferry allocates (0, five digits of the domain, a 4-digit
serial); only packets of that SSRC are taken. An answer whose ``y=`` names another SSRC is
refused (`bad_answer`).

Holders: one per (operator, start) — several starts of one device share its one dialog (and its
one crossing stream); `stop` removes one of the operator's holds. Always-on cameras have a
permanent holder: after a failure or the camera's BYE they are INVITEd again after a backoff
(retry_min doubling to retry_max, reset once a stream has run for retry_max). On-demand holders
are dropped when a dialog fails or the camera ends it: whoever wants it asks again.
"""
from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ferry.codecs.manscdp import Manscdp, build as build_manscdp
from ferry.codecs.sdp import Origin, RtpMap, Sdp, SdpError, build_sdp, parse_sdp
from ferry.codecs.sip import (SipError, SipRequest, SipResponse, SipUri, build_request, new_branch,
                              new_call_id, new_tag, response_to)
from ferry import limits
from ferry.lanes.work import AuditIntent
from ferry.reasons import Reason

__all__ = ["CameraSetting", "CloseIngest", "MediaSettings", "OpenIngest", "OuterMediaLane", "SendSip",
           "ptz_command", "ssrc_for"]

ALWAYS_ON = "always-on"          # the holder of an always-on camera
SIP_RULE = "media-sip"           # the rule of SIP refusals (the protocol, not the policy)
T1 = 0.5                         # RFC 3261 §17.1.1.1: first retransmit of a request over UDP
BYE_TIMEOUT = 4.0                # a BYE unanswered this long is given up (the dialog is gone anyway)
_PTZ_BITS = {"stop": 0x00, "right": 0x01, "left": 0x02, "down": 0x04, "up": 0x08, "zoomin": 0x10,
             "zoomout": 0x20, "upleft": 0x0A, "upright": 0x09, "downleft": 0x06, "downright": 0x05}


# --- work ------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class SendSip:
    """Bytes to send to a peer (the agent's SIP endpoint's `Peer`, opaque here)."""
    data: bytes
    peer: Any


@dataclass(frozen=True, slots=True)
class OpenIngest:
    """Open a dynamic ingest stream for a dialog: a UDP port or a TCP listener on `port` of
    media_address, device `device_id`, payload PS, taking only `ssrc`. The agent then calls
    `ingest_ready(session, error)`."""
    session: str
    device_id: str
    transport: str                   # "udp" | "tcp" (ferry listens) | "tcp-active" (ferry connects to `connect`)
    port: int                        # ferry's port (udp, tcp); the camera's (tcp-active)
    ssrc: int
    destination: str
    connect: str = ""                # tcp-active: the camera's address from its SDP answer


@dataclass(frozen=True, slots=True)
class CloseIngest:
    session: str


MediaWork = SendSip | OpenIngest | CloseIngest | AuditIntent


# --- settings ----------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class CameraSetting:
    device_id: str
    transport: str = "udp"           # udp | tcp (the camera connects) | tcp-active (ferry connects)
    contact: str = ""                # "udp:host:port" / "tcp:host:port" when it does not register


@dataclass(frozen=True, slots=True)
class MediaSettings:
    server_id: str                   # ferry's SIP ID towards cameras (From)
    domain: str                      # the 10-digit SIP domain (To, SSRC)
    sip_host: str                    # ferry's SIP address (Via, Contact)
    sip_port: int
    media_address: str               # c= of the offer
    destination: str                 # policy destination of the streams
    port_range: tuple[int, int]      # dynamic ingest ports, inclusive
    mode: str = "on-demand"          # on-demand | always-on
    cameras: tuple[CameraSetting, ...] = ()
    invite_timeout: float = 10.0     # no final answer this long after the INVITE: failed
    media_timeout: float = 10.0      # no RTP this long after the ACK: BYE, failed
    retry_min: float = 1.0           # always-on: first retry after a failure
    retry_max: float = 30.0          # always-on: longest wait between retries


# --- helpers -------------------------------------------------------------------------------------

def ssrc_for(domain: str, serial: int, live: bool = True) -> str:
    """GB/T 28181-2016 annex F: the 10-digit SSRC of y= — 0 (live) or 1 (playback), digits 4-8
    of the SIP domain, then a 4-digit serial."""
    return f"{0 if live else 1}{domain[3:8]}{serial % 10000:04d}"


def ptz_command(direction: str, speed: int = 0x80, address: int = 1) -> str:
    """A PTZCmd (GB/T 28181-2016 A.3): A5, version/check nibble, address, instruction, pan speed,
    tilt speed, zoom speed / address high nibble, checksum — as 16 hex digits."""
    bits = _PTZ_BITS[direction]
    speed = 0 if direction == "stop" else max(0, min(255, speed))
    zoom = (speed >> 4) if bits & 0x30 else 0
    b = [0xA5, (0xA + 0x5 + 0) % 16, address & 0xFF, bits, speed if bits & 0x03 else 0,
         speed if bits & 0x0C else 0, (zoom << 4) | ((address >> 8) & 0x0F)]
    b.append(sum(b) % 256)
    return bytes(b).hex().upper()


@dataclass(slots=True)
class _Session:
    name: str
    device_id: str
    transport: str
    peer: Any
    target: SipUri
    port: int
    ssrc: str
    call_id: str = ""
    from_tag: str = ""
    to_header: str = ""              # To of the dialog (with the camera's tag once answered)
    branch: str = ""
    cseq: int = 1
    state: str = "opening"
    invite: bytes = b""              # for retransmits (UDP)
    retransmit_at: float | None = None
    interval: float = T1
    deadline: float | None = None    # invite timeout, media timeout, BYE timeout
    answered_at: float | None = None
    streaming_since: float | None = None
    answer: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class _Device:
    device_id: str
    transport: str = "udp"
    holders: list[str] = field(default_factory=list)     # operators (ALWAYS_ON for always-on), one per hold
    session: _Session | None = None
    sessions: int = 0                # dialogs made so far (the n of sip-<id>-<n>)
    backoff: float = 0.0
    retry_at: float | None = None


class OuterMediaLane:
    """See the module docstring."""

    def __init__(self, settings: MediaSettings, contact_of: Callable[[str], tuple[Any, SipUri | None] | None]) -> None:
        self.s = settings
        self.contact_of = contact_of
        self.devices: dict[str, _Device] = {}
        self.by_name: dict[str, _Session] = {}
        self.by_call: dict[str, _Session] = {}
        self.ports: set[int] = set()
        self.serial = 0
        self.sn = 0
        self._refusals: dict[tuple[Reason, str], list[float]] = {}   # (code, address) -> [last, count, total]
        self.counts = {"requested": 0, "answered": 0, "failed": 0, "stopped": 0, "streaming": 0}
        for cam in settings.cameras:
            self.devices[cam.device_id] = _Device(cam.device_id, cam.transport)

    # -- holders --------------------------------------------------------------------------------
    def begin(self, now: float, wall: float) -> list[MediaWork]:
        """The agent started: always-on mode holds every configured camera."""
        work: list[MediaWork] = []
        if self.s.mode == ALWAYS_ON:
            for cam in self.s.cameras:
                work += self.start(cam.device_id, cam.transport, ALWAYS_ON, now, wall)
        return work

    def start(self, device_id: str, transport: str | None, operator: str, now: float,
              wall: float) -> list[MediaWork]:
        """One more holder of the device's video: INVITE it unless a dialog runs (then join it)."""
        dev = self.devices.get(device_id)
        if dev is None:
            if len(self.devices) >= limits.MEDIA_DEVICES_MAX:
                return [self._failed_record(device_id, "", Reason.TOO_MANY_STREAMS,
                                            f"more than {limits.MEDIA_DEVICES_MAX} cameras", {})]
            dev = self.devices[device_id] = _Device(device_id, transport or "udp")
        elif transport and dev.session is None:
            dev.transport = transport
        if len(dev.holders) >= limits.MEDIA_HOLDERS_MAX:
            return [self._failed_record(device_id, "", Reason.TOO_MANY_STREAMS,
                                        f"more than {limits.MEDIA_HOLDERS_MAX} holders of one camera", {})]
        dev.holders.append(operator)
        if dev.session is not None:
            return [AuditIntent(self._fields(dev.session, "stream_joined", "info",
                                             f"{operator} joins the running stream of {device_id}",
                                             holders=list(dev.holders)))]
        dev.retry_at = None
        return self._open(dev, now, wall)

    def stop(self, device_id: str, operator: str, now: float, wall: float) -> tuple[bool, list[MediaWork]]:
        """One holder less (the operator's; False if it held none); the last one BYEs the camera."""
        dev = self.devices.get(device_id)
        if dev is None or operator not in dev.holders:
            return False, []
        dev.holders.remove(operator)
        if dev.holders:
            return True, []
        dev.retry_at = None
        if dev.session is None:
            return True, []
        return True, self._end(dev.session, f"no one holds {device_id} any more (last: {operator})", now, wall)

    def holders(self, device_id: str) -> list[str]:
        dev = self.devices.get(device_id)
        return list(dev.holders) if dev else []

    def session_of(self, device_id: str) -> str | None:
        dev = self.devices.get(device_id)
        return dev.session.name if dev and dev.session else None

    # -- a dialog ---------------------------------------------------------------------------------
    def _open(self, dev: _Device, now: float, wall: float) -> list[MediaWork]:
        where = self.contact_of(dev.device_id)
        if where is None:
            return self._give_up(dev, None, Reason.NO_CONTACT,
                                 f"{dev.device_id} is not registered and has no configured contact", now, wall)
        peer, uri = where
        active = dev.transport == "tcp-active"
        port = 9 if active else self._free_port(dev.transport)     # active: RFC 4145 §4's discard port
        if port is None:
            return self._give_up(dev, None, Reason.NO_MEDIA_PORT,
                                 f"no free port in {self.s.port_range[0]}-{self.s.port_range[1]}", now, wall)
        dev.sessions += 1
        used = {x.ssrc for x in self.by_name.values()}
        self.serial = self.serial % 9999 + 1
        while ssrc_for(self.s.domain, self.serial) in used:
            self.serial = self.serial % 9999 + 1
        name = f"sip-{dev.device_id}-{dev.sessions}"
        target = uri if uri is not None else SipUri("sip", dev.device_id, self.s.domain, None, ())
        sess = _Session(name, dev.device_id, dev.transport, peer, target, port, ssrc_for(self.s.domain, self.serial))
        dev.session = sess
        self.by_name[name] = sess
        if active:                    # the port is opened once the camera answers where it listens
            return self._invite(sess, now, wall)
        self.ports.add(port)
        return [OpenIngest(name, dev.device_id, dev.transport, port, int(sess.ssrc), self.s.destination)]

    def _free_port(self, transport: str) -> int | None:
        lo, hi = self.s.port_range
        span = hi - lo + 1
        start = secrets.randbelow(span)
        for i in range(span):
            port = lo + (start + i) % span
            if port not in self.ports:
                return port
        return None

    def ingest_ready(self, session: str, error: str | None, now: float, wall: float) -> list[MediaWork]:
        """The agent opened the dialog's port (error None) or could not: then INVITE, or fail. For
        tcp-active, the connection to the camera's answered address after the 200."""
        sess = self.by_name.get(session)
        if sess is not None and sess.transport == "tcp-active" and sess.state == "confirmed" and error is not None:
            return self._lost(sess, Reason.NO_MEDIA_PORT, f"cannot connect to the camera: {error}", now, wall)
        if sess is None or sess.state != "opening":
            return [CloseIngest(session)] if sess is None and error is None else []
        dev = self.devices[sess.device_id]
        if error is not None:
            self.ports.discard(sess.port)
            self.by_name.pop(session, None)
            dev.session = None
            return self._give_up(dev, sess, Reason.NO_MEDIA_PORT, f"cannot open port {sess.port}: {error}",
                                 now, wall, close=False)
        return self._invite(sess, now, wall)

    def _invite(self, sess: _Session, now: float, wall: float) -> list[MediaWork]:
        s = self.s
        dev = self.devices[sess.device_id]
        tcp = sess.transport != "udp"
        sess.call_id = new_call_id(s.sip_host)
        sess.from_tag = new_tag()
        sess.to_header = f"<sip:{sess.device_id}@{s.domain}>"
        sess.branch = new_branch()
        sess.cseq = 1
        offer = Sdp(origin=Origin(s.server_id, "0", "0", s.media_address), session_name="Play",
                    connection=s.media_address,
                    media_port=sess.port, transport="TCP/RTP/AVP" if tcp else "RTP/AVP",
                    payload_types=(96,), rtpmaps=(RtpMap(96, "PS", 90000),), direction="recvonly",
                    setup=("active" if sess.transport == "tcp-active" else "passive") if tcp else None,
                    connection_mode="new" if tcp else None,
                    uri=f"{sess.device_id}:0", ssrc=sess.ssrc)
        headers = self._dialog_headers(sess, "INVITE") + [
            ("Contact", f"<sip:{s.server_id}@{_hostport(s.sip_host, s.sip_port)}>"),
            ("Content-Type", "APPLICATION/SDP"),
            ("Subject", f"{sess.device_id}:{sess.ssrc},{s.server_id}:0"),
            ("User-Agent", "ferry")]
        sess.invite = build_request("INVITE", sess.target, headers, build_sdp(offer))
        sess.state = "inviting"
        sess.deadline = now + s.invite_timeout
        sess.interval = T1
        sess.retransmit_at = now + T1 if _udp(sess.peer) else None
        self.by_call[sess.call_id] = sess
        self.counts["requested"] += 1
        dev.retry_at = None
        return [SendSip(sess.invite, sess.peer), AuditIntent(self._fields(
            sess, "stream_requested", "info", f"INVITE {sess.device_id} for {', '.join(dev.holders)}",
            holders=list(dev.holders), transport=sess.transport, port=sess.port, ssrc=sess.ssrc,
            contact=str(sess.target)))]

    def _dialog_headers(self, sess: _Session, method: str, branch: str | None = None,
                        cseq: int | None = None) -> list[tuple[str, str]]:
        s = self.s
        via_t = "TCP" if _transport(sess.peer) == "tcp" else "UDP"
        return [("Via", f"SIP/2.0/{via_t} {_hostport(s.sip_host, s.sip_port)};rport;branch={branch or sess.branch}"),
                ("From", f"<sip:{s.server_id}@{s.domain}>;tag={sess.from_tag}"),
                ("To", sess.to_header), ("Call-ID", sess.call_id),
                ("CSeq", f"{sess.cseq if cseq is None else cseq} {method}"), ("Max-Forwards", "70")]

    # -- SIP in -----------------------------------------------------------------------------------
    def on_sip(self, msg: SipRequest | SipResponse, peer: Any, now: float, wall: float) -> list[MediaWork]:
        """A request or response of a media dialog. What is not ours (another Call-ID, CSeq or
        host than the dialog's) gets 481 (requests) or is ignored (responses); a header the codec
        cannot read drops the message."""
        try:
            return self._on_sip(msg, peer, now, wall)
        except SipError:
            return []

    def _on_sip(self, msg: SipRequest | SipResponse, peer: Any, now: float, wall: float) -> list[MediaWork]:
        call_id = msg.call_id
        cseq, method = msg.cseq
        sess = self.by_call.get(call_id)
        if sess is not None and _host(peer) != _host(sess.peer):
            sess = None                          # the dialog's Call-ID from another host: not its camera
        if isinstance(msg, SipResponse):
            if sess is None:
                return []
            if method == "INVITE" and cseq == 1:
                return self._invite_response(sess, msg, now, wall)
            if method == "BYE" and cseq == sess.cseq and sess.state == "ending" and msg.status >= 200:
                return self._forget(sess)
            return []
        if msg.method == "ACK":
            return []
        if sess is None:
            if msg.method == "INVITE":
                return [SendSip(response_to(msg, 403, "Forbidden", (
                    ("Warning", '399 ferry "ferry does not take INVITEs from outer devices"'),)), peer),
                    *self.refused(Reason.UNSUPPORTED_METHOD, peer, "an INVITE from an outer device: ferry only "
                                  "INVITEs cameras (403)", now)]
            return [SendSip(response_to(msg, 481, "Call/Transaction Does Not Exist"), peer)]
        if msg.method == "BYE":
            work: list[MediaWork] = [SendSip(response_to(msg, 200, "OK"), peer)]
            if sess.state in ("confirmed", "streaming"):
                work += self._lost(sess, Reason.CAMERA_BYE, "the camera ended the dialog (BYE)", now, wall,
                                   bye=False, event="stream_stopped", verdict="info")
            return work
        if msg.method == "INFO":
            return [SendSip(response_to(msg, 200, "OK"), peer)]
        return [SendSip(response_to(msg, 405, "Method Not Allowed", (("Allow", "ACK, BYE, INFO"),)), peer)]

    def _invite_response(self, sess: _Session, msg: SipResponse, now: float, wall: float) -> list[MediaWork]:
        st = msg.status
        if st < 200:
            if sess.state == "inviting":
                sess.state = "proceeding"
            sess.retransmit_at = None
            return []
        if sess.state in ("confirmed", "streaming", "ending") and 200 <= st < 300:
            return [SendSip(self._ack(sess, msg), sess.peer)]       # a retransmitted 200: ACK again
        if sess.state not in ("inviting", "proceeding", "cancelling"):
            return []
        sess.retransmit_at = None
        if st >= 300:
            ack = self._ack(sess, msg, hop=True)
            if sess.state == "cancelling":
                return [SendSip(ack, sess.peer), *self._forget(sess)]
            return [SendSip(ack, sess.peer), *self._lost(
                sess, Reason.INVITE_REFUSED, f"the camera answered the INVITE {st} {msg.reason}", now, wall,
                bye=False, status=st)]
        ack = self._ack(sess, msg)
        to = msg.header("To") or sess.to_header
        sess.to_header = to
        try:
            contact = msg.contact
        except SipError:
            contact = []                         # keep the INVITE's target
        if contact and contact[0].uri.scheme == "sip":
            sess.target = contact[0].uri
        if sess.state == "cancelling":           # answered after all: end it at once
            return [SendSip(ack, sess.peer), *self._bye(sess, now)]
        problem, answer = _check_answer(msg.body, sess)
        if problem is not None:
            sess.state = "confirmed"             # a dialog now: BYE it
            return [SendSip(ack, sess.peer), *self._lost(sess, Reason.BAD_ANSWER, problem, now, wall, status=st)]
        sess.answer = answer
        sess.state = "confirmed"
        sess.answered_at = now
        sess.deadline = now + self.s.media_timeout
        self.counts["answered"] += 1
        work: list[MediaWork] = [SendSip(ack, sess.peer), AuditIntent(self._fields(
            sess, "stream_answered", "info", f"{sess.device_id} answered 200: media from "
            f"{answer['camera_address']}:{answer['camera_port']}", status=st, **answer))]
        if sess.transport == "tcp-active":      # ferry connects to where the camera listens
            work.append(OpenIngest(sess.name, sess.device_id, sess.transport, answer["camera_port"],
                                   int(sess.ssrc), self.s.destination,
                                   connect=_hostport(answer["camera_address"], answer["camera_port"])))
        return work

    def _ack(self, sess: _Session, resp: SipResponse, hop: bool = False) -> bytes:
        """ACK of a final answer: of a 2xx a new transaction to the dialog's target, of an error the
        same branch as the INVITE (RFC 3261 §17.1.1.3, §13.2.2.4)."""
        headers = self._dialog_headers(sess, "ACK", branch=sess.branch if hop else new_branch(), cseq=1)
        headers = [(n, (resp.header("To") or v) if n == "To" else v) for n, v in headers]
        return build_request("ACK", sess.target, headers)

    # -- media --------------------------------------------------------------------------------------
    def media_started(self, session: str, now: float, wall: float) -> list[MediaWork]:
        sess = self.by_name.get(session)
        if sess is None or sess.state not in ("confirmed",):
            return []
        sess.state = "streaming"
        sess.deadline = None
        sess.streaming_since = now
        self.counts["streaming"] += 1
        return []

    def media_ended(self, session: str, now: float, wall: float) -> list[MediaWork]:
        """The dialog's ingest stream ended (silent for the idle time, or its connection closed)."""
        sess = self.by_name.get(session)
        if sess is None or sess.state != "streaming":
            return []
        return self._lost(sess, Reason.MEDIA_LOST, "the camera's stream went silent", now, wall)

    def media_refused(self, session: str, code: str, reason: str, now: float, wall: float) -> list[MediaWork]:
        """The video lane refused the dialog's stream (policy, checks): no use keeping it: BYE."""
        sess = self.by_name.get(session)
        if sess is None or sess.state not in ("confirmed", "streaming"):
            return []
        try:
            why = Reason(code)
        except ValueError:
            why = Reason.STREAM_CHECK
        return self._lost(sess, why, f"the video lane refused the stream: {reason}", now, wall)

    # -- ends ------------------------------------------------------------------------------------------
    def _end(self, sess: _Session, why: str, now: float, wall: float) -> list[MediaWork]:
        """Ferry ends a dialog: BYE (CANCEL while it is not answered); stream_stopped."""
        record = AuditIntent(self._fields(sess, "stream_stopped", "info", why))
        self.counts["stopped"] += 1
        dev = self.devices[sess.device_id]
        dev.session = None
        return [record, *self._hang_up(sess, now)]

    def _hang_up(self, sess: _Session, now: float) -> list[MediaWork]:
        """Close the dialog's port; BYE an answered dialog, CANCEL one with a provisional answer only
        (RFC 3261 §9.1: not before), forget one with none."""
        self.ports.discard(sess.port)
        if sess.state in ("confirmed", "streaming"):
            return self._bye(sess, now)
        work: list[MediaWork] = [CloseIngest(sess.name)]
        if sess.state == "proceeding":
            headers = self._dialog_headers(sess, "CANCEL", cseq=1)
            work.append(SendSip(build_request("CANCEL", sess.target, headers), sess.peer))
            sess.state = "cancelling"
            sess.retransmit_at = None
            sess.deadline = now + BYE_TIMEOUT
        elif sess.state not in ("ending", "cancelling"):
            self._forget(sess)
        return work

    def _bye(self, sess: _Session, now: float) -> list[MediaWork]:
        sess.cseq += 1
        sess.branch = new_branch()
        data = build_request("BYE", sess.target, self._dialog_headers(sess, "BYE"))
        sess.state = "ending"
        sess.invite = data
        sess.interval = T1
        sess.retransmit_at = now + T1 if _udp(sess.peer) else None
        sess.deadline = now + BYE_TIMEOUT
        return [SendSip(data, sess.peer), CloseIngest(sess.name)]

    def _forget(self, sess: _Session) -> list[MediaWork]:
        self.by_call.pop(sess.call_id, None)
        self.by_name.pop(sess.name, None)
        self.ports.discard(sess.port)
        dev = self.devices.get(sess.device_id)
        if dev is not None and dev.session is sess:
            dev.session = None
        return []

    def _lost(self, sess: _Session, code: Reason, why: str, now: float, wall: float, *, bye: bool = True,
              event: str = "stream_failed", verdict: str = "lost", **detail: Any) -> list[MediaWork]:
        """A dialog failed (or the camera ended it): record, hang up, retry an always-on camera."""
        dev = self.devices[sess.device_id]
        fields = self._fields(sess, event, verdict, why, holders=list(dev.holders), **detail)
        fields["code"] = code
        self.counts["failed" if event == "stream_failed" else "stopped"] += 1
        work: list[MediaWork] = [AuditIntent(fields)]
        dev.session = None
        if bye:
            work += self._hang_up(sess, now)
        else:
            work.append(CloseIngest(sess.name))
            self._forget(sess)
        ran = sess.streaming_since is not None and now - sess.streaming_since >= self.s.retry_max
        self._after_failure(dev, now, reset=ran)
        return work

    def _give_up(self, dev: _Device, sess: _Session | None, code: Reason, why: str, now: float, wall: float,
                 close: bool = True) -> list[MediaWork]:
        record = self._failed_record(dev.device_id, sess.name if sess else "", code, why,
                                     {"holders": list(dev.holders)})
        self.counts["failed"] += 1
        self._after_failure(dev, now)
        return [record]

    def _after_failure(self, dev: _Device, now: float, reset: bool = False) -> None:
        if ALWAYS_ON in dev.holders:
            dev.holders = [ALWAYS_ON]
            dev.backoff = self.s.retry_min if reset or not dev.backoff else min(dev.backoff * 2, self.s.retry_max)
            dev.retry_at = now + dev.backoff
        else:
            dev.holders = []
            dev.retry_at = None

    def _failed_record(self, device_id: str, name: str, code: Reason, why: str, detail: dict[str, Any]) -> AuditIntent:
        return AuditIntent(dict(event="stream_failed", verdict="lost", lane="video", flow=name or f"sip-{device_id}",
                                source={"device_id": device_id}, destination=self.s.destination, reason=why,
                                code=code, detail=detail))

    # -- refusals of SIP ---------------------------------------------------------------------------------
    def refused(self, code: Reason, peer: Any, reason: str, now: float, size: int = 0) -> list[MediaWork]:
        """SIP this part refuses (an INVITE from a device; on its own endpoint, bytes that do not
        parse): a `media_sip_refused` record at once, then at most one per code and address every
        MEDIA_REFUSAL_AUDIT_INTERVAL, the ones between counted into it (`detail.messages`)."""
        address = _host(peer)
        key = (code, address)
        if key not in self._refusals and len(self._refusals) >= limits.MEDIA_REFUSAL_KEYS_MAX:
            key = (code, "*")
        agg = self._refusals.setdefault(key, [float("-inf"), 0, 0])
        agg[1] += 1
        agg[2] += 1
        if now - agg[0] < limits.MEDIA_REFUSAL_AUDIT_INTERVAL:
            return []
        return [self._refusal_record(key, agg, reason, now, size)]

    def _refusal_record(self, key: tuple[Reason, str], agg: list[float], reason: str, now: float,
                        size: int = 0) -> AuditIntent:
        n, total = int(agg[1]), int(agg[2])
        agg[0], agg[1] = now, 0
        return AuditIntent(dict(event="media_sip_refused", verdict="refused", lane="video", rule=SIP_RULE,
                                source={"address": key[1]}, destination=self.s.destination,
                                reason=reason if n == 1 else f"{n} messages refused, the last: {reason}",
                                code=key[0], detail={"messages": n, "total": total,
                                                     **({"bytes": size} if size else {})}))

    # -- time -------------------------------------------------------------------------------------------
    def next_timer(self) -> float | None:
        times = [t for sess in self.by_name.values() for t in (sess.retransmit_at, sess.deadline) if t is not None]
        times += [d.retry_at for d in self.devices.values() if d.retry_at is not None]
        return min(times, default=None)

    def handle_timer(self, now: float, wall: float) -> list[MediaWork]:
        work: list[MediaWork] = []
        for sess in list(self.by_name.values()):
            if sess.deadline is None or sess.deadline > now:
                if sess.retransmit_at is not None and sess.retransmit_at <= now:
                    work.append(SendSip(sess.invite, sess.peer))
                    sess.interval = min(sess.interval * 2, 4.0)
                    sess.retransmit_at = now + sess.interval
                continue
            if sess.state in ("inviting", "proceeding"):
                work += self._lost(sess, Reason.INVITE_TIMEOUT,
                                   f"no final answer to the INVITE within {self.s.invite_timeout:g} s", now, wall)
            elif sess.state == "confirmed":
                work += self._lost(sess, Reason.NO_MEDIA,
                                   f"no RTP of SSRC {sess.ssrc} within {self.s.media_timeout:g} s of the ACK",
                                   now, wall)
            elif sess.state in ("ending", "cancelling"):
                work += self._forget(sess)
        for dev in self.devices.values():
            if dev.retry_at is not None and dev.retry_at <= now and dev.session is None:
                dev.retry_at = None
                if dev.holders:
                    work += self._open(dev, now, wall)
        return work

    def close(self, now: float, wall: float) -> list[MediaWork]:
        """The agent stops: every dialog ends (BYE / CANCEL), nothing is retried."""
        work: list[MediaWork] = []
        for dev in self.devices.values():
            dev.retry_at = None
            if dev.session is not None:
                work += self._end(dev.session, "the agent stops", now, wall)
            dev.holders = []
        for key, agg in self._refusals.items():       # what was counted since the last record
            if agg[1]:
                work.append(self._refusal_record(key, agg, "(counted since the last record)", now))
        return work

    # -- MESSAGEs to a camera ------------------------------------------------------------------------------
    def message(self, device_id: str, body: Manscdp) -> list[MediaWork] | str:
        """A MANSCDP MESSAGE (PTZ control, catalog query) to a camera; a text says why not."""
        where = self.contact_of(device_id)
        if where is None:
            return f"{device_id} is not registered and has no configured contact"
        peer, uri = where
        s = self.s
        call_id = new_call_id(s.sip_host)
        via_t = "TCP" if _transport(peer) == "tcp" else "UDP"
        headers = [("Via", f"SIP/2.0/{via_t} {_hostport(s.sip_host, s.sip_port)};rport;branch={new_branch()}"),
                   ("From", f"<sip:{s.server_id}@{s.domain}>;tag={new_tag()}"),
                   ("To", f"<sip:{device_id}@{s.domain}>"), ("Call-ID", call_id), ("CSeq", "1 MESSAGE"),
                   ("Max-Forwards", "70"), ("Content-Type", "Application/MANSCDP+xml"), ("User-Agent", "ferry")]
        target = uri if uri is not None else SipUri("sip", device_id, s.domain, None, ())
        return [SendSip(build_request("MESSAGE", target, headers, build_manscdp(body, encoding="GB2312")), peer)]

    def next_sn(self) -> int:
        self.sn = self.sn % 2_000_000_000 + 1
        return self.sn

    def ptz(self, device_id: str, cmd: str) -> list[MediaWork] | str:
        return self.message(device_id, Manscdp("Control", "DeviceControl", self.next_sn(), device_id,
                                               fields=(("PTZCmd", cmd),)))

    def catalog_query(self, device_id: str) -> list[MediaWork] | str:
        return self.message(device_id, Manscdp("Query", "Catalog", self.next_sn(), device_id))

    # -- records -----------------------------------------------------------------------------------------
    def _fields(self, sess: _Session, event: str, verdict: str, reason: str, **detail: Any) -> dict[str, Any]:
        return dict(event=event, verdict=verdict, lane="video", flow=sess.name,
                    source={"device_id": sess.device_id, "address": f"{_host(sess.peer)}"},
                    destination=self.s.destination, reason=reason,
                    detail={"transport": sess.transport, "port": sess.port, "ssrc": sess.ssrc, **detail})

    def sessions(self) -> list[dict[str, Any]]:
        """The dialogs now (status, tests)."""
        return [{"session": x.name, "device_id": x.device_id, "state": x.state, "port": x.port, "ssrc": x.ssrc,
                 "transport": x.transport, "holders": list(self.devices[x.device_id].holders)}
                for x in self.by_name.values()]


def _check_answer(body: bytes, sess: _Session) -> tuple[str | None, dict[str, Any]]:
    """What is wrong with a 200's SDP answer (None: usable) and what it says."""
    if not body:
        return "the 200 carries no SDP answer", {}
    try:
        sdp = parse_sdp(body)
    except SdpError as e:
        return f"the SDP answer does not parse: {e}", {}
    if sdp.ssrc is not None and sdp.ssrc != sess.ssrc:
        return f"the answer's SSRC {sdp.ssrc} is not the offered {sess.ssrc}", {}
    want = "RTP/AVP" if sess.transport == "udp" else "TCP/RTP/AVP"
    if sdp.transport != want:
        return f"the answer's transport {sdp.transport} is not the offered {want}", {}
    if sdp.direction not in (None, "sendonly", "sendrecv"):
        return f"the answer's direction {sdp.direction} sends nothing", {}
    if sess.transport == "tcp-active" and not 0 < sdp.media_port < 65536:
        return f"the answer's port {sdp.media_port} is not one ferry can connect to", {}
    return None, {"camera_address": sdp.connection, "camera_port": sdp.media_port,
                  "answer_ssrc": sdp.ssrc or sess.ssrc}


def _transport(peer: Any) -> str:
    return str(getattr(peer, "transport", "udp"))


def _udp(peer: Any) -> bool:
    return _transport(peer) == "udp"


def _host(peer: Any) -> str:
    return str(getattr(peer, "host", ""))


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

