"""LinkReceiver: the inner side of the ferry link, sans-IO.

Datagrams in, events out. Two tiers (aioquic / WireGuard): unauthenticated input may only fill
bounded, short-lived buffers (partial blocks, rate-limited SM2 checks); block numbers, loss
reports and link state move only on authenticated data (an opened block or heartbeat, or a
verified announcement). Every buffer is bounded and times out.

This is the facade; each concept is a module of its own:
  assembly    FEC block assembly: pending blocks and their symbols (unauthenticated)
  epochs      key epochs: announcements accepted, the epoch table, overlap and retirement
  loss        loss accounting: which block numbers are resolved or lost, the late-joiner start
  reassembly  object reassembly from authenticated fragments (with `ranges`)
  liveness    heartbeats and link liveness
  report      counters, events, rate-limited drop and refusal events

Two clocks: `now` (monotonic) drives every timer; `wall` (the wall clock) is what validity is
checked against (announcements) and what events carry for the audit trail (LinkDown.since).

A bug is a bug: only the protocol's errors (WireError, CryptoError) are expected inside. Any
other exception raises if the receiver is `strict` (tests); otherwise the datagram (or timer
call) is dropped as "internal_error", the traceback is logged once (logger "ferry.wire") and
an `InternalError` event carries the error text to the caller, which raises an alarm.
"""

from __future__ import annotations

import logging

from ferry.reasons import Reason
from ferry import limits
from ferry.crypto import CryptoError, SM2PrivateKey, SM2PublicKey
from ferry.wire.assembly import BlockAssembly, rebuild
from ferry.wire.block import parse_fragments
from ferry.wire.bounded import Recent
from ferry.wire.epochs import Epoch, KeyEpochs
from ferry.wire.errors import WireError
from ferry.wire.events import InternalError, KeyAccepted, ReceiverEvent
from ferry.wire.frame import (
    SYMBOL_HEADER_SIZE,
    TYPE_ANNOUNCEMENT,
    TYPE_HEARTBEAT,
    TYPE_SYMBOL,
    block_header,
    block_nonce,
    datagram_type,
    parse_symbol_header,
)
from ferry.wire.liveness import Liveness, heartbeat_event, open_heartbeat
from ferry.wire.loss import BlockKey, Ledger, LossAccounting
from ferry.wire.reassembly import Reassembly
from ferry.wire.replay import ReplayWindow
from ferry.wire.resume import LinkState
from ferry.wire.report import ReceiverCounters, Report

__all__ = ["LinkReceiver", "ReceiverCounters"]

log = logging.getLogger("ferry.wire")


class LinkReceiver:
    """Receiver state machine: feed datagrams, collect events, drive timers. Bad input never raises."""

    def __init__(
        self, *, inner_key: SM2PrivateKey, outer_public: SM2PublicKey, now: float, strict: bool = False
    ) -> None:
        """`now` is monotonic. strict=True (tests): a bug raises instead of becoming an alarm."""
        self._strict = strict
        self._started = now
        self.report = report = Report(now)
        self.counters: ReceiverCounters = report.counters
        self.key_epochs = epochs = KeyEpochs(inner_key, outer_public, report, now)
        self.assembly = assembly = BlockAssembly(epochs, report)
        self.loss = loss = LossAccounting(report, assembly, lambda lk: reassembly.block_lost(lk))
        self.reassembly = reassembly = Reassembly(report, loss.lost)
        self.liveness = Liveness(report)
        self._add_symbol = assembly.add
        self._bugs: Recent[str, None] = Recent(limits.INTERNAL_ERRORS_LOGGED)

    # --- input --------------------------------------------------------------
    def receive_datagram(self, data: bytes | memoryview, now: float, wall: float) -> None:
        """Handle one datagram. Bad input becomes counters and events, never an exception."""
        report = self.report
        c = report.counters
        n = len(data)
        c.datagrams += 1
        c.bytes += n
        try:
            try:
                if (n > SYMBOL_HEADER_SIZE and data[3] == TYPE_SYMBOL) or datagram_type(data) == TYPE_SYMBOL:
                    fields = parse_symbol_header(data)  # the data path: one unpack, all checks
                    if self._add_symbol(fields, data, now) is not None:
                        self._open((fields[1], fields[2]), now)
                    return
            except WireError as e:
                report.drop(e.args[0], now)
                return
            t = data[3]
            if t == TYPE_ANNOUNCEMENT:
                self._on_announcement(data, now, wall)
            elif t == TYPE_HEARTBEAT:
                self._on_heartbeat(data, now, wall)
            else:
                report.drop(Reason.BAD_TYPE, now)
        except Exception as exc:  # noqa: BLE001 - a bug, not an input problem
            self._bug(exc, now)

    def receive_segments(self, buf: bytes | memoryview, segment_size: int, now: float, wall: float) -> None:
        """Handle a GRO batch: equal-size segments, the last may be shorter."""
        if segment_size <= 0:
            self.report.drop(Reason.BAD_SEGMENT_SIZE, now)
            return
        view = memoryview(buf)
        if view.ndim != 1 or view.itemsize != 1:
            view = view.cast("B")
        recv = self.receive_datagram
        for off in range(0, len(view), segment_size):
            recv(view[off : off + segment_size], now, wall)

    def _bug(self, exc: Exception, now: float) -> None:
        if self._strict:
            raise exc
        self.counters.internal_errors += 1
        self.report.drop(Reason.INTERNAL_ERROR, now)
        tb = exc.__traceback__
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        where = f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}" if tb is not None else "?"
        site = f"{type(exc).__name__}@{where}"  # one bug, one site: logged and alarmed once
        if site not in self._bugs:
            self._bugs.put(site, None)
            text = f"{type(exc).__name__}: {exc}"
            log.error("link receiver bug (input dropped): %s", text, exc_info=exc)
            self.report.events.append(InternalError(text))

    # --- blocks -------------------------------------------------------------
    def _open(self, key: BlockKey, now: float) -> None:
        """Rebuild, authenticate and deliver one block with k symbols."""
        assembly, report = self.assembly, self.report
        p = assembly.take(key)
        epoch, block_no = key
        ep = self.key_epochs.epochs[epoch]
        try:
            sealed, repaired = rebuild(p)
        except WireError:
            assembly.failed(key, Reason.FEC)
            report.drop(Reason.FEC_FAILED, now)
            return
        if not ep.replay.check(block_no):
            assembly.replayed(key, now)
            return
        try:
            header = block_header(epoch, block_no, p.k, p.m, p.sealed_len)
            plaintext = ep.aead.open(block_nonce(epoch, block_no), sealed, header)
        except CryptoError:
            assembly.failed(key, Reason.AUTH)
            report.refuse_block(epoch, block_no, Reason.AUTH, now)
            return
        # authenticated from here on
        assembly.opened(key, p)
        led = ep.ledger
        self.loss.opened(led, block_no, now)
        if repaired:
            report.counters.blocks_repaired += 1
        else:
            report.counters.blocks_ok += 1
        try:
            frags = parse_fragments(plaintext)
        except WireError:
            self.loss.report_lost(led, block_no, Reason.BAD_PLAINTEXT)
        else:
            self.reassembly.deliver(led, block_no, frags, now)
        self.loss.resolve(led, now)

    # --- announcements and heartbeats ---------------------------------------
    def _on_announcement(self, data: bytes | memoryview, now: float, wall: float) -> None:
        acc = self.key_epochs.accept(data, now, wall)
        if acc is None:
            return
        if acc.rotated_from is not None:  # its blocks below the new first block were all sent
            led = acc.rotated_from.ledger
            if led.start is None:  # no heartbeat of it came (a cut right after the first blocks): decide now
                age = acc.announcement.not_before - acc.rotated_from.not_before   # the epoch's, at least
                self.loss.join(led, now - self._started, age, acc.announcement.first_block, now)
            self.loss.advance(led, acc.announcement.first_block, now)
            if acc.rotated_from.epoch in self.key_epochs.epochs:
                self.loss.resolve(led, now)
            else:  # it retired (the link was cut longer than its validity): nothing more can open
                self.loss.force_resolve(led, led.frontier, now)
        if acc.unkeyed is not None:  # blocks of an epoch never keyed here, which this one continues
            epoch, lineage, first, end = acc.unkeyed
            self.loss.report_range(Ledger(epoch, lineage, first, ReplayWindow(), first), first, end)
        a = acc.announcement
        self.report.events.append(KeyAccepted(a.epoch, a.policy_hash, a.sender, a.not_before, a.not_after))
        if acc.new and acc.epoch is self.key_epochs.current:
            for key in self.assembly.held_keys(a.epoch):  # complete blocks waiting for this key
                if self.assembly.release(key, now) is not None:
                    self._open(key, now)

    def _on_heartbeat(self, data: bytes | memoryview, now: float, wall: float) -> None:
        got = open_heartbeat(data, self.key_epochs, self.report, now)
        if got is None:
            return
        ep, hb = got
        self.counters.heartbeats += 1
        led = ep.ledger
        self.loss.join(led, now - self._started, hb.sent_at - ep.not_before, hb.next_block, now)
        self.loss.advance(led, hb.next_block, now)
        self.liveness.heartbeat(now, wall)
        self.report.events.append(heartbeat_event(ep.epoch, hb))
        self.loss.resolve(led, now)

    # --- events and timers --------------------------------------------------
    def next_event(self) -> ReceiverEvent | None:
        events = self.report.events
        return events.popleft() if events else None

    def get_timer(self) -> float | None:
        """When handle_timer is due next (monotonic), None if nothing waits."""
        times = [
            self.assembly.next_timer(),
            self.reassembly.next_timer(),
            self.key_epochs.next_timer(),
            self.liveness.next_timer(),
            self.report.next_timer(),
        ]
        times += [ep.ledger.deadline for ep in self.key_epochs.epochs.values()]
        due = [t for t in times if t is not None]
        return min(due) if due else None

    def handle_timer(self, now: float) -> None:
        """Expire partial blocks, objects and old keys; report losses; link down; drop events."""
        try:
            self.assembly.handle_timer(now)
            self.reassembly.handle_timer(now)
            for ep in list(self.key_epochs.epochs.values()):
                deadline = ep.ledger.deadline
                if ep.retire_due(now):
                    self._retire(ep, now)
                elif deadline is not None and now >= deadline:
                    self.loss.resolve(ep.ledger, now)
            self.liveness.handle_timer(now)
            self.report.handle_timer(now)
        except Exception as exc:  # noqa: BLE001 - a bug
            self._bug(exc, now)

    def _retire(self, ep: Epoch, now: float) -> None:
        """Forget an epoch: its proven blocks still missing are lost, its partial blocks dropped."""
        self.loss.force_resolve(ep.ledger, ep.ledger.frontier, now)
        self.assembly.discard_epoch(ep.epoch)
        self.key_epochs.retire(ep)

    # --- across a restart (resume.py) ---------------------------------------
    def snapshot(self) -> LinkState:
        """What a restarted receiver needs to refuse replays and go on where this one stopped."""
        epochs = self.key_epochs
        cur = epochs.current
        announcement = cur.announcements[-1] if cur is not None and cur.announcements else b""
        opened = {e: ep.replay.last for e, ep in epochs.epochs.items() if ep.replay.last >= 0}
        return LinkState(epochs.floor, announcement, opened)

    def resume(self, state: LinkState, now: float, wall: float) -> bool:
        """Start from a stored state (before any datagram): the epoch floor, and the stored
        announcement checked again like a received one. True if its key was accepted."""
        epochs = self.key_epochs
        epochs.floor = max(epochs.floor, state.floor)
        if not state.announcement:
            return False
        epochs.resumed = dict(state.opened)
        try:
            before = epochs.current
            self._on_announcement(state.announcement, now, wall)
            return epochs.current is not before
        finally:
            epochs.resumed = {}

    def opened_high(self, epoch: int) -> int:
        """The highest block number opened in an epoch (-1 if none, or the epoch is gone)."""
        ep = self.key_epochs.epochs.get(epoch)
        return ep.replay.last if ep is not None else -1

    # --- introspection (tests, status) --------------------------------------
    @property
    def epochs(self) -> tuple[int, ...]:
        return tuple(sorted(self.key_epochs.epochs))

    @property
    def current_epoch(self) -> int | None:
        cur = self.key_epochs.current
        return cur.epoch if cur is not None else None

    @property
    def link_up(self) -> bool:
        return self.liveness.up

    def pending_sizes(self) -> dict[str, int]:
        """Sizes of every bounded buffer (for tests and status)."""
        return {
            "blocks": len(self.assembly.pending),
            "block_bytes": self.assembly.nbytes,
            "unknown_epoch_bytes": self.assembly.unknown_nbytes,
            "unknown_epoch_blocks": self.assembly.unknown,
            "objects": len(self.reassembly.objects),
            "object_bytes": self.reassembly.nbytes,
            "needs": len(self.reassembly.needs),
            "events": len(self.report.events),
        }
