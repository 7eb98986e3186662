"""fec.join_source: the receiver's fast path (all k source symbols held) is exact or refuses."""
from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ferry.wire import WireError, fec


@settings(max_examples=60, deadline=None)
@given(k=st.integers(1, 64), m=st.integers(1, 8), n=st.integers(16, 5000), seed=st.binary(min_size=1, max_size=64))
def test_join_source_is_the_block_for_any_size(k, m, n, seed):
    data = (seed * (n // len(seed) + 1))[:n]
    symbols = [bytes(s) for s in fec.encode(data, k, m)]
    held: list[bytes | None] = list(symbols[:k]) + [None] * m   # repair symbols never needed
    assert fec.join_source(held, k, n) == data


def test_join_source_refuses_a_missing_source_symbol():
    # it used to skip the hole and return a short block, which the cipher then refused as if
    # the sender had sealed it wrong ("auth") instead of a block that could not be rebuilt
    data = os.urandom(23168)
    symbols: list[bytes | None] = [bytes(s) for s in fec.encode(data, 16, 4)]
    symbols[5] = None
    with pytest.raises(WireError):
        fec.join_source(symbols, 16, len(data))


def test_join_source_refuses_symbols_too_short_for_the_block():
    data = os.urandom(1600)
    symbols = [bytes(s)[:-1] for s in fec.encode(data, 16, 4)]   # 100 bytes each, 99 held
    with pytest.raises(WireError):
        fec.join_source(symbols, 16, len(data))
