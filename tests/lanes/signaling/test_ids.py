"""The inner side's ID mapping (ferry/lanes/signaling/ids.py): table, prefix rules, bijection."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ferry.lanes.signaling.ids import IdMap, IdMapError

CAM = "43090000001320000001"
CAM2 = "43090000001320000002"


def test_table_maps_both_ways_and_nothing_else():
    m = IdMap({CAM: "43010000001320000099"})
    assert m.map_to_inner(CAM) == "43010000001320000099"
    assert m.map_to_outer("43010000001320000099") == CAM
    assert m.map_to_inner(CAM2) is None            # no entry: refused, never passed as is
    assert m.map_to_outer(CAM) is None


def test_prefix_replaces_the_centre_code_and_keeps_the_rest():
    m = IdMap(prefixes=[("43090000", "43010000")])
    assert m.map_to_inner(CAM) == "43010000001320000001"
    assert m.map_to_outer("43010000001320000001") == CAM
    assert m.map_to_inner("43080000001320000001") is None
    assert m.map_to_inner("4309000000132000000") is None       # 19 digits
    assert m.map_to_inner("4309000000132000000１") is None      # a full-width digit


def test_table_wins_and_its_inner_ids_are_not_reachable_by_prefix():
    m = IdMap({CAM: "43010000001320000002"}, [("43090000", "43010000")])
    assert m.map_to_inner(CAM) == "43010000001320000002"
    # CAM2's prefix image is the table's inner ID of CAM: CAM2 has no inner ID (not two devices on one)
    assert m.map_to_inner(CAM2) is None
    assert m.map_to_outer("43010000001320000002") == CAM
    # CAM's own prefix image is not shown either: CAM is mapped by the table
    assert m.map_to_outer("43010000001320000001") is None


@pytest.mark.parametrize("table, prefixes, message", [
    ({CAM: "43010000001320000099", CAM2: "43010000001320000099"}, [], "both map to"),
    ({CAM: "4301"}, [], "not 20 digits"),
    ({}, [("4309", "430100")], "differ in length"),
    ({}, [("4309", "4301"), ("430900", "430200")], "overlap on the outer side"),
    ({}, [("4309", "4301"), ("4308", "4301")], "both map"),
    ({}, [("43a9", "4301")], "not 1 to 20 digits"),
])
def test_refused_mappings_name_the_entry(table, prefixes, message):
    with pytest.raises(IdMapError, match=message):
        IdMap(table, prefixes)


ids = st.text("0123456789", min_size=20, max_size=20)


@settings(max_examples=300, deadline=None)
@given(table=st.dictionaries(ids, ids, max_size=8),
       prefixes=st.lists(st.tuples(st.text("0123456789", min_size=1, max_size=6),
                                   st.text("0123456789", min_size=1, max_size=6)), max_size=3),
       probes=st.lists(ids, max_size=20))
def test_bijective_whatever_the_config(table, prefixes, probes):
    try:
        m = IdMap(table, prefixes)
    except IdMapError:
        return
    seen: dict[str, str] = {}
    for outer in [*table, *probes]:
        inner = m.map_to_inner(outer)
        if inner is not None:
            assert m.map_to_outer(inner) == outer
            assert seen.setdefault(inner, outer) == outer       # never two outer IDs on one inner
    for inner in [*table.values(), *probes]:
        outer = m.map_to_outer(inner)
        if outer is not None:
            assert m.map_to_inner(outer) == inner
