"""The inner agent's state directory (ferry.agents.inner_state): durable, compacted, tolerant."""
from __future__ import annotations

import pytest

from ferry import limits
from ferry.agents import inner_state
from ferry.agents.inner_state import JOURNAL_FILE, LINK_FILE, InnerState, trail_records
from ferry.audit import AuditTrail
from ferry.audit.records import format_time
from ferry.crypto import SM2PrivateKey
from ferry.lanes.delivered import RECORD_SIZE, DeliveredIds, Remember
from ferry.wire.resume import LinkState


def test_state_survives_a_restart_and_a_torn_journal(tmp_path):
    s = InnerState(tmp_path / "st")
    assert s.load() == (None, [], [])
    s.compact([])
    recs = [Remember(i, 1000.0 + i, 7, 10 * i) for i in range(1, 4)]
    for r in recs:
        s.remember(r)
    s.save_link(LinkState(7, b"ann", {7: 30}))
    s.close()
    with open(tmp_path / "st" / JOURNAL_FILE, "ab") as f:   # a kill -9 in the middle of a write
        f.write(b"\x01\x02\x03")
    state, got, problems = InnerState(tmp_path / "st").load()
    assert state == LinkState(7, b"ann", {7: 30}) and got == recs
    assert len(problems) == 1 and "torn" in problems[0]
    (tmp_path / "st" / LINK_FILE).write_bytes(b"{not json")
    state, _, problems = InnerState(tmp_path / "st").load()
    assert state is None and "starting without the stored link state" in problems[0]


def test_the_journal_is_compacted_once_it_holds_far_more_than_the_live_entries(tmp_path, monkeypatch):
    monkeypatch.setattr(limits, "JOURNAL_SLACK", 5)
    s = InnerState(tmp_path / "st")
    s.compact([])
    window = DeliveredIds(skew=300.0)
    for i in range(1, 20):
        s.remember(window.remember(i, 100.0 + i, 1, i))
    window.expire(450.0)                                       # all 19 created before 150: gone
    assert len(window) == 0 and s.needs_compaction(len(window))
    s.compact(window.live())
    assert s.records == 0 and not s.needs_compaction(0)
    assert (tmp_path / "st" / JOURNAL_FILE).stat().st_size == 0
    s.remember(window.remember(99, 500.0, 1, 50))
    assert (tmp_path / "st" / JOURNAL_FILE).stat().st_size == RECORD_SIZE and s.records == 1
    s.close()


@pytest.mark.parametrize("chunk", [1 << 20, 97])
def test_the_trail_is_read_back_to_the_oldest_leftover(tmp_path, monkeypatch, chunk):
    monkeypatch.setattr(inner_state, "TRAIL_CHUNK", chunk)   # lines cut across reads too
    trail = AuditTrail(tmp_path / "audit", "inner", "in-1", SM2PrivateKey.generate())
    t0 = 1_800_000_000.0
    for i, (event, oid) in enumerate([("object_delivered", 1), ("agent_started", None), ("object_delivered", 2),
                                      ("object_lost", 3), ("object_delivered", 4), ("object_refused", 2)]):
        trail.append(t0 + 10 * i, event=event, verdict="info", object_id=oid, reason=f"r{i}",
                     detail={"time": "2000-01-01T00:00:00.000000Z"})    # an older time inside: not the record's
    trail.close_without_checkpoint()
    with open(trail.path, "ab") as f:
        f.write(b'{"object_id":2,"time":"2099')          # a torn tail
    path = trail.path

    def pick(ids, since, events=("object_delivered", "object_lost")):
        return [(r["event"], r["object_id"]) for r in trail_records(path, ids, since, lambda r: r["event"] in events)]

    assert pick({1, 2, 3, 4}, format_time(t0)) == [("object_delivered", 4), ("object_lost", 3),
                                                   ("object_delivered", 2), ("object_delivered", 1)]
    assert pick({1, 2, 3}, format_time(t0 + 15)) == [("object_lost", 3), ("object_delivered", 2)]
    assert pick({2}, format_time(t0), ("object_refused",)) == [("object_refused", 2)]
    assert pick(set(), format_time(t0)) == [] and pick({9}, format_time(t0)) == []
    assert trail_records(tmp_path / "none.jsonl", {1}, format_time(t0), lambda r: True) == []
