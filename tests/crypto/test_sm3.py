import importlib
import shutil
import subprocess

import pytest
from hypothesis import example, given, settings, strategies as st

from ferry.crypto import CryptoError, SM3Hasher, sm3, sm3_hmac

sm3_module = importlib.import_module("ferry.crypto.sm3")      # the module (the package exports the function)
ABC = "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"
# GB/T 32905 example 2: "abcd" x 16
ABCD16 = "debe9ff92275b8a138604889c18e5a4d6fdb70e5387e5765293dcba39c0c5732"


def test_sm3_known_answers():
    assert sm3(b"abc").hex() == ABC
    assert sm3(b"abcd" * 16).hex() == ABCD16
    assert sm3(memoryview(b"xabc")[1:]).hex() == ABC


def test_incremental_matches_one_shot():
    h = SM3Hasher()
    for chunk in (b"ab", b"", b"c"):
        h.update(chunk)
    assert h.hexdigest() == ABC
    assert h.digest() == h.digest()  # digest() does not finalize
    h.update(b"d" * 1000)
    assert h.digest() == sm3(b"abc" + b"d" * 1000)


def test_hmac_properties():
    mac = sm3_hmac(b"key", b"data")
    assert len(mac) == 32
    assert mac != sm3_hmac(b"kez", b"data")
    assert mac != sm3_hmac(b"key", b"datb")
    long_key = b"k" * 100  # longer than the block: hashed first (RFC 2104)
    assert sm3_hmac(long_key, b"m") == sm3_hmac(sm3(long_key), b"m")


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")
def test_hmac_matches_openssl():
    out = subprocess.run(
        ["openssl", "mac", "-digest", "SM3", "-macopt", "hexkey:6b6579", "HMAC"],
        input=b"some data", capture_output=True, check=True,
    ).stdout.decode().strip()
    assert sm3_hmac(b"key", b"some data").hex() == out.lower()


def test_bad_input_type():
    with pytest.raises(CryptoError):
        sm3("text")  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300) | st.integers(0, 3).map(lambda i: bytes(range(256)) * 256 + b"x" * (i - 1))
       | st.binary(min_size=1000, max_size=5000))
@example(b"")
@example(b"a" * sm3_module._GMSSL_MAX)
@example(b"a" * (sm3_module._GMSSL_MAX + 1))
def test_gmssl_path_equals_openssl_path(data):
    """sm3() of small bytes takes GmSSL's sm3_hash; the incremental hasher (OpenSSL) is the reference."""
    assert sm3(data) == SM3Hasher(data).digest() == sm3(memoryview(data)) == sm3(bytearray(data))
