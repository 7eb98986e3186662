"""Today's MANSCDP parser (ferry/codecs/manscdp.py as of ea1fcbe), kept as the strict reference.

A verbatim copy of the parsing half of the module before its fast path: expat for every body, a
tree of nodes, the schema walk, and `Manscdp` values validated again when built. It lives in the
test suite only: `test_manscdp_fast.py` holds `ferry.codecs.manscdp.parse` equal to this `parse`
(the same values, or the same ManscdpError kind and message) over generated and mutated bodies.
Do not speed it up: its worth is that it is the unchanged, simple path.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from xml.parsers import expat

from ferry.limits import (
    MANSCDP_ATTRIBUTES_MAX,
    MANSCDP_BODY_MAX,
    MANSCDP_DEPTH_MAX,
    MANSCDP_ELEMENTS_MAX,
    MANSCDP_FREE_TEXT_MAX,
    MANSCDP_ITEMS_MAX,
    MANSCDP_TEXT_MAX,
)
# identical in ferry.codecs.manscdp (and so is everything they call): taken from there, not copied
from ferry.codecs.manscdp import (  # noqa: E402,F401
    ErrorKind,
    Fields,
    Item,
    Leaf,
    ManscdpError,
    ROOTS,
    SN_MAX,
    _BOM,
    _CATALOG,
    _CATALOG_ITEM,
    _CHARSETS,
    _CMD_TYPE,
    _COMMON,
    _DECL,
    _DIGITS20,
    _EMPTY,
    _FLOAT,
    _GB,
    _HEX16,
    _INT,
    _IP_CHARS,
    _SCHEMAS,
    _Schema,
    _TIME,
    _TOKEN,
    _UTF8,
    _check_id,
    _check_id_path,
    _check_ip,
    _check_ptz,
    _check_time,
    _check_token,
    _codec,
    _containers,
    _drop,
    _enum,
    _float_range,
    _index,
    _int_range,
    _leaves,
    _refuse,
    schema_known,
)

__all__ = ["Item", "Manscdp", "ManscdpError", "parse"]


# --- value types -----------------------------------------------------------------------------


def _check_text(v: str) -> str | None:
    if len(v) > MANSCDP_FREE_TEXT_MAX:
        return f"longer than {MANSCDP_FREE_TEXT_MAX} characters"
    for c in v:
        if unicodedata.category(c) in ("Cc", "Cs") or c in _NOT_TEXT:
            return f"has control character U+{ord(c):04X}"
    return None


# besides category Cc: the bidirectional embeddings, overrides and isolates (a name that reads
# differently from its characters) and the two non-characters XML cannot carry
_NOT_TEXT = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\ufffe\uffff")


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


# --- values ----------------------------------------------------------------------------------


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


# --- encodings -------------------------------------------------------------------------------


def _decode(body: bytes, content_charset: str | None) -> tuple[str, int]:
    """The body as text, and the newlines skipped before it (for line numbers)."""
    bom = body.startswith(_BOM)
    if bom:
        body = body[len(_BOM):]
    stripped = body.lstrip(b" \t\r\n")
    skipped = body[: len(body) - len(stripped)].count(b"\n")
    declared: str | None = None
    if stripped.startswith(b"<?xml"):
        m = _DECL.match(stripped)
        if m is None:
            raise ManscdpError(f"line {skipped + 1}: malformed XML declaration", "malformed")
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
    try:
        text = stripped.decode(codec)
    except UnicodeDecodeError as exc:
        raise ManscdpError(f"bytes at offset {exc.start + len(body) - len(stripped) + 3 * bom} are not "
                           f"valid {codec.upper()}", "encoding") from None
    return text, skipped


# --- parsing ---------------------------------------------------------------------------------

@dataclass(slots=True)
class _Node:
    name: str
    attrs: dict[str, str]
    line: int
    col: int
    text: list[str] = field(default_factory=list)
    size: int = 0
    children: list[_Node] = field(default_factory=list)


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
        node = _Node(name, attrs, p.CurrentLineNumber + skipped, p.CurrentColumnNumber + 1)
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
        node.text.append(data)

    p.StartElementHandler = start
    p.EndElementHandler = end
    p.CharacterDataHandler = chars
    p.StartDoctypeDeclHandler = _refuse("DOCTYPE")
    p.EntityDeclHandler = _refuse("entity declaration")
    p.UnparsedEntityDeclHandler = _refuse("entity declaration")
    p.NotationDeclHandler = _refuse("notation declaration")
    p.ElementDeclHandler = _refuse("element declaration")
    p.AttlistDeclHandler = _refuse("attribute list declaration")
    p.ExternalEntityRefHandler = _refuse("external entity reference")
    p.SkippedEntityHandler = _refuse("entity reference")
    p.ProcessingInstructionHandler = _refuse("processing instruction")
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


def _text(node: _Node) -> str:
    if node.children:
        raise ManscdpError(f"line {node.line} column {node.col}: <{node.name[:40]}> holds "
                           "elements where text is expected", "malformed")
    return "".join(node.text).strip(" \t\r\n")


def _collect(node: _Node, prefix: str, leaves: dict[str, tuple[str, int]],
             containers: frozenset[str], found: dict[str, list[str]], dropped: list[str],
             skip: frozenset[str] = frozenset()) -> list[_Node]:
    """Known leaves of `node`'s children into `found`; unknown ones into `dropped`.

    Returns the child nodes named in `skip` (handled by the caller)."""
    held: list[_Node] = []
    for child in node.children:
        path = f"{prefix}{child.name}"
        if path in skip:
            held.append(child)
        elif path in leaves:
            kind, most = leaves[path]
            value = _text(child)
            _drop_attrs(child, path, dropped)
            if value == "":
                continue
            values = found.setdefault(path, [])
            if len(values) >= most:
                raise ManscdpError(f"line {child.line} column {child.col}: <{child.name[:40]}> "
                                   f"appears more than {most} time{'s' * (most > 1)}", "malformed")
            where = f"line {child.line} column {child.col}: <{child.name[:40]}>"
            _check_value(kind, value, where)
            values.append(value)
        elif path in containers:
            _drop_attrs(child, path, dropped)
            if "".join(child.text).strip(" \t\r\n"):
                _drop(dropped, path + "/#text")
            _collect(child, path + "/", leaves, containers, found, dropped)
        else:
            _drop(dropped, path)
    return held


def _drop_attrs(node: _Node, path: str, dropped: list[str], keep: str | None = None) -> None:
    for a in node.attrs:
        if a != keep:
            _drop(dropped, f"{path}@{a}")


def _ordered(found: dict[str, list[str]], leaves: tuple[Leaf, ...]) -> Fields:
    return tuple((path, v) for path, _k, _n in leaves for v in found.get(path, ()))


def _one(root: _Node, name: str) -> _Node:
    nodes = [c for c in root.children if c.name == name]
    if not nodes:
        raise ManscdpError(f"line {root.line} column {root.col}: <{name}> is missing", "malformed")
    if len(nodes) > 1:
        n = nodes[1]
        raise ManscdpError(f"line {n.line} column {n.col}: <{name}> appears twice", "malformed")
    return nodes[0]


def _header_int(node: _Node, what: str) -> int:
    v = _text(node)
    if not re.fullmatch(r"[0-9]{1,10}", v) or int(v) > SN_MAX:
        raise ManscdpError(f"line {node.line} column {node.col}: <{what}> is not an integer "
                           f"0..{SN_MAX}: {v[:40]!r}", "value")
    return int(v)


def parse(body: bytes, *, content_charset: str | None = None,
          max_bytes: int = MANSCDP_BODY_MAX) -> Manscdp:
    """One MANSCDP body -> its value, or ManscdpError (see the module docstring)."""
    limit = min(max_bytes, MANSCDP_BODY_MAX)
    if len(body) > limit:
        raise ManscdpError(f"body of {len(body)} bytes is larger than {limit}", "too_large")
    text, skipped = _decode(bytes(body), content_charset)
    root = _tree(text, skipped)
    if root.name not in ROOTS:
        raise ManscdpError(f"line {root.line} column {root.col}: root <{root.name[:40]}> is not one "
                           f"of {', '.join(ROOTS)}", "malformed")
    cmd_node = _one(root, "CmdType")
    cmd_type = _text(cmd_node)
    if not _CMD_TYPE.fullmatch(cmd_type):
        raise ManscdpError(f"line {cmd_node.line} column {cmd_node.col}: <CmdType> is not a name: "
                           f"{cmd_type[:40]!r}", "value")
    sn_node = _one(root, "SN")
    sn = _header_int(sn_node, "SN")
    id_node = _one(root, "DeviceID")
    device_id = _text(id_node)
    if not _DIGITS20.fullmatch(device_id):
        raise ManscdpError(f"line {id_node.line} column {id_node.col}: <DeviceID> is not a "
                           f"20-digit device ID: {device_id[:40]!r}", "value")
    dropped: list[str] = []
    _drop_attrs(root, root.name, dropped)
    for n in (cmd_node, sn_node, id_node):
        _drop_attrs(n, n.name, dropped)
    if "".join(root.text).strip(" \t\r\n"):
        _drop(dropped, "#text")
    schema = _SCHEMAS.get((root.name, cmd_type))
    rest = _Node(root.name, {}, root.line, root.col,
                 children=[c for c in root.children if c.name not in _COMMON])
    if schema is None:
        for c in rest.children:
            _drop(dropped, c.name)
        return Manscdp(root.name, cmd_type, sn, device_id, dropped=tuple(dropped))
    leaves = _index(schema.leaves)[1]
    skip = {schema.list_path} if schema.list_path else set()
    if schema.sum_num:
        skip.add("SumNum")
    found: dict[str, list[str]] = {}
    held = _collect(rest, "", leaves, _containers(schema.leaves), found, dropped, frozenset(skip))
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
        items = _items(lists[0], schema, dropped)
        if sum_num is not None and len(items) > sum_num:
            n = lists[0]
            raise ManscdpError(f"line {n.line} column {n.col}: {len(items)} items but SumNum "
                               f"{sum_num}", "value")
    for req in schema.required:
        if req not in found:
            raise ManscdpError(f"line {root.line} column {root.col}: <{req}> is required "
                               f"in {root.name} {cmd_type}", "malformed")
    return Manscdp(root.name, cmd_type, sn, device_id, _ordered(found, schema.leaves),
                   tuple(items), sum_num, tuple(dropped))


def _items(node: _Node, schema: _Schema, dropped: list[str]) -> list[Item]:
    path = schema.list_path or ""
    _drop_attrs(node, path, dropped, keep="Num")
    if "".join(node.text).strip(" \t\r\n"):
        _drop(dropped, path + "/#text")
    leaves = _index(schema.item)[1]
    containers = _containers(schema.item)
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
        _drop_attrs(child, f"{path}/Item", dropped)
        _collect(child, "", leaves, containers, found, sub)
        for d in sub:
            _drop(dropped, f"{path}/Item/{d}")
        for req in schema.item_required:
            if req not in found:
                raise ManscdpError(f"line {child.line} column {child.col}: <Item> without "
                                   f"<{req}>", "malformed")
        items.append(Item(_ordered(found, schema.item)))
    num = node.attrs.get("Num")
    if num is not None:
        num = num.strip(" \t\r\n")
        if not re.fullmatch(r"[0-9]{1,10}", num) or int(num) != len(items):
            raise ManscdpError(f"line {node.line} column {node.col}: <{path} Num={num[:40]!r}> but "
                               f"{len(items)} items", "value")
    return items
