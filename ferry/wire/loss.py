"""Loss accounting of one link: which block numbers are resolved (opened or reported lost).

Only authenticated data moves it (an opened block, an authenticated heartbeat, a verified
rotation). Per key epoch a `Ledger` holds:

- `start`: the first block number accounted for. A receiver keyed before an epoch began knows
  it from the announcement (first_block); a fresh receiver meeting its first epoch (a first
  start, a restart, a late joiner) decides it later (`decide_start`): the lowest block it opened
  or the first heartbeat's next_block, or where the replay window would forget the lowest block
  it opened; a receiver that kept its link state across a restart gives it from outside;
- `frontier`: blocks below it are proven sent (a later block opened, a heartbeat's next_block),
  each proof remembered with the time it came (`proofs`);
- `resolved`: blocks below it are opened or reported lost. A proven block still missing is
  reported lost BLOCK_TIMEOUT after its proof (or its first symbol, if later), or at once
  when it leaves the replay window.

A loss is reported once per gap: the missing blocks between two opened ones are ONE `BlockLost`
(block_no, count), whatever their number, reported when all of them are due; a gap still open
at the frontier (proven only by heartbeats) is reported as it comes due. A lost block is
reported once per lineage (epochs joined by rotation continue block numbers). The objects the
receiver knows of that needed a lost block are lost (`Reassembly`), once each.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from itertools import islice
from typing import Protocol

from ferry.reasons import Reason
from ferry import limits
from ferry.wire.bounded import Recent
from ferry.wire.events import BlockLost, ObjectLost
from ferry.wire.replay import ReplayWindow
from ferry.wire.report import Report

BlockKey = tuple[int, int]  # (epoch, block_no): a block on the wire
LineageKey = tuple[int, int]  # (lineage, block_no): a block whatever epoch carried it


class Ledger:
    """Loss accounting state of one key epoch."""

    __slots__ = (
        "epoch", "lineage", "first_block", "replay", "start", "resolved", "frontier", "proofs",
        "deadline", "lowest_opened",
    )

    def __init__(self, epoch: int, lineage: int, first_block: int, replay: ReplayWindow, start: int | None) -> None:
        self.epoch = epoch
        self.lineage = lineage
        self.first_block = first_block
        self.replay = replay  # the epoch's: which block numbers were opened
        self.start = start  # None until decided (fresh receiver, epoch already under way)
        # blocks below are opened or reported lost; nothing below first_block is ever accounted
        self.resolved = start if start is not None else first_block
        self.frontier = self.resolved  # blocks below are proven sent
        self.proofs: deque[tuple[int, float]] = deque()  # (frontier, time it was proven)
        self.deadline: float | None = None  # when resolve() has more to do
        self.lowest_opened: int | None = None

    def missing_before_start(self, block_no: int) -> bool:
        """True if block_no precedes a start decided after the epoch began (never accounted)."""
        return self.start is not None and self.start > self.first_block and block_no < self.start


class PendingBlocks(Protocol):
    """What loss accounting asks of the block assembly."""

    def first_seen(self, key: BlockKey) -> float | None: ...

    def abandon(self, key: BlockKey) -> bool: ...

    def failure(self, key: BlockKey) -> Reason | None: ...

    def known_from(self, epoch: int, lo: int, hi: int) -> int | None: ...


class LossAccounting:
    """Resolves the block numbers of every epoch; reports BlockLost, once per lineage."""

    __slots__ = ("_report", "_pending", "_on_lost", "lost")

    def __init__(self, report: Report, pending: PendingBlocks, on_lost: Callable[[LineageKey], None]) -> None:
        self._report = report
        self._pending = pending
        self._on_lost = on_lost  # the reassembly's: objects that needed the block are lost
        self.lost: Recent[LineageKey, None] = Recent(limits.RECENT_MAX)

    def observe(self, led: Ledger, block_no: int, now: float) -> None:
        """An opened block of an epoch whose start is not decided yet: if the replay window would
        forget the lowest opened block first, accounting starts there."""
        if led.start is None:
            low = led.lowest_opened
            if low is None or block_no < low:
                led.lowest_opened = low = block_no
            if block_no - low >= led.replay.size - 1:
                self.decide_start(led, low, now)

    def join(self, led: Ledger, receiver_age: float, epoch_age: float, next_block: int, now: float) -> None:
        """The first authenticated heartbeat of an epoch whose start is undecided (the first
        epoch a receiver without stored link state meets).

        Durations on one clock each (receiver_age on ours, epoch_age on the sender's, from the
        heartbeat's sent_at), so clock offsets do not matter: a receiver about as old as the
        epoch saw it from its first block, and a block lost before the first one it opened is
        lost (issue 10: a fresh link's first block must not vanish unaccounted); a younger one
        joined mid-way and counts from what it saw. Heartbeats go ahead of queued data and claim
        only blocks that left (proto/WIRE.md §3a), so sent_at is fresh; a receiver that kept its
        link state across a restart never gets here (it resumes with its start given)."""
        if led.start is not None:
            return
        if receiver_age + limits.LATE_JOIN_AGE_MARGIN >= epoch_age:
            self.decide_start(led, led.first_block, now)
            return
        low = led.lowest_opened
        self.decide_start(led, next_block if low is None else min(low, next_block), now)

    def decide_start(self, led: Ledger, start: int, now: float) -> None:
        """Accounting starts at `start` (never below the epoch's first block). Also the way in
        for a start given from outside, before accounting began: a receiver that kept its link
        state across a restart starts at the block after the highest its previous run opened,
        so that nothing that run delivered is ever reported lost."""
        start = max(start, led.first_block)
        led.start = led.resolved = led.frontier = start
        led.deadline = None
        if led.replay.last >= start:
            self.advance(led, led.replay.last + 1, now)

    def advance(self, led: Ledger, frontier: int, now: float) -> None:
        """Blocks below frontier are now proven sent."""
        if led.start is not None and frontier > led.frontier:
            led.frontier = frontier
            proofs = led.proofs
            if proofs and proofs[-1][1] == now:
                proofs[-1] = (frontier, now)
            else:
                proofs.append((frontier, now))

    def opened(self, led: Ledger, block_no: int, now: float) -> None:
        """An authenticated block: blocks it pushes out of the replay window are resolved now."""
        self.observe(led, block_no, now)
        if led.start is not None:  # undecided: a late joiner accounts nothing before what it saw
            self.force_resolve(led, block_no - led.replay.size + 1, now)
        led.replay.mark(block_no)
        self.advance(led, block_no + 1, now)

    def force_resolve(self, led: Ledger, upto: int, now: float) -> None:
        """Resolve every block below upto at once (they are leaving the replay window, or the epoch
        retires), a gap at a time: work is bounded by the window, not the block numbers."""
        replay = led.replay
        lost = self.lost
        while led.resolved < upto:
            b = led.resolved
            if replay.seen(b) or (led.lineage, b) in lost:
                led.resolved = b + 1
                continue
            nxt = replay.next_seen(b)
            gap_end, reason, _ = self._scan(led, b, upto if nxt is None or nxt > upto else nxt, now, True, False)
            self.report_range(led, b, gap_end, reason)
            led.resolved = gap_end
            led.deadline = None  # resolve() decides again what it waits for
        proofs = led.proofs
        while proofs and proofs[0][0] <= led.resolved:
            proofs.popleft()

    def resolve(self, led: Ledger, now: float) -> None:
        """Report the proven missing blocks whose grace time has passed, ONE record per gap (the
        blocks from a missing one up to the next opened one). A gap closed by an opened block is
        reported once, when all of it is due (BLOCK_TIMEOUT after the proof of its last block, or
        after the first symbol of a block in it, if later); a gap still open at the frontier
        (proven by heartbeats only) reports what is due and goes on in a later record. At most
        LOSS_REPORTS_PER_CALL records per call, the rest on the next timer (`deadline`)."""
        replay = led.replay
        if led.deadline is not None and now < led.deadline and not replay.seen(led.resolved):
            return  # waiting for the gap at led.resolved (nothing before it can move)
        led.deadline = None
        proofs = led.proofs
        timeout = limits.BLOCK_TIMEOUT
        budget = limits.LOSS_REPORTS_PER_CALL
        while led.resolved < led.frontier:
            b = led.resolved
            if replay.seen(b) or (led.lineage, b) in self.lost:
                led.resolved = b + 1
                continue
            while proofs and proofs[0][0] <= b:
                proofs.popleft()
            nxt = replay.next_seen(b)
            closed = nxt is not None  # a block after the gap was opened: the gap is whole
            end = led.frontier if nxt is None else min(nxt, led.frontier)
            if replay.too_old(b):  # out of the window: its blocks can never be opened
                upto, wait, forced = min(end, replay.last - replay.size + 1), None, True
            else:
                (upto, wait), forced = self._due(led, b, end, now, timeout), False
                if wait is not None and (closed or upto == b):
                    led.deadline = wait
                    break
            if budget == 0:
                led.deadline = now
                break
            gap_end, reason, pending_wait = self._scan(led, b, upto, now, forced, closed)
            if gap_end == b:  # a pending block in its grace time holds the gap back
                led.deadline = pending_wait
                break
            budget -= 1
            self.report_range(led, b, gap_end, reason)
            led.resolved = gap_end
        while proofs and proofs[0][0] <= led.resolved:
            proofs.popleft()

    @staticmethod
    def _due(led: Ledger, b: int, end: int, now: float, timeout: float) -> tuple[int, float | None]:
        """Of the proven blocks [b, end): (upto, wait): [b, upto) are due now (their proofs are
        BLOCK_TIMEOUT old); wait is when the next one is, None if all are. The proofs walked
        are those inside the gap (heartbeats) and the one after it: a few."""
        upto = b
        for frontier, t in led.proofs:
            if t + timeout > now:
                return upto, t + timeout
            upto = min(frontier, end)
            if upto >= end:
                break
        return end, None

    def _scan(
        self, led: Ledger, b: int, end: int, now: float, forced: bool, whole: bool
    ) -> tuple[int, Reason, float | None]:
        """The gap from the missing block b (= led.resolved) up to at most end: (gap_end, reason,
        wait). It stops before a pending block still in its grace time (wait: when that ends;
        never when forced), and then, if the gap is to be reported whole, is nothing yet
        (gap_end == b); it stops before a block already reported. The pending blocks of the gap
        returned are given up. The reason: `missing` if no block of the gap was ever seen, else why the first
        seen one failed (`timeout`, `fec`, `auth`). Work: one look-up per block for at most
        LOSS_SCAN_BLOCKS blocks, then one scan of the assembly's bounded tables for the rest."""
        pending = self._pending
        epoch, lineage = led.epoch, led.lineage
        lost = self.lost
        timeout = limits.BLOCK_TIMEOUT
        reason: Reason | None = None
        wait: float | None = None
        give_up: list[BlockKey] = []
        near = min(end, b + limits.LOSS_SCAN_BLOCKS)
        n = b
        while n < near:
            key = (epoch, n)
            if n > b and (lineage, n) in lost:
                break
            seen = pending.first_seen(key)
            if seen is not None:
                if not forced and now < seen + timeout:
                    wait = seen + timeout
                    break
                give_up.append(key)
            if reason is None:
                reason = pending.failure(key) or (Reason.TIMEOUT if seen is not None else None)
            n += 1
        if wait is not None and whole:
            return b, Reason.MISSING, wait
        if n == near < end:  # a long gap: it ends at the first block the assembly knows of, if any
            known = pending.known_from(epoch, near, end)
            n = end if known is None else known
        for key in give_up:
            pending.abandon(key)
        return n, reason or Reason.MISSING, wait

    def report_range(self, led: Ledger, block_no: int, end: int, reason: Reason = Reason.MISSING) -> None:
        """Blocks [block_no, end), a gap, none of them opened, are lost. Objects the receiver
        knows of touch a gap only at its ends (an object's blocks are consecutive, and a block
        opened after its loss is not delivered: `Reassembly.deliver`); those that needed it are
        lost (`on_lost`: one ObjectLost each, with its block range). The gap is one BlockLost
        unless it lies inside one of them (it came on both sides): then its blocks carry
        nothing else, and that ObjectLost is the one record of the loss."""
        first, last = (led.lineage, block_no), (led.lineage, end - 1)
        self.lost.put(first, None)
        self.lost.put(last, None)
        self._report.counters.blocks_lost += end - block_no
        events = self._report.events
        before = len(events)
        self._on_lost(first)
        if last != first:
            self._on_lost(last)
        for e in islice(reversed(events), len(events) - before):  # the ObjectLost just added
            if isinstance(e, ObjectLost) and e.blocks[0] < block_no and e.blocks[1] >= end:
                return
        events.append(BlockLost(led.epoch, block_no, reason, end - block_no))

    def report_lost(self, led: Ledger, block_no: int, reason: Reason) -> None:
        lk = (led.lineage, block_no)
        self.lost.put(lk, None)
        self._report.counters.blocks_lost += 1
        self._report.events.append(BlockLost(led.epoch, block_no, reason))
        self._on_lost(lk)
