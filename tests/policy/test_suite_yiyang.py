"""The shipped yiyang policy passes its own suite; mutated copies of it make the suite fail."""

from __future__ import annotations

import argparse
import re
import shutil
from pathlib import Path

import pytest

from ferry.policy import load_plan
from ferry.policy.cli import EXIT_FAILED, EXIT_OK, add_parser
from ferry.policy.suite import load_suite, run_suite

YIYANG = Path(__file__).resolve().parents[2] / "policy" / "yiyang"


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="ferry")
    add_parser(parser.add_subparsers())
    args = parser.parse_args(["policy", *argv])
    return args.func(args)


def test_yiyang_suite_passes(capsys):
    assert run_cli("test", str(YIYANG)) == EXIT_OK
    out = capsys.readouterr().out
    assert "FAIL" not in out
    m = re.search(r"policy yiyang: (\d+) passed, 0 failed", out)
    assert m and int(m.group(1)) >= 100


def test_yiyang_suite_covers_every_rule_and_both_verdicts():
    plan = load_plan(YIYANG)
    results = run_suite(plan, load_suite(YIYANG))
    allowed = {r.decision.rule for r in results if r.decision.allowed}
    refused_by_rule = {r.decision.rule for r in results if not r.decision.allowed}
    assert allowed == {r.id for r in plan.rules}
    assert {r.id for r in plan.rules} | {"default-deny"} == refused_by_rule


def test_yiyang_check_is_clean(capsys):
    assert run_cli("check", "--strict", str(YIYANG)) == EXIT_OK
    assert "0 errors, 0 warnings" in capsys.readouterr().out


def mutate(tmp_path: Path, old: str, new: str) -> Path:
    pol = tmp_path / "yiyang"
    shutil.copytree(YIYANG, pol)
    text = (pol / "policy.yaml").read_text()
    assert old in text
    (pol / "policy.yaml").write_text(text.replace(old, new, 1))
    return pol


def failures(capsys) -> str:
    out = capsys.readouterr().out
    return "\n".join(line for line in out.splitlines() if not line.startswith("PASS"))


@pytest.mark.parametrize("old, new, expected", [
    # a looser limit: the 1921-pixel case is now allowed
    ("      max_width: 1920\n      max_height: 1080\n      max_frame_rate: 30",
     "      max_width: 2560\n      max_height: 1080\n      max_frame_rate: 30",
     "social camera, width 1921 -> refused (max_width)\n     expected refuse, got allow"),
    # a stricter limit: the allowed 1080p cases now fail, with the reason
    ("      max_width: 1920\n      max_height: 1080\n      max_frame_rate: 30",
     "      max_width: 1280\n      max_height: 1080\n      max_frame_rate: 30",
     "decision: refuse by video-social: width 1920 exceeds max_width 1280"),
    # a widened region prefix lets a look-alike region through
    ('      - region: "4309"\n        type: ["131", "132"]', '      - region: "43"\n        type: ["131", "132"]',
     "region 4301 (43019...) is not 4309\n     expected refuse, got allow\n"
     "     expected rule default-deny, got video-social"),
    # dropping the network pin lets the allowed ID in from anywhere
    ('    addresses: ["10.20.0.0/16"]        # e-government', '    # addresses removed        # e-government',
     "allowed ID from the internet\n     expected refuse, got allow"),
    # a widened time window
    ('        to: "19:00"', '        to: "20:00"',
     "(window closes, exclusive) -> refused\n     expected refuse, got allow"),
    # a lower-case cmd_type slipped in
    ("cmd_types: [Catalog, Keepalive, Alarm]", "cmd_types: [Catalog, catalog, Keepalive, Alarm]",
     "cmd_type 'catalog' (lower case) -> refused\n     expected refuse, got allow"),
    # PNG pictures allowed
    ("picture_types: [image/jpeg]", "picture_types: [image/jpeg, image/png]",
     "record with a PNG picture -> refused (JPEG only)\n     expected refuse, got allow"),
])
def test_mutated_policy_fails_with_a_useful_message(tmp_path, capsys, old, new, expected):
    pol = mutate(tmp_path, old, new)
    assert run_cli("test", str(pol)) == EXIT_FAILED
    out = failures(capsys)
    assert expected in out
    assert re.search(r"policy yiyang: \d+ passed, [1-9]\d* failed", out)


def test_removed_rule_fails_the_suite(tmp_path, capsys):
    pol = tmp_path / "yiyang"
    shutil.copytree(YIYANG, pol)
    text = (pol / "policy.yaml").read_text()
    start = text.index("  - id: reverse-stream")
    end = text.index("  # --- files")
    (pol / "policy.yaml").write_text(text[:start] + text[end:])
    assert run_cli("test", str(pol)) == EXIT_FAILED
    out = failures(capsys)
    assert f"FAIL {pol}/tests/reverse.yaml:3: start a stream -> allowed" in out
    assert "expected rule reverse-stream, got default-deny" in out
