"""The audit trail file of one agent: DIR/audit.jsonl plus DIR/signer.pub.

The only module of ferry.audit that touches files. One ``os.write`` per record on
an O_APPEND descriptor. If a write fails the record is not written, the chain
does not advance and ``AuditUnavailable`` is raised: the caller's lane stops
(fail closed, DESIGN.md 2.7). Every later call retries, reopening the file; the
first record written after an outage is an ``audit_resumed`` alarm.
"""

from __future__ import annotations

import fcntl
import os
import stat
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Any

from ferry import limits
from ferry.audit.errors import AuditError, AuditUnavailable, RecordError
from ferry.audit.records import (
    Record,
    AGENTS,
    FIELDS,
    ZERO_HASH,
    check_fields,
    checkpoint_fields,
    format_time,
    seal_checked,
    seal_record,
)
from ferry.audit.verify import SIGNER_FILE, TRAIL_FILE, ChainVerifier, iter_file_lines
from ferry.crypto import CryptoError, SM2PrivateKey, SM2PublicKey, sm3

LOCK_FILE = "audit.lock"
_SET_BY_TRAIL = ("time", "agent", "agent_name", "seq", "prev", "hash")
_SET_BY_TRAIL_KEYS = frozenset(_SET_BY_TRAIL)
_PLAIN_TYPES = frozenset({str, int, dict, list, bool, float})     # neither None nor an enumeration member
_OPEN_FLAGS = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NONBLOCK


class _Refused(Exception):
    """The file at the trail's path cannot continue the chain (internal)."""


class AuditTrail:
    """Append-only, SM3-chained, SM2-checkpointed audit trail of one agent."""

    def __init__(self, directory: Path, agent: str, agent_name: str,
                 signing_key: SM2PrivateKey, *,
                 checkpoint_every: int = limits.AUDIT_CHECKPOINT_EVERY,
                 checkpoint_interval: float = limits.AUDIT_CHECKPOINT_INTERVAL) -> None:
        if agent not in AGENTS:
            raise AuditError(f"agent must be 'outer' or 'inner', not {agent!r}")
        if checkpoint_every < 1 or not checkpoint_interval > 0:
            raise AuditError("checkpoint_every and checkpoint_interval must be positive")
        self.directory = Path(directory)
        self.path = self.directory / TRAIL_FILE
        self._path_name = os.fspath(self.path)     # stat per record: a str skips Path's conversion
        self.agent = agent
        self.agent_name = agent_name
        self._key = signing_key
        self._pub = signing_key.public_key()
        self._every = checkpoint_every
        self._interval = checkpoint_interval
        # chain state: advances only when a line is completely written
        self._seq = 0
        self._head = ZERO_HASH
        self._head_hex = ZERO_HASH.hex()
        self._signed = 0            # first seq not covered by a checkpoint
        self._good_size = 0         # file size after the last good record
        self._last_line = b""
        self._last_cp_time: float | None = None
        # outage state
        self._fd: int | None = None
        self._ident: tuple[int, int] | None = None
        self._attempt = b""         # the last line whose write failed (may be partly on disk)
        self._torn_tail = False     # resume found a torn last line: truncate it
        self._failures = 0
        self._failed_since: str | None = None
        self._last_error = ""
        self._pending: Record | None = None   # detail of an audit_resumed alarm to write first
        self._closed = False
        try:
            self.directory.mkdir(mode=0o750, parents=True, exist_ok=True)
            self._lock_fd = os.open(self.directory / LOCK_FILE,
                                    os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
        except OSError as exc:
            raise AuditError(f"cannot use {self.directory}: {exc.strerror or exc}") from None
        try:
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                raise AuditError(f"{self.directory} is in use by another audit trail") from None
            self._check_signer()
            self._resume()
        except BaseException:
            os.close(self._lock_fd)
            raise

    # --- opening --------------------------------------------------------------

    def _check_signer(self) -> None:
        path = self.directory / SIGNER_FILE
        try:
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                tmp = path.with_name(SIGNER_FILE + ".tmp")
                tmp.write_bytes(self._pub.to_pem())
                os.replace(tmp, path)
                return
        except OSError as exc:
            raise AuditError(f"{path}: {exc.strerror or exc}") from None
        try:
            stored = SM2PublicKey.from_pem(data)
        except CryptoError as exc:
            raise AuditError(f"{path}: not an SM2 public key: {exc}") from None
        if stored != self._pub:
            raise AuditError(f"{path} does not match the signing key (key_id "
                             f"{stored.key_id().hex()[:16]}..., signing key "
                             f"{self._pub.key_id().hex()[:16]}...)")

    def _resume(self) -> None:
        """Verify an existing trail and continue its chain."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise AuditError(f"{self.path}: {exc.strerror or exc}") from None
        if not stat.S_ISREG(st.st_mode):
            return      # refused when first written to (see _open)
        v = ChainVerifier(self._pub)
        good, last, torn = 0, b"", None
        try:
            with open(self.path, "rb") as f:
                for offset, line in iter_file_lines(f):
                    if not line.endswith(b"\n") and len(line) <= limits.AUDIT_RECORD_MAX:
                        torn = line
                        break
                    if v.feed(line) is None:
                        break
                    good, last = offset + len(line), line
        except OSError as exc:
            raise AuditError(f"cannot read {self.path}: {exc.strerror or exc}") from None
        if v.failed:
            r = v.result()
            raise AuditError(f"existing trail {self.path} does not verify at line "
                             f"{r.first_bad_line}: {r.reason}; move it aside to start a new one")
        if v.agent is not None and v.agent != self.agent:
            raise AuditError(f"existing trail {self.path} belongs to the {v.agent} agent")
        self._seq, self._head, self._signed = v.count, v.head, v.signed
        self._head_hex = self._head.hex()
        self._good_size, self._last_line = good, last
        detail: Record = {}
        if torn is not None:
            self._torn_tail = True
            detail.update(torn_tail_bytes=len(torn), torn_tail_sm3=sm3(torn).hex())
        if self._signed < self._seq:
            detail["unsigned_records"] = [self._signed, self._seq - 1]
        if detail:
            detail["reason"] = "trail did not end with a checkpoint: unclean shutdown"
            self._pending = detail

    def _open(self) -> None:
        """Make sure ``_fd`` is open on the file now at ``path`` and that it ends with our chain."""
        try:
            st = os.stat(self._path_name)
            if self._fd is not None and (st.st_dev, st.st_ino) == self._ident:
                return
        except FileNotFoundError:
            pass
        self._close_fd()
        fd = os.open(self.path, _OPEN_FLAGS, 0o640)
        try:
            self._adopt(fd)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def _adopt(self, fd: int) -> None:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _Refused(f"{self.path} is not a regular file")
        size, good = st.st_size, self._good_size
        if size < good:
            raise _Refused(f"{self.path} is shorter than the trail written so far "
                           "(replaced or truncated)")
        if good and os.pread(fd, len(self._last_line), good - len(self._last_line)) != self._last_line:
            raise _Refused(f"{self.path} does not end with the last record written (replaced)")
        if size > good:
            extra = os.pread(fd, min(size - good, limits.AUDIT_RECORD_MAX + 1), good)
            partial = size - good <= len(self._attempt) and self._attempt.startswith(extra)
            if not (partial or self._torn_tail) or b"\n" in extra:
                raise _Refused(f"{self.path} has unexpected data after the last record")
            os.ftruncate(fd, good)
        self._torn_tail = False
        self._ident = (st.st_dev, st.st_ino)

    def _close_fd(self) -> None:
        if self._fd is not None:
            fd, self._fd, self._ident = self._fd, None, None
            try:
                os.close(fd)
            except OSError:
                pass

    # --- writing --------------------------------------------------------------

    def _write_record(self, fields: Record, checked: bool = False) -> Record:
        """Seal and write one record; ``checked``: its fields passed ``check_fields`` (append's)."""
        if checked:
            line, h, record = seal_checked(fields, self._head, self._head_hex, self._seq)
        else:
            line, h = seal_record(fields, self._head, self._seq)
            record = dict(fields, seq=self._seq, prev=self._head_hex, hash=h.hex())
        assert self._fd is not None, "_open() runs before every write"
        try:
            n = os.write(self._fd, line)
        except OSError:
            self._attempt = line
            raise
        if n != len(line):
            self._attempt = line
            raise OSError(f"short write ({n} of {len(line)} bytes)")
        self._seq += 1
        self._head = h
        self._head_hex = record["hash"]
        self._good_size += len(line)
        self._last_line = line
        self._attempt = b""
        return record

    def _base(self, now: float, event: str, verdict: str) -> Record:
        return {"time": format_time(now), "agent": self.agent, "agent_name": self.agent_name,
                "event": event, "verdict": verdict}

    def _write_pending(self, now: float) -> None:
        if not (self._failures or self._pending):
            return
        detail = dict(self._pending or {})
        if self._failures:
            detail.update(failed_attempts=self._failures, failed_since=self._failed_since,
                          last_error=self._last_error)
        self._write_record(dict(self._base(now, "audit_resumed", "alarm"), detail=detail))
        self._failures, self._failed_since, self._last_error = 0, None, ""
        self._pending = None

    def _guarded(self, now: float, make_fields: Callable[[], Record], checked: bool = False) -> Record:
        """Write pending alarms then one record; AuditUnavailable if anything fails."""
        if self._closed:
            raise AuditError("audit trail is closed")
        try:
            self._open()
            self._write_pending(now)
            return self._write_record(make_fields(), checked)
        except (OSError, _Refused) as exc:
            if self._failures == 0:
                self._failed_since = format_time(now)
            self._failures += 1
            self._last_error = str(exc)
            self._close_fd()
            raise AuditUnavailable(f"audit trail {self.path} unavailable: {exc}") from None

    # --- public API -----------------------------------------------------------

    @property
    def is_available(self) -> bool:
        """False after a failed write, until a write succeeds again."""
        return self._failures == 0 and not self._closed

    @property
    def seq(self) -> int:
        """The seq the next record will get."""
        return self._seq

    @property
    def head(self) -> bytes:
        """Hash of the last record written."""
        return self._head

    def append(self, now: float, **fields: Any) -> Record:
        """Write one record (``time``, ``agent``, ``agent_name`` are filled in) and return it.

        Known fields given as None are left out. ValueError (RecordError) for bad fields;
        AuditUnavailable if it could not be written.
        """
        # known fields given as None are left out; an enumeration member (a reason code) is its value
        # (``fields`` is this call's own dict: without either, it is used as it is)
        if not set(map(type, fields.values())) <= _PLAIN_TYPES:
            fields = {k: v.value if isinstance(v, Enum) else v for k, v in fields.items()
                      if v is not None or k not in FIELDS}
        if not _SET_BY_TRAIL_KEYS.isdisjoint(fields):
            for k in _SET_BY_TRAIL:
                if k in fields:
                    raise RecordError(f"{k!r} is set by the trail")
        if fields.get("event") == "checkpoint":
            raise RecordError("use checkpoint() to write a checkpoint")
        rec_fields = {"time": format_time(now), "agent": self.agent,
                      "agent_name": self.agent_name, **fields}
        check_fields(rec_fields)
        if self._last_cp_time is None:
            self._last_cp_time = now
        record = self._guarded(now, lambda: rec_fields, checked=True)
        if self._checkpoint_due(now):
            try:
                self.checkpoint(now)
            except AuditUnavailable:
                pass    # the record is written; the next call retries and raises
        return record

    def _checkpoint_due(self, now: float) -> bool:
        unsigned = self._seq - self._signed
        return unsigned >= self._every or (
            unsigned > 0 and self._last_cp_time is not None
            and now - self._last_cp_time >= self._interval)

    def next_checkpoint(self, now: float) -> float | None:
        """When (on the clock of ``now``) ``tick`` will sign the records written so far: None while
        every record is signed, ``now`` if overdue. The agents arm a timer with it, so a quiet
        agent's tail is signed within checkpoint_interval of its first unsigned record."""
        if self._seq == self._signed or self._closed:
            return None
        last = now if self._last_cp_time is None else self._last_cp_time
        return max(now, last + self._interval)

    def tick(self, now: float) -> Record | None:
        """Write a checkpoint if checkpoint_interval has passed with unsigned records."""
        if self._last_cp_time is None:
            self._last_cp_time = now
        if self._checkpoint_due(now):
            return self.checkpoint(now)
        return None

    def checkpoint(self, now: float) -> Record | None:
        """Sign the records since the last checkpoint now, and fdatasync. None if there are none."""
        if self._closed:
            raise AuditError("audit trail is closed")
        if self._seq == self._signed and not (self._failures or self._pending):
            self._last_cp_time = now
            self.sync(now)
            return None

        def make() -> Record:
            return checkpoint_fields(format_time(now), self.agent, self.agent_name,
                                     self._signed, self._head, self._seq - 1, self._key)

        record = self._guarded(now, make)
        self._signed = self._seq
        self._last_cp_time = now
        self.sync(now)
        return record

    def sync(self, now: float) -> None:
        """fdatasync the trail; AuditUnavailable if that fails."""
        try:
            if self._fd is not None:
                os.fdatasync(self._fd)
        except OSError as exc:
            if self._failures == 0:
                self._failed_since = format_time(now)
            self._failures += 1
            self._last_error = f"fdatasync: {exc}"
            self._close_fd()
            raise AuditUnavailable(f"audit trail {self.path} unavailable: {exc}") from None

    def close(self, now: float) -> None:
        """Write a final checkpoint and close. AuditUnavailable leaves the trail open to retry."""
        if self._closed:
            return
        self.checkpoint(now)
        self.close_without_checkpoint()

    def close_without_checkpoint(self) -> None:
        """Close the files as a crash would: the tail stays unsigned (for tests and aborts)."""
        if self._closed:
            return
        self._closed = True
        self._close_fd()
        os.close(self._lock_fd)
