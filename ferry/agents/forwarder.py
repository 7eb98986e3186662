"""[audit.forward]: the agent's audit trail forwarded to a log server as RFC 5424 syslog over TCP
(TLS when ``tls_ca`` is set), RFC 6587 octet-counting frames (ferry.audit.syslog). README, Audit.

At least once, from a persisted cursor. The trail file is the buffer: the forwarder reads
audit.jsonl from the cursor and never holds records of its own, so an outage of the log server
loses nothing, however long. TCP syslog has no acknowledgement of its own, so "delivered" is
defined here as: every byte of the record's frame was acknowledged by the server's TCP (the
socket's send queue, SIOCOUTQ, is empty) and the connection was still open FORWARD_SETTLE
seconds later (a server that stops closes its connections at once; bytes it had received but
not yet read are in that window). The cursor (next seq, its byte offset, the hash before it) moves
only over delivered records and is written with fsync before it is relied on. A reconnect or a
restart re-sends from the cursor: at most FORWARD_WINDOW records (never more are sent and not
yet delivered), and says so in a ``forward_resumed`` record (from_seq, duplicates_at_most).
The trail does not rotate: a trail that no longer matches the cursor (moved aside, a new trail)
is forwarded again from seq 0, and the record says why.
"""
from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import socket
import ssl
import struct
import termios
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ferry import limits
from ferry.audit.records import ZERO_HASH
from ferry.audit.syslog import format_message, frame
from ferry.config import AuditForwardSection, ConfigError

log = logging.getLogger("ferry")

CURSOR_FILE = "forward.cursor"
_TASKS: set[asyncio.Task[None]] = set()


@dataclass(frozen=True, slots=True)
class Position:
    """The next record to send: its seq, its byte offset in audit.jsonl, the hash of the one before."""

    seq: int = 0
    offset: int = 0
    prev: str = ZERO_HASH.hex()


def load_cursor(path: Path) -> tuple[Position, str | None]:
    """The persisted cursor, or the start of the trail and why (None: no cursor yet)."""
    try:
        raw = json.loads(path.read_bytes())
        pos = Position(int(raw["seq"]), int(raw["offset"]), str(raw["prev"]))
        if pos.seq < 0 or pos.offset < 0 or len(pos.prev) != 64:
            raise ValueError("out of range")
        return pos, None
    except FileNotFoundError:
        return Position(), None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return Position(), f"cursor {path} unreadable ({exc}): forwarding again from seq 0"


def save_cursor(path: Path, pos: Position) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(json.dumps({"seq": pos.seq, "offset": pos.offset, "prev": pos.prev}).encode() + b"\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def tls_context(section: AuditForwardSection) -> ssl.SSLContext | None:
    if not section.tls_ca:
        return None
    try:
        ctx = ssl.create_default_context(cafile=section.tls_ca)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if section.tls_cert:
            ctx.load_cert_chain(section.tls_cert, section.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"[audit.forward] tls_ca/tls_cert/tls_key: {exc}") from None
    return ctx


def _unacked(writer: asyncio.StreamWriter) -> int:
    """Bytes written but not yet acknowledged by the peer's TCP: the transport's buffer plus the
    kernel's send queue (SIOCOUTQ, same number as TIOCOUTQ on Linux)."""
    n = writer.transport.get_write_buffer_size()
    sock = writer.get_extra_info("socket")
    if sock is not None:
        n += struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0"))[0]
    return n


class _Lost(Exception):
    """The log server closed the connection."""


class Forwarder:
    def __init__(self, section: AuditForwardSection, trail_path: Path, state_dir: Path,
                 record: Callable[..., Any]) -> None:
        self.section = section
        self.trail_path = trail_path
        self.cursor_path = Path(section.cursor) if section.cursor else state_dir / CURSOR_FILE
        self.record = record
        host, _, port = section.address.rpartition(":")
        self.host, self.port = host.strip("[]"), int(port)
        self.ssl = tls_context(section)
        self.hostname = section.hostname or socket.gethostname()
        self.procid = str(os.getpid())
        self.confirmed, self.note = load_cursor(self.cursor_path)
        self.checked = False            # the cursor's first line seen to match the trail
        self.sent_upto = self.confirmed.seq

    async def run(self, stop: asyncio.Event) -> None:
        backoff, first, down_since, last_error = limits.FORWARD_BACKOFF_MIN, True, 0.0, ""
        while not stop.is_set():
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(
                    self.host, self.port, ssl=self.ssl,
                    server_hostname=(self.section.server_name or self.host) if self.ssl else None),
                    limits.FORWARD_CONNECT_TIMEOUT)
            except (OSError, asyncio.TimeoutError, ssl.SSLError) as exc:
                if not down_since:
                    down_since = time.monotonic()
                    log.warning("audit forwarding: cannot reach %s: %s; retrying (the trail keeps every record)",
                                self.section.address, exc or type(exc).__name__)
                last_error = str(exc) or type(exc).__name__
                await _wait(stop, backoff)
                backoff = min(backoff * 2, limits.FORWARD_BACKOFF_MAX)
                continue
            if first:
                cause = "agent started"
            else:
                cause = (f"reconnected after {time.monotonic() - down_since:.1f} s without the server: "
                         f"{last_error}")
            self._resumed(cause)        # every (re)connection says from where it sends
            log.info("audit forwarding to %s: sending from seq %d", self.section.address, self.confirmed.seq)
            first, down_since, began = False, 0.0, time.monotonic()
            try:
                await self._session(reader, writer, stop)
            except (OSError, _Lost, ssl.SSLError, asyncio.IncompleteReadError) as exc:
                down_since = time.monotonic()
                last_error = str(exc) or type(exc).__name__
                if self.ssl and not self.section.tls_cert and down_since - began < limits.FORWARD_SETTLE:
                    # TLS 1.3 ends the handshake before the server checks the client: a server that
                    # wants a certificate accepts, then closes at once (a reset, or an alert)
                    last_error += ("; the TLS server closed the connection at once: does it want a client "
                                   "certificate? [audit.forward] tls_cert/tls_key")
                log.warning("audit forwarding to %s interrupted: %s; re-sending from seq %d on reconnect",
                            self.section.address, last_error, self.confirmed.seq)
            except Exception:   # noqa: BLE001 - a bug here must not stop the agent: logged, retried
                down_since = time.monotonic()
                last_error = "internal error"
                log.exception("audit forwarding failed")
                await _wait(stop, limits.FORWARD_BACKOFF_MAX)
            finally:
                writer.close()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(writer.wait_closed(), 2.0)
            # a server that accepts and soon drops us must not get (nor cost the trail) a
            # forward_resumed record every half second: short sessions keep the backoff growing
            if time.monotonic() - began >= limits.FORWARD_BACKOFF_MAX:
                backoff = limits.FORWARD_BACKOFF_MIN
            await _wait(stop, backoff)
            backoff = min(backoff * 2, limits.FORWARD_BACKOFF_MAX)

    def _resumed(self, cause: str) -> None:
        # a reconnect knows what it sent; a start does not (a kill leaves no word): the window bounds it
        dup = limits.FORWARD_WINDOW if cause == "agent started" else \
            min(self.sent_upto - self.confirmed.seq, limits.FORWARD_WINDOW)
        detail = {"from_seq": self.confirmed.seq, "address": self.section.address, "cause": cause,
                  "duplicates_at_most": max(dup, 0)}
        if self.note:
            detail["note"] = self.note
            self.note = None
        self.record(event="forward_resumed", verdict="info",
                    reason=f"audit forwarding to {self.section.address} (re)starts at seq {self.confirmed.seq}: "
                    f"up to {detail['duplicates_at_most']} records the server may already have are sent again",
                    detail=detail)

    def _save(self, pos: Position) -> None:
        self.confirmed = pos
        try:
            self.cursor_path.parent.mkdir(parents=True, exist_ok=True)
            save_cursor(self.cursor_path, pos)
        except OSError as exc:  # the cursor lags: more duplicates after a restart, nothing lost
            log.error("audit forwarding: cannot write the cursor %s: %s", self.cursor_path, exc)

    def _read(self, f: Any, pos: Position, room: int) -> tuple[list[bytes], Position]:
        """Up to ``room`` records from ``pos`` (a batch of bytes at most) as framed messages; the
        position after them. Each must be the next seq after the hash before it: else _Mismatch."""
        f.seek(pos.offset)
        data = f.read(limits.FORWARD_BATCH_BYTES)
        lines: list[bytes] = []
        start, seq, prev = 0, pos.seq, pos.prev
        while len(lines) < room:
            end = data.find(b"\n", start)
            if end < 0:
                if start == 0 and len(data) >= limits.FORWARD_BATCH_BYTES:   # one long line
                    f.seek(pos.offset)
                    line = f.readline(limits.AUDIT_RECORD_MAX + 1)
                    if line.endswith(b"\n"):
                        data, end = line, len(line) - 1
                    else:
                        break
                else:
                    break
            line = data[start:end + 1]
            try:
                rec = json.loads(line)
            except ValueError as exc:
                raise _Mismatch(f"byte {pos.offset + start} of {self.trail_path} is not a record: {exc}") from None
            if rec.get("seq") != seq or rec.get("prev") != prev:
                raise _Mismatch(f"record at byte {pos.offset + start} of {self.trail_path} is seq "
                                f"{rec.get('seq')}, expected {seq} after hash {prev[:16]}...")
            lines.append(frame(format_message(rec, line, hostname=self.hostname, procid=self.procid)))
            seq, prev = seq + 1, rec["hash"]
            start = end + 1
        return lines, Position(seq, pos.offset + start, prev)

    def _check_cursor(self, f: Any) -> None:
        """The record before the cursor must be seq - 1 with hash prev: else _Mismatch (another trail)."""
        pos = self.confirmed
        if pos.seq == 0 and pos.offset == 0:
            return
        size = os.fstat(f.fileno()).st_size
        if size < pos.offset or pos.offset == 0 or pos.seq == 0:
            raise _Mismatch(f"{self.trail_path} has {size} bytes, the cursor is at byte {pos.offset} (seq {pos.seq})")
        back = min(pos.offset, limits.AUDIT_RECORD_MAX + 1)
        f.seek(pos.offset - back)
        chunk = f.read(back)
        if not chunk.endswith(b"\n"):
            raise _Mismatch(f"the cursor's byte {pos.offset} does not follow a record in {self.trail_path}")
        line = chunk[chunk.rfind(b"\n", 0, len(chunk) - 1) + 1:]
        try:
            rec = json.loads(line)
        except ValueError:
            rec = {}
        if rec.get("seq") != pos.seq - 1 or rec.get("hash") != pos.prev:
            raise _Mismatch(f"the record before the cursor's byte {pos.offset} is not seq {pos.seq - 1} "
                            f"with hash {pos.prev[:16]}...")

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                       stop: asyncio.Event) -> None:
        eof = asyncio.ensure_future(reader.read(4096))     # the server sends nothing; EOF or error: gone
        pending: deque[tuple[Position, float | None]] = deque()   # sent batches' ends, when acked
        pos = self.confirmed
        try:
            f = open(self.trail_path, "rb")
        except FileNotFoundError:
            f = None
        try:
            while True:
                if eof.done():
                    data = eof.result() if not eof.cancelled() else b""
                    if not data:
                        raise _Lost("the server closed the connection")
                    eof = asyncio.ensure_future(reader.read(4096))
                if f is None:
                    with contextlib.suppress(FileNotFoundError):
                        f = open(self.trail_path, "rb")
                room = limits.FORWARD_WINDOW - (pos.seq - self.confirmed.seq)
                lines: list[bytes] = []
                if f is not None and room > 0 and (not self.checked or os.fstat(f.fileno()).st_size > pos.offset):
                    try:
                        if not self.checked:
                            self._check_cursor(f)
                            self.checked = True
                        lines, nxt = self._read(f, pos, room)
                    except _Mismatch as exc:
                        if self.checked:
                            raise
                        self.note = f"the cursor does not match the trail ({exc}): forwarding again from seq 0"
                        log.warning("audit forwarding: %s", self.note)
                        self._save(Position())
                        pos = self.confirmed
                        self.checked = True
                        self._resumed("cursor reset")
                        continue
                if lines:
                    writer.write(b"".join(lines))
                    await writer.drain()
                    pending.append((nxt, None))
                    pos = nxt
                    self.sent_upto = max(self.sent_upto, pos.seq)
                now = time.monotonic()
                if pending and _unacked(writer) == 0:
                    pending = deque((p, now if t is None else t) for p, t in pending)
                settled = None
                while pending and pending[0][1] is not None and now - pending[0][1] >= limits.FORWARD_SETTLE:
                    settled = pending.popleft()[0]
                if settled is not None and not eof.done():
                    self._save(settled)
                if stop.is_set():
                    return
                if not lines:
                    await _wait(stop, limits.FORWARD_POLL, eof)
        finally:
            eof.cancel()
            if f is not None:
                f.close()


class _Mismatch(Exception):
    """The trail at the cursor is not the trail the cursor was written for."""


async def _wait(stop: asyncio.Event, delay: float, also: asyncio.Future[Any] | None = None) -> None:
    waits: list[asyncio.Future[Any]] = [asyncio.ensure_future(stop.wait())]
    if also is not None:
        waits.append(also)
    try:
        await asyncio.wait(waits, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waits[0].cancel()


def start_forwarder(section: AuditForwardSection | None, trail_path: Path, state_dir: str,
                    record: Callable[..., Any], stop: asyncio.Event) -> asyncio.Task[None] | None:
    """The agents' run(): forward the trail while the agent runs ([audit.forward]); None without it."""
    if section is None:
        return None
    task = asyncio.create_task(Forwarder(section, trail_path, Path(state_dir), record).run(stop))
    _TASKS.add(task)
    task.add_done_callback(_TASKS.discard)
    return task
