"""RFC 5424 messages and RFC 6587 frames of audit records; exported ranges and log-server copies
that ``ferry audit verify`` proves (or refuses); the parser of such files under fuzzing."""
import argparse
import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from .audit_support import T0, write_trail
from ferry.audit.cli import add_parser
from ferry.audit.export import RangeSelector
from ferry.audit.records import format_time, parse_line
from ferry.audit.syslog import (
    FRAME_MAX,
    SyslogError,
    format_message,
    frame,
    iter_frames,
    message_body,
    read_messages,
    record_frame,
    sd_escape,
    select_agent,
)
from ferry.audit.verify import verify_lines


def run(*argv):
    parser = argparse.ArgumentParser(prog="ferry")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["audit", *map(str, argv)])
    return args.func(args)


def _lines(path):
    return path.read_bytes().splitlines(keepends=True)


# --- the message -----------------------------------------------------------------------------------

def test_message_header_fields_and_msg_is_the_line(tmp_path, key):
    line = _lines(write_trail(tmp_path, key, n=1))[0]
    rec = parse_line(line)
    msg = format_message(rec, line, hostname="gw 1", procid="42")
    assert msg.startswith(f"<110>1 {rec['time']} gw_1 ferry 42 object_sent [ferry@32473 seq=\"0\" ".encode())
    assert message_body(msg) == line.rstrip(b"\n")          # the receiver's MSG is the trail's line


@pytest.mark.parametrize(("verdict", "pri"), [("alarm", 106), ("refused", 108), ("lost", 108), ("info", 110)])
def test_pri_is_facility_log_audit_and_alarm_is_the_most_severe(verdict, pri, tmp_path, key):
    line = _lines(write_trail(tmp_path, key, n=1))[0]
    rec = dict(parse_line(line), verdict=verdict)
    assert format_message(rec, line, hostname="h").startswith(b"<%d>1 " % pri)


def test_sd_param_values_escape_quote_backslash_and_bracket():
    assert sd_escape('a"b\\c]d') == 'a\\"b\\\\c\\]d'
    msg = b'<110>1 2026-01-01T00:00:00.000000Z h ferry - e [x@1 a="q\\"]\\]"][y@2] {"k":1}'
    assert message_body(msg) == b'{"k":1}'


def test_octet_counting_frames_round_trip(tmp_path, key):
    lines = _lines(write_trail(tmp_path, key))
    data = b"".join(record_frame(x, hostname="h") for x in lines)
    assert data.startswith(b"%d <" % len(format_message(parse_line(lines[0]), lines[0], hostname="h")))
    assert [x + b"\n" for x in read_messages(data)] == lines


@pytest.mark.parametrize("bad", [b"12 <110>1", b"0 x", b"01 x", b"x12 a", b"99999999 a", b"3 abc4"])
def test_bad_frames_are_refused(bad):
    with pytest.raises(SyslogError):
        list(iter_frames(bad))


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=400))
def test_fuzz_read_messages_raises_only_syslog_error(data):
    try:
        out = read_messages(data)
    except SyslogError:
        return
    assert all(len(m) <= FRAME_MAX for m in out)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_an_rfc5424_line_raises_only_syslog_error(tail):
    for data in (b"<" + tail, b"<110>1 - - - - - " + tail, b"<110>1 - - - - - [x " + tail):
        try:
            read_messages(data)
        except SyslogError:
            pass


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=60), max_size=6), st.integers(0, 300))
def test_fuzz_frames_whole_or_cut_anywhere(messages, cut):
    data = b"".join(frame(b"<1>1 - - - - - - " + m) for m in messages)
    assert len(list(iter_frames(data))) == len(messages)
    try:
        list(iter_frames(data[:cut]))
    except SyslogError:
        pass


# --- ranges ----------------------------------------------------------------------------------------

def test_a_range_from_the_middle_verifies_anchored_at_its_prev(tmp_path, key):
    lines = _lines(write_trail(tmp_path, key, n=10, every=4))    # checkpoints at seq 4, 9, 12
    r = verify_lines(lines[6:10], key.public_key(), range_ok=True)
    assert r.ok and r.first == 6 and r.records == 4 and r.signed == 10
    assert not verify_lines(lines[6:10], key.public_key()).ok      # a whole trail starts at seq 0


def test_a_range_with_a_record_removed_or_changed_fails(tmp_path, key):
    lines = _lines(write_trail(tmp_path, key, n=10, every=4))
    assert not verify_lines(lines[5:7] + lines[8:10], key.public_key(), range_ok=True).ok
    changed = lines[5:10]
    changed[1] = changed[1].replace(b'"size":105', b'"size":1')
    assert not verify_lines(changed, key.public_key(), range_ok=True).ok


def test_a_range_without_its_checkpoint_is_only_an_open_tail(tmp_path, key):
    lines = _lines(write_trail(tmp_path, key, n=10, every=4))
    assert not verify_lines(lines[5:8], key.public_key(), range_ok=True).ok
    assert verify_lines(lines[5:8], key.public_key(), range_ok=True, allow_open_tail=True).ok
    path = tmp_path / "tail.jsonl"
    path.write_bytes(b"".join(lines[5:8]))
    assert run("verify", path, "--key", tmp_path / "signer.pub") == 1
    assert run("verify", path, "--key", tmp_path / "signer.pub", "--open-tail") == 0


def test_range_selector_extends_to_the_signing_checkpoint(tmp_path, key):
    recs = [json.loads(x) for x in _lines(write_trail(tmp_path, key, n=10, every=4))]
    sel = RangeSelector(format_time(T0 + 5), format_time(T0 + 6))  # records of i=5,6 are seq 6,7
    for rec in recs:
        sel.feed(rec)
    assert sel.span() == (6, 9)
    none = RangeSelector(format_time(T0 + 100), None)
    for rec in recs:
        none.feed(rec)
    assert none.span() is None


# --- the commands ----------------------------------------------------------------------------------

def test_export_since_until_then_verify_the_file(tmp_path, key, capsys):
    d = tmp_path / "t"
    write_trail(d, key, n=10, every=4)
    out = tmp_path / "range.jsonl"
    assert run("export", d, "--since", format_time(T0 + 5), "--until", str(T0 + 6), "-o", out) == 0
    assert [json.loads(x)["seq"] for x in _lines(out)] == [6, 7, 8, 9]
    assert run("verify", out, "--key", d / "signer.pub") == 0
    said = capsys.readouterr().out
    assert "a range of 4 records, seq 6 to 9" in said and "nothing about records before seq 6" in said
    out.write_bytes(out.read_bytes().replace(b'"size":106', b'"size":7'))
    assert run("verify", out, "--key", d / "signer.pub") == 1


def test_export_syslog_and_verify_it(tmp_path, key, capsys):
    d = tmp_path / "t"
    write_trail(d, key, n=10, every=4)
    out = tmp_path / "range.syslog"
    assert run("export", d, "--format", "syslog", "--since", "1970-01-01T00:00:00", "-o", out) == 0
    assert re.match(rb"\d+ <110>1 ", out.read_bytes())
    assert b" outer-1 ferry - object_sent " in out.read_bytes()         # HOSTNAME: the agent that wrote it
    assert run("verify", "--syslog", out, "--key", d / "signer.pub") == 0
    assert "records from seq 0 to 12" in capsys.readouterr().out


def test_verify_a_log_servers_copy_with_duplicates_and_two_agents(tmp_path, key, other_key, capsys):
    a, b = _lines(write_trail(tmp_path / "a", key)), _lines(write_trail(tmp_path / "b", other_key, agent="inner"))
    copy = a[:7] + b + a[3:]                          # the outer's 3..6 re-sent after a reconnect
    path = tmp_path / "received.log"
    path.write_bytes(b"".join(copy))
    assert run("verify", "--syslog", path, "--key", tmp_path / "a" / "signer.pub") == 2   # which agent?
    assert run("verify", "--syslog", path, "--agent", "outer", "--key", tmp_path / "a" / "signer.pub") == 0
    assert "4 identical duplicate(s) dropped" in capsys.readouterr().out
    assert run("verify", "--syslog", path, "--agent", "inner-1", "--key", tmp_path / "b" / "signer.pub") == 0
    # a gap (a record the server never got) and a changed duplicate are refused
    path.write_bytes(b"".join(a[:5] + a[6:]))
    assert run("verify", "--syslog", path, "--key", tmp_path / "a" / "signer.pub") == 1
    path.write_bytes(b"".join(a + [a[2].replace(b'"size":102', b'"size":1')]))
    assert run("verify", "--syslog", path, "--key", tmp_path / "a" / "signer.pub") == 1
    assert "two different records with seq 2" in capsys.readouterr().out


def test_whole_rfc5424_lines_are_read_too(tmp_path, key):
    lines = _lines(write_trail(tmp_path / "a", key))
    path = tmp_path / "received.log"
    path.write_bytes(b"".join(format_message(parse_line(x), x, hostname="h") + b"\n" for x in lines))
    assert run("verify", "--syslog", path, "--key", tmp_path / "a" / "signer.pub") == 0


def test_a_trail_directory_still_starts_at_seq_0(tmp_path, key):
    d = tmp_path / "t"
    lines = _lines(write_trail(d, key, n=10, every=4))
    (d / "audit.jsonl").write_bytes(b"".join(lines[5:]))    # the front cut off
    assert run("verify", d) == 1


def test_a_file_needs_a_key(tmp_path, key, capsys):
    path = write_trail(tmp_path, key)
    assert run("verify", path) == 2
    assert "--key" in capsys.readouterr().err


def test_since_must_be_a_time(tmp_path, capsys):
    with pytest.raises(SystemExit):
        run("export", tmp_path, "--since", "yesterday")
    assert "neither ISO 8601" in capsys.readouterr().err


def test_select_agent_refuses_a_non_record(tmp_path):
    with pytest.raises(ValueError, match="message 1"):
        select_agent([b"hello"], None)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_any_order_and_any_duplicates_of_a_trail_verify_and_any_gap_fails(tmp_path_factory, key, data):
    d = tmp_path_factory.mktemp("t")
    lines = _lines(write_trail(d, key, n=10, every=4))
    copy = data.draw(st.permutations(lines + data.draw(st.lists(st.sampled_from(lines), max_size=8))))
    picked, _ = select_agent(copy, None)
    assert picked.conflict is None and picked.lines == tuple(lines)
    assert verify_lines(picked.lines, key.public_key(), range_ok=True).ok
    gone = data.draw(st.integers(1, len(lines) - 2))              # a record in the middle never arrived
    picked, _ = select_agent([x for x in copy if x != lines[gone]], None)
    assert not verify_lines(picked.lines, key.public_key(), range_ok=True).ok
