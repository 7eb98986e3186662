"""The inner agent: sealed link -> open -> policy again -> fresh output.

It opens one UDP socket on the link, shut down for writing right after bind,
and never sends on it. Every object ends in exactly one audit record:
delivered, refused (rule and reason) or lost.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import deque
from pathlib import Path

from google.protobuf.message import DecodeError

from ferry import limits
from ferry.agents.common import Identity, apply_kernel_rules, open_identity, run_agent
from ferry.agents.kernel_rules import kernel_rules_for
from ferry.agents.config import InnerConfig
from ferry.agents.link_io import LinkReceiveSocket
from ferry.agents.spool import write_atomically
from ferry.agents.video_emit import VideoEmitter
from ferry.audit import AuditUnavailable
from ferry.lanes import files as files_lane
from ferry.pb import ferry_pb2
from ferry.wire import LinkReceiver
from ferry.wire import events as ev

log = logging.getLogger("ferry.inner")

READS_PER_WAKE = 64           # link reads (each up to a GRO batch of 64 KiB) per wake-up, at most
HELD_EVENTS_MAX = 10_000       # link events held while the audit trail is down
BACKLOG_MAX = 100_000          # audit records held while the trail is down


class InnerAgent:
    role = "inner"

    def __init__(self, cfg: InnerConfig) -> None:
        self.cfg = cfg
        self.id: Identity = open_identity(cfg.agent, "inner", cfg.management)
        self.kernel = kernel_rules_for(cfg, "inner")
        self.started_at = time.time()
        self.receiver = LinkReceiver(inner_key=self.id.key, outer_public=self.id.peer, now=time.time())
        link = cfg.link
        self.sock = LinkReceiveSocket((link.listen_host, link.listen_port), interface=link.interface,
                                      rcvbuf=link.rcvbuf, gro=link.gro == "auto")
        if not self.sock.check_receive_only():
            raise RuntimeError("the link socket is not receive-only; refusing to run")
        self.epoch_policy: dict[int, bytes] = {}
        self.mismatch_alarmed: set[tuple[int, bytes, bytes]] = set()   # (epoch, outer hash, inner hash)
        # After a reload, objects the outer agent sealed under the previous hash are
        # still taken (and re-decided under the new plan) until previous_until.
        self.previous_hash: bytes | None = None
        self.previous_until = 0.0
        self.backlog: list[dict] = []
        self.audit_down = False
        self.stats = {"delivered": 0, "refused": 0, "lost": 0, "policy_reloads": 0}
        self.held: deque = deque()
        self.overflow = 0
        self.video = VideoEmitter(self, list(cfg.video_output))

    # -- audit -------------------------------------------------------------------
    def audit(self, **fields) -> None:
        fields = {k: v for k, v in fields.items() if v is not None}
        fields.setdefault("policy_hash", self.id.plan.hash.hex())
        if len(self.backlog) >= BACKLOG_MAX:
            log.error("audit backlog full; dropping record %s", fields.get("event"))
            return
        self.backlog.append(fields)
        self.flush_audit()

    def flush_audit(self) -> bool:
        i = 0
        try:
            for i, rec in enumerate(self.backlog):
                self.id.audit.append(time.time(), **rec)
        except AuditUnavailable as e:
            del self.backlog[:i]
            if not self.audit_down:
                log.error("audit trail unavailable (%s): delivery stopped until it can be written", e)
            self.audit_down = True
            return False
        self.backlog.clear()
        if self.audit_down:
            log.warning("audit trail writable again: delivery resumed")
        self.audit_down = False
        return True

    # -- events from the link ----------------------------------------------------------
    def handle(self, e) -> None:
        if isinstance(e, ev.ObjectReceived):
            self.on_object(e)
        elif isinstance(e, ev.BlockLost):
            self.audit(event="block_lost", verdict="lost", epoch=e.epoch, blocks=[e.block_no], reason=e.reason)
        elif isinstance(e, ev.ObjectLost):
            self.stats["lost"] += 1
            self.audit(event="object_lost", verdict="lost", object_id=e.object_id, epoch=e.epoch,
                       blocks=list(e.blocks), reason=e.reason)
        elif isinstance(e, ev.KeyAccepted):
            self.epoch_policy[e.epoch] = e.policy_hash
            self.audit(event="key_accepted", verdict="info", epoch=e.epoch,
                       reason=f"key epoch {e.epoch} from {e.sender} accepted",
                       detail={"outer_policy_hash": e.policy_hash.hex(), "not_after": e.not_after})
            if not self.hash_accepted(e.policy_hash, self.id.plan, time.time()):
                self.alarm_mismatch(e.epoch, e.policy_hash, self.id.plan)
        elif isinstance(e, ev.AnnouncementRefused):
            self.audit(event="announcement_refused", verdict="refused", epoch=e.epoch, reason=e.reason)
        elif isinstance(e, ev.BlockRefused):
            self.audit(event="block_refused", verdict="refused", epoch=e.epoch, blocks=[e.block_no],
                       reason=e.reason)
        elif isinstance(e, ev.DatagramsDropped):
            self.audit(event="datagrams_dropped", verdict="refused", reason=e.reason,
                       detail={"count": e.count})
        elif isinstance(e, ev.LinkDown):
            self.audit(event="link_down", verdict="alarm", reason="no authenticated heartbeat from the outer agent",
                       detail={"since": e.since})
        elif isinstance(e, ev.LinkUp):
            self.audit(event="link_up", verdict="info", reason="authenticated heartbeats again")

    def refuse(self, obj, rule: str, reason: str, epoch: int, blocks) -> None:
        self.stats["refused"] += 1
        f = obj.file if obj is not None and obj.HasField("file") else None
        self.audit(event="object_refused", verdict="refused", lane=obj.lane if obj is not None else None,
                   object_id=obj.object_id if obj is not None else None, epoch=epoch, blocks=list(blocks),
                   rule=rule, reason=reason, object_type="file" if f is not None else None,
                   size=f.size if f is not None else None,
                   detail={"name": f.name} if f is not None else None)
        log.info("refused object %s: %s: %s", obj.object_id if obj is not None else "?", rule, reason)

    # -- policy hash agreement with the outer agent -------------------------------------
    def hash_accepted(self, outer_hash: bytes | None, plan, now: float) -> bool:
        """The outer agent's announced hash is ours, or our previous one within the reload grace."""
        if outer_hash == plan.hash:
            return True
        return outer_hash is not None and outer_hash == self.previous_hash and now < self.previous_until

    def alarm_mismatch(self, epoch: int, outer_hash: bytes | None, plan) -> None:
        key = (epoch, outer_hash or b"", plan.hash)
        if key in self.mismatch_alarmed:
            return
        self.mismatch_alarmed.add(key)
        shown = outer_hash.hex()[:16] if outer_hash else "unknown"
        self.audit(event="policy_mismatch", verdict="alarm", epoch=epoch, policy_hash=plan.hash.hex(),
                   reason=f"outer agent runs policy {shown}, inner runs {plan.hash.hex()[:16]}: "
                          "objects of this epoch are refused",
                   detail={"outer_policy_hash": outer_hash.hex() if outer_hash else None,
                           "inner_policy_hash": plan.hash.hex()})
        log.error("policy mismatch with the outer agent (epoch %d): lane stopped", epoch)

    def check_grace(self, now: float) -> None:
        """When the reload grace ends, alarm if the outer agent still runs the previous policy."""
        if self.previous_hash is None or now < self.previous_until:
            return
        plan = self.id.plan
        epoch = self.receiver.current_epoch
        if epoch is not None and self.epoch_policy.get(epoch) not in (None, plan.hash):
            self.alarm_mismatch(epoch, self.epoch_policy.get(epoch), plan)
        self.previous_hash = None

    # -- management (ferry.mgmt.server) --------------------------------------------------
    def policy_swapped(self, old, new, now: float) -> None:
        self.stats["policy_reloads"] += 1
        self.previous_hash = old.hash
        self.previous_until = now + limits.POLICY_RELOAD_GRACE

    def audit_available(self) -> bool:
        return not self.audit_down

    def status_counters(self) -> dict[str, int]:
        c = dataclasses.asdict(self.receiver.counters)
        return {**{k: v for k, v in c.items() if isinstance(v, int)}, **self.stats, **self.video.stats}

    # -- objects ---------------------------------------------------------------------
    def on_object(self, e: ev.ObjectReceived) -> None:
        obj = ferry_pb2.CanonicalObject()
        try:
            obj.ParseFromString(e.payload)
        except DecodeError as err:
            self.stats["refused"] += 1
            self.audit(event="object_refused", verdict="refused", object_id=e.object_id, epoch=e.epoch,
                       blocks=list(e.blocks), rule="ferry-canonical", reason=f"malformed canonical object: {err}")
            return
        if obj.object_id != e.object_id:
            self.refuse(obj, "ferry-canonical", f"object id {obj.object_id} differs from its link id {e.object_id}",
                        e.epoch, e.blocks)
            return
        plan = self.id.plan          # read once: a reload between two objects never splits one
        outer_hash = self.epoch_policy.get(e.epoch)
        now = time.time()
        video = obj.lane == "video" and (obj.HasField("access_unit") or obj.HasField("audio"))
        if not self.hash_accepted(outer_hash, plan, now):
            self.alarm_mismatch(e.epoch, outer_hash, plan)
            if video:                # accounted per stream, not per access unit
                self.stats["refused"] += 1
                self.video.refuse(obj, "policy-hash", "outer and inner agents run different policies", now)
                return
            self.refuse(obj, "policy-hash", "outer and inner agents run different policies", e.epoch, e.blocks)
            return
        decision = plan.decide(obj)
        if video:
            if decision.allowed:
                self.video.deliver(obj, decision, now)
            else:
                self.stats["refused"] += 1
                self.video.refuse(obj, decision.rule, decision.reason, now)
            return
        if not decision.allowed:
            self.refuse(obj, decision.rule, decision.reason, e.epoch, e.blocks)
            return
        if obj.lane == "files" and obj.HasField("file"):
            self.deliver_file(obj, decision, e)
        else:
            self.refuse(obj, "ferry-lanes", f"lane {obj.lane!r} has no output on this agent", e.epoch, e.blocks)

    def deliver_file(self, obj, decision, e: ev.ObjectReceived) -> None:
        bad = files_lane.check_file_object(obj)
        if bad:
            self.refuse(obj, "ferry-files-lane", bad, e.epoch, e.blocks)
            return
        if self.cfg.files is None:
            self.refuse(obj, "ferry-files-lane", "no files output configured on the inner agent", e.epoch, e.blocks)
            return
        f = obj.file
        try:
            path = write_atomically(Path(self.cfg.files.spool), files_lane.output_name_candidates(f.name), f.content)
        except OSError as err:
            self.stats["lost"] += 1
            self.audit(event="object_lost", verdict="lost", lane="files", object_id=obj.object_id, epoch=e.epoch,
                       blocks=list(e.blocks), reason=f"cannot write output: {err}", object_type="file",
                       size=f.size)
            return
        self.stats["delivered"] += 1
        self.audit(event="object_delivered", verdict="delivered", lane="files", object_id=obj.object_id,
                   epoch=e.epoch, blocks=list(e.blocks), rule=decision.rule, reason=decision.reason,
                   source={"name": obj.source.name, "address": obj.source.address},
                   destination=obj.destination, object_type="file", size=f.size, sm3=f.sm3.hex(),
                   detail={"name": f.name, "written_as": path.name, "media_type": f.media_type})
        log.info("delivered %s as %s", f.name, path.name)

    def drain(self) -> None:
        """Handle link events; while the trail is down, hold them (no audit, no delivery)."""
        if self.held and not self.audit_down:
            held, self.held = self.held, deque()
            for e in held:
                self.handle(e)
        while (e := self.receiver.next_event()) is not None:
            if self.audit_down and not self.flush_audit():
                if len(self.held) < HELD_EVENTS_MAX:
                    self.held.append(e)
                else:
                    self.overflow += 1
                continue
            self.handle(e)
        if self.overflow and not self.audit_down:
            self.audit(event="objects_dropped", verdict="lost", reason="audit trail unavailable and hold queue full",
                       detail={"events": self.overflow})
            self.overflow = 0

    # -- I/O ---------------------------------------------------------------------------
    def on_readable(self) -> None:
        now = time.time()
        for _ in range(READS_PER_WAKE):
            got = self.sock.receive()
            if got is None:
                break
            buf, seg = got
            self.receiver.receive_segments(buf, seg, now)
            self.drain()             # what this read completed leaves now, not after the whole wake-up

    async def timers(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            now = time.time()
            t = self.receiver.get_timer()
            if t is not None and t <= now:
                self.receiver.handle_timer(now)
                self.drain()
            if self.audit_down and self.flush_audit():
                self.drain()
            self.check_grace(now)
            t = self.receiver.get_timer()
            delay = 0.1 if t is None else max(0.005, min(0.1, t - time.time()))
            try:
                await asyncio.wait_for(stop.wait(), delay)
            except asyncio.TimeoutError:
                pass

    async def run(self, stop: asyncio.Event) -> int:
        mgmt = self.cfg.management
        server = None
        if mgmt is not None and mgmt.socket:
            from ferry.mgmt.server import ManagementService, start_server   # grpc only when configured

            server = await start_server(mgmt.socket, ManagementService(self))
        self.audit(event="agent_started", verdict="info", reason=f"inner agent {self.cfg.agent.name} started",
                   detail={"listen": f"{self.sock.address[0]}:{self.sock.address[1]}", "gro": self.sock.gro,
                           "rcvbuf": self.sock.rcvbuf, "receive_only": True})
        self.audit(event="policy_loaded", verdict="info", reason=f"policy {self.id.plan.name} loaded")
        if self.kernel is not None:
            apply_kernel_rules(self)
        log.info("inner agent %s: policy %s (%s), listening on %s:%d, gro=%s", self.cfg.agent.name,
                 self.id.plan.name, self.id.plan.hash.hex()[:16], *self.sock.address, self.sock.gro)
        loop = asyncio.get_running_loop()
        loop.add_reader(self.sock.sock.fileno(), self.on_readable)
        timer_task = asyncio.create_task(self.timers(stop))
        await self.video.start(stop)
        await stop.wait()
        if server is not None:
            from ferry.mgmt.server import stop_server

            await stop_server(server, mgmt.socket)
        loop.remove_reader(self.sock.sock.fileno())
        self.on_readable()
        await asyncio.gather(timer_task, return_exceptions=True)
        self.video.close(time.time())
        self.audit(event="agent_stopped", verdict="info", reason="inner agent stopped", detail=dict(self.stats))
        self.flush_audit()
        if not self.audit_down:
            self.id.audit.close(time.time())
        self.sock.close()
        return 0


def main(cfg: InnerConfig) -> int:
    return run_agent(InnerAgent, cfg)
