"""The fast YAML path (libyaml events) takes nothing the checked path refuses and builds the same values.

``load_yaml`` builds a document's value from libyaml's event stream and hands anything it is not
sure of (aliases, tags, odd keys, deep nesting, YAML errors) to the old pure-Python path, whose
errors are the ones reported. What must hold: wherever the fast path returns a value, the checked
path returns the same value (same types, same key order), and the lines are the checked path's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ferry.policy import PolicyError, parse_policy
from ferry.policy import yamlfile
from tests.support.bigpolicy import big_policy_yaml

ROOT = Path(__file__).resolve().parents[2]
DEMO = (ROOT / "policy" / "demo" / "policy.yaml").read_text()
SUITE = (ROOT / "policy" / "demo" / "tests" / "demo.yaml").read_text()
FAST = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def same(a: Any, b: Any) -> bool:
    """Equal with equal types all the way down (1 != True != 1.0 here), and equal key order."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return bool(a == b) or (a != a and b != b)   # NaN


def agree(text: str) -> bool:
    """True if the fast path took ``text`` (and then asserts the checked path gives the same)."""
    if yamlfile._NON_PRINTABLE.search(text) or yamlfile._LIBYAML_DIFFERS.search(text):
        return False   # load_yaml never tries the fast path on these
    known: dict[tuple[str | int, ...], int] = {}
    try:
        fast = yamlfile._load_fast(text, 64, known)
    except yamlfile._Unsure:
        return False
    try:
        checked, lines = yamlfile._load_checked("t.yaml", text)
    except PolicyError as e:
        pytest.fail(f"fast path took what the checked path refuses ({e}): {text!r}")
    assert same(fast, checked), text
    # the lines it notes as it goes are the checked path's (but a scalar document's own)
    expected = dict(lines)
    if not isinstance(checked, (dict, list)):
        expected.pop((), None)
    assert known == expected, text
    return True


YAML_CHARS = st.sampled_from(list(" \n\t:-[]{}&*!|>'\"#%@`,?<=~0123456789abcxyz.\\") + [
    "no", "yes", "!!", "<<", "null", "~", "1e3", ".inf", "0x1f", "0o7", "1_000", "2024-01-01", "---", "...",
    "\n  ", "\n- ", ": ", "'a'", '"\\u00e9"', "%YAML 1.1\n", "%TAG !e! tag:x,2000:\n", "\ufeff", "\u00e9"])


@FAST
@given(st.lists(YAML_CHARS, max_size=200).map("".join))
def test_yaml_punctuation_agrees(text):
    agree(text)


@FAST
@given(st.integers(0, len(DEMO) - 1), st.lists(YAML_CHARS, max_size=6).map("".join), st.integers(0, 8))
def test_mutated_demo_policy_agrees(pos, insert, cut):
    agree(DEMO[:pos] + insert + DEMO[pos + cut:])


@FAST
@given(st.integers(0, len(SUITE) - 1), st.lists(YAML_CHARS, max_size=6).map("".join), st.integers(0, 8))
def test_mutated_demo_suite_agrees(pos, insert, cut):
    agree(SUITE[:pos] + insert + SUITE[pos + cut:])


SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-(10**30), 10**30),
                    st.floats(allow_nan=False), st.text(max_size=20))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=30)


@FAST
@given(VALUES, st.booleans(), st.sampled_from([None, '"', "'"]), st.integers(2, 6))
def test_dumped_values_agree(value, flow, style, indent):
    text = yaml.safe_dump({"v": value}, default_flow_style=flow, default_style=style, indent=indent,
                          allow_unicode=True)
    # PyYAML's own dump: the fast path must take it (unless it holds a tag), and build the same
    assert agree(text) or "!" in text or "\t" in text


@pytest.mark.parametrize("text", [
    "a: &x 1\nb: *x\n", "a: !!int 1\n", "? [1]\n: 2\n", "a: 1\na: 2\n", "1: x\n", "a: =\n", "<<: {b: 1}\n",
    "a: 2024-13-45\n", "---\na: 1\n---\nb: 2\n", "", "# only a comment\n", "a: [" * 40 + "]" * 40 + "\n",
    "a: \x07\n", "a: b\n\tc: d\n", "a: |#\n  x\n", "a: [b?c]\n", "a: |0\n  x\n",
])
def test_the_fast_path_leaves_what_it_is_unsure_of_to_the_checked_path(text):
    assert not agree(text)


def test_a_suite_file_has_the_lines_of_its_cases_without_the_checked_path():
    text = (ROOT / "policy" / "demo" / "tests" / "demo.yaml").read_text()
    _value, lines = yamlfile.load_yaml("demo.yaml", text.encode(), lines_depth=2)
    _v, checked = yamlfile._load_checked("demo.yaml", text)
    assert lines[("tests", 3)] == checked[("tests", 3)] and lines._find is not None   # not computed
    assert lines[("tests", 3, "object", "file")] == checked[("tests", 3, "object", "file")]   # now it is


def test_lines_are_found_when_asked_for_and_match_the_checked_path():
    data = DEMO.encode()
    value, lines = yamlfile.load_yaml("demo.yaml", data)
    _value, checked = yamlfile._load_checked("demo.yaml", DEMO)
    assert isinstance(lines, yamlfile.Lines) and lines._find is not None   # nothing computed yet
    assert dict(lines) == checked and lines[("rules", 0, "files", "max_size")] == checked[
        ("rules", 0, "files", "max_size")]


def test_the_big_policy_takes_the_fast_path_and_errors_still_name_their_line():
    data = big_policy_yaml(sources=1500, rules=2100)
    text = data.decode()
    value = yamlfile._load_fast(text)
    assert len(value["sources"]) == 1500 and len(value["rules"]) == 2100
    bad = text.replace("lane: video", "lane: telex", 1)
    with pytest.raises(PolicyError) as info:
        parse_policy({"policy.yaml": bad.encode()})
    line = bad[: bad.index("lane: telex")].count("\n") + 1
    assert info.value.line == line and info.value.key.endswith(".lane")
