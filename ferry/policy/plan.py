"""The compiled plan: an immutable table that answers decide(object).

    plan = compile_policy(policy, hash)
    plan.decide(obj) -> Decision(allowed, rule, reason)

What a Plan exposes (for lint, diff, kernel rules, bundles):

- ``plan.name``, ``plan.hash`` (32-byte SM3 of the bundle), ``plan.timezone``
  (IANA name), ``plan.policy`` (the validated ``models.Policy``);
- ``plan.rules``: tuple of ``CompiledRule`` in file order, each with ``id``,
  ``lane``, ``source`` and ``destination`` (names), ``limits`` (the lane's
  check: ``FilesCheck`` / ``VideoCheck`` / ``ViidCheck`` / ``SignalingCheck`` /
  ``ReverseCheck``, whose fields carry the YAML names, e.g. ``max_width``; also
  reachable as ``rule.files``, ``rule.video``, ... which are None for other
  lanes), ``windows`` (tuple of ``timewindow.Window``; empty = always),
  ``rate`` (``RateSpec`` or None), ``index`` (position in the file),
  ``description``;
- ``plan.sources``: name -> ``CompiledSource`` with ``kind`` ("spool",
  "devices", "addresses"), ``matchers`` (tuple of ``device_id.DeviceMatcher``),
  ``ids`` (frozenset of 20-digit str), ``networks`` (tuple of
  ``ipaddress.IPv4Network``/``IPv6Network``), ``ports`` (tuple of int),
  ``protocol`` ("udp" | "tcp" | "any");
- ``plan.destinations``: name -> ``CompiledDestination`` (``kind``);
- ``plan.rule(id)``, ``plan.device_sources(device_id)`` (names of the
  sources whose ids/matchers hold for it), ``plan.address_sources(address)``.

decide() reads only the object and the plan (never a clock: time windows use
``obj.created``), so the outer and inner agents reach the same verdict. It
looks candidate rules up by (lane, destination), then by the source names the
object's device ID / address / spool name resolve to (memoized, bounded), and
tries them in file order: the first rule that allows wins; if none does, the
first candidate's failed check is quoted; with no candidate, ``default-deny``.
Rate limits live apart, in ``ferry.policy.ratelimit``.
"""

from __future__ import annotations

import gc
import ipaddress
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from types import MappingProxyType
from typing import Any

from ferry.codecs import file_name as files_lane
from ferry.limits import POLICY_MEMO_MAX
from ferry.pb import ferry_pb2
from ferry.policy import models
from ferry.policy.device_id import DeviceIndex, DeviceMatcher
from ferry.policy.timewindow import DAYS, Clock, Window, in_windows
from ferry.reasons import Reason

DEFAULT_DENY = "default-deny"
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    rule: str       # the rule that allowed or refused, or "default-deny"
    reason: str
    code: Reason | None = None     # why it refused (ferry.reasons); None when allowed
    transcode: bool = False        # allowed to be transcoded to the rule's limits (Plan.admit)


# --- lane checks: refuse(kind, body) -> reason or None ---------------------------------

def _list(values: tuple[Any, ...]) -> str:
    return ", ".join(str(v) for v in values)


# FilesCheck.refuse's reason for an empty file: decide() gives it the code EMPTY_FILE.
EMPTY_FILE = "empty file (the rule does not set allow_empty)"


@dataclass(frozen=True, slots=True)
class FilesCheck:
    max_size: int
    media_types: tuple[str, ...]
    name_pattern: str
    name_re: re.Pattern[str]
    allow_empty: bool = False

    @classmethod
    def compile(cls, spec: models.FilesLimits) -> FilesCheck:
        return cls(spec.max_size, tuple(spec.media_types), spec.name_pattern, _name_re(spec.name_pattern),
                   spec.allow_empty)

    def refuse(self, kind: str | None, f: Any) -> str | None:
        """Why this rule does not let the body through, or None."""
        if kind != "file":
            return "files lane object has no file body"
        size = max(f.size, len(f.content))
        if size == 0 and not self.allow_empty:
            return EMPTY_FILE
        if size > self.max_size:
            return f"size {size} exceeds max_size {self.max_size}"
        if f.media_type not in self.media_types:
            return f"media type {f.media_type or '(none)'} not allowed (allowed: {_list(self.media_types)})"
        reason = files_lane.check_file_name(f.name)
        if reason is not None:
            return reason
        if self.name_re.fullmatch(f.name) is None:
            return f"name {f.name!r} does not match name_pattern"
        return None


@lru_cache(maxsize=4096)
def _name_re(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


AUDIO_CODECS = ("g711a", "g711u")


@dataclass(frozen=True, slots=True)
class VideoCheck:
    codecs: frozenset[str]
    max_width: int
    max_height: int
    max_frame_rate: float
    max_bitrate_kbps: int
    audio: bool
    keep_sei: bool
    mode: str

    @classmethod
    def compile(cls, spec: models.VideoLimits) -> VideoCheck:
        return cls(frozenset(spec.codecs), spec.max_width, spec.max_height, spec.max_frame_rate,
                   spec.max_bitrate_kbps, spec.audio, spec.keep_sei, spec.mode)

    def fast(self) -> Callable[[Any], bool]:
        """A predicate on the whole object, True only where refuse() is None for
        an access unit (the hot path; refuse() names the failed check)."""
        codecs, mw, mh, mfr, mb = (self.codecs, self.max_width, self.max_height,
                                   self.max_frame_rate, self.max_bitrate_kbps)

        def passes(obj: Any) -> bool:
            au = obj.access_unit     # an unset body reads as empty: codec "" is never allowed
            return (au.codec in codecs and 0 < au.width <= mw and 0 < au.height <= mh
                    and au.frame_rate <= mfr and au.bitrate_kbps <= mb)
        return passes

    def refuse(self, kind: str | None, au: Any) -> str | None:
        if kind != "access_unit":
            if kind == "audio":
                if not self.audio:
                    return "audio not allowed (audio: false)"
                if au.codec not in AUDIO_CODECS:
                    return f"audio codec {au.codec!r} not allowed (allowed: {_list(AUDIO_CODECS)})"
                return None
            return "video lane object has no access_unit or audio body"
        if au.codec not in self.codecs:
            return f"codec {au.codec!r} not allowed (allowed: {_list(tuple(sorted(self.codecs)))})"
        w, h = au.width, au.height
        if w > self.max_width:
            return f"width {w} exceeds max_width {self.max_width}"
        if h > self.max_height:
            return f"height {h} exceeds max_height {self.max_height}"
        if not w or not h:
            return "picture size unknown (no active SPS)"
        fr = au.frame_rate
        if not fr <= self.max_frame_rate:   # NaN refuses too
            return f"frame_rate {fr:g} exceeds max_frame_rate {self.max_frame_rate:g}"
        if au.bitrate_kbps > self.max_bitrate_kbps:
            return f"bitrate_kbps {au.bitrate_kbps} exceeds max_bitrate_kbps {self.max_bitrate_kbps}"
        return None


@dataclass(frozen=True, slots=True)
class ViidCheck:
    object_types: frozenset[str]
    max_pictures: int
    max_picture_bytes: int
    picture_types: frozenset[str]

    @classmethod
    def compile(cls, spec: models.ViidLimits) -> ViidCheck:
        return cls(frozenset(spec.object_types), spec.max_pictures, spec.max_picture_bytes,
                   frozenset(spec.picture_types))

    def refuse(self, kind: str | None, v: Any) -> str | None:
        if kind != "view_object":
            return "viid lane object has no view_object body"
        if v.object_type not in self.object_types:
            return (f"object type {v.object_type!r} not allowed "
                    f"(allowed: {_list(tuple(sorted(self.object_types)))})")
        pictures = v.pictures
        if len(pictures) > self.max_pictures:
            return f"{len(pictures)} pictures exceed max_pictures {self.max_pictures}"
        for i, p in enumerate(pictures):
            if p.media_type not in self.picture_types:
                return (f"picture {i}: type {p.media_type or '(none)'!s} not allowed "
                        f"(allowed: {_list(tuple(sorted(self.picture_types)))})")
            if len(p.content) > self.max_picture_bytes:
                return f"picture {i}: {len(p.content)} bytes exceed max_picture_bytes {self.max_picture_bytes}"
        return None


@dataclass(frozen=True, slots=True)
class SignalingCheck:
    roots: frozenset[str]
    cmd_types: frozenset[str]
    max_body_bytes: int

    @classmethod
    def compile(cls, spec: models.SignalingLimits) -> SignalingCheck:
        return cls(frozenset(spec.roots), frozenset(spec.cmd_types), spec.max_body_bytes)

    def refuse(self, kind: str | None, s: Any) -> str | None:
        if kind != "signaling":
            return "signaling lane object has no signaling body"
        if s.root not in self.roots:
            return f"root {s.root!r} not allowed (allowed: {_list(tuple(sorted(self.roots)))})"
        if s.cmd_type not in self.cmd_types:
            return f"cmd_type {s.cmd_type!r} not allowed (allowed: {_list(tuple(sorted(self.cmd_types)))})"
        size = len(s.xml.encode("utf-8", "surrogatepass"))
        if size > self.max_body_bytes:
            return f"body {size} bytes exceeds max_body_bytes {self.max_body_bytes}"
        return None


@dataclass(frozen=True, slots=True)
class ReverseCheck:
    requests: frozenset[str]

    @classmethod
    def compile(cls, spec: models.ReverseLimits) -> ReverseCheck:
        return cls(frozenset(spec.requests))

    def refuse(self, kind: str | None, r: Any) -> str | None:
        if kind != "reverse":
            return "reverse lane object has no reverse body"
        if r.request not in self.requests:
            return f"request {r.request!r} not allowed (allowed: {_list(tuple(sorted(self.requests)))})"
        return None


LaneCheck = FilesCheck | VideoCheck | ViidCheck | SignalingCheck | ReverseCheck
# lane -> its check's compile(limits section) (each takes its own lane's section)
_CHECKS: dict[str, Callable[[Any], Any]] = {
    "files": FilesCheck.compile, "video": VideoCheck.compile, "viid": ViidCheck.compile,
    "signaling": SignalingCheck.compile, "reverse": ReverseCheck.compile}


# --- compiled rules, sources, destinations -------------------------------------------

@dataclass(frozen=True, slots=True)
class RateSpec:
    per_second: float
    burst: int

    def describe(self) -> str:
        return f"{self.per_second:g}/s (burst {self.burst})"


@dataclass(frozen=True, slots=True)
class CompiledRule:
    id: str
    lane: str
    source: str
    destination: str
    limits: LaneCheck
    windows: tuple[Window, ...] = ()
    rate: RateSpec | None = None
    index: int = 0
    description: str = ""
    allow: Decision = field(default=None, compare=False, repr=False)  # type: ignore[assignment]
    passes: Callable[[Any], bool] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.allow is None:
            object.__setattr__(self, "allow", Decision(True, self.id, f"allowed by {self.id}"))
        if self.passes is None and hasattr(self.limits, "fast"):
            object.__setattr__(self, "passes", self.limits.fast())

    def _section(self, lane: str) -> Any:
        return self.limits if self.lane == lane else None

    files = property(lambda self: self._section("files"))
    video = property(lambda self: self._section("video"))
    viid = property(lambda self: self._section("viid"))
    signaling = property(lambda self: self._section("signaling"))
    reverse = property(lambda self: self._section("reverse"))


@dataclass(frozen=True, slots=True)
class CompiledSource:
    name: str
    kind: str                             # "spool" | "devices" | "addresses"
    matchers: tuple[DeviceMatcher, ...] = ()
    ids: frozenset[str] = frozenset()
    networks: tuple[IPNetwork, ...] = ()
    ports: tuple[int, ...] = ()
    protocol: str = "any"                 # "udp" | "tcp" | "any"
    description: str = ""


@dataclass(frozen=True, slots=True)
class CompiledDestination:
    name: str
    kind: str
    description: str = ""


@contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection inside (restored after, unless it was off already).

    Parsing, compiling and linting a big policy build a million small objects, none of them
    in a cycle; each full collection on the way walks them all again (about a fifth of the time)."""
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_on:
            gc.enable()


@lru_cache(maxsize=1 << 14)
def parse_network(text: str) -> IPNetwork:
    """``ipaddress.ip_network(text, strict=True)``, remembered (compile and lint each need
    every network of a policy; a network is immutable)."""
    return ipaddress.ip_network(text, strict=True)


_PLAIN = frozenset({str, int, float, bool, type(None)})
_MODEL_TYPES: dict[type, bool] = {}


def freeze(value: Any) -> Any:
    """A hashable stand-in for a policy model value, equal exactly where the values are
    equal (== on pydantic models compares class and fields; on lists, items in order)."""
    t = type(value)
    if t in _PLAIN:
        return value
    if t is list:
        return ("list", tuple([v if type(v) in _PLAIN else freeze(v) for v in value]))
    model = _MODEL_TYPES.get(t)
    if model is None:
        model = _MODEL_TYPES[t] = issubclass(t, models.Strict)
    if model:
        return (t, tuple([v if type(v) in _PLAIN else freeze(v) for v in value.__dict__.values()]))
    return value


def _compile_source(name: str, s: Any) -> CompiledSource:
    if s.kind == "spool":
        return CompiledSource(name, "spool", description=s.description)
    networks = tuple(parse_network(a) for a in s.addresses)
    if s.kind == "addresses":
        return CompiledSource(name, "addresses", networks=networks, ports=tuple(s.ports),
                              protocol=s.protocol, description=s.description)
    matchers = tuple(
        DeviceMatcher(
            m.region or "",
            frozenset(m.industry or ()),
            frozenset(m.type or ()),
            (m.serial.from_, m.serial.to) if m.serial is not None else None,
        )
        for m in s.match
    )
    return CompiledSource(name, "devices", matchers, frozenset(s.ids), networks, tuple(s.ports),
                          s.protocol, s.description)


# --- address resolution ----------------------------------------------------------------

def parse_address(text: object) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """A peer address as the policy sees it: strict, no scope id; IPv4-mapped
    IPv6 (what a dual-stack socket reports for an IPv4 peer) becomes IPv4."""
    if type(text) is not str or not text or "%" in text:
        return None
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


class AddressIndex:
    """Address string -> names of the sources whose networks contain it.

    Networks are bucketed by (version, prefix length), so a lookup is one dict
    probe per distinct prefix length; results are memoized (bounded).
    """

    __slots__ = ("_buckets", "_memo", "_interned")

    def __init__(self, sources: Mapping[str, CompiledSource]) -> None:
        buckets: dict[tuple[int, int], dict[int, set[str]]] = {}
        for s in sources.values():
            for net in s.networks:
                b = buckets.setdefault((net.version, net.prefixlen), {})
                b.setdefault(int(net.network_address), set()).add(s.name)
        self._buckets = tuple(
            (version, (~0 << ((32 if version == 4 else 128) - plen)), {k: frozenset(v) for k, v in b.items()})
            for (version, plen), b in sorted(buckets.items())
        )
        self._memo: dict[str, frozenset[str]] = {}
        self._interned: dict[frozenset[str], frozenset[str]] = {}

    def sources_for(self, address: str) -> frozenset[str]:
        hit = self._memo.get(address)
        if hit is not None:
            return hit
        ip = parse_address(address)
        names: set[str] = set()
        if ip is not None:
            value = int(ip)
            for version, mask, bucket in self._buckets:
                if version == ip.version:
                    names.update(bucket.get(value & mask, ()))
        found = frozenset(names)
        if len(self._memo) >= POLICY_MEMO_MAX:
            self._memo.clear()
            self._interned.clear()
        found = self._interned.setdefault(found, found)
        self._memo[address] = found
        return found


# --- per (lane, destination) tables ----------------------------------------------------

class _Table:
    """The rules of one (lane, destination), looked up by matching source names."""

    __slots__ = ("by_source", "devices_only", "device_sources", "pinned", "address_sources",
                 "spool_sources", "by_device", "fast", "_memo")

    def __init__(self, rules: list[CompiledRule], sources: Mapping[str, CompiledSource]) -> None:
        by_source: dict[str, list[CompiledRule]] = {}
        for r in rules:
            by_source.setdefault(r.source, []).append(r)
        self.by_source = {k: tuple(v) for k, v in by_source.items()}
        kinds = {n: sources[n].kind for n in self.by_source}
        self.device_sources = frozenset(n for n, k in kinds.items() if k == "devices")
        self.pinned = frozenset(n for n in self.device_sources if sources[n].networks)
        self.address_sources = frozenset(n for n, k in kinds.items() if k == "addresses")
        self.spool_sources = frozenset(n for n, k in kinds.items() if k == "spool")
        self.devices_only = not (self.pinned or self.address_sources or self.spool_sources)
        self._memo: dict[frozenset[str], tuple[CompiledRule, ...]] = {}
        # device ID -> candidate rules, for tables whose sources are all plain device sources
        self.by_device: dict[str, tuple[CompiledRule, ...]] = {}
        # device ID -> (passes, allow) when its only candidate is one always-on rule
        self.fast: dict[str, tuple[Callable[[Any], bool], Decision]] = {}

    def device_rules(self, device_id: str, devices: DeviceIndex) -> tuple[CompiledRule, ...]:
        rules = self.rules_for(devices.sources_for(device_id))
        if type(device_id) is str:
            if len(self.by_device) >= POLICY_MEMO_MAX:
                self.by_device.clear()
                self.fast.clear()
            self.by_device[device_id] = rules
            if len(rules) == 1 and not rules[0].windows and rules[0].passes is not None:
                self.fast[device_id] = (rules[0].passes, rules[0].allow)
        return rules

    def rules_for(self, names: frozenset[str]) -> tuple[CompiledRule, ...]:
        hit = self._memo.get(names)
        if hit is not None:
            return hit
        found: list[CompiledRule] = []
        for n in names:
            found.extend(self.by_source.get(n, ()))
        found.sort(key=lambda r: r.index)
        rules = tuple(found)
        if len(self._memo) >= POLICY_MEMO_MAX:
            self._memo.clear()
        self._memo[names] = rules
        return rules


# --- the plan ----------------------------------------------------------------------

def _short(value: str) -> str:
    text = repr(value)
    return text if len(text) <= 66 else text[:62] + "...'"



def describe_source(src: Any) -> str:
    """How a refusal names the object's source: spool name, device ID, address."""
    name, device_id, address = src.name, src.device_id, src.address
    parts = []
    if name:
        parts.append(_short(name))
    if device_id:
        parts.append(f"device {_short(device_id)}")
    if address:
        parts.append(f"address {_short(address)}")
    return " ".join(parts) or "(no source)"


@dataclass(frozen=True, slots=True, eq=False)
class Plan:
    hash: bytes
    name: str
    timezone: str
    rules: tuple[CompiledRule, ...]
    sources: Mapping[str, CompiledSource]
    destinations: Mapping[str, CompiledDestination]
    policy: models.Policy
    _tables: Mapping[tuple[str, str], _Table] = field(repr=False)
    _by_id: Mapping[str, CompiledRule] = field(repr=False)
    _devices: DeviceIndex = field(repr=False)
    _addresses: AddressIndex = field(repr=False)
    _clock: Clock = field(repr=False)
    # the same tables, by lane then destination (no tuple to build on the hot path)
    _lanes: Mapping[str, Mapping[str, _Table]] = field(default_factory=dict, repr=False)
    _denials: dict[tuple[str, ...], Decision] = field(default_factory=dict, repr=False)  # a cache

    def decide(self, obj: ferry_pb2.CanonicalObject) -> Decision:
        """Allow or refuse ``obj``: the first rule that allows it wins."""
        lane, destination = obj.lane, obj.destination
        by_destination = self._lanes.get(lane)
        table = by_destination.get(destination) if by_destination is not None else None
        if table is None:
            return self._default_deny(obj, lane, destination)
        if table.devices_only:
            device_id = obj.source.device_id
            fast = table.fast.get(device_id)
            if fast is not None and fast[0](obj):
                return fast[1]
            rules = table.by_device.get(device_id)
            if rules is None:
                rules = table.device_rules(device_id, self._devices)
        else:
            rules = table.rules_for(self._match(obj.source, table))
        if not rules:
            return self._default_deny(obj, lane, destination)
        if len(rules) == 1:      # the common case: one candidate rule, always on
            rule = rules[0]
            if not rule.windows and rule.passes is not None and rule.passes(obj):
                return rule.allow
        first: Decision | None = None
        local: Any = False
        kind: Any = False
        body: Any = None
        for rule in rules:
            if rule.windows:
                if local is False:
                    local = self._clock.local(obj.created)
                if not in_windows(rule.windows, local):
                    if first is None:
                        first = Decision(False, rule.id, self._outside(rule, obj.created, local),
                                         Reason.OUTSIDE_TIME_WINDOW)
                    continue
            passes = rule.passes
            if passes is not None and passes(obj):
                return rule.allow
            if kind is False:   # the slow path, which names the failed check
                kind = obj.WhichOneof("body")
                body = getattr(obj, kind) if kind is not None else None
            reason = rule.limits.refuse(kind, body)
            if reason is None:
                return rule.allow
            if first is None:
                first = Decision(False, rule.id, reason,
                                 Reason.EMPTY_FILE if reason is EMPTY_FILE else Reason.CONTENT_LIMIT)
        assert first is not None
        return first

    def admit(self, obj: ferry_pb2.CanonicalObject) -> Decision:
        """What happens to an object as its source sends it: the one decision the outer agent's
        video gate, ``ferry policy test`` and ``ferry policy diff`` share (issue 16).

        ``decide``, except for an access unit under a transcode-mode rule: in one of the rule's
        codecs it is transcoded to the rule's limits (``Decision.transcode``), also where it
        exceeds them (size, frame rate, bitrate: what the transcoder brings within). The
        transcoder's output is decided again with ``decide``, strictly, and so is everything
        the inner agent takes off the link: ``admit`` is never what lets bytes cross as they are."""
        d = self.decide(obj)
        if obj.WhichOneof("body") != "access_unit":
            return d
        rule = self._by_id.get(d.rule)
        video = rule.video if rule is not None else None
        if video is None or video.mode != "transcode" or obj.access_unit.codec not in video.codecs:
            return d
        if d.allowed:
            return Decision(True, d.rule, f"{d.reason}, transcoded to its limits", None, True)
        if d.code == Reason.CONTENT_LIMIT:   # over the limits, which the transcoder brings it within
            return Decision(True, d.rule, f"transcoded by {d.rule} to its limits ({d.reason})", None, True)
        return d

    def _match(self, src: Any, table: _Table) -> frozenset[str]:
        names: set[str] = set()
        if table.device_sources:
            found = self._devices.sources_for(src.device_id) & table.device_sources
            if found & table.pinned:
                near = self._addresses.sources_for(src.address)
                found = frozenset(n for n in found if n not in table.pinned or n in near)
            names.update(found)
        if table.address_sources:
            names.update(self._addresses.sources_for(src.address) & table.address_sources)
        if table.spool_sources and src.name in table.spool_sources:
            names.add(src.name)
        return frozenset(names)

    def _outside(self, rule: CompiledRule, created: float, local: Any) -> str:
        windows = "; ".join(w.describe() for w in rule.windows)
        if local is None:
            return f"created time {created!r} is not a valid time: outside the time window ({windows})"
        day, minute = local
        return (f"outside the time window ({windows}, {self.timezone}): "
                f"created {DAYS[day]} {minute // 60:02d}:{minute % 60:02d}")

    def _default_deny(self, obj: ferry_pb2.CanonicalObject, lane: str, destination: str) -> Decision:
        src = obj.source
        key = (lane, destination, src.name, src.device_id, src.address)
        memo = self._denials
        decision = memo.get(key)
        if decision is None:
            decision = Decision(
                False, DEFAULT_DENY,
                f"no rule for lane {_short(lane)} from {describe_source(src)} to {_short(destination)}",
                Reason.DEFAULT_DENY,
            )
            if len(memo) >= POLICY_MEMO_MAX:
                memo.clear()
            memo[key] = decision
        return decision

    def rule(self, rule_id: str) -> CompiledRule | None:
        """The compiled rule with this id, if any."""
        return self._by_id.get(rule_id)

    def device_sources(self, device_id: str) -> frozenset[str]:
        """Names of the device sources whose ids or matchers hold for ``device_id``."""
        return self._devices.sources_for(device_id)

    def address_sources(self, address: str) -> frozenset[str]:
        """Names of the sources whose networks contain ``address``."""
        return self._addresses.sources_for(address)


def compile_policy(policy: models.Policy, hash: bytes) -> Plan:
    """Compile a validated policy into its immutable plan."""
    with gc_paused():
        return _compile(policy, hash)


def _compile(policy: models.Policy, hash: bytes) -> Plan:
    sources = {name: _compile_source(name, s) for name, s in policy.sources.items()}
    destinations = {name: CompiledDestination(name, d.kind, d.description)
                    for name, d in policy.destinations.items()}
    # Rules with equal limits share one check object and one fast predicate: fewer
    # objects for decide() to touch (a 10,000-rule plan stays in cache).
    checks: dict[Any, tuple[Any, Any]] = {}

    def check_of(lane: str, spec: Any) -> tuple[Any, Any]:
        check = _CHECKS[lane](spec)
        if check not in checks:
            checks[check] = (check, check.fast() if hasattr(check, "fast") else None)
        return checks[check]

    rules = tuple(
        CompiledRule(
            r.id, r.lane, r.from_, r.to, check,
            tuple(Window.build(w.days, w.from_, w.to) for w in (r.when or ())),
            RateSpec(float(r.rate.per_second), r.rate.burst) if r.rate is not None else None,
            i, r.description, passes=passes,
        )
        for i, r in enumerate(policy.rules)
        for check, passes in (check_of(r.lane, getattr(r, r.lane)),)
    )
    grouped: dict[tuple[str, str], list[CompiledRule]] = {}
    for r in rules:
        grouped.setdefault((r.lane, r.destination), []).append(r)
    tables = {k: _Table(v, sources) for k, v in grouped.items()}
    devices = DeviceIndex(
        (s.name, s.ids, s.matchers) for s in sources.values() if s.kind == "devices"
    )
    return Plan(
        bytes(hash), policy.policy, policy.timezone, rules,
        MappingProxyType(sources), MappingProxyType(destinations), policy,
        MappingProxyType(tables), MappingProxyType({r.id: r for r in rules}),
        devices, AddressIndex(sources), Clock(policy.timezone),
        MappingProxyType({lane: MappingProxyType({d: t for (ln, d), t in tables.items() if ln == lane})
                          for lane in {ln for ln, _d in tables}}),
    )
