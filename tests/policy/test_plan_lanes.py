"""decide() on every lane, sources by device ID / address / spool, time windows, the plan's shape."""

from __future__ import annotations

import dataclasses
import ipaddress
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ferry.reasons import Reason
from ferry.pb import ferry_pb2
from ferry.policy import DEFAULT_DENY, Decision, compile_policy, load_plan, parse_policy
from ferry.policy.plan import VideoCheck

YIYANG = Path(__file__).resolve().parents[2] / "policy" / "yiyang"
SHANGHAI = ZoneInfo("Asia/Shanghai")
SOCIAL = "43090000001320000001"
SHOP = "43090000001325000001"
ROADWORKS = "43090200001316000101"
PLATFORM = "43090000002000000001"


def at(text: str) -> float:
    """Beijing wall time 'YYYY-MM-DD HH:MM' -> seconds since the epoch."""
    return datetime.fromisoformat(text).replace(tzinfo=SHANGHAI).timestamp()


MONDAY_NOON = at("2026-11-23 12:00")   # a Monday


@pytest.fixture(scope="module")
def plan():
    return load_plan(YIYANG)


def video(device_id=SOCIAL, address="10.20.1.1", *, codec="h264", width=1920, height=1080, fps=25.0,
          kbps=4000, created=MONDAY_NOON, destination="police-vms"):
    o = ferry_pb2.CanonicalObject(lane="video", destination=destination, created=created,
                                  source=ferry_pb2.Source(device_id=device_id, address=address))
    o.access_unit.codec, o.access_unit.width, o.access_unit.height = codec, width, height
    o.access_unit.frame_rate, o.access_unit.bitrate_kbps = fps, kbps
    return o


# --- video ---------------------------------------------------------------------------------

def test_video_allowed(plan):
    assert plan.decide(video()) == Decision(True, "video-social", "allowed by video-social")
    assert plan.decide(video(codec="h265")).allowed


@pytest.mark.parametrize("kw,reason", [
    ({"width": 3840, "height": 2160}, "width 3840 exceeds max_width 1920"),
    ({"height": 1088}, "height 1088 exceeds max_height 1080"),
    ({"fps": 30.5}, "frame_rate 30.5 exceeds max_frame_rate 30"),
    ({"fps": float("nan")}, "frame_rate nan exceeds max_frame_rate 30"),
    ({"kbps": 8001}, "bitrate_kbps 8001 exceeds max_bitrate_kbps 8000"),
    ({"codec": "mpeg4"}, "codec 'mpeg4' not allowed (allowed: h264, h265)"),
    ({"codec": "H264"}, "codec 'H264' not allowed (allowed: h264, h265)"),
    ({"width": 0}, "picture size unknown (no active SPS)"),
])
def test_video_limits(plan, kw, reason):
    assert plan.decide(video(**kw)) == Decision(False, "video-social", reason, Reason.CONTENT_LIMIT)


def test_video_limits_inclusive(plan):
    assert plan.decide(video(width=1920, height=1080, fps=30.0, kbps=8000)).allowed


def test_shop_cameras_get_the_stricter_rule(plan):
    assert plan.decide(video(SHOP, "10.21.3.4", width=1280, height=720, fps=15, kbps=2000)).rule == "video-shops"
    d = plan.decide(video(SHOP, "10.21.3.4"))
    assert d == Decision(False, "video-shops", "width 1920 exceeds max_width 1280", Reason.CONTENT_LIMIT)


def test_shop_camera_from_the_social_network_is_not_a_social_camera(plan):
    d = plan.decide(video(SHOP, "10.20.1.1", width=1280, height=720, fps=15, kbps=2000))
    assert (d.allowed, d.rule) == (False, DEFAULT_DENY)


def test_allowed_device_from_another_address_refused(plan):
    for address in ["10.99.0.1", "", "10.20.1.1 ", " 10.20.1.1", "010.20.1.1", "fe80::1%eth0", "10.20.1.1/32"]:
        d = plan.decide(video(address=address))
        assert (d.allowed, d.rule) == (False, DEFAULT_DENY), address


def test_ipv4_mapped_ipv6_address_is_its_ipv4_address(plan):
    assert plan.decide(video(address="::ffff:10.20.1.1")).allowed
    assert not plan.decide(video(address="::ffff:10.99.1.1")).allowed
    assert not plan.decide(video(address="::10.20.1.1")).allowed      # IPv4-compatible, not mapped


@pytest.mark.parametrize("device_id", [
    SOCIAL[:19], SOCIAL + "1", "４３０９" + SOCIAL[4:], SOCIAL + " ", " " + SOCIAL, SOCIAL[:19] + "\0",
    "+" + SOCIAL[1:], "43019000001320000001", "43090000001330000001", "43090000001320000001\n",
    SOCIAL.translate(str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")),
])
def test_look_alike_device_ids_default_deny(plan, device_id):
    d = plan.decide(video(device_id))
    assert (d.allowed, d.rule) == (False, DEFAULT_DENY)
    assert d.reason.startswith("no rule for lane 'video' from device ")


def test_default_deny_names_lane_source_and_destination(plan):
    d = plan.decide(video("44000000001320000001", "10.20.1.1"))
    assert d.reason == ("no rule for lane 'video' from device '44000000001320000001' address '10.20.1.1' "
                        "to 'police-vms'")
    assert plan.decide(video(destination="view-library")).rule == DEFAULT_DENY


def test_audio_only_when_the_rule_says_so(plan):
    o = video()
    o.audio.codec = "g711a"
    assert plan.decide(o) == Decision(False, "video-social", "audio not allowed (audio: false)", Reason.CONTENT_LIMIT)


def test_video_lane_without_body(plan):
    o = video()
    o.ClearField("access_unit")
    assert plan.decide(o) == Decision(False, "video-social", "video lane object has no access_unit or audio body",
                                        Reason.CONTENT_LIMIT)


# --- time windows ------------------------------------------------------------------------------

@pytest.mark.parametrize("when,allowed", [
    ("2026-11-23 07:00", True),     # Monday, window opens (inclusive)
    ("2026-11-23 18:59", True),
    ("2026-11-23 19:00", False),    # closes (exclusive)
    ("2026-11-23 06:59", False),
    ("2026-11-28 12:00", True),     # Saturday
    ("2026-11-29 12:00", False),    # Sunday
])
def test_roadworks_window_in_beijing_time(plan, when, allowed):
    d = plan.decide(video(ROADWORKS, created=at(when)))
    assert d.allowed == allowed and d.rule == "video-roadworks"
    if not allowed:
        assert d.reason.startswith("outside the time window (mon,tue,wed,thu,fri,sat 07:00-19:00, Asia/Shanghai)")


def test_window_uses_the_policy_zone_not_utc(plan):
    # 2026-11-23 00:30 UTC is 08:30 in Beijing: open; 12:00 UTC is 20:00 in Beijing: closed.
    def at(iso: str) -> float:
        return datetime.fromisoformat(iso).timestamp()

    assert plan.decide(video(ROADWORKS, created=at("2026-11-23T00:30+00:00"))).allowed
    assert not plan.decide(video(ROADWORKS, created=at("2026-11-23T12:00+00:00"))).allowed


@pytest.mark.parametrize("created", [float("nan"), float("inf"), -float("inf"), 1e300, -1e300])
def test_window_with_invalid_created_refuses(plan, created):
    d = plan.decide(video(ROADWORKS, created=created))
    assert (d.allowed, d.rule) == (False, "video-roadworks") and "not a valid time" in d.reason


WRAP = """\
policy: wrap
version: 1
default: deny
timezone: {tz}
sources: {{night: {{kind: spool}}}}
destinations: {{out: {{kind: spool}}}}
rules:
  - id: night
    lane: files
    from: night
    to: out
    when: [{{days: [fri], from: "22:00", to: "06:00"}}, {{days: [sun], from: "10:00", to: "10:00"}}]
    files: {{max_size: 100, media_types: [text/plain], name_pattern: '.*'}}
"""


def wrap_plan(tz="Asia/Kolkata"):
    files = {"policy.yaml": WRAP.format(tz=tz).encode()}
    return compile_policy(parse_policy(files), b"\0" * 32)


def text_file(created):
    return ferry_pb2.CanonicalObject(lane="files", destination="out", created=created,
                                     source=ferry_pb2.Source(name="night"),
                                     file=ferry_pb2.FileObject(name="a.txt", size=2, media_type="text/plain",
                                                               content=b"hi"))


@pytest.mark.parametrize("when,allowed", [
    ("2026-11-27 21:59", False),    # Friday before the window
    ("2026-11-27 22:00", True),
    ("2026-11-27 23:59", True),
    ("2026-11-28 00:00", True),     # past midnight: Saturday morning belongs to Friday's window
    ("2026-11-28 05:59", True),
    ("2026-11-28 06:00", False),
    ("2026-11-28 22:30", False),    # Saturday night is not in it
    ("2026-11-27 03:00", False),    # Friday early morning belongs to Thursday: not in it
    ("2026-11-29 10:00", False),    # Sunday 10:00-10:00 is empty
])
def test_window_across_midnight_in_a_zone_without_dst(when, allowed):
    tz = ZoneInfo("Asia/Kolkata")   # +05:30, no DST
    created = datetime.fromisoformat(when).replace(tzinfo=tz).timestamp()
    assert wrap_plan().decide(text_file(created)).allowed == allowed


def test_window_follows_dst():
    plan = wrap_plan("Europe/Berlin")
    # 22:30 local on Friday 2026-03-27 (CET, +01:00) and on Friday 2026-04-03 (CEST, +02:00)
    assert plan.decide(text_file(datetime.fromisoformat("2026-03-27T21:30+00:00").timestamp())).allowed
    assert plan.decide(text_file(datetime.fromisoformat("2026-04-03T20:30+00:00").timestamp())).allowed
    assert not plan.decide(text_file(datetime.fromisoformat("2026-04-03T19:30+00:00").timestamp())).allowed


# --- view library, signaling, reverse, files ---------------------------------------------------

def view(object_type="Face", pictures=(("image/jpeg", 1000),), address="10.20.5.10"):
    o = ferry_pb2.CanonicalObject(lane="viid", destination="view-library", created=MONDAY_NOON,
                                  source=ferry_pb2.Source(address=address))
    o.view_object.object_type = object_type
    for mt, size in pictures:
        o.view_object.pictures.add(media_type=mt, content=b"\xff" * size)
    return o


def test_viid(plan):
    assert plan.decide(view()) == Decision(True, "viid-faces-vehicles", "allowed by viid-faces-vehicles")
    assert plan.decide(view("MotorVehicle", ())).allowed
    assert plan.decide(view(pictures=[("image/jpeg", 2097152)] * 8)).allowed
    refuse = {
        "object type 'Thing' not allowed (allowed: Face, MotorVehicle, NonMotorVehicle, Person)": view("Thing"),
        "picture 0: type image/png not allowed (allowed: image/jpeg)": view("MotorVehicle", [("image/png", 10)]),
        "picture 1: 2097153 bytes exceed max_picture_bytes 2097152":
            view(pictures=[("image/jpeg", 1), ("image/jpeg", 2097153)]),
        "9 pictures exceed max_pictures 8": view(pictures=[("image/jpeg", 1)] * 9),
    }
    for reason, o in refuse.items():
        assert plan.decide(o) == Decision(False, "viid-faces-vehicles", reason, Reason.CONTENT_LIMIT)
    assert plan.decide(view(address="10.20.5.11")).rule == DEFAULT_DENY


def signaling(root="Notify", cmd="Catalog", xml="<x/>", device_id=PLATFORM, address="10.20.5.20"):
    return ferry_pb2.CanonicalObject(
        lane="signaling", destination="police-sip", created=MONDAY_NOON,
        source=ferry_pb2.Source(device_id=device_id, address=address),
        signaling=ferry_pb2.SignalingMessage(root=root, cmd_type=cmd, xml=xml))


def test_signaling(plan):
    for root, cmd in [("Notify", "Keepalive"), ("Notify", "Alarm"), ("Response", "Catalog")]:
        assert plan.decide(signaling(root, cmd)).allowed
    for o, reason in [
        (signaling(cmd="catalog"), "cmd_type 'catalog' not allowed (allowed: Alarm, Catalog, Keepalive)"),
        (signaling(cmd="Catalog "), "cmd_type 'Catalog ' not allowed (allowed: Alarm, Catalog, Keepalive)"),
        (signaling(cmd="DeviceControl"), "cmd_type 'DeviceControl' not allowed (allowed: Alarm, Catalog, Keepalive)"),
        (signaling(root="Control"), "root 'Control' not allowed (allowed: Notify, Response)"),
        (signaling(xml="é" * 32769), "body 65538 bytes exceeds max_body_bytes 65536"),
    ]:
        assert plan.decide(o) == Decision(False, "signaling-catalog", reason, Reason.CONTENT_LIMIT)
    assert plan.decide(signaling(device_id=SOCIAL)).rule == DEFAULT_DENY


def test_reverse(plan):
    def req(r, address="10.100.8.7"):
        return ferry_pb2.CanonicalObject(lane="reverse", destination="social-platform",
                                         source=ferry_pb2.Source(address=address),
                                         reverse=ferry_pb2.ReverseRequest(request=r, device_id=SOCIAL))
    assert plan.decide(req("start_stream")).allowed and plan.decide(req("stop_stream")).allowed
    assert plan.decide(req("ptz")) == Decision(False, "reverse-stream",
                                               "request 'ptz' not allowed (allowed: start_stream, stop_stream)",
                                               Reason.CONTENT_LIMIT)
    assert plan.decide(req("start_stream", "10.100.9.7")).rule == DEFAULT_DENY


def test_files_by_spool_name_and_window(plan):
    o = ferry_pb2.CanonicalObject(lane="files", destination="inner-spool", created=MONDAY_NOON,
                                  source=ferry_pb2.Source(name="outer-spool"),
                                  file=ferry_pb2.FileObject(name="report.pdf", size=9, media_type="application/pdf",
                                                            content=b"%PDF-1.7\n"))
    assert plan.decide(o).allowed
    o.created = at("2026-11-29 12:00")   # Sunday
    assert not plan.decide(o).allowed
    o.created = MONDAY_NOON
    o.source.name = "outer-spool "
    assert plan.decide(o).rule == DEFAULT_DENY


# --- the plan ----------------------------------------------------------------------------------

def test_plan_exposes_what_the_tooling_needs(plan):
    assert plan.name == "yiyang" and len(plan.hash) == 32 and plan.timezone == "Asia/Shanghai"
    assert plan.policy.policy == "yiyang"
    r = plan.rule("video-social")
    assert (r.lane, r.source, r.destination, r.index) == ("video", "social-cameras", "police-vms", 1)
    assert r.video is r.limits and r.files is None and r.limits.max_width == 1920 and r.windows == ()
    assert plan.rule("video-roadworks").windows[0].describe() == "mon,tue,wed,thu,fri,sat 07:00-19:00"
    assert plan.rule("signaling-catalog").rate.describe() == "20/s (burst 50)"
    s = plan.sources["social-cameras"]
    assert s.kind == "devices" and s.networks == (ipaddress.ip_network("10.20.0.0/16"),)
    assert s.ports == (30000,) and s.protocol == "udp" and s.matchers[0].region == "4309"
    assert plan.sources["roadworks-cameras"].ids == {"43090200001316000101", "43090200001316000102"}
    assert plan.sources["outer-spool"].kind == "spool"
    assert plan.destinations["police-vms"].kind == "vms"
    assert [r.id for r in plan.rules][:2] == ["video-shops", "video-social"]
    assert plan.device_sources(SOCIAL) == {"social-cameras"}
    assert plan.address_sources("10.20.5.10") == {"social-cameras", "roadworks-cameras", "view-platform"}


def test_plan_is_immutable(plan):
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.timezone = "UTC"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.rules[0].limits.max_width = 1 << 14  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.sources["social-cameras"].networks = ()  # type: ignore[misc]
    for mapping in (plan.sources, plan.destinations, plan._tables):
        with pytest.raises(TypeError):
            mapping["x"] = None  # type: ignore[index]
    with pytest.raises(Exception):
        plan.policy.policy = "other"  # type: ignore[misc]
    assert isinstance(plan.rules, tuple) and isinstance(plan.sources["social-cameras"].ids, frozenset)


def test_repeated_decisions_are_the_same(plan):
    objs = [video(), video(kbps=9000), video(SHOP, "10.21.0.1"), video("4" * 20)]
    first = [plan.decide(o) for o in objs]
    assert [plan.decide(o) for o in objs] == first


AU = st.builds(
    lambda codec, w, h, fps, kbps: (codec, w, h, fps, kbps),
    st.sampled_from(["h264", "h265", "", "H264", "mpeg2"]),
    st.integers(0, 5000), st.integers(0, 5000),
    st.floats(allow_nan=True, allow_infinity=True), st.integers(0, 2**32 - 1),
)


@settings(max_examples=400, deadline=None)
@given(AU, st.sampled_from(["access_unit", "audio", None]))
def test_fast_path_agrees_with_the_named_checks(au, body):
    check = VideoCheck(frozenset({"h264", "h265"}), 1920, 1080, 30.0, 8000, False, False, "remux")
    passes = check.fast()
    o = ferry_pb2.CanonicalObject(lane="video")
    if body == "access_unit":
        codec, w, h, fps, kbps = au
        o.access_unit.codec, o.access_unit.width, o.access_unit.height = codec, w, h
        o.access_unit.frame_rate, o.access_unit.bitrate_kbps = fps, kbps
    elif body == "audio":
        o.audio.codec = "g711a"
    kind = o.WhichOneof("body")
    slow = check.refuse(kind, getattr(o, kind) if kind else None)
    if passes(o):
        assert slow is None
    if body == "access_unit":
        assert passes(o) == (slow is None)
