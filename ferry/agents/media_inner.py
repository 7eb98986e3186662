"""Inner agent, `[media]`: the inner platform's INVITEs of outer cameras (issue 13 item 3, media-inner).

Shell around the pure dialog lane (ferry.lanes.signaling.inner_media.InnerMediaLane): it carries
out the lane's work — SIP messages out through the SIP endpoint, viewers made and closed on the
video emitter (ferry.agents.video_emit: UDP/TCP sinks of the crossing stream), reverse requests
(on-demand mode) through the agent's reverse lane, audit records — and arms one timer.

The SIP endpoint: with `[signaling]` the inner SIP glue (ferry.agents.sip_inner, "sig-inner")
owns the one endpoint and hands INVITE/ACK/BYE/CANCEL/INFO and the responses to INVITE/BYE to
`on_sip` (`attach_media(self)`; it sets `self.send`). Without it, `[media] listen` makes this
module's own endpoint (UDP and TCP on one "host:port"), which answers only these methods (a
deployment where the platform has ferry's cameras configured by hand, or always-on viewing only).

Dead viewers are reaped: the sig glue's `platform_gone(host, why)` (the cascade lost the platform
or its registration ended) and the emitter's `on_viewer_sink` (a UDP viewer's sends refused by
ICMP, a TCP viewer's connection closed) go to the lane, which ends those dialogs.

The ID the platform INVITEs maps to the outer device ID with sig-inner's `[signaling] id_map`
(ferry.lanes.signaling.ids); without `[signaling]` the IDs are the outer ones.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from ferry.agents.lane_timer import LaneTimer
from ferry.agents.sip_endpoint import Peer, SipEndpoint, SipMessage
from ferry.agents.video_emit import PortTaken, VideoEmitter
from ferry.codecs.sip import SipError, SipRequest, SipResponse, new_tag, response_to
from ferry.config import InnerMedia, InnerSignaling, split_host_port
from ferry.lanes.signaling.ids import IdMap
from ferry.lanes.signaling.inner_media import (Ask, InnerMediaLane, MediaSettings, MediaWork, SendSip, StartViewer,
                                               StopViewer)
from ferry.lanes.video import ViewerLost, ViewerStarted
from ferry.lanes.work import AuditIntent
from ferry.policy.plan import Plan

log = logging.getLogger("ferry.inner.media")

class AskFn(Protocol):
    """The inner agent's reverse request: (accepted, code, reason)."""

    def __call__(self, request: str, device_id: str, params: dict[str, str], operator: str, *,
                 address: str = "", platform_id: str = "") -> tuple[bool, str, str]: ...
METHODS = frozenset({"INVITE", "ACK", "BYE", "CANCEL", "INFO"})


class MediaHost(Protocol):
    def audit(self, **fields: Any) -> object: ...


class InnerMediaAgent:
    """The inner agent's `[media]`: one dialog lane, its viewers and its SIP."""

    def __init__(self, host: MediaHost, cfg: InnerMedia, video: VideoEmitter, plan_of: Callable[[], Plan], *,
                 signaling: InnerSignaling | None = None, ask: AskFn | None = None) -> None:
        if cfg.mode == "on-demand" and ask is None:
            raise ValueError("[media] mode = \"on-demand\" needs the reverse lane ([reverse] on the inner agent); "
                             "without one, use mode = \"always-on\"")
        self.host = host
        self.plan_of = plan_of
        self.cfg = cfg
        self.video = video
        self.ask_fn = ask
        sip_host, sip_port = split_host_port(signaling.local if signaling is not None else cfg.listen)
        map_to_outer: Callable[[str], str | None] = lambda inner_id: inner_id     # noqa: E731
        allow = list(cfg.allow_from)
        if signaling is not None:
            map_to_outer = IdMap(signaling.id_map.table, signaling.id_map.prefix.items()).map_to_outer
            allow.append(split_host_port(signaling.platform)[0])
        self.lane = InnerMediaLane(MediaSettings(
            mode=cfg.mode, media_address=cfg.media_address, port_range=(cfg.port_min, cfg.port_max),
            invite_timeout=cfg.invite_timeout, max_viewers=cfg.max_viewers,
            max_viewers_per_device=cfg.max_viewers_per_device, linger=cfg.linger, sip_host=sip_host,
            sip_port=sip_port, allow_from=tuple(allow)), map_to_outer)
        self.endpoint: SipEndpoint | None = None
        self.send: Callable[[bytes, Peer], bool] = lambda data, peer: False
        if cfg.listen:
            self.endpoint = SipEndpoint("media", self.on_sip, self.on_refused, udp=cfg.listen, tcp=cfg.listen)
            self.send = self.endpoint.send
        video.on_viewer = self.on_viewer
        video.on_viewer_sink = self.on_viewer_sink
        self.timer = LaneTimer(self.lane.next_timer, self._on_timer)
        self.refused_messages = 0

    def set_sender(self, send: Callable[[bytes, Peer], bool]) -> None:
        """[signaling]'s glue hands its endpoint's send (`attach_media`)."""
        self.send = send

    def bind(self) -> None:
        if self.endpoint is not None:
            self.endpoint.bind()

    async def start(self) -> None:
        if self.endpoint is not None:
            await self.endpoint.start()
            log.info("media: SIP on udp/tcp %s, %s mode", self.cfg.listen, self.cfg.mode)

    async def stop(self) -> None:
        self._carry(self.lane.close(time.monotonic(), time.time()))
        self.timer.cancel()
        if self.endpoint is not None:
            await self.endpoint.stop()

    def counters(self) -> dict[str, int]:
        """`ferry status`: media_invites, _answered, _refused, _cancelled, _ended, _reaped, _dialogs, _viewers."""
        c = {**self.lane.counters, "dialogs": len(self.lane.dialogs), "viewers": len(self.video.viewer_sinks),
             "sip_refused": self.refused_messages}
        return {f"media_{k}": v for k, v in c.items()}

    # -- SIP in ---------------------------------------------------------------------------------------
    def on_sip(self, msg: SipMessage, peer: Peer) -> None:
        if not isinstance(msg, (SipRequest, SipResponse)):
            return                    # a TCP keep-alive (CRLFCRLF) the endpoint passed on
        if self.endpoint is not None and isinstance(msg, SipRequest) and msg.method not in METHODS:
            data = _method_not_allowed(msg)
            if data:
                self.send(data, peer)
            return
        self._carry(self.lane.on_sip(msg, peer, self.plan_of(), time.monotonic(), time.time()))

    def on_refused(self, peer: Peer, reason: str, size: int) -> None:
        self.refused_messages += 1
        log.info("media: SIP from %s refused (%d bytes): %s", peer, size, reason)

    # -- viewers --------------------------------------------------------------------------------------
    def on_viewer(self, event: ViewerStarted | ViewerLost) -> None:
        now, wall = time.monotonic(), time.time()
        if isinstance(event, ViewerStarted):
            self._carry(self.lane.viewer_started(event.viewer, event.stream_id, now, wall))
        else:
            self._carry(self.lane.viewer_lost(event.viewer, event.why, now, wall))

    def on_viewer_sink(self, viewer: str, kind: str, why: str) -> None:
        """The viewer's sink found it dead: "unreachable" (a UDP send refused by ICMP) or "closed" (TCP)."""
        now, wall = time.monotonic(), time.time()
        if kind == "unreachable":
            work = self.lane.viewer_unreachable(viewer, why, now, wall)
        else:
            work = self.lane.viewer_closed(viewer, why, now, wall)
        if work:
            self._carry(work)

    def platform_gone(self, host: str, why: str) -> None:
        """[signaling] lost the platform at `host` (keepalives unanswered, or its registration ended)."""
        self._carry(self.lane.platform_gone(host, why, time.monotonic(), time.time()))

    # -- work -----------------------------------------------------------------------------------------
    def _carry(self, work: list[MediaWork]) -> None:
        more: list[MediaWork] = []
        for w in work:
            if isinstance(w, SendSip):
                if not self.send(w.data, w.peer):
                    log.info("media: SIP to %s not sent", w.peer)
            elif isinstance(w, StartViewer):
                why = self.video.add_viewer(w.viewer, w.device_id, w.address, w.ssrc, w.transport, w.setup,
                                            (self.cfg.media_address, w.local_port))
                if why is not None:
                    more += self.lane.viewer_failed(w.viewer, why, time.monotonic(), time.time(),
                                                    port_taken=isinstance(why, PortTaken))
            elif isinstance(w, StopViewer):
                self.video.remove_viewer(w.viewer)
            elif isinstance(w, Ask):
                more += self._ask(w)
            elif isinstance(w, AuditIntent):
                self.host.audit(**w.fields)
                f = w.fields
                log.info("media %s %s: %s", f["event"], f.get("flow", ""), f.get("reason", ""))
        if more:
            self._carry(more)
        self.timer.arm()

    def _ask(self, w: Ask) -> list[MediaWork]:
        assert self.ask_fn is not None
        try:
            accepted, code, reason = self.ask_fn(w.request, w.device_id, w.params, w.operator, address=w.address,
                                                 platform_id=w.platform_id)
        except Exception as exc:      # the reverse lane's own failure: the INVITE gets its answer anyway
            log.exception("media: reverse %s for %s failed", w.request, w.device_id)
            accepted, code, reason = False, "internal_error", f"reverse request failed: {exc}"
        if not w.key:
            return []
        return self.lane.asked(w.key, accepted, code, reason, time.monotonic(), time.time())

    def _on_timer(self, now: float) -> None:
        self._carry(self.lane.handle_timer(now, time.time()))


def _method_not_allowed(msg: Any) -> bytes:
    """405 for a request this endpoint does not take (only [media]'s own endpoint: no [signaling])."""
    if msg.method == "ACK":
        return b""
    try:
        return response_to(msg, 405, "Method Not Allowed", [("Allow", "INVITE, ACK, BYE, CANCEL")], to_tag=new_tag())
    except SipError:
        return b""
