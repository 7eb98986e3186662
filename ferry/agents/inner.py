"""The inner agent: sealed link -> ``ferry.wire.LinkReceiver`` -> ``ferry.lanes.inner.InnerDispatch``
-> fresh output. Only I/O and timers here.

It opens one UDP socket on the link, shut down for writing right after bind, and never sends
on it. Every object ends in exactly one audit record: delivered, refused (rule and reason) or lost.

A file is never put in place before its record: its content is written and fsync'd under a
temporary dot-name (``ferry.lanes.delivered.temp_name``), its ID journaled, its
``object_delivered`` record written and fsync'd, and only then is it renamed into place
(``Publication``; held while the trail is down). At start, the temporary files a crash left are
put in place or removed, and recorded (``ferry.lanes.delivered.recover``).
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ferry import limits
from ferry.audit import AuditUnavailable
from ferry.audit.records import format_time
from ferry.crypto import sm3
from ferry.agents.common import AuditQueue, Identity, Management, open_identity, run_agent, sign_quiet_tail
from ferry.agents.forwarder import start_forwarder
from ferry.agents.inner_state import InnerState, trail_records
from ferry.agents.link_io import LinkReceiveSocket
from ferry.agents.policy_host import PolicyHost
from ferry.agents.reverse_sender import ReverseSender
from ferry.agents.sip_inner import SipInner
from ferry.agents.spool import discard, free_name, leftovers, publish, read_whole_file, write_temporary
from ferry.agents.video_emit import VideoEmitter
from ferry.agents.media_inner import InnerMediaAgent
from ferry.config import InnerConfig
from ferry.kernel.agent_rules import KernelRules, kernel_rules_for
from ferry.lanes.delivered import (Leftover, Recovery, Remember, is_leftover, is_recovery_record, publish_failed,
                                   recover, temp_name)
from ferry.lanes.files import WriteFile
from ferry.lanes.inner import InnerDispatch
from ferry.lanes.work import AuditIntent
from ferry.mgmt.host import LinkView
from ferry.pb import mgmt_pb2
from ferry.policy import Plan
from ferry.reasons import Reason
from ferry.wire import LinkReceiver

log = logging.getLogger("ferry.inner")
CRASH_STEPS = ("before_record", "before_rename")   # FERRY_TEST_CRASH_AT (tests only: needs FERRY_STRICT=1)


@dataclass(slots=True)
class Publication:
    """A file under its temporary name in the output folder, waiting for its record to be on
    disk: then renamed to ``name`` (None: removed). ``work`` is the delivery's (its loss is
    recorded if the rename fails); ``leftover`` a file a crash left (recovered at start)."""

    temp: str
    name: str | None
    work: WriteFile | None = None
    leftover: Leftover | None = None



class InnerAgent(PolicyHost):
    role = "inner"

    def __init__(self, cfg: InnerConfig) -> None:
        self.cfg = cfg
        self.name = cfg.agent.name
        self.id: Identity = open_identity(cfg.agent, "inner", cfg.management)
        self.kernel: KernelRules | None = kernel_rules_for(cfg, "inner")
        self.management = Management(cfg.management)
        self.started_at = time.time()
        self.started_mono = time.monotonic()
        self.link = LinkView("down", self.started_at, "no authenticated heartbeat from the outer agent yet")
        self.lanes: dict[str, dict[str, int]] = {}     # objects' records per lane (count())
        if cfg.files:
            self.lanes["files"] = {"delivered": 0, "refused": 0, "lost": 0}
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
        self.video = VideoEmitter(self, list(cfg.video_output), self.video_mode, viewable=cfg.media is not None)
        self.out = Path(cfg.files.spool) if cfg.files else None
        # [signaling]: ferry as a lower-level platform of the inner GB/T 28181 platform (sip_inner.py)
        self.sip = SipInner(cfg.signaling, self.carry) if cfg.signaling is not None else None
        if self.sip is not None:
            self.sip.bind()
        # [media] (media-inner, issue 13 item 3): the inner platform's INVITEs -> viewers of crossing video;
        # with [signaling] they come on its endpoint, the IDs mapped by its id_map
        self.media = InnerMediaAgent(self, cfg.media, self.video, lambda: self.id.plan, signaling=cfg.signaling,
                                     ask=self.media_ask if cfg.reverse else None) if cfg.media else None
        if self.media is not None:
            self.media.bind()
            if self.sip is not None:
                self.sip.attach_media(self.media)
        self.dispatch = InnerDispatch(self.video, files_output=self.out is not None, signaling=self.sip)
        # across restarts: the newest epoch and where the link was, the files delivered
        self.state = InnerState(Path(cfg.agent.state_dir))
        self.state_problems: list[str] = []
        self.resumed = self.resume(time.monotonic(), time.time())
        self.saved = self.receiver.snapshot()
        self.state.save_link(self.saved)
        self.next_save = 0.0
        self.wake = asyncio.Event()   # the timer task's: a core's next timer came earlier than its sleep
        self.wake_at = 0.0
        # files written under their temporary names, waiting for their records; names they will take
        self.publications: list[Publication] = []
        self.claimed: set[str] = set()
        strict = os.environ.get("FERRY_STRICT") == "1"
        self.crash_at = os.environ.get("FERRY_TEST_CRASH_AT") if strict else None
        if self.crash_at is not None:
            if self.crash_at not in CRASH_STEPS:
                raise RuntimeError(f"FERRY_TEST_CRASH_AT={self.crash_at!r}: not one of {', '.join(CRASH_STEPS)}")
            log.warning("test hook: this agent exits at step %s of its first file delivery", self.crash_at)
        self.recoveries = self.find_leftovers()   # before this run writes any record
        # the reverse ferry's sender ([reverse], issue 13): requests to the outer agent, never needed by the lanes
        self.reverse = ReverseSender(cfg.reverse, f"{self.name}-reverse", lambda: self.id.plan,
                                     self.records.append, lambda: self.audit_down) if cfg.reverse else None

    # -- state across restarts (inner_state.py) ----------------------------------------
    def resume(self, now: float, wall: float) -> bool:
        """Load the state directory: delivered IDs into the dispatcher (the journal compacted),
        the link state into the receiver. True if the stored key was accepted again."""
        stored, records, self.state_problems = self.state.load()
        self.dispatch.delivered.load(records, wall)
        self.state.compact(self.dispatch.delivered.live())
        if stored is None:
            return False
        opened: dict[int, int] = {}
        for r in records:   # deliveries journaled after the last save of the link state
            if r.opened > opened.get(r.epoch, -1):
                opened[r.epoch] = r.opened
        return self.receiver.resume(stored.merged(opened), now, wall)

    def save_state(self, now: float, *, force: bool = False) -> None:
        """Save the link state if it changed: at once for a new epoch (or `force`), else at
        most every STATE_SAVE_INTERVAL."""
        if not force and now < self.next_save and self.receiver.key_epochs.floor == self.saved.floor:
            return
        state = self.receiver.snapshot()
        self.next_save = now + limits.STATE_SAVE_INTERVAL
        if state == self.saved:
            return
        try:
            self.state.save_link(state)
        except OSError as err:
            log.error("cannot save the link state: %s", err)
            return
        self.saved = state

    def compact_journal(self, now: float) -> None:
        """Rewrite the journal with the live entries; the link state first (the records it drops
        carried the highest blocks opened)."""
        self.save_state(now, force=True)
        try:
            self.state.compact(self.dispatch.delivered.live())
        except OSError as err:
            log.error("cannot compact the delivered-object journal: %s", err)

    def remember(self, r: Remember) -> None:
        try:
            self.state.remember(r)
        except OSError as err:   # the file is delivered; a replay of it after a restart would not be known
            log.error("cannot journal delivered object %d: %s", r.object_id, err)
            self.audit(event="state_unwritable", verdict="alarm", object_id=r.object_id,
                       reason=f"cannot journal a delivered object in {self.state.dir}: {err}")

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
            if isinstance(w, Remember):
                self.remember(w)
            elif isinstance(w, AuditIntent):
                self.audit(**w.fields)
                self.count(w.fields)
                if w.fields["event"] in ("object_refused", "policy_mismatch"):
                    log.log(logging.ERROR if w.fields["verdict"] == "alarm" else logging.INFO, "%s: %s: %s",
                            w.fields["event"], w.fields.get("rule", ""), w.fields["reason"])
            elif isinstance(w, WriteFile) and self.out is not None:
                self.deliver(w, self.out)

    # -- files: written under a temporary name, put in place once the record is on disk --------
    def deliver(self, w: WriteFile, out: Path) -> None:
        """Write the content under its temporary name (fsync'd), choose the final name, journal the
        ID and record ``object_delivered`` with it. The rename waits for the record: ``publish``,
        at the end of each ``drain`` (one trail fsync for the files of one read) and on the timer."""
        oid = w.delivered["object_id"]
        temp = temp_name(oid, os.urandom(6).hex())
        try:
            write_temporary(out, temp, w.content)
        except OSError as err:
            self.carry(self.dispatch.file_lost(w, str(err)))
            return
        self.crash_point("before_record")
        name = free_name(out, w.candidates(), self.claimed)
        backlog = self.records.limit is not None and len(self.records.records) + 2 > self.records.limit
        if name is None or backlog:
            self.discard(out, temp)
            self.carry(self.dispatch.file_lost(w, f"no free name for {w.name} in {out}" if name is None
                                               else "the audit backlog is full"))
            return
        self.claimed.add(name)
        self.publications.append(Publication(temp, name, work=w))
        self.carry(self.dispatch.file_written(w, name, self.receiver.opened_high(w.delivered["epoch"])))
        if self.audit_down:
            log.warning("%s is held as %s until its record is written", w.name, temp)

    def publish(self) -> None:
        """Once every queued record is written, fsync the trail, then put the waiting files in place."""
        if not self.publications or self.records.records or self.out is None:
            return
        try:
            self.id.audit.sync(time.time())
        except AuditUnavailable as err:   # the records may not be on disk: the files wait (timer retries)
            log.error("audit trail not synced, files held: %s", err)
            return
        waiting, self.publications = self.publications, []
        for p in waiting:
            self.crash_point("before_rename")
            self.put_in_place(p, self.out)

    def put_in_place(self, p: Publication, out: Path) -> None:
        if p.name is None:
            self.discard(out, p.temp)
            return
        self.claimed.discard(p.name)
        try:
            publish(out, p.temp, p.name)
        except OSError as err:   # the record says delivered: say what became of it
            self.discard(out, p.temp)
            if p.work is not None:
                self.carry(self.dispatch.file_lost(p.work, f"the object_delivered record names {p.name!r}, but the "
                                                           f"file could not be put in place: {err}"))
            elif p.leftover is not None:
                self.audit(**publish_failed(p.leftover, p.name, str(err)))
            log.error("cannot put %s in place as %s: %s", p.temp, p.name, err)
            return
        log.info("delivered %s as %s", p.work.name if p.work is not None else p.temp, p.name)

    def discard(self, out: Path, temp: str) -> None:
        try:
            discard(out, temp)
        except OSError as err:
            log.error("cannot remove %s from %s: %s", temp, out, err)

    def crash_point(self, step: str) -> None:
        """Tests (FERRY_TEST_CRASH_AT with FERRY_STRICT=1): die here as a kill -9 would."""
        if self.crash_at == step:
            os._exit(137)

    def find_leftovers(self) -> list[Recovery]:
        """The temporary files a crash left in the output folder, and what becomes of each (from
        the records the trail has of their objects)."""
        if self.out is None:
            return []
        try:
            names = leftovers(self.out, is_leftover)
        except OSError as err:
            log.error("cannot look for leftover temporary files in %s: %s", self.out, err)
            return []
        found = []
        for name, st in names:
            try:
                content = read_whole_file(self.out / name, limits.FILE_MAX)
                digest = sm3(content).hex() if content is not None else None
            except OSError as err:
                log.error("cannot read %s: %s", self.out / name, err)
                digest = None
            found.append(Leftover(name, st.st_size, digest, st.st_mtime))
        if not found:
            return []
        since = format_time(max(0.0, min(f.mtime for f in found) - limits.RECOVERY_SCAN_MARGIN))
        ids = [f.object_id for f in found if f.object_id is not None]
        try:
            records = trail_records(self.id.audit.path, ids, since,
                                    lambda r: r.get("event") == "object_delivered" or is_recovery_record(r))
        except OSError as err:   # without the trail nothing can be decided: the files stay until a restart
            log.error("cannot read %s for %d leftover temporary file(s): %s", self.id.audit.path, len(found), err)
            return []
        out = []
        for f in found:
            mine = [r for r in records if r.get("object_id") == f.object_id]   # newest first
            delivered = next((r for r in mine if r.get("event") == "object_delivered"), None)
            earlier = next((r for r in mine if is_recovery_record(r)), None)
            out.append(recover(f, delivered, earlier))
        return out

    def start_recoveries(self) -> None:
        """Record each leftover's fate (queued like any record), then act once it is on disk."""
        for r in self.recoveries:
            if r.record is not None:
                self.audit(**r.record)
                self.count(r.record)
                log.warning("%s: %s", r.record["event"], r.record["reason"])
            if r.publish_as is not None:
                self.claimed.add(r.publish_as)
            self.publications.append(Publication(r.leftover.name, r.publish_as, leftover=r.leftover))
        self.recoveries = []
        self.publish()

    def count(self, f: dict) -> None:
        """Per-lane counts of the objects' records; the link's state from link_down / link_up (logged)."""
        lane, event = f.get("lane"), f["event"]
        if lane and "object_id" in f and f["verdict"] in ("delivered", "refused", "lost"):
            if lane not in self.lanes and len(self.lanes) >= 8:   # the outer names the lane: bounded
                return
            c = self.lanes.setdefault(lane, {"delivered": 0, "refused": 0, "lost": 0})
            c[f["verdict"]] = c.get(f["verdict"], 0) + 1
        elif event == "link_down":
            since = (f.get("detail") or {}).get("since") or time.time()
            self.link = LinkView("down", since, f["reason"])
            log.warning("link down: %s (last heartbeat %s)", f["reason"], format_time(since))
        elif event == "link_up":
            self.link = LinkView("up", time.time(), f["reason"])
            log.info("link up: %s", f["reason"])

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
        cur = self.receiver.key_epochs.current
        if self.receiver.key_epochs.floor != self.saved.floor:
            self.save_state(now)   # a new epoch: stored before anything else happens
        elif cur is not None and cur.announcements and cur.announcements[-1] != self.saved.announcement:
            # the epoch announced again with another policy hash (a policy applied): a restart
            # must not resume the old hash and refuse this epoch's objects as a policy mismatch
            self.save_state(now, force=True)
        if self.overflow and not self.audit_down:
            self.audit(event="objects_dropped", verdict="lost", code=Reason.AUDIT_UNAVAILABLE,
                       reason="audit trail unavailable and hold queue full",
                       detail={"events": self.overflow})
            self.overflow = 0
        self.publish()

    def video_mode(self, rule_id: str) -> str:
        """A rule's video mode (remux or transcode) under the running plan."""
        rule = self.id.plan.rule(rule_id)
        return rule.video.mode if rule is not None and rule.video is not None else "remux"

    # -- management (ManagedAgent via PolicyHost) --------------------------------------
    def policy_swapped(self, old: Plan, new: Plan, wall: float) -> None:
        self.stats["policy_reloads"] += 1
        self.dispatch.policy_swapped(old.hash, time.monotonic())
        if self.reverse is not None:
            self.reverse.policy_swapped(new)
        self.wake.set()

    def ask(self, r: mgmt_pb2.AskRequest) -> mgmt_pb2.AskReply | None:
        """The management Ask RPC: a reverse request (None: this agent has no [reverse] section)."""
        if self.reverse is None:
            return None
        o = self.reverse.ask(r.request, r.device_id, dict(r.params), r.operator, address=r.address,
                             destination=r.destination)
        return mgmt_pb2.AskReply(accepted=o.accepted, reason=o.reason, code=o.code, object_id=o.object_id,
                                 rule=o.rule)

    def media_ask(self, request: str, device_id: str, params: dict[str, str], operator: str, *,
                  address: str = "", platform_id: str = "") -> tuple[bool, str, str]:
        """[media] on-demand (media-inner): a reverse request for the platform at `address`."""
        if self.reverse is None:
            return False, Reason.UNSERVED, "no [reverse] section"
        o = self.reverse.ask(request, device_id, params, operator, address=address, platform_id=platform_id)
        return o.accepted, o.code, o.reason

    def audit_available(self) -> bool:
        return not self.audit_down

    def status_counters(self) -> dict[str, int]:
        c = dataclasses.asdict(self.receiver.counters)
        return {**{k: v for k, v in c.items() if isinstance(v, int)}, **self.dispatch.counts, **self.stats,
                **self.video.stats, "video_refused_streams": self.video.refused_streams,
                **(self.sip.counters() if self.sip is not None else {}),
                **(self.media.counters() if self.media is not None else {})}

    def key_epoch(self) -> int:
        cur = self.receiver.key_epochs.current
        return int(cur.epoch) if cur is not None else 0

    def audit_path(self) -> str:
        return str(Path(self.cfg.agent.audit_dir) / "audit.jsonl")

    def flows(self) -> dict[str, list[dict[str, Any]]]:
        """Video streams open now; objects being reassembled ("receiving")."""
        files = [{"object_id": oid, "size": o.total, "received": o.received, "state": "receiving"}
                 for (_, oid), o in self.receiver.reassembly.objects.items()]
        return {"streams": self.video.flows(), "files": files}

    def uptime(self) -> float:
        return time.monotonic() - self.started_mono

    def link_view(self) -> LinkView:
        return self.link

    def lane_counters(self) -> dict[str, dict[str, int]]:
        """Counters per lane: the objects' records per lane, the video lane's streams."""
        lanes = {k: dict(v) for k, v in self.lanes.items()}
        if self.cfg.video_output or self.video.stats["video_streams"]:
            lanes["video"] = self.video.lane_counters()
        if self.reverse is not None:
            lanes["reverse"] = {**self.reverse.counters(), "link_up": int(self.reverse.link_view().state == "up")}
        return lanes

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
            self.publish()
            self.drain(now, wall)
        self.publish()
        self.carry(self.dispatch.check_grace(self.id.plan, self.receiver.current_epoch, now))
        self.save_state(now)
        delivered = self.dispatch.delivered
        delivered.expire(wall)
        if self.state.needs_compaction(len(delivered)):
            self.compact_journal(now)
        delays = [limits.INNER_TIMER_MAX, limits.STATE_SAVE_INTERVAL]
        if (t := self.receiver.get_timer()) is not None:
            delays.append(t - now)
        if (g := self.dispatch.next_timer()) is not None:
            delays.append(g - now)
        if self.audit_down or self.publications:
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
        for problem in self.state_problems:
            self.audit(event="state_problem", verdict="alarm", reason=problem)
        self.audit(event="state_loaded", verdict="info",
                   reason=(f"resumed key epoch {self.saved.floor}" if self.resumed else "no key resumed")
                   + f"; {len(self.dispatch.delivered)} delivered object(s) in the replay window",
                   detail={"state_dir": str(self.state.dir), "epoch_floor": self.saved.floor,
                           "resumed": self.resumed, "delivered_ids": len(self.dispatch.delivered)})
        self.start_recoveries()
        self.start_kernel_rules()
        log.info("inner agent %s: policy %s (%s), listening on %s:%d, gro=%s", self.name,
                 self.id.plan.name, self.id.plan.hash.hex()[:16], *self.sock.address, self.sock.gro)
        loop = asyncio.get_running_loop()
        loop.add_reader(self.sock.sock.fileno(), self.on_readable)
        timer_task = asyncio.create_task(self.timers(stop))
        signer = asyncio.create_task(sign_quiet_tail(self.id.audit, stop))
        start_forwarder(self.cfg.audit.forward, self.id.audit.path, self.cfg.agent.state_dir, self.audit, stop)
        await self.video.start(stop)
        if self.media is not None:
            await self.media.start()
        reverse = asyncio.create_task(self.reverse.run(stop)) if self.reverse is not None else None
        if self.sip is not None:
            await self.sip.start(stop)
        await stop.wait()
        if self.media is not None:      # its BYEs leave before the SIP endpoint closes
            await self.media.stop()
        if self.sip is not None:
            await self.sip.stop()
        if reverse is not None and self.reverse is not None:
            await asyncio.gather(reverse, return_exceptions=True)
            await self.reverse.close()
        self.wake.set()
        await self.management.stop()
        loop.remove_reader(self.sock.sock.fileno())
        self.on_readable()
        await asyncio.gather(timer_task, signer, return_exceptions=True)
        self.video.close(time.time())
        self.save_state(time.monotonic(), force=True)
        self.state.close()
        self.records.close_budget()
        self.audit(event="agent_stopped", verdict="info", reason="inner agent stopped",
                   detail={**self.dispatch.counts, **self.stats})
        self.flush_audit()
        self.publish()
        if self.publications:
            log.error("%d file(s) not put in place: the trail is down; recovered at the next start",
                      len(self.publications))
        if not self.audit_down:
            self.id.audit.close(time.time())
        self.sock.close()
        return 0


def main(cfg: InnerConfig) -> int:
    return run_agent(InnerAgent, cfg)
