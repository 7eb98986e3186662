"""diff: changes in words (with direction) and every verdict that changed."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import pytest

from ferry.pb import ferry_pb2
from ferry.policy import PolicyError, compile_policy, parse_policy
from ferry.policy.cli import EXIT_INVALID, EXIT_OK, add_parser
from ferry.policy.diff import Sample, compare_plans, describe_changes, diff_policies, probes

ROOT = Path(__file__).resolve().parents[2]
YIYANG = ROOT / "policy" / "yiyang"


def copy(tmp_path: Path, name: str = "new") -> Path:
    pol = tmp_path / name
    shutil.copytree(YIYANG, pol)
    return pol


def edit(pol: Path, old: str, new: str) -> None:
    text = (pol / "policy.yaml").read_text()
    assert old in text
    (pol / "policy.yaml").write_text(text.replace(old, new, 1))


def remove_rule(pol: Path, rule_id: str, next_marker: str) -> None:
    text = (pol / "policy.yaml").read_text()
    start, end = text.index(f"  - id: {rule_id}"), text.index(next_marker)
    (pol / "policy.yaml").write_text(text[:start] + text[end:])


def test_same_policy_has_no_differences():
    assert diff_policies(YIYANG, YIYANG) == []


def test_tightened_limit_in_words_and_verdicts(tmp_path):
    new = copy(tmp_path)
    edit(new, "      max_width: 1920\n      max_height: 1080\n      max_frame_rate: 30",
         "      max_width: 1280\n      max_height: 1080\n      max_frame_rate: 30")
    lines = diff_policies(YIYANG, new)
    assert "rule video-social: max_width 1920 -> 1280: stricter" in lines
    verdicts = [x for x in lines if x.startswith("video: device ")]
    # the suite's own 1080p sample, by name
    assert any(x.startswith("video: device 43090000001320000001 from 10.20.1.1 -> police-vms (h264 1920x1080")
               and "allowed by video-social before, now refused by video-social: width 1920 exceeds max_width 1280"
               in x and "[test '" in x and "tests/" in x for x in verdicts)
    # a probe just above the new limit
    assert any("(h264 1281x1080" in x and "width 1281 exceeds max_width 1280" in x for x in verdicts)
    # nothing changed for the shop cameras (already at most 1280)
    assert not any("video-shops" in x for x in verdicts)


def test_removed_rule_in_words_and_verdicts(tmp_path):
    new = copy(tmp_path)
    remove_rule(new, "reverse-stream", "  # --- files")
    lines = diff_policies(YIYANG, new)
    assert any(x.startswith("rule reverse-stream removed (reverse from police-operators to social-platform)")
               for x in lines)
    assert any(x.startswith("reverse: address 10.100.8.7 -> social-platform (request start_stream")
               and "allowed by reverse-stream before, now refused by default-deny" in x for x in lines)
    # PTZ was refused before and still is: not a changed verdict
    assert not any("request ptz" in x for x in lines if "before, now" in x)


def test_loosened_and_widened_in_words(tmp_path):
    new = copy(tmp_path)
    edit(new, '      - region: "4309"\n        type: ["131", "132"]',
         '      - region: "43"\n        type: ["131", "132"]')
    edit(new, "cmd_types: [Catalog, Keepalive, Alarm]", "cmd_types: [Catalog, Keepalive]")
    edit(new, "picture_types: [image/jpeg]", "picture_types: [image/jpeg, image/png]")
    edit(new, '        to: "19:00"', '        to: "18:00"')
    edit(new, "      mode: transcode", "      mode: remux")
    edit(new, "timezone: Asia/Shanghai", "timezone: UTC")
    lines = diff_policies(YIYANG, new)
    for expected in (
        "source social-cameras: matcher[0] region 4309 -> 43: wider",
        "rule signaling-catalog: cmd_types - Alarm: stricter",
        "rule viid-faces-vehicles: picture_types + image/png: looser",
        "rule video-roadworks: when mon,tue,wed,thu,fri,sat 07:00-19:00 -> mon,tue,wed,thu,fri,sat 07:00-18:00: "
        "stricter",
        "rule video-shops: mode transcode -> remux: looser",
        "timezone Asia/Shanghai -> UTC: time windows now read in UTC",
    ):
        assert expected in lines
    # the bypass suite's look-alike region is now let in
    assert any("device 43019000001320000001" in x and "now allowed by video-social" in x for x in lines)
    # a probe of the region beside the old matcher
    assert any("probe of rule video-social: region 4310 beside matcher" in x and "now allowed" in x for x in lines)


def test_rule_order_change_is_reported(tmp_path):
    new = copy(tmp_path)
    text = (new / "policy.yaml").read_text()
    shops = text[text.index("  - id: video-shops"):text.index("  - id: video-social")]
    text = text.replace(shops, "")
    text = text.replace("  # --- view library", shops + "  # --- view library")
    (new / "policy.yaml").write_text(text)
    lines = diff_policies(YIYANG, new)
    assert lines[0].startswith("rule order changed: video-shops, video-social, video-roadworks")


POLICY = """\
policy: p
version: 1
default: deny
sources:
  cams:
    kind: devices
    ids: ["43090000001320000001"]
destinations:
  vms: {kind: vms}
rules:
  - id: v
    lane: video
    from: cams
    to: vms
    video: {codecs: [h264], max_width: %d, max_height: 1080, max_frame_rate: 30, max_bitrate_kbps: 8000}
"""


def plan(width: int):
    return compile_policy(parse_policy({"policy.yaml": (POLICY % width).encode()}), b"\0" * 32)


def test_compare_plans_over_given_samples_and_probes():
    old, new = plan(1920), plan(1280)
    assert describe_changes(old.policy, new.policy) == ["rule v: max_width 1920 -> 1280: stricter"]
    obj = ferry_pb2.CanonicalObject(lane="video", destination="vms", source={"device_id": "43090000001320000001"},
                                    access_unit={"codec": "h264", "width": 1600, "height": 900})
    lines = compare_plans(old, new, [Sample(obj, "my sample")])
    assert lines[0] == ("video: device 43090000001320000001 -> vms (h264 1600x900 0 fps 0 kbps): allowed by v "
                        "before, now refused by v: width 1600 exceeds max_width 1280 [my sample]")
    assert len(lines) == len(set(lines))


def test_probes_cover_edges_and_look_alikes():
    samples = list(probes(plan(1920).policy))
    labels = [s.origin for s in samples]
    assert "probe of rule v: width 1921: max_width + 1" in labels
    assert "probe of rule v: look-alike: full-width digits" in labels
    ids = {s.object.source.device_id for s in samples}
    assert "4309000000132000000" in ids and "430900000013200000010" in ids
    # every probe is refused or allowed by the rule itself, never by accident of the generator
    p = plan(1920)
    by_label = {s.origin: p.decide(s.object) for s in samples}
    assert by_label["probe of rule v: listed device 43090000001320000001"].allowed
    assert not by_label["probe of rule v: width 1921: max_width + 1"].allowed
    assert not by_label["probe of rule v: look-alike: 21 digits"].allowed


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="ferry")
    add_parser(parser.add_subparsers())
    args = parser.parse_args(["policy", *argv])
    return args.func(args)


def test_cli_diff(tmp_path, capsys):
    new = copy(tmp_path)
    edit(new, "max_bitrate_kbps: 2000", "max_bitrate_kbps: 1500")
    assert run_cli("diff", str(YIYANG), str(new)) == EXIT_OK
    out = capsys.readouterr().out
    assert "rule video-shops: max_bitrate_kbps 2000 -> 1500: stricter" in out
    assert run_cli("diff", str(YIYANG), str(YIYANG)) == EXIT_OK
    assert capsys.readouterr().out == "no differences\n"
    edit(new, "version: 1", "version: 2")
    assert run_cli("diff", str(YIYANG), str(new)) == EXIT_INVALID
    assert f"{new}/policy.yaml:" in capsys.readouterr().err


def test_invalid_suite_is_an_error(tmp_path):
    new = copy(tmp_path)
    (new / "tests" / "video.yaml").write_text("tests:\n  - name: x\n")
    with pytest.raises(PolicyError) as info:
        diff_policies(YIYANG, new)
    assert info.value.path.endswith("tests/video.yaml")
