"""Builders shared by the unit tests of the receiver's parts."""

from __future__ import annotations

from ferry.crypto import SM2PrivateKey
from ferry.wire.announce import build_announcement
from ferry.wire.frame import block_header, build_symbols, parse_symbol_header, symbol_size
from ferry.wire.symtag import SymbolAuth


def announcement(outer: SM2PrivateKey, inner: SM2PrivateKey, *, epoch: int, key: bytes = bytes(range(16)),
                 first_block: int = 0, not_before: float = 1.7e9, lifetime: float = 3600.0,
                 policy_hash: bytes = bytes(32), sender: str = "o") -> bytes:
    return build_announcement(
        outer_key=outer, envelope=inner.public_key().encrypt(key), epoch=epoch, not_before=not_before,
        not_after=not_before + lifetime, policy_hash=policy_hash, outer_key_id=outer.public_key().key_id(),
        inner_key_id=inner.public_key().key_id(), first_block=first_block, sender=sender)


def symbols(epoch: int, block_no: int, k: int = 4, m: int = 2, sealed_len: int = 100,
            key: bytes | SymbolAuth | None = bytes(range(16))) -> list[bytes]:
    """k + m symbol datagrams of a block whose symbols are filler (the block does not open),
    with authenticators under `key` (the default key of `announcement`); key=None: forged
    authenticators (all zero)."""
    size = symbol_size(sealed_len, k)
    header = block_header(epoch, block_no, k, m, sealed_len)
    auth = SymbolAuth(key) if isinstance(key, bytes) else key
    auths = bytes(16 * (k + m)) if auth is None else auth.block(block_no, k, m, 0, sealed_len)
    return build_symbols(header, [bytes([i]) * size for i in range(k + m)], auths)


def fields(d: bytes):
    return parse_symbol_header(d)


