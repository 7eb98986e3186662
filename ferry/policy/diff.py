"""What changes between two policies: in words, then in verdicts.

    for line in diff_policies("policy/yiyang", "/tmp/yiyang-new"):
        print(line)

Words: rules added, removed, moved and changed field by field with a
direction ("max_width 1920 -> 1280: stricter"), sources' matchers, IDs and
networks, destinations, time zone. Verdicts: every test case of both
policies' suites, plus probes generated from every rule's limits (at the
limit, just above it, each listed codec/type and one that is not, look-alike
device IDs, the edges of time windows), is decided by both plans and each
verdict that changed is listed. ``compare_plans`` / ``describe_changes`` are
the pure parts.
"""

from __future__ import annotations

import ipaddress
import itertools
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from ferry import limits
from ferry.pb import ferry_pb2
from ferry.policy import load_plan
from ferry.policy import models as m
from ferry.policy.lint import week_minutes
from ferry.policy.suite import load_suite

STRICTER, LOOSER = "stricter", "looser"
# Thursday 26 November 2026 10:00 local time: a weekday morning for rules without windows.
_BASE_DAY = datetime(2026, 11, 23)  # a Monday
_BASE_TIME = _BASE_DAY + timedelta(days=3, hours=10)


def diff_policies(old_dir: str | os.PathLike[str], new_dir: str | os.PathLike[str]) -> list[str]:
    """Read both policies and their suites; the differences in words and verdicts."""
    old, new = load_plan(old_dir), load_plan(new_dir)
    samples = [Sample(c.object, f"test {c.name!r} ({c.where})") for c in load_suite(old_dir)]
    samples += [Sample(c.object, f"test {c.name!r} ({c.where})") for c in load_suite(new_dir)]
    return describe_changes(old.policy, new.policy) + compare_plans(old, new, samples)


# --- in words -------------------------------------------------------------------------

def describe_changes(old: m.Policy, new: m.Policy) -> list[str]:
    """The changes from ``old`` to ``new`` in words, one sentence a line (pure)."""
    out: list[str] = []
    if old.policy != new.policy:
        out.append(f"policy name {old.policy} -> {new.policy}")
    if old.timezone != new.timezone:
        out.append(f"timezone {old.timezone} -> {new.timezone}: time windows now read in {new.timezone}")
    if old.default != new.default:
        out.append(f"default {old.default} -> {new.default}")
    out += _named("source", old.sources, new.sources, _source_changes)
    out += _named("destination", old.destinations, new.destinations, _destination_changes)
    out += _rule_changes(old, new)
    return out


def _named(what: str, old: dict[str, Any], new: dict[str, Any],
           changes: Callable[[Any, Any], list[str]]) -> list[str]:
    out = [f"{what} {name} removed" for name in old if name not in new]
    out += [f"{what} {name} added ({_kind(new[name])})" for name in new if name not in old]
    for name in old:
        if name in new and old[name] != new[name]:
            out += [f"{what} {name}: {c}" for c in changes(old[name], new[name])]
    return out


def _kind(x: Any) -> str:
    return f"kind {x.kind}"


def _destination_changes(a: m.Destination, b: m.Destination) -> list[str]:
    out = []
    if a.kind != b.kind:
        out.append(f"kind {a.kind} -> {b.kind}")
    if a.description != b.description:
        out.append("description changed")
    return out


def _matcher_words(x: m.DeviceMatch) -> str:
    parts = []
    if x.region is not None:
        parts.append(f"region {x.region}")
    if x.industry is not None:
        parts.append(f"industry {','.join(x.industry)}")
    if x.type is not None:
        parts.append(f"type {','.join(x.type)}")
    if x.serial is not None:
        parts.append(f"serial {x.serial.from_}-{x.serial.to}")
    return " ".join(parts)


def _set_changes(field: str, old: Iterable[Any], new: Iterable[Any], added: str, removed: str) -> list[str]:
    old_l, new_l = list(old), list(new)
    gone = [str(v) for v in old_l if v not in new_l]
    came = [str(v) for v in new_l if v not in old_l]
    out = []
    if came:
        out.append(f"{field} + {', '.join(came)}: {added}")
    if gone:
        out.append(f"{field} - {', '.join(gone)}: {removed}")
    return out


def _codes_change(field: str, x: list[str] | None, y: list[str] | None) -> list[str]:
    if x == y:
        return []
    if x is None or y is None:
        return [f"{field} {_codes(x)} -> {_codes(y)}: {'narrower' if x is None else 'wider'}"]
    return _set_changes(field, x, y, "wider", "narrower")


def _codes(x: list[str] | None) -> str:
    return "any" if x is None else ",".join(x)


def _matcher_changes(x: m.DeviceMatch, y: m.DeviceMatch) -> list[str]:
    out = []
    if x.region != y.region:
        a, b = x.region or "", y.region or ""
        way = "narrower" if b.startswith(a) else "wider" if a.startswith(b) else "moved: different devices"
        out.append(f"region {a or 'any'} -> {b or 'any'}: {way}")
    out += _codes_change("industry", x.industry, y.industry)
    out += _codes_change("type", x.type, y.type)
    if x.serial != y.serial:
        lo_a, hi_a = (x.serial.from_, x.serial.to) if x.serial else ("0000000", "9999999")
        lo_b, hi_b = (y.serial.from_, y.serial.to) if y.serial else ("0000000", "9999999")
        way = ("narrower" if lo_a <= lo_b and hi_b <= hi_a else
               "wider" if lo_b <= lo_a and hi_a <= hi_b else "moved: different devices")
        out.append(f"serial {lo_a}-{hi_a} -> {lo_b}-{hi_b}: {way}")
    return out


def _source_changes(a: Any, b: Any) -> list[str]:
    if a.kind != b.kind:
        return [f"kind {a.kind} -> {b.kind}: matches different objects"]
    out: list[str] = []
    if a.kind == "devices":
        if len(a.match) == len(b.match):
            for i, (x, y) in enumerate(zip(a.match, b.match)):
                out += [f"matcher[{i}] {w}" for w in _matcher_changes(x, y)]
        else:
            out += _set_changes("matcher", [_matcher_words(x) for x in a.match],
                                [_matcher_words(x) for x in b.match], "wider", "narrower")
        out += _set_changes("ids", a.ids, b.ids, "wider", "narrower")
        if a.addresses and not b.addresses:
            out.append(f"addresses {', '.join(a.addresses)} removed: devices accepted from any address: wider")
        elif b.addresses and not a.addresses:
            out.append(f"addresses {', '.join(b.addresses)} added: devices must come from them: narrower")
        else:
            out += _set_changes("addresses", a.addresses, b.addresses, "wider", "narrower")
    elif a.kind == "addresses":
        out += _set_changes("addresses", a.addresses, b.addresses, "wider", "narrower")
    if getattr(a, "ports", None) != getattr(b, "ports", None):
        out += _set_changes("ports", a.ports, b.ports, "wider (kernel rules)", "narrower (kernel rules)")
        if not b.ports and a.ports:
            out.append("ports now unrestricted: wider (kernel rules)")
    if getattr(a, "protocol", None) != getattr(b, "protocol", None):
        out.append(f"protocol {a.protocol} -> {b.protocol} (kernel rules)")
    if a.description != b.description:
        out.append("description changed")
    return out


# Fields where the new value being True lets more through.
_LOOSER_WHEN_TRUE = {"audio", "keep_sei", "allow_empty"}
_MODE_ORDER = {"transcode": 0, "remux": 1}   # transcode rebuilds the stream: stricter


def _field_changes(prefix: str, a: Any, b: Any) -> list[str]:
    out = []
    for name in type(a).model_fields:
        x, y = getattr(a, name), getattr(b, name)
        if x == y or name == "description":
            continue
        key = f"{prefix}{name}"
        if isinstance(x, bool) and isinstance(y, bool):
            looser = y if name in _LOOSER_WHEN_TRUE else not y
            out.append(f"{key} {str(x).lower()} -> {str(y).lower()}: {LOOSER if looser else STRICTER}")
        elif isinstance(x, (int, float)) and isinstance(y, (int, float)):
            out.append(f"{key} {_number(x)} -> {_number(y)}: {STRICTER if y < x else LOOSER}")
        elif isinstance(x, list) and isinstance(y, list):
            out += _set_changes(key, x, y, LOOSER, STRICTER)
        elif name == "mode":
            out.append(f"{key} {x} -> {y}: {STRICTER if _MODE_ORDER[y] < _MODE_ORDER[x] else LOOSER}")
        else:
            out.append(f"{key} {x!r} -> {y!r}: changed")
    return out


def _number(x: float) -> str:
    """A limit as written: whole numbers in full (1048576, not 1.04858e+06), others as short as exact."""
    if isinstance(x, int) or float(x).is_integer():
        return str(int(x))
    return repr(float(x))


def _when_words(when: list[m.TimeWindow] | None) -> str:
    if when is None:
        return "always"
    return "; ".join(f"{','.join(w.days)} {w.from_}-{w.to}" for w in when)


def _rule_changes(old: m.Policy, new: m.Policy) -> list[str]:
    out: list[str] = []
    old_rules = {r.id: r for r in old.rules}
    new_rules = {r.id: r for r in new.rules}
    for r in old.rules:
        if r.id not in new_rules:
            out.append(f"rule {r.id} removed ({r.lane} from {r.from_} to {r.to}): what it allowed is now "
                       f"refused unless a later rule allows it")
    for i, r in enumerate(new.rules):
        if r.id not in old_rules:
            out.append(f"rule {r.id} added at position {i + 1} ({r.lane} from {r.from_} to {r.to})")
    common_old = [r.id for r in old.rules if r.id in new_rules]
    common_new = [r.id for r in new.rules if r.id in old_rules]
    if common_old != common_new:
        out.append(f"rule order changed: {', '.join(common_old)} -> {', '.join(common_new)}: "
                   f"the first rule that allows decides")
    for r in new.rules:
        a = old_rules.get(r.id)
        if a is None or a == r:
            continue
        words: list[str] = []
        if a.lane != r.lane:
            words.append(f"lane {a.lane} -> {r.lane}")
        if a.from_ != r.from_:
            words.append(f"from {a.from_} -> {r.from_}")
        if a.to != r.to:
            words.append(f"to {a.to} -> {r.to}")
        if a.when != r.when:
            before, after = week_minutes(a.when), week_minutes(r.when)
            direction = (STRICTER if after < before else LOOSER if after > before else "changed")
            words.append(f"when {_when_words(a.when)} -> {_when_words(r.when)}: {direction}")
        if a.rate != r.rate:
            if a.rate is None and r.rate is not None:
                words.append(f"rate {_number(r.rate.per_second)}/s burst {r.rate.burst} added: stricter")
            elif r.rate is None and a.rate is not None:
                words.append(f"rate {_number(a.rate.per_second)}/s burst {a.rate.burst} removed: looser")
            elif a.rate is not None and r.rate is not None:
                words += _field_changes("rate.", a.rate, r.rate)
        if a.lane == r.lane:
            words += _field_changes("", getattr(a, a.lane), getattr(r, r.lane))
        if a.description != r.description:
            words.append("description changed")
        out += [f"rule {r.id}: {w}" for w in words]
    return out


# --- in verdicts ------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Sample:
    object: ferry_pb2.CanonicalObject
    origin: str      # "test 'name' (file:line)" or "probe of rule x: ..."


@dataclass
class Tally:
    """How many samples ``compare_plans`` decided, and how many verdicts changed which way."""

    checked: int = 0
    tests: int = 0                # changed verdicts of the suites' test cases (the rest: probes)
    now_refused: int = 0
    now_allowed: int = 0
    mode_changed: int = 0         # allowed both times, transcoded one time and not the other

    @property
    def changed(self) -> int:
        return self.now_refused + self.now_allowed + self.mode_changed

    def summary(self, words: int) -> str:
        modes = f", {self.mode_changed} allowed both times but transcoded only once" if self.mode_changed else ""
        return (f"summary: {words} changes in words; {self.changed} verdicts changed ({self.tests} test cases, "
                f"{self.changed - self.tests} probes): {self.now_refused} allowed before and now refused, "
                f"{self.now_allowed} refused before and now allowed{modes}; {self.checked} samples decided")


def diff_report(old_dir: str | os.PathLike[str], new_dir: str | os.PathLike[str]) -> tuple[list[str], str]:
    """``diff_policies`` and its summary line."""
    old, new = load_plan(old_dir), load_plan(new_dir)
    samples = [Sample(c.object, f"test {c.name!r} ({c.where})") for c in load_suite(old_dir)]
    samples += [Sample(c.object, f"test {c.name!r} ({c.where})") for c in load_suite(new_dir)]
    words = describe_changes(old.policy, new.policy)
    tally = Tally()
    lines = words + compare_plans(old, new, samples, tally)
    return lines, tally.summary(len(words))


def compare_plans(old: Any, new: Any, samples: Iterable[Sample] = (), tally: Tally | None = None) -> list[str]:
    """Each verdict that differs between the plans, over ``samples`` and both plans' probes (pure);
    ``tally`` counts them."""
    out: list[str] = []
    seen: set[bytes] = set()
    more = requoted = 0
    tally = Tally() if tally is None else tally
    for s in itertools.chain(samples, probes(old.policy), probes(new.policy)):
        a, b = old.admit(s.object), new.admit(s.object)   # as the agents decide at ingest
        tally.checked += 1
        if (a.allowed, a.transcode) == (b.allowed, b.transcode):
            if a.rule != b.rule:
                requoted += 1   # still allowed / refused, another rule decides
            continue
        key = s.object.SerializeToString(deterministic=True)
        if key in seen:
            continue
        seen.add(key)
        tally.tests += s.origin.startswith("test ")
        if a.allowed and b.allowed:
            tally.mode_changed += 1
        elif b.allowed:
            tally.now_allowed += 1
        else:
            tally.now_refused += 1
        if len(out) >= limits.POLICY_DIFF_LINES_MAX:
            more += 1
            continue
        out.append(f"{describe_object(s.object, new.policy.timezone)}: {_verdict(a)} before, now "
                   f"{_verdict(b)} [{s.origin}]")
    if more:
        out.append(f"... and {more} more changed verdicts")
    if requoted:
        out.append(f"{requoted} samples keep their verdict but are now decided by another rule")
    return out


def _verdict(d: Any) -> str:
    if d.allowed:
        return f"transcoded by {d.rule}" if d.transcode else f"allowed by {d.rule}"
    return f"refused by {d.rule}: {d.reason}"


def describe_object(obj: ferry_pb2.CanonicalObject, timezone: str = "UTC") -> str:
    """``video: device 4309... from 10.20.1.1 -> police-vms (h264 1920x1080 ..., Thu 10:00)``."""
    src = obj.source
    if src.device_id:
        who = f"device {src.device_id!r}" if not src.device_id.isascii() or src.device_id.strip() != src.device_id \
            else f"device {src.device_id}"
        if src.address:
            who += f" from {src.address}"
    elif src.address:
        who = f"address {src.address}"
    else:
        who = f"source {src.name or '(none)'}"
    what = _body_words(obj)
    when = ""
    if obj.created:
        try:
            when = datetime.fromtimestamp(obj.created, ZoneInfo(timezone)).strftime("%a %H:%M")
        except (ValueError, OverflowError, OSError):
            when = f"t={_number(obj.created)}"
    detail = ", ".join(p for p in (what, when) if p)
    return f"{obj.lane}: {who} -> {obj.destination}" + (f" ({detail})" if detail else "")


def _body_words(obj: ferry_pb2.CanonicalObject) -> str:
    body = obj.WhichOneof("body")
    if body == "access_unit":
        a = obj.access_unit
        return f"{a.codec} {a.width}x{a.height} {a.frame_rate:g} fps {a.bitrate_kbps} kbps"
    if body == "audio":
        return f"audio {obj.audio.codec}"
    if body == "view_object":
        v = obj.view_object
        pics = ", ".join(f"{p.media_type} {len(p.content)} B" for p in v.pictures[:3])
        more = "..." if len(v.pictures) > 3 else ""
        return f"{v.object_type}, {len(v.pictures)} pictures" + (f" ({pics}{more})" if pics else "")
    if body == "signaling":
        s = obj.signaling
        return f"{s.root} {s.cmd_type!r} {len(s.xml.encode())} B"
    if body == "reverse":
        return f"request {obj.reverse.request}"
    if body == "file":
        f = obj.file
        return f"{f.name!r} {f.media_type} {max(f.size, len(f.content))} B"
    return "no body"


# --- probes -----------------------------------------------------------------------------

def probes(policy: m.Policy) -> Iterator[Sample]:
    """Objects at and just past every rule's edges (pure)."""
    tz = ZoneInfo(policy.timezone)
    for rule in policy.rules:
        source = policy.sources.get(rule.from_)
        if source is None:
            continue
        who = list(_identities(rule.from_, source))
        bodies = list(_bodies(rule))
        times = list(_times(rule, tz))
        base_who, base_body, base_time = who[0], bodies[0], times[0]
        for ident, label in who:
            yield _sample(rule, ident, base_body, base_time, label)
        for body in bodies[1:]:
            yield _sample(rule, base_who[0], body, base_time, body[1])
        for t in times[1:]:
            yield _sample(rule, base_who[0], base_body, t, t[1])


def _sample(rule: Any, ident: dict[str, Any], body: tuple[dict[str, Any], str], when: tuple[float, str],
            label: str) -> Sample:
    obj = ferry_pb2.CanonicalObject(lane=rule.lane, destination=rule.to, created=when[0],
                                    source=ferry_pb2.Source(**ident), **body[0])
    return Sample(obj, f"probe of rule {rule.id}: {label}")


def _hosts(addresses: list[str]) -> Iterator[tuple[str, str]]:
    """A host inside the first networks, and one just outside the first."""
    for a in addresses[:3]:
        net = ipaddress.ip_network(a)
        host = net.network_address + 1 if net.num_addresses > 2 else net.network_address
        yield str(host), f"address {host} in {a}"
    if addresses:
        net = ipaddress.ip_network(addresses[0])
        try:
            outside = net.broadcast_address + 1
        except ipaddress.AddressValueError:
            outside = net.network_address - 1
        yield str(outside), f"address {outside} just outside {net}"


def _look_alikes(device_id: str) -> Iterator[tuple[str, str]]:
    yield device_id[:-1], "look-alike: 19 digits"
    yield device_id + "0", "look-alike: 21 digits"
    yield device_id.translate({ord(c): ord(c) + 0xFEE0 for c in "0123456789"}), "look-alike: full-width digits"
    yield device_id + " ", "look-alike: trailing space"


def _neighbour(code: str, taken: Iterable[str]) -> str | None:
    """A code of the same width that is not in ``taken``."""
    taken = set(taken)
    n = int(code)
    for k in range(1, 10 ** len(code)):
        c = str((n + k) % 10 ** len(code)).zfill(len(code))
        if c not in taken:
            return c
    return None


def _matcher_ids(x: m.DeviceMatch) -> Iterator[tuple[str, str]]:
    region = (x.region or "").ljust(8, "0")
    industry = x.industry[0] if x.industry else "00"
    kind = x.type[0] if x.type else "132"
    lo = x.serial.from_ if x.serial else "0000000"
    hi = x.serial.to if x.serial else "9999999"
    words = _matcher_words(x)
    yield region + industry + kind + lo, f"first device of matcher {words}"
    if hi != lo:
        yield region + industry + kind + hi, f"last device of matcher {words}"
    if x.serial is not None:
        if hi != "9999999":
            yield region + industry + kind + str(int(hi) + 1).zfill(7), f"serial just above matcher {words}"
        if lo != "0000000":
            yield region + industry + kind + str(int(lo) - 1).zfill(7), f"serial just below matcher {words}"
    if x.region:
        other = _neighbour(x.region, [x.region])
        yield (other or "").ljust(8, "0") + industry + kind + lo, f"region {other} beside matcher {words}"
    if x.type:
        other = _neighbour(x.type[0], x.type)
        if other is not None:
            yield region + industry + other + lo, f"type {other} beside matcher {words}"
    if x.industry:
        other = _neighbour(x.industry[0], x.industry)
        if other is not None:
            yield region + other + kind + lo, f"industry {other} beside matcher {words}"


def _identities(name: str, source: Any) -> Iterator[tuple[dict[str, Any], str]]:
    if source.kind == "spool":
        yield {"name": name}, f"spool {name}"
        return
    if source.kind == "addresses":
        for host, label in _hosts(source.addresses):
            yield {"address": host}, label
        return
    hosts = list(_hosts(source.addresses)) if source.addresses else [("192.0.2.10", "any address")]
    address = hosts[0][0]
    ids = [(i, f"listed device {i}") for i in source.ids[:3]]
    for x in source.match[:4]:
        ids += list(_matcher_ids(x))
    for device_id, label in ids:
        yield {"device_id": device_id, "address": address}, label
    first = ids[0][0]
    for device_id, label in _look_alikes(first):
        yield {"device_id": device_id, "address": address}, label
    for host, label in hosts[1:]:
        yield {"device_id": first, "address": host}, label


def _times(rule: Any, tz: ZoneInfo) -> Iterator[tuple[float, str]]:
    def at(day: int, minute: int) -> float:
        local = _BASE_DAY + timedelta(days=day % 7, minutes=minute)
        return local.replace(tzinfo=tz).timestamp()

    if rule.when is None:
        yield _BASE_TIME.replace(tzinfo=tz).timestamp(), "no time window"
        return
    for w in rule.when[:4]:
        day = m.DAYS.index(w.days[0])
        start = int(w.from_[:2]) * 60 + int(w.from_[3:])
        end = int(w.to[:2]) * 60 + int(w.to[3:])
        if end <= start:
            end += 24 * 60
        yield at(day, start), f"start of window {w.days[0]} {w.from_}"
        yield at(day, start - 1), f"a minute before window {w.days[0]} {w.from_}"
        yield at(day, end - 1), f"last minute of window {w.days[0]} {w.from_}-{w.to}"
        yield at(day, end), f"end of window {w.days[0]} {w.from_}-{w.to}"


def _bodies(rule: Any) -> Iterator[tuple[dict[str, Any], str]]:
    """(body keyword arguments, label): the first is at every limit."""
    s = getattr(rule, rule.lane)
    if rule.lane == "video":
        def au(codec: str = s.codecs[0], w: int = s.max_width, h: int = s.max_height,
               fps: float = s.max_frame_rate, kbps: int = s.max_bitrate_kbps) -> dict[str, Any]:
            return {"access_unit": ferry_pb2.AccessUnit(codec=codec, width=w, height=h, frame_rate=fps,
                                                        bitrate_kbps=kbps, keyframe=True)}
        yield au(), "at every video limit"
        yield au(w=s.max_width + 1), f"width {s.max_width + 1}: max_width + 1"
        yield au(h=s.max_height + 1), f"height {s.max_height + 1}: max_height + 1"
        yield au(fps=s.max_frame_rate + 1), f"frame rate {s.max_frame_rate + 1:g}: max_frame_rate + 1"
        yield au(kbps=s.max_bitrate_kbps + 1), f"bitrate {s.max_bitrate_kbps + 1}: max_bitrate_kbps + 1"
        yield au(w=3840, h=2160), "4K video"
        for c in ("h264", "h265"):
            yield au(codec=c), f"codec {c}"
        yield {"audio": ferry_pb2.AudioFrame(codec="g711a", payload=b"\xd5" * 160)}, "G.711 audio"
    elif rule.lane == "viid":
        def vo(t: str = s.object_types[0], n: int = s.max_pictures, size: int = min(s.max_picture_bytes, 1024),
               media: str = s.picture_types[0]) -> dict[str, Any]:
            pics = [ferry_pb2.Picture(media_type=media, width=640, height=480, content=b"\xff" * size)]
            pics += [ferry_pb2.Picture(media_type=media, width=64, height=64, content=b"\xff" * 16)
                     for _ in range(n - 1)]
            return {"view_object": ferry_pb2.ViewObject(object_type=t, viid_id="1" * 48, json="{}",
                                                        pictures=pics[:n])}
        yield vo(), "within every viid limit"
        yield vo(size=s.max_picture_bytes), f"picture of {s.max_picture_bytes} B: max_picture_bytes"
        yield vo(n=s.max_pictures + 1), f"{s.max_pictures + 1} pictures: max_pictures + 1"
        yield vo(size=s.max_picture_bytes + 1), f"picture of {s.max_picture_bytes + 1} B: max_picture_bytes + 1"
        for t in m.VIEW_OBJECT_TYPES:
            yield vo(t=t), f"object type {t}"
        for p in m.PICTURE_TYPES:
            yield vo(media=p), f"picture type {p}"
    elif rule.lane == "signaling":
        def sig(root: str = s.roots[0], cmd: str = s.cmd_types[0], size: int = 200) -> dict[str, Any]:
            return {"signaling": ferry_pb2.SignalingMessage(root=root, cmd_type=cmd, sn=1, xml="x" * size)}
        yield sig(), "within every signaling limit"
        yield sig(size=s.max_body_bytes), f"body of {s.max_body_bytes} B: max_body_bytes"
        yield sig(size=s.max_body_bytes + 1), f"body of {s.max_body_bytes + 1} B: max_body_bytes + 1"
        for r in ("Query", "Notify", "Response", "Control"):
            yield sig(root=r), f"root {r}"
        cmds = list(s.cmd_types) + ["Catalog", "Keepalive", "Alarm", "DeviceControl", "DeviceInfo", "DeviceStatus"]
        for c in dict.fromkeys(cmds):
            yield sig(cmd=c), f"cmd_type {c}"
        c0 = s.cmd_types[0]
        yield sig(cmd=c0.lower()), f"cmd_type {c0.lower()!r}: case look-alike"
        yield sig(cmd=c0 + " "), f"cmd_type {c0 + ' '!r}: trailing space"
    elif rule.lane == "reverse":
        for r in dict.fromkeys(list(s.requests) + ["start_stream", "stop_stream", "ptz", "catalog_query"]):
            yield {"reverse": ferry_pb2.ReverseRequest(request=r, device_id="")}, f"request {r}"
    elif rule.lane == "files":
        names = {"application/pdf": "report.pdf", "image/png": "photo.png", "image/jpeg": "photo.jpg",
                 "text/plain": "notes.txt"}

        def f(media: str = s.media_types[0], size: int = s.max_size) -> dict[str, Any]:
            name = names.get(media, "file.bin")
            return {"file": ferry_pb2.FileObject(name=name, size=size, media_type=media)}
        yield f(), "at max_size"
        yield f(size=s.max_size + 1), f"size {s.max_size + 1}: max_size + 1"
        yield f(size=0), "an empty file"
        for media in dict.fromkeys(list(s.media_types) + list(names)):
            yield f(media=media, size=min(s.max_size, 1000)), f"media type {media}"
