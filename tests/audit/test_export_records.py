"""Issue 16 item 2: every record the code can write exports as CSV, and a failed export leaves no output."""
import argparse
import csv
import io

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .audit_support import T0
from ferry.audit import AuditTrail
from ferry.audit import cli as audit_cli
from ferry.audit.export import CSV_COLUMNS, csv_row, export_csv
from ferry.audit.records import (
    AGENTS, EVENTS, FIELDS, PEER_KEYS, VERDICTS, checkpoint_fields, format_time, parse_line, seal_record,
)
from ferry.crypto import SM2PrivateKey
from ferry.reasons import Reason


def run(*argv):
    parser = argparse.ArgumentParser(prog="ferry")
    audit_cli.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["audit", *map(str, argv)])
    return args.func(args)


def video_trail(directory, key):
    """Records as the video lanes write them: a named destination (a string), not a peer object."""
    t = AuditTrail(directory, "outer", "o", key)
    t.append(T0, event="agent_started", verdict="info", reason="outer agent o started", detail={"gso": True})
    t.append(T0, event="stream_started", verdict="info", lane="video", flow="cam-1",
             source={"device_id": "43090000001320000001", "address": "10.0.0.1:554"},
             destination="video-wall", reason="video stream started")
    t.append(T0, event="stream_refused", verdict="refused", lane="video", code=Reason.DEFAULT_DENY,
             source={"device_id": "43090000001320000002"}, destination="video-wall", reason="no rule")
    t.append(T0, event="stream_ended", verdict="sent", lane="video", flow="cam-1",
             source={"device_id": "43090000001320000001"}, destination="video-wall",
             detail={"pictures": 500, "bitrate": 1.5e6})
    t.close(T0)
    return directory


def test_csv_export_of_a_video_trail(tmp_path, key):
    """Failed before: AttributeError 'str' object has no attribute 'items' at the first named destination."""
    d = video_trail(tmp_path / "t", key)
    assert run("export", d, "--format", "csv", "-o", tmp_path / "a.csv") == 0
    rows = list(csv.reader(open(tmp_path / "a.csv", newline="", encoding="utf-8")))
    assert len(rows) == 1 + 5
    named = [dict(zip(rows[0], r)) for r in rows[1:] if r[rows[0].index("event")] == "stream_started"]
    assert named[0]["destination_name"] == "video-wall"
    assert named[0]["source_device_id"] == "43090000001320000001"


def test_failed_export_leaves_no_partial_output(tmp_path, key, monkeypatch, capsys):
    d = video_trail(tmp_path / "t", key)
    out = tmp_path / "a.csv"
    out.write_text("an older export\n")
    calls = []

    def breaks_on_third(rec):
        calls.append(rec)
        if len(calls) == 3:
            raise ValueError("boom")
        return csv_row(rec)

    monkeypatch.setattr("ferry.audit.export.csv_row", breaks_on_third)
    assert run("export", d, "--format", "csv", "-o", out) == 2
    assert "boom" in capsys.readouterr().err
    assert out.read_text() == "an older export\n"          # neither truncated nor half written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv", "t"]   # no temporary left
    calls.clear()
    new = tmp_path / "new.csv"
    assert run("export", d, "--format", "csv", "-o", new) == 2
    assert not new.exists()
    calls.clear()
    assert run("export", d, "--format", "csv") == 2          # to stdout: nothing written either
    assert capsys.readouterr().out == ""


# --- every record the code can write ---------------------------------------------------------

_text = st.text(max_size=20)
_uint = st.integers(0, (1 << 63) - 1)
_hex64 = st.binary(min_size=32, max_size=32).map(bytes.hex)
_peer = st.dictionaries(st.sampled_from(sorted(PEER_KEYS)), _text, max_size=3)
_json = st.recursive(st.none() | st.booleans() | st.integers(-(1 << 63), (1 << 63) - 1) | _text
                     | st.floats(allow_nan=False, allow_infinity=False),
                     lambda c: st.lists(c, max_size=3) | st.dictionaries(_text, c, max_size=3), max_leaves=8)
VALUES = {
    "agent_name": _text, "lane": _text, "flow": _text, "source": _peer,
    "destination": _text | _peer, "object_type": _text, "size": _uint, "rule": _text, "reason": _text,
    "code": st.sampled_from([r.value for r in Reason]), "policy_hash": _hex64, "object_id": _uint,
    "epoch": _uint, "blocks": st.lists(_uint, max_size=5), "sm3": _hex64,
    "detail": st.dictionaries(_text, _json, max_size=4),
}
assert set(VALUES) | {"time", "agent", "event", "verdict"} == set(FIELDS)   # a new field needs a strategy here
_KEY = SM2PrivateKey.generate()


@st.composite
def any_record(draw):
    if draw(st.integers(0, 9)) == 0:
        first = draw(st.integers(0, 1000))
        fields = checkpoint_fields(format_time(T0), draw(st.sampled_from(sorted(AGENTS))), draw(_text), first,
                                   draw(st.binary(min_size=32, max_size=32)), first + draw(st.integers(0, 9)), _KEY)
    else:
        fields = {"time": format_time(draw(st.floats(0, 4e9))), "agent": draw(st.sampled_from(sorted(AGENTS))),
                  "event": draw(st.sampled_from(sorted(EVENTS - {"checkpoint"}))
                                | st.from_regex(r"[a-z][a-z0-9_]{0,20}", fullmatch=True)
                                .filter(lambda e: e != "checkpoint")),
                  "verdict": draw(st.sampled_from(sorted(VERDICTS)))}
        for k in draw(st.sets(st.sampled_from(sorted(VALUES)))):
            fields[k] = draw(VALUES[k])
    line, _ = seal_record(fields, bytes(32), draw(st.integers(0, 1 << 40)))
    return parse_line(line)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(any_record(), min_size=1, max_size=4))
def test_every_record_exports_as_csv(records):
    for rec in records:
        row = csv_row(rec)
        assert len(row) == len(CSV_COLUMNS) and all(type(c) is str for c in row)
    out = io.StringIO()
    assert export_csv(records, out) == len(records)
    rows = list(csv.reader(io.StringIO(out.getvalue(), newline="")))
    assert len(rows) == 1 + len(records) and all(len(r) == len(CSV_COLUMNS) for r in rows)
    for rec, r in zip(records, rows[1:]):
        row = dict(zip(CSV_COLUMNS, r))
        assert row["seq"] == str(rec["seq"]) and row["hash"] == rec["hash"]
        for c, v in row.items():                       # no cell a spreadsheet would run as a formula
            assert not v.startswith(("=", "+", "-", "@", "\t", "\r", "\n")), (c, v)


@pytest.mark.parametrize("destination", ["video-wall", "=HYPERLINK(1)", {"name": "wall", "address": "10.1.1.1"}])
def test_destination_as_name_or_peer(destination):
    line, _ = seal_record({"time": format_time(T0), "agent": "inner", "event": "object_delivered",
                           "verdict": "delivered", "destination": destination}, bytes(32), 0)
    row = dict(zip(CSV_COLUMNS, csv_row(parse_line(line))))
    if isinstance(destination, str):
        assert row["destination_name"] == ("'" + destination if destination.startswith("=") else destination)
    else:
        assert row["destination_name"] == "wall" and row["destination_address"] == "10.1.1.1"
