"""Issue 11 items 4 and 8 in the files lane (pure): extension/type agreement, trailing data, empty
files, both sides deciding the same; and every refusal with an object ID that reconcile counts."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from file_samples import GIF, HTML, JPEG, PDF, PNG, ZIP
from ferry.audit import reconcile
from ferry.codecs import media_type as mt
from ferry.codecs.media_type import EXTENSION_TYPES, MEDIA_TYPES, extension_refusal, name_extension
from ferry.lanes.files import (BUILTIN_RULE, OuterFilesLane, SpoolFile, WriteFile, content_refusal, inner_write,
                               make_file_object)
from ferry.lanes.work import AuditIntent, ObjectIds, SealObject
from ferry.policy import Decision, compile_policy, parse_policy, policy_hash
from ferry.reasons import Reason

WALL = 1_800_000_000.0


def _plan(extra: str = "", types: str = "[application/pdf, image/png, image/jpeg, image/gif, application/zip, "
                                           "text/plain]"):
    text = f"""
policy: t
version: 1
default: deny
sources:
  outer-spool: {{kind: spool}}
destinations:
  inner-spool: {{kind: spool}}
rules:
  - id: docs
    lane: files
    from: outer-spool
    to: inner-spool
    files: {{max_size: 100000, media_types: {types}, name_pattern: "[A-Za-z0-9.-]+"}}
{extra}""".encode()
    files = {"policy.yaml": text}
    return compile_policy(parse_policy(files), policy_hash(files))


PLAN = _plan()


def _take(name: str, content: bytes, plan=PLAN, lane=None):
    lane = lane or OuterFilesLane(source="outer-spool", destination="inner-spool", ids=ObjectIds(7))
    return lane.take(SpoolFile(name, f"/spool/{name}", "file", len(content), content), plan, 1.0, WALL)


def _code(work) -> str | None:
    first = work[0]
    if isinstance(first, SealObject):
        return None
    assert isinstance(first, AuditIntent) and first.fields["verdict"] == "refused"
    return first.fields["code"]


def _inner(name: str, content: bytes, plan=PLAN):
    """What the inner side does with an object as a (possibly compromised) outer agent made it."""
    obj = make_file_object(object_id=3, name=name, content=content, source="outer-spool",
                           destination="inner-spool", now=WALL)
    d = plan.decide(obj)
    if not d.allowed:
        return d
    return inner_write(obj, d, 1, (0,))


CASES = [   # name, content, code (None: crosses)
    ("holiday.png", PNG + ZIP, Reason.TRAILING_DATA),
    ("blank.png", b"", Reason.EMPTY_FILE),
    ("report.pdf", HTML, Reason.EXTENSION_MISMATCH),
    ("readme.png", PDF, Reason.EXTENSION_MISMATCH),
    ("cut.jpg", JPEG[:-2], Reason.MALFORMED_CONTENT),
    ("photo.jpeg", JPEG + b"\0", Reason.TRAILING_DATA),
    ("anim.gif", GIF + b"x", Reason.TRAILING_DATA),
    ("bundle.zip", ZIP + b"\n", Reason.TRAILING_DATA),
    ("doc.pdf", PDF + b"<script>", Reason.TRAILING_DATA),
    ("archive.txt", ZIP, Reason.EXTENSION_MISMATCH),
    ("photo.PNG", JPEG, Reason.EXTENSION_MISMATCH),           # case-insensitive
    ("page.html.pdf", HTML, Reason.EXTENSION_MISMATCH),      # the last extension counts
    ("map.png", PNG, None), ("gate.jpg", JPEG, None), ("gate.jfif", JPEG, None), ("patrol.pdf", PDF, None),
    ("anim.gif", GIF, None), ("bundle.zip", ZIP, None), ("report.docx", ZIP, None), ("notes.txt", b"hi\n", None),
    ("page.html", HTML, None),                               # unknown extension: the rule's types decide
    ("noext", PNG, None),
    ("pic.png.txt", b"text\n", None),
]


@pytest.mark.parametrize("name,content,code", CASES)
def test_outer_and_inner_decide_the_same(name, content, code):
    assert _code(_take(name, content)) == code
    inner = _inner(name, content)
    if code is None:
        assert isinstance(inner, WriteFile)
    else:
        assert isinstance(inner, Decision) and not inner.allowed and inner.code == code


def test_the_reasons_say_what_was_found():
    [refusal, _move] = _take("readme.png", PDF)
    f = refusal.fields
    assert f["rule"] == BUILTIN_RULE and f["detail"]["media_type"] == "application/pdf"
    assert f["reason"] == "name 'readme.png' ends in .png, which claims image/png, but the content is application/pdf"
    assert type(f["object_id"]) is int and f["sm3"]
    [refusal, _move] = _take("holiday.png", PNG + ZIP)
    assert refusal.fields["reason"] == (f"{len(ZIP)} bytes after the end of the image/png (which ends at byte "
                                        f"{len(PNG)} of {len(PNG) + len(ZIP)})")
    assert "no EOI" in content_refusal("cut.jpg", JPEG[:-2], mt.JPEG).reason


def test_a_policy_refusal_comes_before_the_content_checks():
    """A type the rule does not allow is the policy's refusal (content_limit), whatever the name says."""
    d = _take("invoice.pdf", b"MZ\x90\x00" + bytes(100))[0].fields
    assert (d["rule"], d["code"]) == ("docs", Reason.CONTENT_LIMIT)


def test_empty_files_cross_only_under_a_rule_that_allows_them():
    allow = ("  - id: markers\n    lane: files\n    from: outer-spool\n    to: inner-spool\n"
             "    files: {max_size: 10, media_types: [text/plain], name_pattern: '[a-z]+\\.done', allow_empty: true}\n")
    plan = _plan(allow)
    assert _code(_take("batch.done", b"", plan)) is None
    assert isinstance(_inner("batch.done", b"", plan), WriteFile)
    # another name: rule docs, which does not allow empty files, refuses first (markers: its name_pattern)
    d = _take("blank.txt", b"", plan)[0].fields
    assert (d["rule"], d["code"], d["reason"]) == ("docs", Reason.EMPTY_FILE,
                                                   "empty file (the rule does not set allow_empty)")
    assert _inner("blank.txt", b"", plan).code == Reason.EMPTY_FILE
    # under allow_empty an empty file needs no extension agreement (there is no content to disagree)
    assert content_refusal("x.png", b"", mt.TEXT) is None
    # docs comes first but refuses the empty file: the next rule, which allows it, decides
    assert plan.decide(make_file_object(object_id=1, name="a.done", content=b"", source="outer-spool",
                                        destination="inner-spool", now=WALL)).rule == "markers"


def test_the_extension_table():
    assert set().union(*EXTENSION_TYPES.values()) <= set(MEDIA_TYPES)
    assert all(e == e.lower() and "." not in e for e in EXTENSION_TYPES)
    assert name_extension("a.tar.GZ") == "gz" and name_extension("noext") == "" and name_extension(".png") == ""
    assert extension_refusal("setup.exe", mt.DOSEXEC) is None
    assert "claims application/x-dosexec" in extension_refusal("setup.exe", mt.TEXT)
    assert extension_refusal("run.sh", mt.TEXT) is not None           # a script needs its #!
    assert extension_refusal("data.bin", mt.PDF) is None               # .bin claims nothing


def test_reconcile_counts_the_builtin_rule_refusals():
    """Item 8: a symlink, a bad name, an unreadable file and one too large each get an object ID,
    so reconcile counts them with the policy's refusals."""
    lane = OuterFilesLane(source="outer-spool", destination="inner-spool", ids=ObjectIds(7))
    entries = [SpoolFile("passwd.txt", "/s/passwd.txt", "symlink", 9),
               SpoolFile("bad\x1b[31m\nname.txt", "/s/bad", "file", 3, b"hi\n"),
               SpoolFile("locked.txt", "/s/locked.txt", "file", 3, None, "[Errno 13] Permission denied"),
               SpoolFile("huge.txt", "/s/huge.txt", "file", 1 << 40, None),
               SpoolFile("tool.pdf", "/s/tool.pdf", "file", 4, b"MZ\x90\x00")]
    records = [w.fields for e in entries for w in lane.take(e, PLAN, 1.0, WALL) if isinstance(w, AuditIntent)]
    assert [r["code"] for r in records] == [Reason.NOT_REGULAR_FILE, Reason.BAD_FILE_NAME, Reason.UNREADABLE,
                                            Reason.FILE_TOO_LARGE, Reason.CONTENT_LIMIT]
    ids = [r["object_id"] for r in records]
    assert len(set(ids)) == 5
    report = reconcile(records, [])
    assert report.refused_outer == sorted(ids) and report.ok
    # a trail written before (builtin refusals without an object ID) is counted all the same
    old = [{k: v for k, v in r.items() if k != "object_id"} for r in records[:4]] + records[4:]
    report = reconcile(old, [])
    assert (len(report.refused_outer), report.refused_outer_unnumbered) == (1, 4)


@given(st.sampled_from(["a.png", "a.jpg", "a.gif", "a.zip", "a.pdf", "a.txt", "a.bin", "a", "a.PNG.exe"]),
       st.sampled_from([PNG, JPEG, GIF, ZIP, PDF, b"", b"text\n"]), st.binary(max_size=64), st.integers(0, 2000))
@settings(max_examples=300, deadline=None)
def test_content_refusal_never_raises(name, sample, noise, at):
    """Any content: the lane's checks answer with a refusal of their own codes or None."""
    for content in (sample[:at] + noise + sample[at:], noise, sample[:at]):
        d = content_refusal(name, content, mt.sniff_media_type(content))
        assert d is None or (not d.allowed and d.rule == BUILTIN_RULE and d.code in (
            Reason.EXTENSION_MISMATCH, Reason.TRAILING_DATA, Reason.MALFORMED_CONTENT))
