"""The inner agent's state directory (ferry.agents.inner_state): durable, compacted, tolerant."""
from __future__ import annotations

from ferry import limits
from ferry.agents.inner_state import JOURNAL_FILE, LINK_FILE, InnerState
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
