"""The outer agent's sealing thread: blocks are sealed beside the event loop, in order.

SM4-GCM in ``cryptography`` releases the GIL, so sealing on a thread lets the loop go on
reading cameras and files on the other core. Handing each block over on its own would cost a
thread wake-up per block; instead the link sender's blocks gather (`__call__`, its `sealer`)
and go to the thread as one batch when the pump collects them (`submit`). One thread, so
blocks are sealed, and leave, in the order the sender made them.
"""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor


class PendingBlock:
    """A block the sender made: its datagrams once the batch it is in has been sealed."""

    __slots__ = ("args", "datagrams", "future")

    def __init__(self, args: tuple) -> None:
        self.args = args
        self.datagrams: list[bytes] | None = None
        self.future: Future | None = None


def _seal_all(fn, batch: list[PendingBlock]) -> None:
    for b in batch:
        b.datagrams = fn(*b.args)
        b.args = ()


class SealingThread:
    """`sealer` for LinkSender: `thread(seal_block, *args)` queues, `submit()` hands over."""

    def __init__(self) -> None:
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="ferry-seal")
        self.fn = None
        self.pending: list[PendingBlock] = []
        self.batches = 0

    def __call__(self, fn, *args) -> PendingBlock:
        self.fn = fn
        block = PendingBlock(args)
        self.pending.append(block)
        return block

    def submit(self) -> None:
        """Start sealing what gathered since the last call (one batch)."""
        if not self.pending:
            return
        batch, self.pending = self.pending, []
        future = self.pool.submit(_seal_all, self.fn, batch)
        for b in batch:
            b.future = future
        self.batches += 1

    def close(self) -> None:
        self.submit()
        self.pool.shutdown(wait=True)
