"""Datagram framing of the ferry link (proto/WIRE.md): fixed headers, exact length checks.

Every datagram: magic b"\\xfeR", version 1, type (1 symbol, 2 key announcement, 3 heartbeat).
Big-endian throughout. Parsers raise only WireError.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from ferry import limits
from ferry.wire.errors import WireError

MAGIC = b"\xfeR"
VERSION = 1
TYPE_SYMBOL = 1
TYPE_ANNOUNCEMENT = 2
TYPE_HEARTBEAT = 3

PREFIX = MAGIC + bytes([VERSION])
TAG_SIZE = 16
UDP_MAX = 65507

# symbol datagram: magic ver type epoch block_no index k m flags sealed_len
SYMBOL_HEADER = struct.Struct(">2sBBIQBBBBI")
SYMBOL_HEADER_SIZE = SYMBOL_HEADER.size  # 24
# block header (AAD of the seal): the same without index
BLOCK_HEADER = struct.Struct(">2sBBIQBBBI")
BLOCK_HEADER_SIZE = BLOCK_HEADER.size  # 23
# fields after the 4-byte prefix, as the receiver unpacks them
SYMBOL_FIELDS = struct.Struct(">QBBBBI")  # block_no index k m flags sealed_len (epoch read separately)
NONCE = struct.Struct(">IQ")
HEARTBEAT_HEADER = struct.Struct(">2sBBIQ")
HEARTBEAT_HEADER_SIZE = HEARTBEAT_HEADER.size  # 16
HEARTBEAT_SEQ_BIT = 1 << 63
HEARTBEAT_MAX = 512
BLOCK_NO_MAX = (1 << 63) - 1
EPOCH_MAX = (1 << 32) - 1

SYMBOL_PREFIX = PREFIX + bytes([TYPE_SYMBOL])
ANNOUNCEMENT_PREFIX = PREFIX + bytes([TYPE_ANNOUNCEMENT])
HEARTBEAT_PREFIX = PREFIX + bytes([TYPE_HEARTBEAT])


def symbol_size(sealed_len: int, k: int) -> int:
    """Bytes per symbol pyeclib (isa_l_rs_vand) produces for a sealed block: ceil(sealed_len / k)."""
    return -(-sealed_len // k)


def block_nonce(epoch: int, block_no: int) -> bytes:
    """Nonce of a block seal: epoch(4) || block_no(8), block_no < 2**63."""
    return NONCE.pack(epoch, block_no)


def heartbeat_nonce(epoch: int, seq: int) -> bytes:
    """Nonce of a heartbeat seal: epoch(4) || (2**63 | seq), disjoint from block nonces."""
    return NONCE.pack(epoch, HEARTBEAT_SEQ_BIT | seq)


def block_header(epoch: int, block_no: int, k: int, m: int, sealed_len: int, flags: int = 0) -> bytes:
    """The 23-byte block header: AAD of the block's SM4-GCM seal."""
    return BLOCK_HEADER.pack(MAGIC, VERSION, TYPE_SYMBOL, epoch, block_no, k, m, flags, sealed_len)


def check_block_fields(k: int, m: int, flags: int, sealed_len: int, block_no: int) -> None:
    """Bounds every symbol header must satisfy (raises WireError)."""
    if not 1 <= k <= limits.FEC_K_MAX:
        raise WireError("bad k")
    if not 1 <= m <= limits.FEC_M_MAX:
        raise WireError("bad m")
    if flags != 0:
        raise WireError("bad flags")
    if not TAG_SIZE <= sealed_len <= limits.BLOCK_MAX:
        raise WireError("bad sealed_len")
    if block_no > BLOCK_NO_MAX:
        raise WireError("bad block_no")


class SymbolHeader(NamedTuple):
    """Parsed symbol datagram header."""

    epoch: int
    block_no: int
    index: int
    k: int
    m: int
    flags: int
    sealed_len: int


def parse_symbol(data: bytes | memoryview) -> tuple[SymbolHeader, memoryview]:
    """Parse a symbol datagram into its header and symbol bytes (exact length check)."""
    n = len(data)
    if n < SYMBOL_HEADER_SIZE + 1 or n > UDP_MAX:
        raise WireError("bad symbol length")
    magic, ver, typ, epoch, block_no, index, k, m, flags, sealed_len = SYMBOL_HEADER.unpack_from(data)
    if magic != MAGIC or ver != VERSION or typ != TYPE_SYMBOL:
        raise WireError("not a symbol datagram")
    check_block_fields(k, m, flags, sealed_len, block_no)
    if index >= k + m:
        raise WireError("bad index")
    if n != SYMBOL_HEADER_SIZE + symbol_size(sealed_len, k):
        raise WireError("bad symbol length")
    return SymbolHeader(epoch, block_no, index, k, m, flags, sealed_len), memoryview(data)[SYMBOL_HEADER_SIZE:]


def build_symbols(header: bytes, symbols: list) -> list[bytes]:
    """Symbol datagrams of one block: block header (23 bytes) with the index inserted after block_no."""
    head, tail = header[:16], header[16:]
    return [b"".join((head, bytes((i,)), tail, s)) for i, s in enumerate(symbols)]


def build_heartbeat_header(epoch: int, seq: int) -> bytes:
    """The 16 header bytes of a heartbeat datagram (also its AAD)."""
    return HEARTBEAT_HEADER.pack(MAGIC, VERSION, TYPE_HEARTBEAT, epoch, seq)


def parse_heartbeat(data: bytes | memoryview) -> tuple[int, int, bytes, bytes]:
    """Parse a heartbeat datagram into (epoch, seq, header, sealed)."""
    n = len(data)
    if n < HEARTBEAT_HEADER_SIZE + TAG_SIZE or n > HEARTBEAT_MAX:
        raise WireError("bad heartbeat length")
    magic, ver, typ, epoch, seq = HEARTBEAT_HEADER.unpack_from(data)
    if magic != MAGIC or ver != VERSION or typ != TYPE_HEARTBEAT:
        raise WireError("not a heartbeat datagram")
    if seq >= HEARTBEAT_SEQ_BIT:
        raise WireError("bad heartbeat seq")
    data = bytes(data)
    return epoch, seq, data[:HEARTBEAT_HEADER_SIZE], data[HEARTBEAT_HEADER_SIZE:]


def datagram_type(data: bytes | memoryview) -> int:
    """The type byte of a datagram after checking magic and version."""
    if len(data) < 4 or data[0] != 0xFE or data[1] != 0x52 or data[2] != VERSION:
        raise WireError("bad magic or version")
    return data[3]
