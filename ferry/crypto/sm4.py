"""SM4 block cipher (GB/T 32907) and SM4-GCM sealing, via ``cryptography``.

SM4-GCM is the hot path of the link: the ``algorithms.SM4`` object is built
once per key and each call does one encryptor/decryptor pass.
"""

from __future__ import annotations

import os
import threading

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from ferry.crypto.errors import CryptoError

KEY_SIZE = 16
NONCE_SIZE = 12
TAG_SIZE = 16
BLOCK_SIZE = 16

_GCM = modes.GCM


class SM4GCM:
    """SM4-GCM AEAD with a 128-bit key, 96-bit nonce and 128-bit tag."""

    __slots__ = ("_alg",)

    def __init__(self, key: bytes) -> None:
        if not isinstance(key, (bytes, bytearray)) or len(key) != KEY_SIZE:
            raise CryptoError("SM4 key must be 16 bytes")
        self._alg = algorithms.SM4(bytes(key))

    def seal(self, nonce: bytes, plaintext: bytes | memoryview, aad: bytes) -> bytes:
        """Return ciphertext || 16-byte tag."""
        if len(nonce) != NONCE_SIZE:
            raise CryptoError("SM4-GCM nonce must be 12 bytes")
        try:
            enc = Cipher(self._alg, _GCM(nonce)).encryptor()
            if aad:
                enc.authenticate_additional_data(aad)
            ct = enc.update(plaintext) + enc.finalize()
            return ct + enc.tag
        except (TypeError, ValueError) as exc:
            raise CryptoError(f"SM4-GCM seal: {exc}") from None

    def open(self, nonce: bytes, sealed: bytes | memoryview, aad: bytes) -> bytes:
        """Return the plaintext of ciphertext || tag; CryptoError if it does not authenticate."""
        try:
            n = len(sealed)
            if len(nonce) != NONCE_SIZE or n < TAG_SIZE:
                raise CryptoError("SM4-GCM: bad nonce or sealed length")
            view = memoryview(sealed)
            dec = Cipher(self._alg, _GCM(nonce, bytes(view[n - TAG_SIZE :]))).decryptor()
            if aad:
                dec.authenticate_additional_data(aad)
            return dec.update(view[: n - TAG_SIZE]) + dec.finalize()
        except InvalidTag:
            raise CryptoError("SM4-GCM: authentication failed") from None
        except CryptoError:
            raise
        except (TypeError, ValueError) as exc:
            raise CryptoError(f"SM4-GCM open: {exc}") from None


def sm4_ecb_encrypt_block(key: bytes, block: bytes) -> bytes:
    """Encrypt one 16-byte block with SM4 (for known-answer tests; `SM4ECB` for many blocks)."""
    if len(key) != KEY_SIZE or len(block) != BLOCK_SIZE:
        raise CryptoError("SM4-ECB: key and block must be 16 bytes")
    enc = Cipher(algorithms.SM4(bytes(key)), modes.ECB()).encryptor()
    return enc.update(block) + enc.finalize()


def random_key() -> bytes:
    """A fresh 16-byte SM4 key from os.urandom."""
    return os.urandom(KEY_SIZE)


class SM4ECB:
    """SM4 on whole 16-byte blocks (ECB): a PRF over fixed-size inputs, e.g. the link's
    per-datagram authenticators. The key schedule is built once per key.

    The OpenSSL context too: ECB carries nothing from one block to the next, so each `encrypt`
    is one `update` on a context kept per thread: about 4 us for a link block's 20 authenticator
    inputs (320 bytes), where a context per call took 8-9 us. Anything but whole blocks is
    refused before it reaches the context: a partial block would stay buffered there and shift
    every later one.
    """

    __slots__ = ("_alg", "_local")

    def __init__(self, key: bytes) -> None:
        if not isinstance(key, (bytes, bytearray)) or len(key) != KEY_SIZE:
            raise CryptoError("SM4 key must be 16 bytes")
        self._alg = algorithms.SM4(bytes(key))
        self._local = threading.local()  # a context is not for two threads at once

    def encrypt(self, blocks: bytes) -> bytes:
        """SM4 of each 16-byte block of `blocks` (its length a multiple of 16)."""
        if len(blocks) % BLOCK_SIZE:
            raise CryptoError("SM4-ECB: input must be whole 16-byte blocks")
        enc = getattr(self._local, "enc", None)
        if enc is None:
            enc = self._local.enc = Cipher(self._alg, modes.ECB()).encryptor()
        out: bytes = enc.update(blocks)
        if len(out) != len(blocks):  # cannot happen with whole blocks; never hand out a short one
            raise CryptoError("SM4-ECB: short output")
        return out
