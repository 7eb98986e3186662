"""Datagram framing of the ferry link (proto/WIRE.md): fixed headers, exact length checks.

Every datagram: magic b"\\xfeR", version 2, type (1 symbol, 2 key announcement, 3 heartbeat).
Big-endian throughout. Parsers raise only WireError.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import NamedTuple

from ferry.reasons import Reason
from ferry import limits
from ferry.wire.errors import WireError

MAGIC = b"\xfeR"
VERSION = 2
TYPE_SYMBOL = 1
TYPE_ANNOUNCEMENT = 2
TYPE_HEARTBEAT = 3

PREFIX = MAGIC + bytes([VERSION])
TAG_SIZE = 16
UDP_MAX = 65507

# symbol datagram: magic ver type epoch block_no index k m flags sealed_len authenticator
SYMBOL_HEADER = struct.Struct(">2sBBIQBBBBI8s")
SYMBOL_HEADER_SIZE = SYMBOL_HEADER.size  # 32
AUTH_SIZE = 8  # the symbol authenticator (symtag.py): bytes 24..32
AUTH_OFFSET = SYMBOL_HEADER_SIZE - AUTH_SIZE
# block header (AAD of the seal): the same without index
BLOCK_HEADER = struct.Struct(">2sBBIQBBBI")
BLOCK_HEADER_SIZE = BLOCK_HEADER.size  # 23
# the same header with magic, version and type as one integer: parse_symbol_header's unpack
SYMBOL_HEADER_INTS = struct.Struct(">IIQBBBBIQ")
NONCE = struct.Struct(">IQ")
HEARTBEAT_HEADER = struct.Struct(">2sBBIQ")
HEARTBEAT_HEADER_SIZE = HEARTBEAT_HEADER.size  # 16
HEARTBEAT_SEQ_BIT = 1 << 63
HEARTBEAT_MAX = 512
BLOCK_NO_MAX = (1 << 63) - 1
EPOCH_MAX = (1 << 32) - 1

SYMBOL_PREFIX = PREFIX + bytes([TYPE_SYMBOL])
SYMBOL_PREFIX_INT = int.from_bytes(SYMBOL_PREFIX, "big")
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


# (prefix, epoch, block_no, index, k, m, flags, sealed_len, auth) as unpacked; prefix: magic,
# version, type; auth: the 8-byte symbol authenticator as an integer
SymbolFields = tuple[int, int, int, int, int, int, int, int, int]
_unpack_symbol_ints = SYMBOL_HEADER_INTS.unpack_from
_K_MAX, _M_MAX, _BLOCK_MAX = limits.FEC_K_MAX, limits.FEC_M_MAX, limits.BLOCK_MAX


def parse_symbol_header(data: bytes | memoryview) -> SymbolFields:
    """The checked header fields of a symbol datagram: the receiver's data path (and fuzzed).

    One unpack_from and no other allocation: returns the unpacked tuple
    (prefix, epoch, block_no, index, k, m, flags, sealed_len, auth). Raises WireError whose message
    is the receiver's drop reason: "bad_length", "bad_magic" (magic, version or type), "bad_header".
    """
    n = len(data)
    if n <= SYMBOL_HEADER_SIZE or n > UDP_MAX:
        raise WireError(Reason.BAD_LENGTH)
    f = _unpack_symbol_ints(data)
    prefix, _, block_no, index, k, m, flags, sealed_len, _ = f
    if prefix != SYMBOL_PREFIX_INT:
        raise WireError(Reason.BAD_MAGIC)
    if (
        not 0 < k <= _K_MAX
        or not 0 < m <= _M_MAX
        or flags
        or not TAG_SIZE <= sealed_len <= _BLOCK_MAX
        or block_no > BLOCK_NO_MAX
        or index >= k + m
    ):
        raise WireError(Reason.BAD_HEADER)
    if n - SYMBOL_HEADER_SIZE != -(-sealed_len // k):
        raise WireError(Reason.BAD_LENGTH)
    return f


class SymbolHeader(NamedTuple):
    """Parsed symbol datagram header."""

    epoch: int
    block_no: int
    index: int  # type: ignore[assignment]  # the wire's name for it, shadowing tuple.index
    k: int
    m: int
    flags: int
    sealed_len: int
    auth: int


def parse_symbol(data: bytes | memoryview) -> tuple[SymbolHeader, memoryview]:
    """Parse a symbol datagram into its header and symbol bytes (exact length check)."""
    _, epoch, block_no, index, k, m, flags, sealed_len, auth = parse_symbol_header(data)
    header = SymbolHeader(epoch, block_no, index, k, m, flags, sealed_len, auth)
    return header, memoryview(data)[SYMBOL_HEADER_SIZE:]


def build_symbols(header: bytes, symbols: Sequence[bytes | memoryview], auths: bytes) -> list[bytes]:
    """Symbol datagrams of one block: block header (23 bytes) with the index inserted after
    block_no and symbol i's authenticator after sealed_len. `auths`: the output of
    `symtag.SymbolAuth.block` (16 bytes per symbol, the first AUTH_SIZE of them used)."""
    head, tail = header[:16], header[16:]
    return [
        b"".join((head, bytes((i,)), tail, auths[16 * i : 16 * i + AUTH_SIZE], s)) for i, s in enumerate(symbols)
    ]


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
    """The type byte of a datagram after checking magic and version (WireError "bad_magic")."""
    if len(data) < 4 or data[0] != 0xFE or data[1] != 0x52 or data[2] != VERSION:
        raise WireError(Reason.BAD_MAGIC)
    return data[3]
