"""LinkReceiver: the inner side of the ferry link, sans-IO.

Datagrams in, events out. Two tiers (aioquic / WireGuard): unauthenticated input may only fill
bounded, short-lived buffers (partial blocks, rate-limited SM2 checks); block numbers, loss
reports and link state move only on authenticated data (an opened block or heartbeat, or a
verified announcement). Every buffer is bounded and times out.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from ferry import limits
from ferry.crypto import CryptoError, SM2PrivateKey, SM2PublicKey, SM4GCM
from ferry.pb import ferry_pb2
from ferry.wire import fec
from ferry.wire.announce import parse_announcement
from ferry.wire.block import parse_fragments
from ferry.wire.errors import WireError
from ferry.wire.events import (
    AnnouncementRefused,
    BlockLost,
    BlockRefused,
    DatagramsDropped,
    HeartbeatReceived,
    KeyAccepted,
    LinkDown,
    LinkUp,
    ObjectLost,
    ObjectReceived,
    ReceiverEvent,
)
from ferry.wire.frame import (
    BLOCK_HEADER,
    BLOCK_NO_MAX,
    MAGIC,
    PREFIX,
    NONCE,
    SYMBOL_HEADER,
    SYMBOL_HEADER_SIZE,
    TAG_SIZE,
    TYPE_ANNOUNCEMENT,
    TYPE_HEARTBEAT,
    TYPE_SYMBOL,
    UDP_MAX,
    VERSION,
    heartbeat_nonce,
    parse_heartbeat,
)
from ferry.wire.replay import ReplayWindow

KEY_SIZE = 16
_unpack_symbol = SYMBOL_HEADER.unpack_from
_PENDING_SOFT = limits.PENDING_SYMBOL_BYTES_MAX - 65536  # below this the fast path needs no size check
# a fresh receiver at least this much older than... see _Epoch.start / _on_heartbeat
AGE_MARGIN = 1.0


@dataclass(slots=True)
class ReceiverCounters:
    """What the receiver has seen since it started."""

    datagrams: int = 0
    bytes: int = 0
    dropped_by_reason: dict = field(default_factory=dict)
    blocks_ok: int = 0
    blocks_repaired: int = 0
    blocks_lost: int = 0
    blocks_refused: int = 0
    objects: int = 0
    objects_lost: int = 0
    symbols_late: int = 0
    announcements_accepted: int = 0
    announcements_repeated: int = 0
    announcements_refused: int = 0
    heartbeats: int = 0


class _Bucket:
    """Token bucket driven by the caller's `now`."""

    __slots__ = ("rate", "tokens", "last")

    def __init__(self, rate: float, now: float) -> None:
        self.rate = rate
        self.tokens = rate
        self.last = now

    def take(self, now: float) -> bool:
        if now > self.last:
            self.tokens = min(self.rate, self.tokens + (now - self.last) * self.rate)
            self.last = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class _Recent(dict):
    """A dict that forgets its oldest entries beyond a size."""

    __slots__ = ("cap",)

    def __init__(self, cap: int = limits.RECENT_MAX) -> None:
        super().__init__()
        self.cap = cap

    def put(self, key, value=None) -> None:
        self[key] = value
        if len(self) > self.cap:
            del self[next(iter(self))]


class _Epoch:
    """Receiver state of one accepted key epoch."""

    __slots__ = (
        "epoch", "key", "aead", "envelope", "announcements", "policy_hash", "sender", "not_before",
        "not_after", "first_block", "lineage", "replay", "start", "resolved", "frontier", "proofs",
        "deadline", "retire_at", "hb_seq", "lowest_opened",
    )

    def __init__(self, a, key: bytes, lineage: int, start: int | None) -> None:
        self.epoch = a.epoch
        self.key = key
        self.aead = SM4GCM(key)
        self.envelope = a.envelope
        self.announcements: list[bytes] = []
        self.policy_hash = a.policy_hash
        self.sender = a.sender
        self.not_before = a.not_before
        self.not_after = a.not_after
        self.first_block = a.first_block
        self.lineage = lineage
        self.replay = ReplayWindow()
        self.start = start  # None until the first observation (fresh receiver, old epoch)
        self.resolved = start if start is not None else 0  # blocks below are opened or reported lost
        self.frontier = self.resolved  # blocks below are proven sent
        self.proofs: deque = deque()  # (frontier, time it was proven)
        self.deadline: float | None = None
        self.retire_at: float | None = None
        self.hb_seq = -1
        self.lowest_opened: int | None = None


class _Pending:
    """A partially received block (unauthenticated)."""

    __slots__ = ("k", "m", "n", "symsize", "sealed_len", "symbols", "count", "nbytes", "first_seen", "complete")

    def __init__(self, k: int, m: int, sealed_len: int, now: float) -> None:
        self.k = k
        self.m = m
        self.n = k + m
        self.symsize = -(-sealed_len // k)
        self.sealed_len = sealed_len
        self.symbols: list = [None] * (k + m)
        self.count = 0
        self.nbytes = 0
        self.first_seen = now
        self.complete = False  # k symbols held, waiting for the epoch's key


class _Object:
    """An object in reassembly (authenticated fragments only)."""

    __slots__ = ("total", "buf", "received", "ranges", "blocks", "epoch", "created", "needs")

    def __init__(self, total: int, epoch: int, now: float) -> None:
        self.total = total
        self.buf = bytearray(total)
        self.received = 0
        self.ranges: list[list[int]] = []
        self.blocks: list[int] = []
        self.epoch = epoch
        self.created = now
        self.needs: list = []


class LinkReceiver:
    """Receiver state machine: feed datagrams, collect events, drive timers. Never raises on input."""

    def __init__(self, *, inner_key: SM2PrivateKey, outer_public: SM2PublicKey, now: float) -> None:
        self._inner_key = inner_key
        self._outer_public = outer_public
        self._inner_key_id = inner_key.public_key().key_id()
        self._outer_key_id = outer_public.key_id()
        self.counters = ReceiverCounters()
        self._events: deque[ReceiverEvent] = deque()
        self._epochs: dict[int, _Epoch] = {}
        self._current: _Epoch | None = None
        self._ever_keyed = False
        self._pending: dict[tuple[int, int], _Pending] = {}
        self._pending_bytes = 0
        self._pending_unknown = 0
        self._done = _Recent()  # (epoch, block_no) -> [index mask, duplicates]
        self._notes = _Recent()  # (epoch, block_no) -> why it failed ("auth", "timeout", ...)
        self._refused = _Recent(1024)  # (epoch, block_no) refused as replays
        self._objects: dict[int, _Object] = {}
        self._object_bytes = 0
        self._needs: dict[tuple[int, int], set[int]] = {}
        self._lost_blocks = _Recent()  # (lineage, block_no)
        self._lost_objects = _Recent()
        self._delivered = _Recent()
        self._verify_bucket = _Bucket(limits.ANNOUNCE_VERIFY_RATE, now)
        self._refusal_bucket = _Bucket(limits.REFUSAL_EVENT_RATE, now)
        self._drop_unreported: dict[str, int] = {}
        self._drop_last: dict[str, float] = {}
        self._link_up = False
        self._last_heartbeat: float | None = None
        self._started = now

    # --- input --------------------------------------------------------------
    def receive_datagram(self, data: bytes | memoryview, now: float) -> None:
        """Handle one datagram. Never raises: bad input becomes counters and events."""
        c = self.counters
        n = len(data)
        c.datagrams += 1
        c.bytes += n
        try:
            if n > SYMBOL_HEADER_SIZE and data[3] == TYPE_SYMBOL:
                # fast path: the next symbol of a block already pending, or a late repair symbol
                _, _, _, epoch, block_no, index, k, m, flags, sealed_len = _unpack_symbol(data)
                key = (epoch, block_no)
                p = self._pending.get(key)
                if p is not None:
                    if (
                        p.symsize == n - SYMBOL_HEADER_SIZE
                        and p.k == k
                        and p.m == m
                        and p.sealed_len == sealed_len
                        and index < p.n
                        and not flags
                        and p.symbols[index] is None
                        and not p.complete
                        and self._pending_bytes < _PENDING_SOFT
                        and data[0] == 0xFE
                        and data[1] == 0x52
                        and data[2] == VERSION
                    ):
                        p.symbols[index] = bytes(data[SYMBOL_HEADER_SIZE:])
                        p.nbytes += p.symsize
                        self._pending_bytes += p.symsize
                        p.count += 1
                        if p.count >= k and epoch in self._epochs:
                            self._open(self._epochs[epoch], key, p, now)
                        return
                else:
                    done = self._done.get(key)
                    if done is not None and index < k + m and not (done[0] >> index) & 1:
                        if n - SYMBOL_HEADER_SIZE == -(-sealed_len // k) and data[:3] == PREFIX:
                            done[0] |= 1 << index
                            c.symbols_late += 1
                            return
            if n < 4 or data[0] != 0xFE or data[1] != 0x52 or data[2] != VERSION:
                self._drop("bad_magic", now)
                return
            t = data[3]
            if t == TYPE_SYMBOL:
                self._on_symbol(data, n, now)
            elif t == TYPE_ANNOUNCEMENT:
                self._on_announcement(data, now)
            elif t == TYPE_HEARTBEAT:
                self._on_heartbeat(data, now)
            else:
                self._drop("bad_type", now)
        except Exception:  # a bug, not an input problem: count it, never let it out
            self._drop("internal_error", now)

    def receive_segments(self, buf: bytes | memoryview, segment_size: int, now: float) -> None:
        """Handle a GRO batch: equal-size segments, the last may be shorter."""
        if segment_size <= 0:
            self._drop("bad_segment_size", now)
            return
        view = memoryview(buf)
        if view.ndim != 1 or view.itemsize != 1:
            view = view.cast("B")
        recv = self.receive_datagram
        for off in range(0, len(view), segment_size):
            recv(view[off : off + segment_size], now)

    # --- symbols ------------------------------------------------------------
    def _on_symbol(self, data, n: int, now: float) -> None:
        if n <= SYMBOL_HEADER_SIZE or n > UDP_MAX:
            self._drop("bad_length", now)
            return
        _, _, _, epoch, block_no, index, k, m, flags, sealed_len = SYMBOL_HEADER.unpack_from(data)
        if (
            not 1 <= k <= limits.FEC_K_MAX
            or not 1 <= m <= limits.FEC_M_MAX
            or flags
            or not TAG_SIZE <= sealed_len <= limits.BLOCK_MAX
            or block_no > BLOCK_NO_MAX
            or index >= k + m
        ):
            self._drop("bad_header", now)
            return
        if n - SYMBOL_HEADER_SIZE != -(-sealed_len // k):
            self._drop("bad_length", now)
            return
        key = (epoch, block_no)
        p = self._pending.get(key)
        if p is None:
            done = self._done.get(key)
            if done is not None:
                self._late_symbol(done, key, index, k, now)
                return
            if key in self._notes and self._notes[key] == "auth":
                self._drop("after_failure", now)
                return
            ep = self._epochs.get(epoch)
            if ep is None:
                cur = self._current
                if cur is not None and epoch <= cur.epoch:
                    self._drop("unknown_epoch", now)
                    return
                if self._pending_unknown >= limits.PENDING_UNKNOWN_EPOCH_MAX:
                    self._drop("pending_full", now)
                    return
            else:
                if block_no < ep.first_block:
                    self._drop("before_first_block", now)
                    return
                replay = ep.replay
                if not replay.check(block_no):
                    self._replayed(ep.epoch, block_no, now)
                    return
                if replay.last >= 0 and block_no > replay.last + limits.REPLAY_WINDOW:
                    self._drop("too_far_ahead", now)
                    return
            if len(self._pending) >= limits.PENDING_BLOCKS_MAX:
                self._drop("pending_full", now)
                return
            p = _Pending(k, m, sealed_len, now)
            self._pending[key] = p
            if ep is None:
                self._pending_unknown += 1
        elif p.k != k or p.m != m or p.sealed_len != sealed_len:
            self._drop("inconsistent_header", now)
            return
        symbols = p.symbols
        if symbols[index] is not None:
            self._drop("duplicate_symbol", now)
            return
        if p.complete:
            self.counters.symbols_late += 1
            return
        size = n - SYMBOL_HEADER_SIZE
        if self._pending_bytes + size > limits.PENDING_SYMBOL_BYTES_MAX:
            self._drop("pending_full", now)
            return
        symbols[index] = bytes(data[SYMBOL_HEADER_SIZE:])
        p.count += 1
        p.nbytes += size
        self._pending_bytes += size
        if p.count >= k:
            ep = self._epochs.get(epoch)
            if ep is None:
                p.complete = True  # held until the key arrives (KEY_WAIT)
            else:
                self._open(ep, key, p, now)

    def _late_symbol(self, done: list, key, index: int, k: int, now: float) -> None:
        bit = 1 << index
        if done[0] & bit:
            done[1] += 1
            self._drop("duplicate_symbol", now)
            if done[1] == k:  # a whole block's worth again: a replay, not network duplication
                self._refuse_block(key[0], key[1], "replay", now)
        else:
            done[0] |= bit
            self.counters.symbols_late += 1

    def _replayed(self, epoch: int, block_no: int, now: float) -> None:
        self._drop("replay", now)
        key = (epoch, block_no)
        if key not in self._refused:
            self._refused.put(key)
            self._refuse_block(epoch, block_no, "replay", now)

    def _remove_pending(self, key) -> _Pending:
        p = self._pending.pop(key)
        self._pending_bytes -= p.nbytes
        return p

    def _open(self, ep: _Epoch, key, p: _Pending, now: float) -> None:
        """Rebuild, authenticate and deliver one block with k symbols."""
        del self._pending[key]
        self._pending_bytes -= p.nbytes
        epoch, block_no = key
        k = p.k
        symbols = p.symbols
        mask = 0
        for i, s in enumerate(symbols):
            if s is not None:
                mask |= 1 << i
        repaired = False
        try:
            if mask & ((1 << k) - 1) == (1 << k) - 1:
                sealed = fec.join_source(symbols, k, p.sealed_len)
            else:
                sealed = fec.decode(symbols, k, p.m, p.sealed_len)
                repaired = True
        except WireError:
            self._notes.put(key, "fec")
            self._drop("fec_failed", now)
            return
        if not ep.replay.check(block_no):
            self._replayed(epoch, block_no, now)
            return
        header = BLOCK_HEADER.pack(MAGIC, VERSION, TYPE_SYMBOL, epoch, block_no, k, p.m, 0, p.sealed_len)
        try:
            plaintext = ep.aead.open(NONCE.pack(epoch, block_no), sealed, header)
        except CryptoError:
            self._notes.put(key, "auth")
            self._refuse_block(epoch, block_no, "auth", now)
            return
        # authenticated from here on
        self._done.put(key, [mask, 0])
        self._observe(ep, block_no, now)
        self._force_resolve(ep, block_no - ep.replay.size + 1, now)
        ep.replay.mark(block_no)
        self._advance(ep, block_no + 1, now)
        c = self.counters
        if repaired:
            c.blocks_repaired += 1
        else:
            c.blocks_ok += 1
        try:
            frags = parse_fragments(plaintext)
        except WireError:
            self._lost(ep, block_no, "bad_plaintext", now)
        else:
            self._deliver(ep, block_no, frags, now)
        self._resolve(ep, now)

    def _refuse_block(self, epoch: int, block_no: int, reason: str, now: float) -> None:
        self.counters.blocks_refused += 1
        if self._refusal_bucket.take(now):
            self._events.append(BlockRefused(epoch, block_no, reason))
        else:
            self._drop("refusal_suppressed", now)

    # --- objects ------------------------------------------------------------
    def _deliver(self, ep: _Epoch, block_no: int, frags, now: float) -> None:
        lineage = ep.lineage
        last = len(frags) - 1
        objects = self._objects
        events = self._events
        for i, (oid, total, off, data) in enumerate(frags):
            if oid in self._lost_objects or oid in self._delivered:
                self._drop("stale_fragment", now)
                continue
            ln = len(data)
            obj = objects.get(oid)
            if obj is None:
                if off == 0 and ln == total:
                    self._delivered.put(oid)
                    self.counters.objects += 1
                    events.append(ObjectReceived(oid, bytes(data), ep.epoch, (block_no,)))
                    continue
                if (
                    len(objects) >= limits.PENDING_OBJECTS_MAX
                    or self._object_bytes + total > limits.PENDING_OBJECT_BYTES_MAX
                ):
                    self._object_lost(oid, ep.epoch, (block_no,), "too_many_pending")
                    continue
                obj = objects[oid] = _Object(total, ep.epoch, now)
                self._object_bytes += total
            elif obj.total != total:
                self._drop_object(oid, obj, "inconsistent_total")
                continue
            end = off + ln
            left = right = False
            ranges = obj.ranges
            for r in ranges:
                if off < r[1] and r[0] < end:
                    self._drop_object(oid, obj, "overlap")
                    break
                if r[1] == off:
                    left = True
                if r[0] == end:
                    right = True
            else:
                obj.buf[off:end] = data
                obj.received += ln
                obj.blocks.append(block_no)
                obj.epoch = ep.epoch
                _add_range(ranges, off, end)
                if obj.received == total:
                    self._complete(oid, obj)
                    continue
                if i == 0 and off > 0 and not left:
                    if not self._need(ep, oid, obj, (lineage, block_no - 1)):
                        continue
                if i == last and end < total and not right:
                    self._need(ep, oid, obj, (lineage, block_no + 1))

    def _need(self, ep: _Epoch, oid: int, obj: _Object, lk) -> bool:
        """Record that obj needs block lk; False if that block is already known lost."""
        if lk in self._lost_blocks:
            self._drop_object(oid, obj, "block_lost")
            return False
        if ep.start is not None and ep.start > ep.first_block and lk[1] < ep.start:
            self._drop_object(oid, obj, "start_missing")
            return False
        self._needs.setdefault(lk, set()).add(oid)
        obj.needs.append(lk)
        return True

    def _forget(self, oid: int, obj: _Object) -> None:
        del self._objects[oid]
        self._object_bytes -= obj.total
        for lk in obj.needs:
            s = self._needs.get(lk)
            if s is not None:
                s.discard(oid)
                if not s:
                    del self._needs[lk]

    def _complete(self, oid: int, obj: _Object) -> None:
        self._forget(oid, obj)
        self._delivered.put(oid)
        self.counters.objects += 1
        self._events.append(ObjectReceived(oid, bytes(obj.buf), obj.epoch, tuple(obj.blocks)))

    def _drop_object(self, oid: int, obj: _Object, reason: str) -> None:
        self._forget(oid, obj)
        self._object_lost(oid, obj.epoch, tuple(obj.blocks), reason)

    def _object_lost(self, oid: int, epoch: int, blocks: tuple, reason: str) -> None:
        self._lost_objects.put(oid)
        self.counters.objects_lost += 1
        self._events.append(ObjectLost(oid, epoch, blocks, reason))

    # --- loss accounting (authenticated data only) ---------------------------
    def _observe(self, ep: _Epoch, block_no: int, now: float) -> None:
        """An opened block of an epoch whose loss-accounting start is not decided yet.

        A fresh receiver meeting an epoch that began before it was accepted waits for the first
        heartbeat to decide (see _on_heartbeat); if the replay window would forget the lowest
        opened block first, accounting starts there.
        """
        if ep.start is None:
            low = ep.lowest_opened
            if low is None or block_no < low:
                ep.lowest_opened = low = block_no
            if block_no - low >= ep.replay.size - 1:
                self._decide_start(ep, low, now)

    def _decide_start(self, ep: _Epoch, start: int, now: float) -> None:
        ep.start = ep.resolved = ep.frontier = start
        if ep.replay.last >= start:
            self._advance(ep, ep.replay.last + 1, now)

    def _advance(self, ep: _Epoch, frontier: int, now: float) -> None:
        """Blocks below frontier are now proven sent."""
        if ep.start is not None and frontier > ep.frontier:
            ep.frontier = frontier
            proofs = ep.proofs
            if proofs and proofs[-1][1] == now:
                proofs[-1] = (frontier, now)
            else:
                proofs.append((frontier, now))

    def _force_resolve(self, ep: _Epoch, upto: int, now: float) -> None:
        """Resolve every block below upto at once (they are leaving the replay window)."""
        replay = ep.replay
        while ep.resolved < upto:
            b = ep.resolved
            ep.resolved = b + 1
            if not replay.seen(b) and (ep.lineage, b) not in self._lost_blocks:
                self._lost(ep, b, self._notes.get((ep.epoch, b)) or "missing", now)
        proofs = ep.proofs
        while proofs and proofs[0][0] <= ep.resolved:
            proofs.popleft()

    def _resolve(self, ep: _Epoch, now: float) -> None:
        """Report as lost the proven blocks whose grace time has passed."""
        ep.deadline = None
        replay = ep.replay
        proofs = ep.proofs
        budget = limits.LOSS_REPORTS_PER_CALL
        while ep.resolved < ep.frontier:
            b = ep.resolved
            if replay.seen(b) or (ep.lineage, b) in self._lost_blocks:
                ep.resolved = b + 1
                continue
            if not replay.too_old(b):
                while proofs and proofs[0][0] <= b:
                    proofs.popleft()
                t = proofs[0][1] if proofs else now
                p = self._pending.get((ep.epoch, b))
                if p is not None and p.first_seen > t:
                    t = p.first_seen
                deadline = t + limits.BLOCK_TIMEOUT
                if now < deadline:
                    ep.deadline = deadline
                    break
            if budget == 0:
                ep.deadline = now
                break
            budget -= 1
            key = (ep.epoch, b)
            reason = self._notes.get(key)
            if key in self._pending:
                self._remove_pending(key)
                reason = reason or "timeout"
            self._lost(ep, b, reason or "missing", now)
            ep.resolved = b + 1
        while proofs and proofs[0][0] <= ep.resolved:
            proofs.popleft()

    def _lost(self, ep: _Epoch, block_no: int, reason: str, now: float) -> None:
        lk = (ep.lineage, block_no)
        self._lost_blocks.put(lk)
        self.counters.blocks_lost += 1
        self._events.append(BlockLost(ep.epoch, block_no, reason))
        for oid in sorted(self._needs.pop(lk, ())):
            obj = self._objects.get(oid)
            if obj is not None:
                self._drop_object(oid, obj, "block_lost")

    # --- announcements ------------------------------------------------------
    def _refuse_announcement(self, reason: str, epoch: int | None, now: float) -> None:
        self.counters.announcements_refused += 1
        if self._refusal_bucket.take(now):
            self._events.append(AnnouncementRefused(reason, epoch))
        else:
            self._drop("refusal_suppressed", now)

    def _on_announcement(self, data, now: float) -> None:
        raw = bytes(data)
        for ep in self._epochs.values():  # cheap check first: a repeat of a known announcement
            if raw in ep.announcements:
                self.counters.announcements_repeated += 1
                return
        try:
            a = parse_announcement(raw)
        except WireError:
            self._drop("bad_announcement", now)
            return
        if a.outer_key_id != self._outer_key_id:
            self._refuse_announcement("wrong_outer_key", a.epoch, now)
            return
        if a.inner_key_id != self._inner_key_id:
            self._refuse_announcement("wrong_inner_key", a.epoch, now)
            return
        cur = self._current
        if cur is not None and a.epoch < cur.epoch:
            self._refuse_announcement("old_epoch", a.epoch, now)
            return
        if not self._verify_bucket.take(now):
            self._drop("announcement_rate_limited", now)
            return
        try:
            self._outer_public.verify(a.body_bytes, a.signature)
        except CryptoError:
            self._refuse_announcement("bad_signature", a.epoch, now)
            return
        if now < a.not_before - limits.CLOCK_SKEW:
            self._refuse_announcement("not_yet_valid", a.epoch, now)
            return
        if now > a.not_after + limits.CLOCK_SKEW:
            self._refuse_announcement("expired", a.epoch, now)
            return
        ep = self._epochs.get(a.epoch)
        if ep is not None and a.envelope == ep.envelope:
            key = ep.key
        else:
            try:
                key = self._inner_key.decrypt(a.envelope)
            except CryptoError:
                self._refuse_announcement("envelope", a.epoch, now)
                return
            if len(key) != KEY_SIZE:
                self._refuse_announcement("envelope", a.epoch, now)
                return
        if ep is not None:
            if key != ep.key or a.first_block != ep.first_block:
                self._refuse_announcement("epoch_changed", a.epoch, now)
                return
            ep.policy_hash, ep.sender = a.policy_hash, a.sender
            ep.not_before, ep.not_after = a.not_before, a.not_after
        else:
            ep = self._new_epoch(a, key, now)
        ep.announcements.append(raw)
        del ep.announcements[:-4]
        self.counters.announcements_accepted += 1
        self._events.append(KeyAccepted(a.epoch, a.policy_hash, a.sender, a.not_before, a.not_after))
        if ep is self._current:
            self._open_held(ep, now)

    def _new_epoch(self, a, key: bytes, now: float) -> _Epoch:
        cur = self._current
        if cur is not None and a.epoch == cur.epoch + 1 and a.first_block >= cur.first_block:
            ep = _Epoch(a, key, cur.lineage, a.first_block)  # rotation: block numbers continue
            self._advance(cur, a.first_block, now)
            self._resolve(cur, now)
        else:
            start = a.first_block if self._ever_keyed else None
            ep = _Epoch(a, key, a.epoch, start)
        if cur is not None:
            cur.retire_at = now + limits.KEY_OVERLAP
        self._epochs[a.epoch] = ep
        self._current = ep
        self._ever_keyed = True
        return ep

    def _open_held(self, ep: _Epoch, now: float) -> None:
        """Open the complete blocks that waited for this epoch's key, in block order."""
        held = sorted(k for k in self._pending if k[0] == ep.epoch)
        for key in held:
            p = self._pending.get(key)
            if p is None:
                continue
            self._pending_unknown -= 1
            if p.count >= p.k:
                p.complete = False
                self._open(ep, key, p, now)

    # --- heartbeats ---------------------------------------------------------
    def _on_heartbeat(self, data, now: float) -> None:
        try:
            epoch, seq, header, sealed = parse_heartbeat(data)
        except WireError:
            self._drop("bad_heartbeat", now)
            return
        ep = self._epochs.get(epoch)
        if ep is None:
            self._drop("heartbeat_unknown_epoch", now)
            return
        if seq <= ep.hb_seq:
            self._drop("heartbeat_replay", now)
            return
        try:
            body = ep.aead.open(heartbeat_nonce(epoch, seq), sealed, header)
        except CryptoError:
            self._drop("heartbeat_auth", now)
            return
        ep.hb_seq = seq
        try:
            hb = ferry_pb2.Heartbeat.FromString(body)
        except Exception:
            self._drop("heartbeat_body", now)
            return
        if hb.epoch != epoch or hb.seq != seq or hb.next_block > BLOCK_NO_MAX + 1:
            self._drop("heartbeat_body", now)
            return
        self.counters.heartbeats += 1
        if ep.start is None:
            # durations on one clock each, so clock skew does not matter: a receiver about as old
            # as the epoch has seen it from its first block; a younger one joined mid-way
            # (restart) and cannot know what was sent before it, so it counts from what it saw
            if now - self._started + AGE_MARGIN >= hb.sent_at - ep.not_before:
                self._decide_start(ep, ep.first_block, now)
            else:
                low = ep.lowest_opened
                self._decide_start(ep, hb.next_block if low is None else min(low, hb.next_block), now)
        self._advance(ep, hb.next_block, now)
        self._last_heartbeat = now
        if not self._link_up:
            self._link_up = True
            self._events.append(LinkUp())
        self._events.append(
            HeartbeatReceived(
                epoch,
                seq,
                {
                    "sent_at": hb.sent_at,
                    "blocks_sent": hb.blocks_sent,
                    "next_block": hb.next_block,
                    "objects_sent": hb.objects_sent,
                    "bytes_sent": hb.bytes_sent,
                    "datagrams_sent": hb.datagrams_sent,
                },
            )
        )
        self._resolve(ep, now)

    # --- drops, events, timers ----------------------------------------------
    def _drop(self, reason: str, now: float) -> None:
        d = self.counters.dropped_by_reason
        d[reason] = d.get(reason, 0) + 1
        self._drop_unreported[reason] = self._drop_unreported.get(reason, 0) + 1
        if now - self._drop_last.get(reason, -1e18) >= limits.DROP_EVENT_INTERVAL:
            self._flush_drop(reason, now)

    def _flush_drop(self, reason: str, now: float) -> None:
        count = self._drop_unreported.pop(reason, 0)
        if count:
            self._drop_last[reason] = now
            self._events.append(DatagramsDropped(reason, count))

    def next_event(self) -> ReceiverEvent | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        times = []
        best = None
        for key, p in self._pending.items():  # arrival order; unknown-epoch holds wait longer
            if best is not None and p.first_seen + limits.BLOCK_TIMEOUT >= best:
                break
            t = p.first_seen + (limits.BLOCK_TIMEOUT if key[0] in self._epochs else limits.KEY_WAIT)
            if best is None or t < best:
                best = t
        if best is not None:
            times.append(best)
        if self._objects:
            times.append(next(iter(self._objects.values())).created + limits.OBJECT_TIMEOUT)
        for ep in self._epochs.values():
            if ep.deadline is not None:
                times.append(ep.deadline)
            if ep.retire_at is not None:
                times.append(ep.retire_at)
            times.append(ep.not_after + limits.CLOCK_SKEW)
        if self._link_up and self._last_heartbeat is not None:
            times.append(self._last_heartbeat + limits.LINK_DEAD_AFTER)
        for reason in self._drop_unreported:
            times.append(self._drop_last.get(reason, 0.0) + limits.DROP_EVENT_INTERVAL)
        return min(times) if times else None

    def handle_timer(self, now: float) -> None:
        """Expire partial blocks, objects and old keys; report losses; link down; drop events."""
        try:
            self._timers(now)
        except Exception:
            self._drop("internal_error", now)

    def _timers(self, now: float) -> None:
        # partial blocks (insertion order is arrival order)
        expired = []
        for key, p in self._pending.items():
            if p.first_seen + limits.BLOCK_TIMEOUT > now:
                break
            known = key[0] in self._epochs
            if known or p.first_seen + limits.KEY_WAIT <= now:
                expired.append((key, known))
        for key, known in expired:
            p = self._remove_pending(key)
            if not known:
                self._pending_unknown -= 1
                self._drop("key_never_came", now)
            else:
                self._notes.put(key, "timeout")
        # objects in reassembly
        while self._objects:
            oid, obj = next(iter(self._objects.items()))
            if obj.created + limits.OBJECT_TIMEOUT > now:
                break
            self._drop_object(oid, obj, "timeout")
        # epochs: losses, retirement, expiry
        for ep in list(self._epochs.values()):
            if (ep.retire_at is not None and now >= ep.retire_at) or now > ep.not_after + limits.CLOCK_SKEW:
                self._retire(ep, now)
            elif ep.deadline is not None and now >= ep.deadline:
                self._resolve(ep, now)
        # link
        if self._link_up and self._last_heartbeat is not None:
            if now >= self._last_heartbeat + limits.LINK_DEAD_AFTER:
                self._link_up = False
                self._events.append(LinkDown(self._last_heartbeat))
        for reason in list(self._drop_unreported):
            if now - self._drop_last.get(reason, -1e18) >= limits.DROP_EVENT_INTERVAL:
                self._flush_drop(reason, now)

    def _retire(self, ep: _Epoch, now: float) -> None:
        """Forget an epoch: its proven blocks still missing are lost, its partial blocks dropped."""
        self._force_resolve(ep, ep.frontier, now)
        for key in [k for k in self._pending if k[0] == ep.epoch]:
            self._remove_pending(key)
        del self._epochs[ep.epoch]
        if self._current is ep:
            self._current = None if not self._epochs else self._epochs[max(self._epochs)]

    # --- introspection (tests, status) ------------------------------------
    @property
    def epochs(self) -> tuple[int, ...]:
        return tuple(sorted(self._epochs))

    @property
    def current_epoch(self) -> int | None:
        return self._current.epoch if self._current is not None else None

    @property
    def link_up(self) -> bool:
        return self._link_up

    def pending_sizes(self) -> dict[str, int]:
        """Sizes of every bounded buffer (for tests and status)."""
        return {
            "blocks": len(self._pending),
            "block_bytes": self._pending_bytes,
            "unknown_epoch_blocks": self._pending_unknown,
            "objects": len(self._objects),
            "object_bytes": self._object_bytes,
            "needs": len(self._needs),
            "events": len(self._events),
        }


def _add_range(ranges: list[list[int]], start: int, end: int) -> None:
    """Insert [start, end) into sorted, non-overlapping ranges, merging neighbours."""
    i = 0
    while i < len(ranges) and ranges[i][1] < start:
        i += 1
    if i < len(ranges) and ranges[i][1] == start:
        ranges[i][1] = end
        if i + 1 < len(ranges) and ranges[i + 1][0] == end:
            ranges[i][1] = ranges[i + 1][1]
            del ranges[i + 1]
    elif i < len(ranges) and ranges[i][0] == end:
        ranges[i][0] = start
    else:
        ranges.insert(i, [start, end])
