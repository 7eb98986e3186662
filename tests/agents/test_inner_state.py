"""The inner agent's state directory (ferry.agents.inner_state): durable, compacted, tolerant."""
from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


_LINE = st.one_of(
    st.binary(max_size=60),
    st.builds(lambda oid, t, junk: b'{"object_id":%d,"time":"%s"%s}' % (oid, t.encode(), junk),
              st.integers(0, 3), st.sampled_from(["2026-01-01T00:00:00.000000Z", "2030", ""]), st.binary(max_size=8)))


@settings(max_examples=200, deadline=None)
@given(st.lists(_LINE, max_size=30), st.sampled_from([1 << 20, 7]))
def test_reading_the_trail_back_takes_any_bytes(lines, chunk):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "audit.jsonl"
        path.write_bytes(b"\n".join(lines))
        old = inner_state.TRAIL_CHUNK
        inner_state.TRAIL_CHUNK = chunk
        try:
            got = trail_records(path, {0, 1, 2, 3}, "2026", lambda r: True)
        finally:
            inner_state.TRAIL_CHUNK = old
    assert all(isinstance(r, dict) and type(r["object_id"]) is int and r["object_id"] in (0, 1, 2, 3) for r in got)


def test_reading_the_trail_back_skips_what_is_not_a_record(tmp_path):
    path = tmp_path / "audit.jsonl"
    path.write_bytes(b'{"object_id":true,"time":"2027"}\n' + b"[" * 100_000 + b'"object_id":1,"time":"2027"\n'
                     + b'{"object_id":1,"time":"2027"}\n')
    assert trail_records(path, {1}, "2026", lambda r: True) == [{"object_id": 1, "time": "2027"}]
