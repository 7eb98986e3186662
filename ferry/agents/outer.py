"""The outer agent: spool ingest -> policy -> canonical object -> sealed link.

Everything here is I/O and sequencing; the decisions come from the pure core
(``ferry.lanes.files``, ``ferry.policy``, ``ferry.wire``).

No audit, no transfer: a sealed block leaves only after the audit records of
the objects in it are written. While the trail cannot be written, datagrams
are held, the spool is not read, and the agent retries until it can.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from ferry import limits
from ferry.agents.common import Identity, apply_kernel_rules, open_identity, run_agent
from ferry.policy.ratelimit import RateLimiter
from ferry.agents.kernel_rules import kernel_rules_for
from ferry.agents.config import OuterConfig
from ferry.agents.link_io import LinkSendSocket
from ferry.agents.pacing import Pacer
from ferry.agents.link_writer import LinkWriter, defer
from ferry.agents.spool import SpoolWatcher, move_aside, read_whole_file
from ferry.agents.video_ingest import VideoIngest
from ferry.lanes.work import ObjectIds
from ferry.audit import AuditUnavailable
from ferry.lanes import files as files_lane
from ferry.wire import LinkSender
from ferry.wire.events import BlockSealed, KeyAnnounced, KeyRotated

log = logging.getLogger("ferry.outer")

BUILTIN_RULE = "ferry-files-lane"     # refusals by the lane's hard rules, before the policy


@dataclass
class _Pending:
    """An object submitted to the link whose audit record is not written yet."""
    object_id: int
    fields: dict
    spool_path: Path
    blocks: list[int] = field(default_factory=list)
    epoch: int = 0


class LinkPump:
    """The sender state machine on the loop (timers, collecting what it made) and its writer
    thread (sealing, pacing, sending). While the audit trail is down (`held`) nothing more is
    handed to the writer: it waits in `outbox`."""

    def __init__(self, sender: LinkSender, sock: LinkSendSocket, rate_bytes: float, now: float,
                 on_events=None) -> None:
        self.sender = sender
        self.on_events = on_events
        self.sock = sock
        # A burst covers what one object seals into (the sender seals whole objects
        # at once); the average stays at the configured rate.
        self.writer = LinkWriter(sock, Pacer(rate_bytes, burst=max(1 << 20, int(rate_bytes * 0.02)), now=now))
        self.outbox: deque = deque()   # made while held
        self.held = False              # True while the audit trail cannot be written
        self.wake = asyncio.Event()
        self._sealed_bytes = 0

    def collect(self, now: float) -> None:
        self.outbox.extend(self.sender.datagrams_to_send(now))
        if self.outbox and not self.held:
            self.writer.put(self.outbox)
            self.outbox = deque()
        self._count()

    def backlog(self) -> int:
        """Datagrams and blocks made but not sent yet."""
        return len(self.outbox) + self.writer.backlog()

    def _count(self) -> None:
        sealed = self.writer.sealed_bytes
        if sealed != self._sealed_bytes:
            self.sender.sealed(sealed - self._sealed_bytes)
            self._sealed_bytes = sealed

    async def drain(self) -> None:
        """Stopping: everything made goes out (unless held), then the writer ends."""
        if not self.held:
            self.writer.put(self.outbox)
            self.outbox = deque()
        await asyncio.to_thread(self.writer.close)
        self._count()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            if self.writer.error is not None:
                log.error("link writer failed: %s; stopping the agent", self.writer.error)
                stop.set()
                return
            now = time.time()
            timer = self.sender.get_timer()
            if timer is not None and timer <= now:
                self.sender.handle_timer(now)
                if self.on_events:
                    self.on_events()
            self.collect(now)
            timer = self.sender.get_timer()
            timeout = 0.2 if timer is None else max(0.0, min(0.2, timer - time.time()))
            self.wake.clear()
            try:
                await asyncio.wait_for(self.wake.wait(), timeout)
            except asyncio.TimeoutError:
                pass


class OuterAgent:
    role = "outer"

    def __init__(self, cfg: OuterConfig) -> None:
        self.cfg = cfg
        self.id: Identity = open_identity(cfg.agent, "outer", cfg.management)
        self.kernel = kernel_rules_for(cfg, "outer")
        self._limiter: RateLimiter | None = None
        now = time.time()
        self.started_at = now
        self.run_id = int(now) & 0xFFFFFFFF
        link = cfg.link
        # blocks are sealed by the link writer thread, beside the loop (sealer=defer)
        self.sender = LinkSender(outer_key=self.id.key, inner_public=self.id.peer,
                                 policy_hash=self.id.plan.hash, name=cfg.agent.name, now=now,
                                 k=link.fec_k, m=link.fec_m, datagram_max=link.datagram_max,
                                 sealer=defer)
        # cameras' ports first: the link socket's ephemeral port can then never be one of them
        self.ids = ObjectIds(self.run_id)
        self.video = VideoIngest(list(cfg.video), self, lambda: self.id.plan, self.ids) if cfg.video else None
        if self.video:
            self.video.bind()
        self.sock = LinkSendSocket((link.peer_host, link.peer_port), bind_host=link.bind_host,
                                   interface=link.interface, sndbuf=link.sndbuf, gso=link.gso == "auto")
        self.pump = LinkPump(self.sender, self.sock, link.rate_mbps * 1e6 / 8, time.monotonic(),
                             on_events=self.sender_events)
        self.pending: list[_Pending] = []      # submitted, audit not yet written
        self.backlog: deque[dict] = deque()     # audit records waiting for the trail to come back
        self.watcher = SpoolWatcher(Path(cfg.files.spool), cfg.files.settle) if cfg.files else None
        self.stats = {"sent": 0, "refused": 0, "policy_reloads": 0}

    # -- audit ---------------------------------------------------------------
    def _base(self) -> dict:
        return {"policy_hash": self.id.plan.hash.hex()}

    def audit(self, **fields) -> bool:
        """Queue a record and write everything queued; False while the trail is down."""
        self.backlog.append({**self._base(), **{k: v for k, v in fields.items() if v is not None}})
        return self.flush_audit()

    def flush_audit(self) -> bool:
        while self.backlog:
            try:
                self.id.audit.append(time.time(), **self.backlog[0])
            except AuditUnavailable as e:
                if not self.pump.held:
                    log.error("audit trail unavailable (%s): lane stopped until it can be written", e)
                self.pump.held = True
                return False
            self.backlog.popleft()
        if self.pump.held:
            log.warning("audit trail writable again: lane resumed")
            self.pump.held = False
            self.pump.wake.set()
        return True

    # -- files lane ------------------------------------------------------------
    def next_object_id(self) -> int:
        return self.ids.next()

    # -- video lane (ferry.agents.video_ingest.IngestHost) ---------------------
    def seal(self, obj, wall: float) -> None:
        self.sender.submit(obj.object_id, obj.SerializeToString(), wall)

    def flush_link(self, wall: float) -> None:
        self.sender.flush(wall)
        self.sender_events()
        self.pump.collect(wall)

    def _refuse(self, entry_path: Path, name: str, size: int, rule: str, reason: str,
                object_id: int | None = None, sm3: str | None = None, media_type: str | None = None,
                policy_hash: bytes | None = None) -> None:
        fields = dict(event="object_refused", verdict="refused", lane="files",
                      source={"name": self.cfg.files.source, "address": str(entry_path)},
                      destination=self.cfg.files.destination, object_type="file", size=size,
                      rule=rule, reason=reason, detail={"name": name, "media_type": media_type})
        if object_id is not None:
            fields["object_id"] = object_id
        if sm3:
            fields["sm3"] = sm3
        if policy_hash is not None:
            fields["policy_hash"] = policy_hash.hex()
        self.audit(**fields)
        try:
            move_aside(entry_path, Path(self.cfg.files.refused_dir))
        except OSError as e:
            log.error("cannot move refused %s aside: %s", entry_path, e)
        self.stats["refused"] += 1
        log.info("refused %s: %s: %s", name, rule, reason)

    def take_file(self, entry, now: float) -> None:
        files = self.cfg.files
        name = entry.name
        if not entry.regular:
            self._refuse(entry.path, name, entry.size, BUILTIN_RULE, f"not a regular file ({entry.kind})")
            return
        bad = files_lane.check_file_name(name)
        if bad:
            self._refuse(entry.path, name, entry.size, BUILTIN_RULE, bad)
            return
        try:
            content = read_whole_file(entry.path, limits.FILE_MAX)
        except OSError as e:
            self._refuse(entry.path, name, entry.size, BUILTIN_RULE, f"cannot read: {e}")
            return
        if content is None:
            self._refuse(entry.path, name, entry.size, BUILTIN_RULE,
                         f"size {entry.size} exceeds the appliance limit {limits.FILE_MAX}")
            return
        oid = self.next_object_id()
        obj = files_lane.make_file_object(object_id=oid, name=name, content=content, source=files.source,
                                          destination=files.destination, now=now)
        plan = self.id.plan          # read once: a reload between two objects never splits one
        decision = self.rate_limiter(plan).check(plan.decide(obj), obj, now)
        f = obj.file
        if not decision.allowed:
            self._refuse(entry.path, name, len(content), decision.rule, decision.reason, oid, f.sm3.hex(),
                         f.media_type, plan.hash)
            return
        obj.rule = decision.rule
        self.sender.submit(oid, obj.SerializeToString(), now)
        self.pending.append(_Pending(oid, dict(
            event="object_sent", verdict="sent", lane="files",
            source={"name": files.source, "address": str(entry.path)}, destination=files.destination,
            object_type="file", size=len(content), rule=decision.rule, reason=decision.reason,
            object_id=oid, sm3=f.sm3.hex(), detail={"name": name, "media_type": f.media_type},
            policy_hash=plan.hash.hex()), entry.path))

    def settle_pending(self, now: float) -> None:
        """Seal what was submitted, tie objects to blocks, write their records."""
        self.sender.flush(now)
        self.sender_events()
        for p in self.pending:
            self.audit(**p.fields, epoch=p.epoch, blocks=p.blocks)
            try:
                p.spool_path.unlink()
            except OSError as e:
                log.error("cannot remove sent file %s: %s", p.spool_path, e)
            self.watcher.forget(p.spool_path.name)
            self.stats["sent"] += 1
            log.info("sent %s (object %d, blocks %s)", p.spool_path.name, p.object_id,
                     f"{p.blocks[0]}-{p.blocks[-1]}" if p.blocks else "-")
        self.pending.clear()
        self.pump.collect(now)

    def sender_events(self) -> None:
        """Tie sealed blocks to pending objects; audit key announcements."""
        by_id = {p.object_id: p for p in self.pending}
        while (ev := self.sender.next_event()) is not None:
            if isinstance(ev, BlockSealed):
                for oid in ev.object_ids:
                    p = by_id.get(oid)
                    if p is not None:
                        p.blocks.append(ev.block_no)
                        p.epoch = ev.epoch
            elif isinstance(ev, KeyAnnounced):
                self.audit(event="key_announced", verdict="info", epoch=ev.epoch,
                           reason="SM4 session key announced to the inner agent")
            elif isinstance(ev, KeyRotated):
                self.audit(event="key_announced", verdict="info", epoch=ev.epoch,
                           reason=f"key rotated: {ev.reason}")

    async def spool_loop(self, stop: asyncio.Event) -> None:
        files = self.cfg.files
        while not stop.is_set():
            now = time.time()
            if self.pump.held:
                self.flush_audit()
            elif self.pump.backlog() < 4096:
                for entry in self.watcher.scan(now):
                    self.take_file(entry, now)
                    if self.pump.held:
                        break
                if self.pending:
                    self.settle_pending(now)
            try:
                await asyncio.wait_for(stop.wait(), files.scan_interval)
            except asyncio.TimeoutError:
                pass

    # -- management (ferry.mgmt.server) ------------------------------------------------
    def rate_limiter(self, plan) -> RateLimiter:
        """Per-source token buckets of the rules of ``plan`` (new buckets after a reload)."""
        if self._limiter is None or self._limiter.plan is not plan:
            self._limiter = RateLimiter(plan)
        return self._limiter

    def policy_swapped(self, old, new, now: float) -> None:
        """A new plan is in place: announce its hash to the inner agent right away."""
        self.stats["policy_reloads"] += 1
        self.sender.set_policy_hash(new.hash, now)
        self.pump.collect(now)

    def audit_available(self) -> bool:
        return not self.pump.held

    def status_counters(self) -> dict[str, int]:
        c = self.sender.counters
        video = self.video.stats if self.video else {}
        return {**self.stats, **video, "blocks": c.blocks, "datagrams": c.datagrams, "bytes": c.bytes,
                "objects": c.objects, "epoch": c.epoch, "outbox": self.pump.backlog(), "send_errors": self.pump.writer.errors}

    # -- life cycle -------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> int:
        mgmt = self.cfg.management
        server = None
        if mgmt is not None and mgmt.socket:
            from ferry.mgmt.server import ManagementService, start_server   # grpc only when configured

            server = await start_server(mgmt.socket, ManagementService(self))
        self.audit(event="agent_started", verdict="info", reason=f"outer agent {self.cfg.agent.name} started",
                   detail={"peer": f"{self.cfg.link.peer_host}:{self.cfg.link.peer_port}",
                           "gso": self.sock.gso, "rate_mbps": self.cfg.link.rate_mbps})
        self.audit(event="policy_loaded", verdict="info", reason=f"policy {self.id.plan.name} loaded")
        if self.kernel is not None:
            apply_kernel_rules(self)
        log.info("outer agent %s: policy %s (%s), link to %s:%d, gso=%s", self.cfg.agent.name,
                 self.id.plan.name, self.id.plan.hash.hex()[:16], self.cfg.link.peer_host,
                 self.cfg.link.peer_port, self.sock.gso)
        tasks = [asyncio.create_task(self.pump.run(stop))]
        if self.watcher:
            tasks.append(asyncio.create_task(self.spool_loop(stop)))
        if self.video:
            await self.video.start(stop)
        await stop.wait()
        if self.video:
            await self.video.stop()     # ends every stream: their last access units and records
        if server is not None:
            from ferry.mgmt.server import stop_server

            await stop_server(server, mgmt.socket)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # final flush: what is sealed goes out, then a last heartbeat
        now = time.time()
        self.sender.flush(now)
        self.pump.collect(now)
        await self.pump.drain()
        failed = self.pump.writer.error
        if failed is not None:
            self.audit(event="link_writer_failed", verdict="alarm",
                       reason=f"link writer failed: {type(failed).__name__}: {failed}")
        self.audit(event="agent_stopped", verdict="info", reason="outer agent stopped",
                   detail=dict(self.stats))
        self.id.audit.close(time.time())
        self.sock.close()
        return 1 if failed is not None else 0


def main(cfg: OuterConfig) -> int:
    return run_agent(OuterAgent, cfg)
