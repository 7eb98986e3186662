import json

import pytest
from hypothesis import given, settings, strategies as st

from ferry import limits
from ferry.audit.errors import RecordError
from ferry.audit.records import (
    ZERO_HASH,
    canonical,
    chain_hash,
    checkpoint_message,
    format_time,
    parse_line,
    seal_record,
)
from ferry.crypto import sm3

BASE = {"time": "2024-01-02T03:04:05.000006Z", "agent": "outer", "event": "object_sent",
        "verdict": "sent"}


def test_seal_round_trip_and_hash():
    fields = dict(BASE, object_id=7, blocks=[1, 2], source={"device_id": "43090000001320000001"},
                  detail={"名称": "校门", "n": 1.5})
    line, h = seal_record(fields, ZERO_HASH, 0)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    rec = parse_line(line)
    assert rec["seq"] == 0 and rec["prev"] == "0" * 64 and rec["hash"] == h.hex()
    body = {k: v for k, v in rec.items() if k != "hash"}
    expect = sm3(ZERO_HASH + json.dumps(body, sort_keys=True, separators=(",", ":"),
                                        ensure_ascii=False).encode())
    assert h == expect == chain_hash(ZERO_HASH, body)
    assert "名称".encode() in line           # ensure_ascii=False
    line2, h2 = seal_record(dict(BASE), h, 1)
    assert parse_line(line2)["prev"] == h.hex() and h2 != h


@pytest.mark.parametrize("bad", [
    {"objectid": 1},                                   # typo: unknown key
    {"verdict": "passed"},
    {"agent": "middle"},
    {"object_id": True},                               # bool is not an int here
    {"object_id": -1},
    {"size": "12"},
    {"blocks": [1, "2"]},
    {"source": {"device": "x"}},
    {"policy_hash": "ABC"},
    {"time": "2024-01-02 03:04:05"},
    {"event": "Object Sent"},
    {"detail": {"x": float("nan")}},
    {"detail": {"x": object()}},
    {"covers": [0, 1]},                                # checkpoint field on an ordinary record
    {"seq": 3},                                        # chain fields are the sealer's
])
def test_bad_fields_refused(bad):
    with pytest.raises(ValueError):
        seal_record(dict(BASE, **bad), ZERO_HASH, 0)


def test_mandatory_fields():
    for k in ("time", "agent", "event", "verdict"):
        f = dict(BASE)
        del f[k]
        with pytest.raises(RecordError, match=k):
            seal_record(f, ZERO_HASH, 0)


def test_checkpoint_needs_its_fields():
    with pytest.raises(RecordError, match="checkpoint"):
        seal_record(dict(BASE, event="checkpoint", verdict="info"), ZERO_HASH, 0)


def test_size_bound():
    with pytest.raises(RecordError, match="exceeds"):
        seal_record(dict(BASE, reason="x" * limits.AUDIT_RECORD_MAX), ZERO_HASH, 0)


def test_parse_refuses_non_canonical_and_duplicates():
    line, _ = seal_record(dict(BASE), ZERO_HASH, 0)
    rec = json.loads(line)
    with pytest.raises(RecordError, match="canonical"):
        parse_line(json.dumps(rec).encode())              # default separators add spaces
    dup = line.replace(b'{"agent":"outer"', b'{"agent":"outer","agent":"outer"')
    with pytest.raises(RecordError, match="duplicate"):
        parse_line(dup)
    with pytest.raises(RecordError):
        parse_line(b"[" * 100000)
    with pytest.raises(RecordError):
        parse_line(line.replace(b'"sent"', b'NaN'))


def test_format_time():
    assert format_time(0.5) == "1970-01-01T00:00:00.500000Z"
    assert format_time(1_700_000_000.000123) == "2023-11-14T22:13:20.000123Z"
    with pytest.raises(RecordError):
        format_time(float("inf"))


def test_checkpoint_message_layout():
    m = checkpoint_message("inner", b"\x11" * 32, 258)
    assert m == b"ferry-audit-checkpoint\0inner\0" + b"\x11" * 32 + bytes(6) + b"\x01\x02"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_parse_line_arbitrary_bytes(data):
    try:
        parse_line(data)
    except RecordError:
        pass


json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.text(max_size=20),
                      st.floats(allow_nan=False, allow_infinity=False))
json_value = st.recursive(json_leaf, lambda c: st.lists(c, max_size=3) |
                          st.dictionaries(st.text(max_size=5), c, max_size=3), max_leaves=10)


@settings(max_examples=300, deadline=None)
@given(detail=st.dictionaries(st.text(max_size=8), json_value, max_size=4),
       reason=st.text(max_size=50), seq=st.integers(0, 2**63 - 1))
def test_round_trip_any_detail(detail, reason, seq):
    try:
        line, h = seal_record(dict(BASE, detail=detail, reason=reason), ZERO_HASH, seq)
    except RecordError:
        return      # e.g. lone surrogates cannot be UTF-8
    rec = parse_line(line)
    assert rec["detail"] == detail and rec["seq"] == seq
    assert canonical(rec) + b"\n" == line
