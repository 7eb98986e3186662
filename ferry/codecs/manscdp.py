"""MANSCDP bodies (GB/T 28181-2016 Annex A): a hardened parser and a builder from values alone.

Sans-IO: bytes in, a `Manscdp` value out; a `Manscdp` value in, bytes out. The only exception that
escapes is `ManscdpError` (a `CodecError` and a `ValueError`), whose message says what and where
(``line L column C`` from expat where there is a place) and whose `kind` sorts it for the lane:

    too_large   the body, an element's text, the nesting, the element/attribute/item count
    markup      DOCTYPE/DTD, entity declaration or reference, processing instruction
    encoding    charset not accepted, bytes not valid in it, declaration and charset disagree
    malformed   not well-formed XML, unknown root, missing or repeated CmdType/SN/DeviceID,
                a leaf element with children, a repeated element that may appear once
    value       a value not of its type (device ID, integer, coordinate, enumeration, time, text)

API
---
``parse(body, *, content_charset=None, max_bytes=MANSCDP_BODY_MAX) -> Manscdp``
    `content_charset` is the SIP Content-Type ``charset`` parameter, if any.
``build(msg, *, encoding="GB2312") -> bytes``
    ``parse(build(m)) == m`` for every valid `m` whose `dropped` is empty.
``catalog_pages(root_id, sn, items, sum_num, per_page) -> list[Manscdp]``
    Response Catalog split as GB/T 28181 sends it: several MESSAGEs, each with SumNum = the total
    and DeviceList Num = the Items in that message; all pages carry the query's SN.
``keepalive(device_id, sn, status="OK") -> Manscdp``
``map_ids(msg, fn) -> Manscdp``
    `fn` applied to every device-ID-typed value: the header DeviceID, ID fields (ParentID path
    components, BusinessGroupID, Keepalive Info/DeviceID...) and every Item's ID fields; its results
    are validated like parsed values.
``Manscdp`` / ``Item``
    Frozen values, validated when built (`ManscdpError` otherwise). ``fields`` holds
    ``(name, text)`` pairs of the known leaf elements of the (root, CmdType) schema in canonical
    (schema) order; nested leaves are named by path (``Info/PTZType``); a repeatable leaf appears
    once per value. ``get(name)`` / ``get_all(name)`` read them. ``schema_known(root, cmd_type)``
    says whether a (root, CmdType) has a schema.

Decisions
---------
* Encodings: GB2312, GBK, GB18030 and UTF-8 (also spelled UTF8), case-insensitive; anything else is
  refused. The body's encoding is the XML declaration's, else the SIP charset, else UTF-8 (the XML
  default). A declaration and a charset naming different families (GB vs UTF-8) are refused.
  "GB2312", "GBK" and "GB18030" are all decoded strictly as GB18030 (a superset of both): cameras
  label GBK characters (e.g. 镕, 堃) "GB2312", and refusing them would lose real device names. Bytes
  invalid in the chosen codec are refused with their offset. A UTF-8 BOM is skipped for UTF-8 only.
* Expat is fed the decoded text as UTF-8 with the external encoding forced; DOCTYPE (so any DTD,
  entity declaration, parameter entity, external entity), processing instructions and references to
  undeclared entities are refused before anything is expanded; parameter entity parsing is NEVER.
  Only the five predefined entities and character references are expanded. Comments are ignored.
* Device IDs are exactly 20 ASCII digits (GB/T 28181 §C); anything else is refused.
* Unknown elements (and attributes other than Num on a list) are dropped and named in `dropped`
  by path (``DeviceList/Item/Password``); the lane can audit the message as changed. At most
  MANSCDP_DROPPED_MAX names are kept, then ``...``. A Catalog
  Item's Password is never carried (not in the schema). An unknown CmdType under a known root keeps
  only root, CmdType, SN and DeviceID; everything else is in `dropped`.
* An element that is empty (or only whitespace) counts as absent; values are the element text with
  surrounding XML whitespace removed, otherwise exactly as sent (enumerations are matched without
  regard to case and keep their case). A repeated non-repeatable element is refused, so the lane
  never has to choose which one counts. A list's Num must equal its Items; Num <= SumNum.
* Free text (Name, Address, AlarmDescription...) is at most MANSCDP_FREE_TEXT_MAX characters and
  has no control characters (Unicode category Cc: C0, DEL, C1 — tab and newline included — and
  the bidirectional overrides, embeddings and isolates U+202A-202E, U+2066-2069).
* `build` writes ``<?xml version="1.0" encoding="X"?>`` and encodes GB2312/GBK labels with GBK (what
  receivers of "GB2312" decode in practice) and GB18030 with GB18030. When the text has a character
  the target lacks, the whole body falls back to UTF-8 with ``encoding="UTF-8"`` declared: no value
  is ever altered or lost, and `parse` reads it back.
* Two paths, one answer. A plain body (ASCII element names, quoted attributes, text without
  references, CDATA, comments, DOCTYPE, processing instructions, ``>`` or characters XML forbids,
  within every limit, at most SIGNALING_MESSAGE_BODY_MAX long) is tokenized by a regular
  expression, and a root holding only leaves (keepalives, most responses) is matched whole; any
  other body, and any body the fast path refuses, is parsed by expat as above, so every refusal is
  the strict path's and names its place. Values the parser checked are not checked again when the
  `Manscdp` is made. tests/codecs/test_manscdp_fast.py holds `parse` equal to the parser before
  the fast path (tests/codecs/manscdp_reference.py); bench/manscdp_codec.py measures both.
* PTZCmd (A.3.1): 16 hex digits, byte 1 = A5, byte 2's low nibble the sum of byte 1's nibbles and
  byte 2's high nibble mod 16, byte 8 the sum of bytes 1-7 mod 256.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import lru_cache
from typing import Any, Literal
from xml.parsers import expat

from ferry.codecs.errors import CodecError
from ferry.limits import (
    MANSCDP_ATTRIBUTES_MAX,
    MANSCDP_BODY_MAX,
    MANSCDP_DEPTH_MAX,
    MANSCDP_DROPPED_MAX,
    MANSCDP_DROPPED_NAME_MAX,
    MANSCDP_ELEMENTS_MAX,
    MANSCDP_FREE_TEXT_MAX,
    MANSCDP_ITEMS_MAX,
    MANSCDP_REPEAT_MAX,
    MANSCDP_TEXT_MAX,
    SIGNALING_MESSAGE_BODY_MAX,
)

__all__ = [
    "ROOTS", "Item", "Manscdp", "ManscdpError", "build", "catalog_pages", "keepalive", "map_ids",
    "parse", "schema_known",
]

ErrorKind = Literal["too_large", "markup", "encoding", "malformed", "value"]


class ManscdpError(CodecError, ValueError):
    """A refused MANSCDP body or value; `kind` sorts it (see the module docstring)."""

    def __init__(self, message: str, kind: ErrorKind = "malformed") -> None:
        super().__init__(message)
        self.kind: ErrorKind = kind


ROOTS = ("Query", "Notify", "Response", "Control")
SN_MAX = 2**31 - 1

# --- value types -----------------------------------------------------------------------------

_DIGITS20 = re.compile(r"[0-9]{20}")
_INT = re.compile(r"[+-]?[0-9]{1,10}")
_FLOAT = re.compile(r"[+-]?[0-9]{1,3}(?:\.[0-9]{1,12})?")
_TIME = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.[0-9]{1,6})?")
_HEX16 = re.compile(r"[0-9A-Fa-f]{16}")
_CMD_TYPE = re.compile(r"[A-Za-z][A-Za-z0-9]{0,31}")
_TOKEN = re.compile(r"[0-9A-Za-z._-]{1,64}")
_IP_CHARS = re.compile(r"[0-9A-Fa-f.:]{2,45}")


def _check_id(v: str) -> str | None:
    return None if _DIGITS20.fullmatch(v) else "not a 20-digit device ID"


def _check_id_path(v: str) -> str | None:
    parts = v.split("/")
    if len(parts) > 16 or not all(_DIGITS20.fullmatch(p) for p in parts):
        return "not a '/'-separated path of 20-digit device IDs"
    return None


def _int_range(lo: int, hi: int) -> Callable[[str], str | None]:
    def check(v: str) -> str | None:
        if not _INT.fullmatch(v) or not lo <= int(v) <= hi:
            return f"not an integer {lo}..{hi}"
        return None
    return check


def _float_range(lo: float, hi: float) -> Callable[[str], str | None]:
    def check(v: str) -> str | None:
        if not _FLOAT.fullmatch(v) or not lo <= float(v) <= hi:
            return f"not a decimal number {lo:g}..{hi:g}"
        return None
    return check


def _enum(*names: str) -> Callable[[str], str | None]:
    allowed = frozenset(n.upper() for n in names)

    def check(v: str) -> str | None:
        return None if v.isascii() and v.upper() in allowed else f"not one of {', '.join(names)}"
    return check


def _check_time(v: str) -> str | None:
    m = _TIME.fullmatch(v)
    if m is None:
        return "not a time YYYY-MM-DDTHH:MM:SS"
    try:
        y, mo, d, h, mi, sec = (int(g) for g in m.groups())
        datetime(y, mo, d, h, mi, sec)  # noqa: DTZ001 - a calendar check only
    except ValueError:
        return "not a valid calendar time"
    return None


def _check_text(v: str) -> str | None:
    if len(v) > MANSCDP_FREE_TEXT_MAX:
        return f"longer than {MANSCDP_FREE_TEXT_MAX} characters"
    m = _NOT_TEXT.search(v)
    if m is not None:
        return f"has control character U+{ord(m.group()):04X}"
    return None


# Unicode category Cc (C0, DEL, C1) and Cs (surrogates); the bidirectional embeddings, overrides
# and isolates (a name that reads differently from its characters); the two non-characters XML
# cannot carry
_NOT_TEXT = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff\u202a-\u202e\u2066-\u2069\ufffe\uffff]")


def _check_token(v: str) -> str | None:
    return None if _TOKEN.fullmatch(v) else "not a token of letters, digits, '.', '_', '-'"


def _check_ip(v: str) -> str | None:
    if not _IP_CHARS.fullmatch(v):  # no IPv6 scope (%eth0): only what an address is made of
        return "not an IP address"
    try:
        ipaddress.ip_address(v)
    except ValueError:
        return "not an IP address"
    return None


def _check_ptz(v: str) -> str | None:
    if not _HEX16.fullmatch(v):
        return "not 8 bytes in hex"
    b = bytes.fromhex(v)
    if b[0] != 0xA5:
        return "first byte is not A5"
    if (b[1] & 0x0F) != ((b[0] >> 4) + (b[0] & 0x0F) + (b[1] >> 4)) % 16:
        return "byte 2 check nibble is wrong"
    if b[7] != sum(b[:7]) % 256:
        return "byte 8 checksum is wrong"
    return None


# value kinds of the schemas: name -> checker (None, or what is wrong); id and idpath are device IDs
_KINDS: dict[str, Callable[[str], str | None]] = {
    "id": _check_id,
    "idpath": _check_id_path,
    "int": _int_range(-(2**31), 2**31 - 1),
    "uint": _int_range(0, 2**31 - 1),
    "bool01": _int_range(0, 1),
    "port": _int_range(0, 65535),
    "priority": _int_range(1, 4),
    "lon": _float_range(-180.0, 180.0),
    "lat": _float_range(-90.0, 90.0),
    "time": _check_time,
    "text": _check_text,
    "token": _check_token,
    "ip": _check_ip,
    "ptz": _check_ptz,
    "okerror": _enum("OK", "ERROR"),
    "onoff": _enum("ON", "OFF"),
    "status": _enum("ON", "OFF", "OK", "ONLINE", "OFFLINE"),
    "online": _enum("ONLINE", "OFFLINE"),
    "duty": _enum("ONDUTY", "OFFDUTY", "ALARM"),
    "event": _enum("ON", "OFF", "VLOST", "DEFECT", "ADD", "DEL", "UPDATE"),
    "teleboot": _enum("Boot"),
    "recordcmd": _enum("Record", "StopRecord"),
    "guardcmd": _enum("SetGuard", "ResetGuard"),
    "alarmcmd": _enum("ResetAlarm"),
}


# --- schemas ---------------------------------------------------------------------------------

Leaf = tuple[str, str, int]  # (path, kind, how many times at most)


@dataclass(frozen=True, slots=True)
class _Schema:
    leaves: tuple[Leaf, ...] = ()
    list_path: str | None = None          # "DeviceList", "Alarmstatus"
    item: tuple[Leaf, ...] = ()
    item_required: tuple[str, ...] = ()
    sum_num: bool = False                 # Catalog SumNum
    required: tuple[str, ...] = ()


def _leaves(*spec: tuple[str, str] | tuple[str, str, int]) -> tuple[Leaf, ...]:
    return tuple((s[0], s[1], s[2] if len(s) == 3 else 1) for s in spec)


_CATALOG_ITEM = _leaves(
    ("DeviceID", "id"), ("Event", "event"), ("Name", "text"), ("Manufacturer", "text"),
    ("Model", "text"), ("Owner", "text"), ("CivilCode", "token"), ("Block", "text"),
    ("Address", "text"), ("Parental", "bool01"), ("ParentID", "idpath"),
    ("BusinessGroupID", "id"), ("SafetyWay", "uint"), ("RegisterWay", "uint"),
    ("CertNum", "text"), ("Certifiable", "bool01"), ("ErrCode", "uint"), ("EndTime", "time"),
    ("Secrecy", "bool01"), ("IPAddress", "ip"), ("Port", "port"), ("Status", "status"),
    ("Longitude", "lon"), ("Latitude", "lat"),
    ("Info/PTZType", "uint"), ("Info/PositionType", "uint"), ("Info/RoomType", "uint"),
    ("Info/UseType", "uint"), ("Info/SupplyLightType", "uint"), ("Info/DirectionType", "uint"),
    ("Info/Resolution", "text"), ("Info/BusinessGroupID", "id"), ("Info/DownloadSpeed", "text"),
    ("Info/SVCSpaceSupportMode", "uint"), ("Info/SVCTimeSupportMode", "uint"),
)
_CATALOG = _Schema(list_path="DeviceList", item=_CATALOG_ITEM, item_required=("DeviceID",),
                   sum_num=True)

_SCHEMAS: dict[tuple[str, str], _Schema] = {
    ("Query", "Catalog"): _Schema(_leaves(("StartTime", "time"), ("EndTime", "time"))),
    ("Query", "DeviceInfo"): _Schema(),
    ("Query", "DeviceStatus"): _Schema(),
    ("Response", "Catalog"): _CATALOG,
    ("Notify", "Catalog"): _CATALOG,
    ("Response", "DeviceInfo"): _Schema(_leaves(
        ("DeviceName", "text"), ("Result", "okerror"), ("DeviceType", "text"),
        ("Manufacturer", "text"), ("Model", "text"), ("Firmware", "text"), ("Channel", "uint"),
        ("MaxCamera", "uint"), ("MaxAlarm", "uint"))),
    ("Response", "DeviceStatus"): _Schema(
        _leaves(("Result", "okerror"), ("Online", "online"), ("Status", "okerror"),
                ("Reason", "text"), ("Encode", "onoff"), ("Record", "onoff"),
                ("DeviceTime", "time")),
        list_path="Alarmstatus", item=_leaves(("DeviceID", "id"), ("DutyStatus", "duty")),
        item_required=("DeviceID",)),
    ("Notify", "Keepalive"): _Schema(_leaves(
        ("Status", "okerror"), ("Info/DeviceID", "id", MANSCDP_REPEAT_MAX))),
    ("Notify", "Alarm"): _Schema(_leaves(
        ("AlarmPriority", "priority"), ("AlarmMethod", "uint"), ("AlarmTime", "time"),
        ("AlarmDescription", "text"), ("Longitude", "lon"), ("Latitude", "lat"),
        ("Info/AlarmType", "uint"), ("Info/AlarmTypeParam/EventType", "uint"))),
    ("Control", "DeviceControl"): _Schema(_leaves(
        ("PTZCmd", "ptz"), ("TeleBoot", "teleboot"), ("RecordCmd", "recordcmd"),
        ("GuardCmd", "guardcmd"), ("AlarmCmd", "alarmcmd"),
        ("Info/ControlPriority", "uint"))),
    ("Response", "DeviceControl"): _Schema(_leaves(("Result", "okerror")), required=("Result",)),
}
_EMPTY = _Schema()
_COMMON = ("CmdType", "SN", "DeviceID")


def schema_known(root: str, cmd_type: str) -> bool:
    """Whether (root, CmdType) has a schema (otherwise only the common fields are kept)."""
    return (root, cmd_type) in _SCHEMAS


@lru_cache(maxsize=64)
def _containers(leaves: tuple[Leaf, ...]) -> frozenset[str]:
    out: set[str] = set()
    for path, _kind, _n in leaves:
        parts = path.split("/")
        out.update("/".join(parts[:i]) for i in range(1, len(parts)))
    return frozenset(out)


# --- values ----------------------------------------------------------------------------------

Fields = tuple[tuple[str, str], ...]


@lru_cache(maxsize=64)
def _index(leaves: tuple[Leaf, ...]) -> tuple[dict[str, int], dict[str, tuple[str, int]]]:
    """Per schema: each leaf's canonical position, and its (kind, most)."""
    return ({path: i for i, (path, _k, _n) in enumerate(leaves)},
            {path: (kind, n) for path, kind, n in leaves})


def _check_fields(fields: Fields, leaves: tuple[Leaf, ...], where: str) -> None:
    """Names known, values valid, canonical order, repetition bounds."""
    order, kinds = _index(leaves)
    last = -1
    counts: dict[str, int] = {}
    for entry in fields:
        if not (isinstance(entry, tuple) and len(entry) == 2
                and isinstance(entry[0], str) and isinstance(entry[1], str)):
            raise ManscdpError(f"{where}: a field is not a (name, text) pair", "value")
        name, value = entry
        if name not in kinds:
            raise ManscdpError(f"{where}: {name} is not in the schema", "value")
        kind, most = kinds[name]
        i = order[name]
        if i < last:
            raise ManscdpError(f"{where}: {name} is out of canonical order", "value")
        last = i
        counts[name] = counts.get(name, 0) + 1
        if counts[name] > most:
            raise ManscdpError(f"{where}: {name} appears more than {most} times", "value")
        _check_value(kind, value, f"{where}: <{name}>")


def _check_value(kind: str, value: str, where: str) -> None:
    if value == "" or value != value.strip(" \t\r\n"):
        raise ManscdpError(f"{where} is empty or has surrounding whitespace: {value[:40]!r}", "value")
    problem = _KINDS[kind](value)
    if problem is not None:
        raise ManscdpError(f"{where} is {problem}: {value[:40]!r}", "value")


@dataclass(frozen=True, slots=True)
class Item:
    """One Item of a DeviceList / Alarmstatus list: its known leaves in canonical order."""

    fields: Fields

    def __post_init__(self) -> None:
        if not isinstance(self.fields, tuple):
            raise ManscdpError("an Item's fields are a tuple", "value")

    def get(self, name: str) -> str | None:
        return next((v for n, v in self.fields if n == name), None)

    @property
    def device_id(self) -> str | None:
        return self.get("DeviceID")


@dataclass(frozen=True, slots=True)
class Manscdp:
    """One MANSCDP message, validated when built (see the module docstring)."""

    root: str
    cmd_type: str
    sn: int
    device_id: str
    fields: Fields = ()
    items: tuple[Item, ...] = ()
    sum_num: int | None = None
    dropped: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.root not in ROOTS:
            raise ManscdpError(f"root {self.root!r} is not one of {', '.join(ROOTS)}", "value")
        if not isinstance(self.cmd_type, str) or not _CMD_TYPE.fullmatch(self.cmd_type):
            raise ManscdpError(f"CmdType {str(self.cmd_type)[:40]!r} is not a name", "value")
        if type(self.sn) is not int or not 0 <= self.sn <= SN_MAX:
            raise ManscdpError(f"SN {self.sn!r} is not an integer 0..{SN_MAX}", "value")
        if not isinstance(self.device_id, str) or not _DIGITS20.fullmatch(self.device_id):
            raise ManscdpError(f"DeviceID {str(self.device_id)[:40]!r} is not 20 digits", "value")
        if not all(isinstance(t, tuple) for t in (self.fields, self.items, self.dropped)):
            raise ManscdpError("fields, items and dropped are tuples", "value")
        schema = _SCHEMAS.get((self.root, self.cmd_type), _EMPTY)
        where = f"{self.root} {self.cmd_type}"
        _check_fields(self.fields, schema.leaves, where)
        names = {n for n, _v in self.fields}
        for req in schema.required:
            if req not in names:
                raise ManscdpError(f"{where}: <{req}> is required", "value")
        if self.items and schema.list_path is None:
            raise ManscdpError(f"{where} has no item list", "value")
        if len(self.items) > MANSCDP_ITEMS_MAX:
            raise ManscdpError(f"{where}: more than {MANSCDP_ITEMS_MAX} items", "too_large")
        for i, item in enumerate(self.items):
            if not isinstance(item, Item):
                raise ManscdpError(f"{where}: item {i + 1} is not an Item", "value")
            iwhere = f"{where} {schema.list_path}/Item {i + 1}"
            _check_fields(item.fields, schema.item, iwhere)
            inames = {n for n, _v in item.fields}
            for req in schema.item_required:
                if req not in inames:
                    raise ManscdpError(f"{iwhere}: <{req}> is required", "value")
        if self.sum_num is not None:
            if not schema.sum_num:
                raise ManscdpError(f"{where} has no SumNum", "value")
            if type(self.sum_num) is not int or not 0 <= self.sum_num <= SN_MAX:
                raise ManscdpError(f"SumNum {self.sum_num!r} is not an integer 0..{SN_MAX}", "value")
            if len(self.items) > self.sum_num:
                raise ManscdpError(f"{where}: {len(self.items)} items but SumNum {self.sum_num}",
                                   "value")
        if not all(isinstance(d, str) for d in self.dropped):
            raise ManscdpError("dropped holds names only", "value")

    def get(self, name: str) -> str | None:
        """The first value of leaf `name` (a path such as ``Info/PTZType``), or None."""
        return next((v for n, v in self.fields if n == name), None)

    def get_all(self, name: str) -> tuple[str, ...]:
        return tuple(v for n, v in self.fields if n == name)


def _parsed(root: str, cmd_type: str, sn: int, device_id: str, fields: Fields,
            items: tuple[Item, ...], sum_num: int | None, dropped: tuple[str, ...]) -> Manscdp:
    """A `Manscdp` the parser has already checked, made without checking it again.

    `_message` establishes everything `Manscdp.__post_init__` checks (root, CmdType, SN and
    DeviceID, each field's name, value, canonical order and count, the required fields, the items
    and their count, SumNum); test_manscdp_fast.py holds its values equal to validated ones."""
    m = object.__new__(Manscdp)
    setattr_ = object.__setattr__
    setattr_(m, "root", root)
    setattr_(m, "cmd_type", cmd_type)
    setattr_(m, "sn", sn)
    setattr_(m, "device_id", device_id)
    setattr_(m, "fields", fields)
    setattr_(m, "items", items)
    setattr_(m, "sum_num", sum_num)
    setattr_(m, "dropped", dropped)
    return m


# --- encodings -------------------------------------------------------------------------------

_GB = "gb18030"
_UTF8 = "utf-8"
_CHARSETS = {"GB2312": _GB, "GBK": _GB, "GB18030": _GB, "UTF-8": _UTF8, "UTF8": _UTF8}
_DECL = re.compile(
    rb"<\?xml[ \t\r\n]+version[ \t\r\n]*=[ \t\r\n]*(?:\"1\.[0-9]\"|'1\.[0-9]')"
    rb"(?:[ \t\r\n]+encoding[ \t\r\n]*=[ \t\r\n]*"
    rb"(?:\"([A-Za-z][A-Za-z0-9._-]{0,39})\"|'([A-Za-z][A-Za-z0-9._-]{0,39})'))?"
    rb"(?:[ \t\r\n]+standalone[ \t\r\n]*=[ \t\r\n]*(?:\"(?:yes|no)\"|'(?:yes|no)'))?"
    rb"[ \t\r\n]*\?>")
_BOM = b"\xef\xbb\xbf"


def _codec(label: str, what: str) -> str:
    codec = _CHARSETS.get(label.strip().strip("\"'").upper())
    if codec is None:
        raise ManscdpError(f"{what} {label[:40]!r} is not GB2312, GBK, GB18030 or UTF-8", "encoding")
    return codec


def _decode(body: bytes, content_charset: str | None) -> tuple[str, int, int]:
    """The body as text, the newlines skipped before it (for line numbers), and where the text
    after its XML declaration starts (0 without one)."""
    bom = body.startswith(_BOM)
    if bom:
        body = body[len(_BOM):]
    stripped = body.lstrip(b" \t\r\n")
    skipped = body.count(b"\n", 0, len(body) - len(stripped)) if len(stripped) != len(body) else 0
    declared: str | None = None
    after_decl = 0
    if stripped.startswith(b"<?xml"):
        m = _DECL.match(stripped)
        if m is None:
            raise ManscdpError(f"line {skipped + 1}: malformed XML declaration", "malformed")
        after_decl = m.end()
        label = m.group(1) or m.group(2)
        if label is not None:
            declared = _codec(label.decode("ascii"), "XML declaration encoding")
    header = _codec(content_charset, "Content-Type charset") if content_charset else None
    if declared and header and declared != header:
        raise ManscdpError(f"XML declaration encoding ({declared}) and Content-Type charset "
                           f"({header}) disagree", "encoding")
    codec = declared or header or _UTF8
    if bom and codec != _UTF8:
        raise ManscdpError("a UTF-8 byte order mark in a GB body", "encoding")
    if stripped.isascii():  # GB18030 and UTF-8 are both ASCII below 0x80: no codec needed
        return stripped.decode("ascii"), skipped, after_decl
    try:
        text = stripped.decode(codec)
    except UnicodeDecodeError as exc:
        raise ManscdpError(f"bytes at offset {exc.start + len(body) - len(stripped) + 3 * bom} are not "
                           f"valid {codec.upper()}", "encoding") from None
    return text, skipped, after_decl


# --- parsing ---------------------------------------------------------------------------------
#
# Two ways from text to a tree of nodes, one walk from the tree to a value:
#
# * `_scan`, the fast path: one regular expression tokenizes a body made only of elements with
#   ASCII names, double- or single-quoted attributes without references, and text without
#   references, CDATA, comments, processing instructions, DTDs, ``>`` or characters XML forbids.
#   It takes nearly all real traffic and answers None, never an error, for anything else or for
#   anything past a limit.
# * `_tree`, the strict path: expat with DOCTYPE, declarations, processing instructions and
#   undeclared entities refused, the limits checked per event, and line and column for every error.
#
# `_message` walks either tree. A body the fast path scanned but `_message` refuses is parsed
# again by the strict path, so a refusal always reads as the strict path's (with its place).
# tests/codecs/test_manscdp_fast.py holds the two equal against the parser before the fast path.

class _Node:
    __slots__ = ("attrs", "children", "col", "line", "name", "size", "text")

    def __init__(self, name: str, attrs: dict[str, str], text: str = "", line: int = 0,
                 col: int = 0) -> None:
        self.name = name
        self.attrs = attrs
        self.text = text          # its text runs, joined (the fast path leaves out whitespace
        self.size = len(text)     # between leaves: in `size` it counts, maybe more than it is)
        self.line = line          # where it starts (the strict path only; errors name it)
        self.col = col
        self.children: list[_Node] = []


def _refuse(what: str) -> Callable[..., Any]:
    def handler(*_args: object) -> Any:
        raise ManscdpError(f"{what} refused", "markup")
    return handler


# made once: they hold no state
_REFUSE_HANDLERS = (
    ("StartDoctypeDeclHandler", _refuse("DOCTYPE")),
    ("EntityDeclHandler", _refuse("entity declaration")),
    ("UnparsedEntityDeclHandler", _refuse("entity declaration")),
    ("NotationDeclHandler", _refuse("notation declaration")),
    ("ElementDeclHandler", _refuse("element declaration")),
    ("AttlistDeclHandler", _refuse("attribute list declaration")),
    ("ExternalEntityRefHandler", _refuse("external entity reference")),
    ("SkippedEntityHandler", _refuse("entity reference")),
    ("ProcessingInstructionHandler", _refuse("processing instruction")),
)


def _tree(text: str, skipped: int) -> _Node:
    p = expat.ParserCreate("UTF-8")
    p.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    p.buffer_text = True  # one call per text run (the length is still checked per call)
    stack: list[_Node] = []
    top: list[_Node] = []
    count = 0

    def here() -> str:
        return f"line {p.CurrentLineNumber + skipped} column {p.CurrentColumnNumber + 1}"

    def start(name: str, attrs: dict[str, str]) -> None:
        nonlocal count
        count += 1
        if count > MANSCDP_ELEMENTS_MAX:
            raise ManscdpError(f"{here()}: more than {MANSCDP_ELEMENTS_MAX} elements", "too_large")
        if len(stack) >= MANSCDP_DEPTH_MAX:
            raise ManscdpError(f"{here()}: nested deeper than {MANSCDP_DEPTH_MAX}", "too_large")
        if len(attrs) > MANSCDP_ATTRIBUTES_MAX:
            raise ManscdpError(f"{here()}: <{name[:40]}> has more than {MANSCDP_ATTRIBUTES_MAX} "
                               "attributes", "too_large")
        if any(len(v) > MANSCDP_TEXT_MAX for v in attrs.values()):
            raise ManscdpError(f"{here()}: an attribute of <{name[:40]}> is longer than "
                               f"{MANSCDP_TEXT_MAX} characters", "too_large")
        node = _Node(name, attrs, "", p.CurrentLineNumber + skipped, p.CurrentColumnNumber + 1)
        (stack[-1].children if stack else top).append(node)
        stack.append(node)

    def end(_name: str) -> None:
        stack.pop()

    def chars(data: str) -> None:
        if not stack:
            return
        node = stack[-1]
        node.size += len(data)
        if node.size > MANSCDP_TEXT_MAX:
            raise ManscdpError(f"{here()}: text of <{node.name[:40]}> is longer than "
                               f"{MANSCDP_TEXT_MAX} characters", "too_large")
        node.text += data

    p.StartElementHandler = start
    p.EndElementHandler = end
    p.CharacterDataHandler = chars
    for handler, refuse in _REFUSE_HANDLERS:
        setattr(p, handler, refuse)
    try:
        p.Parse(text.encode("utf-8"), True)
    except expat.ExpatError as exc:
        line = (exc.lineno or 0) + skipped
        raise ManscdpError(f"line {line} column {(exc.offset or 0) + 1}: "
                           f"{expat.ErrorString(exc.code)}", "malformed") from None
    except RecursionError:  # pragma: no cover - the depth limit comes first
        raise ManscdpError("nested too deep", "too_large") from None
    if len(top) != 1:  # pragma: no cover - expat refuses a second root
        raise ManscdpError("not exactly one root element", "malformed")
    return top[0]


# The fast path's grammar. XML whitespace is space, tab, CR and LF (CR is gone: line ends are
# normalized first, as XML does); names are ASCII; text and attribute values hold no reference
# (``&``), no ``<`` or ``>`` and no character XML forbids. CDATA, comments, DOCTYPE and processing
# instructions (``<!``, ``<?``), and any character the scan does not expect, in markup or text,
# match the last alternative and send the body to the strict path.
_WS = "[ \t\n]"
_NAME = "[A-Za-z_][A-Za-z0-9_.-]*"
_CHAR = "[^<>&\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]"    # text (CR is gone)
_ATTR_CHAR = "[^<&\x00-\x1f\ufffe\uffff"                       # less the quote, closed below
_SCAN = re.compile(
    rf"((?:<({_NAME})>{_CHAR}*</\2>{_WS}*)+)"                               # 1: leaves with their text
    rf"|({_WS}+)"                                                         # 3: whitespace
    rf"|<({_NAME})((?:{_WS}+{_NAME}{_WS}*={_WS}*"                         # 4, 5: a start tag, its
    rf"(?:\"{_ATTR_CHAR}\"]*\"|'{_ATTR_CHAR}']*'))*){_WS}*(/?)>"          #   attributes, 6: empty
    rf"|</({_NAME}){_WS}*>"                                               # 7: an end tag
    rf"|({_CHAR}+)"                                                       # 8: other text
    r"|(.)", re.S)                                                        # 9: anything else
_LEAF = re.compile(rf"<({_NAME})>({_CHAR}*)</\1>")
# a root that holds only leaves without attributes, whitespace between them: most traffic
_FLAT = re.compile(rf"{_WS}*<({_NAME})>((?:{_WS}*<({_NAME})>{_CHAR}*</\3>)*){_WS}*</\1>{_WS}*")
_ATTR = re.compile(rf"{_WS}+({_NAME}){_WS}*={_WS}*(?:\"([^\"]*)\"|'([^']*)')")
_SCAN_MAX = SIGNALING_MESSAGE_BODY_MAX  # longer bodies (not one MESSAGE's) take the strict path


def _fast(text: str, start: int) -> Manscdp | None:
    """The value of a plain body (`text` from `start`, after its declaration), or None when it is
    not plain (the strict path decides); ManscdpError, without its place, when it is refused."""
    if len(text) > _SCAN_MAX:
        return None
    rest = text[start:] if start else text
    if "\r" in rest:  # XML's end-of-line handling (XML 1.0 §2.11), as expat does it
        rest = rest.replace("\r\n", "\n").replace("\r", "\n")
    if len(rest) <= MANSCDP_TEXT_MAX:  # no text, depth or count limit can be reached
        flat = _FLAT.fullmatch(rest)
        if flat is not None:
            return _flat_message(flat.group(1), _LEAF.findall(flat.group(2)))
    root = _scan(rest)
    return None if root is None else _message(root)


def _scan(rest: str) -> _Node | None:
    """The tree of a plain body after its declaration, or None: the strict path decides."""
    root: _Node | None = None
    node: _Node | None = None  # the open element
    stack: list[_Node] = []
    count = 0
    for run, _n, space, name, attrs, empty, end, other, _bad in _SCAN.findall(rest):
        if run:
            if node is None or len(stack) >= MANSCDP_DEPTH_MAX:
                return None
            pairs = _LEAF.findall(run)
            if len(run) > MANSCDP_TEXT_MAX and max(len(t) for _n, t in pairs) > MANSCDP_TEXT_MAX:
                return None
            node.children += [_Node(n, {}, t) for n, t in pairs]
            count += len(pairs)
            # the whitespace between the leaves is node's text: counted as the whole run (at most
            # what it is), and only when that would pass the limit, exactly (the leaves taken out)
            node.size += len(run)
            if node.size > MANSCDP_TEXT_MAX:
                node.size -= len(run) - len(_LEAF.sub("", run))
                if node.size > MANSCDP_TEXT_MAX:
                    return None  # (or an earlier run counted whole passes it: the strict path says)
        elif space:
            if node is not None:
                node.size += len(space)
                if node.size > MANSCDP_TEXT_MAX:
                    return None
                node.text += space
        elif name:
            if (root is not None and node is None) or len(stack) >= MANSCDP_DEPTH_MAX:
                return None
            count += 1
            values: dict[str, str] = {}
            if attrs:
                pairs = _ATTR.findall(attrs)
                values = {a: v1 or v2 for a, v1, v2 in pairs}
                if len(pairs) > MANSCDP_ATTRIBUTES_MAX or len(values) != len(pairs) or any(
                        len(v) > MANSCDP_TEXT_MAX for v in values.values()):
                    return None  # too many, repeated or too long: the strict path says which
            child = _Node(name, values)
            if node is None:
                root = child
            else:
                node.children.append(child)
            if not empty:
                stack.append(child)
                node = child
        elif end:
            if node is None or node.name != end:
                return None
            stack.pop()
            node = stack[-1] if stack else None
        elif other:
            if node is None:
                return None
            node.size += len(other)
            if node.size > MANSCDP_TEXT_MAX:
                return None
            node.text += other
        else:
            return None
        if count > MANSCDP_ELEMENTS_MAX:
            return None
    return root if node is None else None


def _text(node: _Node) -> str:
    if node.children:
        raise ManscdpError(f"line {node.line} column {node.col}: <{node.name[:40]}> holds "
                           "elements where text is expected", "malformed")
    return node.text.strip(" \t\r\n")


_Spec = tuple[Callable[[str], "str | None"], int]  # a leaf's value checker, how many times at most


def _collect(node: _Node, prefix: str, leaves: dict[str, _Spec], containers: frozenset[str],
             found: dict[str, list[str]], dropped: list[str],
             skip: frozenset[str] = frozenset()) -> list[_Node]:
    """Known leaves of `node`'s children into `found`; unknown ones into `dropped`.

    Returns the child nodes named in `skip` (handled by the caller)."""
    held: list[_Node] = []
    for child in node.children:
        path = prefix + child.name
        spec = leaves.get(path)  # (skip names no leaf)
        if spec is not None:
            if child.children:
                _text(child)  # refuses it
            value = child.text.strip(" \t\r\n")
            if child.attrs:
                _drop_attrs(child, path, dropped)
            if value == "":
                continue
            check, most = spec
            values = found.get(path)
            if values is None:
                values = found[path] = []
            elif len(values) >= most:
                raise ManscdpError(f"line {child.line} column {child.col}: <{child.name[:40]}> "
                                   f"appears more than {most} time{'s' * (most > 1)}", "malformed")
            problem = check(value)  # `value` is stripped and not empty
            if problem is not None:
                raise ManscdpError(f"line {child.line} column {child.col}: <{child.name[:40]}> is "
                                   f"{problem}: {value[:40]!r}", "value")
            values.append(value)
        elif path in skip:
            held.append(child)
        elif path in containers:
            if child.attrs:
                _drop_attrs(child, path, dropped)
            if child.text and child.text.strip(" \t\r\n"):
                _drop(dropped, path + "/#text")
            _collect(child, path + "/", leaves, containers, found, dropped)
        else:
            _drop(dropped, path)
    return held


def _drop(dropped: list[str], name: str) -> None:
    name = name[:MANSCDP_DROPPED_NAME_MAX]
    if name in dropped:
        return
    if len(dropped) < MANSCDP_DROPPED_MAX:
        dropped.append(name)
    elif dropped[-1] != "...":
        dropped.append("...")


def _drop_attrs(node: _Node, path: str, dropped: list[str], keep: str | None = None) -> None:
    for a in node.attrs:
        if a != keep:
            _drop(dropped, f"{path}@{a}")


def _ordered(found: dict[str, list[str]], order: dict[str, int]) -> Fields:
    """The fields found, in canonical (schema) order."""
    if len(found) <= 1:
        return tuple((path, v) for path, values in found.items() for v in values)
    return tuple((path, v) for path in sorted(found, key=order.__getitem__) for v in found[path])


def _one(root: _Node, name: str, nodes: list[_Node]) -> _Node:
    """The one child `name` of `root` (`nodes`: all of them)."""
    if not nodes:
        raise ManscdpError(f"line {root.line} column {root.col}: <{name}> is missing", "malformed")
    if len(nodes) > 1:
        n = nodes[1]
        raise ManscdpError(f"line {n.line} column {n.col}: <{name}> appears twice", "malformed")
    return nodes[0]


_UINT31 = re.compile(r"[0-9]{1,10}")


def _header_int(node: _Node, what: str) -> int:
    v = _text(node)
    if not _UINT31.fullmatch(v) or int(v) > SN_MAX:
        raise ManscdpError(f"line {node.line} column {node.col}: <{what}> is not an integer "
                           f"0..{SN_MAX}: {v[:40]!r}", "value")
    return int(v)


def parse(body: bytes, *, content_charset: str | None = None,
          max_bytes: int = MANSCDP_BODY_MAX) -> Manscdp:
    """One MANSCDP body -> its value, or ManscdpError (see the module docstring)."""
    limit = min(max_bytes, MANSCDP_BODY_MAX)
    if len(body) > limit:
        raise ManscdpError(f"body of {len(body)} bytes is larger than {limit}", "too_large")
    text, skipped, after_decl = _decode(bytes(body), content_charset)
    try:
        m = _fast(text, after_decl)
    except ManscdpError:
        m = None  # refused: the strict path refuses it again and says where
    if m is not None:
        return m
    return _message(_tree(text, skipped))


_REFUSED = "refused by the fast path"  # never seen: the strict path then says what and where


def _flat_message(root: str, pairs: list[tuple[str, str]]) -> Manscdp:
    """`_message` of a root holding only leaves `pairs` (name, text), without attributes or text
    of its own, made without nodes; ManscdpError (without its place) where `_message` refuses."""
    if root not in ROOTS:
        raise ManscdpError(_REFUSED)
    cmd = sn_text = dev = None
    others: list[tuple[str, str]] = []
    for name, text in pairs:
        if name == "CmdType":
            if cmd is not None:
                raise ManscdpError(_REFUSED)
            cmd = text
        elif name == "SN":
            if sn_text is not None:
                raise ManscdpError(_REFUSED)
            sn_text = text
        elif name == "DeviceID":
            if dev is not None:
                raise ManscdpError(_REFUSED)
            dev = text
        else:
            others.append((name, text))
    if cmd is None or sn_text is None or dev is None:
        raise ManscdpError(_REFUSED)
    cmd_type = cmd.strip(" \t\r\n")
    sn_value = sn_text.strip(" \t\r\n")
    device_id = dev.strip(" \t\r\n")
    if (not _CMD_TYPE.fullmatch(cmd_type) or not _UINT31.fullmatch(sn_value) or int(sn_value) > SN_MAX
            or not _DIGITS20.fullmatch(device_id)):
        raise ManscdpError(_REFUSED)
    sn = int(sn_value)
    dropped: list[str] = []
    walk = _WALKS.get((root, cmd_type))
    if walk is None:
        for name, _text in others:
            _drop(dropped, name)
        return _parsed(root, cmd_type, sn, device_id, (), (), None, tuple(dropped))
    leaves = walk.leaves
    found: dict[str, list[str]] = {}
    held: list[tuple[str, str]] = []
    for name, text in others:
        if name in walk.skip:
            held.append((name, text))
        elif name in leaves:
            value = text.strip(" \t\r\n")
            if value == "":
                continue
            check, most = leaves[name]
            values = found.get(name)
            if values is None:
                values = found[name] = []
            elif len(values) >= most:
                raise ManscdpError(_REFUSED)
            if check(value) is not None:
                raise ManscdpError(_REFUSED)
            values.append(value)
        elif name in walk.containers:  # a container written as a leaf: no leaves, maybe text
            if text.strip(" \t\r\n"):
                _drop(dropped, name + "/#text")
        else:
            _drop(dropped, name)
    sum_num: int | None = None
    if held:  # SumNum, and an item list written as a leaf (no items)
        list_path = walk.schema.list_path
        lists = [t for n, t in held if n == list_path]
        sums = [t for n, t in held if n == "SumNum"]
        if len(sums) > 1 or len(lists) > 1:
            raise ManscdpError(_REFUSED)
        if sums:
            v = sums[0].strip(" \t\r\n")
            if not _UINT31.fullmatch(v) or int(v) > SN_MAX:
                raise ManscdpError(_REFUSED)
            sum_num = int(v)
        if lists and lists[0].strip(" \t\r\n"):
            _drop(dropped, f"{list_path}/#text")
    for req in walk.schema.required:
        if req not in found:
            raise ManscdpError(_REFUSED)
    return _parsed(root, cmd_type, sn, device_id, _ordered(found, walk.order), (), sum_num,
                   tuple(dropped))


def _message(root: _Node) -> Manscdp:
    """The value of a body's tree (either path's), or ManscdpError."""
    if root.name not in ROOTS:
        raise ManscdpError(f"line {root.line} column {root.col}: root <{root.name[:40]}> is not one "
                           f"of {', '.join(ROOTS)}", "malformed")
    heads: dict[str, list[_Node]] = {"CmdType": [], "SN": [], "DeviceID": []}
    others: list[_Node] = []
    for c in root.children:
        h = heads.get(c.name)
        if h is None:
            others.append(c)
        else:
            h.append(c)
    cmd_node = _one(root, "CmdType", heads["CmdType"])
    cmd_type = _text(cmd_node)
    if not _CMD_TYPE.fullmatch(cmd_type):
        raise ManscdpError(f"line {cmd_node.line} column {cmd_node.col}: <CmdType> is not a name: "
                           f"{cmd_type[:40]!r}", "value")
    sn_node = _one(root, "SN", heads["SN"])
    sn = _header_int(sn_node, "SN")
    id_node = _one(root, "DeviceID", heads["DeviceID"])
    device_id = _text(id_node)
    if not _DIGITS20.fullmatch(device_id):
        raise ManscdpError(f"line {id_node.line} column {id_node.col}: <DeviceID> is not a "
                           f"20-digit device ID: {device_id[:40]!r}", "value")
    dropped: list[str] = []
    if root.attrs:
        _drop_attrs(root, root.name, dropped)
    for n in (cmd_node, sn_node, id_node):
        if n.attrs:
            _drop_attrs(n, n.name, dropped)
    if root.text.strip(" \t\r\n"):
        _drop(dropped, "#text")
    walk = _WALKS.get((root.name, cmd_type))
    if walk is None:
        for c in others:
            _drop(dropped, c.name)
        return _parsed(root.name, cmd_type, sn, device_id, (), (), None, tuple(dropped))
    schema = walk.schema
    rest = _Node(root.name, {}, "", root.line, root.col)
    rest.children = others
    found: dict[str, list[str]] = {}
    held = _collect(rest, "", walk.leaves, walk.containers, found, dropped, walk.skip)
    sum_num: int | None = None
    items: list[Item] = []
    lists = [h for h in held if h.name == schema.list_path]
    sums = [h for h in held if h.name == "SumNum"]
    if len(sums) > 1 or len(lists) > 1:
        n = (sums if len(sums) > 1 else lists)[1]
        raise ManscdpError(f"line {n.line} column {n.col}: <{n.name}> appears twice", "malformed")
    if sums:
        sum_num = _header_int(sums[0], "SumNum")
    if lists:
        items = _items(lists[0], walk, dropped)
        if sum_num is not None and len(items) > sum_num:
            n = lists[0]
            raise ManscdpError(f"line {n.line} column {n.col}: {len(items)} items but SumNum "
                               f"{sum_num}", "value")
    for req in schema.required:
        if req not in found:
            raise ManscdpError(f"line {root.line} column {root.col}: <{req}> is required "
                               f"in {root.name} {cmd_type}", "malformed")
    return _parsed(root.name, cmd_type, sn, device_id, _ordered(found, walk.order),
                   tuple(items), sum_num, tuple(dropped))


@dataclass(frozen=True, slots=True)
class _Walk:
    """What the walk of one schema looks up, made once per schema."""

    schema: _Schema
    leaves: dict[str, _Spec]               # leaf path -> (its value checker, how many times at most)
    order: dict[str, int]                  # leaf path -> canonical position
    containers: frozenset[str]
    skip: frozenset[str]                   # the root's children `_message` handles: list, SumNum
    item_leaves: dict[str, _Spec]
    item_order: dict[str, int]
    item_containers: frozenset[str]


def _walk(schema: _Schema) -> _Walk:
    order, kinds = _index(schema.leaves)
    item_order, item_kinds = _index(schema.item)
    leaves = {path: (_KINDS[kind], most) for path, (kind, most) in kinds.items()}
    item_leaves = {path: (_KINDS[kind], most) for path, (kind, most) in item_kinds.items()}
    skip = {schema.list_path} if schema.list_path else set()
    if schema.sum_num:
        skip.add("SumNum")
    return _Walk(schema, leaves, order, _containers(schema.leaves), frozenset(skip), item_leaves,
                 item_order, _containers(schema.item))


_WALKS = {key: _walk(schema) for key, schema in _SCHEMAS.items()}


def _items(node: _Node, walk: _Walk, dropped: list[str]) -> list[Item]:
    schema = walk.schema
    path = schema.list_path or ""
    _drop_attrs(node, path, dropped, keep="Num")
    if node.text.strip(" \t\r\n"):
        _drop(dropped, path + "/#text")
    leaves = walk.item_leaves
    containers = walk.item_containers
    items: list[Item] = []
    for child in node.children:
        if child.name != "Item":
            _drop(dropped, f"{path}/{child.name}")
            continue
        if len(items) >= MANSCDP_ITEMS_MAX:
            raise ManscdpError(f"line {child.line} column {child.col}: more than "
                               f"{MANSCDP_ITEMS_MAX} items", "too_large")
        found: dict[str, list[str]] = {}
        sub: list[str] = []
        if child.attrs:
            _drop_attrs(child, f"{path}/Item", dropped)
        _collect(child, "", leaves, containers, found, sub)
        for d in sub:
            _drop(dropped, f"{path}/Item/{d}")
        for req in schema.item_required:
            if req not in found:
                raise ManscdpError(f"line {child.line} column {child.col}: <Item> without "
                                   f"<{req}>", "malformed")
        items.append(Item(_ordered(found, walk.item_order)))
    num = node.attrs.get("Num")
    if num is not None:
        num = num.strip(" \t\r\n")
        if not _UINT31.fullmatch(num) or int(num) != len(items):
            raise ManscdpError(f"line {node.line} column {node.col}: <{path} Num={num[:40]!r}> but "
                               f"{len(items)} items", "value")
    return items


# --- building --------------------------------------------------------------------------------

def _escape(s: str) -> str:
    return (s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace("\r", "&#13;"))


_Tree = dict[str, "list[str] | _Tree"]


def _emit(out: list[str], fields: Fields, indent: str) -> None:
    tree: _Tree = {}
    for path, value in fields:
        *dirs, leaf = path.split("/")
        node = tree
        for d in dirs:
            sub = node.setdefault(d, {})
            assert isinstance(sub, dict)
            node = sub
        values = node.setdefault(leaf, [])
        assert isinstance(values, list)
        values.append(value)
    _emit_tree(out, tree, indent)


def _emit_tree(out: list[str], tree: _Tree, indent: str) -> None:
    for name, sub in tree.items():
        if isinstance(sub, dict):
            out.append(f"{indent}<{name}>")
            _emit_tree(out, sub, indent + "  ")
            out.append(f"{indent}</{name}>")
        else:
            out.extend(f"{indent}<{name}>{_escape(v)}</{name}>" for v in sub)


_BUILD_CODECS = {"GB2312": "gbk", "GBK": "gbk", "GB18030": "gb18030", "UTF-8": "utf-8"}


def build(msg: Manscdp, *, encoding: str = "GB2312") -> bytes:
    """The body of `msg`, from its values alone (see the module docstring)."""
    label = encoding.upper()
    if label == "UTF8":
        label = "UTF-8"
    codec = _BUILD_CODECS.get(label)
    if codec is None:
        raise ManscdpError(f"encoding {encoding[:40]!r} is not GB2312, GBK, GB18030 or UTF-8",
                           "encoding")
    schema = _SCHEMAS.get((msg.root, msg.cmd_type), _EMPTY)
    out = [f"<{msg.root}>", f"  <CmdType>{msg.cmd_type}</CmdType>", f"  <SN>{msg.sn}</SN>",
           f"  <DeviceID>{msg.device_id}</DeviceID>"]
    if msg.sum_num is not None:
        out.append(f"  <SumNum>{msg.sum_num}</SumNum>")
    _emit(out, msg.fields, "  ")
    if schema.list_path is not None and (msg.items or msg.sum_num is not None):
        out.append(f'  <{schema.list_path} Num="{len(msg.items)}">')
        for item in msg.items:
            out.append("    <Item>")
            _emit(out, item.fields, "      ")
            out.append("    </Item>")
        out.append(f"  </{schema.list_path}>")
    out.append(f"</{msg.root}>")
    body = "\r\n".join(out) + "\r\n"
    if codec != _UTF8:
        try:
            data = body.encode(codec)
            if data.decode(_GB) == body:  # what parse reads back (GBK and GB18030 differ on a few)
                return f'<?xml version="1.0" encoding="{label}"?>\r\n'.encode("ascii") + data
        except UnicodeError:
            pass
    return ('<?xml version="1.0" encoding="UTF-8"?>\r\n' + body).encode(_UTF8)


# --- helpers for the signaling lanes --------------------------------------------------------

def keepalive(device_id: str, sn: int, status: str = "OK") -> Manscdp:
    """A Notify Keepalive of `device_id`."""
    return Manscdp("Notify", "Keepalive", sn, device_id, (("Status", status),))


def catalog_pages(root_id: str, sn: int, items: Iterable[Item], sum_num: int | None,
                  per_page: int) -> list[Manscdp]:
    """Response Catalog pages: SumNum the total (default: the items given), Num per page."""
    all_items = tuple(items)
    if isinstance(per_page, bool) or not isinstance(per_page, int) or per_page < 1:
        raise ManscdpError(f"per_page {per_page!r} is not a positive integer", "value")
    total = len(all_items) if sum_num is None else sum_num
    if type(total) is not int or total < len(all_items):
        raise ManscdpError(f"SumNum {total!r} is less than the {len(all_items)} items", "value")
    if not all_items:
        return [Manscdp("Response", "Catalog", sn, root_id, sum_num=total)]
    return [Manscdp("Response", "Catalog", sn, root_id, items=all_items[i:i + per_page],
                    sum_num=total) for i in range(0, len(all_items), per_page)]


def _map_fields(fields: Fields, leaves: tuple[Leaf, ...], fn: Callable[[str], str]) -> Fields:
    kinds = {path: kind for path, kind, _n in leaves}
    out = []
    for name, value in fields:
        kind = kinds.get(name)
        if kind == "id":
            value = fn(value)
        elif kind == "idpath":
            value = "/".join(fn(v) for v in value.split("/"))
        out.append((name, value))
    return tuple(out)


def map_ids(msg: Manscdp, fn: Callable[[str], str]) -> Manscdp:
    """`msg` with `fn` applied to every device ID in it; the result is validated."""
    schema = _SCHEMAS.get((msg.root, msg.cmd_type), _EMPTY)
    return replace(
        msg, device_id=fn(msg.device_id), fields=_map_fields(msg.fields, schema.leaves, fn),
        items=tuple(Item(_map_fields(it.fields, schema.item, fn)) for it in msg.items))
