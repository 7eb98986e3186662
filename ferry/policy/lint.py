"""Lint a valid policy: rules that can never decide, overlaps, loose ends.

    for finding in lint(plan):       # Finding(level, rule, message)
        print(finding)

Errors (``check`` fails): duplicate rules, shadowed rules (an earlier rule
allows everything a later one does, so the later one never decides), rules
whose every time window is empty. Warnings: overlapping rules (different
sources that can match the same device or address, same lane and
destination: file order decides), empty windows beside others, destinations
no rule sends to, sources no rule uses, rules that allow every type from every source
(``broad_rule_findings``). Pure: works on ``plan.policy``.

Each finding names the first earlier rule that shadows or overlaps, as comparing every
pair in file order would; but a rule is compared only with the earlier rules its source
index (_SourceIndex) and cover lists offer, so a 21,000-rule policy lints in under a
second (issue 11 item 6; tests/policy/test_scale_lint.py keeps the pairwise lint as the
reference).
"""

from __future__ import annotations

import ipaddress
from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from ferry.codecs.media_type import MEDIA_TYPES
from ferry.policy import models as m
from ferry.policy.plan import freeze as _freeze, gc_paused, parse_network

ERROR, WARNING = "error", "warning"
LEVELS = (ERROR, WARNING)
DAY_MINUTES = 24 * 60
WEEK_MINUTES = 7 * DAY_MINUTES


@dataclass(frozen=True, slots=True)
class Finding:
    level: str      # "error" | "warning"
    rule: str       # the rule id the finding is about ("" for sources / destinations)
    message: str

    def __str__(self) -> str:
        subject = f"rule {self.rule}: " if self.rule else ""
        return f"{self.level}: {subject}{self.message}"


def lint(plan: Any) -> list[Finding]:
    """Findings for a compiled plan (errors first, then warnings, each in file order)."""
    return lint_policy(plan.policy)


def lint_policy(policy: m.Policy) -> list[Finding]:
    with gc_paused():
        return _Linter(policy).run()


class _Linter:
    """One lint run. Rules are compared only with the earlier rules of their (lane,
    destination) whose source can contain (shadowing) or meet (overlap) theirs, found
    through indexes of the sources' networks, device IDs and region codes, never with
    all of them: a 21,000-rule policy lints in about a second, not hours. What it finds
    is exactly what comparing every pair in file order finds (tests/policy/test_scale_lint.py
    holds the pairwise version as its reference). ``checks`` counts rule pairs and source
    pairs examined (the tests' measure of work)."""

    def __init__(self, policy: m.Policy) -> None:
        self.policy = policy
        self.rules = list(policy.rules)
        self.checks = 0
        self.sources = _SourceIndex(policy.sources)
        self.weeks = [_week_mask(r.when) for r in self.rules]
        self.groups: dict[tuple[str, str], list[int]] = {}
        for i, r in enumerate(self.rules):
            self.groups.setdefault((r.lane, r.to), []).append(i)

    def run(self) -> list[Finding]:
        policy, rules = self.policy, self.rules
        findings: list[Finding] = []
        dead: set[int] = set()
        # rules by (lane, destination, source[, name pattern]), in file order: where a coverer can be
        earlier: dict[tuple[str, ...], _CoverList] = {}
        for i, rule in enumerate(rules):
            window_findings = _window_findings(rule)
            findings += window_findings
            if any(f.level == ERROR for f in window_findings):
                dead.add(i)
                continue
            j = self._first_cover(i, earlier)
            if j is not None:
                first = rules[j]
                if _same(first, rule):
                    findings.append(Finding(ERROR, rule.id, f"duplicate of rule {first.id} "
                                            f"(same lane, source, destination, limits and windows)"
                                            + _rate_note(first, rule)))
                else:
                    why = _covers(policy, first, rule)
                    findings.append(Finding(ERROR, rule.id, f"shadowed by rule {first.id}: {why}, "
                                            f"so rule {rule.id} never decides"))
                dead.add(i)
        del earlier                      # what the overlaps need is built per group, below
        self.sources.forget_containers()
        overlaps: list[tuple[int, Finding]] = []
        for group in self.groups.values():
            overlaps += self._overlaps([i for i in group if i not in dead])
        findings += [f for _i, f in sorted(overlaps, key=lambda x: x[0])]
        used_sources = {r.from_ for r in rules}
        used_destinations = {r.to for r in rules}
        for name in policy.sources:
            if name not in used_sources:
                findings.append(Finding(WARNING, "", f"source {name} is not used by any rule"))
        for name in policy.destinations:
            if name not in used_destinations:
                findings.append(Finding(WARNING, "", f"destination {name} is unreachable: no rule sends to it"))
        findings += broad_rule_findings(policy)
        return sorted(findings, key=lambda f: LEVELS.index(f.level))

    # --- shadowing: the first earlier rule that allows all a rule allows ------------

    def _first_cover(self, i: int, earlier: dict[tuple[str, ...], _CoverList]) -> int | None:
        """The first earlier rule that covers rule i, from the rules filed under a cover key:
        (lane, destination, source, name pattern of a files rule, one of its types). A rule
        covers another only if its codecs / media types / object types / cmd types / requests
        hold all of the other's (_limits_within), so the other's first; a files rule only one
        with the same name pattern."""
        rule = self.rules[i]
        section = _section(rule)
        pattern = section.name_pattern if rule.lane == "files" else ""
        types = getattr(section, _TYPES[rule.lane])
        size = _size(rule)
        best: int | None = None
        for name in self.sources.containers(rule.from_, self):
            found = earlier.get((rule.lane, rule.to, name, pattern, types[0]))
            if found is None:
                continue
            # a coverer allows at least this rule's size: none before the first that big
            for k in range(bisect_left(found, (size,)), len(found)):
                _most, its_size, j = found[k]
                if best is not None and j >= best:
                    break
                self.checks += 1
                if its_size >= size and self._covers(j, i):
                    best = j
                    break
        for t in types:
            key = (rule.lane, rule.to, rule.from_, pattern, t)
            found = earlier.get(key)
            if found is None:
                earlier[key] = [(size, size, i)]
            else:
                found.append((max(size, found[-1][0]), size, i))
        return best

    def _covers(self, j: int, i: int) -> bool:
        """_covers(policy, rules[j], rules[i]) is not None, from what is known of both."""
        wi, wj = self.weeks[i], self.weeks[j]
        if wi & ~wj:
            return False
        a, b = self.rules[j], self.rules[i]
        return _limits_within(b.lane, _section(b), _section(a))

    # --- overlaps: the first earlier rule whose source meets this one's -------------

    def _overlaps(self, group: list[int]) -> list[tuple[int, Finding]]:
        """Overlap warnings of one (lane, destination)'s live rules, by rule index."""
        rules, sources = self.rules, self.sources
        keys: dict[int, Any] = {}        # rule -> (limits, windows), equal ones shared
        shared: dict[Any, Any] = {}
        for i in group:
            key = (_freeze(_section(rules[i])), _freeze(rules[i].when))
            keys[i] = shared.setdefault(key, key)
        by_source: dict[str, _FirstByKey] = {}
        broad = {"addresses": _FirstByKey(), "devices": _FirstByKey()}   # by the kind they meet
        out: list[tuple[int, Finding]] = []
        for i in group:
            rule = rules[i]
            src = self.policy.sources[rule.from_]
            key, week = keys[i], self.weeks[i]
            best: int | None = None
            if src.kind != "spool":
                if src.kind == "addresses" or not src.addresses:
                    # an unpinned devices source and any addresses source always meet
                    best = broad[src.kind].first(key, week, best, self)
                # the other sources of this group's earlier rules that may meet this one's, by
                # their first rule; the first that does meet (and has a rule that counts) decides
                order = sorted((by_source[n].firsts[0][0], n) for n in sources.meeting(rule.from_)
                               if n in by_source)
                for first, name in order:
                    if best is not None and first >= best:
                        break
                    if sources.meets(rule.from_, name, self):
                        best = by_source[name].first(key, week, best, self)
            if best is not None:
                earlier = rules[best]
                both = _sources_overlap(self.policy.sources[earlier.from_], src)
                assert both is not None
                f = Finding(
                    WARNING, rule.id,
                    f"overlaps rule {earlier.id} ({rule.lane} to {rule.to}): sources {earlier.from_} and "
                    f"{rule.from_} can both match {both}, with different limits; rule {earlier.id} "
                    f"comes first and decides for them",
                )
                out.append((i, f))
            by_source.setdefault(rule.from_, _FirstByKey()).add(i, key, week)
            if src.kind == "devices" and not src.addresses:
                broad["addresses"].add(i, key, week)
            elif src.kind == "addresses":
                broad["devices"].add(i, key, week)
        return out


# Rules filed under one cover key, in file order: (largest size so far, size, index); the
# first item never decreases, so a bisection finds the first rule as big as a size.
_CoverList = list[tuple[float, float, int]]


def _size(rule: Any) -> float:
    """One limit a rule's coverer must allow at least as much of (_limits_within)."""
    section = _section(rule)
    return float(getattr(section, _SIZES[rule.lane])) if rule.lane in _SIZES else 0.0


_SIZES = {"files": "max_size", "video": "max_bitrate_kbps", "viid": "max_picture_bytes",
          "signaling": "max_body_bytes"}
# the list a rule's section must hold all of, to cover another's (_limits_within)
_TYPES = {"files": "media_types", "video": "codecs", "viid": "object_types", "signaling": "cmd_types",
          "reverse": "requests"}


class _FirstByKey:
    """Rules of one kind, in file order, by (limits, windows): the first of each."""

    __slots__ = ("firsts", "seen")

    def __init__(self) -> None:
        self.firsts: list[tuple[int, Any, int]] = []   # (index, key, week mask), by index
        self.seen: set[Any] | None = None             # their keys, once there are a few

    def add(self, i: int, key: Any, week: int) -> None:
        if self.seen is None:
            if any(k == key for _j, k, _w in self.firsts):
                return
            if len(self.firsts) >= 8:
                self.seen = {k for _j, k, _w in self.firsts}
        elif key in self.seen:
            return
        else:
            self.seen.add(key)
        self.firsts.append((i, key, week))

    def first(self, key: Any, week: int, best: int | None, linter: _Linter) -> int | None:
        """The first rule whose limits or windows differ from ``key`` and whose windows meet ``week``
        (the earlier of it and ``best``)."""
        for j, k, w in self.firsts:
            if best is not None and j >= best:
                break
            linter.checks += 1
            if k != key and w & week:
                return j
        return best


# --- rules that allow every type from every source ------------------------------------------

def broad_rule_findings(policy: m.Policy) -> list[Finding]:
    """A warning for each rule that allows every type its lane knows from a source that matches
    everything: a files rule naming every media type (executables and octet-stream included)
    from a spool; a viid rule allowing every object and picture type from an addresses source
    that holds 0.0.0.0/0 or ::/0."""
    findings = []
    for rule in policy.rules:
        source = policy.sources.get(rule.from_)
        if source is None or not _matches_everything(source):
            continue
        if rule.lane == "files" and set(MEDIA_TYPES) <= set(rule.files.media_types):
            findings.append(Finding(WARNING, rule.id, f"allows every media type ({len(MEDIA_TYPES)}, executables "
                                    f"and application/octet-stream included) from every file of source "
                                    f"{rule.from_}: list only the types it needs"))
        elif (rule.lane == "viid" and set(m.VIEW_OBJECT_TYPES) <= set(rule.viid.object_types)
              and set(m.PICTURE_TYPES) <= set(rule.viid.picture_types)):
            findings.append(Finding(WARNING, rule.id, f"allows every object and picture type from every address "
                                    f"(source {rule.from_}): list only the types and networks it needs"))
    return findings


def _matches_everything(source: Any) -> bool:
    """A spool source (every file dropped there), or addresses that include a whole IP space."""
    if source.kind == "spool":
        return True
    return source.kind == "addresses" and any(ipaddress.ip_network(a).prefixlen == 0 for a in source.addresses)


# --- rules -------------------------------------------------------------------------

def _section(rule: Any) -> Any:
    return getattr(rule, rule.lane)


def _same(a: Any, b: Any) -> bool:
    return bool(a.from_ == b.from_ and _section(a) == _section(b) and a.when == b.when)


def _rate_note(a: Any, b: Any) -> str:
    return "" if a.rate == b.rate else f"; its rate {_rate(b.rate)} never applies (rule {a.id}: {_rate(a.rate)})"


def _rate(r: m.Rate | None) -> str:
    return "none" if r is None else f"{r.per_second:g}/s burst {r.burst}"


def _covers(policy: m.Policy, earlier: Any, later: Any) -> str | None:
    """How ``earlier`` allows all that ``later`` allows, or None if it may not."""
    if not _source_within(policy.sources[later.from_], policy.sources[earlier.from_]):
        return None
    if not week_minutes(later.when) <= week_minutes(earlier.when):
        return None
    if not _limits_within(later.lane, _section(later), _section(earlier)):
        return None
    parts = ["it has the same source" if later.from_ == earlier.from_
             else f"its source {earlier.from_} matches everything {later.from_} does"]
    if earlier.when is not None or later.when is not None:
        parts.append(f"it is open whenever rule {later.id} is")
    parts.append("its limits are as wide or wider")
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def _limits_within(lane: str, small: Any, big: Any) -> bool:
    """Everything ``small`` lets through, ``big`` lets through too."""
    if lane == "video":
        return (set(small.codecs) <= set(big.codecs) and small.max_width <= big.max_width
                and small.max_height <= big.max_height and small.max_frame_rate <= big.max_frame_rate
                and small.max_bitrate_kbps <= big.max_bitrate_kbps and (big.audio or not small.audio))
    if lane == "viid":
        return (set(small.object_types) <= set(big.object_types) and small.max_pictures <= big.max_pictures
                and small.max_picture_bytes <= big.max_picture_bytes
                and set(small.picture_types) <= set(big.picture_types))
    if lane == "signaling":
        return (set(small.roots) <= set(big.roots) and set(small.cmd_types) <= set(big.cmd_types)
                and small.max_body_bytes <= big.max_body_bytes)
    if lane == "reverse":
        return set(small.requests) <= set(big.requests)
    if lane == "files":
        return (small.max_size <= big.max_size and set(small.media_types) <= set(big.media_types)
                and small.name_pattern == big.name_pattern and (big.allow_empty or not small.allow_empty))
    return False


# --- time windows ------------------------------------------------------------------

def _clock(s: str) -> int:
    return int(s[:2]) * 60 + int(s[3:])


def _window_minutes(w: m.TimeWindow) -> frozenset[int]:
    """Minutes of the week (Monday 00:00 = 0) the window is open."""
    return _open_minutes(tuple(w.days), w.from_, w.to)


@lru_cache(maxsize=256)
def _open_minutes(days: tuple[str, ...], from_: str, to: str) -> frozenset[int]:
    start, end = _clock(from_), _clock(to)
    length = end - start if end >= start else end - start + DAY_MINUTES
    out: set[int] = set()
    for day in days:
        base = m.DAYS.index(day) * DAY_MINUTES + start
        out.update((base + k) % WEEK_MINUTES for k in range(length))
    return frozenset(out)


_ALWAYS = frozenset(range(WEEK_MINUTES))


def week_minutes(when: Sequence[m.TimeWindow] | None) -> frozenset[int]:
    if when is None:
        return _ALWAYS
    out: frozenset[int] = frozenset()
    for w in when:
        out |= _window_minutes(w)
    return out


_ALWAYS_MASK = (1 << WEEK_MINUTES) - 1


def _week_mask(when: Sequence[m.TimeWindow] | None) -> int:
    """week_minutes(when) as an int, bit k for minute k: subset and overlap tests in a few
    machine words instead of 10,080-element sets."""
    if when is None:
        return _ALWAYS_MASK
    mask = 0
    for w in when:
        mask |= _window_mask(tuple(w.days), w.from_, w.to)
    return mask


@lru_cache(maxsize=1024)
def _window_mask(days: tuple[str, ...], from_: str, to: str) -> int:
    start, end = _clock(from_), _clock(to)
    length = end - start if end >= start else end - start + DAY_MINUTES
    out = 0
    for day in days:
        bits = ((1 << length) - 1) << (m.DAYS.index(day) * DAY_MINUTES + start)
        out |= (bits & _ALWAYS_MASK) | (bits >> WEEK_MINUTES)   # past Sunday midnight: Monday
    return out




def _windows_meet(a: Any, b: Any) -> bool:
    return bool(week_minutes(a.when) & week_minutes(b.when))


def _window_findings(rule: Any) -> list[Finding]:
    if rule.when is None:
        return []
    empty = [i for i, w in enumerate(rule.when) if not _window_minutes(w)]
    if len(empty) == len(rule.when):
        return [Finding(ERROR, rule.id, "every time window is empty (from equals to), so the rule never applies")]
    return [Finding(WARNING, rule.id, f"time window when[{i}] is empty (from equals to)") for i in empty]


# --- sources -------------------------------------------------------------------------

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _nets(addresses: Iterable[str]) -> list[IPNetwork]:
    return [_net(a) for a in addresses]


_net = parse_network


def _subnet_of(n: ipaddress.IPv4Network | ipaddress.IPv6Network,
               b: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bool:
    """n within b; False across IP versions."""
    if isinstance(n, ipaddress.IPv4Network):
        return isinstance(b, ipaddress.IPv4Network) and n.subnet_of(b)
    return isinstance(b, ipaddress.IPv6Network) and n.subnet_of(b)


def _nets_within(small: Iterable[str], big: Iterable[str]) -> bool:
    bigs = _nets(big)
    return all(any(_subnet_of(n, b) for b in bigs) for n in _nets(small))


def _first_overlap(a: Iterable[str], b: Iterable[str]) -> str | None:
    for x in _nets(a):
        for y in _nets(b):
            if x.version == y.version and x.overlaps(y):
                return str(x if x.prefixlen >= y.prefixlen else y)
    return None


def _matcher_within(small: m.DeviceMatch, big: m.DeviceMatch) -> bool:
    if big.region is not None and not (small.region or "").startswith(big.region):
        return False
    if big.industry is not None and (small.industry is None or not set(small.industry) <= set(big.industry)):
        return False
    if big.type is not None and (small.type is None or not set(small.type) <= set(big.type)):
        return False
    if big.serial is not None:
        s = small.serial
        if s is None or not (big.serial.from_ <= s.from_ and s.to <= big.serial.to):
            return False
    return True


def _id_matches(device_id: str, matcher: m.DeviceMatch) -> bool:
    return (
        (matcher.region is None or device_id.startswith(matcher.region))
        and (matcher.industry is None or device_id[8:10] in matcher.industry)
        and (matcher.type is None or device_id[10:13] in matcher.type)
        and (matcher.serial is None or matcher.serial.from_ <= device_id[13:] <= matcher.serial.to)
    )


def _id_in(device_id: str, src: m.DevicesSource) -> bool:
    return device_id in src.ids or any(_id_matches(device_id, x) for x in src.match)


def _source_within(small: Any, big: Any) -> bool:
    """Every object ``small`` matches, ``big`` matches too."""
    if small is big:
        return True
    if small.kind == "devices" and big.kind == "addresses":
        # an addresses source matches by address alone, whatever the device ID
        return bool(small.addresses) and _nets_within(small.addresses, big.addresses)
    if small.kind != big.kind:
        return False
    if small.kind == "spool":
        return False  # another spool source: matched by its own name
    if small.kind == "addresses":
        return _nets_within(small.addresses, big.addresses)
    if big.addresses and not (small.addresses and _nets_within(small.addresses, big.addresses)):
        return False
    return (all(_id_in(i, big) for i in small.ids)
            and all(any(_matcher_within(x, y) for y in big.match) for x in small.match))


def _matchers_meet(a: m.DeviceMatch, b: m.DeviceMatch) -> str | None:
    """A device ID both match, or None."""
    ra, rb = a.region or "", b.region or ""
    if not (ra.startswith(rb) or rb.startswith(ra)):
        return None
    region = (ra if len(ra) >= len(rb) else rb).ljust(8, "0")
    industries = _meet_codes(a.industry, b.industry, "00")
    types = _meet_codes(a.type, b.type, "132")
    if industries is None or types is None:
        return None
    lo = max(a.serial.from_ if a.serial else "0000000", b.serial.from_ if b.serial else "0000000")
    hi = min(a.serial.to if a.serial else "9999999", b.serial.to if b.serial else "9999999")
    if lo > hi:
        return None
    return region + industries + types + lo


def _meet_codes(a: list[str] | None, b: list[str] | None, default: str) -> str | None:
    if a is None and b is None:
        return default
    if a is None or b is None:
        return (a or b)[0]  # type: ignore[index]
    both = [x for x in a if x in b]
    return both[0] if both else None


def _devices_meet(a: m.DevicesSource, b: m.DevicesSource) -> str | None:
    for i in a.ids:
        if _id_in(i, b):
            return i
    for i in b.ids:
        if _id_in(i, a):
            return i
    for x in a.match:
        for y in b.match:
            found = _matchers_meet(x, y)
            if found is not None:
                return found
    return None


def _sources_overlap(a: Any, b: Any) -> str | None:
    """Words naming what two sources can both match (device ID / address), or None."""
    if a.kind == "spool" or b.kind == "spool":
        return None  # spool sources match by their own name only
    if a.kind == "devices" and b.kind == "devices":
        device = _devices_meet(a, b)
        if device is None:
            return None
        if a.addresses and b.addresses:
            net = _first_overlap(a.addresses, b.addresses)
            return None if net is None else f"device {device} from {net}"
        pinned = a.addresses or b.addresses
        return f"device {device}" + (f" from {pinned[0]}" if pinned else "")
    if a.kind == "addresses" and b.kind == "addresses":
        net = _first_overlap(a.addresses, b.addresses)
        return None if net is None else f"addresses in {net}"
    devices, peers = (a, b) if a.kind == "devices" else (b, a)
    if not devices.addresses:
        return f"a device of {', '.join(peers.addresses[:2])}"
    net = _first_overlap(devices.addresses, peers.addresses)
    return None if net is None else f"a device from {net}"


# --- indexes of the sources -------------------------------------------------------------

class _Serials:
    """The matchers of one region code by serial range: which ranges meet [lo, hi].

    Ranges are kept by length class (a power of two), each sorted by start: a range of a
    class shorter than 2**c that meets [lo, hi] starts after lo - 2**c, so each class is one
    bisection and then only ranges near [lo, hi] (many cameras of one region, told apart
    by serial range, do not make every source a candidate of every other)."""

    __slots__ = ("classes",)

    def __init__(self) -> None:
        self.classes: dict[int, tuple[list[int], list[tuple[int, int, str]]]] = {}

    def add(self, lo: int, hi: int, name: str) -> None:
        self.classes.setdefault((hi - lo + 1).bit_length(), ([], []))[1].append((lo, hi, name))

    def done(self) -> None:
        for c, (starts, ranges) in self.classes.items():
            ranges.sort()
            starts[:] = [r[0] for r in ranges]

    def meeting(self, lo: int, hi: int, out: set[str]) -> None:
        for c, (starts, ranges) in self.classes.items():
            for k in range(bisect_left(starts, lo - (1 << c)), len(ranges)):
                first, last, name = ranges[k]
                if first > hi:
                    break
                if last >= lo:
                    out.add(name)


_ALL_SERIALS = (0, 9_999_999)


def _serials(x: m.DeviceMatch) -> tuple[int, int]:
    return (int(x.serial.from_), int(x.serial.to)) if x.serial is not None else _ALL_SERIALS


class _SourceIndex:
    """Which sources can contain or meet a given one, without looking at all of them.

    Candidates come from the sources' networks (by exact network and by start address),
    listed device IDs (exactly, and by region code then serial number) and matchers (by
    region code, then serial range); each is then decided by the exact predicate
    (_source_within, _sources_overlap), so an index only has to miss nothing, which the
    tests check against the pairwise comparison. Results are kept per source name.
    """

    def __init__(self, sources: Mapping[str, Any]) -> None:
        self.sources = sources
        self.by_net: dict[tuple[int, int, int], list[str]] = {}     # (version, prefix, address)
        starts: dict[int, list[tuple[int, str]]] = {4: [], 6: []}   # version -> (first address, name)
        self.by_id: dict[str, list[str]] = {}
        self.by_region: dict[str, _Serials] = {}                    # matcher region ("" for none)
        by_centre: dict[str, list[tuple[int, str]]] = {}            # listed IDs: 8-digit code -> (serial, name)
        for name, src in sources.items():
            if src.kind == "spool":
                continue
            for net in _nets(src.addresses):
                start = int(net.network_address)
                self.by_net.setdefault((net.version, net.prefixlen, start), []).append(name)
                starts[net.version].append((start, name))
            if src.kind != "devices":
                continue
            for i in src.ids:
                self.by_id.setdefault(i, []).append(name)
                by_centre.setdefault(i[:8], []).append((int(i[13:]), name))
            for x in src.match:
                region = self.by_region.get(x.region or "")
                if region is None:
                    region = self.by_region[x.region or ""] = _Serials()
                region.add(*_serials(x), name)
        for region in self.by_region.values():
            region.done()
        self.starts = {v: sorted(set(pairs)) for v, pairs in starts.items()}
        self.prefixes = {v: sorted({plen for (ver, plen, _a) in self.by_net if ver == v}) for v in (4, 6)}
        self.regions = sorted(self.by_region)
        self.centres = sorted(by_centre)
        self.by_centre = {c: sorted(set(v)) for c, v in by_centre.items()}
        self._containers: dict[str, list[str]] = {}
        self._meets: dict[tuple[str, str], bool] = {}

    # candidates ---------------------------------------------------------------------

    def _supernets(self, net: IPNetwork, out: set[str]) -> None:
        """Sources with a network containing ``net`` (or equal to it)."""
        bits = net.max_prefixlen
        address = int(net.network_address)
        for plen in self.prefixes[net.version]:
            if plen > net.prefixlen:
                break
            start = address & (((1 << plen) - 1) << (bits - plen))
            out.update(self.by_net.get((net.version, plen, start), ()))

    def _subnets(self, net: IPNetwork, out: set[str]) -> None:
        """Sources with a network starting inside ``net`` (so within it, or containing it)."""
        pairs = self.starts[net.version]
        lo, hi = int(net.network_address), int(net.broadcast_address)
        for k in range(bisect_left(pairs, (lo, "")), len(pairs)):
            start, name = pairs[k]
            if start > hi:
                break
            out.add(name)

    def _region_prefixes(self, code: str, serials: tuple[int, int], out: set[str]) -> None:
        """Sources with a matcher whose region is a prefix of ``code`` (or no region) and whose
        serial range meets ``serials``."""
        for k in (0, 2, 4, 6, 8):
            if k <= len(code):
                region = self.by_region.get(code[:k])
                if region is not None:
                    region.meeting(*serials, out)

    def _regions_under(self, code: str, serials: tuple[int, int], out: set[str]) -> None:
        """Sources with a matcher whose region starts with ``code`` and whose serials meet."""
        for k in range(bisect_left(self.regions, code), len(self.regions)):
            region = self.regions[k]
            if not region.startswith(code):
                break
            self.by_region[region].meeting(*serials, out)

    def _ids_under(self, code: str, serials: tuple[int, int], out: set[str]) -> None:
        """Sources listing an ID whose region starts with ``code``, its serial within ``serials``."""
        lo, hi = serials
        for k in range(bisect_left(self.centres, code[:8]), len(self.centres)):
            centre = self.centres[k]
            if not centre.startswith(code[:8]):
                break
            pairs = self.by_centre[centre]
            for j in range(bisect_left(pairs, (lo, "")), len(pairs)):
                serial, name = pairs[j]
                if serial > hi:
                    break
                out.add(name)

    # questions ----------------------------------------------------------------------

    def containers(self, name: str, linter: _Linter) -> list[str]:
        """Names of the sources that match everything ``name`` does, itself first."""
        found = self._containers.get(name)
        if found is not None:
            return found
        small = self.sources[name]
        candidates: set[str] = set()
        if small.kind != "spool":
            if small.addresses:
                self._supernets(_net(small.addresses[0]), candidates)
            if small.kind == "devices":
                if small.match:
                    x = small.match[0]
                    self._region_prefixes(x.region or "", _serials(x), candidates)
                elif small.ids:
                    i = small.ids[0]
                    candidates.update(self.by_id.get(i, ()))
                    self._region_prefixes(i, (int(i[13:]), int(i[13:])), candidates)
        candidates.discard(name)
        found = [name]
        for other in sorted(candidates):
            linter.checks += 1
            if _source_within(small, self.sources[other]):
                found.append(other)
        self._containers[name] = found
        return found

    def meeting(self, name: str) -> set[str]:
        """Names of the other sources that may match an object ``name`` matches (a superset:
        _SourceIndex.meets decides), except the pairs of an unpinned devices source and an
        addresses source (they always meet: _Linter._overlaps takes them by kind)."""
        src = self.sources[name]
        candidates: set[str] = set()
        if src.kind != "spool":
            for net in _nets(src.addresses):
                self._supernets(net, candidates)
                self._subnets(net, candidates)
            if src.kind == "devices":
                for i in src.ids:
                    candidates.update(self.by_id.get(i, ()))
                    self._region_prefixes(i, (int(i[13:]), int(i[13:])), candidates)
                for x in src.match:
                    region, serials = x.region or "", _serials(x)
                    self._region_prefixes(region, serials, candidates)
                    self._regions_under(region, serials, candidates)
                    self._ids_under(region, serials, candidates)
        candidates.discard(name)
        return {c for c in candidates if not _always_meet(src, self.sources[c])}

    def forget_containers(self) -> None:
        self._containers.clear()

    def meets(self, a: str, b: str, linter: _Linter) -> bool:
        """_sources_overlap of the two is not None (either way round), remembered."""
        key = (a, b) if a < b else (b, a)
        found = self._meets.get(key)
        if found is None:
            linter.checks += 1
            found = self._meets[key] = _sources_overlap(self.sources[a], self.sources[b]) is not None
        return found


def _always_meet(a: Any, b: Any) -> bool:
    """An unpinned devices source and an addresses source (any device may come from any address)."""
    return ((a.kind == "devices" and not a.addresses and b.kind == "addresses")
            or (b.kind == "devices" and not b.addresses and a.kind == "addresses"))
