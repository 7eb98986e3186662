"""A policy's own test suite: ``DIR/tests/*.yaml``, samples with expected verdicts.

    cases = load_suite("policy/yiyang")          # list[SuiteCase]; PolicyError on a bad file
    results = run_suite(load_plan("policy/yiyang"), cases)

Each case holds a CanonicalObject (the protobuf JSON mapping in YAML, plus
``created`` as ISO 8601 with an offset or seconds since the epoch), the
expected verdict (``allow`` / ``refuse``) and optionally the deciding rule id
and a substring of the reason. Files are as strict as policy.yaml: unknown
keys, duplicate keys and wrong types are errors naming file:line. Only
``read_suite_files`` touches the file system.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from ferry import limits
from ferry.pb import ferry_pb2
from ferry.policy.errors import PolicyError
from ferry.policy.load import read_yaml_folder
from ferry.policy.plan import Decision, Plan
from ferry.policy.yamlfile import Lines, line_of, load_yaml, render_key

TESTS_DIR = "tests"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class _CaseModel(_Strict):
    name: Annotated[str, StringConstraints(min_length=1, max_length=500)]
    object: dict[str, Any]
    expect: Literal["allow", "refuse"]
    rule: Annotated[str, StringConstraints(min_length=1)] | None = None
    reason_contains: Annotated[str, StringConstraints(min_length=1)] | None = None
    transcoded: bool | None = None


class _SuiteFileModel(_Strict):
    tests: Annotated[list[_CaseModel], Field(min_length=1, max_length=limits.POLICY_TEST_CASES_MAX)]


@dataclass(frozen=True, slots=True)
class SuiteCase:
    """One sample: where it is written, the object, and what is expected of it."""

    file: str
    line: int | None
    name: str
    object: ferry_pb2.CanonicalObject
    expect_allow: bool
    rule: str | None = None
    reason_contains: str | None = None
    transcoded: bool | None = None   # expected Decision.transcode (video under a transcode rule)

    @property
    def where(self) -> str:
        return self.file if self.line is None else f"{self.file}:{self.line}"


@dataclass(frozen=True, slots=True)
class CaseResult:
    case: SuiteCase
    decision: Decision
    problems: tuple[str, ...]     # empty when the case passed

    @property
    def passed(self) -> bool:
        return not self.problems


# --- reading -----------------------------------------------------------------------

def read_suite_files(directory: str | os.PathLike[str]) -> dict[str, bytes]:
    """The files ``DIR/tests/*.yaml`` (and ``*.yml``) by name; none if no tests folder."""
    base = Path(directory) / TESTS_DIR
    if not base.exists():
        return {}
    return read_yaml_folder(base, limits.POLICY_TEST_FILES_MAX, "test")


def load_suite(directory: str | os.PathLike[str]) -> list[SuiteCase]:
    """Read and validate the test suite of the policy in ``directory``."""
    return parse_suite(read_suite_files(directory), base=str(Path(directory) / TESTS_DIR))


# --- validating (pure) ---------------------------------------------------------------

def parse_suite(files: dict[str, bytes], *, base: str = "") -> list[SuiteCase]:
    """Validate test files given as name -> bytes; cases in file-name then file order.

    Raises PolicyError carrying every problem found (``.errors``), each with file:line.
    """
    cases: list[SuiteCase] = []
    problems: list[PolicyError] = []
    for name in sorted(files):
        path = os.path.join(base, name) if base else name
        try:
            cases += parse_suite_file(path, files[name])
        except PolicyError as e:
            problems += e.errors
    if problems:
        first = problems[0]
        raise PolicyError(first.path, first.line, first.key, first.message, tuple(problems))
    return cases


def parse_suite_file(path: str, data: bytes) -> list[SuiteCase]:
    """Validate one test file (``path`` is for messages only)."""
    if len(data) > limits.POLICY_FILE_MAX:
        raise PolicyError(path, None, "", f"file is larger than {limits.POLICY_FILE_MAX} bytes")
    value, lines = load_yaml(path, data, lines_depth=2)     # the lines of tests[i], for each case
    if not isinstance(value, dict):
        raise PolicyError(path, lines.get(()), "", "expected a mapping with the key 'tests'")
    try:
        model = _SuiteFileModel.model_validate(value)
    except pydantic.ValidationError as e:
        raise _collect([_from_pydantic(path, lines, err) for err in e.errors()]) from None
    cases: list[SuiteCase] = []
    problems: list[PolicyError] = []
    for i, c in enumerate(model.tests):
        at = ("tests", i)
        try:
            obj = build_object(path, lines, at + ("object",), c.object)
        except PolicyError as e:
            problems.append(e)
            continue
        cases.append(SuiteCase(
            path, lines.get(at), c.name, obj, c.expect == "allow", c.rule, c.reason_contains, c.transcoded,
        ))
    if problems:
        raise _collect(problems)
    return cases


def build_object(path: str, lines: Lines, at: tuple[str | int, ...], data: dict[str, Any]) -> ferry_pb2.CanonicalObject:
    """A CanonicalObject from its YAML form; errors name the line of the bad key."""
    data = dict(data)
    created = data.pop("created", None)
    _check_keys(path, lines, at, data, ferry_pb2.CanonicalObject.DESCRIPTOR)
    obj = ferry_pb2.CanonicalObject()
    try:
        json_format.ParseDict(data, obj)
    except (json_format.ParseError, ValueError, TypeError, OverflowError) as e:
        raise _parse_error(path, lines, at, str(e)) from None
    if created is not None:
        obj.created = _created(path, lines, at + ("created",), created)
    return obj


def _check_keys(path: str, lines: Lines, at: tuple[str | int, ...], data: Any, desc: Descriptor) -> None:
    """Unknown fields are errors at their own line (ParseDict would only name the message)."""
    if not isinstance(data, dict):
        raise PolicyError(path, lines.get(at), render_key(at), f"expected a mapping for {desc.name}")
    by_name = {f.name: f for f in desc.fields} | {f.json_name: f for f in desc.fields}
    for key, value in data.items():
        field = by_name.get(key)
        if field is None:
            known = ", ".join(f.name for f in desc.fields)
            raise PolicyError(path, lines.get(at + (key,)), render_key(at + (key,)),
                              f"unknown field of {desc.name} (known: {known})")
        if field.type != FieldDescriptor.TYPE_MESSAGE or field.message_type.GetOptions().map_entry:
            continue
        if field.is_repeated:
            if not isinstance(value, list):
                raise PolicyError(path, lines.get(at + (key,)), render_key(at + (key,)), "expected a list")
            for i, item in enumerate(value):
                _check_keys(path, lines, at + (key, i), item, field.message_type)
        else:
            _check_keys(path, lines, at + (key,), value, field.message_type)


_FIELD = re.compile(r"Failed to parse (\w+) field: ")
_AT = re.compile(r"\s+at \"?CanonicalObject[\w.\[\]]*\"?\.*$")


def _parse_error(path: str, lines: Lines, at: tuple[str | int, ...], message: str) -> PolicyError:
    """Place a protobuf ParseError ("Failed to parse source field: ... port ...") on its key's line."""
    message = message.splitlines()[0] if message else "invalid object"
    fields = [_snake(f) for f in _FIELD.findall(message)]
    where = at
    if fields:
        for loc in lines:
            if loc[: len(at)] == at and loc[-1] == fields[-1] and _in_order(fields, loc[len(at):]):
                where = loc
                break
    message = _AT.sub("", _FIELD.sub("", message)).rstrip(".") or "invalid value"
    return PolicyError(path, lines.get(where), render_key(where), message)


def _in_order(wanted: list[str], loc: tuple[str | int, ...]) -> bool:
    it = iter(loc)
    return all(any(w == p for p in it) for w in wanted)


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", lambda m: "_" + m.group(1).lower(), name)


def _created(path: str, lines: Lines, at: tuple[str | int, ...], value: Any) -> float:
    """Seconds since the epoch from ISO 8601 with an offset, or a number."""
    def bad(message: str) -> PolicyError:
        return PolicyError(path, lines.get(at), render_key(at), message)

    if isinstance(value, bool):
        raise bad("expected ISO 8601 time with offset or seconds since the epoch, got a boolean")
    if isinstance(value, (int, float)):
        if not math.isfinite(value) or value < 0:
            raise bad(f"seconds since the epoch must be finite and >= 0, got {value!r}")
        return float(value)
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise bad(f"not an ISO 8601 time: {value!r}") from None
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise bad("time has no UTC offset (write e.g. 2026-11-26T10:00:00+08:00)")
        return value.timestamp()
    if isinstance(value, date):
        raise bad("a date without a time; write e.g. 2026-11-26T10:00:00+08:00")
    raise bad("expected ISO 8601 time with offset or seconds since the epoch")


def _from_pydantic(path: str, lines: Lines, err: Any) -> PolicyError:
    loc = tuple(err["loc"])
    line, _ = line_of(lines, loc)
    message = err["msg"].removeprefix("Value error, ")
    return PolicyError(path, line, render_key(loc), message)


def _collect(problems: list[PolicyError]) -> PolicyError:
    ordered = sorted(problems, key=lambda p: p.line if p.line is not None else 0)
    first = ordered[0]
    return PolicyError(first.path, first.line, first.key, first.message, tuple(ordered))


# --- running (pure) -----------------------------------------------------------------

def run_case(plan: Plan, case: SuiteCase) -> CaseResult:
    """Decide the case's object as the agents do (``Plan.admit``) and compare with what it expects."""
    d = plan.admit(case.object)
    problems: list[str] = []
    if d.allowed != case.expect_allow:
        problems.append(
            f"expected {'allow' if case.expect_allow else 'refuse'}, got {'allow' if d.allowed else 'refuse'}"
        )
    if case.rule is not None and d.rule != case.rule:
        problems.append(f"expected rule {case.rule}, got {d.rule}")
    if case.reason_contains is not None and case.reason_contains not in d.reason:
        problems.append(f"reason does not contain {case.reason_contains!r}")
    if case.transcoded is not None and d.transcode != case.transcoded:
        problems.append(f"expected {'' if case.transcoded else 'no '}transcoding, got "
                        f"{'transcoding' if d.transcode else 'none'}")
    return CaseResult(case, d, tuple(problems))


def run_suite(plan: Plan, cases: list[SuiteCase]) -> list[CaseResult]:
    return [run_case(plan, c) for c in cases]
