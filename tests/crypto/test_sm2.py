import pytest
from asn1crypto import core

from ferry.crypto import DEFAULT_ID, CryptoError, SM2PrivateKey, SM2PublicKey, sm3
from ferry.crypto import _curve


@pytest.fixture(scope="module")
def key():
    return SM2PrivateKey.generate()


def _flip(b: bytes, i: int) -> bytes:
    return b[:i] + bytes([b[i] ^ 0x01]) + b[i + 1 :]


def test_default_id():
    assert DEFAULT_ID == b"1234567812345678"


def test_sign_verify(key):
    pub = key.public_key()
    sig = key.sign(b"message")
    seq = core.Sequence.load(sig)
    assert len(seq) == 2 and all(isinstance(seq[i], core.Integer) for i in range(2))
    pub.verify(b"message", sig)
    assert key.sign(b"message") != sig  # randomized k


def test_tampered_signature_rejected(key):
    pub = key.public_key()
    sig = key.sign(b"message")
    with pytest.raises(CryptoError, match="bad signature"):
        pub.verify(b"messagf", sig)
    with pytest.raises(CryptoError, match="bad signature"):
        pub.verify(b"message", _flip(sig, len(sig) - 1))  # s
    with pytest.raises(CryptoError, match="bad signature"):
        pub.verify(b"message", _flip(sig, 10))  # r
    with pytest.raises(CryptoError, match="bad signature"):
        SM2PrivateKey.generate().public_key().verify(b"message", sig)
    with pytest.raises(CryptoError, match="bad signature"):
        pub.verify(b"message", sig + b"\x00")  # trailing bytes


def test_non_der_signature_rejected(key):
    sig = key.sign(b"m")
    seq = core.Sequence.load(sig)
    r, s = seq[0].native, seq[1].native
    # BER long-form length for the outer SEQUENCE: same r, s, not DER
    body = sig[2:]
    ber = b"\x30\x81" + bytes([len(body)]) + body
    with pytest.raises(CryptoError):
        key.public_key().verify(b"m", ber)
    # s replaced by n - s is a different signature and must fail, (r, s) must be exact
    other = _SigSeq({"r": r, "s": _curve.N - s}).dump()
    with pytest.raises(CryptoError):
        key.public_key().verify(b"m", other)


class _SigSeq(core.Sequence):
    _fields = [("r", core.Integer), ("s", core.Integer)]


def test_encrypt_decrypt(key):
    ct = key.public_key().encrypt(b"k" * 16)
    c = core.Sequence.load(ct)
    # GM/T 0009 C1C3C2: INTEGER x, INTEGER y, OCTET STRING C3 (32), OCTET STRING C2
    assert [type(c[i]) for i in range(4)] == [core.Integer, core.Integer, core.OctetString, core.OctetString]
    assert len(c[2].native) == 32 and len(c[3].native) == 16
    assert key.decrypt(ct) == b"k" * 16


def _rebuild(ct: bytes, **changes) -> bytes:
    class C(core.Sequence):
        _fields = [("x", core.Integer), ("y", core.Integer), ("hash", core.OctetString),
                   ("ciphertext", core.OctetString)]

    c = C.load(ct)
    fields = {k: c[k].native for k in ("x", "y", "hash", "ciphertext")}
    fields.update(changes)
    return C(fields).dump()


def test_tampered_ciphertext_rejected(key):
    ct = key.public_key().encrypt(b"secret key bytes")
    c2 = core.Sequence.load(ct)[3].native
    c3 = core.Sequence.load(ct)[2].native
    x = core.Sequence.load(ct)[0].native
    assert _rebuild(ct) == ct
    with pytest.raises(CryptoError):
        key.decrypt(_rebuild(ct, ciphertext=_flip(c2, 0)))  # C2
    with pytest.raises(CryptoError):
        key.decrypt(_rebuild(ct, hash=_flip(c3, 5)))  # C3
    with pytest.raises(CryptoError):
        key.decrypt(_rebuild(ct, x=x ^ 1))  # C1 off the curve
    with pytest.raises(CryptoError):
        key.decrypt(_rebuild(ct, hash=c3[:31]))
    with pytest.raises(CryptoError):
        key.decrypt(ct[:-1])
    with pytest.raises(CryptoError):
        SM2PrivateKey.generate().decrypt(ct)  # wrong key


def test_plaintext_length_bounds(key):
    pub = key.public_key()
    assert key.decrypt(pub.encrypt(b"x" * 255)) == b"x" * 255
    for bad in (b"", b"x" * 256):
        with pytest.raises(CryptoError):
            pub.encrypt(bad)


def test_pem_der_roundtrip(key):
    again = SM2PrivateKey.from_pem(key.to_pem())
    assert again.public_key() == key.public_key()
    assert again.to_pem() == key.to_pem()
    pub = key.public_key()
    assert SM2PublicKey.from_pem(pub.to_pem()) == pub
    assert SM2PublicKey.from_der(pub.to_der()) == pub
    assert SM2PublicKey.from_raw(pub.raw()) == pub
    assert len(pub.raw()) == 64
    assert pub.key_id() == sm3(pub.to_der())
    assert hash(SM2PublicKey.from_raw(pub.raw())) == hash(pub)
    assert pub != SM2PrivateKey.generate().public_key()
    assert key.to_pem().startswith(b"-----BEGIN PRIVATE KEY-----\n")
    assert pub.to_pem().startswith(b"-----BEGIN PUBLIC KEY-----\n")
    assert key._d.hex() not in repr(key)


def test_public_key_checks():
    with pytest.raises(CryptoError):
        SM2PublicKey.from_raw(b"\x01" * 64)  # not on the curve
    with pytest.raises(CryptoError):
        SM2PublicKey.from_raw(b"\x04" + b"\x01" * 64)
    g = _curve.GX.to_bytes(32, "big") + _curve.GY.to_bytes(32, "big")
    assert SM2PublicKey.from_raw(g).raw() == g


def test_pem_label_and_kind_mismatch(key):
    with pytest.raises(CryptoError):
        SM2PublicKey.from_pem(key.to_pem())
    with pytest.raises(CryptoError):
        SM2PrivateKey.from_pem(key.public_key().to_pem())
    with pytest.raises(CryptoError):
        SM2PrivateKey.from_pem(key.to_pem().replace(b"PRIVATE KEY", b"EC PRIVATE KEY"))


def test_private_key_embedded_public_mismatch(key):
    other = SM2PrivateKey.generate()
    forged = SM2PrivateKey(key._d, other.public_key())  # bypasses validation
    with pytest.raises(CryptoError, match="does not match"):
        SM2PrivateKey.from_pem(forged.to_pem())


def test_private_scalar_range():
    for d in (0, _curve.N - 1, _curve.N):
        with pytest.raises(CryptoError):
            SM2PrivateKey._from_scalar(d, None)
    assert SM2PrivateKey._from_scalar(1, None).public_key().raw() == (
        _curve.GX.to_bytes(32, "big") + _curve.GY.to_bytes(32, "big")
    )


def test_leading_zero_private_key_is_32_bytes():
    k = SM2PrivateKey._from_scalar(0x1234, None)
    der = k.to_der()
    assert b"\x04\x20" + (0x1234).to_bytes(32, "big") in der
    assert SM2PrivateKey.from_der(der).to_der() == der
    k.public_key().verify(b"m", k.sign(b"m"))


def test_curve_mult_matches_backend():
    k = SM2PrivateKey.generate()  # public key computed by GmSSL
    x, y = _curve.base_mult(int.from_bytes(k._d, "big"))
    assert x.to_bytes(32, "big") + y.to_bytes(32, "big") == k.public_key().raw()
