"""Objects on their way to the link whose ``object_sent`` record waits for their blocks, and
the files kept after it until they have left.

Pure. The agent adds each ``SealObject`` it submits (with a token of its own, e.g. the spool
path), feeds the sender's ``BlockSealed`` events, and after a flush takes the completed
records, each with the key epoch and the block numbers that carry the object.

``KeptFiles``: a file recorded ``object_sent`` is kept (not deleted) until its last block has
left the link writer plus ``keep_after_sent`` seconds; the agent journals each kept file
(``keep``, fsync'd before its blocks can leave), when its blocks left (``left``) and its
removal (``gone``). A restarted agent reads the journal back and ``after_restart`` says what
to do with each entry: re-send it with the same object ID and content, forget it, or name it
lost. The journal is a text file of lines ``crc32-hex SP json``; a torn or corrupt line is
skipped and counted (at worst a file is re-sent, and the inner agent drops the duplicate).
"""
from __future__ import annotations

import json
import math
import zlib
from dataclasses import dataclass, field
from typing import Any, Generic, NamedTuple, TypeVar

from ferry import limits
from ferry.codecs.media_type import sniff_media_type
from ferry.crypto import sm3
from ferry.lanes import cdr
from ferry.lanes.work import AuditIntent, SealObject
from ferry.reasons import Reason
from ferry.wire.events import BlockSealed

T = TypeVar("T")


@dataclass(slots=True)
class _Sending(Generic[T]):
    sent: dict[str, Any]
    token: T
    created: float
    epoch: int = 0
    blocks: list[int] = field(default_factory=list)


class Completed(NamedTuple, Generic[T]):
    """An object whose blocks are all sealed: its ``object_sent`` record, the agent's token and
    the object's ``created`` (to re-send it the same)."""

    record: AuditIntent
    token: T
    created: float


class SentRecords(Generic[T]):
    def __init__(self) -> None:
        self._pending: dict[int, _Sending[T]] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, work: SealObject, token: T) -> None:
        """An object submitted to the sender; one without a ``sent`` record is not tracked."""
        if work.sent is not None:
            self._pending[work.obj.object_id] = _Sending(work.sent, token, work.obj.created)

    def block_sealed(self, e: BlockSealed) -> None:
        for oid in e.object_ids:
            p = self._pending.get(oid)
            if p is not None:
                p.blocks.append(e.block_no)
                p.epoch = e.epoch

    def complete(self) -> list[Completed[T]]:
        """Every tracked object's record (after the sender's flush: all their blocks are sealed)."""
        done = [Completed(AuditIntent({**p.sent, "epoch": p.epoch, "blocks": p.blocks}), p.token, p.created)
                for p in self._pending.values()]
        self._pending.clear()
        return done


# --- kept files: sent, kept until their last block left and keep_after_sent after ---------------

@dataclass(slots=True)
class Kept:
    """A spool file recorded ``object_sent`` and kept (in the agent's kept folder, as ``file``)
    until its last block has left plus ``keep_after_sent``: a restarted agent re-sends it with
    the same object ID (``record`` is its ``object_sent`` record, ``created`` its object's)."""

    record: dict[str, Any]
    created: float
    file: str
    last_block: int = -1            # highest block carrying it in this run; -1: not known (yet)
    left_at: float | None = None    # wall clock when its last block left, if it did

    @property
    def object_id(self) -> int:
        return int(self.record["object_id"])

    @property
    def name(self) -> str:
        return str(self.record["detail"]["name"])


def _line(op: dict[str, Any]) -> bytes:
    body = json.dumps(op, separators=(",", ":"), sort_keys=True).encode()
    return b"%08x " % zlib.crc32(body) + body + b"\n"


def _kept_from(op: dict[str, Any]) -> Kept | None:
    record, created, file = op.get("record"), op.get("created"), op.get("file")
    if not isinstance(created, (int, float)) or isinstance(created, bool):
        return None
    if not (isinstance(record, dict) and type(record.get("object_id")) is int and record["object_id"] > 0
            and isinstance(record.get("detail"), dict) and isinstance(record["detail"].get("name"), str)
            and isinstance(record.get("sm3"), str) and math.isfinite(created)
            and isinstance(file, str) and file and "/" not in file and file not in (".", "..")):
        return None
    return Kept(record, float(created), file)


def parse_kept_journal(data: bytes) -> tuple[dict[int, Kept], int]:
    """The live entries of a kept-files journal (lines ``crc32-hex json``: ``keep``, ``left``,
    ``gone``), and how many lines were torn, corrupt or meaningless (skipped, never trusted)."""
    live: dict[int, Kept] = {}
    bad = 0
    lines = data.split(b"\n")
    if lines[-1]:
        bad += 1                    # a torn last line
    for raw in lines[:-1]:
        crc, _, body = raw.partition(b" ")
        try:
            ok = len(crc) == 8 and int(crc, 16) == zlib.crc32(body)
            op = json.loads(body) if ok else None
        except ValueError:
            op = None
        if not isinstance(op, dict):
            bad += 1
            continue
        kind, oid = op.get("op"), op.get("id")
        if kind == "keep" and (k := _kept_from(op)) is not None:
            live[k.object_id] = k
        elif kind == "left" and type(oid) is int and type(op.get("wall")) in (int, float) and oid in live:
            live[oid].left_at = float(op["wall"])
        elif kind == "gone" and type(oid) is int:
            live.pop(oid, None)
        else:
            bad += 1
    return live, bad


class KeptFiles:
    """The kept files of the outer agent and the journal lines that say so (the agent appends
    them to its journal, fsync'd before a ``keep``'s blocks may leave)."""

    def __init__(self, keep_after_sent: float) -> None:
        self.keep_after_sent = keep_after_sent
        self.entries: dict[int, Kept] = {}
        self.lines = 0              # journal lines written since it was last compacted

    def __len__(self) -> int:
        return len(self.entries)

    def load(self, data: bytes) -> int:
        """A journal from disk: its live entries; how many lines were skipped."""
        self.entries, bad = parse_kept_journal(data)
        return bad

    def keep(self, k: Kept) -> bytes:
        self.entries[k.object_id] = k
        self.lines += 1
        return _line({"op": "keep", "record": k.record, "created": k.created, "file": k.file})

    def sealed(self, object_id: int, blocks: list[int]) -> None:
        """The blocks that carry a kept object in this run (a re-sent one's are new)."""
        k = self.entries.get(object_id)
        if k is not None:
            k.last_block, k.left_at = (max(blocks) if blocks else -1), None

    def blocks_left(self, next_block_sent: int, wall: float) -> bytes:
        """Every block below ``next_block_sent`` has left: the entries whose last one is among
        them left now (journal lines)."""
        out = b""
        for k in self.entries.values():
            if k.left_at is None and 0 <= k.last_block < next_block_sent:
                k.left_at = wall
                self.lines += 1
                out += _line({"op": "left", "id": k.object_id, "wall": wall})
        return out

    def expired(self, wall: float) -> list[Kept]:
        """Entries whose last block left at least keep_after_sent ago: to remove."""
        return [k for k in self.entries.values()
                if k.left_at is not None and wall - k.left_at >= self.keep_after_sent]

    def gone(self, object_id: int) -> bytes:
        self.entries.pop(object_id, None)
        self.lines += 1
        return _line({"op": "gone", "id": object_id})

    def needs_compaction(self) -> bool:
        return self.lines > 2 * len(self.entries) + limits.KEPT_JOURNAL_SLACK

    def compacted(self) -> bytes:
        """A journal of the live entries only."""
        out = []
        for k in self.entries.values():
            out.append(_line({"op": "keep", "record": k.record, "created": k.created, "file": k.file}))
            if k.left_at is not None:
                out.append(_line({"op": "left", "id": k.object_id, "wall": k.left_at}))
        self.lines = len(out)
        return b"".join(out)


@dataclass(frozen=True, slots=True)
class Resend:
    """Re-send a kept file: same object ID, same content, same ``created``."""


@dataclass(frozen=True, slots=True)
class Forget:
    """Remove a kept file and its entry: it left and its keep time passed (nothing recorded)."""

    why: str


@dataclass(frozen=True, slots=True)
class NotResent:
    """The kept file cannot be re-sent: record ``object_lost`` with ``code``, move the file aside."""

    code: Reason
    reason: str


def as_sent(record: dict[str, Any], content: bytes | None) -> bytes | None:
    """The bytes a kept file crossed as: the file itself, or, for a picture its rule had
    re-encoded (``detail.reencoded``: the kept file is the original), the original re-encoded
    again, if that gives the bytes sent (one Pillow version encodes alike). Anything else is
    returned as it is (``after_restart`` then finds it changed)."""
    if content is None or sm3(content).hex() == record.get("sm3"):
        return content
    detail = record.get("detail")
    original = detail.get("reencoded") if isinstance(detail, dict) else None
    if not isinstance(original, dict) or original.get("original_sm3") != sm3(content).hex():
        return content
    done = cdr.reencode(content, sniff_media_type(content))
    if isinstance(done, cdr.Reencoded) and sm3(done.data).hex() == record.get("sm3"):
        return done.data
    return content


def after_restart(k: Kept, content: bytes | None, wall: float, keep_after_sent: float) -> Resend | Forget | NotResent:
    """What a restarted agent does with a kept file: ``content`` is what its file holds now (None:
    gone or unreadable). A file whose blocks all left and whose keep time passed is forgotten; any
    other is re-sent if it is unchanged and still inside the inner agent's replay window (its ID
    is known there as long as a copy could be taken: ``lanes/delivered.py``), else named lost
    (changed or vanished), or, too old, named lost unless it left (then forgotten: the inner
    agent's trail has had its blocks for long)."""
    left = k.left_at is not None
    if k.left_at is not None and wall - k.left_at >= keep_after_sent:
        return Forget("its blocks left and its keep time passed")
    if content is None or sm3(content).hex() != k.record["sm3"]:
        # even if it left: the inner agent may never have heard of its blocks (no heartbeat
        # claimed them before the crash); named lost, reconcile counts it delivered if it was
        what = "vanished" if content is None else "changed (sm3 differs)"
        return NotResent(Reason.RESEND_CHANGED, f"not re-sent after a restart: the kept file {what}")
    if k.created + limits.CLOCK_SKEW - limits.RESEND_MARGIN <= wall:
        if left:
            return Forget("its blocks left; too old to re-send")
        return NotResent(Reason.RESEND_TOO_LATE, f"not re-sent after a restart: created {k.created:.3f} is too old "
                         f"for the inner agent's replay window ({limits.CLOCK_SKEW:.0f} s)")
    return Resend()
