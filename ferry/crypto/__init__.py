"""ferry.crypto: the only package in ferry that imports a crypto backend.

SM3 / HMAC-SM3 and SM4-GCM via ``cryptography``/``hashlib`` (OpenSSL), SM2 via
GmSSL (``gmssl_pyx``), key encodings via ``asn1crypto``. Every failure surfaces
as :class:`CryptoError`.
"""

from ferry.crypto.errors import CryptoError
from ferry.crypto.keys import init_keys, load_private_key, load_public_key
from ferry.crypto.sm2 import DEFAULT_ID, SM2PrivateKey, SM2PublicKey
from ferry.crypto.sm3 import SM3Hasher, sm3, sm3_hmac
from ferry.crypto.sm4 import (
    KEY_SIZE,
    NONCE_SIZE,
    TAG_SIZE,
    SM4ECB,
    SM4GCM,
    random_key,
    sm4_ecb_encrypt_block,
)

__all__ = [
    "CryptoError",
    "DEFAULT_ID",
    "KEY_SIZE",
    "NONCE_SIZE",
    "TAG_SIZE",
    "init_keys",
    "load_private_key",
    "load_public_key",
    "SM2PrivateKey",
    "SM2PublicKey",
    "SM3Hasher",
    "SM4ECB",
    "SM4GCM",
    "random_key",
    "sm3",
    "sm3_hmac",
    "sm4_ecb_encrypt_block",
]
