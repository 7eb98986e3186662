"""Symbol authenticators: who may put a symbol into a pending block (proto/WIRE.md §1.1).

Every symbol datagram carries, after its header, AUTH_SIZE bytes: the first 8 bytes of
SM4_Ka(block_no ‖ index ‖ k ‖ m ‖ flags ‖ sealed_len) — exactly header bytes 8..24, one
16-byte SM4 block — under Ka, a key derived from the epoch's SM4 key:
Ka = HMAC-SM3(epoch key, AUTH_LABEL)[:16]. The epoch is bound by the key. SM4 is a
pseudo-random permutation, so without the key a datagram's authenticator is a 2^-64 guess:
a datagram sent without the key is dropped before it is kept, and cannot fix a block's
parameters, take a symbol's place, or fill a table.

The authenticator covers the header, not the symbol bytes: checking it costs one SM4 call
per block (all k + m authenticators at once) and an integer compare per datagram, instead of
a MAC pass over every byte. A copy of a genuine datagram with other bytes in it (which needs
the genuine datagram first) is caught as a conflicting duplicate (assembly.py); the block's
SM4-GCM tag still authenticates every byte.
"""

from __future__ import annotations

import struct

from ferry.crypto import SM4ECB, sm3_hmac

AUTH_LABEL = b"ferry link v2 symbol authenticator"
_INPUT = struct.Struct(">QBBBBI")  # block_no index k m flags sealed_len: header bytes 8..24
_UNPACK: dict[int, struct.Struct] = {}  # n -> ">" + "Q8x" * n


def _unpacker(n: int) -> struct.Struct:
    s = _UNPACK.get(n)
    if s is None:
        s = _UNPACK[n] = struct.Struct(">" + "Q8x" * n)
    return s


class SymbolAuth:
    """The symbol authenticators of one key epoch."""

    __slots__ = ("_ecb",)

    def __init__(self, epoch_key: bytes) -> None:
        self._ecb = SM4ECB(sm3_hmac(bytes(epoch_key), AUTH_LABEL)[:16])

    def block(self, block_no: int, k: int, m: int, flags: int, sealed_len: int) -> bytes:
        """16 bytes per symbol index 0..k+m-1; symbol i's authenticator is bytes 16i..16i+8."""
        pack = _INPUT.pack
        return self._ecb.encrypt(b"".join([pack(block_no, i, k, m, flags, sealed_len) for i in range(k + m)]))

    def ints(self, block_no: int, k: int, m: int, flags: int, sealed_len: int) -> tuple[int, ...]:
        """The k + m authenticators as integers (as `frame.parse_symbol_header` reads them)."""
        return _unpacker(k + m).unpack(self.block(block_no, k, m, flags, sealed_len))
