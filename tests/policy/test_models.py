"""Format v1: sources, lanes, windows, rates, timezone; every error names file, line and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from ferry.policy import PolicyError, load_plan, parse_policy, policy_hash
from .parsing import error, parse

ROOT = Path(__file__).resolve().parents[2]
YIYANG = ROOT / "policy" / "yiyang"

BASE = """\
policy: t
version: 1
default: deny
timezone: Asia/Shanghai
sources:
  cams:
    kind: devices
    match:
      - region: "4309"
        type: ["131", "132"]
        serial: {from: "0000000", to: "4999999"}
    ids: ["43090000001320000001"]
    addresses: ["10.20.0.0/16"]
    ports: [30000]
    protocol: udp
  platform:
    kind: addresses
    addresses: ["10.30.1.5/32", "fd00::/64"]
destinations:
  vms: {kind: vms}
rules:
  - id: video
    lane: video
    from: cams
    to: vms
    when:
      - days: [mon]
        from: "22:00"
        to: "06:00"
    rate: {per_second: 5, burst: 10}
    video:
      codecs: [h264]
      max_width: 1920
      max_height: 1080
      max_frame_rate: 30
      max_bitrate_kbps: 8000
"""
# lines: 4 timezone, 6 cams, 7 kind, 9 region, 10 type, 11 serial, 12 ids, 13 addresses, 14 ports,
# 15 protocol, 16 platform, 18 addresses, 20 vms, 21 rules, 22 id, 23 lane, 24 from, 26 when, 27 days,
# 28 from, 29 to, 30 rate, 31 video, 32 codecs, 33 max_width


def test_base_parses():
    p = parse(BASE)
    cams = p.sources["cams"]
    assert cams.kind == "devices" and cams.match[0].serial.from_ == "0000000"
    assert p.rules[0].when[0].from_ == "22:00" and p.rules[0].rate.burst == 10
    assert p.timezone == "Asia/Shanghai"


def test_timezone_defaults_to_utc():
    assert parse(BASE.replace("timezone: Asia/Shanghai\n", "")).timezone == "UTC"


@pytest.mark.parametrize("old,new,line,key,words", [
    ("timezone: Asia/Shanghai", "timezone: Mars/Olympus", 4, "timezone", "unknown time zone"),
    ("timezone: Asia/Shanghai", "timezone: ../../etc/passwd", 4, "timezone", "unknown time zone"),
    ('region: "4309"', 'region: "430"', 9, "sources.cams.match[0].region", "2, 4, 6 or 8"),
    ('region: "4309"', 'region: "４３０９"', 9, "sources.cams.match[0].region", "ASCII"),
    ('region: "4309"', "region: 4309", 9, "sources.cams.match[0].region", "valid string"),
    ('type: ["131", "132"]', 'type: ["131", "1320"]', 10, "sources.cams.match[0].type[1]", "3 ASCII digits"),
    ('type: ["131", "132"]', 'type: ["131", "131"]', 10, "sources.cams.match[0].type", "listed twice"),
    ('serial: {from: "0000000"', 'serial: {from: "5000000"', 11, "sources.cams.match[0].serial", "empty"),
    ('ids: ["43090000001320000001"]', 'ids: ["4309000000132000000"]', 12, "sources.cams.ids[0]",
     "exactly 20 ASCII digits"),
    ('ids: ["43090000001320000001"]', 'ids: [" 43090000001320000001"]', 12, "sources.cams.ids[0]", "20 ASCII"),
    ('"10.20.0.0/16"]', '"10.20.0.1/16"]', 13, "sources.cams.addresses[0]", "host bits set"),
    ('"10.20.0.0/16"]', '" 10.20.0.0/16"]', 13, "sources.cams.addresses[0]", "without spaces"),
    ('"10.20.0.0/16"]', '"010.20.0.0/16"]', 13, "sources.cams.addresses[0]", "bad network"),
    ('"10.20.0.0/16"]', '"fe80::%eth0/64"]', 13, "sources.cams.addresses[0]", "scope"),
    ('"10.20.0.0/16"]', '"::ffff:10.20.0.0/112"]', 13, "sources.cams.addresses[0]", "IPv4-mapped"),
    ("ports: [30000]", "ports: [0]", 14, "sources.cams.ports[0]", "greater than or equal to 1"),
    ("ports: [30000]", "ports: [65536]", 14, "sources.cams.ports[0]", "less than or equal"),
    ("protocol: udp", "protocol: sctp", 15, "sources.cams.protocol", "'udp', 'tcp' or 'any'"),
    ("    kind: devices\n", "    kind: cameras\n", 7, "sources.cams.kind", "unknown kind 'cameras'"),
    ('"fd00::/64"]', '"fd00::1/64"]', 18, "sources.platform.addresses[1]", "host bits set"),
    ("lane: video", "lane: audio", 23, "rules[0].lane", "unknown lane 'audio'"),
    ('from: "22:00"', 'from: "25:00"', 28, "rules[0].when[0].from", "out of range"),
    ('from: "22:00"', 'from: "2200"', 28, "rules[0].when[0].from", "HH:MM"),
    ('from: "22:00"', 'from: "24:00"', 27, "rules[0].when[0]", "24:00"),
    ("days: [mon]", "days: [monday]", 27, "rules[0].when[0].days[0]", "'mon'"),
    ("days: [mon]", "days: []", 27, "rules[0].when[0].days", "at least 1"),
    ("rate: {per_second: 5, burst: 10}", "rate: {per_second: 0, burst: 10}", 30, "rules[0].rate.per_second",
     "greater than 0"),
    ("rate: {per_second: 5, burst: 10}", "rate: {per_second: 5, burst: 0}", 30, "rules[0].rate.burst",
     "greater than or equal to 1"),
    ("codecs: [h264]", "codecs: [mpeg2]", 32, "rules[0].video.codecs[0]", "'h264' or 'h265'"),
    ("max_width: 1920", "max_width: 0", 33, "rules[0].video.max_width", "greater than or equal to 1"),
    ("max_width: 1920", "max_width: '1920'", 33, "rules[0].video.max_width", "valid integer"),
    ("  vms: {kind: vms}", "  vms: {kind: tv}", 20, "destinations.vms.kind", "'spool', 'vms'"),
])
def test_errors_name_file_line_key(old, new, line, key, words):
    assert old in BASE
    e = error(BASE.replace(old, new, 1))
    assert (e.path, e.line, e.key) == ("pol/policy.yaml", line, key), str(e)
    assert words in e.message, str(e)
    assert str(e).startswith(f"pol/policy.yaml:{line}: {key}: ")


def test_devices_source_needs_match_or_ids():
    text = BASE.replace("""    match:
      - region: "4309"
        type: ["131", "132"]
        serial: {from: "0000000", to: "4999999"}
    ids: ["43090000001320000001"]
""", "")
    e = error(text)
    assert (e.line, e.key) == (6, "sources.cams") and "match or ids" in e.message


def test_empty_matcher_refused():
    e = error(BASE.replace("""      - region: "4309"
        type: ["131", "132"]
        serial: {from: "0000000", to: "4999999"}
""", "      - {}\n"))
    assert (e.line, e.key) == (9, "sources.cams.match[0]") and "at least one" in e.message


def test_unknown_key_in_source_and_matcher():
    e = error(BASE.replace("    protocol: udp\n", "    protocol: udp\n    vendor: x\n"))
    assert (e.line, e.key, e.message) == (16, "sources.cams.vendor", "Extra inputs are not permitted")
    e = error(BASE.replace('        type: ["131", "132"]\n', '        type: ["131", "132"]\n        types: ["1"]\n'))
    assert (e.line, e.key) == (11, "sources.cams.match[0].types")


def test_spool_source_takes_no_addresses():
    e = error(BASE.replace("    kind: addresses\n", "    kind: spool\n"))
    assert (e.line, e.key) == (18, "sources.platform.addresses")


def test_duplicate_keys_still_refused():
    e = error(BASE.replace("    ports: [30000]\n", "    ports: [30000]\n    ports: [1]\n"))
    assert e.line == 15 and "duplicate key" in e.message


def test_missing_lane_section_and_foreign_section():
    e = error(BASE.replace("    video:\n", "    files:\n"))
    keys = {(x.line, x.key) for x in e.errors}
    assert (22, "rules[0].video") in keys and (31, "rules[0].files") in keys


def test_reference_errors_keep_lines():
    e = error(BASE.replace("from: cams", "from: cameras"))
    assert str(e) == "pol/policy.yaml:24: rules[0].from: unknown source 'cameras' (known: cams, platform)"


def test_every_lane_section_parses():
    text = BASE + """\
  - id: viid
    lane: viid
    from: platform
    to: vms
    viid: {object_types: [Face, MotorVehicle], max_pictures: 2, max_picture_bytes: 100, picture_types: [image/jpeg]}
  - id: sig
    lane: signaling
    from: cams
    to: vms
    signaling: {roots: [Notify], cmd_types: [Catalog, Keepalive], max_body_bytes: 1000}
  - id: rev
    lane: reverse
    from: platform
    to: vms
    reverse: {requests: [start_stream]}
"""
    assert [r.lane for r in parse(text).rules] == ["video", "viid", "signaling", "reverse"]
    e = error(text.replace("object_types: [Face, MotorVehicle]", "object_types: [Face, Weapon]"))
    assert e.key == "rules[1].viid.object_types[1]" and e.line == 41
    e = error(text.replace("cmd_types: [Catalog, Keepalive]", "cmd_types: [Catalog, 'Key alive']"))
    assert e.key == "rules[2].signaling.cmd_types[1]"
    e = error(text.replace("requests: [start_stream]", "requests: [reboot]"))
    assert e.key == "rules[3].reverse.requests[0]"


def test_yiyang_policy_loads():
    plan = load_plan(YIYANG)
    assert plan.name == "yiyang" and plan.timezone == "Asia/Shanghai"
    assert {r.lane for r in plan.rules} == {"files", "video", "viid", "signaling", "reverse"}
    assert plan.rule("video-shops").limits.mode == "transcode"
    assert plan.rule("signaling-catalog").rate is not None


def test_test_files_are_not_part_of_the_policy_or_its_hash():
    files = {"policy.yaml": BASE.encode()}
    with_tests = {**files, "tests/basic.yaml": b"tests: []\n"}
    assert parse_policy(with_tests) == parse_policy(files)
    assert policy_hash(with_tests) == policy_hash(files)
    with pytest.raises(PolicyError):
        parse_policy({**files, "other/x.yaml": b""})
    with pytest.raises(PolicyError):
        parse_policy({**files, "tests/a/b.yaml": b""})
