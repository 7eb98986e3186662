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

from typing import Any

from ferry.reasons import Reason
from ferry import limits
from ferry.wire import fec
from ferry.wire.bounded import Recent
from ferry.wire.epochs import KeyEpochs
from ferry.wire.frame import SYMBOL_HEADER_SIZE, SymbolFields
from ferry.wire.loss import BlockKey
from ferry.wire.report import Report


class Pending:
    """A partially received block. `auths` (its symbols' authenticators, symtag.py) is known
    once its epoch has a key; until then (`auths` None) its symbols are unverified and
    `claimed` keeps the authenticator each came with, checked when the key arrives."""

    __slots__ = (
        "k", "m", "n", "symsize", "sealed_len", "symbols", "count", "nbytes", "first_seen", "complete",
        "auths", "claimed", "contested",
    )

    def __init__(self, k: int, m: int, sealed_len: int, now: float, auths: tuple[int, ...] | None) -> None:
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
        self.auths = auths
        self.claimed: list[int] | None = None if auths is not None else [0] * (k + m)
        self.contested = 0  # bit i: two different symbols i with a valid authenticator: neither kept

    def mask(self) -> int:
        """Bit i set: symbol i is held."""
        mask = 0
        for i, s in enumerate(self.symbols):
            if s is not None:
                mask |= 1 << i
        return mask

    def drop_symbol(self, index: int) -> None:
        self.symbols[index] = None
        self.count -= 1
        self.nbytes -= self.symsize


def rebuild(p: Pending) -> tuple[bytes, bool]:
    """The sealed block from k symbols, and whether repair symbols were needed (WireError)."""
    k = p.k
    full = (1 << k) - 1
    if p.mask() & full == full:
        return fec.join_source(p.symbols, k, p.sealed_len), False
    return fec.decode(p.symbols, k, p.m, p.sealed_len), True


class BlockAssembly:
    """Pending blocks of every epoch, their bounds and timeouts.

    Blocks of known epochs (their symbols authenticated) and blocks held for an unknown epoch
    (unverified) have separate bounds: what nobody authenticated cannot take the room of a
    block that is."""

    __slots__ = (
        "pending", "nbytes", "unknown", "unknown_nbytes", "_done", "_notes", "_refused", "_epochs", "_report",
    )

    def __init__(self, epochs: KeyEpochs, report: Report) -> None:
        self._epochs = epochs
        self._report = report
        self.pending: dict[BlockKey, Pending] = {}  # insertion order is arrival order
        self.nbytes = 0  # symbol bytes held in blocks of known epochs
        self.unknown = 0  # pending blocks of epochs not announced yet
        self.unknown_nbytes = 0  # their symbol bytes
        # opened: [mask, duplicates, authenticators, k]
        self._done: Recent[BlockKey, list[Any]] = Recent(limits.RECENT_MAX)
        self._notes: Recent[BlockKey, Reason] = Recent(limits.RECENT_MAX)  # why a block failed
        self._refused: Recent[BlockKey, None] = Recent(limits.REFUSED_RECENT_MAX)  # refused as replays

    # --- symbols ------------------------------------------------------------
    def add(self, f: SymbolFields, data: bytes | memoryview, now: float) -> Pending | None:
        """Take one checked symbol datagram; the block if it now has k symbols and a known key."""
        _, epoch, block_no, index, k, m, _, sealed_len, auth = f
        key = (epoch, block_no)
        report = self._report
        p = self.pending.get(key)
        if p is None:
            done = self._done.get(key)
            if done is not None:
                self._late_symbol(done, key, index, auth, now)
                return None
            p = self._admit(f, now)
            if p is None:
                return None
        elif p.k != k or p.m != m or p.sealed_len != sealed_len:
            report.drop(Reason.INCONSISTENT_HEADER, now)
            return None
        elif p.auths is not None and p.auths[index] != auth:
            report.drop(Reason.BAD_SYMBOL_AUTH, now)
            return None
        bit = 1 << index
        if p.contested & bit:
            report.drop(Reason.CONFLICTING_SYMBOL, now)
            return None
        symbols = p.symbols
        held = symbols[index]
        if held is not None:
            if p.auths is not None and held != data[SYMBOL_HEADER_SIZE:]:
                # the same valid authenticator on two different symbols: one is a copy of the
                # genuine datagram with other bytes in it, and which one is unknown: keep neither
                p.drop_symbol(index)
                self.nbytes -= p.symsize
                p.contested |= bit
                report.drop(Reason.CONFLICTING_SYMBOL, now)
                return None
            report.drop(Reason.DUPLICATE_SYMBOL, now)
            return None
        if p.complete:
            report.counters.symbols_late += 1
            return None
        size = p.symsize
        if p.auths is None:
            if self.unknown_nbytes + size > limits.PENDING_UNKNOWN_EPOCH_BYTES_MAX:
                report.drop(Reason.PENDING_FULL, now)
                return None
            self.unknown_nbytes += size
            p.claimed[index] = auth  # type: ignore[index]  # claimed is a list while auths is None
        else:
            if self.nbytes + size > limits.PENDING_SYMBOL_BYTES_MAX:
                report.drop(Reason.PENDING_FULL, now)
                return None
            self.nbytes += size
        symbols[index] = bytes(data[SYMBOL_HEADER_SIZE:])
        p.count += 1
        p.nbytes += size
        if p.count >= k:
            if p.auths is not None:
                return p
            p.complete = True  # held until the key arrives (KEY_WAIT)
        return None

    def _admit(self, f: SymbolFields, now: float) -> Pending | None:
        """A new pending block, if its epoch and number allow one, its authenticator verifies
        (known epochs) and there is room."""
        _, epoch, block_no, index, k, m, flags, sealed_len, auth = f
        key = (epoch, block_no)
        report = self._report
        if self._notes.get(key) == "auth":
            report.drop(Reason.AFTER_FAILURE, now)
            return None
        ep = self._epochs.epochs.get(epoch)
        if ep is None:
            cur = self._epochs.current
            if cur is not None and epoch <= cur.epoch:
                report.drop(Reason.UNKNOWN_EPOCH, now)
                return None
            if self.unknown >= limits.PENDING_UNKNOWN_EPOCH_MAX:
                report.drop(Reason.PENDING_FULL, now)
                return None
            p = self.pending[key] = Pending(k, m, sealed_len, now, None)
            self.unknown += 1
            return p
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
        auths = ep.auth.ints(block_no, k, m, flags, sealed_len)
        if auths[index] != auth:
            report.drop(Reason.BAD_SYMBOL_AUTH, now)
            return None
        if len(self.pending) - self.unknown >= limits.PENDING_BLOCKS_MAX:
            report.drop(Reason.PENDING_FULL, now)
            return None
        p = self.pending[key] = Pending(k, m, sealed_len, now, auths)
        return p

    def _late_symbol(self, done: list[Any], key: BlockKey, index: int, auth: int, now: float) -> None:
        auths = done[2]
        if index >= len(auths) or auths[index] != auth:
            self._report.drop(Reason.BAD_SYMBOL_AUTH, now)
            return
        bit = 1 << index
        if done[0] & bit:
            done[1] += 1
            self._report.drop(Reason.DUPLICATE_SYMBOL, now)
            if done[1] == done[3]:  # a whole block's worth again: a replay, not network duplication
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
        if p.auths is None:
            self.unknown_nbytes -= p.nbytes
        else:
            self.nbytes -= p.nbytes
        return p

    def opened(self, key: BlockKey, p: Pending) -> None:
        """The block authenticated: remember which symbols it had, and their authenticators."""
        self._done.put(key, [p.mask(), 0, p.auths, p.k])

    def failed(self, key: BlockKey, reason: Reason) -> None:
        """The block could not be rebuilt ("fec") or opened ("auth")."""
        self._notes.put(key, reason)

    def held_keys(self, epoch: int) -> list[BlockKey]:
        """Pending blocks of an epoch that was unknown until now, in block order."""
        return sorted(key for key in self.pending if key[0] == epoch)

    def release(self, key: BlockKey, now: float) -> Pending | None:
        """A held block's epoch is known now: verify its symbols' authenticators (dropping the
        ones that fail; the block itself if none verifies), and return it if it is complete."""
        p = self.pending.get(key)
        if p is None or p.claimed is None:
            return None
        self.unknown -= 1
        self.unknown_nbytes -= p.nbytes
        auths = self._epochs.epochs[key[0]].auth.ints(key[1], p.k, p.m, 0, p.sealed_len)
        for i, claimed in enumerate(p.claimed):
            if p.symbols[i] is not None and claimed != auths[i]:
                p.drop_symbol(i)
                self._report.drop(Reason.BAD_SYMBOL_AUTH, now)
        p.auths, p.claimed, p.complete = auths, None, False
        self.nbytes += p.nbytes
        if p.count == 0:  # nothing genuine: its parameters were not either
            self.take(key)
            return None
        return p if p.count >= p.k else None

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
