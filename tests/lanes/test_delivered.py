"""The replay window of delivered object IDs and its journal (ferry.lanes.delivered)."""
from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ferry.lanes.delivered import RECORD_SIZE, DeliveredIds, Remember, parse_journal

SKEW = 300.0


def test_an_id_is_a_replay_for_as_long_as_its_created_time_is_acceptable():
    w = DeliveredIds(skew=SKEW)
    r = w.remember(7, 1000.0, epoch=3, opened=40)
    assert r == Remember(7, 1300.0, 3, 40)
    assert "already delivered" in (w.refusal(7, 1000.0) or "")
    assert w.refusal(8, 1000.0) is None
    assert w.expire(1299.0) == 0 and 7 in w
    assert w.expire(1300.5) == 1 and 7 not in w    # after 1300 the skew check refuses created=1000 anyway


def test_a_full_window_forgets_the_oldest_and_refuses_what_it_cannot_tell():
    w = DeliveredIds(max_ids=3, skew=SKEW)
    for i, created in enumerate((100.0, 101.0, 102.0, 103.0), start=1):
        w.remember(i, created, 1, -1)
    assert len(w) == 3 and 1 not in w and w.horizon == 100.0 + SKEW
    assert "replay horizon" in (w.refusal(1, 100.0) or "")        # forgotten, but still refused
    assert w.refusal(9, 104.0) is None
    # the horizon survives a compacted journal
    w2 = DeliveredIds(max_ids=3, skew=SKEW)
    w2.load(parse_journal(b"".join(r.record() for r in w.live()))[0], wall=0.0)
    assert w2.horizon == 100.0 + SKEW and set(w2.live()) == set(w.live())


def test_journal_roundtrip_torn_tail_and_corruption():
    recs = [Remember(i, 1000.0 + i, 5, 10 * i) for i in range(1, 5)]
    data = b"".join(r.record() for r in recs)
    assert parse_journal(data) == (recs, 0)
    assert parse_journal(data[:-5]) == (recs[:3], 1)              # a torn last record
    bad = bytearray(data)
    bad[RECORD_SIZE + 3] ^= 0x40
    assert parse_journal(bytes(bad)) == ([recs[0]] + recs[2:], 1)


def test_loading_keeps_only_ids_inside_the_window():
    w = DeliveredIds(skew=SKEW)
    w.load([Remember(1, 500.0, 1, 2), Remember(2, 1500.0, 1, 3)], wall=1000.0)
    assert 1 not in w and 2 in w


@given(st.binary(max_size=3 * RECORD_SIZE + 7))
def test_parse_journal_takes_any_bytes(data):
    recs, bad = parse_journal(data)
    assert len(recs) + bad <= len(data) // RECORD_SIZE + 1
    for r in recs:
        assert r.record() in data


@given(st.lists(st.tuples(st.integers(1, 50), st.floats(0, 1e4)), max_size=200), st.integers(1, 20))
def test_the_window_is_bounded_and_never_forgets_without_a_horizon(entries, cap):
    w = DeliveredIds(max_ids=cap, skew=SKEW)
    delivered = []
    for oid, created in entries:
        if w.refusal(oid, created) is None:
            w.remember(oid, created, 0, -1)
            delivered.append((oid, created))
        assert len(w) <= cap
    for oid, created in delivered:   # a replay of any delivered object is refused: by its ID or the horizon
        assert w.refusal(oid, created) is not None
