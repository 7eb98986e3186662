"""SM4ECB: SM4 on whole blocks under one key, its context reused from call to call."""
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ferry.crypto import SM4ECB, CryptoError, sm4_ecb_encrypt_block

K = bytes.fromhex("0123456789abcdeffedcba9876543210")
KAT = "681edf34d206965e86b3e94f536e4246"  # GB/T 32907 example 1: key = plaintext = K


def test_known_answer_and_repeatable():
    e = SM4ECB(K)
    for _ in range(3):  # the reused context carries nothing from one call to the next
        assert e.encrypt(K).hex() == KAT
    assert e.encrypt(K * 3).hex() == KAT * 3
    assert e.encrypt(b"") == b""


@settings(max_examples=100, deadline=None)
@given(key=st.binary(min_size=16, max_size=16),
       calls=st.lists(st.lists(st.binary(min_size=16, max_size=16), max_size=24), max_size=6))
def test_matches_a_fresh_context_per_block(key, calls):
    e = SM4ECB(key)
    for blocks in calls:
        assert e.encrypt(b"".join(blocks)) == b"".join(sm4_ecb_encrypt_block(key, b) for b in blocks)


@pytest.mark.parametrize("bad", [b"x", b"x" * 15, b"x" * 17, b"x" * 33])
def test_refuses_partial_blocks_and_stays_aligned(bad):
    e = SM4ECB(K)
    assert e.encrypt(K).hex() == KAT   # the context exists
    with pytest.raises(CryptoError):
        e.encrypt(bad)
    # a refused partial block left nothing buffered in the context: the next block is still right
    assert e.encrypt(K).hex() == KAT


def test_threads_each_get_their_own_context():
    e = SM4ECB(K)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(2000):
                assert e.encrypt(K * 20) == bytes.fromhex(KAT) * 20
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


@pytest.mark.parametrize("key", [b"", b"k" * 15, b"k" * 17, "k" * 16])
def test_bad_key(key):
    with pytest.raises(CryptoError):
        SM4ECB(key)
