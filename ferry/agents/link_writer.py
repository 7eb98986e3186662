"""The outer agent's link writer: blocks sealed, paced and sent on a thread of their own.

Sealing (SM4-GCM) is most of the outer agent's work and the cipher releases the GIL, as do the
socket sends and the pacing sleeps: on its own thread the writer runs beside the event loop,
which meanwhile reads cameras and files. The agent decides this: its sender is made with
`seal=False`, and the loop hands over what `LinkSender.items_to_send` returns, in order
(`put`): datagrams, and `UnsealedBlock`s that this thread seals (`ferry.wire.seal.seal`) in
their place. One thread, so everything leaves in the order the sender made it, paced to the
link rate. `close()` sends what was handed over, then ends the thread.
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
from ferry.wire.pacing import Pacer
from ferry.wire.seal import UnsealedBlock, seal
from ferry.wire.sender import SendItem

log = logging.getLogger("ferry.outer.link")

# The writer takes the GIL back after each cipher call or send; the loop thread, busy in Python,
# hands it over only every switch interval (5 ms by default), which would add up to a wait per
# block. A shorter interval keeps a burst of blocks from waiting tens of milliseconds.
GIL_SWITCH_INTERVAL = 0.0005


class LinkWriter:
    def __init__(self, sock: LinkSendSocket, pacer: Pacer) -> None:
        self.sock, self.pacer = sock, pacer
        self.queued: deque[SendItem] = deque()  # handed over, not yet sent (deque ops are thread-safe)
        self.sealed_bytes = 0            # bytes of the datagrams of the blocks it sealed
        self.sent = 0                    # datagrams sent
        self.errors = 0                  # sends that failed (the datagrams are lost)
        self.error: BaseException | None = None   # the thread died of this (a bug)
        self._more = threading.Condition()
        self._closing = False
        sys.setswitchinterval(GIL_SWITCH_INTERVAL)
        self._thread = threading.Thread(target=self._run, name="ferry-link-writer", daemon=True)
        self._thread.start()

    def put(self, items: Collection[SendItem]) -> None:
        """Hand over datagrams and unsealed blocks, in order."""
        if not items:
            return
        self.queued.extend(items)
        with self._more:
            self._more.notify()

    def backlog(self) -> int:
        return len(self.queued)

    def close(self) -> None:
        """Send everything handed over, then stop the thread (blocking)."""
        with self._more:
            self._closing = True
            self._more.notify()
        self._thread.join()

    # -- the thread -----------------------------------------------------------------------
    def _run(self) -> None:
        queued = self.queued
        try:
            while True:
                if not queued:
                    with self._more:
                        while not queued and not self._closing:
                            self._more.wait()
                    if not queued:
                        return            # closing, and everything went out
                self._send(self._batch())
        except BaseException as exc:  # a bug: the loop sees `error` and stops the agent
            log.exception("link writer failed")
            self.error = exc

    def _batch(self) -> list[bytes]:
        queued, size = self.queued, 0
        batch: list[bytes] = []
        while queued and len(batch) < limits.WRITER_BATCH_DATAGRAMS and size < limits.WRITER_BATCH_BYTES:
            item = queued.popleft()
            if isinstance(item, UnsealedBlock):
                datagrams = seal(item)
                self.sealed_bytes += sum(map(len, datagrams))
                batch.extend(datagrams)
                size += sum(map(len, datagrams))
            else:
                batch.append(item)
                size += len(item)
        return batch

    def _send(self, batch: list[bytes]) -> None:
        size = sum(map(len, batch))
        wait = self.pacer.delay(size, time.monotonic())
        if wait > 0:
            time.sleep(wait)
        self.pacer.consume(size, time.monotonic())
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
