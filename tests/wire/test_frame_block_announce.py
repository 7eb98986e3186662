"""Unit tests of the wire codecs: symbol header, fragments, FEC layout, announcement, heartbeat."""

from __future__ import annotations

import os

import pytest
from pyeclib.ec_iface import ECDriver

from ferry import limits
from ferry.wire import WireError, fec
from ferry.wire.announce import build_announcement, parse_announcement
from ferry.wire.block import FRAGMENT_HEADER_SIZE, fragment_header, parse_fragments
from ferry.wire.frame import (
    BLOCK_HEADER_SIZE,
    SYMBOL_HEADER_SIZE,
    block_header,
    block_nonce,
    build_heartbeat_header,
    build_symbols,
    heartbeat_nonce,
    parse_heartbeat,
    parse_symbol,
    symbol_size,
)


def test_header_sizes():
    assert SYMBOL_HEADER_SIZE == 32 and BLOCK_HEADER_SIZE == 23 and FRAGMENT_HEADER_SIZE == 20


def test_symbol_roundtrip_and_exact_length():
    hdr = block_header(7, 42, 4, 2, 100)
    syms = [bytes([i]) * symbol_size(100, 4) for i in range(6)]
    auths = bytes(range(96))
    ds = build_symbols(hdr, syms, auths)
    assert ds[0][:4] == b"\xfeR\x02\x01"
    h, sym = parse_symbol(ds[5])
    assert (h.epoch, h.block_no, h.index, h.k, h.m, h.flags, h.sealed_len) == (7, 42, 5, 4, 2, 0, 100)
    assert h.auth == int.from_bytes(auths[80:88], "big") and ds[5][24:32] == auths[80:88]
    assert bytes(sym) == syms[5]
    with pytest.raises(WireError):
        parse_symbol(ds[0] + b"x")  # one byte too long
    with pytest.raises(WireError):
        parse_symbol(ds[0][:-1])


@pytest.mark.parametrize(
    "patch",
    [
        (0, b"\xfe\x53"),  # magic
        (2, b"\x01"),  # version 1
        (3, b"\x03"),  # type
        (16, b"\x06"),  # index >= k + m
        (17, b"\x00"),  # k = 0
        (18, b"\x00"),  # m = 0
        (19, b"\x01"),  # flags
        (20, b"\x00\x00\x00\x0f"),  # sealed_len < tag
        (20, b"\x7f\xff\xff\xff"),  # sealed_len > BLOCK_MAX
        (8, b"\x80"),  # block_no >= 2**63
    ],
)
def test_symbol_header_refusals(patch):
    d = bytearray(build_symbols(block_header(1, 2, 4, 2, 100), [b"\0" * 25] * 6, bytes(96))[0])
    at, val = patch
    d[at : at + len(val)] = val
    with pytest.raises(WireError):
        parse_symbol(bytes(d))


def test_nonces_are_disjoint():
    assert block_nonce(1, 5) == b"\0\0\0\x01" + (5).to_bytes(8, "big")
    assert heartbeat_nonce(1, 5)[4] & 0x80
    assert not block_nonce(1, (1 << 63) - 1)[4] & 0x80


def test_fragments_roundtrip_and_refusals():
    pt = fragment_header(1, 10, 0, 10) + b"a" * 10 + fragment_header(2, 100, 40, 3) + b"bcd"
    frags = parse_fragments(pt)
    assert [(f.object_id, f.total_len, f.offset, bytes(f.data)) for f in frags] == [
        (1, 10, 0, b"a" * 10),
        (2, 100, 40, b"bcd"),
    ]
    assert parse_fragments(b"") == []
    assert parse_fragments(fragment_header(3, 0, 0, 0))[0].total_len == 0
    bad = [
        fragment_header(1, 10, 0, 11) + b"a" * 11,  # beyond the object
        fragment_header(1, 10, 8, 3) + b"abc",  # beyond the object
        fragment_header(1, 10, 10, 0),  # empty fragment of a non-empty object
        fragment_header(1, 10, 0, 5) + b"abc",  # truncated
        fragment_header(1, 10, 0, 5) + b"abcde" + b"xx",  # trailing garbage
        fragment_header(1, limits.OBJECT_MAX + 1, 0, 1) + b"a",  # too large
        fragment_header(1, 10, 0, 1) + b"a" + fragment_header(1, 10, 1, 1) + b"b",  # twice
    ]
    for pt in bad:
        with pytest.raises(WireError):
            parse_fragments(pt)


@pytest.mark.parametrize("k,m", [(16, 4), (4, 2), (1, 1), (64, 32)])
def test_pyeclib_header_depends_only_on_index_and_size(k, m):
    d = ECDriver(k=k, m=m, ec_type=fec.EC_TYPE)
    for n in (16, 1000, 23168, 23169):
        a = d.encode(os.urandom(n))
        z = d.encode(bytes(n))
        assert [f[:80] for f in a] == [f[:80] for f in z] == list(fec.templates(k, m, n))
        assert len(a[0]) - 80 == symbol_size(n, k)


@pytest.mark.parametrize("n", [16, 17, 1000, 23168])
def test_source_symbols_are_the_block_itself(n):
    data = os.urandom(n)
    syms = fec.encode(data, 16, 4)
    assert fec.join_source(syms, 16, n) == data
    assert b"".join(syms[:16])[n:] == bytes(16 * symbol_size(n, 16) - n)  # zero padding


def test_decode_from_any_k_symbols():
    data = os.urandom(23000)
    syms = [bytes(s) for s in fec.encode(data, 16, 4)]
    for missing in ([0, 1, 2, 3], [15, 16, 17, 18], [3, 7, 11, 19]):
        held = [None if i in missing else s for i, s in enumerate(syms)]
        assert fec.decode(held, 16, 4, len(data)) == data
    with pytest.raises(WireError):
        fec.decode([None] * 5 + syms[5:], 16, 4, len(data))


def test_block_capacity_fits_the_datagram():
    cap = fec.block_capacity(16, 1472, SYMBOL_HEADER_SIZE)
    assert cap == 1440 * 16
    assert SYMBOL_HEADER_SIZE + len(fec.driver_symbol(16, cap)) == 1472
    assert SYMBOL_HEADER_SIZE + len(fec.driver_symbol(16, cap + 1)) > 1472


def test_announcement_roundtrip(keys):
    outer, inner = keys
    data = build_announcement(
        outer_key=outer, envelope=inner.public_key().encrypt(b"k" * 16), epoch=9, not_before=1.0,
        not_after=2.0, policy_hash=b"p" * 32, outer_key_id=outer.public_key().key_id(),
        inner_key_id=inner.public_key().key_id(), first_block=77, sender="outer-1",
    )
    assert data[:4] == b"\xfeR\x02\x02" and len(data) <= limits.ANNOUNCEMENT_MAX
    a = parse_announcement(data)
    assert (a.epoch, a.first_block, a.sender, a.policy_hash) == (9, 77, "outer-1", b"p" * 32)
    outer.public_key().verify(a.body_bytes, a.signature)
    assert inner.decrypt(a.envelope) == b"k" * 16
    for bad in (data[:3], data[:4], data[:-1], data + b"\0", b"\xfeR\x02\x02" + b"\xff" * 50):
        with pytest.raises(WireError):
            parse_announcement(bad)


def test_heartbeat_header():
    h = build_heartbeat_header(3, 9)
    assert len(h) == 16
    epoch, seq, header, sealed = parse_heartbeat(h + b"t" * 16)
    assert (epoch, seq, header, sealed) == (3, 9, h, b"t" * 16)
    for bad in (h + b"t" * 15, h[:3] + b"\x01" + h[4:] + b"t" * 16, h + b"t" * 600):
        with pytest.raises(WireError):
            parse_heartbeat(bad)
