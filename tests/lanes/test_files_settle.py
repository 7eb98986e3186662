"""The pure half of taking spool files whole: when an entry has settled (SpoolSettle, SpoolStat),
settling again after a writer was caught still writing, the names writers are still using
(spool_candidate) and recording each waiting name once (SpoolWaiting, spool_waiting)."""
from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from ferry import limits
from ferry.audit.records import validate_fields
from ferry.lanes.files import PARTIAL_SUFFIXES, SpoolSettle, SpoolStat, SpoolWaiting, spool_candidate, spool_waiting
from ferry.reasons import Reason

F = SpoolStat(size=10, mtime_ns=1_000, ctime_ns=1_000, mode=0o100644, ino=7, dev=1)


def _with(**kw) -> SpoolStat:
    return SpoolStat(**{**{k: getattr(F, k) for k in SpoolStat.__slots__}, **kw})


@pytest.mark.parametrize("later, change", [
    (_with(), None),
    (_with(ino=8), "replaced by another file"),
    (_with(dev=2), "replaced by another file"),
    (_with(mode=0o100600), "mode 100644 -> 100600"),
    (_with(size=20, mtime_ns=2_000), "size 10 -> 20 bytes"),
    (_with(size=0), "size 10 -> 0 bytes"),                        # truncated
    (_with(mtime_ns=2_000, ctime_ns=2_000), "modified"),           # rewritten in place, same size
    (_with(ctime_ns=2_000), "changed (ctime)"),                    # rewritten, mtime set back
])
def test_spool_stat_names_what_changed(later, change):
    assert F.change(later) == change


def test_a_file_replaced_by_a_rename_does_not_settle_on_its_name():
    s = SpoolSettle(1.0)
    assert s.observe({"a": F}, 0.0) == []
    assert s.observe({"a": _with(ino=8)}, 1.0) == []               # same size and times, another inode
    assert s.observe({"a": _with(ino=8)}, 1.5) == []
    assert s.observe({"a": _with(ino=8)}, 2.0) == ["a"]


def test_a_busy_file_settles_again_over_a_growing_wait():
    s = SpoolSettle(0.2, busy_min=0.5, busy_max=4.0)
    s.observe({"a": F}, 0.0)
    assert s.observe({"a": F}, 0.2) == ["a"]
    assert s.busy("a", 0.2) == 0.5
    assert s.observe({"a": F}, 0.6) == []                         # unchanged, but not long enough
    assert s.observe({"a": F}, 0.75) == ["a"]
    assert [s.busy("a", 1.0), s.busy("a", 1.0), s.busy("a", 1.0), s.busy("a", 1.0), s.busy("a", 1.0)] == \
        [1.0, 2.0, 4.0, 4.0, 4.0]                                 # doubling, capped
    assert s.observe({"a": F}, 4.9) == [] and s.observe({"a": F}, 5.0) == ["a"]
    s.forget("a")                                                 # taken: its next file starts afresh
    s.observe({"a": F}, 10.0)
    assert s.observe({"a": F}, 10.25) == ["a"]


def test_the_busy_wait_is_at_least_settle_and_never_zero():
    zero = SpoolSettle(0.0)
    assert zero.busy("a", 0.0) == limits.SPOOL_BUSY_WAIT_MIN       # settle 0 is not a loop at scan speed
    slow = SpoolSettle(100.0)
    assert slow.busy("a", 0.0) == 100.0 and slow.busy("a", 0.0) == 100.0
    assert SpoolSettle(1.0).busy("new", 0.0) == 1.0               # a name not seen before


def test_settle_state_is_dropped_with_the_names_that_left():
    s = SpoolSettle(1.0)
    s.observe({"a": F, "b": F}, 0.0)
    s.busy("a", 0.5)
    assert len(s) == 2
    s.observe({}, 1.0)
    assert len(s) == 0


# One scan in a generated history: names present with a version number standing for their signature,
# the time step since the previous scan, and the names the agent then finds busy.
_scan = st.tuples(st.dictionaries(st.sampled_from("abcd"), st.integers(0, 2), max_size=4),
                  st.floats(0.0, 1.0, allow_nan=False), st.sets(st.sampled_from("abcd"), max_size=2))


@settings(max_examples=300, deadline=None)
@given(st.floats(0.0, 2.0, allow_nan=False), st.lists(_scan, max_size=30))
def test_a_name_is_ready_only_after_its_signature_stayed_the_same_for_its_wait(settle, history):
    s = SpoolSettle(settle, busy_min=0.5, busy_max=4.0)
    now = 0.0
    seen: dict[str, list[tuple[float, int]]] = {}       # name -> its observations since it last changed
    not_before: dict[str, float] = {}                   # after a busy: the earliest time it may be ready
    for listing, step, busy in history:
        now += step
        for name in list(seen):
            if name not in listing:
                del seen[name]
                not_before.pop(name, None)
        for name, sig in listing.items():
            obs = seen.setdefault(name, [])
            if obs and obs[-1][1] != sig:
                obs.clear()                              # (a busy name's longer wait still holds)
            obs.append((now, sig))
        ready = s.observe({n: ("sig", v) for n, v in listing.items()}, now)
        assert ready == sorted(ready) and set(ready) <= set(listing)
        for name in ready:
            first = seen[name][0][0]
            assert now - first >= settle                 # the same signature since at least `settle` ago
            assert now >= not_before.get(name, 0.0)
        for name in busy & set(ready):
            wait = s.busy(name, now)
            assert max(settle, 0.5) <= wait <= max(settle, 4.0)
            not_before[name] = now + wait
        assert len(s) <= len(listing)                    # nothing kept for names that left


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_hidden_and_partial_names_are_never_candidates(name):
    for n in (name, "." + name, name + ".part", name + ".tmp"):
        hidden = n.startswith(".") or n.endswith(PARTIAL_SUFFIXES)
        assert spool_candidate(n) is not hidden


def test_each_waiting_name_is_recorded_once():
    w = SpoolWaiting(cap=100)
    present = {".a", "b.part"}
    assert [w.first(n, present) for n in (".a", "b.part", ".a", "b.part")] == [True, True, False, False]
    assert not w.first(".a", set())                                # gone and back: still once per run


def test_waiting_names_are_bounded_and_those_gone_make_room():
    w = SpoolWaiting(cap=3)
    assert all(w.first(n, {".a", ".b", ".c"}) for n in (".a", ".b", ".c"))
    assert not w.first(".d", {".a", ".b", ".c", ".d"})             # full, all still there: not recorded
    assert w.unrecorded == 1 and len(w) == 3
    assert w.first(".d", {".c", ".d"})                             # .a and .b left: room again
    assert len(w) == 2
    assert w.first(".a", {".a", ".c", ".d"})                       # forgotten when it left: recorded again


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([f".n{i}" for i in range(12)]),
                          st.sets(st.sampled_from([f".n{i}" for i in range(12)]))), max_size=60))
def test_waiting_names_never_exceed_the_cap_and_repeat_only_after_leaving(calls):
    w = SpoolWaiting(cap=4)
    recorded: set[str] = set()
    for name, present in calls:
        present = present | {name}
        if w.first(name, present):
            assert name not in recorded                          # once, unless it was forgotten
            recorded.add(name)
        assert len(w) <= 4
        recorded &= set(w._recorded)                             # forgotten names may come again


def test_the_waiting_record_is_an_info_with_a_code():
    fields = spool_waiting(source="outer-spool", address="/spool/.x", name=".x", code=Reason.PARTIAL_NAME,
                           reason="a dot-name").fields
    assert fields["event"] == "spool_waiting" and fields["verdict"] == "info" and fields["code"] == "partial_name"
    assert fields["detail"] == {"name": ".x"} and fields["lane"] == "files"
    validate_fields({"time": "2026-01-02T03:04:05.000006Z", "agent": "outer", **fields})
