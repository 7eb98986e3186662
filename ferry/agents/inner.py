"""The inner agent: sealed link -> ``ferry.wire.LinkReceiver`` -> ``ferry.lanes.inner.InnerDispatch``
-> fresh output. Only I/O and timers here.

It opens one UDP socket on the link, shut down for writing right after bind, and never sends
on it. Every object ends in exactly one audit record: delivered, refused (rule and reason) or lost.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import time
from collections import deque
from pathlib import Path

from ferry import limits
from ferry.agents.common import AuditQueue, Identity, Management, open_identity, run_agent
from ferry.agents.link_io import LinkReceiveSocket
from ferry.agents.policy_host import PolicyHost
from ferry.agents.spool import write_atomically
from ferry.agents.video_emit import VideoEmitter
from ferry.config import InnerConfig
from ferry.kernel.agent_rules import KernelRules, kernel_rules_for
from ferry.lanes.files import WriteFile
from ferry.lanes.inner import InnerDispatch
from ferry.lanes.work import AuditIntent
from ferry.policy import Plan
from ferry.reasons import Reason
from ferry.wire import LinkReceiver

log = logging.getLogger("ferry.inner")



class InnerAgent(PolicyHost):
    role = "inner"

    def __init__(self, cfg: InnerConfig) -> None:
        self.cfg = cfg
        self.name = cfg.agent.name
        self.id: Identity = open_identity(cfg.agent, "inner", cfg.management)
        self.kernel: KernelRules | None = kernel_rules_for(cfg, "inner")
        self.management = Management(cfg.management)
        self.started_at = time.time()
        self.receiver = LinkReceiver(inner_key=self.id.key, outer_public=self.id.peer, now=time.monotonic(),
                                     strict=os.environ.get("FERRY_STRICT") == "1")   # tests: a bug raises
        link = cfg.link
        self.sock = LinkReceiveSocket((link.listen_host, link.listen_port), interface=link.interface,
                                      rcvbuf=link.rcvbuf, gro=link.gro == "auto")
        if not self.sock.check_receive_only():
            raise RuntimeError("the link socket is not receive-only; refusing to run")
        self.records = AuditQueue(self.id.audit, lambda: self.id.plan, "delivery", limits.AUDIT_BACKLOG_MAX,
                                  refusal_cap=cfg.audit.refusals_per_reason_per_hour)
        self.stats = {"policy_reloads": 0}
        self.held: deque = deque()
        self.overflow = 0
        self.video = VideoEmitter(self, list(cfg.video_output))
        self.out = Path(cfg.files.spool) if cfg.files else None
        self.dispatch = InnerDispatch(self.video, files_output=self.out is not None)
        self.wake = asyncio.Event()   # the timer task's: a core's next timer came earlier than its sleep
        self.wake_at = 0.0

    # -- audit -------------------------------------------------------------------
    def audit(self, **fields) -> None:
        self.records.append(fields)

    def flush_audit(self) -> bool:
        return self.records.flush()

    @property
    def audit_down(self) -> bool:
        return self.records.down

    # -- work from the dispatcher ------------------------------------------------------
    def carry(self, work: list) -> None:
        for w in work:
            if isinstance(w, AuditIntent):
                self.audit(**w.fields)
                if w.fields["event"] in ("object_refused", "policy_mismatch"):
                    log.log(logging.ERROR if w.fields["verdict"] == "alarm" else logging.INFO, "%s: %s: %s",
                            w.fields["event"], w.fields.get("rule", ""), w.fields["reason"])
            elif isinstance(w, WriteFile) and self.out is not None:
                try:
                    path = write_atomically(self.out, w.candidates(), w.content)
                except OSError as err:
                    self.carry(self.dispatch.file_lost(w, str(err)))
                    continue
                self.carry(self.dispatch.file_written(w, path.name))
                log.info("delivered %s as %s", w.name, path.name)

    def drain(self, now: float, wall: float) -> None:
        """Handle link events; while the trail is down, hold them (no audit, no delivery)."""
        if self.held and not self.audit_down:
            held, self.held = self.held, deque()
            for e in held:
                self.carry(self.dispatch.handle(e, self.id.plan, now, wall))
        while (e := self.receiver.next_event()) is not None:
            if self.audit_down and not self.flush_audit():
                if len(self.held) < limits.HELD_EVENTS_MAX:
                    self.held.append(e)
                else:
                    self.overflow += 1
                continue
            # the plan is read once per event: a reload between two objects never splits one
            self.carry(self.dispatch.handle(e, self.id.plan, now, wall))
        if self.overflow and not self.audit_down:
            self.audit(event="objects_dropped", verdict="lost", code=Reason.AUDIT_UNAVAILABLE,
                       reason="audit trail unavailable and hold queue full",
                       detail={"events": self.overflow})
            self.overflow = 0

    # -- management (ManagedAgent via PolicyHost) --------------------------------------
    def policy_swapped(self, old: Plan, new: Plan, wall: float) -> None:
        self.stats["policy_reloads"] += 1
        self.dispatch.policy_swapped(old.hash, time.monotonic())
        self.wake.set()

    def audit_available(self) -> bool:
        return not self.audit_down

    def status_counters(self) -> dict[str, int]:
        c = dataclasses.asdict(self.receiver.counters)
        return {**{k: v for k, v in c.items() if isinstance(v, int)}, **self.dispatch.counts, **self.stats,
                **self.video.stats}

    # -- I/O ---------------------------------------------------------------------------
    def on_readable(self) -> None:
        now, wall = time.monotonic(), time.time()
        for _ in range(limits.LINK_READS_PER_WAKE):
            got = self.sock.receive()
            if got is None:
                break
            buf, seg = got
            self.receiver.receive_segments(buf, seg, now, wall)
            self.drain(now, wall)    # what this read completed leaves now, not after the whole wake-up
        t = self.receiver.get_timer()
        if t is not None and t < self.wake_at:
            self.wake.set()

    def on_timer(self, now: float, wall: float) -> float:
        """The receiver's timers, the audit retry, the reload grace, idle video; seconds to the next."""
        t = self.receiver.get_timer()
        if t is not None and t <= now:
            self.receiver.handle_timer(now)
            self.drain(now, wall)
        if self.audit_down and self.flush_audit():
            self.drain(now, wall)
        self.carry(self.dispatch.check_grace(self.id.plan, self.receiver.current_epoch, now))
        delays = [limits.INNER_TIMER_MAX]
        if (t := self.receiver.get_timer()) is not None:
            delays.append(t - now)
        if (g := self.dispatch.next_timer()) is not None:
            delays.append(g - now)
        if self.audit_down:
            delays.append(limits.INNER_TICK)
        if (b := self.records.tick(now)) is not None:    # the hourly summary of capped refusals
            delays.append(b - now)
        return max(limits.INNER_TIMER_MIN, min(delays))

    async def timers(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            now = time.monotonic()
            delay = self.on_timer(now, time.time())
            self.wake_at = now + delay
            self.wake.clear()
            try:
                await asyncio.wait_for(self.wake.wait(), delay)
            except asyncio.TimeoutError:
                pass

    async def run(self, stop: asyncio.Event) -> int:
        await self.management.start(self)
        self.audit(event="agent_started", verdict="info", reason=f"inner agent {self.name} started",
                   detail={"listen": f"{self.sock.address[0]}:{self.sock.address[1]}", "gro": self.sock.gro,
                           "rcvbuf": self.sock.rcvbuf, "receive_only": True})
        self.audit(event="policy_loaded", verdict="info", reason=f"policy {self.id.plan.name} loaded")
        self.start_kernel_rules()
        log.info("inner agent %s: policy %s (%s), listening on %s:%d, gro=%s", self.name,
                 self.id.plan.name, self.id.plan.hash.hex()[:16], *self.sock.address, self.sock.gro)
        loop = asyncio.get_running_loop()
        loop.add_reader(self.sock.sock.fileno(), self.on_readable)
        timer_task = asyncio.create_task(self.timers(stop))
        await self.video.start(stop)
        await stop.wait()
        self.wake.set()
        await self.management.stop()
        loop.remove_reader(self.sock.sock.fileno())
        self.on_readable()
        await asyncio.gather(timer_task, return_exceptions=True)
        self.video.close(time.time())
        self.records.close_budget()
        self.audit(event="agent_stopped", verdict="info", reason="inner agent stopped",
                   detail={**self.dispatch.counts, **self.stats})
        self.flush_audit()
        if not self.audit_down:
            self.id.audit.close(time.time())
        self.sock.close()
        return 0


def main(cfg: InnerConfig) -> int:
    return run_agent(InnerAgent, cfg)
