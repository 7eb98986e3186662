"""Objects on their way to the link whose ``object_sent`` record waits for their blocks.

Pure. The agent adds each ``SealObject`` it submits (with a token of its own, e.g. the spool
path), feeds the sender's ``BlockSealed`` events, and after a flush takes the completed
records, each with the key epoch and the block numbers that carry the object.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from ferry.lanes.work import AuditIntent, SealObject
from ferry.wire.events import BlockSealed

T = TypeVar("T")


@dataclass(slots=True)
class _Sending(Generic[T]):
    sent: dict[str, Any]
    token: T
    epoch: int = 0
    blocks: list[int] = field(default_factory=list)


class SentRecords(Generic[T]):
    def __init__(self) -> None:
        self._pending: dict[int, _Sending[T]] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, work: SealObject, token: T) -> None:
        """An object submitted to the sender; one without a ``sent`` record is not tracked."""
        if work.sent is not None:
            self._pending[work.obj.object_id] = _Sending(work.sent, token)

    def block_sealed(self, e: BlockSealed) -> None:
        for oid in e.object_ids:
            p = self._pending.get(oid)
            if p is not None:
                p.blocks.append(e.block_no)
                p.epoch = e.epoch

    def complete(self) -> list[tuple[AuditIntent, T]]:
        """Every tracked object's record (after the sender's flush: all their blocks are sealed)."""
        done = [(AuditIntent({**p.sent, "epoch": p.epoch, "blocks": p.blocks}), p.token)
                for p in self._pending.values()]
        self._pending.clear()
        return done
