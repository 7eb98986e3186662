import json

import pytest
from hypothesis import given, settings, strategies as st

from .audit_support import records, rechain, write_trail
from ferry.audit import AuditError, verify_dir, verify_lines
from ferry.audit.records import canonical, checkpoint_message

# write_trail(n=10, every=4): seq 0-3 data, 4 checkpoint, 5-8 data, 9 checkpoint, 10-11 data,
# 12 final checkpoint.
CHECKPOINTS = (4, 9, 12)


def check(lines, key, bad, *words, allow_open_tail=False):
    r = verify_lines(lines, key.public_key(), allow_open_tail=allow_open_tail)
    assert not r.ok, r
    assert r.first_bad == bad and r.first_bad_line == bad + 1, r
    for w in words:
        assert w in r.reason, r.reason
    return r


def edit(line, **changes):
    rec = json.loads(line)
    rec.update(changes)
    return canonical(rec) + b"\n"


def test_intact(trail_lines, key):
    assert [r["seq"] for r in records(trail_lines)] == list(range(13))
    assert [r["seq"] for r in records(trail_lines) if r["event"] == "checkpoint"] == list(CHECKPOINTS)
    r = verify_lines(trail_lines, key.public_key())
    assert r.ok and r.records == 13 and r.checkpoints == 3 and r.signed == 13
    assert r.first_bad is None and r.agent == "outer"
    assert r.key_id == key.public_key().key_id().hex()


def test_changed_field(trail_lines, key):
    lines = list(trail_lines)
    lines[2] = edit(lines[2], object_id=99)
    check(lines, key, 2, "hash does not match", "changed")


def test_changed_field_with_recomputed_hash(trail_lines, key):
    lines = list(trail_lines)
    lines[2] = edit(lines[2], object_id=99)
    lines = lines[:2] + rechain(lines[:3], 2)[2:] + lines[3:]
    check(lines, key, 3, "prev does not match")
    # rechaining everything after it still hits the checkpoint: its head, or its signature
    check(rechain(lines, 2), key, 4, "head")
    check(rechain(lines, 2, fix_head=True), key, 4, "signature does not verify", "0..3")


@pytest.mark.parametrize("index,bad", [(0, 0), (6, 6), (11, 11)])
def test_removed_record(trail_lines, key, index, bad):
    lines = trail_lines[:index] + trail_lines[index + 1:]
    check(lines, key, bad, "removed")


def test_removed_final_checkpoint(trail_lines, key):
    lines = trail_lines[:-1]
    check(lines, key, 10, "does not end with a checkpoint", "10..11")
    r = verify_lines(lines, key.public_key(), allow_open_tail=True)
    assert r.ok and "10..11" in r.warnings[0]


def test_removed_and_rechained(trail_lines, key):
    lines = rechain(trail_lines[:6] + trail_lines[7:], 6)
    check(lines, key, 8, "covers")          # the checkpoint that was at seq 9


def test_inserted_record(trail_lines, key):
    forged = edit(trail_lines[2], object_id=500)
    lines = trail_lines[:3] + [forged] + trail_lines[3:]
    check(lines, key, 3, "seq is 2, expected 3")
    # a well-formed record with its hash recomputed, and all later ones renumbered
    lines = rechain(lines, 3)
    check(lines, key, 5, "covers")
    # ... and the checkpoint's covers and head fixed too: its signature fails
    cp = edit(lines[5], covers=[0, 4], head=json.loads(lines[4])["hash"])
    lines = rechain(lines[:5] + [cp] + lines[6:], 5)
    check(lines, key, 5, "signature does not verify")


def test_appended_after_final_checkpoint(trail_lines, key):
    extra = rechain(trail_lines + [edit(trail_lines[11], object_id=77)], 13)
    check(extra, key, 13, "does not end with a checkpoint")


def test_reordered(trail_lines, key):
    lines = list(trail_lines)
    lines[5], lines[6] = lines[6], lines[5]
    check(lines, key, 5, "seq is 6, expected 5")
    check(rechain(lines, 5), key, 9, "head")
    check(rechain(lines, 5, fix_head=True), key, 9, "signature does not verify", "5..8")


def test_forged_checkpoint_signature(trail_lines, key, other_key):
    lines = list(trail_lines)
    rec = json.loads(lines[4])
    msg = checkpoint_message("outer", bytes.fromhex(rec["head"]), 3)
    lines[4] = edit(lines[4], sig=other_key.sign(msg).hex())     # real key_id, wrong signer
    check(rechain(lines, 4), key, 4, "signature does not verify")
    lines[4] = edit(trail_lines[4], sig=json.loads(trail_lines[9])["sig"])  # replayed signature
    check(rechain(lines, 4), key, 4, "signature does not verify")


def test_checkpoint_signed_by_another_key(tmp_path, key, other_key):
    lines = write_trail(tmp_path, other_key).read_bytes().splitlines(keepends=True)
    assert verify_lines(lines, other_key.public_key()).ok
    check(lines, key, 4, "another key")


def test_agent_switch(trail_lines, key):
    lines = rechain([edit(trail_lines[0], agent="inner")] + trail_lines[1:], 0)
    check(lines, key, 1, "agent")


def test_empty_and_blank(key):
    r = verify_lines([], key.public_key())
    assert not r.ok and "empty" in r.reason
    assert verify_lines([], key.public_key(), allow_open_tail=True).ok
    check([b"\n"], key, 0, "malformed")


def test_verify_dir(tmp_path, key, other_key):
    write_trail(tmp_path, key)
    r = verify_dir(tmp_path)
    assert r.ok and "signer.pub" in r.key_source and r.warnings
    r = verify_dir(tmp_path, key.public_key())
    assert r.ok and r.key_source == "given" and not r.warnings
    assert not verify_dir(tmp_path, other_key.public_key()).ok
    path = tmp_path / "audit.jsonl"
    path.write_bytes(path.read_bytes()[:-1])                    # torn last line
    r = verify_dir(tmp_path, key.public_key())
    assert not r.ok and r.first_bad == 12 and "incomplete" in r.reason
    with pytest.raises(AuditError):
        verify_dir(tmp_path / "missing")
    (tmp_path / "signer.pub").write_bytes(b"junk")
    with pytest.raises(AuditError, match="signer.pub"):
        verify_dir(tmp_path)


def test_verify_dir_oversized_line(tmp_path, key):
    write_trail(tmp_path, key, n=2)                 # seq 0, 1, checkpoint 2
    with open(tmp_path / "audit.jsonl", "ab") as f:
        f.write(b"x" * 200_000 + b"\n")
    r = verify_dir(tmp_path, key.public_key())
    assert not r.ok and r.first_bad == 3 and "longer" in r.reason


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=200), max_size=5))
def test_arbitrary_lines_fail(key, lines):
    r = verify_lines(lines, key.public_key())
    assert not r.ok and r.reason


@pytest.fixture(scope="module")
def small_trail(tmp_path_factory, key):
    d = tmp_path_factory.mktemp("small")
    return write_trail(d, key, n=4, every=2).read_bytes().splitlines(keepends=True)


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_any_byte_change_is_detected(small_trail, key, data):
    i = data.draw(st.integers(0, len(small_trail) - 1))
    line = bytearray(small_trail[i])
    j = data.draw(st.integers(0, len(line) - 1))
    line[j] ^= data.draw(st.integers(1, 255))
    lines = small_trail[:i] + [bytes(line)] + small_trail[i + 1:]
    r = verify_lines(lines, key.public_key(), allow_open_tail=True)
    assert not r.ok and r.first_bad is not None and r.first_bad <= i + 1
