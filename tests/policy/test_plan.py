"""decide(): default deny, first allowing rule wins, refusals quote rule and check."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from ferry.reasons import Reason
from ferry.crypto import sm3
from ferry.lanes.files import make_file_object
from ferry.pb import ferry_pb2
from ferry.policy import (
    DEFAULT_DENY,
    Decision,
    compile_policy,
    load_plan,
    parse_policy,
    policy_hash,
)

DEMO = Path(__file__).resolve().parents[2] / "policy" / "demo"

PDF = b"%PDF-1.7\n" + b"x" * 100
ELF = b"\x7fELF\x02\x01\x01" + b"\0" * 100


def obj(name="report.pdf", content=PDF, source="outer-spool", destination="inner-spool"):
    return make_file_object(object_id=7, name=name, content=content, source=source,
                            destination=destination, now=1700000000.0)


@pytest.fixture(scope="module")
def plan():
    return load_plan(DEMO)


def test_allowed(plan):
    assert plan.decide(obj()) == Decision(True, "files-documents", "allowed by files-documents")


def test_text_png_jpeg_allowed(plan):
    for name, content in [("a.txt", b"hello\n"), ("b.png", b"\x89PNG\r\n\x1a\n" + b"\0" * 8),
                          ("c.jpg", b"\xff\xd8\xff\xe0" + b"\0" * 8)]:
        assert plan.decide(obj(name, content)).allowed, name


def test_refused_for_size(plan):
    d = plan.decide(obj(content=b"%PDF-" + b"x" * (5 * 1024 * 1024 - 5)))
    assert d == Decision(False, "files-documents", "size 5242880 exceeds max_size 1048576", Reason.CONTENT_LIMIT)


def test_size_limit_is_inclusive(plan):
    assert plan.decide(obj(content=b"%PDF-" + b"x" * ((1 << 20) - 5))).allowed
    assert not plan.decide(obj(content=b"%PDF-" + b"x" * ((1 << 20) - 4))).allowed


def test_declared_size_cannot_hide_content(plan):
    o = obj()
    o.file.content = b"%PDF-" + b"x" * (2 << 20)  # declared size still small
    assert plan.decide(o).reason == f"size {len(o.file.content)} exceeds max_size 1048576"


def test_refused_for_media_type(plan):
    d = plan.decide(obj(name="setup.pdf", content=b"MZ\x90\x00" + b"\0" * 60))
    assert not d.allowed and d.rule == "files-documents"
    assert d.reason == ("media type application/x-dosexec not allowed "
                        "(allowed: application/pdf, image/png, image/jpeg, text/plain)")


def test_elf_named_txt_refused(plan):
    d = plan.decide(obj(name="notes.txt", content=ELF))
    assert not d.allowed
    assert d.reason.startswith("media type application/x-executable not allowed")


def test_refused_for_name_pattern(plan):
    d = plan.decide(obj(name="evil..exe"))
    assert d == Decision(False, "files-documents", "name 'evil..exe' does not match name_pattern", Reason.CONTENT_LIMIT)


@pytest.mark.parametrize("name", [
    "../x.pdf", "a/b.pdf", "..", "CON.pdf", ".hidden.pdf", "a\u2215b.pdf", "a\u2044b.pdf",
    "a\uff0fb.pdf", "e\u0301.pdf", "x.pdf\u202eexe",
])
def test_hard_name_rules_apply_whatever_the_pattern(name):
    text = (DEMO / "policy.yaml").read_text().replace(
        "name_pattern: '[A-Za-z0-9]", "name_pattern: '.*|[A-Za-z0-9]")
    files = {"policy.yaml": text.encode()}
    permissive = compile_policy(parse_policy(files), policy_hash(files))
    assert permissive.decide(obj(name="ok.pdf")).allowed
    d = permissive.decide(obj(name=name))
    assert not d.allowed and d.rule == "files-documents", (name, d)
    assert "does not match" not in d.reason


def test_default_deny_other_lane(plan):
    o = obj()
    o.lane = "video"
    assert plan.decide(o) == Decision(
        False, DEFAULT_DENY, "no rule for lane 'video' from 'outer-spool' to 'inner-spool'", Reason.DEFAULT_DENY)


def test_default_deny_other_source(plan):
    d = plan.decide(obj(source="camera-42"))
    assert (d.allowed, d.rule) == (False, "default-deny")
    assert "'camera-42'" in d.reason


def test_default_deny_other_destination(plan):
    d = plan.decide(obj(destination="elsewhere"))
    assert (d.allowed, d.rule) == (False, "default-deny")
    assert "'elsewhere'" in d.reason


def test_default_deny_empty_object(plan):
    d = plan.decide(ferry_pb2.CanonicalObject())
    assert (d.allowed, d.rule) == (False, "default-deny")


def test_files_lane_without_file_body(plan):
    o = ferry_pb2.CanonicalObject(lane="files", destination="inner-spool",
                                  source=ferry_pb2.Source(name="outer-spool"))
    d = plan.decide(o)
    assert (d.allowed, d.rule) == (False, "files-documents")
    assert "no file body" in d.reason


TWO_RULES = """\
policy: two
version: 1
default: deny
sources: {outer-spool: {kind: spool}}
destinations: {inner-spool: {kind: spool}}
rules:
  - id: small-text
    lane: files
    from: outer-spool
    to: inner-spool
    files: {max_size: 10, media_types: [text/plain], name_pattern: '.*'}
  - id: big-pdf
    lane: files
    from: outer-spool
    to: inner-spool
    files: {max_size: 1000, media_types: [application/pdf], name_pattern: '.*'}
"""


def two_rules():
    files = {"policy.yaml": TWO_RULES.encode()}
    return compile_policy(parse_policy(files), policy_hash(files))


def test_first_allowing_rule_wins():
    plan = two_rules()
    assert plan.decide(obj("a.txt", b"hi")).rule == "small-text"
    assert plan.decide(obj("a.pdf", PDF)) == Decision(True, "big-pdf", "allowed by big-pdf")


def test_no_rule_allows_quotes_first_matching_rule():
    d = two_rules().decide(obj("a.txt", b"hello world, too long"))
    assert d == Decision(False, "small-text", "size 21 exceeds max_size 10", Reason.CONTENT_LIMIT)


def test_decide_ignores_outer_rule_field_and_clock():
    plan = two_rules()
    a, b = obj("a.txt", b"hi"), obj("a.txt", b"hi")
    b.rule, b.created, b.object_id = "big-pdf", 0.0, 99
    assert plan.decide(a) == plan.decide(b)


def test_plan_is_immutable(plan):
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.name = "other"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.rules[0].files.max_size = 1 << 30  # type: ignore[misc]
    with pytest.raises(TypeError):
        plan._tables[("files", "x")] = ()  # type: ignore[index]
    assert isinstance(plan.rules, tuple)
    assert isinstance(plan.rules[0].files.media_types, tuple)


def test_plan_carries_name_and_hash(plan):
    files = {"policy.yaml": (DEMO / "policy.yaml").read_bytes()}
    assert plan.name == "demo"
    assert plan.hash == policy_hash(files) and len(plan.hash) == 32
    assert plan.rule("files-documents").destination == "inner-spool"
    assert plan.rule("nope") is None


def test_policy_hash_stable_and_sensitive():
    files = {"policy.yaml": TWO_RULES.encode()}
    h = policy_hash(files)
    assert len(h) == 32
    assert policy_hash({"policy.yaml": TWO_RULES.encode()}) == h
    flipped = bytearray(TWO_RULES.encode())
    flipped[-2] ^= 1
    assert policy_hash({"policy.yaml": bytes(flipped)}) != h
    assert policy_hash({"policy.yml": TWO_RULES.encode()}) != h
    assert policy_hash({"policy.yaml": TWO_RULES.encode() + b"\n"}) != h


def test_policy_hash_is_order_independent_and_unambiguous():
    assert policy_hash({"a": b"1", "b": b"2"}) == policy_hash({"b": b"2", "a": b"1"})
    # moving bytes between the name and the content must change the hash
    assert policy_hash({"ab": b"c"}) != policy_hash({"a": b"bc"})
    assert policy_hash({"a": b"", "b": b""}) != policy_hash({"a": b"b"})


def test_policy_hash_known_value():
    # pins the canonical encoding: domain, count, then (u32 name len, name, u64 len, bytes)
    expected = sm3(b"ferry policy bundle v1\0" + b"\0\0\0\x01" + b"\0\0\0\x01a"
                   + b"\0" * 7 + b"\x01" + b"x")
    assert policy_hash({"a": b"x"}) == expected
