"""Audit records: field names, canonical serialization and the SM3 chain (pure).

A record is a flat JSON object, one per line (JSON Lines). Its canonical form is
``json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False)`` in UTF-8.
Each record carries ``seq`` (0-based, consecutive) and ``prev`` (hex hash of the
previous record, 64 zeros for the first); its ``hash`` is
``SM3(prev_hash || canonical(record without "hash"))``. A checkpoint record
(event ``checkpoint``) additionally signs, with SM2, the hash of the last record
it covers (DESIGN.md section 2.8).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any, NoReturn

from ferry import limits
from ferry.audit.errors import RecordError
from ferry.crypto import SM2PrivateKey, sm3
from ferry.reasons import Reason

# A record, or the fields of one: a JSON object, its values checked by FIELDS (values are JSON: Any).
Record = dict[str, Any]
# A field's check: (field name, value) -> None, or RecordError naming the field.
Check = Callable[[str, object], None]

HASH_SIZE = 32
ZERO_HASH = bytes(HASH_SIZE)
CHECKPOINT_DOMAIN = b"ferry-audit-checkpoint\0"

AGENTS = frozenset({"outer", "inner"})
VERDICTS = frozenset({"sent", "delivered", "refused", "transformed", "lost", "info", "alarm"})
EVENTS = frozenset({
    "object_sent", "object_refused", "object_delivered", "block_lost", "object_lost",
    "key_announced", "key_accepted", "announcement_refused", "block_refused",
    "datagrams_dropped", "policy_loaded", "policy_mismatch", "agent_started",
    "agent_stopped", "audit_resumed", "audit_suppressed", "checkpoint",
})  # the known events; other machine names are accepted (see _EVENT_RE)

MANDATORY = ("time", "agent", "event", "verdict")
PEER_KEYS = frozenset({"device_id", "address", "name"})
CHAIN_FIELDS = ("seq", "prev", "hash")
CHECKPOINT_FIELDS = ("covers", "head", "key_id", "sig")

_HEX64 = re.compile(r"[0-9a-f]{64}\Z")
_HEX_SIG = re.compile(r"(?:[0-9a-f]{2}){8,100}\Z")
_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z\Z")
_EVENT_RE = re.compile(r"[a-z][a-z0-9_]{0,63}\Z")
_INT_MAX = (1 << 63) - 1
_DETAIL_DEPTH = 8


def _str(name: str, v: object) -> None:
    if type(v) is not str:
        raise RecordError(f"{name}: expected a string, got {type(v).__name__}")
    if len(v) > limits.AUDIT_RECORD_MAX:
        raise RecordError(f"{name}: too long")


def _uint(name: str, v: object) -> None:
    if type(v) is not int or not 0 <= v <= _INT_MAX:
        raise RecordError(f"{name}: expected an integer in 0..2^63-1")


def _hex64(name: str, v: object) -> None:
    if type(v) is not str or not _HEX64.match(v):
        raise RecordError(f"{name}: expected 64 lowercase hex digits")


def _peer(name: str, v: object) -> None:
    if type(v) is not dict:
        raise RecordError(f"{name}: expected an object with device_id, address, name")
    for k, x in v.items():
        if k not in PEER_KEYS:
            raise RecordError(f"{name}: unknown key {k!r}")
        _str(f"{name}.{k}", x)


def _destination(name: str, v: object) -> None:
    if type(v) is str:
        _str(name, v)       # a named destination from the policy
    else:
        _peer(name, v)


def _json_value(name: str, v: object, depth: int = 0) -> None:
    if depth > _DETAIL_DEPTH:
        raise RecordError(f"{name}: nested too deeply")
    t = type(v)
    if v is None or t in (str, bool, int):
        return
    if t is float:
        if v != v or v in (float("inf"), float("-inf")):
            raise RecordError(f"{name}: not a finite number")
        return
    if type(v) is list:
        for x in v:
            _json_value(name, x, depth + 1)
        return
    if type(v) is dict:
        for k, x in v.items():
            if type(k) is not str:
                raise RecordError(f"{name}: keys must be strings")
            _json_value(f"{name}.{k}", x, depth + 1)
        return
    raise RecordError(f"{name}: {t.__name__} is not a JSON value")


def _detail(name: str, v: object) -> None:
    if type(v) is not dict:
        raise RecordError(f"{name}: expected an object")
    _json_value(name, v)


def _time(name: str, v: object) -> None:
    if type(v) is not str or not _TIME.match(v):
        raise RecordError(f"{name}: expected ISO 8601 UTC like 2024-01-02T03:04:05.000006Z")


def _agent(name: str, v: object) -> None:
    if type(v) is not str or v not in AGENTS:
        raise RecordError(f"{name}: expected 'outer' or 'inner'")


def _verdict(name: str, v: object) -> None:
    if type(v) is not str or v not in VERDICTS:
        raise RecordError(f"{name}: expected one of {', '.join(sorted(VERDICTS))}")


def _event(name: str, v: object) -> None:
    if type(v) is not str or not _EVENT_RE.match(v):
        raise RecordError(f"{name}: expected a machine name like 'object_sent'")


_CODES = frozenset(r.value for r in Reason)


def _code(name: str, v: object) -> None:
    if type(v) is not str or v not in _CODES:
        raise RecordError(f"{name}: expected a reason code (ferry.reasons.Reason)")


def _blocks(name: str, v: object) -> None:
    if type(v) is not list:
        raise RecordError(f"{name}: expected a list of block numbers")
    for b in v:
        _uint(name, b)


def _covers(name: str, v: object) -> None:
    if type(v) is not list or len(v) != 2:
        raise RecordError(f"{name}: expected [first_seq, last_seq]")
    _uint(name, v[0])
    _uint(name, v[1])
    if v[0] > v[1]:
        raise RecordError(f"{name}: first_seq > last_seq")


def _sig(name: str, v: object) -> None:
    if type(v) is not str or not _HEX_SIG.match(v):
        raise RecordError(f"{name}: expected a hex DER signature")


# The record fields agents fill (DESIGN.md section 8), each with its check.
FIELDS: dict[str, Check] = {
    "time": _time, "agent": _agent, "agent_name": _str, "event": _event,
    "verdict": _verdict, "lane": _str, "flow": _str, "source": _peer,
    "destination": _destination, "object_type": _str, "size": _uint, "rule": _str,
    "reason": _str, "code": _code, "policy_hash": _hex64, "object_id": _uint, "epoch": _uint,
    "blocks": _blocks, "sm3": _hex64, "detail": _detail,
}
_CHECKPOINT: dict[str, Check] = {"covers": _covers, "head": _hex64, "key_id": _hex64, "sig": _sig}
_CHAIN: dict[str, Check] = {"seq": _uint, "prev": _hex64, "hash": _hex64}


def validate_fields(fields: Record) -> None:
    """Check the caller's fields (no seq/prev/hash); RecordError names the first problem."""
    if type(fields) is not dict:
        raise RecordError("a record must be a JSON object")
    for k in MANDATORY:
        if k not in fields:
            raise RecordError(f"missing mandatory field {k!r}")
    is_cp = fields["event"] == "checkpoint"
    for k, v in fields.items():
        check = FIELDS.get(k) or (_CHECKPOINT.get(k) if is_cp else None)
        if check is None:
            raise RecordError(f"unknown field {k!r}")
        check(k, v)
    if is_cp:
        for k in CHECKPOINT_FIELDS:
            if k not in fields:
                raise RecordError(f"checkpoint: missing field {k!r}")
        if fields["verdict"] != "info":
            raise RecordError("checkpoint: verdict must be 'info'")


def validate_record(record: Record) -> None:
    """Check a whole stored record (fields plus seq, prev, hash)."""
    if type(record) is not dict:
        raise RecordError("a record must be a JSON object")
    for k, check in _CHAIN.items():
        if k not in record:
            raise RecordError(f"missing chain field {k!r}")
        check(k, record[k])
    validate_fields({k: v for k, v in record.items() if k not in _CHAIN})


def canonical(obj: Record) -> bytes:
    """The canonical UTF-8 JSON bytes of ``obj``."""
    try:
        return json.dumps(obj, sort_keys=True, separators=(",", ":"),
                          ensure_ascii=False, allow_nan=False).encode("utf-8")
    except (TypeError, ValueError, RecursionError) as exc:  # UnicodeEncodeError is a ValueError
        raise RecordError(f"not serializable: {exc}") from None


def chain_hash(prev_hash: bytes, body: Record) -> bytes:
    """SM3(prev_hash || canonical(body)); ``body`` is the record without ``hash``."""
    return sm3(prev_hash + canonical(body))


def seal_record(fields: Record, prev_hash: bytes, seq: int) -> tuple[bytes, bytes]:
    """Chain ``fields`` after ``prev_hash`` as record ``seq``: returns (line with newline, hash)."""
    validate_fields(fields)
    if len(prev_hash) != HASH_SIZE:
        raise RecordError("prev_hash must be 32 bytes")
    _uint("seq", seq)
    body = dict(fields, seq=seq, prev=prev_hash.hex())
    h = chain_hash(prev_hash, body)
    body["hash"] = h.hex()
    line = canonical(body) + b"\n"
    if len(line) > limits.AUDIT_RECORD_MAX:
        raise RecordError(f"record of {len(line)} bytes exceeds {limits.AUDIT_RECORD_MAX}")
    return line, h


def _no_duplicates(pairs: list[tuple[str, Any]]) -> Record:
    d: Record = {}
    for k, v in pairs:
        if k in d:
            raise RecordError(f"duplicate key {k!r}")
        d[k] = v
    return d


def _no_constant(name: str) -> NoReturn:
    raise RecordError(f"{name} is not allowed")


def parse_line(line: bytes) -> Record:
    """Parse and validate one stored line (trailing newline optional); RecordError otherwise.

    The line must be exactly the canonical serialization of the record it holds.
    Its hash is not checked here (that needs the chain: see ferry.audit.verify).
    """
    if not isinstance(line, (bytes, bytearray, memoryview)):
        raise RecordError("a line must be bytes")
    line = bytes(line)
    if len(line) > limits.AUDIT_RECORD_MAX:
        raise RecordError(f"line of {len(line)} bytes exceeds {limits.AUDIT_RECORD_MAX}")
    body = line[:-1] if line.endswith(b"\n") else line
    try:
        text = body.decode("utf-8")
        record: Record = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except RecordError:
        raise
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError
        raise RecordError(f"not a JSON record: {exc}") from None
    validate_record(record)
    if canonical(record) != body:
        raise RecordError("line is not in canonical form")
    return record


def format_time(now: float) -> str:
    """``now`` (seconds since the epoch) as ISO 8601 UTC with microseconds and 'Z'."""
    try:
        dt = datetime.fromtimestamp(now, timezone.utc)
    except (OverflowError, OSError, ValueError, TypeError) as exc:
        raise RecordError(f"bad time {now!r}: {exc}") from None
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def checkpoint_message(agent: str, head: bytes, last_seq: int) -> bytes:
    """The bytes an SM2 checkpoint signature covers."""
    return CHECKPOINT_DOMAIN + agent.encode("utf-8") + b"\0" + head + last_seq.to_bytes(8, "big")


def checkpoint_fields(time: str, agent: str, agent_name: str, first_seq: int,
                      head: bytes, last_seq: int, signing_key: SM2PrivateKey) -> Record:
    """Fields of a checkpoint covering records first_seq..last_seq, whose last has hash ``head``."""
    sig = signing_key.sign(checkpoint_message(agent, head, last_seq))
    return {
        "time": time, "agent": agent, "agent_name": agent_name, "event": "checkpoint",
        "verdict": "info", "covers": [first_seq, last_seq], "head": head.hex(),
        "key_id": signing_key.public_key().key_id().hex(), "sig": sig.hex(),
    }
