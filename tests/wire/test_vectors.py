"""Fixed test vectors: a block and a heartbeat sealed with a fixed key are fixed bytes.

The vector file was generated once (FERRY_REGEN_VECTORS=1). The decoding checks below use
`cryptography`, `hmac`/`hashlib` and `pyeclib` directly, not ferry.wire, so the vector is not
circular. Version 2 (symbol authenticators) replaced link_v1.json.
"""

from __future__ import annotations

import hmac
import json
import os
import struct
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from pyeclib.ec_iface import ECDriver

from ferry.crypto import SM4GCM
from ferry.pb import ferry_pb2
from ferry.wire import LinkReceiver, LinkSender, ObjectReceived
from ferry.wire.block import fragment_header
from ferry.wire.seal import EpochKey, seal_block, seal_heartbeat

VECTORS = Path(__file__).parent / "vectors" / "link_v2.json"
KEY = bytes.fromhex("0123456789abcdeffedcba9876543210")
EPOCH = 0x01020304
BLOCK_NO = 0x0000000A0B0C0D0E
K, M = 4, 2
PLAINTEXT = (
    fragment_header(0x1111, 5, 0, 5) + b"hello"
    + fragment_header(0x2222, 1000, 0, 57) + bytes(range(57))
)
HEARTBEAT = ferry_pb2.Heartbeat(seq=3, sent_at=1700000000.5, blocks_sent=1, next_block=BLOCK_NO + 1,
                                objects_sent=2, bytes_sent=600, datagrams_sent=7, epoch=EPOCH)


def generate() -> dict:
    aead = SM4GCM(KEY)
    return {
        "key": KEY.hex(), "epoch": EPOCH, "block_no": BLOCK_NO, "k": K, "m": M,
        "plaintext": PLAINTEXT.hex(),
        "block_datagrams": [d.hex() for d in seal_block(EpochKey(KEY), EPOCH, BLOCK_NO, PLAINTEXT, K, M)],
        "heartbeat_body": HEARTBEAT.SerializeToString(deterministic=True).hex(),
        "heartbeat_datagram": seal_heartbeat(aead, EPOCH, 3, HEARTBEAT.SerializeToString(deterministic=True)).hex(),
    }


@pytest.fixture(scope="module")
def vec() -> dict:
    if os.environ.get("FERRY_REGEN_VECTORS") == "1":
        VECTORS.parent.mkdir(exist_ok=True)
        VECTORS.write_text(json.dumps(generate(), indent=1) + "\n")
    return json.loads(VECTORS.read_text())


def test_block_and_heartbeat_are_fixed_bytes(vec):
    assert generate() == vec


def sm4_gcm_open(key, nonce, sealed, aad):
    dec = Cipher(algorithms.SM4(key), modes.GCM(nonce, sealed[-16:])).decryptor()
    dec.authenticate_additional_data(aad)
    return dec.update(sealed[:-16]) + dec.finalize()


def test_block_vector_decodes_independently(vec):
    ds = [bytes.fromhex(h) for h in vec["block_datagrams"]]
    assert len(ds) == K + M
    sealed_len = len(PLAINTEXT) + 16
    sym = -(-sealed_len // K)
    for i, d in enumerate(ds):
        magic, ver, typ, epoch, block_no, index, k, m, flags, slen = struct.unpack(">2sBBIQBBBBI", d[:24])
        assert (magic, ver, typ, epoch, block_no, index, k, m, flags, slen) == (
            b"\xfeR", 2, 1, EPOCH, BLOCK_NO, i, K, M, 0, sealed_len)
        assert len(d) == 32 + sym
        # the authenticator: SM4 under HMAC-SM3(key, label)[:16] of header bytes 8..24, first 8 bytes
        auth_key = hmac.new(KEY, b"ferry link v2 symbol authenticator", "sm3").digest()[:16]
        enc = Cipher(algorithms.SM4(auth_key), modes.ECB()).encryptor()
        assert d[24:32] == (enc.update(d[8:24]) + enc.finalize())[:8]
    aad = ds[0][:16] + ds[0][17:24]  # block header = symbol header without index and authenticator
    sealed = b"".join(d[32:] for d in ds[:K])[:sealed_len]
    nonce = struct.pack(">IQ", EPOCH, BLOCK_NO)
    assert sm4_gcm_open(KEY, nonce, sealed, aad) == PLAINTEXT
    # repair symbols are pyeclib's, with its 80-byte header taken off
    drv = ECDriver(k=K, m=M, ec_type="isa_l_rs_vand")
    frags = drv.encode(sealed)
    assert [f[80:] for f in frags] == [d[32:] for d in ds]
    assert drv.decode([frags[i] for i in (1, 3, 4, 5)]) == sealed


def test_heartbeat_vector_decodes_independently(vec):
    d = bytes.fromhex(vec["heartbeat_datagram"])
    assert d[:4] == b"\xfeR\x02\x03"
    epoch, seq = struct.unpack(">IQ", d[4:16])
    assert (epoch, seq) == (EPOCH, 3)
    nonce = struct.pack(">IQ", EPOCH, (1 << 63) | 3)
    body = sm4_gcm_open(KEY, nonce, d[16:], d[:16])
    assert ferry_pb2.Heartbeat.FromString(body) == HEARTBEAT


def test_sender_with_fixed_key_produces_the_vector_block(keys):
    outer, inner = keys
    s = LinkSender(outer_key=outer, inner_public=inner.public_key(), policy_hash=bytes(32), name="v",
                   now=100.0, epoch=EPOCH, k=K, m=M, rng=lambda n: KEY)
    # the first block of the sender is block 0; put our plaintext's objects in and compare shape
    s.submit(0x1111, b"hello", 100.0)
    s.flush(100.0)
    ds = [d for d in s.datagrams_to_send(100.0) if d[3] == 1]
    expect = seal_block(EpochKey(KEY), EPOCH, 0, fragment_header(0x1111, 5, 0, 5) + b"hello", K, M)
    assert ds == expect
    r = LinkReceiver(inner_key=inner, outer_public=outer.public_key(), now=100.0, strict=True)
    r.receive_datagram(s.announcement, 100.0, 100.0)
    for d in ds[K - 2 :]:  # two source symbols and the repair symbols: needs FEC
        r.receive_datagram(d, 100.0, 100.0)
    events = []
    while (e := r.next_event()) is not None:
        events.append(e)
    assert [e.payload for e in events if isinstance(e, ObjectReceived)] == [b"hello"]
    assert r.counters.blocks_repaired == 1
