"""Recent (a size-capped dict) and TokenBucket (driven by `now`)."""

from __future__ import annotations

import pytest

from ferry.wire.bounded import Recent, TokenBucket


def test_recent_forgets_the_oldest_beyond_its_cap():
    r: Recent[int, str] = Recent(3)
    for i in range(5):
        r.put(i, str(i))
    assert list(r) == [2, 3, 4] and r[4] == "4"
    r.put(2, "again")  # an update keeps its place
    r.put(5, "5")
    assert list(r) == [3, 4, 5]
    assert len(r) == 3
    with pytest.raises(ValueError):
        Recent(0)


def test_token_bucket_rate_and_burst():
    b = TokenBucket(5.0, now=0.0)
    assert sum(b.take(0.0) for _ in range(20)) == 5  # burst = rate
    assert not b.take(0.1)
    assert b.take(0.2)  # 0.2 s at 5/s: one token
    assert sum(b.take(100.0) for _ in range(20)) == 5  # capped at the burst
    assert not b.take(50.0)  # time going backwards adds nothing
