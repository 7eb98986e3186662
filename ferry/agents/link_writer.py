"""The outer agent's link writer: blocks sealed, paced and sent on a thread of their own.

Sealing (SM4-GCM) is most of the outer agent's work and the cipher releases the GIL, as do the
socket sends and the pacing sleeps: on its own thread the writer runs beside the event loop,
which meanwhile reads cameras and files. The agent decides this: its sender is made with
`seal=False`, and the loop hands over what `LinkSender.items_to_send` returns, in order
(`put`): datagrams, and `UnsealedBlock`s that this thread seals (`ferry.wire.seal.seal`) in
their place. Data leaves in the order the sender made it, paced to the link rate.

Control ahead of data (proto/WIRE.md §3a): key announcements and heartbeats
(`LinkSender.control_to_send`) are handed over apart (`put_control`) and go before the data
queued, within the reserved share of the rate (`ferry.wire.pacing.LinkPacer`); one whose
`after_block` has not left yet (a rotation's announcement) waits for those blocks, and no batch
of data runs past them. `next_block_sent` tells the loop which blocks have left (for the
sender's heartbeats, `LinkSender.blocks_sent`). `close()` sends what was handed over, then ends
the thread.
"""
from __future__ import annotations

import logging
import select
import sys
import threading
import time
from collections import deque
from collections.abc import Collection

from ferry import limits
from ferry.agents.link_io import LinkSendSocket
from ferry.wire.pacing import LinkPacer, Next
from ferry.wire.seal import UnsealedBlock, seal
from ferry.wire.sender import Control, SendItem

log = logging.getLogger("ferry.outer.link")

# The writer takes the GIL back after each cipher call or send; the loop thread, busy in Python,
# hands it over only every switch interval (5 ms by default), which would add up to a wait per
# block. A shorter interval keeps a burst of blocks from waiting tens of milliseconds.
GIL_SWITCH_INTERVAL = 0.0005


class _Batch:
    """Data datagrams sealed and waiting for their turn; `next_block`: once they have left,
    every block below it has (None: no block in it)."""

    __slots__ = ("datagrams", "size", "next_block")

    def __init__(self) -> None:
        self.datagrams: list[bytes] = []
        self.size = 0
        self.next_block: int | None = None


class LinkWriter:
    def __init__(self, sock: LinkSendSocket, pacer: LinkPacer) -> None:
        self.sock, self.pacer = sock, pacer
        self.queued: deque[SendItem] = deque()  # data handed over, not yet sent (deque ops are thread-safe)
        self.control: deque[Control] = deque()  # control handed over, not yet sent
        self.next_block_sent = 0         # every block below it has left (sent, or lost sending it)
        self.sealed_bytes = 0            # bytes of the datagrams of the blocks it sealed
        self.sent = 0                    # datagrams sent
        self.control_sent = 0            # ... of them control datagrams
        self.errors = 0                  # sends that failed (the datagrams are lost)
        self.error: BaseException | None = None   # the thread died of this (a bug)
        self._more = threading.Condition()
        self._news = False               # something handed over since the thread last looked
        self._closing = False
        self._pending: _Batch | None = None    # data taken off `queued`, sealed, not sent yet
        sys.setswitchinterval(GIL_SWITCH_INTERVAL)
        self._thread = threading.Thread(target=self._run, name="ferry-link-writer", daemon=True)
        self._thread.start()

    def put(self, items: Collection[SendItem]) -> None:
        """Hand over datagrams and unsealed blocks, in order."""
        if not items:
            return
        self.queued.extend(items)
        self._wake()

    def put_control(self, items: Collection[Control]) -> None:
        """Hand over control datagrams: they go ahead of the data (hand over the data made before
        them first: an `after_block` waits for blocks handed over)."""
        if not items:
            return
        with self._more:              # the thread looks through `control`: never while it changes
            self.control.extend(items)
            self._news = True
            self._more.notify()

    def _wake(self) -> None:
        with self._more:
            self._news = True
            self._more.notify()

    def backlog(self) -> int:
        """Data items handed over and not sent yet."""
        return len(self.queued) + (self._pending is not None)

    def close(self) -> None:
        """Send everything handed over, then stop the thread (blocking)."""
        with self._more:
            self._closing = True
            self._more.notify()
        self._thread.join()

    # -- the thread -----------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while True:
                if self._pending is None and self.queued:
                    self._pending = self._take_batch()
                control = self._ready_control()
                data = self._pending
                choice = self.pacer.next(None if control is None else len(control.data),
                                         None if data is None else data.size, time.monotonic())
                if choice is None:
                    if not self._sleep(None):
                        return            # closing, and everything went out
                    continue
                kind, wait = choice
                if wait > 0:
                    self._sleep(wait)     # then decide again: control may have come meanwhile
                    continue
                if kind is Next.CONTROL and control is not None:
                    with self._more:
                        self.control.remove(control)   # the first equal one: this one, or its twin
                    self.pacer.consume(Next.CONTROL, len(control.data), time.monotonic())
                    self._send([control.data])
                    self.control_sent += 1
                elif data is not None:
                    self.pacer.consume(Next.DATA, data.size, time.monotonic())
                    self._send(data.datagrams)
                    self._pending = None
                    if data.next_block is not None:
                        self.next_block_sent = max(self.next_block_sent, data.next_block)
        except BaseException as exc:  # a bug: the loop sees `error` and stops the agent
            log.exception("link writer failed")
            self.error = exc

    def _sleep(self, timeout: float | None) -> bool:
        """Wait for news (or `timeout` seconds); False when closing with nothing left to do."""
        with self._more:
            if not self._news:
                if timeout is None and self._closing:
                    return False
                self._more.wait(timeout)
            self._news = False
        return True

    def _ready_control(self) -> Control | None:
        """The first control datagram whose blocks have left (or that has no more to wait for:
        no data is queued)."""
        idle = self._pending is None and not self.queued
        with self._more:
            for c in self.control:
                if c.after_block <= self.next_block_sent or idle:
                    return c
        return None

    def _take_batch(self) -> _Batch:
        """Seal the next batch of data; it stops before a block that a waiting control datagram
        must precede."""
        with self._more:
            gates = [c.after_block for c in self.control if c.after_block > self.next_block_sent]
        stop_at = min(gates) if gates else None
        queued, batch = self.queued, _Batch()
        most, most_bytes = limits.WRITER_BATCH_DATAGRAMS, limits.WRITER_BATCH_BYTES
        while queued and len(batch.datagrams) < most and batch.size < most_bytes:
            item = queued[0]
            if isinstance(item, UnsealedBlock):
                if batch.datagrams and stop_at is not None and item.block_no >= stop_at:
                    break
                queued.popleft()
                datagrams = seal(item)
                n = sum(map(len, datagrams))
                self.sealed_bytes += n
                batch.datagrams.extend(datagrams)
                batch.size += n
                batch.next_block = item.block_no + 1
            else:
                queued.popleft()
                batch.datagrams.append(item)
                batch.size += len(item)
        return batch

    def _send(self, batch: list[bytes]) -> None:
        done = 0
        while done < len(batch):
            try:
                n = self.sock.send_batch(batch[done:])
            except OSError as exc:    # e.g. EPERM from a firewall rule: these datagrams are lost
                self.errors += 1
                if self.errors == 1 or self.errors % 1000 == 0:
                    log.error("link send failed (%d so far): %s", self.errors, exc)
                return
            done += n
            self.sent += n
            if done < len(batch):     # the socket buffer is full: wait for room
                p = select.poll()
                p.register(self.sock.sock.fileno(), select.POLLOUT)
                p.poll(limits.WRITER_WRITABLE_WAIT * 1000)
