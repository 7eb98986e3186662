from ferry.wire.pacing import Pacer


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
