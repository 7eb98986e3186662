import argparse
import csv
import json
import shutil

import pytest

from .audit_support import T0, write_trail
from ferry.audit import AuditTrail, verify_dir
from ferry.audit.cli import add_parser


def run(*argv):
    parser = argparse.ArgumentParser(prog="ferry")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["audit", *map(str, argv)])
    return args.func(args)


def test_verify_intact(tmp_path, key, capsys):
    write_trail(tmp_path, key)
    assert run("verify", tmp_path) == 0
    out = capsys.readouterr().out
    assert out.startswith("OK:") and "13 records" in out and "signer.pub" in out


def test_verify_tampered_names_record(tmp_path, key, capsys):
    path = write_trail(tmp_path, key)
    path.write_bytes(path.read_bytes().replace(b'"object_id":2', b'"object_id":3', 1))
    assert run("verify", tmp_path) == 1
    out = capsys.readouterr().out
    assert "FAILED" in out and "line 3 (seq 2)" in out and "changed" in out


def test_verify_key_and_open_tail(tmp_path, key, other_key, capsys):
    write_trail(tmp_path, key, close=False)
    (tmp_path / "k.pub").write_bytes(key.public_key().to_pem())
    (tmp_path / "o.pub").write_bytes(other_key.public_key().to_pem())
    assert run("verify", tmp_path, "--key", tmp_path / "k.pub") == 1
    assert "does not end with a checkpoint" in capsys.readouterr().out
    assert run("verify", tmp_path, "--key", tmp_path / "k.pub", "--open-tail") == 0
    assert "warning: records 10..11 are not covered" in capsys.readouterr().out
    assert run("verify", tmp_path, "--key", tmp_path / "o.pub", "--open-tail") == 1
    assert "another key" in capsys.readouterr().out


def test_verify_usage_errors(tmp_path, capsys):
    assert run("verify", tmp_path / "nope") == 2
    assert "error:" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        run("verify")
    assert e.value.code == 2


def make_pair(tmp_path, key, other_key, deliver):
    outer, inner = tmp_path / "outer", tmp_path / "inner"
    t = AuditTrail(outer, "outer", "o", key)
    for i in range(3):
        t.append(T0, event="object_sent", verdict="sent", object_id=i, epoch=1, blocks=[i])
    t.close(T0)
    t = AuditTrail(inner, "inner", "i", other_key)
    for i in deliver:
        t.append(T0, event="object_delivered", verdict="delivered", object_id=i)
    t.append(T0, event="block_lost", verdict="lost", epoch=1, blocks=[2])
    t.append(T0, event="agent_started", verdict="info")   # open tail: agent still running
    return outer, inner


def test_reconcile(tmp_path, key, other_key, capsys):
    outer, inner = make_pair(tmp_path, key, other_key, deliver=[0, 1])
    assert run("reconcile", outer, inner) == 0
    assert capsys.readouterr().out.startswith("OK: 3 objects sent, 2 delivered")
    assert run("reconcile", inner, outer) == 2                       # swapped directories


def test_reconcile_unaccounted_json(tmp_path, key, other_key, capsys):
    outer, inner = make_pair(tmp_path, key, other_key, deliver=[0, 0, 7])
    assert run("reconcile", outer, inner, "--json") == 1
    report = json.loads(capsys.readouterr().out)
    assert [u["object_id"] for u in report["unaccounted"]] == [1]
    assert report["duplicates"] == [0] and report["unexpected"][0]["object_id"] == 7
    assert report["lost"] == [2]
    assert run("reconcile", outer, inner) == 1
    out = capsys.readouterr().out
    assert "unaccounted: object 1" in out and "duplicate: object 0" in out


def test_reconcile_refuses_tampered_trail(tmp_path, key, other_key, capsys):
    outer, inner = make_pair(tmp_path, key, other_key, deliver=[0, 1])
    p = outer / "audit.jsonl"
    p.write_bytes(b"".join(p.read_bytes().splitlines(keepends=True)[1:]))
    assert run("reconcile", outer, inner) == 1
    assert "FAILED" in capsys.readouterr().err


def test_export_jsonl_verifies(tmp_path, key):
    src, dst = tmp_path / "src", tmp_path / "dst"
    write_trail(src, key)
    dst.mkdir()
    assert run("export", src, "--format", "jsonl", "-o", dst / "audit.jsonl") == 0
    assert (dst / "audit.jsonl").read_bytes() == (src / "audit.jsonl").read_bytes()
    shutil.copy(src / "signer.pub", dst / "signer.pub")
    assert verify_dir(dst, key.public_key()).ok


def test_export_csv(tmp_path, key):
    d = tmp_path / "t"
    t = AuditTrail(d, "outer", "o", key)
    t.append(T0, event="object_refused", verdict="refused", rule="r1", reason="=cmd|' /C calc'!A0",
             source={"device_id": "43090000001320000001", "address": "10.0.0.1"}, blocks=[1, 2],
             detail={"why": "x"})
    t.close(T0)
    assert run("export", d, "--format", "csv", "-o", tmp_path / "a.csv") == 0
    rows = list(csv.reader(open(tmp_path / "a.csv", newline="", encoding="utf-8")))
    assert rows[0][:3] == ["seq", "time", "agent"] and len(rows) == 3
    row = dict(zip(rows[0], rows[1]))
    assert row["source_device_id"] == "43090000001320000001" and row["blocks"] == "1 2"
    assert row["reason"] == "'=cmd|' /C calc'!A0"                   # no formula for spreadsheets
    assert json.loads(row["detail"]) == {"why": "x"}
    assert dict(zip(rows[0], rows[2]))["covers"] == "0-0"


def test_export_to_stdout(tmp_path, key, capfdbinary):
    write_trail(tmp_path, key, n=2)
    assert run("export", tmp_path, "--format", "jsonl") == 0
    assert capfdbinary.readouterr().out == (tmp_path / "audit.jsonl").read_bytes()
    assert run("export", tmp_path, "--format", "csv") == 0
    assert capfdbinary.readouterr().out.count(b"\r\n") == 4


def test_export_refuses_tampered(tmp_path, key, capsys):
    path = write_trail(tmp_path, key)
    path.write_bytes(path.read_bytes().replace(b'"size":101', b'"size":1', 1))
    assert run("export", tmp_path, "--format", "jsonl", "-o", tmp_path / "x") == 1
    assert not (tmp_path / "x").exists()
