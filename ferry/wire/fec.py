"""Reed-Solomon erasure coding of sealed blocks with pyeclib's isa_l_rs_vand backend.

pyeclib's 80-byte fragment header never goes on the wire: for this backend it depends only on
(index, orig_data_size), so the receiver rebuilds it from a template made by encoding a zero
block of the same size. Source symbols are the sealed block itself, cut into k pieces
(the last zero-padded), so a receiver holding all k source symbols never calls pyeclib.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

from pyeclib.ec_iface import ECDriver

from ferry import limits
from ferry.wire.errors import WireError

EC_TYPE = "isa_l_rs_vand"
PYECLIB_HEADER = 80


@functools.lru_cache(maxsize=limits.FEC_DRIVERS_CACHED)
def driver(k: int, m: int) -> ECDriver:
    """The (cached) pyeclib driver for k source and m repair symbols."""
    return ECDriver(k=k, m=m, ec_type=EC_TYPE)


def encode(sealed: bytes, k: int, m: int) -> list[memoryview]:
    """The k + m symbols of a sealed block (pyeclib fragments without their header)."""
    frags = driver(k, m).encode(sealed)
    return [memoryview(f)[PYECLIB_HEADER:] for f in frags]


@functools.lru_cache(maxsize=limits.FEC_TEMPLATES_CACHED)
def templates(k: int, m: int, sealed_len: int) -> tuple[bytes, ...]:
    """pyeclib fragment headers for each index of a sealed block of this size."""
    frags = driver(k, m).encode(bytes(sealed_len))
    return tuple(bytes(f[:PYECLIB_HEADER]) for f in frags)


def join_source(symbols: Sequence[bytes | None], k: int, sealed_len: int) -> bytes:
    """Fast path: the sealed block from its k source symbols, no pyeclib call. WireError if one
    of them is missing or they are too short (the caller checked: never on the data path)."""
    try:
        data = b"".join(symbols[:k])  # type: ignore[arg-type]  # a None raises TypeError
    except TypeError:
        raise WireError("missing source symbol") from None
    if len(data) != sealed_len:
        if len(data) < sealed_len:
            raise WireError("source symbols too short")
        data = data[:sealed_len]
    return data


def decode(symbols: Sequence[bytes | None], k: int, m: int, sealed_len: int) -> bytes:
    """Rebuild a sealed block from any k of its symbols (None where missing); WireError if it fails."""
    heads = templates(k, m, sealed_len)
    frags = [heads[i] + bytes(s) for i, s in enumerate(symbols) if s is not None]
    if len(frags) < k:
        raise WireError("too few symbols")
    try:
        data: bytes = driver(k, m).decode(frags[: k + m])
    except Exception as exc:  # pyeclib raises its own family and sometimes others
        raise WireError(f"fec decode failed: {type(exc).__name__}") from None
    if len(data) != sealed_len:
        raise WireError("fec decode: wrong length")
    return data


def block_capacity(k: int, datagram_max: int, header_size: int) -> int:
    """The largest sealed_len whose symbols fit in a datagram of datagram_max bytes."""
    room = datagram_max - header_size
    if room < 1:
        raise ValueError("datagram_max too small")
    sealed_len = room * k
    # ask pyeclib itself (once per sender): the formula above must agree with the library
    while len(driver_symbol(k, sealed_len)) > room:
        sealed_len -= 1
    return sealed_len


def driver_symbol(k: int, sealed_len: int) -> bytes:
    """The first symbol pyeclib makes for a zero block of sealed_len bytes (for sizing)."""
    return bytes(driver(k, 1).encode(bytes(sealed_len))[0][PYECLIB_HEADER:])
