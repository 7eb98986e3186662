"""Outer agent, `[media]` (issue 13 "media-outer"): the shell around `OuterMediaLane`.

It carries out the lane's work: SIP bytes to cameras (through the signaling part's SIP endpoint,
`attach_media`, or its own UDP socket `[media] sip_listen` where there is no `[signaling]`),
dynamic ingest ports of the video lane (`VideoIngest.open_dynamic` / `close_dynamic`: a dialog's
UDP port or TCP listener, stream names sip-<device_id>-<n>), audit records; it arms the lane's
timer and tells the lane when a dialog's stream starts and ends (the ingest's watcher).

Reverse requests (the outer agent's reverse registry, `register_reverse_handler`): start_stream
(a holder more: INVITE unless streaming), stop_stream (a holder less: the last BYEs), ptz (a
MESSAGE Control DeviceControl PTZCmd), catalog_query (a MESSAGE Query Catalog).
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from ferry.agents.lane_timer import LaneTimer
from ferry.agents.sip_endpoint import Peer, SipEndpoint, SipMessage
from ferry.agents.video_ingest import DynamicEntry, VideoIngest
from ferry.codecs.sip import SipRequest, SipResponse, SipUri, response_to
from ferry.config import OuterMedia, OuterSignaling, split_host_port
from ferry.lanes.signaling.outer_media import (CameraSetting, CloseIngest, MediaSettings, MediaWork, OpenIngest,
                                               OuterMediaLane, SendSip, ptz_command)
from ferry.lanes.reverse import ReverseAction
from ferry.lanes.work import AuditIntent
from ferry.reasons import Reason

log = logging.getLogger("ferry.outer.media")

MEDIA_METHODS = frozenset({"INVITE", "ACK", "BYE", "CANCEL", "INFO"})


class MediaHost(Protocol):
    def audit(self, **fields: Any) -> object: ...


class Registry(Protocol):
    def contact(self, device_id: str) -> tuple[Any, SipUri] | None: ...


def _unspecified(host: str) -> bool:
    return host in ("", "0.0.0.0", "::")


def settings_from(cfg: OuterMedia, signaling: OuterSignaling | None, sip_host: str, sip_port: int) -> MediaSettings:
    server_id = cfg.server_id or (signaling.server_id if signaling else "")
    domain = cfg.domain or (signaling.realm if signaling else "")
    return MediaSettings(
        server_id=server_id, domain=domain, sip_host=sip_host, sip_port=sip_port, media_address=cfg.media_address,
        destination=cfg.destination, port_range=(cfg.port_range[0], cfg.port_range[1]), mode=cfg.mode,
        cameras=tuple(CameraSetting(c.device_id, c.transport, c.contact) for c in cfg.camera),
        invite_timeout=cfg.invite_timeout, media_timeout=cfg.media_timeout, retry_max=cfg.retry_max)


class MediaOuter:
    """See the module docstring. `send(data, peer)` is the signaling part's (after `attach_media`)
    or this part's own endpoint's."""

    def __init__(self, cfg: OuterMedia, host: MediaHost, ingest: VideoIngest,
                 signaling: OuterSignaling | None = None) -> None:
        self.cfg = cfg
        self.host = host
        self.ingest = ingest
        self.registry: Registry | None = None
        self.endpoint: SipEndpoint | None = None
        if signaling is None:
            self.endpoint = SipEndpoint("media", self.on_sip, self._refused, udp=cfg.sip_listen)
            listen = cfg.sip_listen
        else:
            listen = signaling.listen_udp or signaling.listen_tcp
        h, port = split_host_port(listen)
        self.sip_host = cfg.media_address if _unspecified(h) else h
        self.sip_port = port
        self.send: Callable[[bytes, Peer], bool] = self._send_own
        self.contacts = {c.device_id: c.contact for c in cfg.camera if c.contact}
        self.lane = OuterMediaLane(settings_from(cfg, signaling, self.sip_host, self.sip_port), self._contact_of)
        self.timer = LaneTimer(self.lane.next_timer, self._on_timer)
        ingest.watch = self._watched
        self.loop: asyncio.AbstractEventLoop | None = None

    # -- wiring ------------------------------------------------------------------------------------
    def bind(self) -> None:
        if self.endpoint is not None:
            self.endpoint.bind()
            addr = self.endpoint.udp_address
            if addr is not None and self.sip_port == 0:
                self.sip_port = addr[1]
                self.lane.s = settings_from(self.cfg, None, self.sip_host, self.sip_port)

    def register_handlers(self, register: Callable[[str, Callable[[ReverseAction], object]], None]) -> None:
        register("start_stream", self.start_stream)
        register("stop_stream", self.stop_stream)
        register("ptz", self.ptz)
        register("catalog_query", self.catalog_query)

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        if self.endpoint is not None:
            await self.endpoint.start()
        now, wall = self.clocks()
        self.carry(self.lane.begin(now, wall))

    async def stop(self) -> None:
        """BYE every dialog (sent before the SIP socket closes), close their ports."""
        now, wall = self.clocks()
        self.carry(self.lane.close(now, wall))
        self.timer.cancel()
        if self.endpoint is not None:
            await asyncio.sleep(0.05)        # let the BYEs leave
            await self.endpoint.stop()

    def _send_own(self, data: bytes, peer: Peer) -> bool:
        if self.endpoint is None:
            log.warning("media: no SIP endpoint to send to %s", peer)
            return False
        return self.endpoint.send(data, peer)

    def _refused(self, peer: Peer, reason: str, size: int) -> None:
        """Our own endpoint could not frame or parse what came (no answer): recorded, aggregated."""
        log.debug("media sip: refused %d bytes from %s: %s", size, peer, reason)
        self.carry(self.lane.refused(Reason.MALFORMED_SIP, peer, f"malformed SIP: {reason}", time.monotonic(), size))

    def _contact_of(self, device_id: str) -> tuple[Any, SipUri | None] | None:
        fixed = self.contacts.get(device_id)
        if fixed:
            transport, _, rest = fixed.partition(":")
            host, port = split_host_port(rest)
            return Peer(transport, host, port), SipUri("sip", device_id, host, port, ())
        if self.registry is not None:
            return self.registry.contact(device_id)
        return None

    @staticmethod
    def clocks() -> tuple[float, float]:
        return time.monotonic(), time.time()

    # -- in --------------------------------------------------------------------------------------
    def on_sip(self, msg: SipMessage, peer: Peer) -> None:
        """A message of a media dialog (the signaling part passes INVITE, ACK, BYE, CANCEL, INFO and
        responses to INVITE and BYE; with our own endpoint, everything comes here)."""
        if self.endpoint is not None and not _is_media(msg):
            if isinstance(msg, SipRequest) and msg.method not in ("ACK",):
                self.send(response_to(msg, 403, "Forbidden", (
                    ("Warning", '399 ferry "signaling not configured: media only"'),)), peer)
            return
        now, wall = self.clocks()
        self.carry(self.lane.on_sip(msg, peer, now, wall))

    def _watched(self, name: str, event: str, fields: dict[str, Any]) -> None:
        """The ingest says a dialog's stream started, ended or was refused (handled after the
        ingest's own work is carried)."""
        if self.loop is None:
            return
        self.loop.call_soon(self._media_event, name, event, str(fields.get("code", "")),
                            str(fields.get("reason", "")))

    def _media_event(self, name: str, event: str, code: str, reason: str) -> None:
        now, wall = self.clocks()
        if event == "stream_started":
            self.carry(self.lane.media_started(name, now, wall))
        elif event == "stream_refused":
            self.carry(self.lane.media_refused(name, code, reason, now, wall))
        else:
            self.carry(self.lane.media_ended(name, now, wall))

    def _on_timer(self, now: float) -> None:
        self.carry(self.lane.handle_timer(now, time.time()))

    # -- out ---------------------------------------------------------------------------------------
    def carry(self, work: Sequence[MediaWork]) -> None:
        for w in work:
            if isinstance(w, SendSip):
                if not self.send(w.data, w.peer):
                    log.info("media: could not send to %s", w.peer)
            elif isinstance(w, OpenIngest):
                kind = {"udp": "udp", "tcp": "tcp-listen", "tcp-active": "tcp-connect"}[w.transport]
                entry = DynamicEntry(w.session, kind, w.device_id, w.ssrc, w.destination, connect=w.connect)
                error = self.ingest.open_dynamic(entry, self.cfg.media_address, w.port)
                now, wall = self.clocks()
                self.carry(self.lane.ingest_ready(w.session, error, now, wall))
            elif isinstance(w, CloseIngest):
                self.ingest.close_dynamic(w.session)
            elif isinstance(w, AuditIntent):
                self.host.audit(**w.fields)
                log.info("media %s %s: %s", w.fields["event"], w.fields.get("flow"), w.fields.get("reason"))
        self.timer.arm()

    # -- reverse requests ------------------------------------------------------------------------------
    def start_stream(self, action: ReverseAction) -> str:
        transport = dict(action.params).get("transport") or None
        now, wall = self.clocks()
        work = self.lane.start(action.device_id, transport, action.operator or "operator", now, wall)
        self.carry(work)
        session = self.lane.session_of(action.device_id)
        return f"held by {', '.join(self.lane.holders(action.device_id))}; dialog {session}" if session \
            else "could not INVITE the camera (see stream_failed)"

    def stop_stream(self, action: ReverseAction) -> str:
        now, wall = self.clocks()
        held, work = self.lane.stop(action.device_id, action.operator or "operator", now, wall)
        self.carry(work)
        if not held:
            return f"{action.operator} holds no stream of {action.device_id}"
        left = self.lane.holders(action.device_id)
        return f"still held by {', '.join(left)}" if left else "no one holds it: BYE"

    def ptz(self, action: ReverseAction) -> str:
        params = dict(action.params)
        cmd = params.get("cmd") or ptz_command(params.get("direction", "stop"), int(params.get("speed", "128")))
        return self._message(self.lane.ptz(action.device_id, cmd.upper()), f"PTZCmd {cmd.upper()}")

    def catalog_query(self, action: ReverseAction) -> str:
        return self._message(self.lane.catalog_query(action.device_id), "Query Catalog")

    def _message(self, result: list[MediaWork] | str, what: str) -> str:
        if isinstance(result, str):
            raise LookupError(result)
        self.carry(result)
        return f"{what} sent"

    def counters(self) -> dict[str, int]:
        return {f"media_{k}": v for k, v in self.lane.counts.items()}


def _is_media(msg: SipMessage) -> bool:
    if isinstance(msg, SipRequest):
        return msg.method in MEDIA_METHODS
    assert isinstance(msg, SipResponse)
    try:
        return msg.cseq[1] in ("INVITE", "BYE")
    except ValueError:
        return False
