"""Sealing a block and a heartbeat into datagrams (the sender's crypto step, deterministic)."""

from __future__ import annotations

from ferry.wire import fec
from ferry.wire.frame import (
    BLOCK_HEADER,
    MAGIC,
    NONCE,
    TAG_SIZE,
    TYPE_SYMBOL,
    VERSION,
    build_heartbeat_header,
    heartbeat_nonce,
)


def seal_block(aead, epoch: int, block_no: int, plaintext: bytes, k: int, m: int) -> list[bytes]:
    """The k + m symbol datagrams of one block (SM4-GCM seal, then Reed-Solomon)."""
    sealed_len = len(plaintext) + TAG_SIZE
    header = BLOCK_HEADER.pack(MAGIC, VERSION, TYPE_SYMBOL, epoch, block_no, k, m, 0, sealed_len)
    sealed = aead.seal(NONCE.pack(epoch, block_no), plaintext, header)
    head, tail = header[:16], header[16:]
    return [b"".join((head, bytes((i,)), tail, sym)) for i, sym in enumerate(fec.encode(sealed, k, m))]


def seal_heartbeat(aead, epoch: int, seq: int, body: bytes) -> bytes:
    """A heartbeat datagram: 16 header bytes, then the body sealed with the header as AAD."""
    header = build_heartbeat_header(epoch, seq)
    return header + aead.seal(heartbeat_nonce(epoch, seq), body, header)
