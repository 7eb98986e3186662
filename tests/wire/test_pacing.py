import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ferry.wire.pacing import LinkPacer, Next, Pacer


def test_pacer_holds_the_rate():
    p = Pacer(1_000_000, burst=10_000, now=0.0)
    now, sent = 0.0, 0
    while now < 10.0:
        wait = p.delay(1500, now)
        now += wait
        p.consume(1500, now)
        sent += 1500
    assert 9_900_000 <= sent <= 10_020_000


def test_burst_goes_at_once_then_waits():
    p = Pacer(1000, burst=3000, now=0.0)
    assert p.delay(3000, 0.0) == 0
    p.consume(3000, 0.0)
    assert abs(p.delay(1000, 0.0) - 1.0) < 1e-9


# --- LinkPacer: control ahead of data within its share ---------------------------------------

RATE = 1_000_000.0


def _run(p: LinkPacer, seconds: float, control: int, data: int, control_every: float = 0.0):
    """Simulate a writer with `data`-byte batches always waiting and `control`-byte datagrams
    waiting every `control_every` s (0: always). Returns (control bytes, data bytes, control waits)."""
    now, sent = 0.0, {Next.CONTROL: 0, Next.DATA: 0}
    next_control, waits = 0.0, []
    while now < seconds:
        has_control = now >= next_control
        kind, wait = p.next(control if has_control else None, data, now)
        if control_every and not has_control and now + wait > next_control:
            now = next_control                 # a control datagram comes while data waits: ask again
            continue
        now += wait
        p.consume(kind, control if kind is Next.CONTROL else data, now)
        sent[kind] += control if kind is Next.CONTROL else data
        if kind is Next.CONTROL:
            waits.append(now - next_control)
            next_control = now + control_every
    return sent[Next.CONTROL], sent[Next.DATA], waits


def test_control_goes_ahead_of_waiting_data():
    p = LinkPacer(RATE, burst=100_000, now=0.0)
    p.consume(Next.DATA, 100_000, 0.0)         # the link's bucket empty: data waits 0.1 s for a batch
    kind, wait = p.next(700, 100_000, 0.0)
    assert kind is Next.CONTROL and wait == pytest.approx(700 / RATE)
    assert p.next(None, 100_000, 0.0) == (Next.DATA, pytest.approx(0.1))
    assert p.next(None, None, 0.0) is None


def test_control_is_bounded_by_its_share_and_cannot_starve_data():
    p = LinkPacer(RATE, burst=10_000, now=0.0, control_share=0.05, control_burst=5_000)
    control, data, _ = _run(p, 20.0, control=1_000, data=10_000)    # control always waiting
    assert control <= 0.05 * RATE * 20 + 5_000 + 1_000
    assert data >= 0.95 * RATE * 20 - 10_000 - 5_000
    assert control + data <= RATE * 20 + 10_000 + 10_000              # the link's rate holds


def test_periodic_control_waits_only_for_its_own_bytes_not_for_the_data_queue():
    """An announcement and a heartbeat a second beside a queue of data that never empties: each
    goes within the time its own bytes take at the link rate, and data keeps the rest."""
    p = LinkPacer(RATE, burst=64_000, now=0.0)
    control, data, waits = _run(p, 30.0, control=800, data=64_000, control_every=1.0)
    assert len(waits) >= 29 and max(waits) <= 800 / RATE + 1e-9
    assert data >= RATE * 30 - control - 64_000 - 64_000


def test_control_alone_goes_at_its_share():
    p = LinkPacer(RATE, burst=10_000, now=0.0, control_share=0.02, control_burst=4_000)
    control, data, _ = _run(p, 10.0, control=1_000, data=None)
    assert data == 0 and 0.02 * RATE * 10 <= control <= 0.02 * RATE * 10 + 4_000 + 1_000


def test_control_share_must_be_a_fraction():
    with pytest.raises(ValueError):
        LinkPacer(RATE, burst=10_000, now=0.0, control_share=1.0)


@settings(max_examples=200, deadline=None)
@given(
    share=st.floats(0.005, 0.5),
    control_burst=st.integers(1_000, 50_000),
    steps=st.lists(st.tuples(st.sampled_from(["control", "data", "both", "idle"]),
                             st.integers(40, 1_472), st.integers(1_000, 100_000), st.floats(0.0, 0.05)),
                   min_size=1, max_size=300),
)
def test_any_mix_holds_the_link_rate_and_the_control_share(share, control_burst, steps):
    """Whatever waits, and however often the writer asks: what goes over any prefix is within
    the link's rate (+ its burst + one datagram of debt) and control within its share."""
    rate, burst = RATE, 64_000
    p = LinkPacer(rate, burst, now=0.0, control_share=share, control_burst=control_burst)
    now, total, control_bytes = 0.0, 0, 0
    for what, csize, dsize, idle in steps:
        now += idle
        c = csize if what in ("control", "both") else None
        d = dsize if what in ("data", "both") else None
        got = p.next(c, d, now)
        if got is None:
            assert c is None and d is None
            continue
        kind, wait = got
        assert wait >= 0
        if kind is Next.CONTROL:
            assert c is not None
        else:
            assert d is not None and (c is None or p.control.delay(c, now) > 0)   # control first while it may
        now += wait
        size = c if kind is Next.CONTROL else d
        assert size is not None
        p.consume(kind, size, now)
        total += size
        if kind is Next.CONTROL:
            control_bytes += size
        assert total <= rate * now + burst + 100_000 + 1e-6
        assert control_bytes <= rate * share * now + control_burst + 1_472 + 1e-6
