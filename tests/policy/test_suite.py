"""The policy's own test suite: strict files with file:line errors, PASS/FAIL, exit codes."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pytest

from ferry.policy import PolicyError, load_plan
from ferry.policy.cli import EXIT_FAILED, EXIT_INVALID, EXIT_OK, add_parser
from ferry.policy.suite import load_suite, parse_suite, run_suite

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "policy" / "demo"

GOOD = """\
tests:
  - name: a PDF passes
    object:
      lane: files
      source: {name: outer-spool}
      destination: inner-spool
      created: 2026-11-26T10:00:00+08:00
      file: {name: report.pdf, size: 1000, media_type: application/pdf}
    expect: allow
    rule: files-documents
  - name: an executable is refused
    object:
      lane: files
      source: {name: outer-spool}
      destination: inner-spool
      created: 1795658400
      file: {name: setup.exe, size: 1000, mediaType: application/x-msdownload}
    expect: refuse
    rule: files-documents
    reason_contains: media type
"""


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="ferry")
    add_parser(parser.add_subparsers())
    args = parser.parse_args(["policy", *argv])
    return args.func(args)


def parse(text: str):
    return parse_suite({"t.yaml": text.encode()}, base="pol/tests")


def error(text: str) -> PolicyError:
    with pytest.raises(PolicyError) as info:
        parse(text)
    return info.value


def test_cases_parse_with_their_lines_and_times():
    cases = parse(GOOD)
    assert [(c.where, c.expect_allow, c.rule) for c in cases] == [
        ("pol/tests/t.yaml:2", True, "files-documents"),
        ("pol/tests/t.yaml:11", False, "files-documents"),
    ]
    # 2026-11-26T10:00:00+08:00 == 02:00 UTC
    assert cases[0].object.created == 1795658400.0
    assert cases[1].object.created == 1795658400.0
    assert cases[1].object.file.media_type == "application/x-msdownload"  # JSON name accepted


def test_run_suite_passes_on_demo_and_fails_on_wrong_expectations():
    plan = load_plan(DEMO)
    results = run_suite(plan, parse(GOOD))
    assert [r.passed for r in results] == [True, True]
    wrong = GOOD.replace("expect: allow", "expect: refuse").replace("reason_contains: media type",
                                                                   "reason_contains: size")
    results = run_suite(plan, parse(wrong))
    assert not results[0].passed
    assert results[0].problems == ("expected refuse, got allow",)
    assert results[1].problems == ("reason does not contain 'size'",)


@pytest.mark.parametrize("change, where, key, words", [
    (("    expect: allow\n", "    expect: allowed\n"), 9, "tests[0].expect", "'allow' or 'refuse'"),
    (("    rule: files-documents\n  - name: an", "    rules: x\n  - name: an"), 10, "tests[0].rules",
     "Extra inputs"),
    (("      lane: files\n      source: {name: outer-spool}\n      destination: inner-spool\n      created: 2026",
      "      lane: files\n      sorce: {name: outer-spool}\n      destination: inner-spool\n      created: 2026"),
     5, "tests[0].object.sorce", "unknown field of CanonicalObject"),
    (("size: 1000, media_type", "sise: 1000, media_type"), 8, "tests[0].object.file.sise",
     "unknown field of FileObject"),
    (("size: 1000, media_type", "size: -1, media_type"), 8, "tests[0].object.file.size", "out of range"),
    (("2026-11-26T10:00:00+08:00", "2026-11-26T10:00:00"), 7, "tests[0].object.created", "no UTC offset"),
    (("2026-11-26T10:00:00+08:00", "2026-11-26"), 7, "tests[0].object.created", "date without a time"),
    (("2026-11-26T10:00:00+08:00", "'tomorrow'"), 7, "tests[0].object.created", "not an ISO 8601"),
    (("created: 1795658400", "created: true"), 16, "tests[1].object.created", "boolean"),
    (("created: 1795658400", "created: -5"), 16, "tests[1].object.created", ">= 0"),
    (("      lane: files\n      source: {name: outer-spool}\n      destination: inner-spool\n      created: 1795",
      "      lane: 7\n      source: {name: outer-spool}\n      destination: inner-spool\n      created: 1795"),
     13, "tests[1].object.lane", ""),
    (("    expect: refuse\n", "    expect: refuse\n    expect: allow\n"), 19, "tests[1].expect", "duplicate key"),
])
def test_file_errors_name_file_line_and_key(change, where, key, words):
    text = GOOD.replace(*change, 1)
    assert text != GOOD
    e = error(text)
    assert (e.path, e.line, e.key) == ("pol/tests/t.yaml", where, key)
    assert words in e.message
    assert str(e).startswith(f"pol/tests/t.yaml:{where}: {key}: ")


def test_every_bad_case_is_reported():
    text = GOOD.replace("size: 1000", "sise: 1000")
    e = error(text)
    assert [p.line for p in e.errors] == [8, 17]


def test_not_a_mapping_and_empty_list():
    assert "mapping" in error("- 1\n").message
    assert error("tests: []\n").key == "tests"


def test_two_body_fields_are_an_error():
    e = error(GOOD.replace("      file: {name: report.pdf",
                           "      signaling: {root: Notify}\n      file: {name: report.pdf", 1))
    assert e.line == 3 and "oneof" in e.message


def test_cli_test_passes_and_fails(tmp_path, capsys):
    pol = tmp_path / "pol"
    shutil.copytree(DEMO, pol, ignore=shutil.ignore_patterns("tests"))
    (pol / "tests").mkdir()
    (pol / "tests" / "files.yaml").write_text(GOOD)
    assert run_cli("test", str(pol)) == EXIT_OK
    out = capsys.readouterr().out
    assert f"PASS {pol}/tests/files.yaml:2: a PDF passes" in out
    assert out.rstrip().endswith("policy demo: 2 passed, 0 failed (2 cases)")

    # a mutated policy: PDF no longer allowed
    text = (pol / "policy.yaml").read_text().replace("[application/pdf, ", "[")
    (pol / "policy.yaml").write_text(text)
    assert run_cli("test", str(pol)) == EXIT_FAILED
    out = capsys.readouterr().out
    assert f"FAIL {pol}/tests/files.yaml:2: a PDF passes" in out
    assert "expected allow, got refuse" in out
    assert "decision: refuse by files-documents: media type application/pdf not allowed" in out
    assert "1 passed, 1 failed (2 cases)" in out


def test_cli_test_invalid_inputs_exit_2(tmp_path, capsys):
    pol = tmp_path / "pol"
    shutil.copytree(DEMO, pol, ignore=shutil.ignore_patterns("tests"))
    (pol / "tests").mkdir()
    (pol / "tests" / "files.yaml").write_text(GOOD.replace("expect: allow", "expect: maybe"))
    assert run_cli("test", str(pol)) == EXIT_INVALID
    assert f"{pol}/tests/files.yaml:9: tests[0].expect" in capsys.readouterr().err
    (pol / "tests" / "files.yaml").write_text(GOOD)
    (pol / "policy.yaml").write_text("policy: x\n")
    assert run_cli("test", str(pol)) == EXIT_INVALID


def test_cli_test_without_cases_fails(tmp_path, capsys):
    pol = tmp_path / "pol"
    shutil.copytree(DEMO, pol, ignore=shutil.ignore_patterns("tests"))
    assert load_suite(pol) == []
    assert run_cli("test", str(pol)) == EXIT_FAILED
    assert "no test cases" in capsys.readouterr().err


# --- hypothesis: whatever the bytes, PolicyError or cases ---------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True),
                     st.text(max_size=30), st.sampled_from(["2026-11-26T10:00:00+08:00", "files", "allow"]))
_keys = st.sampled_from(["tests", "name", "object", "expect", "rule", "reason_contains", "lane", "source",
                         "device_id", "address", "created", "file", "size", "access_unit", "width",
                         "view_object", "pictures", "content", "params", "reverse", "x"])
_values = st.recursive(_scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                         st.dictionaries(_keys, inner, max_size=5)),
                       max_leaves=20)


def _only_policy_error(data: bytes) -> None:
    try:
        cases = parse_suite({"t.yaml": data}, base="b")
    except PolicyError as e:
        assert e.errors and all(p.path == "b/t.yaml" for p in e.errors)
        return
    for c in cases:
        c.object.SerializeToString()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_only_raise_policy_error(data):
    _only_policy_error(data)


@settings(max_examples=300, deadline=None)
@given(_values)
def test_random_structures_only_raise_policy_error(value):
    _only_policy_error(json.dumps({"tests": [value]}, default=str).encode())
    case = {"name": "x", "expect": "allow", "object": value}
    _only_policy_error(json.dumps({"tests": [case]}, default=str).encode())
    if isinstance(value, dict):
        case["object"] = {"lane": "video", "access_unit": value, "source": value, "created": value.get("x", 0)}
        _only_policy_error(json.dumps({"tests": [case]}, default=str).encode())


@settings(max_examples=300, deadline=None)
@given(st.integers(0, len(GOOD) - 1), st.text(max_size=8))
def test_mutated_good_file_only_raises_policy_error(at, insert):
    _only_policy_error((GOOD[:at] + insert + GOOD[at:]).encode("utf-8", "surrogatepass"))


@pytest.mark.parametrize("value", ["!!bool maybe", '!!bool ""', '!!int ""', '!!int "-"', '!!float "+"',
                                   "!!timestamp nope", "!!python/object:os.system x", "!foo x", "!!int 5"])
def test_explicit_tags_refused_by_the_suite_loader(tmp_path, value):
    # issue 15: PyYAML's constructors raised KeyError/IndexError/AttributeError past `policy test`.
    (tmp_path / "policy.yaml").write_bytes((DEMO / "policy.yaml").read_bytes())
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "t.yaml").write_text(GOOD.replace("size: 1000,", f"size: {value},", 1))
    with pytest.raises(PolicyError) as info:
        load_suite(tmp_path)
    e = info.value
    assert (e.path, e.line, e.key) == (str(tmp_path / "tests" / "t.yaml"), 8, "tests[0].object.file.size")
    assert e.message.startswith("explicit YAML tags are not allowed: !")
    assert run_cli("test", str(tmp_path)) == EXIT_INVALID
