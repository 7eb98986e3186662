"""The inner agent's SIP glue: ferry as a lower-level platform of the inner GB/T 28181 platform.

Shell only. It owns the inner `SipEndpoint` (UDP or TCP, `[signaling] local`), reads the password
(``password_file``: mode 0600 or stricter), and carries out the work of the pure lane
(ferry/lanes/signaling/inner.py): `SendSip` goes out on the endpoint, `AuditIntent` to the agent's
trail. One timer task calls the lane's `handle_timer` at its `next_timer()`.

For the dispatcher (ferry/lanes/inner.py) it is the signaling lane: `deliver(obj, decision, now,
wall, epoch=, blocks=)` hands an allowed signaling object to the lane, sends what it builds, and
returns the audit intents.

Dispatch between the parts (issue 13's shared contract): requests INVITE, ACK, BYE, CANCEL and
INFO, and responses whose CSeq method is INVITE or BYE, go to the media part if one is attached
(`attach_media(media)`: media gets `media.on_sip(msg, peer)`; it sends with `SipInner.send(data,
peer)`, which `attach_media` also hands it as `media.set_sender(send)` when it has that method;
the lane's `PlatformGone` becomes `media.platform_gone(platform host, why)` when it has that method);
everything else is the lane's. Without a media part the lane refuses INVITE with 403 and the Warning
"on-demand video not configured".
"""
from __future__ import annotations

import asyncio
import logging
import stat
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

from ferry import limits
from ferry.agents.sip_endpoint import Peer, SipEndpoint, SipMessage
from ferry.codecs.sip import SipResponse
from ferry.config import ConfigError, InnerSignaling, split_host_port
from ferry.lanes.signaling.ids import IdMap
from ferry.lanes.signaling.inner import MEDIA_METHODS, InnerSignalingLane, PlatformGone, SendSip, Settings
from ferry.lanes.work import AuditIntent
from ferry.pb import ferry_pb2
from ferry.policy.plan import Decision
from ferry.reasons import Reason

log = logging.getLogger("ferry.sip.inner")
MEDIA_RESPONSES = frozenset({"INVITE", "BYE"})


class MediaPart(Protocol):
    def on_sip(self, msg: SipMessage, peer: Peer) -> None: ...


def read_password(cfg: InnerSignaling) -> str:
    """``password``, or the first line of ``password_file`` (refused unless only its owner may read it)."""
    if not cfg.password_file:
        return cfg.password
    path = Path(cfg.password_file)
    try:
        st = path.stat()
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path} ([signaling] password_file): cannot read: {err}") from None
    if st.st_mode & 0o077:
        raise ConfigError(f"{path} ([signaling] password_file): mode {stat.S_IMODE(st.st_mode):04o} lets other users "
                          f"read or change the password; fix: chmod 600 {path}")
    password = text.split("\n", 1)[0].rstrip("\r")
    if not password or len(password) > 128:
        raise ConfigError(f"{path} ([signaling] password_file): the first line must hold the password "
                          "(1 to 128 characters)")
    return password


class SipInner:
    """``audit``: the agent's carry of audit intents (writes and counts them)."""

    def __init__(self, cfg: InnerSignaling, audit: Callable[[list[Any]], None]) -> None:
        self.cfg = cfg
        self.carry_audit = audit
        lhost, lport = split_host_port(cfg.local)
        phost, pport = split_host_port(cfg.platform)
        self.platform = Peer(cfg.transport, phost, pport)
        ids = IdMap(cfg.id_map.table, cfg.id_map.prefix.items())
        settings = Settings(local_host=lhost, local_port=lport, transport=cfg.transport, platform_host=phost,
                            platform_port=pport, platform_id=cfg.platform_id, platform_domain=cfg.platform_domain,
                            local_id=cfg.local_id, local_domain=cfg.local_domain, password=read_password(cfg),
                            register_expires=cfg.register_expires, keepalive_interval=cfg.keepalive_interval,
                            catalog_page_size=cfg.catalog_page_size)
        self.lane = InnerSignalingLane(settings, ids, self.platform, time.monotonic())
        self.endpoint = SipEndpoint("inner signaling", self.on_message, self.on_refused,
                                    udp=cfg.local if cfg.transport == "udp" else "",
                                    tcp=cfg.local if cfg.transport == "tcp" else "")
        self.media: MediaPart | None = None
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.send_failed = 0

    def bind(self) -> None:
        """Bind the SIP socket now (an error names the address): at agent start, before the loop."""
        self.endpoint.bind()

    # -- the media part -----------------------------------------------------------------------
    def attach_media(self, media: Any) -> None:
        self.media = media
        set_sender = getattr(media, "set_sender", None)
        if callable(set_sender):
            set_sender(self.send)

    def send(self, data: bytes, peer: Peer) -> bool:
        ok = self.endpoint.send(data, peer)
        if not ok:
            self.send_failed += 1
            log.warning("inner signaling: cannot send %d bytes to %s now", len(data), peer)
        return ok

    # -- work ---------------------------------------------------------------------------------
    def carry(self, work: Iterable[Any]) -> list[Any]:
        """Send what is to be sent; the audit intents come back (in order)."""
        audits: list[Any] = []
        for w in work:
            if isinstance(w, SendSip):
                self.send(w.data, w.peer)
            elif isinstance(w, AuditIntent):
                audits.append(w)
            elif isinstance(w, PlatformGone):
                gone = getattr(self.media, "platform_gone", None)
                if callable(gone):      # the media part ends the platform's video dialogs
                    gone(self.platform.host, w.why)
        self.wake.set()        # a new transaction or timer
        return audits

    def deliver(self, obj: ferry_pb2.CanonicalObject, decision: Decision, now: float, wall: float, *,
                epoch: int | None = None, blocks: Iterable[int] = ()) -> list[Any]:
        return self.carry(self.lane.deliver(obj, decision, now, wall, epoch=epoch, blocks=blocks))

    def on_message(self, msg: SipMessage, peer: Peer) -> None:
        if self.media is not None and self._is_media(msg):
            self.media.on_sip(msg, peer)
            return
        self.carry_audit(self.carry(self.lane.on_sip(msg, peer, time.monotonic(), time.time())))

    @staticmethod
    def _is_media(msg: SipMessage) -> bool:
        if isinstance(msg, SipResponse):
            try:
                return msg.cseq[1] in MEDIA_RESPONSES
            except ValueError:
                return False
        return msg.method in MEDIA_METHODS

    def on_refused(self, peer: Peer, reason: str, size: int) -> None:
        self.carry_audit(self.lane.refused(peer, reason, size, Reason.MALFORMED_SIP, time.monotonic()))

    # -- life cycle -----------------------------------------------------------------------------
    async def start(self, stop: asyncio.Event) -> None:
        await self.endpoint.start()
        log.info("inner signaling: %s %s, platform %s (%s), ferry's ID %s", self.cfg.transport, self.cfg.local,
                 self.cfg.platform, self.cfg.platform_id, self.cfg.local_id)
        self.carry_audit(self.carry(self.lane.start(time.monotonic(), time.time())))
        self.task = asyncio.create_task(self._timers(stop))

    async def _timers(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            now = time.monotonic()
            t = self.lane.next_timer()
            if t is not None and t <= now:
                self.carry_audit(self.carry(self.lane.handle_timer(now, time.time())))
                continue
            delay = limits.INNER_TIMER_MAX if t is None else min(limits.INNER_TIMER_MAX, max(0.005, t - now))
            self.wake.clear()
            try:
                await asyncio.wait_for(self.wake.wait(), delay)
            except asyncio.TimeoutError:
                pass

    async def stop(self) -> None:
        self.carry_audit(self.carry(self.lane.stop(time.monotonic(), time.time())))
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        await asyncio.sleep(0.05)     # the unregister leaves (a TCP write is flushed by the loop)
        await self.endpoint.stop()

    # -- status -------------------------------------------------------------------------------------
    def counters(self) -> dict[str, int]:
        st = self.lane.status()
        c = {f"sig_{k}": int(v) for k, v in st.items() if isinstance(v, (int, bool)) and k != "registered"}
        c["sig_registered"] = int(st["registered"])
        c["sig_registered_since"] = int(st["since"] or 0)
        c["sig_send_failed"] = self.send_failed
        for k, v in self.endpoint.counters.items():
            c[f"sig_sip_{k}"] = v
        return c
