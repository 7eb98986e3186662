"""The outer devices' registrations as the outer agent keeps them across its restarts: pure.

A restarted outer agent that knew no device refused every MESSAGE (`not_registered`) until each
device registered again, at its refresh (often an hour) or when its keepalives failed; 10,000
cameras then re-registered at once. So the agent writes the online devices now and then
(`snapshot` on the agent's loop, `encode` off it, ``<state_dir>/sip-registrations``) and a new
run takes them back (`decode`, then ``OuterSignalingLane.restore``): each device with what its
registration had left, a fresh keepalive window from the restart, and the catalog channels
learned (a MESSAGE naming a channel is not `device_mismatch`).

The file: a first line ``ferry-sip-registrations 1 <crc32 of the rest, 8 hex digits> <count>``,
then one JSON object per device. Anything that does not check (the header, the CRC, a field's
type or bound, the count) makes the whole file unusable: `decode` names why and returns nothing,
and the agent starts with no device, as before the file existed.
"""
from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from typing import Any

from ferry import limits
from ferry.codecs.sip import SipError, parse_uri
from ferry.lanes.signaling.registry import Registry

MAGIC = b"ferry-sip-registrations"
VERSION = 1


@dataclass(frozen=True, slots=True)
class Saved:
    """One device as a run left it."""
    device_id: str
    transport: str                      # "udp" | "tcp": how it registered
    host: str
    port: int
    contact: str                        # its Contact URI
    expires_wall: float                 # when its registration ends (wall clock)
    registered_wall: float
    catalog: tuple[tuple[tuple[str, str], ...], ...] = ()     # its catalog items' fields


Row = tuple[str, str, str, int, Any, float, float, tuple[Any, ...]]


def snapshot(registry: Registry, now: float, wall: float) -> list[Row]:
    """The online devices of ``registry`` as plain values (monotonic ``now`` read against ``wall``):
    cheap, taken on the agent's loop; `encode` may then run elsewhere (the values are immutable)."""
    return [(d.device_id, str(getattr(d.peer, "transport", "")), str(getattr(d.peer, "host", "")),
             int(getattr(d.peer, "port", 0) or 0), d.contact, wall + (d.expires_at - now), d.registered_wall,
             tuple(d.catalog.values()))
            for d in registry if d.online and d.contact is not None]


def encode(rows: list[Row]) -> bytes:
    """The file for a `snapshot`."""
    dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
    body = b"".join(dumps({
        "id": did, "transport": transport, "host": host, "port": port, "contact": str(contact),
        "expires": round(expires, 3), "registered": round(registered, 3),
        "catalog": [[list(pair) for pair in item.fields] for item in catalog],
    }).encode("utf-8") + b"\n" for did, transport, host, port, contact, expires, registered, catalog in rows)
    return b"%s %d %08x %d\n" % (MAGIC, VERSION, zlib.crc32(body), len(rows)) + body


def decode(data: bytes) -> tuple[list[Saved], str | None]:
    """(the devices, None), or ([], why the file cannot be used)."""
    head, nl, body = data.partition(b"\n")
    parts = head.split(b" ")
    if not nl or len(parts) != 4 or parts[0] != MAGIC:
        return [], "line 1: not a ferry-sip-registrations header"
    if parts[1] != b"%d" % VERSION:
        return [], f"line 1: version {parts[1][:8]!r}, this agent reads {VERSION}"
    try:
        crc, count = int(parts[2], 16), int(parts[3])
    except ValueError:
        return [], "line 1: bad checksum or count"
    if zlib.crc32(body) != crc:
        return [], "the checksum does not match (a torn or damaged file)"
    lines = body.split(b"\n")[:-1] if body else []
    if len(lines) != count or count > limits.SIGNALING_DEVICES_MAX:
        return [], f"{len(lines)} devices where the header says {count}"
    out: list[Saved] = []
    for number, line in enumerate(lines, start=2):
        try:
            out.append(_device(json.loads(line)))
        except (ValueError, TypeError, KeyError, SipError) as e:
            return [], f"line {number}: {e}"
    return out, None


def _device(v: Any) -> Saved:
    if not isinstance(v, dict):
        raise ValueError("not an object")
    did, transport, host, port = v["id"], v["transport"], v["host"], v["port"]
    if not (isinstance(did, str) and len(did) == 20 and did.isdigit()):
        raise ValueError("bad device ID")
    if transport not in ("udp", "tcp") or not isinstance(host, str) or not 0 < len(host) <= 255:
        raise ValueError("bad transport or host")
    if type(port) is not int or not 0 < port <= 65535:
        raise ValueError("bad port")
    contact = v["contact"]
    if not isinstance(contact, str):
        raise ValueError("bad contact")
    parse_uri(contact)
    expires, registered = v["expires"], v["registered"]
    if not all(type(x) in (int, float) for x in (expires, registered)):
        raise ValueError("bad times")
    catalog = v["catalog"]
    if not isinstance(catalog, list) or len(catalog) > limits.SIGNALING_CATALOG_ITEMS_MAX:
        raise ValueError("bad catalog")
    items = []
    for item in catalog:
        if not isinstance(item, list) or not all(
                isinstance(p, list) and len(p) == 2 and all(isinstance(x, str) for x in p) for p in item):
            raise ValueError("bad catalog item")
        items.append(tuple((n, x) for n, x in item))
    return Saved(did, transport, host, port, contact, float(expires), float(registered), tuple(items))
