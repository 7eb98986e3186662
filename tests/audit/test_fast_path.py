"""The trail's fast path (check_fields, seal_checked, the cached format_time) against the
reference functions (validate_fields, seal_record, canonical, datetime): the same records
accepted, the same errors, the same bytes on disk."""

import math
import tempfile
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, assume, example, given, settings, strategies as st

from ferry import limits
from ferry.agents.common import AuditQueue
from ferry.audit import AuditTrail, verify_dir
from ferry.audit import records as R
from ferry.audit.errors import RecordError
from ferry.audit.records import ZERO_HASH, check_fields, format_time, format_time_reference, seal_checked, seal_record
from ferry.reasons import Reason

from .audit_support import T0

HEX = "0123456789abcdef"
SLOT = "\0ferry-audit-hash\0"       # the fast sealer's placeholder, as a hostile value

text = st.text(max_size=12) | st.sampled_from(["", "hash", SLOT, '"hash":"', "\ud800", "名称", "a\nb"])
json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), text,
                      st.floats(allow_nan=True, allow_infinity=True))
json_value = st.recursive(json_leaf, lambda c: st.lists(c, max_size=3) | st.tuples(c) |
                          st.dictionaries(text | st.integers(0, 3), c, max_size=3), max_leaves=12)
hex64 = st.text(HEX, min_size=64, max_size=64)
uint = st.integers(0, 2**63 - 1)
peer = st.dictionaries(st.sampled_from(["device_id", "address", "name"]), text, max_size=3)

# for each field: mostly good values, sometimes a bad one of a plausible kind
GOOD = {
    "time": st.just("2024-01-02T03:04:05.000006Z"), "agent": st.sampled_from(["outer", "inner"]),
    "agent_name": text, "event": st.sampled_from(sorted(R.EVENTS - {"checkpoint"}) + ["viewer_started"]),
    "verdict": st.sampled_from(sorted(R.VERDICTS)), "lane": text, "flow": text, "source": peer,
    "destination": text | peer, "object_type": text, "size": uint, "rule": text, "reason": text,
    "code": st.sampled_from([r.value for r in Reason]), "policy_hash": hex64, "object_id": uint,
    "epoch": uint, "blocks": st.lists(uint, max_size=3), "sm3": hex64,
    "detail": st.dictionaries(text, json_value, max_size=4),
}
BAD = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 3), st.just(-1), st.just(2**63), st.just(1.5),
    st.just(float("nan")), text, st.just("X" * 64), st.just("A" * 64), st.just("x" * (limits.AUDIT_RECORD_MAX + 1)),
    st.just("2024-01-02 03:04:05"), st.just("Object Sent"), st.just("checkpoint"), st.just("info"),
    st.just([1, -1]), st.just([1, "2"]), st.just((1,)), st.just({"port": 1}), st.just({1: "a"}),
    st.just({"device_id": 5}), st.just({"x": {"y": [float("inf")]}}), st.just({"a": object()}),
    st.just(Reason.POLICY_MISMATCH), json_value)


@st.composite
def fields(draw, valid_only=False):
    keys = draw(st.lists(st.sampled_from(sorted(R.FIELDS)), unique=True, max_size=12))
    if draw(st.booleans()) or valid_only:
        keys = list(dict.fromkeys(list(R.MANDATORY) + keys))
    keys = draw(st.permutations(keys))
    out = {}
    for k in keys:
        out[k] = draw(BAD) if not valid_only and draw(st.integers(0, 5)) == 0 else draw(GOOD[k])
    if not valid_only and draw(st.integers(0, 6)) == 0:
        out[draw(st.sampled_from(["objcet_id", "seq", "hash", "covers", "sig", "prev"]))] = 1
    return out


def outcome(f, *args):
    try:
        return "ok", f(*args)
    except RecordError as e:
        return "refused", str(e)


@settings(max_examples=1500, deadline=None)
@given(fields())
@example({"time": "2024-01-02T03:04:05.000006Z", "agent": "outer", "event": "checkpoint", "verdict": "info"})
@example({"time": "2024-01-02T03:04:05.000006Z", "agent": "outer", "event": "x", "verdict": "info",
          "detail": {"a": 1, "b": {"c": float("nan")}}, "lane": "late"})
def test_check_fields_accepts_and_refuses_as_validate_fields(f):
    assert outcome(check_fields, f) == outcome(R.validate_fields, f)


def test_check_fields_refusals_name_the_field():
    base = {"time": "2024-01-02T03:04:05.000006Z", "agent": "outer", "event": "object_sent", "verdict": "sent"}
    for bad, name in (({"objcet_id": 1}, "objcet_id"), ({"object_id": True}, "object_id"),
                      ({"policy_hash": "ABC"}, "policy_hash"), ({"source": {"device": "x"}}, "source"),
                      ({"detail": {"x": float("nan")}}, "detail.x"), ({"blocks": [1, -2]}, "blocks")):
        with pytest.raises(RecordError, match=name):
            check_fields(dict(base, **bad))
    f = dict(base)
    del f["verdict"]
    with pytest.raises(RecordError, match="verdict"):
        check_fields(f)


@settings(max_examples=1000, deadline=None)
@given(f=fields(valid_only=True), prev=st.binary(min_size=32, max_size=32), seq=uint)
@example(f={"time": "2024-01-02T03:04:05.000006Z", "agent": "outer", "event": "x", "verdict": "info",
            "detail": {"hash": SLOT, "n": [SLOT]}, "reason": SLOT}, prev=ZERO_HASH, seq=0)
@example(f={"time": "2024-01-02T03:04:05.000006Z", "agent": "outer", "event": "x", "verdict": "info",
            "detail": {"a": 1, "hash": SLOT}}, prev=ZERO_HASH, seq=0)       # the placeholder's text twice
@example(f={"time": "2024-01-02T03:04:05.000006Z", "agent": "outer", "event": "x", "verdict": "info",
            "reason": "\ud800"}, prev=ZERO_HASH, seq=0)
@example(f={"time": "2024-01-02T03:04:05.000006Z", "agent": "outer", "event": "x", "verdict": "info",
            "reason": "x" * (limits.AUDIT_RECORD_MAX - 300)}, prev=ZERO_HASH, seq=1)
def test_seal_checked_writes_the_reference_line(f, prev, seq):
    try:
        R.validate_fields(f)
    except RecordError:
        assume(False)
    want = outcome(seal_record, f, prev, seq)
    got = outcome(seal_checked, f, prev, prev.hex(), seq)
    if want[0] == "refused":            # e.g. a lone surrogate, a line over the limit
        assert got == want
        return
    line, h, record = got[1]
    assert (line, h) == want[1]
    assert record == dict(f, seq=seq, prev=prev.hex(), hash=h.hex())
    assert R.canonical(record) + b"\n" == line and R.parse_line(line) == record


def test_seal_checked_splices_where_the_hash_sorts():
    f = {"time": "2024-01-02T03:04:05.000006Z", "agent": "outer", "event": "e", "verdict": "info"}
    for extra in ({}, {"flow": "f"}, {"lane": "l"}, {"blocks": [1], "size": 2, "sm3": "0" * 64}):
        line, h, _ = seal_checked(dict(f, **extra), ZERO_HASH, ZERO_HASH.hex(), 7)
        assert (line, h) == seal_record(dict(f, **extra), ZERO_HASH, 7)


boundary = st.builds(lambda s, d: s + d, st.integers(R._FAST_TIME_MIN - 5, R._FAST_TIME_MAX + 5),
                     st.sampled_from([0.0, 0.5, 1 / 128, 5 / 128, 127 / 128, 0.9999995, 0.9999994999, 0.0000005,
                                      0.0000015, 0.0000025, 0.999999, 0.1234565, 1e-7]))


@settings(max_examples=3000, deadline=None)
@given(st.floats(R._FAST_TIME_MIN - 10, R._FAST_TIME_MAX + 10) | boundary | st.floats(-1e12, 1e13) |
       st.integers(-10**11, 10**11))
@example(1_700_000_000.9999995)
@example(1_700_000_000 + 1 / 128)       # 7812.5 us exactly: half to even, 7812
@example(1_700_000_000.0000005)
@example(float(R._FAST_TIME_MAX) - 1e-6)
def test_format_time_is_datetimes(now):
    assert outcome(format_time, now) == outcome(format_time_reference, now)
    if isinstance(now, float) and R._FAST_TIME_MIN <= now < R._FAST_TIME_MAX:
        dt = datetime.fromtimestamp(now, timezone.utc)
        assert format_time(now) == dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_format_time_refusals_unchanged():
    for bad in (float("inf"), float("nan"), 1e300, "now", None):
        assert outcome(format_time, bad)[0] == "refused"
        assert outcome(format_time, bad) == outcome(format_time_reference, bad)


class Colour(Enum):
    RED = "red"


caller_fields = st.fixed_dictionaries(
    {"event": st.sampled_from(["object_sent", "object_delivered", "object_refused", "viewer_started"]),
     "verdict": st.sampled_from(["sent", "delivered", "refused", "info"])},
    optional={k: GOOD[k] | st.none() for k in sorted(set(R.FIELDS) - {"time", "agent", "agent_name", "event",
                                                                         "verdict", "code"})}
    | {"code": st.sampled_from(list(Reason))})


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=st.lists(st.tuples(st.floats(R._FAST_TIME_MIN - 100, R._FAST_TIME_MAX + 100) |
                                st.floats(0, 2e9) | boundary, caller_fields), min_size=1, max_size=12),
       agent=st.sampled_from(["outer", "inner"]), every=st.integers(1, 5))
def test_trail_lines_are_the_reference_lines_and_verify(key, batch, agent, every):
    """Whatever the trail writes through its fast path is, byte for byte, what seal_record makes of
    the same fields stamped by format_time_reference, chained after the lines before it; and
    ``ferry audit verify`` accepts the trail."""
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        t = AuditTrail(d, agent, "name-1", key, checkpoint_every=every, checkpoint_interval=1e12)
        expected: list[tuple[dict, float]] = []
        for now, f in batch:
            try:
                t.append(now, **f)
            except RecordError:
                with pytest.raises(RecordError):        # refused by the reference as well
                    seal_record(_reference_fields(agent, now, f), ZERO_HASH, 0)
                continue
            expected.append((f, now))
        t.close(2e9)
        if not expected:        # every record refused: nothing written
            assert not (d / "audit.jsonl").exists() or (d / "audit.jsonl").read_bytes() == b""
            return
        lines = (d / "audit.jsonl").read_bytes().splitlines(keepends=True)
        prev, i = ZERO_HASH, 0
        for seq, line in enumerate(lines):
            rec = R.parse_line(line)
            if rec["event"] != "checkpoint":
                f, now = expected[i]
                i += 1
                assert (line, bytes.fromhex(rec["hash"])) == seal_record(_reference_fields(agent, now, f), prev, seq)
            prev = bytes.fromhex(rec["hash"])
        assert i == len(expected)
        result = verify_dir(d, key.public_key())
        assert result.ok and result.records == len(lines)


def _reference_fields(agent, now, f):
    """The record's fields as append made them before the fast path."""
    clean = {k: v.value if isinstance(v, Enum) else v for k, v in f.items() if v is not None}
    return {"time": format_time_reference(now), "agent": agent, "agent_name": "name-1", **clean}


def test_typical_record_encoded_once_validated_once(tmp_path, key, monkeypatch):
    """An ordinary record costs one JSON encoding and one check (before: two and two)."""
    calls = {"canonical": 0, "validate_fields": 0}
    for name in calls:
        real = getattr(R, name)

        def counted(*a, _real=real, _name=name):
            calls[_name] += 1
            return _real(*a)
        monkeypatch.setattr(R, name, counted)
    t = AuditTrail(tmp_path, "outer", "o", key, checkpoint_every=100)
    t.append(T0 + 0.25, event="object_sent", verdict="sent", lane="signaling", object_id=1, epoch=2,
             blocks=[3], source={"device_id": "43090000001320000001", "address": "192.0.2.1"},
             destination="platform", detail={"root": "Notify", "sn": 1, "items": None}, code=Reason.POLICY_MISMATCH,
             policy_hash="0" * 64)
    assert calls == {"canonical": 0, "validate_fields": 0}
    t.close(T0 + 1)
    assert verify_dir(tmp_path, key.public_key()).ok


def test_enum_values_and_none_still_handled(tmp_path, key):
    t = AuditTrail(tmp_path, "outer", "o", key)
    rec = t.append(T0, event="object_refused", verdict="refused", code=Reason.POLICY_MISMATCH, lane=None,
                   detail={"colour": None})
    assert rec["code"] == Reason.POLICY_MISMATCH.value and type(rec["code"]) is str and "lane" not in rec
    with pytest.raises(RecordError, match="detail.colour"):
        t.append(T0, event="x", verdict="info", detail={"colour": Colour.RED})
    assert math.isfinite(T0) and t.seq == 1


def test_queue_takes_each_plans_hash_after_a_reload(tmp_path, key):
    """AuditQueue keeps the hex of the plan's hash between records: a reload (a new plan object)
    must still show in the next record, a None field still be left out."""
    plans = [SimpleNamespace(hash=b"\x01" * 32)]
    t = AuditTrail(tmp_path, "outer", "o", key)
    q = AuditQueue(t, lambda: plans[0], "lane")
    assert q.append({"event": "object_sent", "verdict": "sent", "rule": None})
    plans[0] = SimpleNamespace(hash=b"\x02" * 32)
    assert q.append({"event": "object_sent", "verdict": "sent", "code": Reason.POLICY_MISMATCH})
    t.close(T0)
    got = [R.parse_line(x) for x in (tmp_path / "audit.jsonl").read_bytes().splitlines()]
    assert [r["policy_hash"] for r in got[:2]] == ["01" * 32, "02" * 32]
    assert "rule" not in got[0] and got[1]["code"] == "policy_mismatch"
