"""The outer agent: spool and video ingest -> the lanes -> sealed link. Only I/O and timers:
the files pipeline is ``ferry.lanes.files.OuterFilesLane``, the link ``ferry.wire.LinkSender``.

No audit, no transfer: a sealed block leaves only after the audit records of the objects in
it are written. While the trail cannot be written, datagrams are held, the spool is not
read, and the agent retries until it can.
"""
from __future__ import annotations

import asyncio
import math
import logging
import os
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ferry import limits
from ferry.agents.epoch_store import EpochStore
from ferry.agents.common import AuditQueue, Identity, Management, open_identity, run_agent, sign_quiet_tail
from ferry.agents.forwarder import start_forwarder
from ferry.agents.link_io import LinkSendSocket
from ferry.agents.link_writer import LinkWriter
from ferry.agents.media_outer import MediaOuter
from ferry.agents.outer_state import OuterState
from ferry.wire.pacing import LinkPacer
from ferry.agents.policy_host import PolicyHost
from ferry.agents.sip_outer import SipOuter
from ferry.agents.reverse_receiver import ReverseHandler, ReverseReceiver
from ferry.agents.spool import SpoolEntry, SpoolWatcher, StillWriting, move_aside, remove_if_same
from ferry.agents.video_ingest import VideoIngest
from ferry.config import OuterConfig
from ferry.crypto import sm3
from ferry.kernel.agent_rules import KernelRules, kernel_rules_for
from ferry.mgmt.host import LinkView
from ferry.lanes.files import MoveAside, OuterFilesLane, SpoolFile, SpoolStat, make_file_object, spool_waiting
from ferry.lanes.sent import Forget, Kept, NotResent, SentRecords, after_restart, as_sent
from ferry.lanes.work import AuditIntent, ObjectIds, SealObject
from ferry.pb.ferry_pb2 import CanonicalObject
from ferry.policy import Plan
from ferry.reasons import Reason
from ferry.wire import LinkSender
from ferry.wire.events import BlockSealed, KeyAnnounced, KeyRotated

log = logging.getLogger("ferry.outer")


@dataclass
class _Spool:
    """The files lane of this agent: its spool folder, its pure pipeline, where refusals go."""
    watcher: SpoolWatcher
    lane: OuterFilesLane
    refused_dir: Path
    interval: float


class SendView:
    """The link as the outer agent sees it: only what it sends (it hears nothing back). Down while
    the trail is down (nothing leaves: no audit, no transfer), the writer failed, or the last
    sends failed and none worked since; up again when a send works. `update` once per pump tick."""

    def __init__(self, peer: str, wall: float) -> None:
        self.peer = peer
        self.view = LinkView("up", wall, f"sending to {peer}")
        self._sent = self._errors = 0
        self._failing = False          # down because sends fail: up again only when one works

    def update(self, held: bool, error: BaseException | None, sent: int, errors: int, wall: float) -> None:
        if error is not None:
            state, detail = "down", f"link writer failed: {type(error).__name__}: {error}"
        elif held:
            state, detail = "down", "audit trail unavailable: nothing is sent (no audit, no transfer)"
        elif sent == self._sent and (errors > self._errors or self._failing):
            state, detail = "down", f"sends to {self.peer} fail ({errors} failed so far)"
        else:                          # a send worked, or nothing failed since the trail or writer came back
            state, detail = "up", f"sending to {self.peer}"
        self._failing = state == "down" and error is None and not held
        self._sent, self._errors = sent, errors
        if state != self.view.state:
            self.view = LinkView(state, wall, detail)
            (log.warning if state == "down" else log.info)("link %s: %s", state, detail)
        elif detail != self.view.detail:
            self.view.detail = detail


class LinkPump:
    """The sender state machine on the loop (timers, collecting what it made) and its writer
    thread (sealing, pacing, sending). Control datagrams (announcements, heartbeats) go to the
    writer apart, ahead of the data (proto/WIRE.md §3a); the sender learns from the writer which
    blocks have left (its heartbeats claim no others). While the audit trail is down (`held`)
    nothing more is handed to the writer: it waits in `outbox` and `control_outbox`."""

    def __init__(self, sender: LinkSender, sock: LinkSendSocket, rate_bytes: float, now: float, on_events,
                 view: SendView | None = None) -> None:
        self.sender = sender
        self.view = view or SendView("peer", time.time())
        self.on_events = on_events
        # A burst covers what one object seals into (the sender seals whole objects
        # at once); the average stays at the configured rate.
        self.writer = LinkWriter(sock, LinkPacer(rate_bytes, burst=max(1 << 20, int(rate_bytes * 0.02)), now=now))
        self.outbox: deque = deque()   # made while held
        self.control_outbox: deque = deque()
        self.held = False              # True while the audit trail cannot be written
        self.wake = asyncio.Event()
        self._sealed_bytes = 0

    def collect(self, now: float) -> None:
        self.sender.blocks_sent(self.writer.next_block_sent)
        self.control_outbox.extend(self.sender.control_to_send(now))
        self.outbox.extend(self.sender.items_to_send(now))
        if not self.held:
            # data first: a control datagram's after_block waits for blocks handed over
            if self.outbox:
                self.writer.put(self.outbox)
                self.outbox = deque()
            if self.control_outbox:
                self.writer.put_control(self.control_outbox)
                self.control_outbox = deque()
        sealed = self.writer.sealed_bytes
        if sealed != self._sealed_bytes:
            self._sealed_bytes = sealed

    def check_link(self, wall: float) -> None:
        w = self.writer
        self.view.update(self.held, w.error, w.sent, w.errors, wall)

    def backlog(self) -> int:
        """Datagrams and blocks made but not sent yet."""
        return len(self.outbox) + self.writer.backlog()

    async def drain(self) -> None:
        """Stopping: everything made goes out (unless held), then the writer ends."""
        if not self.held:
            self.writer.put(self.outbox)
            self.writer.put_control(self.control_outbox)
            self.outbox, self.control_outbox = deque(), deque()
        await asyncio.to_thread(self.writer.close)
        self.collect(time.monotonic())

    async def run(self, stop: asyncio.Event) -> None:
        """Wakes at the sender's timer (or when woken), at least every PUMP_TICK."""
        while not stop.is_set() and self.writer.error is None:
            now, wall = time.monotonic(), time.time()
            timer = self.sender.get_timer()
            if timer is not None and timer <= now:
                self.sender.blocks_sent(self.writer.next_block_sent)   # what the heartbeat may claim
                self.sender.handle_timer(now, wall)
                self.on_events()
            self.collect(now)
            self.check_link(wall)
            timer = self.sender.get_timer()
            self.wake.clear()
            try:
                await asyncio.wait_for(self.wake.wait(), limits.PUMP_TICK if timer is None else
                                       max(0.0, min(limits.PUMP_TICK, timer - now)))
            except asyncio.TimeoutError:
                pass
        if self.writer.error is not None:
            log.error("link writer failed: %s; stopping the agent", self.writer.error)
            stop.set()


class OuterAgent(PolicyHost):
    role = "outer"

    def __init__(self, cfg: OuterConfig) -> None:
        self.cfg = cfg
        self.name = cfg.agent.name
        self.id: Identity = open_identity(cfg.agent, "outer", cfg.management)
        self.kernel: KernelRules | None = kernel_rules_for(cfg, "outer")
        self.management = Management(cfg.management)
        # Start on a whole second: a run's object IDs (run id = start second) and its first key
        # epoch (int(wall)) are then above those of any earlier run, however soon it restarts
        # (the inner agent refuses an older epoch, and a known object ID, across its restarts).
        time.sleep(max(0.0, math.floor(time.time()) + 1 - time.time()))
        wall = self.started_at = time.time()
        self.ids = ObjectIds(int(wall))
        self.run_id = self.ids.run_id
        link = cfg.link
        # key epochs above any earlier run's, also after a clock that was ahead (epoch_store.py)
        self.epochs = EpochStore(Path(cfg.agent.state_dir))
        # blocks are sealed by the link writer thread, beside the loop (seal=False), which tells
        # the sender which blocks have left (track_sent: LinkPump)
        self.sender = LinkSender(outer_key=self.id.key, inner_public=self.id.peer, policy_hash=self.id.plan.hash,
                                 name=cfg.agent.name, now=time.monotonic(), wall=wall, k=link.fec_k, m=link.fec_m,
                                 datagram_max=link.datagram_max, key_lifetime=link.key_lifetime, seal=False,
                                 track_sent=True, epoch=self.epochs.first_epoch(wall))
        self.save_epoch(self.sender.epoch)      # before anything is sent
        # cameras' ports first: the link socket's ephemeral port can then never be one of them
        self.video = (VideoIngest(list(cfg.video), self, lambda: self.id.plan, self.ids)
                      if cfg.video or cfg.media else None)
        if self.video:
            self.video.bind()
        # [signaling] (issue 13 "sig-outer"): the SIP server of outer devices, bound before the link socket too
        self.signaling = SipOuter(cfg.signaling, self, lambda: self.id.plan, self.ids,
                                  Path(cfg.agent.state_dir)) if cfg.signaling else None
        if self.signaling:
            self.signaling.bind()
        # [media] (issue 13 "media-outer"): ferry INVITEs cameras; their SIP goes through [signaling]'s endpoint
        self.media = MediaOuter(cfg.media, self, self.video, cfg.signaling) if cfg.media and self.video else None
        if self.media:
            if self.signaling is not None:
                self.signaling.attach_media(self.media)
                self.media.registry = self.signaling.registry
            self.media.bind()
        self.sock = LinkSendSocket((link.peer_host, link.peer_port), bind_host=link.bind_host,
                                   interface=link.interface, sndbuf=link.sndbuf, gso=link.gso == "auto")
        self.started_mono = time.monotonic()
        self.pump = LinkPump(self.sender, self.sock, link.rate_mbps * 1e6 / 8, time.monotonic(), self.sender_events,
                             SendView(f"{link.peer_host}:{link.peer_port}", wall))
        self.sent: SentRecords[tuple[Path, SpoolStat | None]] = SentRecords()   # submitted, record not yet written
        self.records = AuditQueue(self.id.audit, lambda: self.id.plan, "lane")
        f = cfg.files
        self.spool = _Spool(SpoolWatcher(Path(f.spool), f.settle),
                            OuterFilesLane(source=f.source, destination=f.destination, ids=self.ids),
                            Path(f.refused_dir), f.scan_interval) if f else None
        # sent files kept until they left (and keep_after_sent after), re-sent after a restart
        self.state = OuterState(Path(cfg.agent.state_dir), Path(f.spool.rstrip("/") + ".sent"),
                                f.keep_after_sent) if f else None
        self.scan_timer: asyncio.TimerHandle | None = None
        # the reverse ferry's receiver ([reverse], issue 13): requests from the inner agent, to the handlers
        self.reverse = ReverseReceiver(cfg.reverse, lambda: self.id.plan, lambda f: self.audit(**f),
                                       Path(cfg.agent.state_dir)) \
            if cfg.reverse else None
        self.stats = {"sent": 0, "refused": 0, "policy_reloads": 0}

    def save_epoch(self, epoch: int) -> None:
        try:
            self.epochs.save(epoch)
        except OSError as e:
            log.error("cannot record key epoch %d in %s: %s (a restart may start below it)", epoch, self.epochs.path, e)

    def next_object_id(self) -> int:
        return self.ids.next()

    # -- audit ---------------------------------------------------------------
    def audit(self, **fields) -> bool:
        """Queue a record and write everything queued; False while the trail is down (the lane held)."""
        return self._hold(self.records.append(fields))

    def flush_audit(self) -> bool:
        return self._hold(self.records.flush())

    def _hold(self, written: bool) -> bool:
        if written and self.pump.held:
            self.pump.wake.set()
        self.pump.held = not written
        return written

    # -- video lane (ferry.agents.video_ingest.IngestHost) ---------------------
    def seal(self, obj: CanonicalObject, wall: float) -> None:
        # both clocks read together (the sender compares them to notice a wall-clock step); `wall`,
        # when the lane decided, may be older
        self.sender.submit(obj.object_id, obj.SerializeToString(), time.monotonic(), time.time())

    # -- signaling lane (ferry.agents.sip_outer.SignalingHost) ----------------
    def seal_and_record(self, records, wall: float) -> None:
        """Seal what was submitted, write the records (object_sent, with blocks), then hand it over."""
        now = time.monotonic()
        self.sender.flush(now, wall)
        self.sender_events()
        for record in records():
            self.audit(**record.fields)
        self.pump.collect(now)

    def flush_link(self, wall: float) -> None:
        now = time.monotonic()
        self.sender.flush(now, wall)
        self.sender_events()
        self.pump.collect(now)

    # -- files lane ------------------------------------------------------------
    def take_file(self, spool: _Spool, entry: SpoolEntry, now: float, wall: float) -> None:
        """Read a settled entry (a regular file only) and carry out what the lane makes of it, unless
        the file is still being written (open for writing, or changed since it settled, checked before,
        during and after the read and again just before it is sealed or refused): then nothing is
        sent or refused, and it settles again."""
        content = error = None
        watcher = spool.watcher
        try:
            if entry.regular:
                try:
                    content = watcher.read(entry, limits.FILE_MAX)
                except (StillWriting, FileNotFoundError):
                    raise
                except OSError as e:
                    error = str(e)
            spooled = SpoolFile(entry.name, str(entry.path), entry.kind, entry.size, content, error)
            works = spool.lane.take(spooled, self.id.plan, now, wall)
            watcher.recheck(entry)
        except StillWriting as e:
            wait = watcher.busy(entry.name, now)
            if watcher.first_busy(entry.name):
                self.audit(**spool_waiting(
                    source=spool.lane.source, address=str(entry.path), name=entry.name, code=Reason.STILL_WRITING,
                    reason=f"still being written ({e}): not sent, taken once unchanged for {wait:g} s").fields)
                log.info("%s is still being written (%s): taken once it settles; a writer should write under "
                         "a dot-name or .part and rename it into the spool", entry.name, e)
            else:
                log.debug("%s is still being written (%s): settling again over %g s", entry.name, e, wait)
            return
        except FileNotFoundError:
            watcher.forget(entry.name)
            log.info("%s left the spool before it was taken", entry.name)
            return
        for work in works:
            if isinstance(work, SealObject):
                self.sender.submit(work.obj.object_id, work.obj.SerializeToString(), now, wall)
                self.sent.add(work, (entry.path, entry.stat))
            elif isinstance(work, AuditIntent):
                self.audit(**work.fields)
                self.stats["refused"] += 1
                log.info("refused %s: %s: %s", entry.name, work.fields["rule"], work.fields["reason"])
            elif isinstance(work, MoveAside):
                try:
                    move_aside(Path(work.address), spool.refused_dir)
                except OSError as e:
                    log.error("cannot move refused %s aside: %s", work.address, e)

    def note_partial_names(self, spool: _Spool) -> None:
        """Names a writer is still using (dot-names, .part...): never taken, each recorded once."""
        for name in spool.watcher.partial_names():
            self.audit(**spool_waiting(
                source=spool.lane.source, address=str(spool.watcher.directory / name), name=name,
                code=Reason.PARTIAL_NAME,
                reason="a dot-name or partial suffix: still being written, taken once renamed").fields)

    def settle_pending(self, spool: _Spool, now: float, wall: float) -> None:
        """Seal what was submitted, tie objects to blocks, keep the files (journaled, moved into
        the kept folder), then write their records: only then may their blocks leave."""
        self.sender.flush(now, wall)
        self.sender_events()
        done = self.sent.complete()
        fresh = [(Kept(c.record.fields, c.created, str(c.record.fields["object_id"])), *c.token) for c in done
                 if self.state is None or c.token[0].parent != self.state.kept_dir]
        if self.state is not None:
            try:
                kept = self.state.keep(fresh)
            except OSError as e:          # the journal cannot be written: these cannot be re-sent
                log.error("sent-file journal %s: %s", self.state.journal, e)
                kept = [(k, path, e) for k, path, _ in fresh]
            seen = {id(path): st for _, path, st in fresh}
            for k, path, err in kept:
                if err is not None:      # not kept: removed as before (it cannot be re-sent), unless changed
                    log.error("cannot keep sent file %s in %s: %s", path, self.state.kept_dir, err)
                    self.remove_sent(path, seen.get(id(path)))
        for record, (path, stat), _ in done:
            self.audit(**record.fields)
            if self.state is not None:
                self.state.kept.sealed(record.fields["object_id"], record.fields["blocks"])
            else:
                self.remove_sent(path, stat)
            name = record.fields["detail"]["name"]
            spool.watcher.forget(name)
            self.stats["sent"] += 1
            b = record.fields["blocks"]
            log.info("%s %s (object %d, blocks %s)", "re-sent" if record.fields["detail"].get("resent") else "sent",
                     name, record.fields["object_id"], f"{b[0]}-{b[-1]}" if b else "-")
        self.pump.collect(now)

    @staticmethod
    def remove_sent(path: Path, stat: SpoolStat | None) -> None:
        """Remove a sent spool file, unless a writer changed or replaced it since it was read."""
        try:
            changed = remove_if_same(path, stat)
        except OSError as e:
            log.error("cannot remove sent file %s: %s", path, e)
            return
        if changed is not None:
            log.warning("sent file %s changed since it was read (%s): left in the spool, taken as a new file",
                        path, changed)

    def check_kept(self, wall: float) -> None:
        """Note the kept files whose blocks have all left; remove those kept long enough."""
        st = self.state
        if st is None or not st.kept.entries:
            return
        try:
            st.append(st.kept.blocks_left(self.pump.writer.next_block_sent, wall))
            for k in st.kept.expired(wall):
                st.remove(k)
                log.debug("removed kept file %s (object %d)", k.name, k.object_id)
        except OSError as e:
            log.error("sent-file journal %s: %s", st.journal, e)

    def resend_kept(self, spool: _Spool) -> None:
        """At start, before the spool is scanned: each file kept by an earlier run is re-sent
        with its object ID, content and created time (the inner agent drops a copy it already
        delivered), forgotten (it left and its keep time passed), or named lost."""
        st = self.state
        assert st is not None
        problems = st.load()
        for problem in problems:
            log.warning("%s", problem)
        found = len(st.kept.entries)
        tally = {"resent": 0, "forgotten": 0, "lost": 0}
        now, wall = time.monotonic(), time.time()
        plan = self.id.plan
        for k in sorted(st.kept.entries.values(), key=lambda k: k.object_id):
            kept = st.path(k)
            address = Path(k.record.get("source", {}).get("address", ""))
            if k.left_at is None and not kept.exists() and address.name == k.name:
                # killed between journaling and moving it: the file is still in the spool
                content = as_sent(k.record, st.read_at(address))
                if content is not None and sm3(content).hex() == k.record["sm3"]:
                    os.rename(address, kept)
            content = as_sent(k.record, st.read(k, limits.FILE_MAX))   # a re-encoded picture: as it crossed
            what = after_restart(k, content, wall, st.kept.keep_after_sent)
            obj = decision = None
            if not isinstance(what, (Forget, NotResent)):
                assert content is not None
                obj = make_file_object(object_id=k.object_id, name=k.name, content=content,
                                       source=spool.lane.source, destination=spool.lane.destination, now=k.created)
                obj.resent = True
                decision = plan.decide(obj)
                if not decision.allowed:
                    what = NotResent(decision.code or Reason.DEFAULT_DENY,
                                     f"not re-sent after a restart: the policy refuses it now: {decision.reason}")
            if isinstance(what, Forget):
                log.debug("kept file %s (object %d) forgotten: %s", k.name, k.object_id, what.why)
                tally["forgotten"] += 1
                st.remove(k)
            elif isinstance(what, NotResent):
                moved = None
                if kept.exists():
                    try:
                        moved = str(move_aside(kept, spool.refused_dir))
                    except OSError as e:
                        log.error("cannot move kept file %s aside: %s", kept, e)
                self.audit(event="object_lost", verdict="lost", lane=k.record.get("lane"), object_id=k.object_id,
                           object_type="file", size=k.record.get("size"), sm3=k.record["sm3"], code=what.code,
                           reason=what.reason, detail={"name": k.name, **({"moved_to": moved} if moved else {})})
                log.warning("kept file %s (object %d) not re-sent: %s", k.name, k.object_id, what.reason)
                tally["lost"] += 1
                st.remove(k)
            else:
                assert obj is not None and decision is not None
                obj.rule = decision.rule
                record = {key: v for key, v in k.record.items() if key not in ("epoch", "blocks", "code")}
                record.update(policy_hash=plan.hash.hex(), rule=decision.rule, reason=decision.reason,
                              detail={**k.record["detail"], "resent": True})
                self.sender.submit(obj.object_id, obj.SerializeToString(), now, wall)
                self.sent.add(SealObject(obj, sent=record), (kept, None))
                tally["resent"] += 1
        if found or problems:
            self.audit(event="sent_files_loaded", verdict="info",
                       reason=f"{found} sent file(s) kept by an earlier run: {tally['resent']} re-sent, "
                              f"{tally['forgotten']} left and removed, {tally['lost']} lost",
                       detail={"journal": str(st.journal), "kept_dir": str(st.kept_dir), **tally,
                               **({"problems": problems} if problems else {})})
        for orphan in st.orphans():
            log.warning("kept folder %s holds %s, which no journal entry names: left alone", st.kept_dir, orphan.name)
        st.compact()
        if self.sent:
            self.settle_pending(spool, now, wall)

    def sender_events(self) -> None:
        """Tie sealed blocks to the objects in them; audit key announcements."""
        while (ev := self.sender.next_event()) is not None:
            if isinstance(ev, BlockSealed):
                self.sent.block_sealed(ev)
                if self.signaling:
                    self.signaling.block_sealed(ev)
            elif isinstance(ev, KeyAnnounced):
                self.save_epoch(ev.epoch)
                self.audit(event="key_announced", verdict="info", epoch=ev.epoch,
                           reason="SM4 session key announced to the inner agent")
            elif isinstance(ev, KeyRotated) and ev.reason == "clock":
                # the wall clock stepped: the new epoch's validity is written from the new clock
                self.audit(event="key_announced", verdict="info", epoch=ev.epoch,
                           reason=f"key rotated: clock: the wall clock stepped {ev.clock_step:+.0f} s against "
                                  "the monotonic clock; the new key's validity is written from the new clock",
                           detail={"clock_step": round(ev.clock_step, 3)})
                log.warning("wall clock stepped %+.0f s: key rotated to epoch %d", ev.clock_step, ev.epoch)
            elif isinstance(ev, KeyRotated):
                self.audit(event="key_announced", verdict="info", epoch=ev.epoch, reason=f"key rotated: {ev.reason}")

    def scan_spool(self, spool: _Spool) -> None:
        """The spool timer: take what settled (unless the trail or the link is behind), re-arm."""
        now, wall = time.monotonic(), time.time()
        if self.pump.held:
            self.flush_audit()
        elif self.pump.backlog() < 4096:
            ready = spool.watcher.scan(now)
            self.note_partial_names(spool)
            for entry in ready:
                self.take_file(spool, entry, now, wall)
                if self.pump.held:
                    break
            if self.sent:
                self.settle_pending(spool, now, wall)
        self.check_kept(wall)
        self.scan_timer = asyncio.get_running_loop().call_later(spool.interval, self.scan_spool, spool)

    # -- management (ManagedAgent via PolicyHost) --------------------------------------
    def policy_swapped(self, old: Plan, new: Plan, wall: float) -> None:
        """A new plan is in place: announce its hash to the inner agent right away."""
        self.stats["policy_reloads"] += 1
        now = time.monotonic()
        self.sender.set_policy_hash(new.hash, now)
        self.pump.collect(now)
        if self.reverse is not None:
            self.reverse.policy_swapped(old)

    def audit_available(self) -> bool:
        return not self.pump.held

    def register_reverse_handler(self, request: str, handler: ReverseHandler) -> None:
        """Serve a reverse request (start_stream, stop_stream, ptz, catalog_query): see agents/reverse_receiver.py."""
        if self.reverse is None:
            raise RuntimeError("no [reverse] section: this outer agent receives no reverse requests")
        self.reverse.register(request, handler)

    def status_counters(self) -> dict[str, int]:
        c = self.sender.counters
        video = self.video.stats if self.video else {}
        return {**self.stats, **video, "blocks": c.blocks, "datagrams": c.datagrams, "bytes": c.bytes,
                "objects": c.objects, "epoch": c.epoch, "outbox": self.pump.backlog(),
                "send_errors": self.pump.writer.errors,
                **({"video_refused_streams": self.video.refused_streams} if self.video else {}),
                **(self.signaling.counters() if self.signaling else {}),
                **(self.media.counters() if self.media else {})}

    def key_epoch(self) -> int:
        return int(self.sender.counters.epoch)

    def audit_path(self) -> str:
        return str(Path(self.cfg.agent.audit_dir) / "audit.jsonl")

    def flows(self) -> dict[str, list[dict[str, Any]]]:
        """Video streams open now; files sent and kept: "sending" until their last block left."""
        files = [{"name": k.name, "object_id": k.object_id, "size": int(k.record.get("size", 0)),
                  "state": "sending" if k.left_at is None else "kept"}
                 for k in (self.state.kept.entries.values() if self.state else ())]
        return {"streams": self.video.flows() if self.video else [], "files": files}

    def uptime(self) -> float:
        return time.monotonic() - self.started_mono

    def link_view(self) -> LinkView:
        self.pump.check_link(time.time())
        return self.pump.view.view

    def lane_counters(self) -> dict[str, dict[str, int]]:
        """Counters per configured lane (a refused camera counts as refused in the video lane)."""
        lanes: dict[str, dict[str, int]] = {}
        if self.spool:
            lanes["files"] = {"sent": self.stats["sent"], "refused": self.stats["refused"]}
        if self.video:
            lanes["video"] = self.video.lane_counters()
        if self.signaling:
            lanes["signaling"] = self.signaling.lane_counters()
        if self.reverse is not None:
            lanes["reverse"] = {**self.reverse.counters(), "link_up": int(self.reverse.link.state == "up")}
        return lanes

    # -- life cycle -------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> int:
        await self.management.start(self)
        link = self.cfg.link
        self.audit(event="agent_started", verdict="info", reason=f"outer agent {self.name} started",
                   detail={"peer": f"{link.peer_host}:{link.peer_port}", "gso": self.sock.gso,
                           "rate_mbps": link.rate_mbps})
        self.audit(event="policy_loaded", verdict="info", reason=f"policy {self.id.plan.name} loaded")
        self.start_kernel_rules()
        log.info("outer agent %s: policy %s (%s), link to %s:%d, gso=%s", self.name, self.id.plan.name,
                 self.id.plan.hash.hex()[:16], link.peer_host, link.peer_port, self.sock.gso)
        pump = asyncio.create_task(self.pump.run(stop))
        signer = asyncio.create_task(sign_quiet_tail(self.id.audit, stop))
        start_forwarder(self.cfg.audit.forward, self.id.audit.path, self.cfg.agent.state_dir, self.audit, stop)
        if self.spool:
            self.resend_kept(self.spool)
            self.scan_spool(self.spool)
        if self.video:
            await self.video.start(stop)
        if self.signaling:
            await self.signaling.start()
        reverse = asyncio.create_task(self.reverse.run(stop)) if self.reverse is not None else None
        if self.media:      # issue 13 "media-outer": it serves start_stream, stop_stream, ptz, catalog_query
            if self.reverse is not None:
                self.media.register_handlers(self.register_reverse_handler)
            await self.media.start()
        await stop.wait()
        if reverse is not None and self.reverse is not None:
            self.reverse.wake.set()
            await asyncio.gather(reverse, return_exceptions=True)
        await asyncio.gather(signer, return_exceptions=True)
        if self.scan_timer is not None:
            self.scan_timer.cancel()
        if self.media:
            await self.media.stop()     # BYE every camera dialog
        if self.video:
            await self.video.stop()     # ends every stream: their last access units and records
        if self.signaling:
            await self.signaling.stop()
        await self.management.stop()
        pump.cancel()
        await asyncio.gather(pump, return_exceptions=True)
        # final flush: what is sealed goes out, then a last heartbeat
        now, wall = time.monotonic(), time.time()
        self.sender.flush(now, wall)
        self.pump.collect(now)
        await self.pump.drain()
        failed = self.pump.writer.error
        if failed is not None:
            self.audit(event="link_writer_failed", verdict="alarm",
                       reason=f"link writer failed: {type(failed).__name__}: {failed}")
        self.audit(event="agent_stopped", verdict="info", reason="outer agent stopped", detail=dict(self.stats))
        self.check_kept(time.time())    # what drained has left
        if self.state is not None:
            self.state.close()
        self.id.audit.close(time.time())
        self.sock.close()
        return 1 if failed is not None else 0


def main(cfg: OuterConfig) -> int:
    return run_agent(OuterAgent, cfg)
