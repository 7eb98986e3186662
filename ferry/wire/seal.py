"""Sealing a block and a heartbeat into datagrams (the sender's crypto step, deterministic).

`UnsealedBlock` is a block the sender packed but did not seal (`LinkSender(..., seal=False)`):
a value carrying everything `seal()` needs, so that the caller may seal it on another thread.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ferry.crypto import SM4GCM
from ferry.wire import fec
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


def seal_block(aead: SM4GCM, epoch: int, block_no: int, plaintext: bytes, k: int, m: int) -> list[bytes]:
    """The k + m symbol datagrams of one block (SM4-GCM seal, then Reed-Solomon)."""
    header = block_header(epoch, block_no, k, m, len(plaintext) + TAG_SIZE)
    sealed = aead.seal(block_nonce(epoch, block_no), plaintext, header)
    return build_symbols(header, fec.encode(sealed, k, m))


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
    aead: SM4GCM = field(repr=False, compare=False)  # the epoch's cipher (its key)

    @property
    def wire_bytes(self) -> int:
        """Bytes of the datagrams `seal(self)` returns."""
        return block_wire_bytes(len(self.plaintext), self.k, self.m)


def seal(block: UnsealedBlock) -> list[bytes]:
    """The k + m symbol datagrams of an unsealed block (pure; safe on any thread)."""
    return seal_block(block.aead, block.epoch, block.block_no, block.plaintext, block.k, block.m)
