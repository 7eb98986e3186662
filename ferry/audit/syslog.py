"""Audit records as RFC 5424 syslog messages, framed by octet counting (RFC 6587 3.4.1). Pure.

One message per record::

    <PRI>1 TIMESTAMP HOSTNAME ferry PROCID MSGID [ferry@32473 seq="N" hash="..." agent="..."] LINE

* PRI (RFC 5424 6.2.1) = facility 13 ("log audit") * 8 + severity: verdict ``alarm`` -> 2
  (critical), ``refused`` / ``lost`` -> 4 (warning), anything else -> 6 (informational).
* TIMESTAMP is the record's ``time`` (already RFC 3339 UTC with microseconds, 6.2.3).
* MSGID is the record's ``event`` (at most 32 printable characters, 6.2.7).
* STRUCTURED-DATA (6.3) repeats seq, hash, agent and agent_name for the log server's filters;
  ``"``, ``\\`` and ``]`` in a PARAM-VALUE are escaped with a backslash (6.3.3). 32473 is the
  private enterprise number RFC 5612 reserves for documentation: ferry has none of its own.
* MSG is the record's canonical JSON line without its newline, unchanged: the receiver's copy of
  MSG is the trail's line, so ``ferry audit verify --syslog`` proves it (no BOM is sent: MSG-ANY).

A frame is ``MSG-LEN SP SYSLOG-MSG`` (RFC 6587 3.4.1), so messages need no delimiter and a line
may hold anything. ``read_messages`` is the parser of untrusted bytes: a log server's file or an
export; it raises SyslogError (a ValueError) and nothing else.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from ferry import limits
from ferry.audit.errors import RecordError
from ferry.audit.records import Record, parse_line

FACILITY_LOG_AUDIT = 13
SEVERITY = {"alarm": 2, "refused": 4, "lost": 4}
SEVERITY_DEFAULT = 6
APP_NAME = "ferry"
SD_ID = "ferry@32473"
MSGID_MAX = 32
HOSTNAME_MAX = 255
PROCID_MAX = 128
# a frame's MSG-LEN: the longest record line plus a header, well under this
FRAME_MAX = limits.AUDIT_RECORD_MAX + 1024
_LEN_DIGITS = len(str(FRAME_MAX))
_PRINTUSASCII = re.compile(rb"[\x21-\x7e]+\Z")
_HEADER = re.compile(rb"<(\d{1,3})>1 (\S+) (\S+) (\S+) (\S+) (\S+) ")


class SyslogError(ValueError):
    """Bytes that are not a syslog message or frame as ferry writes them."""


def severity(verdict: str) -> int:
    return SEVERITY.get(verdict, SEVERITY_DEFAULT)


def _field(value: str, limit: int) -> str:
    """A header field (RFC 5424 6: PRINTUSASCII, no space): other characters become '_', empty is '-'."""
    out = "".join(c if "\x21" <= c <= "\x7e" else "_" for c in value[:limit])
    return out or "-"


def sd_escape(value: str) -> str:
    """A PARAM-VALUE with '"', '\\' and ']' escaped (RFC 5424 6.3.3)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def format_message(record: Record, line: bytes, *, hostname: str, procid: str = "-") -> bytes:
    """The RFC 5424 message of a stored record. ``line`` is its canonical line (a newline is dropped)."""
    body = line[:-1] if line.endswith(b"\n") else line
    pri = FACILITY_LOG_AUDIT * 8 + severity(record["verdict"])
    sd = "[{} seq=\"{}\" hash=\"{}\" agent=\"{}\" agent_name=\"{}\"]".format(
        SD_ID, record["seq"], record["hash"], sd_escape(record["agent"]), sd_escape(record.get("agent_name", "")))
    head = (f"<{pri}>1 {record['time']} {_field(hostname, HOSTNAME_MAX)} {APP_NAME} "
            f"{_field(procid, PROCID_MAX)} {_field(record['event'], MSGID_MAX)} {sd} ")
    return head.encode("utf-8") + body


def frame(message: bytes) -> bytes:
    """Octet-counting framing (RFC 6587 3.4.1): MSG-LEN SP SYSLOG-MSG."""
    return b"%d " % len(message) + message


def record_frame(line: bytes, *, hostname: str, procid: str = "-") -> bytes:
    """A stored line as a framed message (the line is checked: RecordError if it is not a record)."""
    return frame(format_message(parse_line(line), line, hostname=hostname, procid=procid))


# --- reading (untrusted bytes) ---------------------------------------------------------------------

def _skip_sd(msg: bytes, i: int) -> int:
    """The index after STRUCTURED-DATA starting at ``i`` ('-' or one or more [..] elements)."""
    if msg[i:i + 1] == b"-":
        return i + 1
    if msg[i:i + 1] != b"[":
        raise SyslogError("STRUCTURED-DATA must be '-' or start with '['")
    n = len(msg)
    while i < n and msg[i:i + 1] == b"[":
        i += 1
        in_value = False
        while True:
            if i >= n:
                raise SyslogError("unterminated STRUCTURED-DATA")
            c = msg[i:i + 1]
            if in_value and c == b"\\":
                i += 2
                continue
            if c == b'"':
                in_value = not in_value
            elif c == b"]" and not in_value:
                i += 1
                break
            i += 1
    return i


def message_body(msg: bytes) -> bytes:
    """The MSG part of an RFC 5424 message (a leading UTF-8 BOM dropped)."""
    m = _HEADER.match(msg)
    if m is None:
        raise SyslogError("not an RFC 5424 header (<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID)")
    if int(m.group(1)) > 191:
        raise SyslogError(f"PRI {int(m.group(1))} is out of range (0..191)")
    i = _skip_sd(msg, m.end())
    if i == len(msg):
        return b""
    if msg[i:i + 1] != b" ":
        raise SyslogError("no space between STRUCTURED-DATA and MSG")
    body = msg[i + 1:]
    return body[3:] if body.startswith(b"\xef\xbb\xbf") else body


def iter_frames(data: bytes) -> Iterator[bytes]:
    """The messages of octet-counted frames; SyslogError at the first bad one."""
    i, n = 0, len(data)
    while i < n:
        sp = data.find(b" ", i, i + _LEN_DIGITS + 1)
        digits = data[i:sp] if sp >= 0 else b""
        if not digits.isdigit() or digits.startswith(b"0") or not digits.isascii():
            raise SyslogError(f"byte {i}: expected MSG-LEN SP (RFC 6587 octet counting)")
        length = int(digits)
        if length > FRAME_MAX:
            raise SyslogError(f"byte {i}: frame of {length} bytes exceeds {FRAME_MAX}")
        start = sp + 1
        if start + length > n:
            raise SyslogError(f"byte {i}: frame of {length} bytes is cut short (torn)")
        yield data[start:start + length]
        i = start + length
        while i < n and data[i:i + 1] in (b"\n", b"\r"):      # a receiver may add line ends between frames
            i += 1


def read_messages(data: bytes) -> list[bytes]:
    """The record lines in a log server's file or a syslog export: octet-counted frames (the
    export), or one message per line, each the raw MSG (a log server writing only MSG, as the
    README's rsyslog template does) or a whole RFC 5424 message. Lines stay in file order."""
    if data[:1].isdigit():
        raw = list(iter_frames(data))
    else:
        raw = [x[:-1] if x.endswith(b"\r") else x for x in data.split(b"\n")]
    out: list[bytes] = []
    for n, msg in enumerate(raw, 1):
        if not msg.strip():
            continue
        if len(msg) > FRAME_MAX:
            raise SyslogError(f"message {n}: longer than {FRAME_MAX} bytes")
        out.append(message_body(msg) if msg.startswith(b"<") else msg)
    return out


class AgentChoice(ValueError):
    """Records of several agents and none chosen (a usage error, not a bad copy)."""


@dataclass(frozen=True, slots=True)
class AgentRecords:
    """One agent's records from a log server's copy: unique lines in seq order."""

    lines: tuple[bytes, ...]
    duplicates: int              # identical copies dropped (at-least-once delivery re-sends)
    conflict: str | None = None  # two different records with the same seq: the copy is not intact


def select_agent(messages: Iterable[bytes], agent: str | None) -> tuple[AgentRecords, list[str]]:
    """The records of ``agent`` (matched against ``agent`` or ``agent_name``; None: the only agent
    there is), deduplicated by seq, in seq order, and the agent names found. RecordError names the
    first message that is not a record."""
    by_seq: dict[int, bytes] = {}
    names: set[str] = set()
    dups, conflict = 0, None
    for n, msg in enumerate(messages, 1):
        try:
            rec = parse_line(msg)
        except RecordError as exc:
            raise RecordError(f"message {n}: {exc}") from None
        name = f"{rec['agent']} ({rec.get('agent_name', '')})"
        names.add(name)
        if agent is not None and agent not in (rec["agent"], rec.get("agent_name")):
            continue
        if agent is None and len(names) > 1:
            raise AgentChoice(f"records of more than one agent: {', '.join(sorted(names))}: choose one with --agent")
        seq = rec["seq"]
        have = by_seq.get(seq)
        if have is None:
            by_seq[seq] = bytes(msg).rstrip(b"\n")
        elif have == bytes(msg).rstrip(b"\n"):
            dups += 1
        elif conflict is None:
            conflict = f"two different records with seq {seq} (message {n} differs from an earlier one)"
    lines = tuple(by_seq[s] + b"\n" for s in sorted(by_seq))
    return AgentRecords(lines, dups, conflict), sorted(names)
