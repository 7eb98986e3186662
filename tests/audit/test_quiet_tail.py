"""Issue 16 item 3: a quiet agent signs its tail on a timer; an unsigned tail is explained, not called tampering."""
import argparse

from .audit_support import T0, write_trail
from ferry.audit import AuditTrail, verify_dir
from ferry.audit.cli import add_parser


def run(*argv):
    parser = argparse.ArgumentParser(prog="ferry")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["audit", *map(str, argv)])
    return args.func(args)


def test_trail_says_when_its_tail_is_due(tmp_path, key):
    t = AuditTrail(tmp_path, "outer", "o", key, checkpoint_interval=60)
    assert t.next_checkpoint(T0) is None                         # nothing written, nothing to sign
    t.append(T0, event="agent_started", verdict="info")
    assert t.next_checkpoint(T0 + 1) == T0 + 60                 # the one record waits for the interval
    assert t.tick(T0 + 59) is None
    assert t.tick(T0 + 60)["event"] == "checkpoint"
    assert t.next_checkpoint(T0 + 61) is None                   # all signed: no timer needed
    t.append(T0 + 70, event="object_sent", verdict="sent", object_id=1)
    assert t.next_checkpoint(T0 + 70) == T0 + 120
    assert t.next_checkpoint(T0 + 500) == T0 + 500              # overdue: now
    t.close(T0 + 500)
    assert verify_dir(tmp_path, key.public_key()).ok


def test_unsigned_tail_reads_as_what_it_is(tmp_path, key, capsys):
    write_trail(tmp_path, key, close=False)                      # last record at T0 + 9, not signed
    assert run("verify", tmp_path) == 1
    out = capsys.readouterr().out
    assert "--open-tail" in out                                  # the way to verify a running agent
    assert "2023-11-14T22:13:29.000000Z" in out and "ago" in out  # when the newest record was written
    assert run("verify", tmp_path, "--open-tail") == 0
