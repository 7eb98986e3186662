"""ferry.audit.budget.RefusalBudget: at most `cap` link refusal records per (event, code) per
window, one audit_suppressed record for the rest, nothing else ever withheld."""
from __future__ import annotations

import argparse
import math
from collections import Counter, defaultdict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from .audit_support import T0
from ferry import limits
from ferry.audit import AuditTrail, reconcile, verify_dir
from ferry.audit.budget import CAPPED_EVENTS, SUMMARY_EVENT, RefusalBudget, capped_key, record_count
from ferry.audit.cli import add_parser
from ferry.audit.records import canonical, validate_fields
from ferry.reasons import Reason

W = 100.0     # a short window for the tests (the agent's is limits.AUDIT_REFUSAL_WINDOW)


def dropped(code=Reason.BAD_MAGIC, count=7):
    return {"event": "datagrams_dropped", "verdict": "refused", "code": code, "reason": code,
            "detail": {"count": count}}


def refused(event="block_refused", code=Reason.AUTH):
    return {"event": event, "verdict": "refused", "code": code, "reason": code, "epoch": 5, "blocks": [9]}


def delivered(oid):
    return {"event": "object_delivered", "verdict": "delivered", "object_id": oid}


def summaries(out):
    return [r for r in out if r["event"] == SUMMARY_EVENT]


def test_the_cap_holds_and_the_rest_is_counted_in_one_summary_at_the_window_end():
    b = RefusalBudget(2, now=0.0, window=W)
    out = []
    for i in range(10):
        out += b.offer(dropped(count=i + 1), now=1.0 + i, wall=T0 + i)
    assert [r["detail"]["count"] for r in out] == [1, 2]          # two written, eight withheld
    assert b.next_timer() == W
    assert b.handle_timer(W - 0.001) == []                         # not before the window's end
    [s] = b.handle_timer(W)
    assert s["event"] == SUMMARY_EVENT and s["verdict"] == "info" and "code" not in s
    d = s["detail"]
    assert d["withheld"] == [{"event": "datagrams_dropped", "code": "bad_magic", "records": 8,
                              "count": sum(range(3, 11))}]
    assert (d["cap"], d["window"], d["records"], d["count"]) == (2, W, 8, sum(range(3, 11)))
    assert d["first"] == "2023-11-14T22:13:22.000000Z" and d["last"] == "2023-11-14T22:13:29.000000Z"
    assert "8 link refusal records" in s["reason"]
    assert b.next_timer() is None and b.handle_timer(10 * W) == [] and b.close() == []
    # a new window: the cap again
    assert b.offer(dropped(), now=W + 1, wall=T0) != []


def test_without_a_timer_the_next_record_writes_the_summary_first():
    b = RefusalBudget(1, now=0.0, window=W)
    b.offer(refused(), 1.0, T0)
    assert b.offer(refused(), 2.0, T0) == []
    out = b.offer(delivered(1), 3 * W + 5, T0 + 300)           # two windows later
    assert [r["event"] for r in out] == [SUMMARY_EVENT, "object_delivered"]
    assert out[0]["detail"]["withheld"][0] == {"event": "block_refused", "code": "auth", "records": 1, "count": 1}


def test_close_writes_what_is_withheld_so_far():
    b = RefusalBudget(0, now=0.0, window=W)
    assert b.offer(refused("announcement_refused", Reason.WRONG_OUTER_KEY), 1.0, T0) == []
    [s] = b.close()
    assert s["detail"]["withheld"] == [{"event": "announcement_refused", "code": "wrong_outer_key",
                                        "records": 1, "count": 1}]
    assert b.close() == []


def test_only_link_refusals_are_capped():
    b = RefusalBudget(0, now=0.0, window=W)
    always = [delivered(1),
              {"event": "object_refused", "verdict": "refused", "code": Reason.DEFAULT_DENY, "object_id": 2},
              {"event": "object_lost", "verdict": "lost", "code": Reason.TIMEOUT, "object_id": 3},
              {"event": "block_lost", "verdict": "lost", "code": Reason.MISSING, "epoch": 1, "blocks": [4]},
              {"event": "internal_error", "verdict": "alarm", "code": Reason.INTERNAL_ERROR},
              {"event": "policy_mismatch", "verdict": "alarm", "code": Reason.POLICY_MISMATCH},
              {"event": "agent_started", "verdict": "info"},
              {"event": "datagrams_dropped", "verdict": "refused"},                  # no code: not a key
              {"event": "datagrams_dropped", "verdict": "refused", "code": "made_up"},  # the trail refuses it
              {"event": ["datagrams_dropped"], "verdict": "refused", "code": "auth"}]   # ... and this
    for r in always:
        assert b.offer(r, 1.0, T0) == [r]
    assert b.close() == []
    assert capped_key(dropped()) == ("datagrams_dropped", "bad_magic")
    assert capped_key({"event": "block_refused", "code": "replay"}) == ("block_refused", "replay")


def test_record_count():
    assert record_count(dropped(count=40)) == 40
    assert record_count(refused()) == 1
    for bad in ({"count": 0}, {"count": True}, {"count": "3"}, {"count": -2}, "x"):
        assert record_count({"detail": bad}) == 1


def test_bad_arguments():
    for cap, now, window in ((-1, 0.0, W), (1.5, 0.0, W), (1, math.nan, W), (1, 0.0, 0.0), (1, 0.0, math.inf)):
        with pytest.raises(ValueError):
            RefusalBudget(cap, now, window)   # type: ignore[arg-type]


def test_odd_clocks_do_not_break_it():
    b = RefusalBudget(1, now=1000.0, window=W)
    b.offer(dropped(), 1000.0, T0)
    assert b.offer(dropped(), 500.0, math.nan) == []             # monotonic went back: same window
    assert b.offer(dropped(), math.inf, 1e30) == []               # not a time: same window
    [s] = b.close()
    assert s["detail"]["records"] == 2 and "first" not in s["detail"]   # no wall time to show
    validate_fields({"time": "2026-01-02T03:04:05.000006Z", "agent": "inner", **s})


def test_the_largest_summary_fits_a_record():
    """Every capped (event, code) withheld at once, with huge counts: one record still fits."""
    b = RefusalBudget(0, now=0.0, window=W)
    for e in sorted(CAPPED_EVENTS):
        for c in Reason:
            b.offer({"event": e, "verdict": "refused", "code": c, "detail": {"count": 2**62}}, 1.0, T0)
    [s] = b.close()
    assert len(s["detail"]["withheld"]) == len(CAPPED_EVENTS) * len(Reason)
    full = {"time": "2026-01-02T03:04:05.000006Z", "agent": "inner", "agent_name": "x" * 64,
            "policy_hash": "0" * 64, **s}
    validate_fields(full)
    assert len(canonical(full)) + 300 < limits.AUDIT_RECORD_MAX    # seq, prev, hash


# -- properties ------------------------------------------------------------------------------
CODES = [Reason.BAD_MAGIC, Reason.AUTH, Reason.REPLAY, Reason.REFUSAL_SUPPRESSED, Reason.WRONG_OUTER_KEY]
record = st.one_of(
    st.builds(lambda e, c, n: {"event": e, "verdict": "refused", "code": c, "detail": {"count": n}},
              st.sampled_from(sorted(CAPPED_EVENTS)), st.sampled_from(CODES), st.integers(1, 10**6)),
    st.builds(lambda e, c: {"event": e, "verdict": "refused", "code": c},
              st.sampled_from(sorted(CAPPED_EVENTS)), st.sampled_from(CODES)),
    st.builds(delivered, st.integers(0, 10**6)),
)
step = st.tuples(st.floats(0, 3 * W, allow_nan=False), st.one_of(record, st.just("tick")))


@settings(max_examples=300, deadline=None)
@given(cap=st.integers(0, 4), origin=st.floats(-1e6, 1e6), steps=st.lists(step, max_size=200))
def test_per_window_at_most_cap_per_reason_one_summary_and_counts_conserved(cap, origin, steps):
    b = RefusalBudget(cap, now=origin, window=W)
    now = origin
    offered: Counter = Counter()
    offered_count: Counter = Counter()
    emitted: list[tuple[float, dict]] = []
    passed: list[dict] = []
    for dt, what in steps:
        now += dt
        if what == "tick":
            out = b.handle_timer(now)
        else:
            key = capped_key(what)
            if key is not None:
                offered[key] += 1
                offered_count[key] += record_count(what)
            else:
                passed.append(what)
            out = b.offer(what, now, T0 + now - origin)
        for r in out:
            emitted.append((now, r))
    final = b.close()
    written: Counter = Counter()
    written_count: Counter = Counter()
    withheld: Counter = Counter()
    withheld_count: Counter = Counter()
    per_window: dict[int, Counter] = defaultdict(Counter)
    for t, r in emitted + [(now, s) for s in final]:
        if r["event"] == SUMMARY_EVENT:
            for w in r["detail"]["withheld"]:
                withheld[(w["event"], w["code"])] += w["records"]
                withheld_count[(w["event"], w["code"])] += w["count"]
        elif (key := capped_key(r)) is not None:
            written[key] += 1
            written_count[key] += record_count(r)
    for t, r in emitted:       # while running: per window, <= cap records per reason, <= 1 summary
        key = capped_key(r) or (r["event"], "")
        if key[0] in CAPPED_EVENTS or key[0] == SUMMARY_EVENT:
            per_window[math.floor((t - origin) / W)][key] += 1
    for counts in per_window.values():
        for (event, _), n in counts.items():
            assert n <= (1 if event == SUMMARY_EVENT else cap)
    assert len(final) <= 1
    # conservation: written + withheld == offered, in records and in the counts they carry
    assert written + withheld == offered
    assert written_count + withheld_count == offered_count
    # nothing but link refusals is ever withheld, and order is kept
    assert [r for _, r in emitted if capped_key(r) is None and r["event"] != SUMMARY_EVENT] == passed


@settings(max_examples=200, deadline=None)
@given(cap=st.integers(0, 3), steps=st.lists(step, max_size=100))
def test_the_timer_always_gets_the_summary_out(cap, steps):
    """Whenever something is withheld, next_timer() is set, and handle_timer at it writes the summary."""
    b = RefusalBudget(cap, now=0.0, window=W)
    now = 0.0
    for dt, what in steps:
        now += dt
        if what == "tick":
            b.handle_timer(now)
        else:
            b.offer(what, now, T0)
        if b.withheld:
            t = b.next_timer()
            assert t is not None and now < t <= now + W
    t = b.next_timer()
    if t is not None:
        [s] = b.handle_timer(t)
        assert s["event"] == SUMMARY_EVENT and b.next_timer() is None and not b.withheld


# -- the trail, verify, reconcile and the CLI take the new record --------------------------------
def run_cli(*argv):
    parser = argparse.ArgumentParser(prog="ferry")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["audit", *map(str, argv)])
    return args.func(args)


def test_trails_with_a_summary_verify_reconcile_and_export(tmp_path, key, capsys):
    outer, inner = tmp_path / "outer", tmp_path / "inner"
    o = AuditTrail(outer, "outer", "o", key)
    o.append(T0, event="object_sent", verdict="sent", object_id=1, epoch=1, blocks=[0])
    o.close(T0)
    t = AuditTrail(inner, "inner", "i", key)
    b = RefusalBudget(1, now=0.0, window=W)
    for i, r in enumerate([dropped(), dropped(), refused(), refused(), delivered(1), dropped()]):
        for rec in b.offer(r, float(i), T0 + i):
            t.append(T0 + i, **rec)
    for rec in b.handle_timer(W):
        t.append(T0 + W, **rec)
    t.close(T0 + W)
    v = verify_dir(inner, key.public_key())
    assert v.ok, v.reason
    assert run_cli("verify", inner) == 0
    assert run_cli("reconcile", outer, inner) == 0
    assert run_cli("export", inner, "--format", "csv") == 0
    assert "audit_suppressed" in capsys.readouterr().out
    got = []
    verify_dir(inner, key.public_key(), on_record=got.append)
    [s] = [r for r in got if r["event"] == SUMMARY_EVENT]
    assert {(w["event"], w["records"]) for w in s["detail"]["withheld"]} == {("datagrams_dropped", 2),
                                                                            ("block_refused", 1)}
    assert reconcile([{"event": "object_sent", "object_id": 1, "epoch": 1, "blocks": [0]}], got).ok



def test_the_window_ends_exactly_at_its_timer_whatever_the_rounding():
    """At next_timer() the summary is due: (origin + window - origin) / window may round below 1
    (monotonic origins seen to do it), and the agent's timer must not fire for nothing."""
    for origin in (5599.11975193751, 15199.299114933792, 15865.057035712964, 0.1):
        b = RefusalBudget(0, origin)
        rec = {"event": "datagrams_dropped", "verdict": "refused", "code": "bad_magic", "reason": "x",
               "detail": {"count": 1}}
        b.offer(rec, origin + 1.0, 1.7e9)
        due = b.next_timer()
        assert due is not None
        assert [r["event"] for r in b.handle_timer(due)] == ["audit_suppressed"] and b.next_timer() is None
