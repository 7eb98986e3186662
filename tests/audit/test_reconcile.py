import json

from .audit_support import T0
from .test_cli import run
from ferry.audit import AuditTrail, reconcile


def out(oid, epoch=1, blocks=(0,), seq=0):
    return {"event": "object_sent", "verdict": "sent", "object_id": oid, "epoch": epoch,
            "blocks": list(blocks), "seq": seq, "lane": "video", "time": "t"}


STARTED = {"event": "agent_started", "verdict": "info"}    # an outer agent (re)started: a new run


def inn(event, oid, seq=0):
    return {"event": event, "object_id": oid, "seq": seq, "time": "t"}


def test_all_accounted():
    outer = [out(1), out(2), out(3), {"event": "object_refused", "object_id": 9}]
    inner = [inn("object_delivered", 1), inn("object_refused", 2), inn("object_lost", 3)]
    r = reconcile(outer, inner)
    assert r.ok and r.exit_status == 0 and r.sent == 3
    assert (r.delivered, r.refused_inner, r.lost, r.refused_outer) == ([1], [2], [3], [9])
    assert not (r.unaccounted or r.unexpected or r.duplicates)


def test_missing_inner_outcome():
    r = reconcile([out(1), out(2, blocks=(4, 5), seq=7)], [inn("object_delivered", 1)])
    assert not r.ok and r.exit_status == 1
    assert [u["object_id"] for u in r.unaccounted] == [2]
    assert r.unaccounted[0]["seq"] == 7 and r.unaccounted[0]["blocks"] == [4, 5]


def test_block_lost_covers_objects_in_that_block():
    outer = [out(1, blocks=(10,)), out(2, blocks=(10, 11)), out(3, blocks=(12,)),
             STARTED, out(4, epoch=2, blocks=(11,))]
    inner = [{"event": "block_lost", "epoch": 1, "blocks": [11, 10]}]
    r = reconcile(outer, inner)
    assert r.lost == [1, 2]
    assert [u["object_id"] for u in r.unaccounted] == [3, 4]      # other block, other run (a restart)


def test_a_run_of_lost_blocks_covers_every_object_in_it():
    """The receiver reports a long run of missing blocks as one record (its first block and
    detail.count): every object sent in the run is lost, the ones around it are not."""
    outer = [out(1, blocks=(99,)), out(2, blocks=(100,)), out(3, blocks=(150, 151)), out(4, blocks=(163, 164)),
             out(5, blocks=(164,)), STARTED, out(6, epoch=2, blocks=(120,))]
    inner = [{"event": "block_lost", "epoch": 1, "blocks": [100], "detail": {"count": 64}}]
    r = reconcile(outer, inner)
    assert r.lost == [2, 3, 4]                                     # 100 .. 163
    assert [u["object_id"] for u in r.unaccounted] == [1, 5, 6]


def test_unexpected_and_duplicate():
    r = reconcile([out(1)], [inn("object_delivered", 1), inn("object_delivered", 1),
                             inn("object_delivered", 5, seq=3)])
    assert not r.ok
    assert r.duplicates == [1]
    assert r.unexpected == [{"object_id": 5, "event": "object_delivered", "seq": 3, "time": "t"}]
    assert reconcile([out(1)], [inn("object_delivered", 1)]).duplicates == []


def test_report_as_dict():
    d = reconcile([out(1)], []).to_dict()
    assert d["ok"] is False and d["unaccounted"][0]["object_id"] == 1


def test_lost_or_refused_without_object_sent_is_listed_not_a_failure():
    # video access units are accounted per stream: the outer trail has no object_sent for them
    r = reconcile([out(1)], [inn("object_delivered", 1), inn("object_lost", 9, seq=4), inn("object_refused", 8, seq=5)])
    assert r.ok and r.unexpected == []
    assert [u["object_id"] for u in r.unmatched] == [9, 8]


def test_an_object_both_delivered_and_lost_fails_reconcile_naming_it():
    """Issue 10 item 4: an inner trail that records an object delivered and also lost (by an
    object_lost, or by a block_lost of a block that carried it) does not reconcile."""
    outer = [out(1, blocks=(10,)), out(2, blocks=(11, 12)), out(3, blocks=(20,)), out(4, blocks=(30,))]
    inner = [inn("object_delivered", 1), inn("object_delivered", 2), inn("object_delivered", 3),
             inn("object_lost", 3), inn("object_lost", 4),
             {"event": "block_lost", "epoch": 1, "blocks": [12]}]
    r = reconcile(outer, inner)
    assert r.delivered_and_lost == [2, 3]
    assert not r.ok and r.exit_status == 1
    assert r.to_dict()["delivered_and_lost"] == [2, 3]
    assert reconcile(outer[3:], inner[4:5]).ok                     # lost only: fine



def test_the_reconcile_command_fails_naming_an_object_both_delivered_and_lost(tmp_path, key, other_key, capsys):
    outer, inner = tmp_path / "outer", tmp_path / "inner"
    t = AuditTrail(outer, "outer", "o", key)
    for i in range(3):
        t.append(T0, event="object_sent", verdict="sent", object_id=i, epoch=1, blocks=[i])
    t.close(T0)
    t = AuditTrail(inner, "inner", "i", other_key)
    for i in range(3):
        t.append(T0, event="object_delivered", verdict="delivered", object_id=i)
    t.append(T0, event="block_lost", verdict="lost", code="missing", epoch=1, blocks=[1], detail={"count": 2})
    t.close(T0)
    assert run("reconcile", outer, inner) == 1
    out = capsys.readouterr().out
    assert out.startswith("NOT RECONCILED")
    assert "delivered and lost: object 1" in out and "delivered and lost: object 2" in out
    assert "object 0" not in out
    assert run("reconcile", outer, inner, "--json") == 1
    assert json.loads(capsys.readouterr().out)["delivered_and_lost"] == [1, 2]
