"""Parsers of untrusted bytes raise only CryptoError."""

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ferry.crypto import CryptoError, SM2PrivateKey, SM2PublicKey

KEY = SM2PrivateKey.generate()
PUB = KEY.public_key()
SIG = KEY.sign(b"m")
CT = PUB.encrypt(b"0123456789abcdef")
SPKI = PUB.to_der()
PKCS8 = KEY.to_der()

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def mutations(seed: bytes):
    """Random bytes, plus the valid encoding with bytes flipped, cut or extended."""
    return st.one_of(
        st.binary(max_size=400),
        st.builds(
            lambda i, v, cut, tail: (seed[: i % len(seed)] + bytes([v]) + seed[i % len(seed) + 1 :])[:cut] + tail,
            st.integers(0, 10_000), st.integers(0, 255), st.integers(0, len(seed) + 1), st.binary(max_size=4),
        ),
    )


def _only_crypto_error(fn, data):
    try:
        fn(data)
    except CryptoError:
        pass


@FUZZ
@given(mutations(SPKI))
@example(b"")
def test_public_from_der(data):
    _only_crypto_error(SM2PublicKey.from_der, data)


@FUZZ
@given(mutations(PKCS8))
@example(b"\x30\x00")
def test_private_from_der(data):
    _only_crypto_error(SM2PrivateKey.from_der, data)


@FUZZ
@given(st.one_of(st.binary(max_size=400), mutations(PUB.to_pem()), mutations(KEY.to_pem())))
def test_from_pem(data):
    _only_crypto_error(SM2PublicKey.from_pem, data)
    _only_crypto_error(SM2PrivateKey.from_pem, data)


@FUZZ
@given(st.one_of(st.binary(max_size=100), st.binary(min_size=64, max_size=64)))
def test_from_raw(data):
    _only_crypto_error(SM2PublicKey.from_raw, data)


@FUZZ
@given(mutations(SIG))
def test_verify(data):
    if data == SIG:
        PUB.verify(b"m", data)
        return
    with pytest.raises(CryptoError):
        PUB.verify(b"m", data)


@FUZZ
@given(mutations(CT))
def test_decrypt(data):
    if data == CT:
        assert KEY.decrypt(data) == b"0123456789abcdef"
        return
    with pytest.raises(CryptoError):
        KEY.decrypt(data)
