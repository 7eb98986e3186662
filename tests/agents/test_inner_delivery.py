"""The inner agent's delivery steps (InnerAgent.deliver / publish), without a link: a fake trail
notes what the output folder looked like at each record and at each fsync of the trail."""
from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

from ferry.agents.common import AuditQueue
from ferry.agents.inner import InnerAgent
from ferry.audit import AuditUnavailable
from ferry.lanes.files import WriteFile
from ferry.lanes.inner import InnerDispatch


class FakeTrail:
    """Writes nothing; notes each record and sync with the folder's listing at that moment."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.down = False
        self.sync_fails = False
        self.log: list[tuple] = []

    def listing(self) -> list[str]:
        return sorted(os.listdir(self.out))

    def append(self, now: float, **fields) -> dict:
        if self.down:
            raise AuditUnavailable("disk full")
        self.log.append(("record", fields["event"], self.listing()))
        return fields

    def sync(self, now: float) -> None:
        if self.down or self.sync_fails:
            raise AuditUnavailable("fdatasync failed")
        self.log.append(("sync", self.listing()))


class FakeState:
    def __init__(self, trail: FakeTrail) -> None:
        self.trail = trail

    def remember(self, r) -> None:
        self.trail.log.append(("journal", r.object_id, self.trail.listing()))


def _agent(tmp_path) -> tuple[InnerAgent, FakeTrail, Path]:
    out = tmp_path / "spool"
    out.mkdir()
    trail = FakeTrail(out)
    a = InnerAgent.__new__(InnerAgent)           # no keys, sockets or policy: only the delivery steps
    a.out = out
    a.publications, a.claimed, a.crash_at = [], set(), None
    a.lanes = {"files": {"delivered": 0, "refused": 0, "lost": 0}}
    a.id = SimpleNamespace(audit=trail)
    a.records = AuditQueue(trail, lambda: SimpleNamespace(hash=b"\1" * 32), "delivery", 100)
    a.dispatch = InnerDispatch(None, files_output=True)
    a.receiver = SimpleNamespace(opened_high=lambda epoch: 5)
    a.state = FakeState(trail)
    return a, trail, out


def _write(oid: int, name: str = "a.txt", content: bytes = b"hello") -> WriteFile:
    ids = {"lane": "files", "object_id": oid, "epoch": 1, "blocks": [3]}
    delivered = {"event": "object_delivered", "verdict": "delivered", **ids, "rule": "r", "reason": "ok",
                 "detail": {"name": name, "media_type": "text/plain"}}
    lost = {"event": "object_lost", "verdict": "lost", **ids}
    return WriteFile(name, content, delivered, lost, 1_800_000_000.0)


def _temp(oid: int) -> str:
    return f".ferry-object-{oid}-"


def test_the_content_is_written_then_journaled_and_recorded_then_synced_then_put_in_place(tmp_path):
    a, trail, out = _agent(tmp_path)
    a.deliver(_write(7), out)
    assert all(n.startswith(".") for n in os.listdir(out))   # recorded, not yet synced: not in place
    a.publish()
    [journal, record, sync] = trail.log
    assert journal[:2] == ("journal", 7) and record[:2] == ("record", "object_delivered")
    for step in (journal, record, sync):             # until the trail is synced: only the temporary file
        [temp] = step[-1]
        assert temp.startswith(_temp(7)) and temp.endswith(".tmp")
    assert sorted(os.listdir(out)) == ["a.txt"] and (out / "a.txt").read_bytes() == b"hello"
    assert a.publications == [] and a.claimed == set()
    a.deliver(_write(8), out)                          # the next free name, as its record says
    a.publish()
    assert trail.log[-2][1] == "object_delivered" and sorted(os.listdir(out)) == ["a (1).txt", "a.txt"]


def test_while_the_trail_is_down_the_file_waits_under_its_temporary_name(tmp_path):
    a, trail, out = _agent(tmp_path)
    trail.down = True
    a.deliver(_write(7), out)
    a.deliver(_write(8), out)
    assert [e[0] for e in trail.log] == ["journal", "journal"]
    assert all(n.startswith(".ferry-object-") for n in os.listdir(out)) and len(os.listdir(out)) == 2
    assert a.claimed == {"a.txt", "a (1).txt"}        # names chosen (and recorded) are kept for them
    a.publish()
    assert len(os.listdir(out)) == 2 and not any(e[0] == "sync" for e in trail.log)
    trail.down = False
    assert a.records.flush()
    trail.sync_fails = True                            # written, but not known to be on disk: still waiting
    a.publish()
    assert all(n.startswith(".") for n in os.listdir(out))
    trail.sync_fails = False
    a.publish()
    assert sorted(os.listdir(out)) == ["a (1).txt", "a.txt"]
    records = [e for e in trail.log if e[0] == "record"]
    assert [e[1] for e in records] == ["object_delivered", "object_delivered"]
    assert all(not any(not n.startswith(".") for n in e[2]) for e in records)   # nothing published before


def test_a_rename_that_fails_after_the_record_is_recorded_lost(tmp_path):
    a, trail, out = _agent(tmp_path)
    trail.down = True
    a.deliver(_write(7), out)
    (out / "a.txt").write_bytes(b"a consumer's file")   # the chosen name is taken meanwhile
    trail.down = False
    a.records.flush()
    a.publish()
    events = [e[1] for e in trail.log if e[0] == "record"]
    assert events == ["object_delivered", "object_lost"]
    assert sorted(os.listdir(out)) == ["a.txt"] and (out / "a.txt").read_bytes() == b"a consumer's file"
    assert a.lanes["files"] == {"delivered": 1, "refused": 0, "lost": 1}


def test_a_failed_temporary_write_is_recorded_lost_and_nothing_is_journaled(tmp_path):
    a, trail, out = _agent(tmp_path)
    os.chmod(out, 0o500)
    try:
        if os.access(out, os.W_OK):                    # root: make the folder unusable another way
            os.chmod(out, 0o700)
            a.out = out = out / "file-not-folder"
            out.write_bytes(b"")
        a.deliver(_write(7), out)
    finally:
        os.chmod(tmp_path / "spool", 0o700)
    assert [(e[0], e[1]) for e in trail.log] == [("record", "object_lost")]
    assert a.publications == []


def test_the_files_of_one_read_are_put_in_place_after_one_trail_fsync(tmp_path):
    a, trail, out = _agent(tmp_path)
    for oid in (1, 2, 3):
        a.deliver(_write(oid, "b.txt"), out)
    a.publish()
    assert [e[0] for e in trail.log] == ["journal", "record"] * 3 + ["sync"]
    assert sorted(os.listdir(out)) == ["b (1).txt", "b (2).txt", "b.txt"]
