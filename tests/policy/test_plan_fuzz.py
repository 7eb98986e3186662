"""Hypothesis on the v1 format: random YAML and bytes give PolicyError only; decide() never raises."""

from __future__ import annotations

from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ferry.pb import ferry_pb2
from ferry.policy import Decision, PolicyError, load_plan, parse_policy

YIYANG = Path(__file__).resolve().parents[2] / "policy" / "yiyang"
TEXT = (YIYANG / "policy.yaml").read_bytes()
DOC = yaml.safe_load(TEXT)
PLAN = load_plan(YIYANG)
FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def parses_or_policy_error(data: bytes) -> None:
    try:
        parse_policy({"policy.yaml": data})
    except PolicyError as e:
        assert str(e) and (e.line is None or e.line >= 1)


@FAST
@given(st.integers(0, len(TEXT) - 1), st.binary(max_size=8), st.integers(0, 8))
def test_yiyang_mutated_bytes(pos, insert, cut):
    parses_or_policy_error(TEXT[:pos] + insert + TEXT[pos + cut:])


VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=24)
    | st.sampled_from(["4309", "43090000001320000001", "10.0.0.0/8", "::ffff:1.2.3.4/128", "24:00", "mon",
                       "devices", "addresses", "spool", "video", "Asia/Shanghai", "../x", "fe80::%1/64"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["kind", "match", "ids", "region", "type", "serial", "from", "to", "days", "lane",
                         "addresses", "x"]) | st.text(max_size=6), inner, max_size=4),
    max_leaves=20,
)


@FAST
@given(st.sampled_from(list(DOC["sources"])), st.sampled_from(["kind", "match", "ids", "addresses", "ports",
                                                              "protocol", "x"]), VALUES)
def test_yiyang_source_with_random_value(name, key, value):
    doc = yaml.safe_load(TEXT)
    doc["sources"][name][key] = value
    parses_or_policy_error(yaml.safe_dump(doc).encode())


@FAST
@given(st.integers(0, len(DOC["rules"]) - 1), st.sampled_from(["lane", "when", "rate", "video", "viid",
                                                                "signaling", "files", "reverse", "x"]), VALUES)
def test_yiyang_rule_with_random_value(i, key, value):
    doc = yaml.safe_load(TEXT)
    doc["rules"][i][key] = value
    parses_or_policy_error(yaml.safe_dump(doc).encode())


@FAST
@given(st.sampled_from(["timezone", "sources", "destinations", "rules", "version"]), VALUES)
def test_yiyang_top_level_random_value(key, value):
    doc = yaml.safe_load(TEXT)
    doc[key] = value
    parses_or_policy_error(yaml.safe_dump(doc).encode())


OBJECTS = st.builds(
    lambda lane, dst, did, addr, name, created, body: ferry_pb2.CanonicalObject(
        lane=lane, destination=dst, created=created,
        source=ferry_pb2.Source(device_id=did, address=addr, name=name), **body),
    st.sampled_from(["video", "viid", "signaling", "reverse", "files", ""]),
    st.sampled_from(["police-vms", "view-library", "police-sip", "social-platform", "inner-spool", "x"]),
    st.sampled_from(["43090000001320000001", "43090000001325000001", "43090000002000000001", ""])
    | st.text(max_size=22),
    st.sampled_from(["10.20.1.1", "10.21.0.1", "10.20.5.10", "10.20.5.20", "10.100.8.1", "::ffff:10.20.1.1"])
    | st.text(max_size=20),
    st.sampled_from(["outer-spool", ""]) | st.text(max_size=8),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([
        {}, {"access_unit": ferry_pb2.AccessUnit(codec="h264", width=1920, height=1080)},
        {"audio": ferry_pb2.AudioFrame(codec="g711a")},
        {"view_object": ferry_pb2.ViewObject(object_type="Face")},
        {"signaling": ferry_pb2.SignalingMessage(root="Notify", cmd_type="Keepalive", xml="<x/>")},
        {"reverse": ferry_pb2.ReverseRequest(request="start_stream")},
        {"file": ferry_pb2.FileObject(name="a.pdf", size=3, media_type="application/pdf", content=b"%PD")},
    ]),
)


@settings(max_examples=500, deadline=None)
@given(OBJECTS)
def test_decide_never_raises(obj):
    d = PLAN.decide(obj)
    assert isinstance(d, Decision) and d.reason
    assert d.rule == "default-deny" or PLAN.rule(d.rule) is not None
