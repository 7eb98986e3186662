"""`ferry policy diff` words allow_empty as looser when set, and probes an empty file (issue 11 item 4)."""
from __future__ import annotations

from pathlib import Path

from ferry.policy import compile_policy, parse_policy, policy_hash
from ferry.policy.diff import compare_plans, describe_changes, probes

DEMO = (Path(__file__).resolve().parents[2] / "policy" / "demo" / "policy.yaml").read_text()


def _plan(text: str):
    files = {"policy.yaml": text.encode()}
    return compile_policy(parse_policy(files), policy_hash(files))


def test_allow_empty_is_looser_and_an_empty_probe_changes_verdict():
    old = _plan(DEMO)
    new = _plan(DEMO.replace("      media_types: [application/pdf, image/png, image/jpeg, text/plain]\n",
                             "      media_types: [application/pdf, image/png, image/jpeg, text/plain]\n"
                             "      allow_empty: true\n"))
    assert describe_changes(old.policy, new.policy) == ["rule files-documents: allow_empty false -> true: looser"]
    samples = [s for s in probes(old.policy) if s.origin == "probe of rule files-documents: an empty file"]
    [line] = compare_plans(old, new, samples)
    assert "empty file (the rule does not set allow_empty) before, now allowed by files-documents" in line
