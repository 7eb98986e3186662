"""Hostile datagrams at a running inner agent: forged, replayed, wrong-key and
garbage traffic is refused and every refusal is in the audit trail."""
from __future__ import annotations

import os
import socket
import time

import pytest

from appliance import read_trail
from ferry.crypto import SM2PrivateKey
from ferry.crypto.keys import load_private_key, load_public_key
from ferry.wire import LinkSender

pytestmark = pytest.mark.e2e


def _send(port: int, datagrams: list[bytes]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for d in datagrams:
            s.sendto(d, ("127.0.0.1", port))
            time.sleep(0.0005)    # the send pace (scenario): a burst would overflow the agent's socket


def _events(a, name):
    return [r for r in read_trail(a.inner_audit) if r["event"] == name]


def test_wrong_key_garbage_and_replay_are_refused_and_audited(appliance_factory):
    a = appliance_factory().start()
    keys = a.work / "keys"
    now = time.time()
    a.wait_for(lambda: _events(a, "key_accepted"), 10, "the real outer agent's key")
    current = _events(a, "key_accepted")[0]["epoch"]
    # 1. a sender that does not hold the outer key, in the current epoch: its announcement
    #    is refused and its blocks do not open under the real key of that epoch
    impostor = LinkSender(outer_key=SM2PrivateKey.generate(), inner_public=load_public_key(keys / "inner.pub"),
                          policy_hash=bytes(32), name="impostor", now=now, epoch=current)
    impostor.submit(1, b"not a canonical object", now)
    impostor.flush(now)
    _send(a.port, impostor.datagrams_to_send(now))
    a.wait_for(lambda: _events(a, "announcement_refused"), 10, "announcement_refused")
    # its symbols' authenticators do not verify under the announced key of that epoch: dropped
    # before they are kept, each one (wire v2), never a block
    a.wait_for(lambda: [r for r in _events(a, "datagrams_dropped") if r["code"] == "bad_symbol_auth"], 10,
               "impostor symbols dropped")
    assert not [r for r in _events(a, "block_refused") if r["epoch"] == current]
    # 2. garbage datagrams: dropped, counted, audited (aggregated, not one record per packet)
    _send(a.port, [os.urandom(n) for n in (0, 1, 3, 40, 1400)] * 20)
    a.wait_for(lambda: _events(a, "datagrams_dropped"), 10, "datagrams_dropped")
    assert len(_events(a, "datagrams_dropped")) < 20
    # 3. a sender with the real outer key but a payload that is not a canonical object:
    #    authenticated, then refused by the inner agent with a reason
    outer_key = load_private_key(keys / "outer.key")
    rogue = LinkSender(outer_key=outer_key, inner_public=load_public_key(keys / "inner.pub"),
                       policy_hash=bytes(32), name="rogue", now=now + 5)
    rogue.submit(42, b"\xff\xff\xff garbage", now + 5)
    rogue.flush(now + 5)
    dgrams = rogue.datagrams_to_send(now + 5)
    _send(a.port, dgrams)
    a.wait_for(lambda: any(r.get("object_id") == 42 for r in _events(a, "object_refused")), 10, "object 42 refused")
    # its policy hash differs from the inner agent's: that is an alarm
    assert _events(a, "policy_mismatch")
    # 4. the same datagrams again: the blocks are replays
    _send(a.port, [d for d in dgrams if d[3] == 1])
    def replays() -> list[dict]:
        return [r for r in _events(a, "block_refused") if r["epoch"] == rogue.epoch and "replay" in r["reason"]]

    a.wait_for(replays, 10, "replayed blocks refused")
    assert [r.get("object_id") for r in _events(a, "object_refused")].count(42) == 1
    assert not os.listdir(a.inner_spool)
    for r in read_trail(a.inner_audit):
        if r["verdict"] == "refused":
            assert r.get("reason"), r
