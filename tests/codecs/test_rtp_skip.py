"""ReorderBuffer.skip: a malformed packet's number fills its place, never a gap (issue 12 item 2)."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ferry.codecs.rtp import Lost, Malformed, ReorderBuffer, build_rtp, parse_rtp, sequence_of


def pkt(seq: int):
    return parse_rtp(build_rtp(96, seq & 0xFFFF, 0, 1, b"x"))


def test_a_skipped_number_is_released_in_order_and_is_no_gap():
    rb = ReorderBuffer(max_delay=0.2)
    assert [p.sequence for p in rb.push(pkt(10), 0.0)] == [10]
    assert rb.push(pkt(12), 0.0) == []                  # 11 missing: held
    out = rb.skip(11, 0.01)                             # 11 arrived, malformed
    assert out[0] == Malformed(11) and [p.sequence for p in out[1:]] == [12]
    assert rb.lost == 0 and rb.poll(5.0) == []


def test_a_skip_out_of_the_window_changes_nothing():
    rb = ReorderBuffer(capacity=8)
    assert rb.skip(5, 0.0) == []                         # before the first packet
    rb.push(pkt(100), 0.0)
    assert rb.skip(99, 0.0) == [] and rb.skip(101 + 8, 0.0) == [] and len(rb) == 0   # late, too far
    assert rb.late == 0                                  # malformed, not late
    rb.push(pkt(102), 0.0)
    assert rb.skip(102, 0.0) == [] and rb.duplicates == 0


def test_sequence_of_reads_only_a_version_2_header():
    good = build_rtp(96, 0xBEEF, 0, 1, b"")
    assert sequence_of(good) == 0xBEEF and sequence_of(good[:4]) == 0xBEEF
    assert sequence_of(good[:3]) is None and sequence_of(b"\x40" + good[1:]) is None


@settings(max_examples=300, deadline=None)
@given(ops=st.lists(st.tuples(st.integers(-20, 40), st.booleans(), st.integers(0, 3)), max_size=60))
def test_every_number_is_released_once_whatever_the_mix(ops):
    """Packets and malformed numbers in any order (untrusted numbers): each extended number in
    the released range comes out once, as a packet, a Malformed or inside a Lost."""
    rb = ReorderBuffer(capacity=16, max_delay=0.1)
    now, out = 0.0, []
    out += rb.push(pkt(1000), now)
    for off, bad, dt in ops:
        now += dt * 0.05
        seq = (1000 + off) & 0xFFFF
        out += rb.skip(seq, now) if bad else rb.push(pkt(seq), now)
    out += rb.flush()
    if rb.restarts:                                      # a sender restart numbers anew
        return
    numbers = []
    for item in out:
        if isinstance(item, Lost):
            numbers += [(item.first_seq + k) & 0xFFFF for k in range(item.count)]
        elif isinstance(item, Malformed):
            numbers.append(item.sequence)
        else:
            numbers.append(item.sequence)
    assert len(numbers) == len(set(numbers))
    assert all((b - a) % 65536 == 1 for a, b in zip(numbers, numbers[1:]))
