"""The outer agent's SIP glue (issue 13 "sig-outer"): owns the outer `SipEndpoint` (UDP and/or
TCP on ``[signaling]`` listen_udp / listen_tcp) and carries out what the pure
``ferry.lanes.signaling.outer.OuterSignalingLane`` makes of each message: SIP to send, audit
records, canonical objects to seal. Only I/O, clocks and timers live here.

Dispatch (the issue 13 contract): requests INVITE, ACK, BYE, CANCEL, INFO and responses whose
CSeq method is INVITE or BYE go to the media part when one is attached (`attach_media(media)`:
``media.on_sip(msg, peer)``; the glue gives it ``send(data, peer)``); everything else is the
lane's. Without a media part the lane answers INVITE 403 ("on-demand video not configured").

No audit, no transfer: while the outer agent's trail cannot be written, messages are not taken
(counted ``held``; UDP devices retransmit). Signaling objects are gathered for
SIGNALING_SUBMIT_DELAY, then submitted, sealed, their ``object_sent`` records written (with the
blocks that carry them), and only then handed to the link writer.

Passwords come from ``[[signaling.device]]`` password or password_file (its first line; the file
must not be readable by other users, like the agent's key); they stay in this process's memory
and never reach a record, a log line or an object.
"""
from __future__ import annotations

import asyncio
import logging
import os
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from ferry import limits
from ferry.agents.lane_timer import LaneTimer
from ferry.agents.sip_endpoint import Peer, SipEndpoint, SipMessage
from ferry.codecs.sip import SipRequest, SipResponse
from ferry.config import ConfigError, OuterSignaling, split_host_port
from ferry.lanes.sent import SentRecords
from ferry.durable import replace_durably
from ferry.lanes.signaling.outer import OuterSignalingLane, SendSip, Settings, is_media
from ferry.lanes.signaling.registrations import Saved, decode, encode, snapshot
from ferry.lanes.signaling.registry import Registry
from ferry.lanes.work import AuditIntent, ObjectIds, SealObject
from ferry.policy import Plan
from ferry.wire.events import BlockSealed

log = logging.getLogger("ferry.signaling")

REGISTRATIONS_FILE = "sip-registrations"      # in the agent's state_dir


class SignalingHost(Protocol):
    """What the SIP glue needs of the outer agent."""

    def seal(self, obj: Any, wall: float) -> None: ...

    def seal_and_record(self, records: Callable[[], list[AuditIntent]], wall: float) -> None: ...

    def audit(self, **fields: Any) -> object: ...

    def audit_available(self) -> bool: ...


class MediaPart(Protocol):
    def on_sip(self, msg: SipMessage, peer: Peer) -> None: ...


def read_passwords(cfg: OuterSignaling) -> dict[str, str]:
    """Device ID -> password; a password file must exist, be private (no group/other access) and
    hold one non-empty line. ConfigError names the file and the key."""
    out: dict[str, str] = {}
    for i, d in enumerate(cfg.device):
        if d.password:
            out[d.id] = d.password
            continue
        path = Path(d.password_file)
        where = f"{path} ([[signaling.device]] {i + 1} password_file, device {d.id})"
        try:
            st = os.stat(path)
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"{where}: cannot read: {getattr(e, 'strerror', None) or e}") from None
        if st.st_mode & 0o077:
            raise ConfigError(f"{where}: mode {stat.S_IMODE(st.st_mode):04o} lets other users read or change "
                              f"the password; fix: chmod 600 {path}")
        password = text.splitlines()[0].strip() if text.strip() else ""
        if not password or len(password) > 128:
            raise ConfigError(f"{where}: expected the password on its first line (1-128 characters)")
        out[d.id] = password
    return out


def settings_from(cfg: OuterSignaling, passwords: dict[str, str],
                  local: dict[str, tuple[str, int]] | None = None) -> Settings:
    timeout = cfg.keepalive_timeout or limits.SIGNALING_KEEPALIVE_MISSED * cfg.keepalive_interval
    return Settings(server_id=cfg.server_id, realm=cfg.realm, destination=cfg.destination, passwords=passwords,
                    source=cfg.source, keepalive_timeout=timeout, register_expires_min=cfg.register_expires_min,
                    register_expires_max=cfg.register_expires_max, catalog_query=cfg.catalog_query,
                    catalog_retry=cfg.catalog_retry,
                    local=local or {})


class SipOuter:
    """The outer agent's SIP side: endpoint, lane, timer, the objects' records."""

    def __init__(self, cfg: OuterSignaling, host: SignalingHost, plan: Callable[[], Plan], ids: ObjectIds,
                 state_dir: Path | None = None) -> None:
        self.cfg = cfg
        self.host = host
        self.plan = plan
        self._passwords = read_passwords(cfg)
        self.endpoint = SipEndpoint("signaling", self._on_message, self._on_refused,
                                    udp=cfg.listen_udp, tcp=cfg.listen_tcp)
        self.lane = OuterSignalingLane(settings_from(cfg, self._passwords), ids)
        self.timer = LaneTimer(self.lane.next_timer, self._on_timer)
        self.media: MediaPart | None = None
        self.sent: SentRecords[None] = SentRecords()
        self._pending: list[SealObject] = []
        self._flush_handle: asyncio.TimerHandle | None = None
        self.stats = {"held": 0, "send_failed": 0}
        # the registrations kept across restarts (None: not kept; tests of the glue alone)
        self.state_path = state_dir / REGISTRATIONS_FILE if state_dir is not None else None
        self._saved_changes = 0
        self._saving: asyncio.Task[None] | None = None

    @property
    def registry(self) -> Registry:
        """The registered devices (``contact(device_id)``, ``online(device_id)``) for the media part."""
        return self.lane.registry

    def attach_media(self, media: Any) -> None:
        """The media part (INVITE dialogs) takes its messages from now on and sends through us."""
        self.media = media
        media.send = self.send

    def send(self, data: bytes, peer: Peer) -> bool:
        ok = self.endpoint.send(data, peer)
        if not ok:
            self.stats["send_failed"] += 1
        return ok

    # -- life cycle -------------------------------------------------------------------------------
    def bind(self) -> None:
        """Bind the SIP sockets now (an error names the address); Via carries the bound addresses."""
        self.endpoint.bind()
        local: dict[str, tuple[str, int]] = {}
        for transport, listen, bound in (("udp", self.cfg.listen_udp, self.endpoint.udp_address),
                                         ("tcp", self.cfg.listen_tcp, self.endpoint.tcp_address)):
            if listen and bound is not None:
                local[transport] = (split_host_port(listen)[0], int(bound[1]))
        self.lane.settings = settings_from(self.cfg, self._passwords, local)

    async def start(self) -> None:
        self._restore()
        if self.state_path is not None:
            self._saving = asyncio.ensure_future(self._keep_registrations())
        await self.endpoint.start()
        udp, tcp = self.endpoint.udp_address, self.endpoint.tcp_address
        log.info("signaling: SIP server %s realm %s on %s%s, %d device(s) configured", self.cfg.server_id,
                 self.cfg.realm, f"udp {udp[0]}:{udp[1]} " if udp else "", f"tcp {tcp[0]}:{tcp[1]}" if tcp else "",
                 len(self._passwords))
        self.timer.arm()

    async def stop(self) -> None:
        self.timer.cancel()
        self.carry(self.lane.flush(time.monotonic()), time.time())
        if self._flush_handle is not None:
            self._flush_handle.cancel()
        self._flush()
        await self.endpoint.stop()
        if self._saving is not None:
            self._saving.cancel()
            await asyncio.gather(self._saving, return_exceptions=True)
            self._save_now()

    # -- the registrations across restarts --------------------------------------------------------
    def _restore(self) -> None:
        """Take back the devices the last run left online (before any SIP is read)."""
        if self.state_path is None:
            return
        saved: list[Saved] = []
        problem: str | None
        try:
            data = self.state_path.read_bytes()
        except FileNotFoundError:
            return
        except OSError as e:
            problem = f"cannot be read: {e.strerror or e}"
        else:
            saved, problem = decode(data)
        now, wall = time.monotonic(), time.time()
        if problem is not None:
            why = (f"{self.state_path}: {problem}; no device is known until it registers again "
                   "(their MESSAGEs are refused not_registered meanwhile)")
            log.warning("signaling: %s", why)
            self.host.audit(event="signaling_state_problem", verdict="alarm", lane="signaling", reason=why)
            return
        self.carry(self.lane.restore(saved, lambda t, h, p: Peer(t, h, p), self.plan(), now, wall), wall)
        self._saved_changes = self.registry.changes

    async def _keep_registrations(self) -> None:
        """Write the registrations when they changed, at most every SIGNALING_STATE_SAVE_INTERVAL:
        a snapshot on the loop (10,000 devices: ~15 ms), the encoding and the write (two fsyncs)
        in a thread; a failed write is logged and tried again."""
        assert self.state_path is not None
        while True:
            await asyncio.sleep(limits.SIGNALING_STATE_SAVE_INTERVAL)
            changes = self.registry.changes
            if changes == self._saved_changes:
                continue
            rows = snapshot(self.registry, time.monotonic(), time.time())
            try:
                await asyncio.to_thread(lambda: replace_durably(self.state_path, encode(rows)))  # type: ignore[arg-type]
            except OSError as e:
                log.error("signaling: cannot write %s: %s (tried again in %g s)", self.state_path, e,
                          limits.SIGNALING_STATE_SAVE_INTERVAL)
                continue
            self._saved_changes = changes

    def _save_now(self) -> None:
        if self.state_path is None or self.registry.changes == self._saved_changes:
            return
        try:
            replace_durably(self.state_path, encode(snapshot(self.registry, time.monotonic(), time.time())))
            self._saved_changes = self.registry.changes
        except OSError as e:
            log.error("signaling: cannot write %s: %s", self.state_path, e)

    # -- the endpoint's callbacks ---------------------------------------------------------------
    def _on_message(self, msg: SipMessage, peer: Peer) -> None:
        if not isinstance(msg, (SipRequest, SipResponse)):
            return      # an RFC 5626 keep-alive ping on a TCP connection: nothing to take
        if self.media is not None and is_media(msg):
            self.media.on_sip(msg, peer)
            return
        if not self.host.audit_available():
            self.stats["held"] += 1      # no audit, no transfer: not taken (a device retransmits)
            return
        now, wall = time.monotonic(), time.time()
        self.carry(self.lane.on_message(msg, peer, self.plan(), now, wall), wall)

    def _on_refused(self, peer: Peer, reason: str, size: int) -> None:
        now, wall = time.monotonic(), time.time()
        log.debug("signaling: refused SIP from %s: %s", peer, reason)
        self.carry(self.lane.on_refused(peer, reason, size, now, wall), wall)

    def _on_timer(self, now: float) -> None:
        self.carry(self.lane.handle_timer(self.plan(), now, time.time()), time.time())

    # -- carrying out ------------------------------------------------------------------------------
    def carry(self, work: list[Any], wall: float) -> None:
        for w in work:
            if isinstance(w, SendSip):
                self.send(w.data, w.peer)
            elif isinstance(w, SealObject):
                self._pending.append(w)
            elif isinstance(w, AuditIntent):
                self.host.audit(**w.fields)
                f = w.fields
                if f["verdict"] == "refused":
                    log.info("signaling refused (%s) from %s: %s", f.get("code"), f.get("source", {}).get("address"),
                             f.get("reason"))
                else:
                    log.info("signaling %s: %s", f["event"], f.get("reason"))
        if self._pending and self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_later(limits.SIGNALING_SUBMIT_DELAY, self._flush)
        self.timer.arm()

    def _flush(self) -> None:
        """Seal what was gathered, write its object_sent records (with their blocks), then let it go."""
        self._flush_handle = None
        pending, self._pending = self._pending, []
        if not pending:
            return
        wall = time.time()
        if not self.host.audit_available():
            self.stats["held"] += len(pending)
            return
        for w in pending:
            self.host.seal(w.obj, wall)
            self.sent.add(w, None)
        self.host.seal_and_record(lambda: [c.record for c in self.sent.complete()], wall)

    def block_sealed(self, e: BlockSealed) -> None:
        self.sent.block_sealed(e)

    # -- status -------------------------------------------------------------------------------------
    def counters(self) -> dict[str, int]:
        c = self.lane.counters
        return {"sip_devices_registered": len(self.registry), "sip_devices_online": self.registry.online_count(),
                "sip_messages": c["messages"], "sip_objects": c["sealed"], "sip_refused": c["refused"],
                "sip_held": self.stats["held"],
                # UDP retransmissions: answered again from the kept answer, or dropped as copies of a
                # request still waiting to be handled (sip_endpoint's module docstring)
                "sip_retransmissions": self.endpoint.counters["retransmissions"],
                "sip_retransmissions_waiting": self.endpoint.counters["retransmissions_waiting"]}

    def lane_counters(self) -> dict[str, int]:
        """The signaling lane's line in `ferry status` (sent/refused named as the other lanes')."""
        c = self.lane.counters
        return {"sent": c["sealed"], "refused": c["refused"], "messages": c["messages"],
                "devices_registered": len(self.registry), "devices_online": self.registry.online_count()}

    def flows(self) -> list[dict[str, Any]]:
        """The devices known to the registry, for `ferry flows`."""
        now = time.monotonic()
        return [{"device_id": d.device_id, "state": "online" if d.online else "offline",
                 "peer": str(d.peer), "messages": d.messages, "keepalives": d.keepalives,
                 "channels": len(d.catalog), "expires_in": max(0, int(d.expires_at - now)) if d.online else 0}
                for d in self.registry]
