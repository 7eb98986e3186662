"""Every byte the Annex B path drops is counted with a reason (issue 12 item 1)."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ferry.codecs.access_unit import NO_START_CODE, ByteStreamAssembler, Dropped
from ferry.codecs.nal import AnnexBSplitter, join_annexb
from .test_access_unit import IDR, PPS264, SLICE, SPS264


def test_the_tail_of_a_nal_unit_whose_start_was_lost_is_counted():
    b = ByteStreamAssembler("h264")
    b.feed(join_annexb([SPS264, PPS264, IDR]) + b"\x00\x00\x01\x41\x9a", 0)
    [lost] = b.discontinuity()
    assert lost.nbytes == len(SPS264) + len(PPS264) + len(IDR) + 2   # the unit in progress too
    tail = b"\x9a\x11\x22\x33\x44"                                     # the rest of a slice: no start code
    out = b.feed(tail + join_annexb([SLICE]), 3600) + b.flush()
    assert Dropped(NO_START_CODE, len(tail), False) in out
    assert [e.nal_units for e in out if not isinstance(e, Dropped)] == [(SLICE,)]


def test_zero_padding_before_a_start_code_is_not_a_drop():
    b = ByteStreamAssembler("h264")
    out = b.feed(bytes(7) + join_annexb([SPS264, PPS264, IDR]), 0) + b.flush()
    assert not [e for e in out if isinstance(e, Dropped)]


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=400), cuts=st.lists(st.integers(0, 400), max_size=8))
def test_skipped_bytes_do_not_depend_on_how_the_bytes_are_cut(data, cuts):
    """Untrusted bytes: the splitter's count of dropped leading bytes is the same fed whole or
    in pieces, never more than what was fed, and feeding never raises but NalError."""
    whole = AnnexBSplitter()
    units = whole.feed(data) + whole.flush()
    pieces = AnnexBSplitter()
    got, pos = [], 0
    for c in sorted(cuts) + [len(data)]:
        got += pieces.feed(data[pos:max(pos, c)])
        pos = max(pos, c)
    got += pieces.flush()
    assert got == units and pieces.skipped == whole.skipped <= len(data)
    if b"\x00\x00\x01" not in data:
        assert whole.skipped == len(data.rstrip(b"\x00"))
