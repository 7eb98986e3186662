"""Lint: each class of finding on a small crafted policy, and none on clean ones."""

from __future__ import annotations

import argparse
from pathlib import Path

from ferry.policy import compile_policy, load_plan, parse_policy
from ferry.policy.cli import EXIT_FAILED, EXIT_OK, add_parser
from ferry.policy.lint import ERROR, WARNING, Finding, lint

ROOT = Path(__file__).resolve().parents[2]

HEAD = """\
policy: t
version: 1
default: deny
timezone: Asia/Shanghai
sources:
  cams:
    kind: devices
    match:
      - {region: "4309", type: ["131", "132"]}
  school-cams:
    kind: devices
    match:
      - {region: "430902", type: ["132"], serial: {from: "0000000", to: "0000999"}}
  shop-cams:
    kind: devices
    match:
      - {region: "4309", type: ["132"], serial: {from: "5000000", to: "5999999"}}
    addresses: ["10.21.0.0/16"]
  other-city:
    kind: devices
    match:
      - {region: "4301"}
  platform:
    kind: addresses
    addresses: ["10.30.0.0/16"]
  spool-a: {kind: spool}
destinations:
  vms: {kind: vms}
  inner: {kind: spool}
rules:
"""

VIDEO = "    video: {codecs: [%s], max_width: %d, max_height: 1080, max_frame_rate: 30, max_bitrate_kbps: 8000}\n"


def rule(rid: str, src: str, codecs: str = "h264, h265", width: int = 1920, when: str = "", to: str = "vms") -> str:
    return (f"  - id: {rid}\n    lane: video\n    from: {src}\n    to: {to}\n" + when
            + VIDEO % (codecs, width))


def lint_text(rules: str, head: str = HEAD) -> list[Finding]:
    policy = parse_policy({"policy.yaml": (head + rules).encode()})
    return lint(compile_policy(policy, b"\0" * 32))


def about(findings: list[Finding], rule_id: str) -> list[Finding]:
    return [f for f in findings if f.rule == rule_id]


def used_everywhere() -> str:
    """Rules that use every source and destination, so only the finding under test shows."""
    return (rule("u-cams", "cams") + rule("u-other", "other-city") + rule("u-schools", "school-cams", to="inner")
            + "  - id: u-files\n    lane: files\n    from: spool-a\n    to: inner\n"
              "    files: {max_size: 10, media_types: [application/pdf], name_pattern: 'a\\.pdf'}\n")


def test_clean_policy_has_no_findings():
    assert lint_text(used_everywhere() + rule("u-shops", "shop-cams", width=3840)
                     + rule("u-platform", "platform", width=640)) == [
        # shop cameras and the platform can send what cams also matches: order decides
        Finding(WARNING, "u-shops", "overlaps rule u-cams (video to vms): sources cams and shop-cams can both "
                "match device 43090000001325000000 from 10.21.0.0/16, with different limits; rule u-cams comes "
                "first and decides for them"),
        Finding(WARNING, "u-platform", "overlaps rule u-cams (video to vms): sources cams and platform can both "
                "match a device of 10.30.0.0/16, with different limits; rule u-cams comes first and decides for "
                "them"),
    ]


def test_shipped_policies_are_clean():
    for name in ("demo", "yiyang"):
        assert lint(load_plan(ROOT / "policy" / name)) == []


def test_duplicate_rule_is_an_error():
    findings = lint_text(used_everywhere() + rule("again", "cams"))
    assert about(findings, "again") == [Finding(
        ERROR, "again", "duplicate of rule u-cams (same lane, source, destination, limits and windows)")]


def test_shadowed_rule_same_source_is_an_error_naming_the_earlier_rule():
    findings = lint_text(used_everywhere() + rule("narrow", "cams", codecs="h264", width=1280))
    [f] = about(findings, "narrow")
    assert f.level == ERROR
    assert f.message.startswith("shadowed by rule u-cams: it has the same source")
    assert "never decides" in f.message


def test_shadowed_by_a_wider_source():
    findings = lint_text(used_everywhere() + rule("schools", "school-cams", width=1280))
    [f] = about(findings, "schools")
    assert f.level == ERROR
    assert "shadowed by rule u-cams: its source cams matches everything school-cams does" in f.message


def test_not_shadowed_when_limits_are_wider_or_window_is_wider():
    assert about(lint_text(used_everywhere() + rule("wider", "cams", width=3840)), "wider") == []
    day = '    when: [{days: [mon], from: "08:00", to: "18:00"}]\n'
    findings = lint_text(rule("day", "cams", width=3840, when=day) + used_everywhere())
    # u-cams (always open, narrower limits) comes after a windowed rule: not shadowed
    assert about(findings, "u-cams") == []


def test_shadowed_when_the_earlier_window_covers_the_later():
    week = '    when: [{days: [mon, tue, wed, thu, fri], from: "22:00", to: "06:00"}]\n'
    night = '    when: [{days: [tue], from: "23:00", to: "05:00"}]\n'
    findings = lint_text(rule("week", "cams", when=week) + rule("night", "cams", width=1280, when=night)
                         + used_everywhere())
    [f] = about(findings, "night")
    assert f.level == ERROR and "it is open whenever rule night is" in f.message
    not_covered = '    when: [{days: [sat], from: "23:00", to: "05:00"}]\n'
    findings = lint_text(rule("week", "cams", when=week) + rule("sat", "cams", width=1280, when=not_covered)
                         + used_everywhere())
    assert about(findings, "sat") == []


def test_overlapping_sources_with_different_limits_warn():
    findings = lint_text(used_everywhere() + rule("shops", "shop-cams", codecs="h264", width=3840))
    [f] = about(findings, "shops")
    assert f.level == WARNING
    assert "overlaps rule u-cams" in f.message and "cams and shop-cams" in f.message


def test_disjoint_sources_do_not_overlap():
    # other-city (4301) and shop-cams (4309, pinned) share no device
    findings = lint_text(rule("a", "other-city") + rule("b", "shop-cams", width=1280)
                         + rule("u-cams", "cams", to="inner") + rule("u-platform", "platform", width=640)
                         + "  - id: u-files\n    lane: files\n    from: spool-a\n    to: inner\n"
                           "    files: {max_size: 10, media_types: [application/pdf], name_pattern: 'a\\.pdf'}\n")
    assert about(findings, "b") == []


def test_overlap_needs_windows_that_meet():
    day = '    when: [{days: [mon], from: "08:00", to: "18:00"}]\n'
    night = '    when: [{days: [mon], from: "18:00", to: "08:00"}]\n'
    findings = lint_text(used_everywhere().replace("  - id: u-cams", "  - id: u-cams-x")
                         .replace("from: cams\n", "from: cams\n" + day, 1)
                         + rule("shops", "shop-cams", width=1280, when=night))
    assert about(findings, "shops") == []


def test_unreachable_destination_and_unused_source_warn():
    findings = lint_text(rule("only", "cams"))
    messages = {(f.level, f.message) for f in findings}
    assert (WARNING, "destination inner is unreachable: no rule sends to it") in messages
    for name in ("school-cams", "shop-cams", "other-city", "platform", "spool-a"):
        assert (WARNING, f"source {name} is not used by any rule") in messages
    assert (WARNING, "source cams is not used by any rule") not in messages


def test_empty_window_is_an_error_and_an_extra_empty_window_a_warning():
    empty = '    when: [{days: [mon], from: "08:00", to: "08:00"}]\n'
    findings = lint_text(used_everywhere() + rule("never", "shop-cams", when=empty))
    assert about(findings, "never") == [Finding(
        ERROR, "never", "every time window is empty (from equals to), so the rule never applies")]
    some = '    when: [{days: [mon], from: "08:00", to: "18:00"}, {days: [tue], from: "08:00", to: "08:00"}]\n'
    findings = lint_text(used_everywhere() + rule("partly", "shop-cams", when=some, width=1280))
    assert Finding(WARNING, "partly", "time window when[1] is empty (from equals to)") in about(findings, "partly")


def test_full_day_window_is_not_empty():
    full = '    when: [{days: [mon], from: "00:00", to: "24:00"}]\n'
    findings = lint_text(used_everywhere() + rule("allday", "shop-cams", when=full, width=1280))
    assert not [f for f in about(findings, "allday") if "empty" in f.message]


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="ferry")
    add_parser(parser.add_subparsers())
    args = parser.parse_args(["policy", *argv])
    return args.func(args)


def write(tmp_path: Path, rules: str) -> Path:
    (tmp_path / "policy.yaml").write_text(HEAD + rules)
    return tmp_path


def test_check_exit_codes(tmp_path, capsys):
    pol = write(tmp_path, used_everywhere() + rule("u-shops", "shop-cams", width=3840)
                + rule("u-platform", "platform", width=640))
    assert run_cli("check", str(pol)) == EXIT_OK           # warnings only
    out = capsys.readouterr().out
    assert "warning: rule u-shops: overlaps rule u-cams" in out
    assert "policy t: ok: 6 rules, 0 errors, 2 warnings" in out
    assert run_cli("check", "--strict", str(pol)) == EXIT_FAILED
    assert "policy t: FAILED" in capsys.readouterr().out

    write(tmp_path, used_everywhere() + rule("again", "cams"))
    assert run_cli("check", str(pol)) == EXIT_FAILED
    assert "error: rule again: duplicate of rule u-cams" in capsys.readouterr().out


def test_check_invalid_policy_names_file_and_line(tmp_path, capsys):
    pol = write(tmp_path, rule("bad", "nosuch"))
    assert run_cli("check", str(pol)) == EXIT_FAILED
    err = capsys.readouterr().err
    assert f"{pol}/policy.yaml:33: rules[0].from: unknown source 'nosuch'" in err


def test_pinned_devices_are_shadowed_by_an_address_source_around_them():
    head = HEAD.replace('    addresses: ["10.30.0.0/16"]', '    addresses: ["10.21.0.0/16"]')
    findings = lint_text(used_everywhere() + rule("u-platform", "platform", to="inner")
                         + rule("p", "platform", width=3840) + rule("s", "shop-cams", width=2560), head)
    [f] = about(findings, "s")
    assert f.level == ERROR and "shadowed by rule p: its source platform matches everything shop-cams does" in f.message
