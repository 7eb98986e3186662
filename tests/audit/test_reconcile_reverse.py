"""Reconcile covers the reverse ferry too: every request the inner agent sent meets an outer
outcome, or a loss the outer trail names, or it is unaccounted and the reconcile fails."""

from hypothesis import given, settings
from hypothesis import strategies as st

from ferry.audit import reconcile
from ferry.audit.reconcile import REVERSE_REQUESTS_PER_LOST_BLOCK


def sent(oid, request="start_stream"):
    return {"event": "request_sent", "verdict": "sent", "lane": "reverse", "object_id": oid, "object_type": request,
            "seq": oid, "time": "t"}


def outer(event, oid, verdict="delivered"):
    return {"event": event, "verdict": verdict, "lane": "reverse", "object_id": oid, "seq": 100 + oid}


def lost_blocks(count=1):
    return {"event": "reverse_block_lost", "verdict": "lost", "epoch": 5, "blocks": [3], "detail": {"count": count}}


def test_every_request_received_or_refused_reconciles():
    inner = [sent(1), sent(2), sent(3), sent(4)]
    out = [outer("request_received", 1), outer("request_unserved", 1, "refused"),
           outer("request_refused", 2, "refused"), outer("reverse_object_refused", 3, "refused"),
           outer("reverse_object_lost", 4, "lost")]
    r = reconcile(out, inner)
    assert r.ok and r.reverse_sent == 4
    assert (r.reverse_received, r.reverse_refused, r.reverse_lost) == ([1], [2, 3], [4])
    assert r.to_dict()["reverse_unaccounted"] == []


def test_a_request_the_outer_never_saw_fails_the_reconcile():
    r = reconcile([outer("request_received", 1)], [sent(1), sent(2, "ptz")])
    assert not r.ok and r.exit_status == 1
    assert [(u["object_id"], u["request"]) for u in r.reverse_unaccounted] == [(2, "ptz")]


def test_a_replay_refused_after_the_request_was_received_counts_received():
    r = reconcile([outer("request_received", 1), outer("request_refused", 1, "refused")], [sent(1)])
    assert r.ok and r.reverse_received == [1] and r.reverse_refused == []


def test_requests_missing_while_the_reverse_link_lost_blocks_are_lost_up_to_a_bound():
    n = REVERSE_REQUESTS_PER_LOST_BLOCK
    inner = [sent(i) for i in range(1, 2 * n + 2)]
    r = reconcile([lost_blocks(2)], inner)                 # two blocks: 2n requests at most
    assert len(r.reverse_lost) == 2 * n and [u["object_id"] for u in r.reverse_unaccounted] == [2 * n + 1]
    assert not r.ok
    assert reconcile([lost_blocks(3)], inner).ok


def test_a_request_received_that_the_inner_never_sent_is_an_alarm():
    r = reconcile([outer("request_received", 9)], [])
    assert not r.ok and [u["object_id"] for u in r.reverse_unexpected] == [9]


def test_no_reverse_ferry_changes_nothing():
    r = reconcile([], [])
    assert r.ok and r.reverse_sent == 0


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["received", "refused", "lost", "none"]), max_size=40), st.integers(0, 3))
def test_every_request_is_counted_once(fates, blocks):
    inner = [sent(i) for i in range(len(fates))]
    event = {"received": "request_received", "refused": "request_refused", "lost": "reverse_object_lost"}
    out = [outer(event[f], i) for i, f in enumerate(fates) if f != "none"] + ([lost_blocks(blocks)] if blocks else [])
    r = reconcile(out, inner)
    ids = r.reverse_received + r.reverse_refused + r.reverse_lost + [u["object_id"] for u in r.reverse_unaccounted]
    assert sorted(ids) == list(range(len(fates)))
    missing = fates.count("none")
    assert len(r.reverse_unaccounted) == max(0, missing - blocks * REVERSE_REQUESTS_PER_LOST_BLOCK)
    assert r.ok == (not r.reverse_unaccounted)
