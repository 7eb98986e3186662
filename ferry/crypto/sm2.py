"""SM2 signatures and public-key encryption (GB/T 32918), backed by GmSSL (gmssl_pyx).

Encodings (DESIGN.md §5): signature DER SEQUENCE{r, s} over SM3(Z_A || M) with
ID ``1234567812345678``; ciphertext DER C1C3C2 (GM/T 0009); keys PEM PKCS#8 /
SPKI with id-ecPublicKey + namedCurve SM2, as ``openssl genpkey -algorithm SM2``
writes them. ASN.1 via asn1crypto.
"""

from __future__ import annotations

from typing import Any

import gmssl_pyx
from asn1crypto import core, keys, pem

from ferry.crypto import _curve
from ferry.crypto.errors import CryptoError
from ferry.crypto.sm3 import sm3

DEFAULT_ID = b"1234567812345678"
SM2_CURVE_OID = "1.2.156.10197.1.301"
MAX_PLAINTEXT = 255  # GmSSL's SM2 encryption bound
MAX_CIPHERTEXT = 366
MIN_CIPHERTEXT = 45

if SM2_CURVE_OID not in keys.NamedCurve._map:  # asn1crypto does not know SM2
    keys.NamedCurve.register("sm2", SM2_CURVE_OID, 32)

_BACKEND_ERRORS = (gmssl_pyx.GmsslInnerError, gmssl_pyx.InvalidValueError, ValueError, TypeError)


# asn1crypto and gmssl_pyx ship no type information (pyproject: ignore_missing_imports): their values
# are Any, and every bytes they return is bound to an annotated name before it leaves this module.


class _SM2Signature(core.Sequence):  # type: ignore[misc]  # asn1crypto is untyped: core.Sequence is Any
    _fields = [("r", core.Integer), ("s", core.Integer)]


class _SM2Ciphertext(core.Sequence):  # type: ignore[misc]  # asn1crypto is untyped: core.Sequence is Any
    """GM/T 0009 SM2Cipher: C1 (x, y), C3 (SM3 hash), C2 (ciphertext)."""

    _fields = [
        ("x", core.Integer),
        ("y", core.Integer),
        ("hash", core.OctetString),
        ("ciphertext", core.OctetString),
    ]


def _strict_der(spec: type[core.Asn1Value], data: bytes, what: str, canonical: bool = True) -> Any:
    """Parse ``data`` as ``spec``; with ``canonical``, require it to re-encode to the same bytes."""
    try:
        data = bytes(data)
        value = spec.load(data, strict=True)
        value.native  # force the lazy parse of every field
        if canonical and value.dump(force=True) != data:
            raise ValueError("not DER")
        return value
    except CryptoError:
        raise
    except Exception as exc:  # asn1crypto raises many types on bad input
        raise CryptoError(f"{what}: malformed ({exc.__class__.__name__})") from None


def _unarmor(data: bytes, label: str, what: str) -> bytes:
    try:
        data = bytes(data)
        if not pem.detect(data):
            raise ValueError("not PEM")
        name: str
        der: bytes
        name, _headers, der = pem.unarmor(data)
    except Exception as exc:
        raise CryptoError(f"{what}: not PEM ({exc.__class__.__name__})") from None
    if name != label:
        raise CryptoError(f"{what}: PEM label is {name!r}, expected {label!r}")
    return der


def _is_sm2_algorithm(alg: Any) -> bool:
    return bool(
        alg["algorithm"].dotted == "1.2.840.10045.2.1"
        and alg["parameters"].name == "named"
        and alg["parameters"].chosen.dotted == SM2_CURVE_OID
    )


def _algorithm() -> dict[str, object]:
    return {
        "algorithm": "ec",
        "parameters": keys.ECDomainParameters(name="named", value="sm2"),
    }


class SM2PublicKey:
    """An SM2 public key (a point of the SM2 curve)."""

    __slots__ = ("_raw",)

    def __init__(self, raw: bytes) -> None:
        # use from_raw/from_der/from_pem: they validate
        self._raw = raw

    @classmethod
    def from_raw(cls, xy64: bytes) -> "SM2PublicKey":
        """From 64 bytes x || y; CryptoError unless the point is on the curve."""
        if not isinstance(xy64, (bytes, bytearray, memoryview)) or len(xy64) != 64:
            raise CryptoError("SM2 public key: raw form must be 64 bytes x||y")
        raw = bytes(xy64)
        x, y = int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")
        if not _curve.on_curve(x, y):
            raise CryptoError("SM2 public key: point not on the SM2 curve")
        return cls(raw)

    @classmethod
    def from_der(cls, data: bytes) -> "SM2PublicKey":
        """From SPKI DER with id-ecPublicKey + namedCurve SM2."""
        info = _strict_der(keys.PublicKeyInfo, data, "SM2 public key")
        if not _is_sm2_algorithm(info["algorithm"]):
            raise CryptoError("SM2 public key: algorithm is not id-ecPublicKey/SM2")
        point = info["public_key"].native
        if not isinstance(point, bytes) or len(point) != 65 or point[0] != 4:
            raise CryptoError("SM2 public key: not an uncompressed point")
        return cls.from_raw(point[1:])

    @classmethod
    def from_pem(cls, data: bytes) -> "SM2PublicKey":
        """From SPKI PEM ("PUBLIC KEY")."""
        return cls.from_der(_unarmor(data, "PUBLIC KEY", "SM2 public key"))

    def to_der(self) -> bytes:
        """SPKI DER."""
        der: bytes = keys.PublicKeyInfo(
            {"algorithm": _algorithm(), "public_key": b"\x04" + self._raw}
        ).dump()
        return der

    def to_pem(self) -> bytes:
        armored: bytes = pem.armor("PUBLIC KEY", self.to_der())
        return armored

    def raw(self) -> bytes:
        """64 bytes x || y."""
        return self._raw

    def key_id(self) -> bytes:
        """SM3 of the SPKI DER (32 bytes)."""
        return sm3(self.to_der())

    def verify(self, message: bytes, signature: bytes) -> None:
        """Check a DER SEQUENCE{r, s} signature; CryptoError("bad signature") if it does not hold."""
        try:
            if not 8 <= len(signature) <= 72:
                raise CryptoError("bad signature")
            _strict_der(_SM2Signature, signature, "signature")
            ok = gmssl_pyx.sm2_verify(self._raw, bytes(message), bytes(signature), signer_id=DEFAULT_ID)
        except (CryptoError, *_BACKEND_ERRORS):
            raise CryptoError("bad signature") from None
        if ok is not True:
            raise CryptoError("bad signature")

    def encrypt(self, plaintext: bytes) -> bytes:
        """SM2-encrypt 1..255 bytes; returns DER C1C3C2 (GM/T 0009)."""
        if not 1 <= len(plaintext) <= MAX_PLAINTEXT:
            raise CryptoError(f"SM2 encrypt: plaintext must be 1..{MAX_PLAINTEXT} bytes")
        try:
            ciphertext: bytes = gmssl_pyx.sm2_encrypt(self._raw, bytes(plaintext))
            return ciphertext
        except _BACKEND_ERRORS as exc:
            raise CryptoError(f"SM2 encrypt failed: {exc}") from None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SM2PublicKey):
            return NotImplemented
        return self._raw == other._raw

    def __hash__(self) -> int:
        return hash(self._raw)

    def __repr__(self) -> str:
        return f"SM2PublicKey(key_id={self.key_id().hex()[:16]}...)"


class SM2PrivateKey:
    """An SM2 private key d with its public key d*G."""

    __slots__ = ("_d", "_public")

    def __init__(self, d: bytes, public: SM2PublicKey) -> None:
        # use generate/from_pem: they validate
        self._d = d
        self._public = public

    @classmethod
    def generate(cls) -> "SM2PrivateKey":
        try:
            pub, d = gmssl_pyx.sm2_key_generate()
        except _BACKEND_ERRORS as exc:  # pragma: no cover
            raise CryptoError(f"SM2 key generation failed: {exc}") from None
        return cls(bytes(d), SM2PublicKey.from_raw(pub))

    @classmethod
    def _from_scalar(cls, d: int, embedded: bytes | None) -> "SM2PrivateKey":
        if not 1 <= d <= _curve.N - 2:
            raise CryptoError("SM2 private key: scalar out of range")
        x, y = _curve.base_mult(d)
        public = SM2PublicKey(x.to_bytes(32, "big") + y.to_bytes(32, "big"))
        if embedded is not None and embedded != b"\x04" + public.raw():
            raise CryptoError("SM2 private key: embedded public key does not match")
        return cls(d.to_bytes(32, "big"), public)

    @classmethod
    def from_der(cls, data: bytes) -> "SM2PrivateKey":
        """From PKCS#8 DER (id-ecPublicKey + namedCurve SM2)."""
        info = _strict_der(keys.PrivateKeyInfo, data, "SM2 private key", canonical=False)
        if info["version"].native != 0 or not _is_sm2_algorithm(info["private_key_algorithm"]):
            raise CryptoError("SM2 private key: algorithm is not id-ecPublicKey/SM2")
        try:
            ec = info["private_key"].parsed
            params = ec["parameters"]
            if params.native is not None and (
                params.name != "named" or params.chosen.dotted != SM2_CURVE_OID
            ):
                raise ValueError("curve mismatch")
            d = ec["private_key"].native
            embedded = ec["public_key"].native
        except Exception as exc:
            raise CryptoError(f"SM2 private key: malformed ({exc.__class__.__name__})") from None
        if not isinstance(d, int) or (embedded is not None and not isinstance(embedded, bytes)):
            raise CryptoError("SM2 private key: malformed")
        return cls._from_scalar(d, embedded)

    @classmethod
    def from_pem(cls, data: bytes) -> "SM2PrivateKey":
        """From PKCS#8 PEM ("PRIVATE KEY"), as `openssl genpkey -algorithm SM2` writes."""
        return cls.from_der(_unarmor(data, "PRIVATE KEY", "SM2 private key"))

    def to_der(self) -> bytes:
        """PKCS#8 DER, byte for byte the layout openssl writes."""
        ec = keys.ECPrivateKey(
            {
                "version": "ecPrivkeyVer1",
                "private_key": int.from_bytes(self._d, "big"),
                "public_key": keys.ECPointBitString(b"\x04" + self._public.raw()),
            }
        )
        ec.set_key_size(32)  # keep 32 bytes with leading zeros, as openssl does
        der: bytes = keys.PrivateKeyInfo(
            {"version": 0, "private_key_algorithm": _algorithm(), "private_key": ec}
        ).dump()
        return der

    def to_pem(self) -> bytes:
        """PKCS#8 PEM, openssl-compatible."""
        armored: bytes = pem.armor("PRIVATE KEY", self.to_der())
        return armored

    def public_key(self) -> SM2PublicKey:
        return self._public

    def sign(self, message: bytes) -> bytes:
        """DER SEQUENCE{r, s} over SM3(Z_A || M), ID = DEFAULT_ID."""
        try:
            signature: bytes = gmssl_pyx.sm2_sign(self._d, self._public.raw(), bytes(message), signer_id=DEFAULT_ID)
            return signature
        except _BACKEND_ERRORS as exc:
            raise CryptoError(f"SM2 sign failed: {exc}") from None

    def decrypt(self, ciphertext: bytes) -> bytes:
        """Decrypt DER C1C3C2; CryptoError on any failure (malformed, bad point, bad C3)."""
        if not MIN_CIPHERTEXT <= len(ciphertext) <= MAX_CIPHERTEXT:
            raise CryptoError("SM2 decrypt failed")
        try:
            c = _strict_der(_SM2Ciphertext, ciphertext, "SM2 ciphertext")
            if len(c["hash"].native) != 32 or not _curve.on_curve(c["x"].native, c["y"].native):
                raise CryptoError("SM2 decrypt failed")
            plaintext: bytes = gmssl_pyx.sm2_decrypt(self._d, bytes(ciphertext))
            return plaintext
        except (CryptoError, *_BACKEND_ERRORS):
            raise CryptoError("SM2 decrypt failed") from None

    def __repr__(self) -> str:
        return f"SM2PrivateKey(public={self._public!r})"
