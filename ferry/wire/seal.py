"""Sealing a block and a heartbeat into datagrams (the sender's crypto step, deterministic).

`UnsealedBlock` is a block the sender packed but did not seal (`LinkSender(..., seal=False)`):
a value carrying everything `seal()` needs, so that the caller may seal it on another thread.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ferry.crypto import SM4GCM
from ferry.wire import fec
from ferry.wire.symtag import SymbolAuth
from ferry.wire.frame import (
    SYMBOL_HEADER_SIZE,
    TAG_SIZE,
    block_header,
    block_nonce,
    build_heartbeat_header,
    build_symbols,
    heartbeat_nonce,
    symbol_size,
)


class EpochKey:
    """The ciphers of one key epoch, built once per key: SM4-GCM for blocks and heartbeats,
    and the symbol authenticators (symtag.py) under the key derived from it."""

    __slots__ = ("aead", "auth")

    def __init__(self, key: bytes) -> None:
        self.aead = SM4GCM(key)
        self.auth = SymbolAuth(key)


def seal_block(key: EpochKey, epoch: int, block_no: int, plaintext: bytes, k: int, m: int) -> list[bytes]:
    """The k + m symbol datagrams of one block (SM4-GCM seal, Reed-Solomon, authenticators)."""
    sealed_len = len(plaintext) + TAG_SIZE
    header = block_header(epoch, block_no, k, m, sealed_len)
    sealed = key.aead.seal(block_nonce(epoch, block_no), plaintext, header)
    return build_symbols(header, fec.encode(sealed, k, m), key.auth.block(block_no, k, m, 0, sealed_len))


def seal_heartbeat(aead: SM4GCM, epoch: int, seq: int, body: bytes) -> bytes:
    """A heartbeat datagram: 16 header bytes, then the body sealed with the header as AAD."""
    header = build_heartbeat_header(epoch, seq)
    return header + aead.seal(heartbeat_nonce(epoch, seq), body, header)


def block_wire_bytes(plaintext_len: int, k: int, m: int) -> int:
    """Bytes of the k + m datagrams a block of this plaintext size seals into (exact)."""
    return (k + m) * (SYMBOL_HEADER_SIZE + symbol_size(plaintext_len + TAG_SIZE, k))


@dataclass(frozen=True, slots=True)
class UnsealedBlock:
    """A packed block not sealed yet: `seal(block)` makes its k + m datagrams."""

    epoch: int
    block_no: int
    plaintext: bytes = field(repr=False)
    k: int
    m: int
    key: EpochKey = field(repr=False, compare=False)  # the epoch's ciphers

    @property
    def wire_bytes(self) -> int:
        """Bytes of the datagrams `seal(self)` returns."""
        return block_wire_bytes(len(self.plaintext), self.k, self.m)


def seal(block: UnsealedBlock) -> list[bytes]:
    """The k + m symbol datagrams of an unsealed block (pure; safe on any thread)."""
    return seal_block(block.key, block.epoch, block.block_no, block.plaintext, block.k, block.m)
