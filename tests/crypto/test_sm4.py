import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ferry.crypto import (
    KEY_SIZE,
    NONCE_SIZE,
    SM4GCM,
    TAG_SIZE,
    CryptoError,
    random_key,
    sm4_ecb_encrypt_block,
)

K = bytes.fromhex("0123456789abcdeffedcba9876543210")

# RFC 8998 Appendix A.1 (SM4-GCM)
RFC_KEY = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
RFC_IV = bytes.fromhex("00001234567800000000ABCD")
RFC_AAD = bytes.fromhex("FEEDFACEDEADBEEFFEEDFACEDEADBEEFABADDAD2")
RFC_PT = bytes.fromhex(
    "AAAAAAAAAAAAAAAABBBBBBBBBBBBBBBBCCCCCCCCCCCCCCCCDDDDDDDDDDDDDDDD"
    "EEEEEEEEEEEEEEEEFFFFFFFFFFFFFFFFEEEEEEEEEEEEEEEEAAAAAAAAAAAAAAAA"
)
RFC_CT = bytes.fromhex(
    "17F399F08C67D5EE19D0DC9969C4BB7D5FD46FD3756489069157B282BB200735"
    "D82710CA5C22F0CCFA7CBF93D496AC15A56834CBCF98C397B4024A2691233B8D"
)
RFC_TAG = bytes.fromhex("83DE3541E4C2B58177E065A9BF7B62EC")


def test_sizes():
    assert (KEY_SIZE, NONCE_SIZE, TAG_SIZE) == (16, 12, 16)
    a, b = random_key(), random_key()
    assert len(a) == 16 and a != b


def test_sm4_ecb_known_answer():
    assert sm4_ecb_encrypt_block(K, K).hex() == "681edf34d206965e86b3e94f536e4246"


def test_sm4_gcm_rfc8998_vector():
    g = SM4GCM(RFC_KEY)
    assert g.seal(RFC_IV, RFC_PT, RFC_AAD) == RFC_CT + RFC_TAG
    assert g.open(RFC_IV, RFC_CT + RFC_TAG, RFC_AAD) == RFC_PT


def test_memoryview_and_empty():
    g = SM4GCM(K)
    n = bytes(12)
    sealed = g.seal(n, memoryview(b"..hello")[2:], b"")
    assert len(sealed) == 5 + TAG_SIZE
    assert g.open(n, memoryview(b"xx" + sealed)[2:], b"") == b"hello"
    assert g.open(n, g.seal(n, b"", b"hdr"), b"hdr") == b""


@pytest.mark.parametrize("key", [b"", b"k" * 15, b"k" * 17, b"k" * 32])
def test_bad_key_length(key):
    with pytest.raises(CryptoError):
        SM4GCM(key)


def test_bad_nonce_length():
    g = SM4GCM(K)
    with pytest.raises(CryptoError):
        g.seal(bytes(8), b"x", b"")
    with pytest.raises(CryptoError):
        g.open(bytes(16), bytes(32), b"")


def _flip(b: bytes, i: int) -> bytes:
    return b[:i] + bytes([b[i] ^ 0x01]) + b[i + 1 :]


def test_tamper_rejected():
    g = SM4GCM(RFC_KEY)
    sealed = RFC_CT + RFC_TAG
    assert g.open(RFC_IV, sealed, RFC_AAD) == RFC_PT
    with pytest.raises(CryptoError):  # tag
        g.open(RFC_IV, _flip(sealed, len(sealed) - 1), RFC_AAD)
    with pytest.raises(CryptoError):  # ciphertext
        g.open(RFC_IV, _flip(sealed, 0), RFC_AAD)
    with pytest.raises(CryptoError):  # aad
        g.open(RFC_IV, sealed, _flip(RFC_AAD, 3))
    with pytest.raises(CryptoError):  # nonce
        g.open(_flip(RFC_IV, 11), sealed, RFC_AAD)
    with pytest.raises(CryptoError):  # key
        SM4GCM(_flip(RFC_KEY, 0)).open(RFC_IV, sealed, RFC_AAD)
    with pytest.raises(CryptoError):  # truncated
        g.open(RFC_IV, sealed[:-1], RFC_AAD)
    with pytest.raises(CryptoError):  # shorter than a tag
        g.open(RFC_IV, sealed[:15], RFC_AAD)


@settings(max_examples=300, deadline=None)
@given(pt=st.binary(max_size=2048), aad=st.binary(max_size=64), nonce=st.binary(min_size=12, max_size=12))
def test_roundtrip(pt, aad, nonce):
    g = SM4GCM(K)
    sealed = g.seal(nonce, pt, aad)
    assert len(sealed) == len(pt) + TAG_SIZE
    assert g.open(nonce, sealed, aad) == pt


@settings(max_examples=300, deadline=None)
@given(sealed=st.binary(max_size=200), aad=st.binary(max_size=32), nonce=st.binary(max_size=16))
def test_open_garbage_only_crypto_error(sealed, aad, nonce):
    with pytest.raises(CryptoError):
        SM4GCM(K).open(nonce, sealed, aad)
