"""Reconcile counts an object re-sent by a restarted outer agent once (issue 11 item 3)."""
from ferry.audit import reconcile


def out(oid, epoch=1, blocks=(0,), resent=False):
    return {"event": "object_sent", "verdict": "sent", "object_id": oid, "epoch": epoch, "blocks": list(blocks),
            "lane": "files", "detail": {"name": f"f{oid}.txt", **({"resent": True} if resent else {})}}


def inn(event, oid, epoch=1):
    return {"event": event, "object_id": oid, "epoch": epoch}


def test_a_resent_object_lost_on_the_link_before_and_delivered_after_counts_delivered_once():
    outer = [out(1, blocks=(0,)), out(2, blocks=(1,)), out(1, epoch=2, blocks=(0,), resent=True),
             out(2, epoch=2, blocks=(1,), resent=True)]
    inner = [{"event": "block_lost", "epoch": 1, "blocks": [0]}, inn("object_lost", 2),
             inn("object_delivered", 1, epoch=2), inn("object_delivered", 2, epoch=2)]
    r = reconcile(outer, inner)
    assert r.ok and r.sent == 2 and r.delivered == [1, 2] and r.lost == [] and not r.delivered_and_lost


def test_without_a_resend_delivered_and_lost_is_still_a_contradiction():
    r = reconcile([out(1)], [inn("object_lost", 1), inn("object_delivered", 1)])
    assert not r.ok and r.delivered_and_lost == [1]


def test_an_outer_object_lost_accounts_for_a_kept_file_not_resent():
    outer = [out(1), out(2), {"event": "object_lost", "verdict": "lost", "object_id": 2, "code": "resend_changed"}]
    r = reconcile(outer, [inn("object_delivered", 1)])
    assert r.ok and r.lost == [2] and not r.unaccounted


def test_a_duplicate_record_is_not_a_second_delivery():
    outer = [out(1), out(1, epoch=2, resent=True)]
    inner = [inn("object_delivered", 1), {"event": "object_duplicate", "object_id": 1, "code": "duplicate_object"}]
    r = reconcile(outer, inner)
    assert r.ok and r.delivered == [1] and not r.duplicates


def test_an_outer_object_lost_of_an_object_delivered_before_counts_delivered():
    outer = [out(1), {"event": "object_lost", "verdict": "lost", "object_id": 1, "code": "resend_changed"}]
    r = reconcile(outer, [inn("object_delivered", 1)])
    assert r.ok and r.delivered == [1] and r.lost == [] and not r.delivered_and_lost
