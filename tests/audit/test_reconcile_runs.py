"""Reconcile matches ``block_lost`` records by block number within one outer agent run (issue 14
item 5): a link cut across key rotations loses every announcement of an epoch, and the inner
agent names that epoch's blocks in the last epoch it knew."""

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from .audit_support import T0
from .test_cli import run
from ferry.audit import AuditTrail, reconcile

STARTED = {"event": "agent_started", "verdict": "info"}


def announced(epoch):
    return {"event": "key_announced", "verdict": "info", "epoch": epoch}


def out(oid, epoch, blocks):
    return {"event": "object_sent", "verdict": "sent", "object_id": oid, "epoch": epoch, "blocks": list(blocks),
            "seq": oid, "time": "t"}


def lost_range(epoch, first, count):
    return {"event": "block_lost", "verdict": "lost", "epoch": epoch, "blocks": [first], "detail": {"count": count}}


def delivered(oid):
    return {"event": "object_delivered", "verdict": "delivered", "object_id": oid}


def test_a_gap_named_in_the_last_known_epoch_covers_the_objects_of_the_missed_epochs():
    """Epochs 11 and 12 were never heard of (the cut); the inner agent's record names blocks 3..8 in
    epoch 10, the last one it knew: objects sealed under 11 and 12 in those blocks are lost."""
    outer = [STARTED, announced(10), out(1, 10, [0, 1]), out(2, 10, [2]), announced(11), out(3, 11, [3, 4]),
             announced(12), out(4, 12, [5, 6, 7, 8]), announced(13), out(5, 13, [9])]
    inner = [delivered(1), delivered(2), lost_range(10, 3, 6), delivered(5)]
    r = reconcile(outer, inner)
    assert r.ok, r.to_dict()
    assert r.lost == [3, 4] and r.delivered == [1, 2, 5]


def test_a_single_lost_block_of_a_later_epoch_named_in_an_earlier_one():
    outer = [STARTED, announced(10), out(1, 10, [0]), announced(11), out(2, 11, [1])]
    r = reconcile(outer, [delivered(1), {"event": "block_lost", "epoch": 10, "blocks": [1]}])
    assert r.ok and r.lost == [2]


def test_another_run_is_not_matched():
    """The same block numbers in the next run (a restart begins at block 0) are other blocks."""
    outer = [STARTED, announced(10), out(1, 10, [0, 1, 2]), STARTED, announced(500), out(2, 500, [1])]
    r = reconcile(outer, [lost_range(10, 0, 3)])
    assert r.lost == [1] and [u["object_id"] for u in r.unaccounted] == [2]
    r = reconcile(outer, [lost_range(500, 0, 3)])
    assert r.lost == [2] and [u["object_id"] for u in r.unaccounted] == [1]


def test_an_epoch_the_outer_trail_never_used_names_nothing():
    outer = [STARTED, announced(10), out(1, 10, [0])]
    r = reconcile(outer, [lost_range(99, 0, 5), {"event": "block_lost", "epoch": 99, "blocks": [0]}])
    assert [u["object_id"] for u in r.unaccounted] == [1]


def test_records_before_the_first_start_are_one_run():
    """An exported range that begins in the middle of a run: its first records are that run."""
    outer = [out(1, 10, [4]), announced(11), out(2, 11, [5]), STARTED, out(3, 900, [5])]
    r = reconcile(outer, [lost_range(10, 4, 2)])
    assert r.lost == [1, 2] and [u["object_id"] for u in r.unaccounted] == [3]


def test_the_cli_reads_the_run_and_epoch_records(tmp_path, key, other_key, capsys):
    """`ferry audit reconcile` keeps agent_started and key_announced of the outer trail."""
    o, i = tmp_path / "outer", tmp_path / "inner"
    t = AuditTrail(o, "outer", "o", key)
    t.append(T0, event="agent_started", verdict="info", reason="outer agent o started")
    t.append(T0, event="key_announced", verdict="info", epoch=10, reason="announced")
    t.append(T0, event="object_sent", verdict="sent", object_id=1, epoch=10, blocks=[0])
    t.append(T0, event="key_announced", verdict="info", epoch=11, reason="key rotated: time")
    t.append(T0, event="object_sent", verdict="sent", object_id=2, epoch=11, blocks=[1, 2])
    t.close(T0)
    t = AuditTrail(i, "inner", "i", other_key)
    t.append(T0, event="object_delivered", verdict="delivered", object_id=1)
    t.append(T0, event="block_lost", verdict="lost", epoch=10, blocks=[1], code="missing", reason="missing",
             detail={"count": 2})
    t.close(T0)
    assert run("reconcile", o, i, "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["lost"] == [2] and report["unaccounted"] == []


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.just(STARTED), st.integers(0, 20).map(announced),
                          st.builds(out, st.integers(0, 30), st.integers(0, 20),
                                    st.lists(st.integers(0, 40), max_size=4)),
                          st.fixed_dictionaries({"event": st.sampled_from(["agent_started", "key_announced",
                                                                           "object_sent"]),
                                                 "epoch": st.one_of(st.none(), st.integers(), st.text(max_size=3)),
                                                 "blocks": st.one_of(st.none(), st.lists(st.integers()))})),
                max_size=30),
       st.lists(st.builds(lambda e, b, c: {"event": "block_lost", "epoch": e, "blocks": b, "detail": {"count": c}},
                          st.one_of(st.none(), st.integers(0, 20), st.text(max_size=2)),
                          st.lists(st.integers(-5, 45), max_size=3), st.one_of(st.integers(-3, 50), st.none())),
                max_size=10))
def test_any_records_reconcile_without_raising_and_a_lost_object_was_sent(outer, inner):
    r = reconcile(outer, inner)
    sent = {rec["object_id"] for rec in outer if rec.get("event") == "object_sent" and "object_id" in rec}
    assert set(r.lost) <= sent and set(r.lost).isdisjoint(u["object_id"] for u in r.unaccounted)
