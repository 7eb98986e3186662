"""The inner agent never publishes a file before its audit record (issue 11, item 2).

It writes the content to a temporary dot-name in the output folder, journals the object ID and
writes and fsyncs the ``object_delivered`` record (with ``written_as``), and only then renames
the file into place. With the audit disk failing the file stays unpublished; a kill -9 at any
step leaves no published file without its record, and the restarted agent removes or publishes
each leftover temporary file and records it once.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from appliance import read_trail
from disk_full import fill, tmpfs
from rootcheck import need_root
from waiting import wait_until

from .test_replay_restart import Tap, replay

pytestmark = pytest.mark.e2e

TEMP = re.compile(r"^\.ferry-object-(\d+)-[0-9a-f]+\.tmp$")


def _inner(a, event: str) -> list[dict]:
    return [r for r in read_trail(a.inner_audit) if r["event"] == event]


def _temps(a) -> list[str]:
    return sorted(n for n in os.listdir(a.inner_spool) if n.startswith("."))


def _published(a) -> set[str]:
    return {n for n in os.listdir(a.inner_spool) if not n.startswith(".")}


def _recorded_as(a) -> set[str]:
    return {r["detail"]["written_as"] for r in _inner(a, "object_delivered")}


def _sent_id(a, name: str) -> int | None:
    for r in read_trail(a.outer_audit):
        if r["event"] == "object_sent" and r["detail"]["name"] == name:
            return r["object_id"]
    return None


def _exited(a, role: str, code: int) -> None:
    p = a.procs[role]
    wait_until(lambda: p.poll() is not None, 30, f"the {role} agent to crash at the test hook",
               details=lambda: a.log(role)[-3000:])
    assert p.returncode == code, a.log(role)[-3000:]
    a.procs.pop(role)


def _verify(trail) -> None:
    r = subprocess.run([sys.executable, "-m", "ferry", "audit", "verify", str(trail)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


# --- the audit disk fails ----------------------------------------------------------------------

@pytest.fixture
def inner_audit_disk(appliance_factory):
    """An appliance whose inner audit trail lives on a 256 KiB tmpfs (filled by the test)."""
    need_root("mount", "umount")
    a = appliance_factory()
    with tmpfs(a.inner_audit):
        try:
            yield a
        finally:
            a.stop()


def _send_until_held(a) -> tuple[str, list[str]]:
    """Send files one at a time until one is not recorded (the trail's slack is used up);
    that one's name, and the names sent before it."""
    before: list[str] = []
    for n in range(60):
        name = f"during-{n:02d}.txt"
        a.drop(name, f"{name}: crossing while the inner audit disk is full\n".encode())
        oid = a.wait_for(lambda: _sent_id(a, name), 30, f"{name} sent")
        # the inner agent either records it, or says its trail is down
        held = a.wait_for(lambda: ("no" if any(r.get("object_id") == oid for r in _inner(a, "object_delivered"))
                                   else "yes" if "audit trail unavailable" in a.log("inner") else None),
                          30, f"{name} delivered or held") == "yes"
        if held:
            return name, before
        before.append(name)
    raise AssertionError("the inner trail never became unwritable")


def _fill_until_held(a) -> tuple[Path, str, list[str]]:
    """before.txt crosses while the inner audit disk has room; then the disk is filled and files are
    sent until one is held. The filler (unlink it and the trail comes back), the held file's name,
    and the names sent before it."""
    a.drop("before.txt", b"crosses while the disk has room\n")
    a.wait_for(lambda: a.outcomes().get("before.txt") == "delivered", 30, "before.txt")
    filler = a.inner_audit / "filler"
    fill(filler)
    held, before = _send_until_held(a)
    return filler, held, before


def test_with_the_audit_disk_full_a_file_is_held_unpublished_then_delivered(inner_audit_disk):
    a = inner_audit_disk.start()
    filler, held, before = _fill_until_held(a)
    # held: written under a temporary dot-name, not published, no record
    assert held not in _published(a), "a file was published although its audit record could not be written"
    assert _published(a) <= _recorded_as(a)
    [temp] = _temps(a)
    assert int(TEMP.match(temp).group(1)) == _sent_id(a, held)
    filler.unlink()
    # the trail comes back: the record first, then the file
    a.wait_for(lambda: held in _published(a), 30, f"{held} published after the trail came back")
    assert _temps(a) == []
    [rec] = [r for r in _inner(a, "object_delivered") if r["object_id"] == _sent_id(a, held)]
    assert rec["detail"]["written_as"] == held and (a.inner_spool / held).read_bytes().startswith(held.encode())
    assert _published(a) == _recorded_as(a) == {"before.txt", held, *before}
    a.stop()
    _verify(a.inner_audit)


def test_a_kill_during_an_audit_outage_leaves_no_file_without_a_record(inner_audit_disk):
    a = inner_audit_disk.start()
    filler, held, before = _fill_until_held(a)
    assert held not in _published(a), "a file was published although its audit record could not be written"
    a.kill("inner")
    # after the crash: every published file has its record
    assert _published(a) <= _recorded_as(a)
    assert len(_temps(a)) == 1
    filler.unlink()
    a.start_role("inner")
    oid = _sent_id(a, held)
    # the leftover is removed and recorded once, as lost, with a reason code
    lost = a.wait_for(lambda: [r for r in _inner(a, "object_lost") if r["object_id"] == oid], 30,
                      f"{held} recorded lost")
    assert [r["code"] for r in lost] == ["delivery_interrupted"]
    assert _temps(a) == [] and held not in _published(a)
    assert _published(a) == _recorded_as(a) == {"before.txt", *before}
    # every file sent has exactly one outcome on the inner side
    outcomes = [r for r in read_trail(a.inner_audit)
                if r["event"] in ("object_delivered", "object_lost", "object_refused")]
    sent = [r["object_id"] for r in read_trail(a.outer_audit) if r["event"] == "object_sent"]
    assert sorted(r["object_id"] for r in outcomes) == sorted(sent)
    a.stop()
    _verify(a.inner_audit)


# --- a crash at each step (test hook) ----------------------------------------------------------

@pytest.fixture
def tapped(appliance_factory):
    a = appliance_factory()
    tap = Tap(a.port)
    text = (a.work / "outer.toml").read_text().replace(f"peer_port = {a.port}", f"peer_port = {tap.port}")
    (a.work / "outer.toml").write_text(text)
    yield a, tap
    tap.close()


def _start_crashing(a, monkeypatch, step: str) -> None:
    monkeypatch.setenv("FERRY_TEST_CRASH_AT", step)
    a.start_role("inner")
    monkeypatch.delenv("FERRY_TEST_CRASH_AT")
    a.start_role("outer")


def test_a_crash_between_record_and_rename_publishes_at_restart_and_a_replay_is_refused(tapped, monkeypatch):
    a, tap = tapped
    _start_crashing(a, monkeypatch, "before_rename")
    content = b"%PDF-1.4\n" + os.urandom(30_000) + b"\n%%EOF\n"   # whole: the content check walks to %%EOF
    a.drop("report.pdf", content)
    _exited(a, "inner", 137)
    oid = _sent_id(a, "report.pdf")
    # the record is on disk, the file is not in place
    [rec] = _inner(a, "object_delivered")
    assert rec["object_id"] == oid and rec["detail"]["written_as"] == "report.pdf"
    assert _published(a) == set()
    [temp] = _temps(a)
    assert int(TEMP.match(temp).group(1)) == oid
    captured = tap.take()
    a.start_role("inner")
    a.wait_for(lambda: _inner(a, "delivery_recovered"), 30, "the leftover recovered")
    assert _published(a) == {"report.pdf"} and _temps(a) == []
    assert (a.inner_spool / "report.pdf").read_bytes() == content
    [recovered] = _inner(a, "delivery_recovered")
    assert recovered["object_id"] == oid and recovered["code"] == "delivery_interrupted"
    assert recovered["detail"]["written_as"] == "report.pdf"
    # a replay of the object is refused: its ID was journaled before the record
    replay(a.port, captured)
    a.wait_for(lambda: [r for r in _inner(a, "block_refused") + _inner(a, "object_refused")
                        if r.get("code") in ("replay", "replayed_object")], 30, "the replay refused")
    assert _published(a) == {"report.pdf"} and _temps(a) == []
    assert len(_inner(a, "object_delivered")) == 1 and not _inner(a, "object_lost")
    # and files still cross
    a.drop("after.txt", b"after the restart\n")
    a.wait_for(lambda: "after.txt" in _published(a), 30, "after.txt")
    assert len(_inner(a, "delivery_recovered")) == 1


def test_a_crash_before_the_record_removes_the_leftover_and_records_it_lost(tapped, monkeypatch):
    a, _ = tapped
    _start_crashing(a, monkeypatch, "before_record")
    a.drop("note.txt", b"the agent dies before this file's record\n")
    _exited(a, "inner", 137)
    oid = _sent_id(a, "note.txt")
    assert not _inner(a, "object_delivered") and _published(a) == set()
    assert len(_temps(a)) == 1
    a.start_role("inner")
    lost = a.wait_for(lambda: _inner(a, "object_lost"), 30, "the leftover recorded")
    assert [(r["object_id"], r["code"]) for r in lost] == [(oid, "delivery_interrupted")]
    assert _temps(a) == [] and _published(a) == set()
    # a restart later records nothing more
    a.stop()
    a.procs.clear()
    a.start()
    a.drop("later.txt", b"later\n")
    a.wait_for(lambda: "later.txt" in _published(a), 30, "later.txt")
    assert len(_inner(a, "object_lost")) == 1 and not _inner(a, "delivery_recovered")
