"""Offline verifier of an audit trail: chain, sequence and signed checkpoints.

Detects any changed, removed, inserted or reordered record (DESIGN.md 2.8):
``seq`` must run 0, 1, 2, ...; ``prev`` must equal the previous record's hash;
``hash`` must recompute; every checkpoint must carry a valid SM2 signature by
the expected key over the hash of the record before it and cover exactly the
records since the previous checkpoint. The last record must be a checkpoint,
unless an open (unsigned) tail is allowed, as for a trail still being written.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO

from ferry import limits
from ferry.audit.errors import AuditError, RecordError
from ferry.audit.records import ZERO_HASH, Record, chain_hash, checkpoint_message, parse_line
from ferry.crypto import CryptoError, SM2PublicKey

TRAIL_FILE = "audit.jsonl"
SIGNER_FILE = "signer.pub"


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """Outcome of a verification. ``first_bad`` is the 0-based position of the first
    bad record (the seq it should have); ``first_bad_line`` its 1-based line number."""

    ok: bool
    records: int                    # records that verified (all of them when ok)
    checkpoints: int
    reason: str
    first_bad: int | None = None
    first_bad_line: int | None = None
    claimed_seq: int | None = None  # the seq the bad record says it has, if readable
    warnings: tuple[str, ...] = ()
    agent: str | None = None
    head: str = ZERO_HASH.hex()     # hash of the last good record
    signed: int = 0                 # records covered by a verified checkpoint
    key_id: str = ""
    key_source: str = "given"
    last_time: str | None = None    # time of the last record that verified (how old an unsigned tail is)
    first: int = 0                  # seq of the first record: 0 for a whole trail, more for a range


class ChainVerifier:
    """Incremental verifier: ``feed`` lines in order, then ``result``. Pure.

    With ``range_ok`` the lines may be a range cut from a trail (an export with --since, a log
    server's copy): the first record may have any seq and is anchored at its own ``prev``, and the
    first checkpoint may cover records from before the range. Its signature still proves the
    range: it signs the hash of the last record it covers, which chains (SM3) every record of the
    range from the anchor. What a range cannot prove: anything about the records before its first
    (the anchor is only a hash) or after its last checkpoint (an open tail)."""

    def __init__(self, public_key: SM2PublicKey, *, range_ok: bool = False) -> None:
        self._key = public_key
        self._range_ok = range_ok
        self.first = 0
        self.key_id = public_key.key_id().hex()
        self.count = 0                  # records verified so far == next expected seq
        self.checkpoints = 0
        self.head = ZERO_HASH           # hash of the last verified record
        self.signed = 0                 # first seq not covered by a checkpoint
        self.agent: str | None = None
        self.last_record: Record | None = None
        self.failure: tuple[int, int | None, str] | None = None  # (position, claimed seq, reason)

    @property
    def failed(self) -> bool:
        return self.failure is not None

    def fail(self, reason: str, claimed_seq: int | None = None) -> None:
        """Mark the record at the current position bad (first failure wins)."""
        if self.failure is None:
            self.failure = (self.count, claimed_seq, reason)

    def feed(self, line: bytes) -> Record | None:
        """Verify the next line; returns its record, or None once anything failed."""
        if self.failure is not None:
            return None
        try:
            rec = parse_line(line)
        except RecordError as exc:
            self.fail(f"malformed record: {exc}")
            return None
        seq = rec["seq"]
        if self._range_ok and self.last_record is None and self.failure is None:
            self.first = self.count = self.signed = seq         # the range's anchor: its own prev
            self.head = bytes.fromhex(rec["prev"])
        if seq != self.count:
            self.fail(f"seq is {seq}, expected {self.count}: a record was removed, "
                      "inserted or reordered here", seq)
            return None
        if rec["prev"] != self.head.hex():
            what = "record" if seq == 0 else f"record {seq - 1}"
            self.fail(f"prev does not match the hash of the previous {what}: a record "
                      "was changed, removed or inserted before this one", seq)
            return None
        body = {k: v for k, v in rec.items() if k != "hash"}
        h = chain_hash(self.head, body)
        if h.hex() != rec["hash"]:
            self.fail("hash does not match the record's content: the record was changed", seq)
            return None
        if self.agent is None:
            self.agent = rec["agent"]
        elif rec["agent"] != self.agent:
            self.fail(f"agent is {rec['agent']!r} in a trail of {self.agent!r}", seq)
            return None
        if rec["event"] == "checkpoint" and not self._checkpoint(rec):
            return None
        self.head = h
        self.count += 1
        self.last_record = rec
        return rec

    def _checkpoint(self, rec: Record) -> bool:
        seq = rec["seq"]
        expect = [self.signed, seq - 1]
        if self._range_ok and self.checkpoints == 0 and rec["covers"][0] <= self.first:
            expect[0] = rec["covers"][0]    # the range's first checkpoint began before the range
        if rec["covers"] != expect:
            self.fail(f"checkpoint covers {rec['covers']}, expected {expect}: records "
                      "before it were removed, inserted or reordered", seq)
            return False
        if rec["head"] != rec["prev"]:
            self.fail("checkpoint head is not the hash of the record before it", seq)
            return False
        if rec["key_id"] != self.key_id:
            self.fail(f"checkpoint signed by another key (key_id {rec['key_id'][:16]}..., "
                      f"expected {self.key_id[:16]}...)", seq)
            return False
        msg = checkpoint_message(rec["agent"], self.head, seq - 1)
        try:
            self._key.verify(msg, bytes.fromhex(rec["sig"]))
        except (CryptoError, ValueError):
            self.fail(f"checkpoint signature does not verify: records {expect[0]}..{expect[1]} "
                      "are not authenticated", seq)
            return False
        self.checkpoints += 1
        self.signed = seq + 1
        return True

    def result(self, *, allow_open_tail: bool = False, key_source: str = "given",
               warnings: Iterable[str] = ()) -> VerifyResult:
        warn = list(warnings)
        common = VerifyResult(ok=True, reason="intact", records=self.count - self.first,
                              checkpoints=self.checkpoints, first=self.first,
                              agent=self.agent, head=self.head.hex(), signed=self.signed, key_id=self.key_id,
                              key_source=key_source,
                              last_time=None if self.last_record is None else self.last_record["time"])
        if self.failure is not None:
            pos, claimed, reason = self.failure
            return replace(common, ok=False, reason=reason, first_bad=pos, first_bad_line=pos - self.first + 1,
                           claimed_seq=claimed, warnings=tuple(warn))
        if self.count == self.first:
            if allow_open_tail:
                warn.append("the trail is empty")
                return replace(common, ok=True, reason="empty", warnings=tuple(warn))
            return replace(common, ok=False, reason="the trail is empty", warnings=tuple(warn))
        if self.signed < self.count:
            tail = f"records {self.signed}..{self.count - 1} are not covered by a signed checkpoint"
            if allow_open_tail:
                warn.append(tail + " (open tail)")
                return replace(common, ok=True, reason="intact, open tail", warnings=tuple(warn))
            return replace(common, ok=False, reason=f"the trail does not end with a checkpoint: {tail}. "
                           "A running agent signs its tail within its checkpoint interval (60 s by "
                           "default): verify a trail still being written with --open-tail. A trail "
                           "whose agent stopped must end with a checkpoint: then an unclean stop, a "
                           "removed final checkpoint or a trail cut short",
                           first_bad=self.signed, first_bad_line=self.signed - self.first + 1,
                           claimed_seq=self.signed, warnings=tuple(warn))
        return replace(common, ok=True, reason="intact", warnings=tuple(warn))


def verify_lines(lines: Iterable[bytes], public_key: SM2PublicKey, *,
                 allow_open_tail: bool = False, range_ok: bool = False) -> VerifyResult:
    """Verify a trail (or with ``range_ok`` a range of one) given as lines (each with or without
    its newline). Pure."""
    v = ChainVerifier(public_key, range_ok=range_ok)
    for line in lines:
        v.feed(line)
        if v.failed:
            break
    return v.result(allow_open_tail=allow_open_tail)


def iter_file_lines(f: IO[bytes]) -> Iterator[tuple[int, bytes]]:
    """(offset, line) of a binary file; a line is cut at AUDIT_RECORD_MAX + 1 bytes."""
    offset = 0
    while True:
        line = f.readline(limits.AUDIT_RECORD_MAX + 1)
        if not line:
            return
        yield offset, line
        offset += len(line)


def load_signer(directory: Path) -> SM2PublicKey:
    """The public key stored beside the trail (DIR/signer.pub)."""
    path = Path(directory) / SIGNER_FILE
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise AuditError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        return SM2PublicKey.from_pem(data)
    except CryptoError as exc:
        raise AuditError(f"{path}: not an SM2 public key: {exc}") from None


def verify_dir(directory: Path, public_key: SM2PublicKey | None = None,
               allow_open_tail: bool = False, *,
               on_record: Callable[[Record], None] | None = None) -> VerifyResult:
    """Verify DIR/audit.jsonl. Without ``public_key``, DIR/signer.pub is used and the
    result says so. AuditError if the trail or key cannot be read."""
    directory = Path(directory)
    warnings: list[str] = []
    key_source = "given"
    if public_key is None:
        public_key = load_signer(directory)
        key_source = str(directory / SIGNER_FILE)
        warnings.append(f"key taken from {key_source}, which lives beside the trail: compare "
                        "its key_id with the agent's provisioned key")
    v = ChainVerifier(public_key)
    path = directory / TRAIL_FILE
    try:
        with open(path, "rb") as f:
            for _, line in iter_file_lines(f):
                if not line.endswith(b"\n"):
                    if len(line) > limits.AUDIT_RECORD_MAX:
                        v.fail(f"line longer than {limits.AUDIT_RECORD_MAX} bytes")
                    else:
                        v.fail("the last line is incomplete (no newline): torn write")
                    break
                rec = v.feed(line)
                if rec is None:
                    break
                if on_record is not None:
                    on_record(rec)
    except OSError as exc:
        raise AuditError(f"cannot read {path}: {exc.strerror or exc}") from None
    return v.result(allow_open_tail=allow_open_tail, key_source=key_source, warnings=warnings)
