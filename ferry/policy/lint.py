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
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from ferry.codecs.media_type import MEDIA_TYPES
from ferry.policy import models as m

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
    findings: list[Finding] = []
    rules = list(policy.rules)
    dead: set[int] = set()
    for i, rule in enumerate(rules):
        window_findings = _window_findings(rule)
        findings += window_findings
        if any(f.level == ERROR for f in window_findings):
            dead.add(i)
            continue
        for j in range(i):
            earlier = rules[j]
            if earlier.lane != rule.lane or earlier.to != rule.to:
                continue
            if _same(earlier, rule):
                findings.append(Finding(ERROR, rule.id, f"duplicate of rule {earlier.id} "
                                        f"(same lane, source, destination, limits and windows)"
                                        + _rate_note(earlier, rule)))
                dead.add(i)
                break
            why = _covers(policy, earlier, rule)
            if why is not None:
                findings.append(Finding(ERROR, rule.id, f"shadowed by rule {earlier.id}: {why}, "
                                        f"so rule {rule.id} never decides"))
                dead.add(i)
                break
    for i, rule in enumerate(rules):
        if i in dead:
            continue
        for j in range(i):
            earlier = rules[j]
            if j in dead or earlier.lane != rule.lane or earlier.to != rule.to or earlier.from_ == rule.from_:
                continue
            if _section(earlier) == _section(rule) and earlier.when == rule.when:
                continue  # same limits: order cannot change a verdict
            both = _sources_overlap(policy.sources[earlier.from_], policy.sources[rule.from_])
            if both is not None and _windows_meet(earlier, rule):
                findings.append(Finding(
                    WARNING, rule.id,
                    f"overlaps rule {earlier.id} ({rule.lane} to {rule.to}): sources {earlier.from_} and "
                    f"{rule.from_} can both match {both}, with different limits; rule {earlier.id} "
                    f"comes first and decides for them",
                ))
                break
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

def _nets(addresses: Iterable[str]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(a) for a in addresses]


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
