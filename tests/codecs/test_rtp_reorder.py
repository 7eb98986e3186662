"""ReorderBuffer: order, loss reports, wrap-around, bounds, restarts."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ferry.codecs.rtp import Lost, ReorderBuffer, RtpPacket, parse_rtp, build_rtp


def pkt(seq: int) -> RtpPacket:
    return parse_rtp(build_rtp(96, seq & 0xFFFF, 0, 1, seq.to_bytes(4, "big", signed=True)))


def seqs(events: list) -> list:
    return [e.sequence if isinstance(e, RtpPacket) else e for e in events]


def test_in_order_packets_pass_straight_through() -> None:
    rb = ReorderBuffer(capacity=8, max_delay=0.1)
    for i in range(5):
        assert seqs(rb.push(pkt(i), 0.0)) == [i]
    assert len(rb) == 0 and rb.deadline() is None


def test_swapped_packets_come_out_in_order() -> None:
    rb = ReorderBuffer(capacity=8, max_delay=0.1)
    assert seqs(rb.push(pkt(10), 0.0)) == [10]
    assert seqs(rb.push(pkt(12), 0.01)) == []
    assert rb.deadline() == 0.01 + 0.1
    assert seqs(rb.push(pkt(11), 0.02)) == [11, 12]
    assert rb.lost == 0 and rb.deadline() is None


def test_gap_is_reported_lost_after_max_delay() -> None:
    rb = ReorderBuffer(capacity=8, max_delay=0.1)
    rb.push(pkt(1), 0.0)
    assert seqs(rb.push(pkt(4), 0.0)) == []
    assert seqs(rb.push(pkt(5), 0.05)) == []
    assert rb.poll(0.09) == []
    assert seqs(rb.poll(0.1)) == [Lost(2, 2), 4, 5]
    assert rb.lost == 2
    assert seqs(rb.push(pkt(3), 0.2)) == [] and rb.late == 1  # too late now


def test_a_new_packet_also_expires_old_gaps() -> None:
    rb = ReorderBuffer(capacity=8, max_delay=0.1)
    rb.push(pkt(0), 0.0)
    rb.push(pkt(2), 0.0)
    assert seqs(rb.push(pkt(3), 0.5)) == [Lost(1, 1), 2, 3]


def test_duplicates_are_dropped_and_counted() -> None:
    rb = ReorderBuffer(capacity=8, max_delay=0.1)
    rb.push(pkt(0), 0.0)
    rb.push(pkt(2), 0.0)
    assert rb.push(pkt(2), 0.0) == [] and rb.duplicates == 1
    assert rb.push(pkt(0), 0.0) == [] and rb.late == 1
    assert seqs(rb.push(pkt(1), 0.0)) == [1, 2]


def test_sequence_wraps_around() -> None:
    rb = ReorderBuffer(capacity=8, max_delay=0.1)
    out = []
    for s in (65533, 65535, 65534, 1, 0, 2):
        out += seqs(rb.push(pkt(s), 0.0))
    assert out == [65533, 65534, 65535, 0, 1, 2]
    assert seqs(rb.push(pkt(4), 0.0) + rb.poll(1.0)) == [Lost(3, 1), 4]


def test_loss_across_the_wrap_is_reported_with_16_bit_numbers() -> None:
    rb = ReorderBuffer(capacity=8, max_delay=0.0)
    rb.push(pkt(65534), 0.0)
    assert seqs(rb.push(pkt(2), 0.0)) == [Lost(65535, 3), 2]


def test_capacity_bounds_what_is_held() -> None:
    rb = ReorderBuffer(capacity=4, max_delay=10.0)
    rb.push(pkt(0), 0.0)
    out = []
    for s in range(2, 8):  # 1 never comes
        out += seqs(rb.push(pkt(s), 0.0))
        assert len(rb) < 4
        if s == 4:
            assert len(rb) == 3  # 2, 3, 4 held while 1 may still come
    assert out == [Lost(1, 1), 2, 3, 4, 5, 6, 7] and len(rb) == 0  # 5 is 4 ahead: give 1 up


def test_jump_far_ahead_reports_the_gap_as_one_event() -> None:
    rb = ReorderBuffer(capacity=16, max_delay=10.0)
    rb.push(pkt(100), 0.0)
    # the window keeps room for the 15 packets just before 20000, which may still arrive
    assert seqs(rb.push(pkt(20000), 0.0)) == [Lost(101, 19884)]
    assert seqs(rb.push(pkt(19990), 0.0)) == []
    assert seqs(rb.flush()) == [Lost(19985, 5), 19990, Lost(19991, 9), 20000]


def test_sender_restart_far_behind_resyncs_after_two_packets() -> None:
    rb = ReorderBuffer(capacity=16, max_delay=10.0)
    for s in range(30000, 30003):
        rb.push(pkt(s), 0.0)
    assert rb.push(pkt(5), 0.0) == [] and rb.late == 1
    assert seqs(rb.push(pkt(6), 0.0)) == [6] and rb.restarts == 1
    assert seqs(rb.push(pkt(7), 0.0)) == [7]


def test_flush_releases_everything_with_gaps() -> None:
    rb = ReorderBuffer(capacity=16, max_delay=10.0)
    rb.push(pkt(0), 0.0)
    rb.push(pkt(3), 0.0)
    rb.push(pkt(5), 0.0)
    assert seqs(rb.flush()) == [Lost(1, 2), 3, Lost(4, 1), 5]
    assert len(rb) == 0


@settings(max_examples=300, deadline=None)
@given(start=st.integers(0, 0xFFFF), n=st.integers(1, 120), data=st.data())
def test_jittered_stream_comes_out_in_order_with_exact_loss_counts(start: int, n: int, data) -> None:
    """Packets 0..n-1 (from `start`, wrapping), some lost, some duplicated, each displaced by up to
    8 places: with room and time enough, every packet from the first arrival on comes out, in
    order, once, and the Lost counts add up to exactly the missing ones."""
    keep = data.draw(st.lists(st.booleans(), min_size=n, max_size=n))
    dup = data.draw(st.lists(st.booleans(), min_size=n, max_size=n))
    sent = [i for i in range(n) if keep[i]] + [i for i in range(n) if keep[i] and dup[i]]
    jitter = data.draw(st.lists(st.floats(0, 8), min_size=len(sent), max_size=len(sent)))
    arrival = [i for _, i in sorted((i + j, i) for i, j in zip(sent, jitter))]
    rb = ReorderBuffer(capacity=256, max_delay=1e9)
    out = []
    for t, i in enumerate(arrival):
        out += rb.push(pkt(start + i), float(t))
    out += rb.flush()
    released = [int.from_bytes(e.payload, "big") - start for e in out if isinstance(e, RtpPacket)]
    lost = sum(e.count for e in out if isinstance(e, Lost))
    if not arrival:
        assert out == []
        return
    expect = [i for i in range(arrival[0], n) if keep[i]]
    assert released == expect
    assert lost == (expect[-1] - arrival[0] + 1) - len(expect)
    assert rb.late + rb.duplicates == len(arrival) - len(released)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 0xFFFF), st.floats(0, 0.5)), max_size=200),
       st.integers(1, 32), st.floats(0, 0.3))
def test_any_arrival_order_stays_bounded_and_never_repeats(arrivals, capacity, delay) -> None:
    rb = ReorderBuffer(capacity=capacity, max_delay=delay)
    now = 0.0
    out = []
    for seq, dt in arrivals:
        now += dt
        out += rb.push(pkt(seq), now)
        assert len(rb) < capacity + 1
        deadline = rb.deadline()
        assert deadline is None or deadline >= now or len(rb) == 0
    out += rb.flush()
    released = [e.sequence for e in out if isinstance(e, RtpPacket)]
    # consecutive releases move forward (mod 2^16), except across a sender restart
    steps = [(b - a) % 65536 for a, b in zip(released, released[1:])]
    assert sum(1 for s in steps if s == 0 or s >= 32768) <= rb.restarts
    assert all(e.count > 0 for e in out if isinstance(e, Lost))
