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
import math
import re
from collections.abc import Callable
from datetime import datetime, timezone
from json.encoder import c_make_encoder, encode_basestring  # type: ignore[attr-defined]
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


# --- the trail's fast path: the same verdicts and the same bytes, cheaper ---------------------

_STR, _UINT, _HEX, _TIME_, _AGENT, _EVENT, _VERDICT, _CODE, _DEST, _PEER, _BLOCKS, _DETAIL = range(1, 13)
_KINDS: dict[Check, int] = {_str: _STR, _uint: _UINT, _hex64: _HEX, _time: _TIME_, _agent: _AGENT, _event: _EVENT,
                            _verdict: _VERDICT, _code: _CODE, _destination: _DEST, _peer: _PEER,
                            _blocks: _BLOCKS, _detail: _DETAIL}
_KIND = {k: _KINDS.get(c, 0) for k, c in FIELDS.items()}
_hex64_match = _HEX64.match
_time_match = _TIME.match
_event_match = _EVENT_RE.match
_STR_MAX = limits.AUDIT_RECORD_MAX
_FLAT_JSON = frozenset({str, int, bool, type(None)})


def _fields_ok(fields: Record) -> bool:
    """True only if ``validate_fields`` accepts ``fields`` (False: ask it). Its checks, inlined
    for the fields of an ordinary record; anything less common goes to the field's own check."""
    if not ("time" in fields and "agent" in fields and "event" in fields and "verdict" in fields) \
            or fields["event"] == "checkpoint":
        return False
    for k, v in fields.items():
        kind = _KIND.get(k)
        if kind == _STR:
            if type(v) is not str or len(v) > _STR_MAX:
                return False
        elif kind == _UINT:
            if type(v) is not int or not 0 <= v <= _INT_MAX:
                return False
        elif kind == _HEX:
            if type(v) is not str or _hex64_match(v) is None:
                return False
        elif kind == _TIME_:
            if type(v) is not str or _time_match(v) is None:
                return False
        elif kind == _AGENT:
            if type(v) is not str or v not in AGENTS:
                return False
        elif kind == _EVENT:
            if type(v) is not str or (v not in EVENTS and _event_match(v) is None):
                return False
        elif kind == _VERDICT:
            if type(v) is not str or v not in VERDICTS:
                return False
        elif kind == _CODE:
            if type(v) is not str or v not in _CODES:
                return False
        elif kind == _DEST and type(v) is str:
            if len(v) > _STR_MAX:
                return False
        elif kind == _PEER or kind == _DEST:
            if type(v) is not dict:
                return False
            for pk, x in v.items():
                if pk not in PEER_KEYS or type(x) is not str or len(x) > _STR_MAX:
                    return False
        elif kind == _BLOCKS:
            if type(v) is not list:
                return False
            for x in v:
                if type(x) is not int or not 0 <= x <= _INT_MAX:
                    return False
        elif kind == _DETAIL:
            if type(v) is not dict:
                return False
            for dk, x in v.items():     # a flat object of strings, integers, booleans and nulls
                if type(dk) is not str or type(x) not in _FLAT_JSON:
                    if not _check_passes(k, v):     # nested, or a float: the full check
                        return False
                    break
        else:
            return False                # unknown field (kind None), or no fast check for it
    return True


def _check_passes(name: str, v: object) -> bool:
    try:
        FIELDS[name](name, v)
    except RecordError:
        return False
    return True


def check_fields(fields: Record) -> None:
    """``validate_fields``, faster for the records agents write: the same records accepted, the
    same RecordError (validate_fields itself explains any record the fast check does not pass)."""
    if type(fields) is not dict or not _fields_ok(fields):
        validate_fields(fields)


class _Unusual(Exception):
    """The fast sealer cannot vouch for this record: seal it the reference way (internal)."""


def _c_encoder() -> Callable[[Any], str] | None:
    if c_make_encoder is None:   # pragma: no cover - CPython has the C accelerator
        return None
    # json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False) is
    # JSONEncoder(...).encode, which makes this one-shot C encoder afresh per call; made once here.
    # No circular check: the fields passed validation, which bounds their depth.
    default = json.JSONEncoder().default
    enc = c_make_encoder(None, default, encode_basestring, None, ":", ",", True, False, False)

    def encode(obj: Any) -> str:
        return "".join(enc(obj, 0))
    return encode


_encode_c = _c_encoder()
_HASH_SLOT_VALUE = "\0ferry-audit-hash\0"      # where the hash goes, until it is known
_HASH_SLOT = b',"hash":"\\u0000ferry-audit-hash\\u0000"'


def seal_checked(fields: Record, prev_hash: bytes, prev_hex: str, seq: int) -> tuple[bytes, bytes, Record]:
    """``seal_record`` for fields that passed ``check_fields``: (line, hash, the whole record).

    The same bytes, with one JSON encoding instead of two and no second validation: the record is
    encoded once with a placeholder for ``hash`` (its sorted place is inside the object, never
    first: ``agent`` sorts before it); the chain hash is over the line without the placeholder
    (``canonical`` of the record without ``hash``), then the hash takes the placeholder's place.
    Anything unusual (no C encoder, the placeholder's text found twice, text that is not UTF-8,
    a line too long) goes the reference way, which gives its answer or its error."""
    body = dict(fields)
    body["seq"] = seq
    body["prev"] = prev_hex
    try:
        if _encode_c is None or len(prev_hash) != HASH_SIZE or type(seq) is not int \
                or not 0 <= seq <= _INT_MAX:
            raise _Unusual
        body["hash"] = _HASH_SLOT_VALUE
        data = _encode_c(body).encode("utf-8")
        i = data.find(_HASH_SLOT)
        j = i + len(_HASH_SLOT)
        if i < 0 or data.find(_HASH_SLOT, j) >= 0:
            raise _Unusual
        head, tail = data[:i], data[j:]
        h = sm3(prev_hash + head + tail)
        hex_h = h.hex()
        line = b"".join((head, b',"hash":"', hex_h.encode("ascii"), b'"', tail, b"\n"))
        if len(line) > _STR_MAX:
            raise _Unusual
    except (_Unusual, ValueError, TypeError, RecursionError):   # UnicodeEncodeError is a ValueError
        line, h = seal_record(fields, prev_hash, seq)
        hex_h = h.hex()
    body["hash"] = hex_h
    return line, h, body


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


def format_time_reference(now: float) -> str:
    """``format_time`` the plain way, through ``datetime`` (the reference of the fast path)."""
    try:
        dt = datetime.fromtimestamp(now, timezone.utc)
    except (OverflowError, OSError, ValueError, TypeError) as exc:
        raise RecordError(f"bad time {now!r}: {exc}") from None
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# format_time's fast path: from 2000 to 2100 the formatted second is cached and the microseconds
# added, rounded as datetime.fromtimestamp rounds them (half to even, carried into the second).
_FAST_TIME_MIN = 946684800          # 2000-01-01T00:00:00Z
_FAST_TIME_MAX = 4102444800         # 2100-01-01T00:00:00Z
_second: tuple[int, str] = (-1, "")  # (second, "YYYY-MM-DDTHH:MM:SS.") of the last one formatted


def format_time(now: float) -> str:
    """``now`` (seconds since the epoch) as ISO 8601 UTC with microseconds and 'Z'."""
    global _second
    if type(now) is float and _FAST_TIME_MIN <= now < _FAST_TIME_MAX:
        frac, whole = math.modf(now)
        sec, us = int(whole), round(frac * 1e6)
        if us >= 1000000:
            sec, us = sec + 1, us - 1000000
        cached = _second
        if cached[0] != sec:
            cached = _second = (sec, datetime.fromtimestamp(sec, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S."))
        return f"{cached[1]}{us:06d}Z"
    return format_time_reference(now)


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
