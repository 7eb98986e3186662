import os

import pytest

from .audit_support import T0, records, write_trail
from ferry.audit import AuditError, AuditTrail, AuditUnavailable, verify_dir
from ferry.audit import trail as trail_module


def sent(t, now, oid):
    return t.append(now, event="object_sent", verdict="sent", object_id=oid, epoch=1, blocks=[oid])


def read(d):
    return records((d / "audit.jsonl").read_bytes().splitlines())


def test_append_returns_record_and_files(tmp_path, key):
    t = AuditTrail(tmp_path, "inner", "in-1", key)
    rec = t.append(T0, event="object_delivered", verdict="delivered", object_id=3)
    assert rec["seq"] == 0 and rec["agent"] == "inner" and rec["agent_name"] == "in-1"
    assert rec["time"] == "2023-11-14T22:13:20.000000Z" and len(rec["hash"]) == 64
    assert read(tmp_path) == [rec]
    assert (tmp_path / "signer.pub").read_bytes() == key.public_key().to_pem()
    t.close(T0 + 1)
    got = read(tmp_path)
    assert [r["event"] for r in got] == ["object_delivered", "checkpoint"]
    assert got[1]["covers"] == [0, 0] and got[1]["head"] == rec["hash"]
    assert verify_dir(tmp_path, key.public_key()).ok


def test_bad_fields_do_not_stop_the_trail(tmp_path, key):
    t = AuditTrail(tmp_path, "outer", "o", key)
    for bad in ({"event": "object_sent", "verdict": "sent", "objcet_id": 1},
                {"event": "object_sent"},
                {"event": "x", "verdict": "info", "agent": "inner"},
                {"event": "checkpoint", "verdict": "info"}):
        with pytest.raises(ValueError):
            t.append(T0, **bad)
    assert t.is_available and t.seq == 0
    sent(t, T0, 1)
    t.close(T0)
    assert verify_dir(tmp_path, key.public_key()).records == 2


def test_none_fields_left_out_and_destination_forms(tmp_path, key):
    t = AuditTrail(tmp_path, "inner", "i", key)
    rec = t.append(T0, event="object_refused", verdict="refused", lane=None, object_id=None,
                   destination="vms-1", detail={"media_type": None})
    assert "lane" not in rec and "object_id" not in rec and rec["detail"] == {"media_type": None}
    rec = t.append(T0, event="object_sent", verdict="sent", destination={"address": "10.1.1.1"})
    assert read(tmp_path)[1]["destination"] == {"address": "10.1.1.1"}
    with pytest.raises(ValueError):
        t.append(T0, event="x", verdict="info", lnae=None)              # typo still refused
    with pytest.raises(ValueError):
        t.append(T0, event="x", verdict="info", destination={"port": 1})


def test_checkpoint_every_and_interval(tmp_path, key):
    t = AuditTrail(tmp_path, "outer", "o", key, checkpoint_every=3, checkpoint_interval=10.0)
    for i in range(3):
        sent(t, T0, i)
    assert [r["event"] for r in read(tmp_path)][-1] == "checkpoint"   # after 3 records
    sent(t, T0 + 5, 3)
    assert t.tick(T0 + 9) is None
    cp = t.tick(T0 + 10.5)                                            # interval passed
    assert cp["covers"] == [4, 4]
    sent(t, T0 + 11, 4)
    sent(t, T0 + 21, 5)                                               # interval passed on append
    assert read(tmp_path)[-1]["covers"] == [6, 7]
    assert t.checkpoint(T0 + 22) is None                              # nothing new to sign
    t.close(T0 + 23)
    r = verify_dir(tmp_path, key.public_key())
    assert r.ok and r.checkpoints == 3


def test_resume_after_clean_close(tmp_path, key):
    write_trail(tmp_path, key, n=5, every=100)
    t = AuditTrail(tmp_path, "outer", "o", key)
    assert t.seq == 6
    rec = sent(t, T0 + 100, 5)
    assert rec["seq"] == 6 and rec["prev"] == read(tmp_path)[5]["hash"]
    t.close(T0 + 101)
    r = verify_dir(tmp_path, key.public_key())
    assert r.ok and r.records == 8 and "audit_resumed" not in [x["event"] for x in read(tmp_path)]


def test_resume_after_crash(tmp_path, key):
    write_trail(tmp_path, key, n=5, every=100, close=False)            # no final checkpoint
    t = AuditTrail(tmp_path, "outer", "o", key)
    sent(t, T0 + 100, 5)
    t.close(T0 + 101)
    got = read(tmp_path)
    assert [r["seq"] for r in got] == list(range(8))
    assert got[5]["event"] == "audit_resumed" and got[5]["verdict"] == "alarm"
    assert got[5]["detail"]["unsigned_records"] == [0, 4]
    assert got[7]["covers"] == [0, 6]
    assert verify_dir(tmp_path, key.public_key()).ok


def test_resume_truncates_torn_line(tmp_path, key):
    path = write_trail(tmp_path, key, n=3, every=100, close=False)
    good = path.read_bytes()
    path.write_bytes(good + b'{"agent":"outer","ag')                     # crash mid-write
    t = AuditTrail(tmp_path, "outer", "o", key)
    sent(t, T0 + 100, 3)
    t.close(T0 + 101)
    got = read(tmp_path)
    assert got[3]["event"] == "audit_resumed" and got[3]["detail"]["torn_tail_bytes"] == 20
    assert path.read_bytes().startswith(good)
    assert verify_dir(tmp_path, key.public_key()).ok


def test_resume_refuses_tampered_or_foreign(tmp_path, key, other_key):
    path = write_trail(tmp_path, key, n=3)
    with pytest.raises(AuditError, match="signer.pub does not match"):
        AuditTrail(tmp_path, "outer", "o", other_key)
    with pytest.raises(AuditError, match="outer agent"):
        AuditTrail(tmp_path, "inner", "i", key)
    path.write_bytes(path.read_bytes().replace(b'"object_id":1', b'"object_id":9'))
    with pytest.raises(AuditError, match="line 2"):
        AuditTrail(tmp_path, "outer", "o", key)


def test_one_writer_per_directory(tmp_path, key):
    t = AuditTrail(tmp_path, "outer", "o", key)
    with pytest.raises(AuditError, match="in use"):
        AuditTrail(tmp_path, "outer", "o", key)
    t.close(T0)
    AuditTrail(tmp_path, "outer", "o", key).close(T0)


def test_fail_closed_dev_full_from_start(tmp_path, key):
    path = tmp_path / "audit.jsonl"
    path.symlink_to("/dev/full")
    t = AuditTrail(tmp_path, "outer", "o", key)
    for i in range(2):
        with pytest.raises(AuditUnavailable):
            sent(t, T0 + i, 1)
        assert not t.is_available and t.seq == 0
    with pytest.raises(AuditUnavailable):
        t.close(T0 + 2)
    assert path.is_symlink()
    path.unlink()
    path.write_bytes(b"")                                              # disk is back
    rec = sent(t, T0 + 10, 1)
    assert t.is_available and rec["seq"] == 1
    t.close(T0 + 11)
    got = read(tmp_path)
    assert [r["event"] for r in got] == ["audit_resumed", "object_sent", "checkpoint"]
    assert got[0]["verdict"] == "alarm"
    assert got[0]["detail"]["failed_attempts"] == 3
    assert got[0]["detail"]["failed_since"] == "2023-11-14T22:13:20.000000Z"
    assert verify_dir(tmp_path, key.public_key()).ok


def test_fail_closed_enospc_mid_trail(tmp_path, key, monkeypatch):
    t = AuditTrail(tmp_path, "outer", "o", key)
    sent(t, T0, 0)
    path = tmp_path / "audit.jsonl"
    size = path.stat().st_size
    real_write = os.write

    def full(fd, data):
        if fd == t._fd:
            real_write(fd, data[:10])                                  # partial line, then
            raise OSError(28, "No space left on device")               # ENOSPC
        return real_write(fd, data)

    monkeypatch.setattr(trail_module.os, "write", full)
    with pytest.raises(AuditUnavailable, match="No space"):
        sent(t, T0 + 1, 1)
    assert path.stat().st_size == size + 10 and t.seq == 1
    monkeypatch.setattr(trail_module.os, "write", real_write)
    sent(t, T0 + 2, 2)
    t.close(T0 + 3)
    got = read(tmp_path)
    assert [r["event"] for r in got] == ["object_sent", "audit_resumed", "object_sent", "checkpoint"]
    assert got[2]["object_id"] == 2
    assert verify_dir(tmp_path, key.public_key()).ok


def test_short_write(tmp_path, key, monkeypatch):
    t = AuditTrail(tmp_path, "outer", "o", key)
    real_write = os.write
    monkeypatch.setattr(trail_module.os, "write",
                        lambda fd, data: real_write(fd, data[:5]) if fd == t._fd else real_write(fd, data))
    with pytest.raises(AuditUnavailable, match="short write"):
        sent(t, T0, 0)
    monkeypatch.undo()
    sent(t, T0 + 1, 0)
    t.close(T0 + 2)
    assert [r["event"] for r in read(tmp_path)][:2] == ["audit_resumed", "object_sent"]
    assert verify_dir(tmp_path, key.public_key()).ok


def test_file_swapped_for_dev_full_then_restored(tmp_path, key):
    t = AuditTrail(tmp_path, "outer", "o", key)
    sent(t, T0, 0)
    path, aside = tmp_path / "audit.jsonl", tmp_path / "aside.jsonl"
    path.rename(aside)
    path.symlink_to("/dev/full")
    with pytest.raises(AuditUnavailable):
        sent(t, T0 + 1, 1)
    assert aside.read_bytes().count(b"\n") == 1                        # nothing went to the old file
    path.unlink()
    path.write_bytes(b"")                                              # an empty stand-in is refused
    with pytest.raises(AuditUnavailable, match="shorter"):
        sent(t, T0 + 2, 1)
    assert path.read_bytes() == b""
    aside.replace(path)                                                # the real trail is back
    sent(t, T0 + 3, 1)
    t.close(T0 + 4)
    got = read(tmp_path)
    assert [r["event"] for r in got] == ["object_sent", "audit_resumed", "object_sent", "checkpoint"]
    assert got[1]["detail"]["failed_attempts"] == 2
    assert verify_dir(tmp_path, key.public_key()).ok


def test_refuses_foreign_data_after_last_record(tmp_path, key):
    t = AuditTrail(tmp_path, "outer", "o", key)
    sent(t, T0, 0)
    path = tmp_path / "audit.jsonl"
    data = path.read_bytes()
    path.unlink()
    path.write_bytes(data + b'{"forged":1}\n')                         # new inode, extra line
    with pytest.raises(AuditUnavailable, match="unexpected data"):
        sent(t, T0 + 1, 1)
    assert path.read_bytes() == data + b'{"forged":1}\n'


def test_auto_checkpoint_failure_does_not_unwrite_the_record(tmp_path, key, monkeypatch):
    t = AuditTrail(tmp_path, "outer", "o", key, checkpoint_every=2)
    sent(t, T0, 0)

    def eio(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(trail_module.os, "fdatasync", eio)
    rec = sent(t, T0 + 1, 1)                       # written; its checkpoint's fdatasync fails
    assert rec["seq"] == 1 and not t.is_available
    with pytest.raises(AuditUnavailable, match="Input/output"):
        t.checkpoint(T0 + 2)
    monkeypatch.undo()
    sent(t, T0 + 3, 2)
    t.close(T0 + 4)
    got = read(tmp_path)
    # the explicit checkpoint wrote (audit_resumed, checkpoint) before its fdatasync failed again
    assert [r["event"] for r in got] == ["object_sent", "object_sent", "checkpoint",
                                         "audit_resumed", "checkpoint",
                                         "audit_resumed", "object_sent", "checkpoint"]
    assert got[3]["detail"]["last_error"].startswith("fdatasync")
    assert got[5]["detail"]["failed_attempts"] == 1
    assert verify_dir(tmp_path, key.public_key()).ok
