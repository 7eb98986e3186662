"""SM3 hash (GB/T 32905) and HMAC-SM3.

Backend: ``hashlib.new("sm3")`` when the linked OpenSSL offers it (slightly
faster here), else ``cryptography``'s ``hashes.SM3``. ``sm3`` of a ``bytes`` object of up to
64 KiB goes to GmSSL's ``sm3_hash`` (ferry's SM2 backend), about 1 us faster per call (an audit
record's chain hash); OpenSSL is faster on larger input.
"""

from __future__ import annotations

import hashlib
import hmac as _hmac
from typing import Protocol

from ferry.crypto.errors import CryptoError

DIGEST_SIZE = 32
BLOCK_SIZE = 64


class _Hash(Protocol):
    def update(self, data: bytes | memoryview, /) -> None: ...

    def digest(self) -> bytes: ...


try:
    from gmssl_pyx import sm3_hash as _gmssl_sm3
except ImportError:  # pragma: no cover - gmssl_pyx is a dependency (SM2)
    _gmssl_sm3 = None
_GMSSL_MAX = 64 << 10       # bytes: above this OpenSSL's SM3 is faster

try:
    hashlib.new("sm3", b"")
    _HASHLIB = True
except (ValueError, TypeError):  # pragma: no cover - depends on the linked OpenSSL
    _HASHLIB = False

if _HASHLIB:

    def sm3(data: bytes | memoryview) -> bytes:
        """SM3 digest of ``data`` (32 bytes)."""
        if type(data) is bytes and len(data) <= _GMSSL_MAX and _gmssl_sm3 is not None:
            digest: bytes = _gmssl_sm3(data)
            return digest
        try:
            return hashlib.new("sm3", data).digest()
        except TypeError as exc:
            raise CryptoError(f"sm3: {exc}") from None

    def _new() -> _Hash:
        return hashlib.new("sm3")

else:  # pragma: no cover
    from cryptography.hazmat.primitives import hashes

    def sm3(data: bytes | memoryview) -> bytes:
        """SM3 digest of ``data`` (32 bytes)."""
        try:
            h = hashes.Hash(hashes.SM3())
            h.update(data)
            return h.finalize()
        except TypeError as exc:
            raise CryptoError(f"sm3: {exc}") from None

    class _CryptographySM3:
        def __init__(self) -> None:
            self._h = hashes.Hash(hashes.SM3())

        def update(self, data: bytes | memoryview, /) -> None:
            self._h.update(data)

        def digest(self) -> bytes:
            return self._h.copy().finalize()

    def _new() -> _Hash:
        return _CryptographySM3()


def sm3_hmac(key: bytes, data: bytes) -> bytes:
    """HMAC-SM3 (RFC 2104 with SM3), 32 bytes."""
    try:
        if _HASHLIB:
            return _hmac.new(bytes(key), data, "sm3").digest()
        # pragma: no cover - RFC 2104 by hand over the fallback backend
        k = bytes(key)
        if len(k) > BLOCK_SIZE:
            k = sm3(k)
        k = k.ljust(BLOCK_SIZE, b"\0")
        inner = SM3Hasher()
        inner.update(bytes(b ^ 0x36 for b in k))
        inner.update(data)
        return sm3(bytes(b ^ 0x5C for b in k) + inner.digest())
    except TypeError as exc:
        raise CryptoError(f"sm3_hmac: {exc}") from None


class SM3Hasher:
    """Incremental SM3; ``digest()`` may be called more than once."""

    __slots__ = ("_h",)

    def __init__(self, data: bytes | memoryview = b"") -> None:
        self._h = _new()
        if data:
            self.update(data)

    def update(self, data: bytes | memoryview) -> None:
        try:
            self._h.update(data)
        except TypeError as exc:
            raise CryptoError(f"sm3: {exc}") from None

    def digest(self) -> bytes:
        return self._h.digest()

    def hexdigest(self) -> str:
        return self.digest().hex()
