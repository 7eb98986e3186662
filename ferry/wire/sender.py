"""LinkSender: the outer side of the ferry link, sans-IO.

Objects in, datagrams out. Objects are packed into blocks (fragments, proto/WIRE.md), each block
sealed once with SM4-GCM under the epoch key and cut into k source + m repair symbols.
Key announcements and heartbeats are produced on timers; the key rotates by time and by volume.

Two clocks: timers (heartbeat, announcement repeat, key lifetime) run on the monotonic `now`;
what the receiver checks for validity (the announcement's not_before/not_after, a heartbeat's
sent_at, the epoch number of a fresh sender) comes from the wall clock `wall`. Calls that may
start a key epoch without a `wall` argument (`submit`, `flush`, rotation by volume) use the
wall clock as last given, advanced by the monotonic time since.

A wall-clock step (NTP setting a clock that was wrong at boot, or an operator's `date -s`) moves
`wall - now`; the monotonic clock does not move. `handle_timer` compares the two against the
epoch's start (as do `submit` and `flush` given a `wall`, so that an object taken after the step
goes under the new epoch): moved by more than CLOCK_STEP_MAX, the sender rotates at once (`KeyRotated`,
reason "clock", with the step) to an epoch whose validity is written from the new clock, so an
epoch announced while the clock was wrong does not stay refused (`not_yet_valid`, `expired`) for
its whole lifetime once the clock is right. The sender cannot tell which clock was the right
one, so for a step up to CLOCK_STEP_SPAN_MAX the new validity spans both (the receiver's clock
agrees with one of them: the link stays up either way). The new epoch number is the next one, or
int(wall) if that is higher: a sender that started with its clock behind numbered its epoch
below the receiver's floor (`old_epoch`), and the corrected clock numbers it above again.

Sealing: by default blocks are sealed at once and `datagrams_to_send` returns bytes. With
`seal=False` a block stays an `UnsealedBlock` in its place among the datagrams until the
caller takes it (`items_to_send`) and seals it where it likes (`ferry.wire.seal.seal`, e.g. on
a thread beside its event loop); `datagrams_to_send` still returns sealed bytes only. The
byte counter counts a block's datagrams when the block is made, sealed or not (their size is
known exactly).

Control ahead of data (proto/WIRE.md §3a): announcements and heartbeats are kept apart from the
blocks. `items_to_send` / `datagrams_to_send` still give everything in the order it was made;
a caller that paces data (the outer agent's link writer) takes the control datagrams first with
`control_to_send` and sends them ahead of the data it has queued. Such a caller makes the sender
with `track_sent=True` and reports which blocks have left (`blocks_sent`): a heartbeat then
claims only those blocks (its `next_block` proves blocks sent, and a claim ahead of queued data
would make the receiver report them lost), it is sealed under the key of the epoch on the wire,
the repeated announcement is the one that covers those blocks, and a new announcement (rotation,
policy hash) waits (`Control.after_block`) until the blocks made before it have left.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from ferry import limits
from ferry.crypto import SM2PrivateKey, SM2PublicKey, SM4GCM
from ferry.pb import ferry_pb2
from ferry.wire import fec
from ferry.wire.announce import build_announcement
from ferry.wire.block import FRAGMENT_HEADER, FRAGMENT_HEADER_SIZE
from ferry.wire.events import BlockSealed, KeyAnnounced, KeyRotated, SenderEvent
from ferry.wire.frame import BLOCK_NO_MAX, EPOCH_MAX, SYMBOL_HEADER_SIZE, TAG_SIZE
from ferry.wire.seal import EpochKey, UnsealedBlock, block_wire_bytes, seal, seal_block, seal_heartbeat

KEY_SIZE = 16

# what the sender queues: a datagram, or (with seal=False) a block to seal in its place
SendItem = bytes | UnsealedBlock


@dataclass(frozen=True, slots=True)
class Control:
    """A control datagram (key announcement or heartbeat) to send ahead of queued data.

    `after_block`: send it only once every block below this number has left. A new announcement
    waits for the blocks made before it: a rotation's proves the previous epoch's blocks sent
    (their loss, were it to overtake them), a new policy hash would label the objects sealed
    under the old one. A heartbeat's is 0 (at once)."""

    data: bytes
    after_block: int = 0


@dataclass(frozen=True, slots=True)
class _Announced:
    """An announcement and the blocks it covers, from `from_block` (its epoch's first block, or
    where a new policy hash began) to the next one's: what heartbeats and repeats use while
    those blocks are on the wire or queued."""

    epoch: int
    first_block: int
    from_block: int
    aead: SM4GCM
    announcement: bytes


@dataclass(slots=True)
class SenderCounters:
    """What the sender has produced since it started."""

    blocks: int = 0
    datagrams: int = 0
    bytes: int = 0
    objects: int = 0
    epoch: int = 0
    announcements: int = 0
    heartbeats: int = 0


class LinkSender:
    """Sender state machine: submit objects, collect datagrams, drive timers."""

    def __init__(
        self,
        *,
        outer_key: SM2PrivateKey,
        inner_public: SM2PublicKey,
        policy_hash: bytes,
        name: str,
        now: float,
        wall: float | None = None,
        k: int = limits.FEC_K,
        m: int = limits.FEC_M,
        datagram_max: int = limits.DATAGRAM_MAX,
        key_lifetime: float = limits.KEY_LIFETIME,
        key_bytes_max: int = limits.KEY_BYTES_MAX,
        epoch: int | None = None,
        rng: Callable[[int], bytes] = os.urandom,
        seal: bool = True,
        track_sent: bool = False,
    ) -> None:
        """`now` is monotonic, `wall` the wall clock (None: `now` is the wall clock too).

        The first epoch number is int(wall) unless `epoch` is given. seal=False: blocks are
        left unsealed for the caller; track_sent=True: the caller reports the blocks that left
        (`blocks_sent`), heartbeats claim no others (see the module docstring)."""
        if not 1 <= k <= limits.FEC_K_MAX or not 1 <= m <= limits.FEC_M_MAX:
            raise ValueError("k or m out of range")
        if len(policy_hash) != 32:
            raise ValueError("policy_hash must be 32 bytes")
        self._outer_key = outer_key
        self._inner_public = inner_public
        self._outer_key_id = outer_key.public_key().key_id()
        self._inner_key_id = inner_public.key_id()
        self._policy_hash = bytes(policy_hash)
        self._name = name
        self._k = k
        self._m = m
        self._key_lifetime = key_lifetime
        self._key_bytes_max = key_bytes_max
        self._rng = rng
        self._seal_now = seal
        self._wall_offset = 0.0 if wall is None else wall - now  # wall - now, as last given
        self._epoch_offset = self._wall_offset  # ... when the current epoch began (its validity's clock)
        sealed_max = min(fec.block_capacity(k, datagram_max, SYMBOL_HEADER_SIZE), limits.BLOCK_MAX)
        self.capacity = sealed_max - TAG_SIZE  # bytes of block plaintext
        if self.capacity < FRAGMENT_HEADER_SIZE + 1:
            raise ValueError("datagram_max too small for a block")
        self.counters = SenderCounters()
        self._out: deque[SendItem] = deque()  # data: datagrams, and blocks to seal (seal=False)
        # control datagrams, each with the number of data items made before it (the made order)
        self._control: deque[tuple[int, Control]] = deque()
        self._data_made = 0   # data items ever queued
        self._data_taken = 0  # ... and taken
        self._sent: int | None = 0 if track_sent else None  # blocks below have left (track_sent)
        self._wire: deque[_Announced] = deque()  # from the announcement on the wire to the newest
        self._events: deque[SenderEvent] = deque()
        # block being filled
        self._parts: list[bytes | memoryview] = []
        self._used = 0
        self._ids: list[int] = []
        # objects waiting for space: (object_id, view, offset)
        self._queue: deque[tuple[int, memoryview, int]] = deque()
        self._next_block = 0
        self._hb_seq = 0
        self._epoch = -1
        self._start_epoch(int(self._wall(now)) if epoch is None else epoch, now, None)
        self._next_heartbeat = now + limits.HEARTBEAT_INTERVAL

    def _wall(self, now: float, wall: float | None = None) -> float:
        """The wall clock: as given (and remembered), else the last given advanced by `now`."""
        if wall is None:
            return now + self._wall_offset
        self._wall_offset = wall - now
        return wall

    # --- keys -------------------------------------------------------------
    def _start_epoch(self, epoch: int, now: float, reason: str | None, *, old_wall: float | None = None,
                     clock_step: float = 0.0) -> None:
        """Start a key epoch. `old_wall`: after a clock step, the wall clock before it (now): the
        validity spans both clocks."""
        if not 0 <= epoch <= EPOCH_MAX or epoch <= self._epoch:
            raise ValueError("epoch out of range")
        key = self._rng(KEY_SIZE)
        if len(key) != KEY_SIZE:
            raise ValueError("rng returned a short key")
        self._epoch = epoch
        self._key = EpochKey(key)
        self._envelope = self._inner_public.encrypt(key)
        self._epoch_started = now                    # monotonic: the key lifetime timer
        wall = self._wall(now)                       # wall: the announcement's validity
        self._epoch_offset = self._wall_offset
        lo, hi = (wall, wall) if old_wall is None else (min(wall, old_wall), max(wall, old_wall))
        self._valid_from, self._valid_until = lo, hi + self._key_lifetime + limits.KEY_OVERLAP
        self._epoch_first_block = self._next_block
        self._epoch_bytes = 0
        self.counters.epoch = epoch
        if reason is not None:
            self._events.append(KeyRotated(epoch, reason, clock_step))
        self._build_announcement()
        self._announce(now, copies=limits.ANNOUNCE_REPEAT_ON_ROTATE)
        self._events.append(KeyAnnounced(epoch))

    def _build_announcement(self) -> None:
        """Sign a new announcement; repeats reuse these exact bytes (the receiver's cheap check)."""
        self._announcement = build_announcement(
            outer_key=self._outer_key,
            envelope=self._envelope,
            epoch=self._epoch,
            not_before=self._valid_from,
            not_after=self._valid_until,
            policy_hash=self._policy_hash,
            outer_key_id=self._outer_key_id,
            inner_key_id=self._inner_key_id,
            first_block=self._epoch_first_block,
            sender=self._name,
        )

    def _announce(self, now: float, copies: int) -> None:
        """Queue a new announcement (a new epoch or policy hash): after the blocks made before it."""
        self._wire.append(_Announced(self._epoch, self._epoch_first_block, self._next_block, self._key.aead,
                                     self._announcement))
        self._on_wire()   # forget what has left
        for _ in range(copies):
            self._push(Control(self._announcement, self._next_block))
        self.counters.announcements += copies
        self._next_announce = now + limits.ANNOUNCE_INTERVAL

    def _repeat_announcement(self, now: float) -> None:
        """The timer's repeat: the announcement of the epoch on the wire (the newest one unless
        blocks of an older epoch are still queued: a receiver joining now needs that key)."""
        w = self._on_wire()
        self._push(Control(w.announcement, w.from_block))
        self.counters.announcements += 1
        self._next_announce = now + limits.ANNOUNCE_INTERVAL

    def _rotate(self, now: float, reason: str) -> None:
        self._start_epoch(self._epoch + 1, now, reason)

    def _clock_stepped(self, now: float, wall: float) -> bool:
        """If the wall clock stepped since the epoch began (`wall - now` moved by more than
        CLOCK_STEP_MAX), rotate to an epoch announced from the new clock (module docstring)."""
        step = (wall - now) - self._epoch_offset
        if abs(step) <= limits.CLOCK_STEP_MAX:
            return False
        old_wall = now + self._epoch_offset if abs(step) <= limits.CLOCK_STEP_SPAN_MAX else None
        epoch = max(self._epoch + 1, min(int(wall), EPOCH_MAX))
        self._start_epoch(epoch, now, "clock", old_wall=old_wall, clock_step=step)
        return True

    def set_policy_hash(self, policy_hash: bytes, now: float) -> None:
        """Announce a new policy hash for the current key (same epoch, new signed announcement)."""
        if len(policy_hash) != 32:
            raise ValueError("policy_hash must be 32 bytes")
        self._policy_hash = bytes(policy_hash)
        self._build_announcement()
        self._announce(now, copies=limits.ANNOUNCE_REPEAT_ON_ROTATE)

    @property
    def epoch(self) -> int:
        return self._epoch

    @property
    def announcement(self) -> bytes:
        """The current announcement datagram (as last queued)."""
        return self._announcement

    # --- objects and blocks -------------------------------------------------
    def submit(self, object_id: int, payload: bytes, now: float, wall: float | None = None) -> None:
        """Queue one canonical object (opaque bytes); full blocks are sealed at once. With `wall`
        (read with `now`), a clock step is noticed first: the object goes under the new epoch."""
        self._wall(now, wall)
        if wall is not None:
            self._clock_stepped(now, wall)
        if not 0 <= object_id < 1 << 64:
            raise ValueError("object_id out of range")
        if len(payload) > limits.OBJECT_MAX:
            raise ValueError("object too large")
        self._queue.append((object_id, memoryview(payload), 0))
        self.counters.objects += 1
        self._pack(now)

    def flush(self, now: float, wall: float | None = None) -> None:
        """Seal the partially filled block now."""
        self._wall(now, wall)
        if wall is not None:
            self._clock_stepped(now, wall)
        self._pack(now)
        if self._parts:
            self._seal(now)

    def _pack(self, now: float) -> None:
        cap = self.capacity
        queue = self._queue
        while queue:
            object_id, view, offset = queue[0]
            total = len(view)
            room = cap - self._used - FRAGMENT_HEADER_SIZE
            if room < 1:
                self._seal(now)
                continue
            n = min(room, total - offset)
            self._parts.append(FRAGMENT_HEADER.pack(object_id, total, offset, n))
            if n:
                self._parts.append(view[offset : offset + n])
            self._used += FRAGMENT_HEADER_SIZE + n
            self._ids.append(object_id)
            if offset + n == total:
                queue.popleft()
                if cap - self._used <= FRAGMENT_HEADER_SIZE:
                    self._seal(now)
            else:
                queue[0] = (object_id, view, offset + n)
                self._seal(now)

    def _seal(self, now: float) -> None:
        block_no = self._next_block
        if block_no > BLOCK_NO_MAX:
            raise RuntimeError("block numbers exhausted")
        plaintext = b"".join(self._parts)
        sealed_len = len(plaintext) + TAG_SIZE
        k, m = self._k, self._m
        c = self.counters
        if self._seal_now:
            self._out.extend(seal_block(self._key, self._epoch, block_no, plaintext, k, m))
            self._data_made += k + m
        else:
            self._out.append(UnsealedBlock(self._epoch, block_no, plaintext, k, m, self._key))
            self._data_made += 1
        c.blocks += 1
        c.datagrams += k + m
        c.bytes += block_wire_bytes(len(plaintext), k, m)
        self._events.append(BlockSealed(self._epoch, block_no, tuple(self._ids), sealed_len))
        self._next_block = block_no + 1
        self._epoch_bytes += sealed_len
        self._parts = []
        self._ids = []
        self._used = 0
        if self._epoch_bytes >= self._key_bytes_max:
            self._rotate(now, "bytes")

    def _push(self, control: Control) -> None:
        self._control.append((self._data_made, control))
        self.counters.datagrams += 1
        self.counters.bytes += len(control.data)

    # --- what has left (track_sent) -------------------------------------------
    def blocks_sent(self, next_block: int) -> None:
        """The caller reports that every block below `next_block` has left (handed to the link,
        or lost sending it). Only with track_sent=True; never goes back."""
        if self._sent is None:
            raise ValueError("blocks_sent needs a sender made with track_sent=True")
        self._sent = max(self._sent, min(next_block, self._next_block))

    def _frontier(self) -> int:
        """Blocks below have left: as reported (track_sent), else every block made."""
        return self._next_block if self._sent is None else self._sent

    def _on_wire(self) -> _Announced:
        """The announcement of the blocks leaving now; older ones whose blocks all left are
        forgotten."""
        wire, frontier = self._wire, self._frontier()
        while len(wire) > 1 and wire[1].from_block <= frontier:
            wire.popleft()
        return wire[0]

    # --- output, events, timers --------------------------------------------
    def datagrams_to_send(self, now: float) -> list[bytes]:
        """Every datagram ready, in order; the symbols of a block are consecutive. Blocks left
        unsealed (seal=False) are sealed here, in their place."""
        out: list[bytes] = []
        for item in self.items_to_send(now):
            if isinstance(item, UnsealedBlock):
                out.extend(seal(item))
            else:
                out.append(item)
        return out

    def items_to_send(self, now: float) -> list[SendItem]:
        """Everything ready, in the order made: datagrams and (seal=False) blocks to seal in
        their place, with `ferry.wire.seal.seal`, before the datagrams after them are sent.
        Control datagrams taken already (`control_to_send`) are not here again."""
        data = self._out
        out: list[SendItem] = []
        for made, control in self._control:
            take = made - self._data_taken
            if take > 0:
                out.extend(data.popleft() for _ in range(take))
                self._data_taken = made
            out.append(control.data)
        self._control.clear()
        out.extend(data)
        self._data_taken += len(data)
        data.clear()
        return out

    def control_to_send(self, now: float) -> list[Control]:
        """The control datagrams ready (announcements, heartbeats), in order, to send ahead of
        the data queued (`items_to_send`), each once its `after_block` has left."""
        out = [control for _, control in self._control]
        self._control.clear()
        return out

    def next_event(self) -> SenderEvent | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        return min(self._next_announce, self._next_heartbeat, self._epoch_started + self._key_lifetime)

    def handle_timer(self, now: float, wall: float) -> None:
        """Rotate the key when due (or at once if the wall clock stepped), repeat the
        announcement, send a heartbeat. `now` and `wall` are read together."""
        self._wall(now, wall)
        if not self._clock_stepped(now, wall) and now >= self._epoch_started + self._key_lifetime:
            self._rotate(now, "time")
        if now >= self._next_announce:
            self._repeat_announcement(now)
        if now >= self._next_heartbeat:
            self._heartbeat(now)

    def heartbeat(self, now: float, wall: float) -> None:
        """Queue a heartbeat at once (also sent by handle_timer every HEARTBEAT_INTERVAL)."""
        self._wall(now, wall)
        self._heartbeat(now)

    def _heartbeat(self, now: float) -> None:
        """A heartbeat of the epoch on the wire: `next_block` (proof that the blocks below were
        sent) and `blocks_sent` count the blocks that left; the other counters what was made."""
        seq = self._hb_seq
        self._hb_seq += 1
        c = self.counters
        w = self._on_wire()
        frontier = self._frontier()
        body = ferry_pb2.Heartbeat(
            seq=seq,
            sent_at=self._wall(now),
            blocks_sent=max(0, frontier - w.first_block),
            next_block=frontier,
            objects_sent=c.objects,
            bytes_sent=c.bytes,
            datagrams_sent=c.datagrams,
            epoch=w.epoch,
        ).SerializeToString(deterministic=True)
        self._push(Control(seal_heartbeat(w.aead, w.epoch, seq, body)))
        c.heartbeats += 1
        self._next_heartbeat = now + limits.HEARTBEAT_INTERVAL
