"""ferry.policy.bundle.is_older: a bundle's signing time is its serial (issue 11 item 1)."""
from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ferry.policy.bundle import is_older

times = st.floats(min_value=1e-3, max_value=4e9, allow_nan=False)
hashes = st.binary(min_size=32, max_size=32)


@given(times, hashes)
def test_the_same_bundle_again_is_not_older(t, h):
    assert not is_older(t, h, t, h)


@given(times, hashes, hashes)
def test_nothing_is_older_than_the_configured_folder(t, h, running):
    assert not is_older(t, h, 0.0, running)


@given(times, times, hashes, hashes)
def test_signed_earlier_is_older_and_later_is_not(a, b, ha, hb):
    if a < b:
        assert is_older(a, ha, b, hb) and not is_older(b, hb, a, ha)
    elif a > b:
        assert not is_older(a, ha, b, hb) and is_older(b, hb, a, ha)


@given(times, hashes, hashes)
def test_another_policy_signed_at_the_same_instant_needs_a_rollback(t, h1, h2):
    assert is_older(t, h1, t, h2) == (h1 != h2)


def test_examples():
    assert is_older(100.0, b"a" * 32, 200.0, b"b" * 32)
    assert not is_older(300.0, b"a" * 32, 200.0, b"b" * 32)
    assert not is_older(200.0, b"b" * 32, 200.0, b"b" * 32)
