"""FEC block assembly: the symbols of partially received blocks (unauthenticated, bounded).

A symbol datagram (its header checked by `frame.parse_symbol_header`) joins a pending block or
starts one if the block is admissible: its epoch known and the block number inside the epoch's
replay window, or (a key not announced yet) among at most PENDING_UNKNOWN_EPOCH_MAX such
blocks. At most PENDING_BLOCKS_MAX blocks and PENDING_SYMBOL_BYTES_MAX symbol bytes are held;
a block waits BLOCK_TIMEOUT for its symbols, and a complete block of an unknown epoch KEY_WAIT
for its key. Nothing here is authenticated: a block with k symbols goes to the caller, which
rebuilds it (`rebuild`) and opens it. Opened blocks are remembered (`done`) to count late
repair symbols and to spot replays; failed ones (`failure`) to explain a loss.
"""

from __future__ import annotations

from ferry.reasons import Reason
from ferry import limits
from ferry.wire import fec
from ferry.wire.bounded import Recent
from ferry.wire.epochs import KeyEpochs
from ferry.wire.frame import SYMBOL_HEADER_SIZE, SymbolFields
from ferry.wire.loss import BlockKey
from ferry.wire.report import Report


class Pending:
    """A partially received block (unauthenticated)."""

    __slots__ = ("k", "m", "n", "symsize", "sealed_len", "symbols", "count", "nbytes", "first_seen", "complete")

    def __init__(self, k: int, m: int, sealed_len: int, now: float) -> None:
        self.k = k
        self.m = m
        self.n = k + m
        self.symsize = -(-sealed_len // k)
        self.sealed_len = sealed_len
        self.symbols: list[bytes | None] = [None] * (k + m)
        self.count = 0
        self.nbytes = 0
        self.first_seen = now
        self.complete = False  # k symbols held, waiting for the epoch's key

    def mask(self) -> int:
        """Bit i set: symbol i is held."""
        mask = 0
        for i, s in enumerate(self.symbols):
            if s is not None:
                mask |= 1 << i
        return mask


def rebuild(p: Pending) -> tuple[bytes, bool]:
    """The sealed block from k symbols, and whether repair symbols were needed (WireError)."""
    k = p.k
    full = (1 << k) - 1
    if p.mask() & full == full:
        return fec.join_source(p.symbols, k, p.sealed_len), False
    return fec.decode(p.symbols, k, p.m, p.sealed_len), True


class BlockAssembly:
    """Pending blocks of every epoch, their bounds and timeouts."""

    __slots__ = ("pending", "nbytes", "unknown", "_done", "_notes", "_refused", "_epochs", "_report")

    def __init__(self, epochs: KeyEpochs, report: Report) -> None:
        self._epochs = epochs
        self._report = report
        self.pending: dict[BlockKey, Pending] = {}  # insertion order is arrival order
        self.nbytes = 0  # symbol bytes held
        self.unknown = 0  # pending blocks of epochs not announced yet
        self._done: Recent[BlockKey, list[int]] = Recent(limits.RECENT_MAX)  # opened: [mask, duplicates]
        self._notes: Recent[BlockKey, Reason] = Recent(limits.RECENT_MAX)  # why a block failed
        self._refused: Recent[BlockKey, None] = Recent(limits.REFUSED_RECENT_MAX)  # refused as replays

    # --- symbols ------------------------------------------------------------
    def add(self, f: SymbolFields, data: bytes | memoryview, now: float) -> Pending | None:
        """Take one checked symbol datagram; the block if it now has k symbols and a known key."""
        _, epoch, block_no, index, k, m, _, sealed_len = f
        key = (epoch, block_no)
        p = self.pending.get(key)
        if p is None:
            done = self._done.get(key)
            if done is not None:
                self._late_symbol(done, key, index, k, now)
                return None
            p = self._admit(key, k, m, sealed_len, now)
            if p is None:
                return None
        elif p.k != k or p.m != m or p.sealed_len != sealed_len:
            self._report.drop(Reason.INCONSISTENT_HEADER, now)
            return None
        symbols = p.symbols
        if symbols[index] is not None:
            self._report.drop(Reason.DUPLICATE_SYMBOL, now)
            return None
        if p.complete:
            self._report.counters.symbols_late += 1
            return None
        size = p.symsize
        if self.nbytes + size > limits.PENDING_SYMBOL_BYTES_MAX:
            self._report.drop(Reason.PENDING_FULL, now)
            return None
        symbols[index] = bytes(data[SYMBOL_HEADER_SIZE:])
        p.count += 1
        p.nbytes += size
        self.nbytes += size
        if p.count >= k:
            if epoch in self._epochs.epochs:
                return p
            p.complete = True  # held until the key arrives (KEY_WAIT)
        return None

    def _admit(self, key: BlockKey, k: int, m: int, sealed_len: int, now: float) -> Pending | None:
        """A new pending block, if its epoch and number allow one and there is room."""
        report = self._report
        if self._notes.get(key) == "auth":
            report.drop(Reason.AFTER_FAILURE, now)
            return None
        epoch, block_no = key
        ep = self._epochs.epochs.get(epoch)
        if ep is None:
            cur = self._epochs.current
            if cur is not None and epoch <= cur.epoch:
                report.drop(Reason.UNKNOWN_EPOCH, now)
                return None
            if self.unknown >= limits.PENDING_UNKNOWN_EPOCH_MAX:
                report.drop(Reason.PENDING_FULL, now)
                return None
        else:
            if block_no < ep.first_block:
                report.drop(Reason.BEFORE_FIRST_BLOCK, now)
                return None
            replay = ep.replay
            if not replay.check(block_no):
                self.replayed(key, now)
                return None
            if replay.last >= 0 and block_no > replay.last + limits.REPLAY_WINDOW:
                report.drop(Reason.TOO_FAR_AHEAD, now)
                return None
        if len(self.pending) >= limits.PENDING_BLOCKS_MAX:
            report.drop(Reason.PENDING_FULL, now)
            return None
        p = self.pending[key] = Pending(k, m, sealed_len, now)
        if ep is None:
            self.unknown += 1
        return p

    def _late_symbol(self, done: list[int], key: BlockKey, index: int, k: int, now: float) -> None:
        bit = 1 << index
        if done[0] & bit:
            done[1] += 1
            self._report.drop(Reason.DUPLICATE_SYMBOL, now)
            if done[1] == k:  # a whole block's worth again: a replay, not network duplication
                self._report.refuse_block(key[0], key[1], Reason.REPLAY, now)
        else:
            done[0] |= bit
            self._report.counters.symbols_late += 1

    def replayed(self, key: BlockKey, now: float) -> None:
        """A block number already opened (or out of the window): dropped, refused once."""
        self._report.drop(Reason.REPLAY, now)
        if key not in self._refused:
            self._refused.put(key, None)
            self._report.refuse_block(key[0], key[1], Reason.REPLAY, now)

    # --- blocks leaving -----------------------------------------------------
    def take(self, key: BlockKey) -> Pending:
        """Remove a pending block (to open it)."""
        p = self.pending.pop(key)
        self.nbytes -= p.nbytes
        return p

    def opened(self, key: BlockKey, mask: int) -> None:
        """The block authenticated: remember which symbols it had."""
        self._done.put(key, [mask, 0])

    def failed(self, key: BlockKey, reason: Reason) -> None:
        """The block could not be rebuilt ("fec") or opened ("auth")."""
        self._notes.put(key, reason)

    def held_keys(self, epoch: int) -> list[BlockKey]:
        """Pending blocks of an epoch that was unknown until now, in block order."""
        return sorted(key for key in self.pending if key[0] == epoch)

    def release(self, key: BlockKey) -> Pending | None:
        """A held block's epoch is known now: the block if it is complete (to open)."""
        p = self.pending.get(key)
        if p is None:
            return None
        self.unknown -= 1
        if p.count < p.k:
            return None
        p.complete = False
        return p

    def discard_epoch(self, epoch: int) -> None:
        """Drop the pending blocks of a retired epoch."""
        for key in [key for key in self.pending if key[0] == epoch]:
            self.take(key)

    # --- what loss accounting asks (loss.PendingBlocks) ---------------------
    def first_seen(self, key: BlockKey) -> float | None:
        p = self.pending.get(key)
        return None if p is None else p.first_seen

    def abandon(self, key: BlockKey) -> bool:
        """Give up a pending block (reported lost); False if none was pending."""
        if key not in self.pending:
            return False
        self.take(key)
        return True

    def failure(self, key: BlockKey) -> Reason | None:
        return self._notes.get(key)

    def known_from(self, epoch: int, lo: int, hi: int) -> int | None:
        """The lowest block number in [lo, hi) of the epoch that is pending or failed, if any.
        Scans the bounded pending and failure memories (for a run of missing blocks only)."""
        best = None
        for keys in (self.pending, self._notes):
            for e, b in keys:
                if e == epoch and lo <= b < hi and (best is None or b < best):
                    best = b
        return best

    # --- timers -------------------------------------------------------------
    def next_timer(self) -> float | None:
        best = None
        known = self._epochs.epochs
        for key, p in self.pending.items():  # arrival order; unknown-epoch holds wait longer
            if best is not None and p.first_seen + limits.BLOCK_TIMEOUT >= best:
                break
            t = p.first_seen + (limits.BLOCK_TIMEOUT if key[0] in known else limits.KEY_WAIT)
            if best is None or t < best:
                best = t
        return best

    def handle_timer(self, now: float) -> None:
        """Expire partial blocks (BLOCK_TIMEOUT) and key-less complete ones (KEY_WAIT)."""
        expired = []
        known = self._epochs.epochs
        for key, p in self.pending.items():
            if p.first_seen + limits.BLOCK_TIMEOUT > now:
                break
            is_known = key[0] in known
            if is_known or p.first_seen + limits.KEY_WAIT <= now:
                expired.append((key, is_known))
        for key, is_known in expired:
            self.take(key)
            if not is_known:
                self.unknown -= 1
                self._report.drop(Reason.KEY_NEVER_CAME, now)
            else:
                self._notes.put(key, Reason.TIMEOUT)
