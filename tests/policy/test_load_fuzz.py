"""Hypothesis: policy parsing raises only PolicyError; decide() never raises."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ferry.pb import ferry_pb2
from ferry.policy import Decision, PolicyError, load_plan, parse_policy
from ferry.policy.suite import parse_suite

DEMO_TEXT = (Path(__file__).resolve().parents[2] / "policy" / "demo" / "policy.yaml").read_bytes()
DEMO_SUITE = (Path(__file__).resolve().parents[2] / "policy" / "demo" / "tests" / "demo.yaml").read_bytes()
PLAN = load_plan(Path(__file__).resolve().parents[2] / "policy" / "demo")
FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def parses_or_policy_error(data: bytes) -> None:
    try:
        parse_policy({"policy.yaml": data})
    except PolicyError as e:
        assert str(e)  # formats without raising
        assert e.line is None or e.line >= 1


@FAST
@given(st.binary(max_size=2000))
def test_random_bytes(data):
    parses_or_policy_error(data)


YAML_CHARS = st.sampled_from(list(" \n\t:-[]{}&*!|>'\"#%@`,?<=~0123456789abcxyz.\\") + ["no", "yes", "!!", "<<"])


@FAST
@given(st.lists(YAML_CHARS, max_size=300).map("".join))
def test_yaml_punctuation(text):
    parses_or_policy_error(text.encode())


@FAST
@given(st.integers(0, len(DEMO_TEXT) - 1), st.binary(min_size=0, max_size=8), st.integers(0, 8))
def test_demo_policy_mutated(pos, insert, cut):
    parses_or_policy_error(DEMO_TEXT[:pos] + insert + DEMO_TEXT[pos + cut:])


def suite_parses_or_policy_error(data: bytes) -> None:
    try:
        parse_suite({"t.yaml": data}, base="pol/tests")
    except PolicyError as e:
        assert str(e)
        assert e.line is None or e.line >= 1


@FAST
@given(st.binary(max_size=2000))
def test_suite_random_bytes(data):
    suite_parses_or_policy_error(data)


@FAST
@given(st.integers(0, len(DEMO_SUITE) - 1), st.binary(min_size=0, max_size=8), st.integers(0, 8))
def test_demo_suite_mutated(pos, insert, cut):
    suite_parses_or_policy_error(DEMO_SUITE[:pos] + insert + DEMO_SUITE[pos + cut:])


# Explicit tags in front of a value, on the value it had or on an odd one: PyYAML's own
# constructors raised KeyError, IndexError or AttributeError on `!!bool maybe`, `!!int ""`,
# `!!float "+"`, `!!timestamp x` (issue 15). Every loader must answer with PolicyError.
TAGS = st.sampled_from([
    "!!bool", "!!int", "!!float", "!!timestamp", "!!str", "!!null", "!!binary", "!!map", "!!seq",
    "!!set", "!!omap", "!!pairs", "!!merge", "!!python/object:os.system", "!!python/name:os.system",
    "!foo", "!", "!<tag:yaml.org,2002:int>", "!<x>",
])
ODD_VALUES = st.sampled_from(["", '""', "-", "+", '"-"', '"+"', "maybe", "x", "0x", "0b", "._", "1",
                              "2024-13-45", "2024-01-01x", "[]", "{}"]) \
    | st.text(alphabet="+-._:0123456789eExbo ", max_size=6)


def with_explicit_tag(text: bytes, line_no: int, tag: str, value: str | None) -> bytes:
    """``text`` with ``tag`` after the ``: `` or ``- `` of a line (on a new value if given)."""
    lines = text.decode().split("\n")
    valued = [i for i, line in enumerate(lines)
              if not line.lstrip().startswith("#") and (": " in line or line.lstrip().startswith("- "))]
    i = valued[line_no % len(valued)]
    line = lines[i]
    k = line.index(": ") + 2 if ": " in line else line.index("- ") + 2
    lines[i] = line[:k] + tag + " " + (line[k:] if value is None else value)
    return "\n".join(lines).encode()


@FAST
@given(st.integers(0, 10_000), TAGS, st.none() | ODD_VALUES)
def test_demo_policy_with_an_explicit_tag(line_no, tag, value):
    with pytest.raises(PolicyError) as info:
        parse_policy({"policy.yaml": with_explicit_tag(DEMO_TEXT, line_no, tag, value)})
    assert str(info.value) and info.value.line is not None and info.value.line >= 1


@FAST
@given(st.integers(0, 10_000), TAGS, st.none() | ODD_VALUES)
def test_demo_suite_with_an_explicit_tag(line_no, tag, value):
    with pytest.raises(PolicyError) as info:
        parse_suite({"demo.yaml": with_explicit_tag(DEMO_SUITE, line_no, tag, value)})
    assert str(info.value) and info.value.line is not None and info.value.line >= 1


YAML_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@FAST
@given(st.sampled_from(["policy", "version", "default", "sources", "destinations", "rules"]), YAML_VALUES)
def test_demo_policy_with_random_value(key, value):
    doc = yaml.safe_load(DEMO_TEXT)
    doc[key] = value
    parses_or_policy_error(yaml.safe_dump(doc).encode())


@FAST
@given(st.sampled_from(["id", "lane", "from", "to", "files", "extra"]), YAML_VALUES)
def test_demo_rule_with_random_value(key, value):
    doc = yaml.safe_load(DEMO_TEXT)
    doc["rules"][0][key] = value
    parses_or_policy_error(yaml.safe_dump(doc).encode())


@FAST
@given(st.sampled_from(["max_size", "media_types", "name_pattern", "extra"]), YAML_VALUES)
def test_demo_limits_with_random_value(key, value):
    doc = yaml.safe_load(DEMO_TEXT)
    doc["rules"][0]["files"][key] = value
    parses_or_policy_error(yaml.safe_dump(doc).encode())


OBJECTS = st.builds(
    lambda lane, src, dst, name, size, mt, content, has_file: ferry_pb2.CanonicalObject(
        lane=lane, source=ferry_pb2.Source(name=src), destination=dst,
        **({"file": ferry_pb2.FileObject(name=name, size=size, media_type=mt, content=content)}
           if has_file else {})),
    st.sampled_from(["files", "video", ""]) | st.text(max_size=5),
    st.sampled_from(["outer-spool", ""]) | st.text(max_size=5),
    st.sampled_from(["inner-spool", ""]) | st.text(max_size=5),
    st.text(max_size=30),
    st.integers(0, 2**64 - 1),
    st.sampled_from(["application/pdf", "text/plain", ""]) | st.text(max_size=10),
    st.binary(max_size=64),
    st.booleans(),
)


@FAST
@given(OBJECTS)
def test_decide_never_raises(obj):
    d = PLAN.decide(obj)
    assert isinstance(d, Decision) and d.reason
    assert d.rule in ("default-deny", "files-documents")
