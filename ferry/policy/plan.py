"""The compiled plan: an immutable table that answers decide(object).

Compiled once from a validated Policy: rules indexed by (lane, source,
destination), regexes precompiled. decide() depends on the object and the plan
only, so the outer and inner agents reach the same verdict.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from ferry.lanes import files as files_lane
from ferry.pb import ferry_pb2
from ferry.policy.models import FilesLimits, Policy

DEFAULT_DENY = "default-deny"


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    rule: str       # the rule that allowed or refused, or "default-deny"
    reason: str


@dataclass(frozen=True, slots=True)
class FilesCheck:
    max_size: int
    media_types: tuple[str, ...]
    name_pattern: str
    name_re: re.Pattern[str]

    @classmethod
    def compile(cls, spec: FilesLimits) -> FilesCheck:
        return cls(spec.max_size, tuple(spec.media_types), spec.name_pattern, re.compile(spec.name_pattern))

    def refuse(self, f: ferry_pb2.FileObject) -> str | None:
        """Why this rule does not let ``f`` through, or None."""
        size = max(f.size, len(f.content))
        if size > self.max_size:
            return f"size {size} exceeds max_size {self.max_size}"
        if f.media_type not in self.media_types:
            return f"media type {f.media_type or '(none)'} not allowed (allowed: {', '.join(self.media_types)})"
        reason = files_lane.check_file_name(f.name)
        if reason is not None:
            return reason
        if self.name_re.fullmatch(f.name) is None:
            return f"name {f.name!r} does not match name_pattern"
        return None


@dataclass(frozen=True, slots=True)
class CompiledRule:
    id: str
    lane: str
    source: str
    destination: str
    files: FilesCheck

    def refuse(self, obj: ferry_pb2.CanonicalObject) -> str | None:
        if self.lane == files_lane.LANE:
            if obj.WhichOneof("body") != "file":
                return f"lane {self.lane!r} object has no file body"
            return self.files.refuse(obj.file)
        return f"lane {self.lane!r} has no checks"  # unreachable: the models admit known lanes only


@dataclass(frozen=True, slots=True, eq=False)
class Plan:
    hash: bytes
    name: str
    rules: tuple[CompiledRule, ...]
    _index: Mapping[tuple[str, str, str], tuple[CompiledRule, ...]]

    def decide(self, obj: ferry_pb2.CanonicalObject) -> Decision:
        """Allow or refuse ``obj``: the first rule that allows it wins."""
        key = (obj.lane, obj.source.name, obj.destination)
        candidates = self._index.get(key, ())
        if not candidates:
            return Decision(
                False, DEFAULT_DENY,
                f"no rule for lane {key[0]!r} from {key[1]!r} to {key[2]!r}",
            )
        first_refusal: Decision | None = None
        for rule in candidates:
            reason = rule.refuse(obj)
            if reason is None:
                return Decision(True, rule.id, f"allowed by {rule.id}")
            if first_refusal is None:
                first_refusal = Decision(False, rule.id, reason)
        assert first_refusal is not None
        return first_refusal

    def rule(self, rule_id: str) -> CompiledRule | None:
        """The compiled rule with this id, if any."""
        for r in self.rules:
            if r.id == rule_id:
                return r
        return None


def compile_policy(policy: Policy, hash: bytes) -> Plan:
    """Compile a validated policy into its immutable plan."""
    rules = tuple(
        CompiledRule(r.id, r.lane, r.from_, r.to, FilesCheck.compile(r.files))
        for r in policy.rules
    )
    index: dict[tuple[str, str, str], tuple[CompiledRule, ...]] = {}
    for r in rules:
        key = (r.lane, r.source, r.destination)
        index[key] = index.get(key, ()) + (r,)
    return Plan(bytes(hash), policy.policy, rules, MappingProxyType(index))
