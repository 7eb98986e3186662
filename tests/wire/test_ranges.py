"""RangeSet: sorted, disjoint, merged half-open ranges."""

from __future__ import annotations

import random

from ferry.wire.ranges import RangeSet


def test_adds_merge_with_both_neighbours():
    r = RangeSet()
    r.add(10, 20)
    r.add(30, 40)
    assert list(r) == [(10, 20), (30, 40)]
    r.add(20, 30)  # touches both: one range
    assert list(r) == [(10, 40)]
    r.add(0, 10)
    r.add(40, 41)
    assert list(r) == [(0, 41)] and len(r) == 1


def test_overlaps_and_neighbours():
    r = RangeSet()
    r.add(10, 20)
    assert r.overlaps(15, 16) and r.overlaps(0, 11) and r.overlaps(19, 30)
    assert not r.overlaps(0, 10) and not r.overlaps(20, 30)
    assert r.ends_at(20) and not r.ends_at(10)
    assert r.starts_at(10) and not r.starts_at(20)


def test_random_disjoint_pieces_cover_like_a_set():
    rng = random.Random(1)
    for _ in range(50):
        cuts = sorted(rng.sample(range(1, 500), 20))
        pieces = list(zip([0] + cuts, cuts + [500]))
        rng.shuffle(pieces)
        r, held = RangeSet(), set()
        for a, b in pieces:
            assert not r.overlaps(a, b)
            r.add(a, b)
            held.update(range(a, b))
            got = set()
            prev_end = -1
            for s, e in r:
                assert s < e and s > prev_end  # sorted, disjoint, and merged (never touching)
                prev_end = e
                got.update(range(s, e))
            assert got == held
        assert list(r) == [(0, 500)]
