"""The replay window of delivered object IDs and its journal (ferry.lanes.delivered)."""
from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ferry.audit.records import validate_fields
from ferry.codecs.file_name import check_file_name
from ferry.lanes.delivered import (RECORD_SIZE, DeliveredIds, Leftover, Remember, is_leftover, is_recovery_record,
                                   parse_journal, publish_failed, recover, temp_name, temp_object_id)

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


# --- interrupted deliveries: temporary names and what a restart does with a leftover ------------


_T = "2026-12-06T08:00:00.000000Z"


def _valid(rec):
    """The record as the trail would write it (None left out, reason codes by value), validated."""
    rec = {k: getattr(v, "value", v) for k, v in rec.items() if v is not None}
    validate_fields({"time": _T, "agent": "inner", **rec})
    return rec


def test_a_temporary_name_is_a_dot_name_naming_ferry_and_the_object():
    name = temp_name(2**63 + 5, "00ff")
    assert name == f".ferry-object-{2**63 + 5}-00ff.tmp" and name.startswith(".")
    assert temp_object_id(name) == 2**63 + 5 and is_leftover(name)
    assert check_file_name(name) is not None            # never a name the files lane would deliver
    for bad in (".ferry-object-0-ab.tmp", ".ferry-object-01-ab.tmp", f".ferry-object-{2**64}-ab.tmp",
                ".ferry-object-5-AB.tmp", ".ferry-object-5-.tmp", ".ferry-object-5-ab.tmp.x", "ferry-object-5-ab.tmp",
                ".ferry-object--5-ab.tmp", ".ferry-object-5-ab/../x.tmp"):
        assert temp_object_id(bad) is None, bad
    assert is_leftover(".ferry-4242-abcdef.tmp") and not is_leftover(".ferry-object-5-ab") and not is_leftover("a.tmp")
    for oid, token in ((0, "ab"), (2**64, "ab"), (5, "XY"), (5, "")):
        try:
            temp_name(oid, token)
        except ValueError:
            continue
        raise AssertionError((oid, token))


@given(st.text(max_size=80))
def test_temp_object_id_takes_any_name(name):
    oid = temp_object_id(name)
    assert oid is None or (0 < oid < 2**64 and name.startswith(".ferry-object-") and is_leftover(name))


@given(st.integers(1, 2**64 - 1), st.binary(min_size=1, max_size=16))
def test_temp_names_round_trip(oid, token):
    assert temp_object_id(temp_name(oid, token.hex())) == oid


def _left(oid=77, sm3="ab" * 32, size=5):
    return Leftover(temp_name(oid, "c0ffee"), size, sm3, 1_700_000_000.0)


def _delivered(oid=77, sm3="ab" * 32, size=5, name="a.txt"):
    return {"event": "object_delivered", "verdict": "delivered", "object_id": oid, "sm3": sm3, "size": size,
            "detail": {"name": "a.txt", "written_as": name}}


def test_a_leftover_whose_record_was_written_is_put_in_place_and_recorded_once():
    r = recover(_left(), _delivered(name="a (1).txt"), None)
    assert r.publish_as == "a (1).txt"
    rec = _valid(r.record)
    assert (rec["event"], rec["verdict"], rec["code"], rec["object_id"]) == (
        "delivery_recovered", "info", "delivery_interrupted", 77)
    assert is_recovery_record(rec)


def test_a_leftover_without_its_record_is_removed_and_recorded_lost():
    r = recover(_left(), None, None)
    assert r.publish_as is None
    rec = _valid(r.record)
    assert (rec["event"], rec["verdict"], rec["code"], rec["object_id"]) == (
        "object_lost", "lost", "delivery_interrupted", 77)
    assert is_recovery_record(rec)


def test_a_leftover_that_does_not_match_its_record_is_never_published():
    for left, rec in ((_left(sm3="cd" * 32), _delivered()), (_left(size=6), _delivered()),
                      (_left(sm3=None), _delivered()),
                      (_left(), _delivered(name="../../etc/passwd")), (_left(), _delivered(name=".hidden")),
                      (_left(), {"event": "object_delivered", "object_id": 77, "detail": "x"})):
        r = recover(left, rec, None)
        assert r.publish_as is None and _valid(r.record)["event"] == "object_lost", rec


def test_an_earlier_recovery_is_finished_without_another_record():
    done = recover(_left(), _delivered(), None).record
    r = recover(_left(), _delivered(), done)
    assert (r.publish_as, r.record) == ("a.txt", None)
    lost = recover(_left(), None, None).record
    assert recover(_left(), _delivered(), lost) == type(r)(_left(), None, None)


def test_a_leftover_of_an_older_version_is_removed_and_recorded():
    r = recover(Leftover(".ferry-4242-abcdef.tmp", 3, None, 0.0), None, None)
    assert r.publish_as is None and _valid(r.record)["event"] == "leftover_removed"
    assert not is_recovery_record(r.record)


def test_a_failed_recovery_is_recorded_lost():
    rec = _valid(publish_failed(_left(), "a.txt", "File exists"))
    assert (rec["event"], rec["code"], rec["object_id"]) == ("object_lost", "output_failed", 77)
