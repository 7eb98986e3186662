"""Policy bundles: read a directory, hash it, validate it into a Policy.

A bundle is the set of YAML files at the top of a policy directory; today only
``policy.yaml``. ``read_policy_files`` is the only I/O in ferry.policy.
"""

from __future__ import annotations

import os
import stat
import struct
from pathlib import Path
from typing import Any

import pydantic

from ferry import limits
from ferry.crypto import sm3
from ferry.policy.errors import PolicyError
from ferry.policy import models
from ferry.policy.models import Policy
from ferry.policy.plan import gc_paused
from ferry.policy.yamlfile import Lines, line_of, load_yaml, render_key

POLICY_FILE = "policy.yaml"
# Files a bundle may hold; later issues add theirs here.
BUNDLE_FILES = (POLICY_FILE,)
TESTS_PREFIX = "tests/"     # bundle names of the policy's own test files
_HASH_DOMAIN = b"ferry policy bundle v1\0"


def read_policy_files(directory: str | os.PathLike[str]) -> dict[str, bytes]:
    """Read the bundle's files (top-level *.yaml / *.yml), each size-limited."""
    return read_yaml_folder(Path(directory), limits.POLICY_FILES_MAX, "policy")


def read_yaml_folder(base: Path, max_files: int, what: str) -> dict[str, bytes]:
    """The *.yaml / *.yml files of one folder by name, each size-limited, symlinks refused."""
    try:
        names = sorted(e.name for e in os.scandir(base) if e.name.endswith((".yaml", ".yml")))
    except OSError as e:
        raise PolicyError(str(base), None, "", f"cannot read {what} directory: {e.strerror}") from None
    if len(names) > max_files:
        raise PolicyError(str(base), None, "", f"more than {max_files} {what} files")
    return {name: _read_file(base / name) for name in names}


def _read_file(path: Path) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise PolicyError(str(path), None, "", f"cannot open: {e.strerror}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise PolicyError(str(path), None, "", "not a regular file")
        chunks = []
        left = limits.POLICY_FILE_MAX + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
    except OSError as e:
        raise PolicyError(str(path), None, "", f"cannot read: {e.strerror}") from None
    finally:
        os.close(fd)
    return b"".join(chunks)


def policy_hash(files: dict[str, bytes]) -> bytes:
    """SM3 over the sorted (name, bytes) pairs, each length-prefixed; 32 bytes.

    Only top-level files count: names with a "/" (the policy's own
    ``tests/*.yaml``, carried in signed bundles) are left out.
    """
    files = {name: data for name, data in files.items() if "/" not in name}
    parts = [_HASH_DOMAIN, struct.pack(">I", len(files))]
    for name in sorted(files):
        raw = name.encode("utf-8")
        parts += [struct.pack(">I", len(raw)), raw, struct.pack(">Q", len(files[name])), files[name]]
    return sm3(b"".join(parts))


def parse_policy(files: dict[str, bytes], *, base: str = "") -> Policy:
    """Validate a bundle given as file name -> bytes (pure).

    ``base`` (the directory, for messages only) is prefixed to file names in errors.
    """
    def where(name: str) -> str:
        return os.path.join(base, name) if base else name

    for name in sorted(files):
        if name.startswith(TESTS_PREFIX) and name.count("/") == 1:
            continue  # the policy's test suite (ferry.policy.suite), not the policy
        if name not in BUNDLE_FILES:
            raise PolicyError(
                where(name), None, "", f"unknown policy file (expected: {', '.join(BUNDLE_FILES)})"
            )
    if POLICY_FILE not in files:
        raise PolicyError(where(POLICY_FILE), None, "", "missing")
    path = where(POLICY_FILE)
    data = files[POLICY_FILE]
    if len(data) > limits.POLICY_FILE_MAX:
        raise PolicyError(path, None, "", f"file is larger than {limits.POLICY_FILE_MAX} bytes")
    with gc_paused():
        return _parse(path, data)


def _parse(path: str, data: bytes) -> Policy:
    value, lines = load_yaml(path, data)
    try:
        policy = _validate_by_parts(value)
    except pydantic.ValidationError:
        # Some part is invalid: the whole document again, for every error as the file has it.
        value, lines = load_yaml(path, data)
        try:
            policy = Policy.model_validate(value)
        except pydantic.ValidationError as e:
            raise _collect([_from_pydantic(path, lines, err) for err in e.errors()]) from None
    _check_references(path, lines, policy)
    return policy


_SOURCE: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(models.Source)
_RULE: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(models.Rule)


def _validate_by_parts(value: Any) -> Policy:
    """Policy.model_validate(value), each source and rule validated on its own first and put in
    its YAML mapping's place, so that mapping can go: a 4 MiB policy never holds all its YAML
    values and all its models at once (pydantic takes the models as they are)."""
    if isinstance(value, dict):
        sources, rules = value.get("sources"), value.get("rules")
        if type(sources) is dict and len(sources) <= limits.POLICY_SOURCES_MAX:
            for name, source in sources.items():
                sources[name] = _SOURCE.validate_python(source)
        if type(rules) is list and len(rules) <= limits.POLICY_RULES_MAX_V1:
            for i, rule in enumerate(rules):
                rules[i] = _RULE.validate_python(rule)
    return Policy.model_validate(value)


def load_policy(directory: str | os.PathLike[str]) -> Policy:
    """Read and validate the policy in ``directory``."""
    return parse_policy(read_policy_files(directory), base=str(directory))


_UNION_KEYS = {"sources": "kind", "rules": "lane"}


def _from_pydantic(path: str, lines: Lines, err: Any) -> PolicyError:
    loc = tuple(err["loc"])
    kind = err["type"]
    message = err["msg"].removeprefix("Value error, ")
    tag = None
    if len(loc) >= 3 and loc[0] in _UNION_KEYS and loc[2] != "[key]":
        tag, loc = loc[2], loc[:2] + loc[3:]   # drop the union tag pydantic puts in the path
    if len(loc) == 2 and loc[0] in _UNION_KEYS and kind.startswith("union_tag_"):
        field = _UNION_KEYS[str(loc[0])]
        expected = message.rpartition("expected tags: ")[2].replace("'", "")
        if kind == "union_tag_invalid":
            loc = loc + (field,)
            value = err["input"].get(field) if isinstance(err.get("input"), dict) else None
            shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
            message = f"unknown {field} {shown} (known: {expected})"
        else:
            message = f"{field} is missing or not a string (one of: {', '.join(_TAGS[field])})"
    elif kind == "extra_forbidden" and tag is not None and loc[0] == "rules" and len(loc) == 3 \
            and loc[2] in models.LANES:
        message = f"a {tag} rule holds only its own section {tag!r}, not {loc[2]!r}"
    elif kind.endswith("_type") or kind in ("literal_error",):
        message += f", got {_yaml_type(err.get('input'))}"
    line, _ = line_of(lines, loc)
    if "[key]" in loc:  # a mapping key failed, not its value
        loc = tuple(p for p in loc if p != "[key]")
        message = "name: " + message
    return PolicyError(path, line, render_key(loc), message)


_TAGS = {"kind": models.SOURCE_KINDS, "lane": models.LANES}


def _yaml_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, (int, float)):
        return f"number {value!r}"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"string {shown!r}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


def _check_references(path: str, lines: Lines, policy: Policy) -> None:
    problems: list[PolicyError] = []

    def problem(loc: tuple[str | int, ...], message: str) -> None:
        problems.append(PolicyError(path, lines.get(loc), render_key(loc), message))

    first: dict[str, int] = {}      # rule id -> index (lines are looked up only for a problem)
    for i, rule in enumerate(policy.rules):
        if rule.id in first:
            problem(("rules", i, "id"),
                    f"duplicate rule id {rule.id!r} (first on line {lines.get(('rules', first[rule.id], 'id'))})")
        else:
            first[rule.id] = i
        if rule.from_ not in policy.sources:
            problem(("rules", i, "from"), f"unknown source {rule.from_!r} (known: {_names(policy.sources)})")
        if rule.to not in policy.destinations:
            problem(("rules", i, "to"), f"unknown destination {rule.to!r} (known: {_names(policy.destinations)})")
    if problems:
        raise _collect(problems)


_NAMES_SHOWN = 20


def _names(d: dict[str, Any]) -> str:
    """The names, sorted; a big policy's first few and how many more (15,000 names help no one)."""
    names = sorted(d)
    if len(names) > _NAMES_SHOWN:
        return ", ".join(names[:_NAMES_SHOWN]) + f", ... ({len(names) - _NAMES_SHOWN} more)"
    return ", ".join(names) or "none"


def _collect(problems: list[PolicyError]) -> PolicyError:
    """One error to raise: the earliest problem in the file, carrying all of them."""
    ordered = sorted(problems, key=lambda p: p.line if p.line is not None else 0)
    first = ordered[0]
    return PolicyError(first.path, first.line, first.key, first.message, tuple(ordered))
