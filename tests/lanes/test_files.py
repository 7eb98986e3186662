"""The outer files pipeline (ferry.lanes.files.OuterFilesLane) and the inner write: pure, no spool."""
from __future__ import annotations

from ferry import limits
from ferry.crypto import sm3
from ferry.lanes.files import (BUILTIN_RULE, MoveAside, OuterFilesLane, SpoolFile, SpoolSettle, WriteFile,
                               inner_write, make_file_object, spool_candidate)
from ferry.lanes.work import AuditIntent, ObjectIds, SealObject
from ferry.policy import Decision, compile_policy, parse_policy, policy_hash
from ferry.reasons import Reason

POLICY = b"""
policy: t
version: 1
default: deny
sources:
  outer-spool: {kind: spool}
destinations:
  inner-spool: {kind: spool}
rules:
  - id: texts
    lane: files
    from: outer-spool
    to: inner-spool
    rate: {per_second: 1, burst: 2}
    files: {max_size: 100, media_types: [text/plain], name_pattern: "[a-z0-9.]+"}
"""
FILES = {"policy.yaml": POLICY}
PLAN = compile_policy(parse_policy(FILES), policy_hash(FILES))
WALL = 1_800_000_000.0


def _lane():
    return OuterFilesLane(source="outer-spool", destination="inner-spool", ids=ObjectIds(0x1234))


def _entry(name="a.txt", content=b"hi\n", kind="file", error=None, size=None):
    return SpoolFile(name, f"/spool/{name}", kind, len(content or b"") if size is None else size, content, error)


def _refusal(work):
    [audit, move] = work
    assert isinstance(audit, AuditIntent) and isinstance(move, MoveAside)
    f = audit.fields
    assert f["event"] == "object_refused" and f["verdict"] == "refused" and f["lane"] == "files"
    assert f["source"] == {"name": "outer-spool", "address": move.address} and f["destination"] == "inner-spool"
    return f


def test_an_allowed_file_is_sealed_with_its_sent_record():
    [w] = _lane().take(_entry(), PLAN, 5.0, WALL)
    assert isinstance(w, SealObject)
    obj = w.obj
    assert obj.object_id == (0x1234 << 32) | 1 and obj.rule == "texts" and obj.created == WALL
    assert obj.file.content == b"hi\n" and obj.file.media_type == "text/plain"
    s = w.sent
    assert (s["event"], s["verdict"], s["rule"], s["object_id"], s["size"]) == ("object_sent", "sent", "texts",
                                                                              obj.object_id, 3)
    assert s["sm3"] == sm3(b"hi\n").hex() and s["policy_hash"] == PLAN.hash.hex()
    assert s["source"] == {"name": "outer-spool", "address": "/spool/a.txt"}
    assert s["detail"] == {"name": "a.txt", "media_type": "text/plain"}


def test_builtin_refusals_come_before_reading_and_the_policy():
    lane = _lane()
    f = _refusal(lane.take(_entry(kind="symlink", content=None, size=9), PLAN, 0, WALL))
    assert (f["rule"], f["reason"], f["size"]) == (BUILTIN_RULE, "not a regular file (symlink)", 9)
    f = _refusal(lane.take(_entry(name=".hidden"), PLAN, 0, WALL))
    assert f["rule"] == BUILTIN_RULE and "hidden" in f["reason"]
    f = _refusal(lane.take(_entry(content=None, error="[Errno 13] Permission denied", size=4), PLAN, 0, WALL))
    assert f["reason"] == "cannot read: [Errno 13] Permission denied"
    f = _refusal(lane.take(_entry(content=None, size=limits.FILE_MAX + 1), PLAN, 0, WALL))
    assert f["reason"] == f"size {limits.FILE_MAX + 1} exceeds the appliance limit {limits.FILE_MAX}"
    assert f["detail"] == {"name": "a.txt", "media_type": None} and "sm3" not in f   # nothing was read
    # each refusal still has its own object ID (issue 11 item 8: reconcile counts them)
    assert f["object_id"] == (0x1234 << 32) | 4 and lane.ids.count == 4


def test_a_policy_refusal_names_the_object():
    f = _refusal(_lane().take(_entry(name="a.pdf", content=b"%PDF-1.7"), PLAN, 0, WALL))
    assert (f["rule"], f["reason"]) == ("texts", "media type application/pdf not allowed (allowed: text/plain)")
    assert f["object_id"] == (0x1234 << 32) | 1 and f["sm3"] == sm3(b"%PDF-1.7").hex()
    assert f["detail"]["media_type"] == "application/pdf" and f["policy_hash"] == PLAN.hash.hex()


def test_the_rate_limit_runs_on_the_monotonic_clock():
    lane = _lane()
    kinds = [type(lane.take(_entry(f"f{i}.txt"), PLAN, 100.0, WALL + 3600 * i)[0]) for i in range(3)]
    assert kinds == [SealObject, SealObject, AuditIntent]     # burst 2: a wall-clock jump refills nothing
    assert isinstance(lane.take(_entry("g.txt"), PLAN, 101.0, WALL)[0], SealObject)
    plan2 = compile_policy(parse_policy(FILES), policy_hash(FILES))
    assert isinstance(lane.take(_entry("h.txt"), plan2, 101.0, WALL)[0], SealObject)   # a reload: new buckets


def test_inner_write_and_its_records():
    obj = make_file_object(object_id=9, name="a.txt", content=b"hi\n", source="outer-spool",
                           destination="inner-spool", now=WALL)
    w = inner_write(obj, Decision(True, "texts", "allowed by texts"), 4, (7, 8))
    assert isinstance(w, WriteFile) and next(w.candidates()) == "a.txt"
    d = w.written("a (1).txt").fields
    assert d["event"] == "object_delivered" and d["blocks"] == [7, 8] and d["epoch"] == 4
    assert d["detail"]["written_as"] == "a (1).txt" and "written_as" not in w.delivered["detail"]
    assert w.failed("EIO").fields["reason"] == "cannot write output: EIO"
    obj.file.size = 99
    assert inner_write(obj, Decision(True, "texts", ""), 4, ()) == Decision(
        False, BUILTIN_RULE, "declared size 99 but content is 3 bytes", Reason.INCONSISTENT_FILE)


def test_spool_settle_needs_an_unchanged_signature_for_the_settle_time():
    s = SpoolSettle(1.0)
    assert s.observe({"a": (1, 10, 0o100644), "b": (5, 1, 0o100644)}, 0.0) == []
    assert s.observe({"a": (2, 11, 0o100644), "b": (5, 1, 0o100644)}, 0.9) == []     # a still growing
    assert s.observe({"a": (2, 11, 0o100644), "b": (5, 1, 0o100644)}, 1.0) == ["b"]
    assert s.observe({"a": (2, 11, 0o100644), "b": (5, 1, 0o100644)}, 1.95) == ["a", "b"]
    s.forget("b")
    assert s.observe({"a": (2, 11, 0o100644), "b": (5, 1, 0o100644)}, 2.0) == ["a"]   # b seen anew
    assert s.observe({}, 3.0) == [] and s.observe({"a": (2, 11, 0o100644)}, 9.0) == []  # gone, then new


def test_spool_candidates_skip_hidden_and_partial_names():
    assert spool_candidate("a.txt") and spool_candidate("a.part.txt")
    assert not any(map(spool_candidate, [".a", "a.part", "a.tmp", "a.partial", "a.crdownload", "a.filepart"]))
