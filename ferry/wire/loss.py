"""Loss accounting of one link: which block numbers are resolved (opened or reported lost).

Only authenticated data moves it (an opened block, an authenticated heartbeat, a verified
rotation). Per key epoch a `Ledger` holds:

- `start`: the first block number accounted for. A receiver keyed before an epoch began knows
  it from the announcement (first_block); a fresh receiver meeting an epoch already under way
  (a restart, a late joiner) decides it later (`decide_start`): from the first heartbeat, or
  where the replay window would forget the lowest block it opened;
- `frontier`: blocks below it are proven sent (a later block opened, a heartbeat's next_block),
  each proof remembered with the time it came (`proofs`);
- `resolved`: blocks below it are opened or reported lost. A proven block still missing is
  reported lost BLOCK_TIMEOUT after its proof (or its first symbol, if later), or at once
  when it leaves the replay window.

A lost block is reported once per lineage (epochs joined by rotation continue block numbers).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Protocol

from ferry.reasons import Reason
from ferry import limits
from ferry.wire.bounded import Recent
from ferry.wire.events import BlockLost
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
        """The first authenticated heartbeat of an epoch whose start is undecided.

        Durations on one clock each (receiver_age on ours, epoch_age on the sender's), so clock
        offsets do not matter: a receiver about as old as the epoch saw it from its first block;
        a younger one joined mid-way and counts from what it saw."""
        if led.start is not None:
            return
        if receiver_age + limits.LATE_JOIN_AGE_MARGIN >= epoch_age:
            self.decide_start(led, led.first_block, now)
        else:
            low = led.lowest_opened
            self.decide_start(led, next_block if low is None else min(low, next_block), now)

    def decide_start(self, led: Ledger, start: int, now: float) -> None:
        start = max(start, led.first_block)
        led.start = led.resolved = led.frontier = start
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
        retires). Work is bounded by the window, not the block numbers: a run of missing blocks
        is one record (`_run`)."""
        replay = led.replay
        lost = self.lost
        plain_until = led.resolved
        while led.resolved < upto:
            b = led.resolved
            if replay.seen(b) or (led.lineage, b) in lost:
                led.resolved = b + 1
                continue
            plain_until = self._report_run(led, b, upto, plain_until)
            if led.resolved > b:
                continue
            led.resolved = b + 1
            self.report_lost(led, b, self._pending.failure((led.epoch, b)) or Reason.MISSING)
        proofs = led.proofs
        while proofs and proofs[0][0] <= led.resolved:
            proofs.popleft()

    def resolve(self, led: Ledger, now: float) -> None:
        """Report as lost the proven blocks whose grace time has passed: at most
        LOSS_REPORTS_PER_CALL records per call, the rest on the next timer (`deadline`)."""
        led.deadline = None
        replay = led.replay
        proofs = led.proofs
        pending = self._pending
        budget = limits.LOSS_REPORTS_PER_CALL
        plain_until = led.resolved
        while led.resolved < led.frontier:
            b = led.resolved
            if replay.seen(b) or (led.lineage, b) in self.lost:
                led.resolved = b + 1
                continue
            key = (led.epoch, b)
            while proofs and proofs[0][0] <= b:
                proofs.popleft()
            upto = proofs[0][0] if proofs else led.frontier  # the blocks proven at the same time as b
            t = proofs[0][1] if proofs else now
            if not replay.too_old(b):
                seen = pending.first_seen(key)
                if seen is not None and seen > t:
                    t = seen
                deadline = t + limits.BLOCK_TIMEOUT
                if now < deadline:
                    led.deadline = deadline
                    break
            elif now < t + limits.BLOCK_TIMEOUT:  # a run goes no further than the too old blocks
                upto = min(upto, replay.last - replay.size + 1)
            if budget == 0:
                led.deadline = now
                break
            budget -= 1
            plain_until = self._report_run(led, b, upto, plain_until)
            if led.resolved > b:
                continue
            reason = pending.failure(key)
            if pending.abandon(key):
                reason = reason or Reason.TIMEOUT
            self.report_lost(led, b, reason or Reason.MISSING)
            led.resolved = b + 1
        while proofs and proofs[0][0] <= led.resolved:
            proofs.popleft()

    def _report_run(self, led: Ledger, b: int, upto: int, plain_until: int) -> int:
        """At the missing block b = led.resolved: if a run of missing blocks starts there, report
        it as one record and move led.resolved past it. Returns the new plain_until."""
        if b < plain_until:
            return plain_until
        end, plain_until = self._run(led, b, upto)
        if end > b:
            self.report_range(led, b, end)
            led.resolved = end
        return plain_until

    def _run(self, led: Ledger, b: int, upto: int) -> tuple[int, int]:
        """A missing block b: (end, plain_until). If end > b, blocks [b, end) are one run to report
        as a single record: LOSS_RANGE_MIN or more blocks below upto, none opened (the replay
        window) and none pending or failed (the assembly). Otherwise report block by block up to
        plain_until (not asked again before it, so a long gap is scanned once)."""
        if upto - b < limits.LOSS_RANGE_MIN:
            return b, upto
        nxt = led.replay.next_seen(b)
        end = upto if nxt is None or nxt > upto else nxt
        if end - b < limits.LOSS_RANGE_MIN:
            return b, end
        known = self._pending.known_from(led.epoch, b, end)
        if known is None:
            return end, end
        if known - b >= limits.LOSS_RANGE_MIN:
            return known, known
        return b, known + 1

    def report_range(self, led: Ledger, block_no: int, end: int) -> None:
        """Blocks [block_no, end), none of them ever seen, are lost: one record. Objects the
        receiver knows of touch a run only at its ends (an object's blocks are consecutive)."""
        first, last = (led.lineage, block_no), (led.lineage, end - 1)
        self.lost.put(first, None)
        self.lost.put(last, None)
        self._report.counters.blocks_lost += end - block_no
        self._report.events.append(BlockLost(led.epoch, block_no, Reason.MISSING, end - block_no))
        self._on_lost(first)
        self._on_lost(last)

    def report_lost(self, led: Ledger, block_no: int, reason: Reason) -> None:
        lk = (led.lineage, block_no)
        self.lost.put(lk, None)
        self._report.counters.blocks_lost += 1
        self._report.events.append(BlockLost(led.epoch, block_no, reason))
        self._on_lost(lk)
