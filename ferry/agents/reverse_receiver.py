"""The outer agent's end of the reverse ferry (issue 13): a receive-only UDP socket, a
``ferry.wire.LinkReceiver`` with the reverse keys of ``[reverse]``, ``ferry.lanes.reverse.
OuterReverseLane`` checking every request again, and a registry of handlers that serve them.

Whoever serves a request registers for it (``register_reverse_handler(request, handler)``; the
signaling lane registers start_stream, stop_stream, ptz and catalog_query). A handler gets the
``ReverseAction`` and returns nothing or a short text for the record; it is called on the agent's
loop and must not block. An allowed request with no handler is recorded ``request_unserved``
(code ``unserved``); a handler that raises, the same with code ``handler_failed`` (logged). The
reverse link's own events (key epochs, losses, drops, link down/up) are written as the inner
agent writes its link's, prefixed ``reverse_``, so that ``ferry audit reconcile`` of the forward
ferry never mistakes them for its own.

Replays across restarts: the lane's ``ReverseFloor`` (the highest request object ID taken) is kept
in ``<state_dir>/reverse-floor`` (``ReverseState``), replaced atomically (a temporary file, fsync,
rename, fsync of the folder) after a read of the link took a new request and before any of them is
served, so a kill -9 at any point leaves the old floor with the request unserved, or the new one.
On the agent's loop a thread writes it (``_keeper``) while the read's records and requests wait.
A file that cannot be read or decoded is an alarm (``reverse_state_problem``) and the lane refuses
what was created before the start plus the clock skew; a floor that cannot be written costs the
requests taken meanwhile (``request_unserved``, code ``output_failed``), never a replay.

The forward ferry never depends on this one: nothing here can block the loop or stop the agent
(the floor's fsyncs are in a thread).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ferry import limits
from ferry.agents.link_io import LinkReceiveSocket
from ferry.audit.budget import RefusalBudget
from ferry.config import ConfigError, OuterReverse
from ferry.crypto.keys import load_private_key, load_public_key
from ferry.durable import replace_durably
from ferry.lanes.inner import InnerDispatch
from ferry.lanes.reverse import (OuterReverseLane, ReverseAction, ReverseFloor, decode_floor, encode_floor,
                                 restart_floor, unserved)
from ferry.lanes.work import AuditIntent
from ferry.mgmt.host import LinkView
from ferry.pb import ferry_pb2
from ferry.policy import Plan
from ferry.policy.plan import Decision
from ferry.reasons import Reason
from ferry.wire import LinkReceiver
from ferry.wire import events as ev

log = logging.getLogger("ferry.outer.reverse")
ReverseHandler = Callable[[ReverseAction], object]


def check_key_mode(path: str, what: str) -> None:
    """A reverse private key other users may read or change stops the start (as [agent] key does)."""
    try:
        st = os.stat(path)
    except OSError:
        return              # the loader names it
    if st.st_mode & 0o077:
        raise ConfigError(f"refusing to start: {path} ({what}): mode {stat.S_IMODE(st.st_mode):04o} lets other "
                          f"users read or change the private key; fix: chmod 600 {path}")


STATE_FILE = "reverse-floor"


class ReverseState:
    """``<state_dir>/reverse-floor``: the reverse lane's floor across the agent's restarts."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / STATE_FILE

    def load(self, wall: float) -> tuple[ReverseFloor, str | None]:
        """The floor to start with, and why the file could not be used (None if it could)."""
        for tmp in self.path.parent.glob(f".{STATE_FILE}.*.tmp"):     # a write a crash cut short
            with contextlib.suppress(OSError):
                tmp.unlink()
        problem = None
        stored = None
        try:
            stored = decode_floor(self.path.read_bytes())
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as e:
            problem = f"{self.path}: {e}"
        floor = restart_floor(stored, problem is None, wall)
        if problem is not None:
            problem += (f"; refusing reverse requests created before {floor.not_before} (the start plus the "
                        f"{limits.CLOCK_SKEW:.0f} s clock skew) as possible replays")
            try:
                self.save(floor)       # a second restart within the window keeps refusing them
            except OSError as e:
                problem += f"; and it cannot be replaced: {e.strerror or e}"
        return floor, problem

    def save(self, floor: ReverseFloor) -> None:
        """Durably (OSError to the caller)."""
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        replace_durably(self.path, encode_floor(floor))


class _NoVideo:
    """The reverse link carries no video: InnerDispatch only turns its link events into records."""

    def deliver(self, obj: ferry_pb2.CanonicalObject, decision: Decision, now: float,
                wall: float) -> Sequence[object]:
        return []

    def refuse(self, obj: ferry_pb2.CanonicalObject, decision: Decision, now: float,
               wall: float) -> Sequence[object]:
        return []


def _reverse_record(fields: dict[str, Any]) -> dict[str, Any]:
    """A link event's record, as the reverse link's (the sender there is the inner agent)."""
    out = dict(fields)
    out["event"] = "reverse_" + str(fields["event"])
    if isinstance(out.get("reason"), str):
        out["reason"] = "reverse link: " + out["reason"].replace("outer agent", "inner agent")
    return out


class ReverseReceiver:
    """Reads the reverse link on the outer agent's loop; ``audit(fields)`` writes a record."""

    def __init__(self, cfg: OuterReverse, plan: Callable[[], Plan], audit: Callable[[dict[str, Any]], object],
                 state_dir: Path | None = None) -> None:
        check_key_mode(cfg.key, "[reverse] key")
        key = load_private_key(Path(cfg.key))
        peer = load_public_key(Path(cfg.peer_public))
        self.plan, self._audit = plan, audit
        now = time.monotonic()
        self.strict = os.environ.get("FERRY_STRICT") == "1"
        self.receiver = LinkReceiver(inner_key=key, outer_public=peer, now=now, strict=self.strict)
        try:
            self.sock = LinkReceiveSocket((cfg.listen_host, cfg.listen_port), interface=cfg.interface,
                                          rcvbuf=cfg.rcvbuf)
        except OSError as e:
            raise ConfigError(f"[reverse] listen_host/listen_port {cfg.listen_host}:{cfg.listen_port}"
                              f"{' interface ' + cfg.interface if cfg.interface else ''}: cannot listen: "
                              f"{e.strerror or e}") from None
        if not self.sock.check_receive_only():
            raise RuntimeError("the reverse link socket is not receive-only; refusing to run")
        self.events = InnerDispatch(_NoVideo(), files_output=False)
        # the floor of replays across restarts (None: kept in memory only, as in unit tests)
        self.store = ReverseState(state_dir) if state_dir is not None else None
        floor, self.state_problem = self.store.load(time.time()) if self.store else (ReverseFloor(), None)
        self.lane = OuterReverseLane(floor)
        self.saved = floor.object_id
        self.held: list[Any] = []           # work waiting for the floor's write
        self.keeper: asyncio.Task[None] | None = None
        self.keep_wake = asyncio.Event()
        self.handlers: dict[str, ReverseHandler] = {}
        self.link = LinkView("down", time.time(), "no authenticated heartbeat from the inner agent yet")
        self.counts = {"served": 0, "unserved": 0, "handler_failed": 0}
        # the link's refusal records, capped per (event, code) per hour as on the inner agent's link
        self.budget = RefusalBudget(limits.AUDIT_REFUSALS_PER_REASON_PER_HOUR, now)
        self.wake = asyncio.Event()

    # -- handlers --------------------------------------------------------------------------
    def register(self, request: str, handler: ReverseHandler) -> None:
        """Serve ``request`` (start_stream, stop_stream, ptz, catalog_query) with ``handler``."""
        self.handlers[request] = handler

    def serve(self, action: ReverseAction) -> None:
        handler = self.handlers.get(action.request)
        if handler is None:
            self.counts["unserved"] += 1
            self._audit(unserved(action, f"no handler serves {action.request} on this agent",
                                 Reason.UNSERVED).fields)
            return
        try:
            note = handler(action)
        except Exception as e:   # a handler's bug costs its request, never the agent
            log.exception("reverse handler for %s failed", action.request)
            self.counts["handler_failed"] += 1
            self._audit(unserved(action, f"handler for {action.request} failed: {type(e).__name__}: {e}",
                                 Reason.HANDLER_FAILED).fields)
            return
        self.counts["served"] += 1
        self._audit({"event": "request_served", "verdict": "info", "lane": "reverse", "object_id": action.object_id,
                     "object_type": action.request,
                     "reason": f"{action.request} of {action.device_id} served"
                               + (f": {note}" if isinstance(note, str) and note else ""),
                     "detail": {"device_id": action.device_id, "operator": action.operator}})

    # -- the link --------------------------------------------------------------------------
    def drain(self, now: float, wall: float) -> None:
        self.act(self.collect(now, wall))

    def collect(self, now: float, wall: float) -> list[Any]:
        """The work of the link's pending events (nothing written or served yet)."""
        plan = self.plan()
        work: list[Any] = []
        while (e := self.receiver.next_event()) is not None:
            if isinstance(e, ev.ObjectReceived):
                work += self.lane.take(e, plan, now, wall)
            else:
                if isinstance(e, ev.LinkDown):
                    self.link = LinkView("down", e.since, "reverse link: no authenticated heartbeat from the "
                                         "inner agent")
                    log.warning("reverse link down")
                elif isinstance(e, ev.LinkUp):
                    self.link = LinkView("up", wall, "reverse link: authenticated heartbeats")
                    log.info("reverse link up")
                work += [AuditIntent(_reverse_record(f)) for w in self.events.handle(e, plan, now, wall)
                         if isinstance(w, AuditIntent) for f in self.budget.offer(w.fields, now, wall)]
        return work

    def act(self, work: list[Any]) -> None:
        """Write the records and serve the requests, once the floor is kept if a request was taken.
        On the loop the floor is written by a thread (``_keeper``), the work held meanwhile: a write
        (two fsyncs) never stalls the agent's loop; elsewhere (tests) it is written here."""
        if self.store is None or (not self.held and self.lane.high <= self.saved):
            self._do(work, None)
            return
        self.held.extend(work)
        if self.keeper is None:
            items, self.held = self.held, []
            self._do(items, self.keep_floor())
        else:
            self.keep_wake.set()

    def _do(self, work: list[Any], failed: str | None) -> None:
        for w in work:
            if isinstance(w, AuditIntent):
                self._audit(w.fields)
            elif isinstance(w, ReverseAction):
                if failed is None:
                    self.serve(w)
                else:
                    self.counts["unserved"] += 1
                    self._audit(unserved(w, f"the reverse floor could not be kept ({failed}): not served, so "
                                         "that a replay after a restart cannot serve it again",
                                         Reason.OUTPUT_FAILED).fields)

    def keep_floor(self) -> str | None:
        """Write the floor here if the lane took a higher request ID; why it failed, or None."""
        if self.store is None or self.lane.high <= self.saved:
            return None
        state = self.lane.state()
        try:
            self.store.save(state)
        except OSError as e:
            return self._save_failed(e)
        self.saved = state.object_id
        return None

    def _save_failed(self, e: OSError) -> str:
        assert self.store is not None
        log.error("reverse link: cannot keep the floor in %s: %s", self.store.path, e)
        return f"{self.store.path}: {e.strerror or e}"

    async def _keeper(self, stop: asyncio.Event) -> None:
        """The floor's writer on the loop: each round writes the lane's floor in a thread, then does
        the work held until then (taken before that floor was read, so covered by it)."""
        loop = asyncio.get_running_loop()
        assert self.store is not None
        while True:
            while self.held:
                items, self.held = self.held, []
                state = self.lane.state()
                failed = None
                if state.object_id > self.saved:
                    try:
                        await loop.run_in_executor(None, self.store.save, state)
                        self.saved = state.object_id
                    except OSError as e:
                        failed = self._save_failed(e)
                try:
                    self._do(items, failed)
                except Exception as e:      # as on_readable: a bug here must not stop the agent
                    if self.strict:
                        raise
                    log.exception("reverse link: internal error")
                    self._audit({"event": "reverse_internal_error", "verdict": "alarm", "code": Reason.INTERNAL_ERROR,
                                 "reason": f"reverse link: internal error: {type(e).__name__}: {e}"})
            if stop.is_set():
                return
            self.keep_wake.clear()
            await self.keep_wake.wait()

    def on_readable(self) -> None:
        try:
            self._read()
        except Exception as e:      # a bug here must not stop the agent and its forward lanes
            if self.strict:
                raise
            log.exception("reverse link: internal error")
            self._audit({"event": "reverse_internal_error", "verdict": "alarm", "code": Reason.INTERNAL_ERROR,
                         "reason": f"reverse link: internal error: {type(e).__name__}: {e}"})
        self.wake.set()

    def _read(self) -> None:
        now, wall = time.monotonic(), time.time()
        work: list[Any] = []
        for _ in range(limits.LINK_READS_PER_WAKE):
            got = self.sock.receive()
            if got is None:
                break
            buf, seg = got
            self.receiver.receive_segments(buf, seg, now, wall)
            work += self.collect(now, wall)
        self.act(work)          # one floor for the whole read

    def counters(self) -> dict[str, int]:
        c = self.receiver.counters
        return {**self.lane.counts, **self.counts, "datagrams": c.datagrams,
                "epoch": int(self.receiver.key_epochs.current.epoch) if self.receiver.key_epochs.current else 0}

    def policy_swapped(self, old: Plan) -> None:
        self.events.policy_swapped(old.hash, time.monotonic())

    def started(self) -> None:
        """The state's records, once the agent's trail is open."""
        if self.state_problem is not None:
            self._audit({"event": "reverse_state_problem", "verdict": "alarm",
                         "reason": f"reverse link state: {self.state_problem}"})
        if self.store is not None:
            f = self.lane.floor
            self._audit({"event": "reverse_state_loaded", "verdict": "info",
                         "reason": f"reverse requests at or below object ID {f.object_id} are refused as replays"
                                   + (f", and those created before {f.not_before}" if f.not_before else ""),
                         "detail": {"state_file": str(self.store.path), "floor": f.object_id,
                                    "not_before": f.not_before}})

    async def run(self, stop: asyncio.Event) -> None:
        self.started()
        loop = asyncio.get_running_loop()
        if self.store is not None:
            self.keeper = asyncio.create_task(self._keeper(stop))
        loop.add_reader(self.sock.sock.fileno(), self.on_readable)
        try:
            while not stop.is_set():
                now, wall = time.monotonic(), time.time()
                t = self.receiver.get_timer()
                if t is not None and t <= now:
                    self.receiver.handle_timer(now)
                    self.drain(now, wall)
                b = self.budget.next_timer()
                if b is not None and b <= now:
                    for f in self.budget.handle_timer(now):
                        self._audit(_reverse_record(f))
                t = self.receiver.get_timer()
                delay = limits.INNER_TIMER_MAX if t is None else max(limits.INNER_TIMER_MIN,
                                                                     min(limits.INNER_TIMER_MAX, t - now))
                self.wake.clear()
                try:
                    await asyncio.wait_for(self.wake.wait(), delay)
                except asyncio.TimeoutError:
                    pass
        finally:
            loop.remove_reader(self.sock.sock.fileno())
            self.sock.close()
            if self.keeper is not None:        # the work held: done once its floor is written
                self.keep_wake.set()
                done = await asyncio.gather(self.keeper, return_exceptions=True)
                self.keeper = None
                if self.strict and isinstance(done[0], Exception):
                    raise done[0]
            for f in self.budget.close():
                self._audit(_reverse_record(f))
