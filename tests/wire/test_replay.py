"""ReplayWindow, after wireguard-go replay/replay_test.go."""

from ferry.wire import ReplayWindow


def test_in_order_and_duplicates():
    w = ReplayWindow(64)
    for n in range(200):
        assert w.check(n) and w.mark(n)
        assert not w.check(n) and not w.mark(n)
    assert w.last == 199


def test_out_of_order_within_window():
    w = ReplayWindow(64)
    assert w.mark(100)
    assert w.mark(37) and not w.mark(37)  # 63 behind: inside
    assert not w.check(36) and not w.mark(36)  # 64 behind: too old
    assert w.too_old(36) and not w.too_old(37)
    assert w.seen(37) and not w.seen(50)
    assert w.mark(50) and w.seen(50)


def test_jump_clears_history():
    w = ReplayWindow(64)
    for n in range(10):
        w.mark(n)
    w.mark(1000)
    assert not w.check(5)  # too old now
    assert w.check(999) and w.mark(999)
    w.mark(1000 + 63)
    assert w.seen(1000) and not w.seen(1001) and w.check(1001)
    w.mark(1000 + 64)
    assert w.too_old(1000)


def test_first_number_may_be_anything():
    w = ReplayWindow()
    assert w.check(0) and w.check(1 << 62)
    assert w.mark(1 << 62) and not w.check(0)


def test_next_seen_is_the_lowest_marked_number_above():
    w = ReplayWindow(size=8)
    assert w.next_seen(0) is None
    for n in (10, 12, 15):
        w.mark(n)
    assert [w.next_seen(n) for n in (0, 7, 9, 10, 11, 12, 14, 15, 2**40)] == [10, 10, 10, 12, 12, 15, 15, None, None]
    assert w.next_seen(-(2**40)) == 10  # far below the window: cheap, no huge shift
