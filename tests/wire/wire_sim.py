"""In-process ferry link: LinkSender -> a lossy, reordering, duplicating channel -> LinkReceiver."""

from __future__ import annotations

import random
import struct
from collections import defaultdict

from ferry.wire import (
    BlockLost,
    BlockSealed,
    LinkReceiver,
    LinkSender,
    ObjectLost,
    ObjectReceived,
)

HEAD = struct.Struct(">IQBBB")  # epoch block_no index k m at offset 4


def block_of(d: bytes):
    """(epoch, block_no, index, k, m) of a symbol datagram, else None."""
    if len(d) > 24 and d[3] == 1:
        return HEAD.unpack_from(d, 4)
    return None


class Channel:
    """Per-block symbol loss (a policy function), control loss, reordering and duplication."""

    def __init__(self, rng: random.Random, *, drop_symbols=None, control_loss=0.0, dup=0.0, reorder=0):
        self.rng = rng
        self.drop_symbols = drop_symbols or (lambda key, k, m: 0)  # how many symbols of a block to drop
        self.control_loss = control_loss
        self.dup = dup
        self.reorder = reorder
        self._plan: dict = {}
        self.log: list[bytes] = []  # everything the channel saw (for replays)

    def __call__(self, datagrams: list[bytes]) -> list[bytes]:
        rng = self.rng
        out = []
        for d in datagrams:
            self.log.append(d)
            h = block_of(d)
            if h is None:
                if rng.random() < self.control_loss:
                    continue
            else:
                epoch, block_no, index, k, m = h
                key = (epoch, block_no)
                plan = self._plan.get(key)
                if plan is None:
                    n = min(self.drop_symbols(key, k, m), k + m)
                    plan = self._plan[key] = set(rng.sample(range(k + m), n))
                if index in plan:
                    continue
            out.append(d)
            if rng.random() < self.dup:
                out.append(d)
        if self.reorder:
            for i in range(len(out)):
                j = min(len(out) - 1, i + rng.randrange(self.reorder + 1))
                out[i], out[j] = out[j], out[i]
        return out


class Link:
    """Sender, channel and receiver sharing simulated clocks: `now` (monotonic) and `wall`.

    The wall clock runs `wall_offset` ahead of the monotonic one (far apart, so that a mix-up
    of the two shows); a test may step it (both sides see the same wall clock)."""

    def __init__(self, keys, channel: Channel, now: float = 10_000.0, wall_offset: float = 1.7e9, **sender_kw):
        self.keys = keys
        self.now = now
        self.wall_offset = wall_offset
        self.channel = channel
        self.sender = self.new_sender(**sender_kw)
        self.receiver = self.new_receiver()
        self.sealed: dict = {}  # (epoch, block_no) -> object ids, the outer side's record
        self.sender_events: list = []
        self.events: list = []
        self.sent: dict[int, bytes] = {}

    def new_sender(self, **kw) -> LinkSender:
        outer, inner = self.keys
        kw.setdefault("policy_hash", bytes(range(32)))
        return LinkSender(outer_key=outer, inner_public=inner.public_key(), name="outer-1", now=self.now,
                          wall=self.wall, **kw)

    def new_receiver(self) -> LinkReceiver:
        outer, inner = self.keys
        return LinkReceiver(inner_key=inner, outer_public=outer.public_key(), now=self.now, strict=True)

    @property
    def wall(self) -> float:
        return self.now + self.wall_offset

    def submit(self, object_id: int, payload: bytes) -> None:
        self.sent[object_id] = payload
        self.sender.submit(object_id, payload, self.now)

    def step(self, dt: float = 0.05, flush: bool = True) -> None:
        """Advance the clock, run timers, move datagrams through the channel."""
        self.now += dt
        s = self.sender
        if flush:
            s.flush(self.now)
        t = s.get_timer()
        if t is not None and t <= self.now:
            s.handle_timer(self.now, self.wall)
        self.deliver(self.channel(s.datagrams_to_send(self.now)))
        while (e := s.next_event()) is not None:
            self.sender_events.append(e)
            if isinstance(e, BlockSealed):
                self.sealed[(e.epoch, e.block_no)] = e.object_ids

    def deliver(self, datagrams) -> None:
        r = self.receiver
        for d in datagrams:
            r.receive_datagram(d, self.now, self.wall)
        t = r.get_timer()
        if t is not None and t <= self.now:
            r.handle_timer(self.now)
        self.collect()

    def collect(self) -> None:
        while (e := self.receiver.next_event()) is not None:
            self.events.append(e)

    def idle(self, seconds: float, dt: float = 0.25) -> None:
        end = self.now + seconds
        while self.now < end:
            self.step(dt)

    def of(self, cls) -> list:
        return [e for e in self.events if isinstance(e, cls)]

    def account(self, sent_ids=None) -> dict:
        """Check the loss accounting rules; return the sets for further assertions."""
        sent_ids = set(self.sent) if sent_ids is None else set(sent_ids)
        delivered = [e.object_id for e in self.of(ObjectReceived)]
        lost_objects = [e.object_id for e in self.of(ObjectLost)]
        lost_blocks = [(e.epoch, b) for e in self.of(BlockLost) for b in range(e.block_no, e.block_no + e.count)]
        assert len(delivered) == len(set(delivered)), "object delivered twice"
        assert len(lost_objects) == len(set(lost_objects)), "object reported lost twice"
        assert len(lost_blocks) == len(set(lost_blocks)), "block reported lost twice"
        for e in self.of(ObjectReceived):
            assert e.payload == self.sent[e.object_id], "payload corrupted"
        in_lost_blocks = set()
        for b in lost_blocks:
            assert b in self.sealed, f"reported lost block {b} was never sealed"
            in_lost_blocks.update(self.sealed[b])
        assert not set(delivered) & (set(lost_objects) | in_lost_blocks), "delivered and lost"
        assert set(delivered) | set(lost_objects) | in_lost_blocks == sent_ids
        # objects the receiver knew of (a fragment in a block it opened) that touch a lost block
        blocks_of = defaultdict(set)
        for b, ids in self.sealed.items():
            for oid in ids:
                blocks_of[oid].add(b)
        for oid in in_lost_blocks:
            if blocks_of[oid] - set(lost_blocks):
                assert oid in lost_objects, f"object {oid} touches a lost block but was not reported"
        return {"delivered": set(delivered), "lost_objects": set(lost_objects),
                "lost_blocks": set(lost_blocks), "in_lost_blocks": in_lost_blocks}


def object_sizes(rng: random.Random, n: int, big: int = 3 << 20) -> list[int]:
    """A mix of tiny, small, block-sized, multi-block and multi-MiB objects."""
    out = []
    for _ in range(n):
        r = rng.random()
        if r < 0.25:
            out.append(rng.randint(1, 64))
        elif r < 0.55:
            out.append(rng.randint(65, 4000))
        elif r < 0.8:
            out.append(rng.randint(4000, 60_000))
        elif r < 0.97:
            out.append(rng.randint(60_000, 400_000))
        else:
            out.append(rng.randint(1 << 20, big))
    return out
