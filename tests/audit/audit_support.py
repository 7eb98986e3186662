"""Shared helpers and fixtures for ferry.audit tests (registered by conftest.py)."""

import json

import pytest

from ferry.audit import AuditTrail
from ferry.audit.records import chain_hash, canonical
from ferry.crypto import SM2PrivateKey

T0 = 1_700_000_000.0


@pytest.fixture(scope="session")
def key():
    return SM2PrivateKey.generate()


@pytest.fixture(scope="session")
def other_key():
    return SM2PrivateKey.generate()


def write_trail(directory, key, n=10, every=4, agent="outer", close=True):
    """n object_sent records, a checkpoint every `every`, closed with a final checkpoint."""
    t = AuditTrail(directory, agent, f"{agent}-1", key, checkpoint_every=every,
                   checkpoint_interval=1e9)
    for i in range(n):
        t.append(T0 + i, event="object_sent", verdict="sent", lane="files", object_id=i,
                 epoch=1, blocks=[i], size=100 + i)
    if close:
        t.close(T0 + n)
    else:
        t.close_without_checkpoint()
    return directory / "audit.jsonl"


@pytest.fixture
def trail_lines(tmp_path, key):
    return write_trail(tmp_path, key).read_bytes().splitlines(keepends=True)


def rechain(lines, start=0, fix_head=False):
    """Renumber and rehash every record from `start` on, as an attacker without the key can
    (with fix_head, checkpoints' head is set to their new prev too; their sig cannot follow)."""
    out = list(lines[:start])
    prev = bytes.fromhex(json.loads(out[-1])["hash"]) if out else bytes(32)
    for seq, line in enumerate(lines[start:], start):
        rec = json.loads(line)
        rec.pop("hash")
        rec["seq"], rec["prev"] = seq, prev.hex()
        if fix_head and rec["event"] == "checkpoint":
            rec["head"] = prev.hex()
        prev = chain_hash(prev, rec)
        rec["hash"] = prev.hex()
        out.append(canonical(rec) + b"\n")
    return out


def records(lines):
    return [json.loads(x) for x in lines]
