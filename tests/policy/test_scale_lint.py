"""Lint of big policies: the indexed lint finds exactly what comparing every pair finds, and its
work grows about linearly with the policy (issue 11 item 6: a 21,000-rule policy did not lint in
10 minutes, 1,000 -> 2,000 files rules took 31 s -> 118 s).

The reference below is the pairwise lint as it was before the indexes (every rule against every
earlier rule of its lane and destination); the indexed one must agree with it on random small
policies built to make sources contain and meet each other in every way the lint knows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ferry.policy import load_plan, parse_policy
from ferry.policy import lint as L
from ferry.policy.lint import ERROR, LEVELS, WARNING, Finding, lint_policy
from ferry.policy.models import Policy
from tests.policy import test_lint as t   # the crafted cases of the lint's own tests
from tests.support.bigpolicy import big_policy_yaml

ROOT = Path(__file__).resolve().parents[2]


def pairwise_lint(policy: Policy) -> list[Finding]:
    """The lint before issue 11: every rule against every earlier one of its lane and destination."""
    findings: list[Finding] = []
    rules = list(policy.rules)
    dead: set[int] = set()
    for i, rule in enumerate(rules):
        window_findings = L._window_findings(rule)
        findings += window_findings
        if any(f.level == ERROR for f in window_findings):
            dead.add(i)
            continue
        for j in range(i):
            earlier = rules[j]
            if earlier.lane != rule.lane or earlier.to != rule.to:
                continue
            if L._same(earlier, rule):
                findings.append(Finding(ERROR, rule.id, f"duplicate of rule {earlier.id} "
                                        f"(same lane, source, destination, limits and windows)"
                                        + L._rate_note(earlier, rule)))
                dead.add(i)
                break
            why = L._covers(policy, earlier, rule)
            if why is not None:
                findings.append(Finding(ERROR, rule.id, f"shadowed by rule {earlier.id}: {why}, "
                                        f"so rule {rule.id} never decides"))
                dead.add(i)
                break
    for i, rule in enumerate(rules):
        if i in dead:
            continue
        for j in range(i):
            earlier = rules[j]
            if j in dead or earlier.lane != rule.lane or earlier.to != rule.to or earlier.from_ == rule.from_:
                continue
            if L._section(earlier) == L._section(rule) and earlier.when == rule.when:
                continue
            both = L._sources_overlap(policy.sources[earlier.from_], policy.sources[rule.from_])
            if both is not None and L._windows_meet(earlier, rule):
                findings.append(Finding(
                    WARNING, rule.id,
                    f"overlaps rule {earlier.id} ({rule.lane} to {rule.to}): sources {earlier.from_} and "
                    f"{rule.from_} can both match {both}, with different limits; rule {earlier.id} "
                    f"comes first and decides for them",
                ))
                break
    used_sources = {r.from_ for r in rules}
    used_destinations = {r.to for r in rules}
    for name in policy.sources:
        if name not in used_sources:
            findings.append(Finding(WARNING, "", f"source {name} is not used by any rule"))
    for name in policy.destinations:
        if name not in used_destinations:
            findings.append(Finding(WARNING, "", f"destination {name} is unreachable: no rule sends to it"))
    return sorted(findings, key=lambda f: LEVELS.index(f.level))


# --- random small policies where sources contain and meet each other ----------------------

REGIONS = ["43", "4309", "430902", "43090201", "430903", "44"]
NETWORKS = ["10.0.0.0/8", "10.1.0.0/16", "10.1.2.0/24", "10.1.2.3/32", "10.2.0.0/16", "192.168.0.0/24",
            "fd00::/8", "fd00:1::/32", "fd00:1::5/128"]
IDS = ["43090201001320000001", "43090201011310000002", "43090300001325000003", "44000000001320000004"]
WINDOWS = [None, [{"days": ["mon"], "from": "08:00", "to": "18:00"}],
           [{"days": ["mon", "tue"], "from": "22:00", "to": "06:00"}],
           [{"days": ["mon"], "from": "18:00", "to": "08:00"}], [{"days": ["sun"], "from": "23:00", "to": "01:00"}],
           [{"days": ["tue"], "from": "08:00", "to": "08:00"}],
           [{"days": ["mon"], "from": "09:00", "to": "10:00"}, {"days": ["wed"], "from": "07:00", "to": "07:00"}]]


def matcher() -> st.SearchStrategy[dict[str, Any]]:
    serial = st.sampled_from([("0000000", "9999999"), ("0000000", "4999999"), ("5000000", "5999999"),
                              ("0000001", "0000003")]).map(lambda r: {"from": r[0], "to": r[1]})
    return st.fixed_dictionaries({}, optional={
        "region": st.sampled_from(REGIONS),
        "industry": st.lists(st.sampled_from(["00", "01"]), min_size=1, max_size=2, unique=True),
        "type": st.lists(st.sampled_from(["131", "132"]), min_size=1, max_size=2, unique=True),
        "serial": serial,
    }).filter(bool)


SOURCE = st.one_of(
    st.just({"kind": "spool"}),
    st.fixed_dictionaries({"kind": st.just("addresses"),
                           "addresses": st.lists(st.sampled_from(NETWORKS), min_size=1, max_size=2, unique=True)}),
    st.fixed_dictionaries({"kind": st.just("devices")}, optional={
        "match": st.lists(matcher(), min_size=1, max_size=2),
        "ids": st.lists(st.sampled_from(IDS), min_size=1, max_size=2, unique=True),
        "addresses": st.lists(st.sampled_from(NETWORKS), min_size=1, max_size=2, unique=True),
    }).filter(lambda s: "match" in s or "ids" in s),
)

VIDEO = st.fixed_dictionaries({
    "codecs": st.sampled_from([["h264"], ["h265"], ["h264", "h265"], ["h265", "h264"]]),
    "max_width": st.sampled_from([1280, 1920]), "max_height": st.just(1080),
    "max_frame_rate": st.sampled_from([25, 30, 30.0]), "max_bitrate_kbps": st.just(8000),
    "audio": st.booleans(),
})
FILES = st.fixed_dictionaries({
    "max_size": st.sampled_from([10, 100]),
    "media_types": st.sampled_from([["application/pdf"], ["image/png"], ["application/pdf", "image/png"]]),
    "name_pattern": st.sampled_from(["a", ".*"]),
})


@st.composite
def policies(draw: Any) -> Policy:
    sources = {f"s{k}": draw(SOURCE) for k in range(draw(st.integers(1, 7)))}
    rules = []
    for k in range(draw(st.integers(0, 14))):
        lane = draw(st.sampled_from(["video", "files"]))
        rule: dict[str, Any] = {"id": f"r{k}", "lane": lane, "from": draw(st.sampled_from(sorted(sources))),
                                "to": draw(st.sampled_from(["d0", "d1"])),
                                lane: draw(VIDEO if lane == "video" else FILES)}
        when = draw(st.sampled_from(WINDOWS))
        if when is not None:
            rule["when"] = when
        if draw(st.booleans()):
            rule["rate"] = {"per_second": draw(st.sampled_from([1.0, 2.0])), "burst": 1}
        rules.append(rule)
    return Policy.model_validate({"policy": "p", "version": 1, "default": "deny", "sources": sources,
                                  "destinations": {"d0": {"kind": "vms"}, "d1": {"kind": "spool"},
                                                   "d2": {"kind": "spool"}},
                                  "rules": rules})


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(policies())
def test_indexed_lint_equals_the_pairwise_lint(policy):
    assert lint_policy(policy) == pairwise_lint(policy)


def test_shipped_policies_and_the_lint_fixtures_agree_with_the_pairwise_lint():
    for name in ("demo", "yiyang"):
        policy = load_plan(ROOT / "policy" / name).policy
        assert lint_policy(policy) == pairwise_lint(policy)
    for rules in (t.used_everywhere() + t.rule("again", "cams"), t.used_everywhere() + t.rule("x", "school-cams"),
                  t.used_everywhere() + t.rule("s", "shop-cams", codecs="h264", width=3840),
                  t.rule("a", "other-city") + t.rule("b", "shop-cams", width=1280) + t.used_everywhere()):
        policy = parse_policy({"policy.yaml": (t.HEAD + rules).encode()})
        assert lint_policy(policy) == pairwise_lint(policy)


# --- work grows about linearly -----------------------------------------------------------

def checks_for(text: bytes) -> tuple[int, int]:
    policy = parse_policy({"policy.yaml": text})
    linter = L._Linter(policy)
    linter.run()
    return linter.checks, len(policy.rules)


def test_lint_work_grows_linearly_with_the_big_policy():
    small, n = checks_for(big_policy_yaml(sources=1500, rules=2100, target_bytes=None))
    big, n4 = checks_for(big_policy_yaml(sources=6000, rules=8400, target_bytes=None))
    assert n4 == 4 * n
    # pairwise: 16 times the work for 4 times the rules (and about n*n/2 pairs); indexed: about 4 times
    assert big < 5 * small, (small, big)
    assert big < 3 * n4, (big, n4)


def files_rules(n: int, same_pattern: bool) -> bytes:
    """One spool, one destination, n files rules: the shape of the report (1,000 -> 31 s)."""
    types = ["application/pdf", "image/png", "image/jpeg", "image/gif", "text/plain", "application/zip"]
    lines = ["policy: files", "version: 1", "default: deny", "sources:", "  outer: {kind: spool}",
             "destinations:", "  inner: {kind: spool}", "rules:"]
    for i in range(n):
        pattern = "'[a-z]{1,64}\\.x'" if same_pattern else f"'f{i}-[a-z]{{1,64}}\\.x'"
        lines.append(f"  - {{id: f{i}, lane: files, from: outer, to: inner, files: {{max_size: {1 + i}, "
                     f"media_types: [{types[i % 6]}], name_pattern: {pattern}}}}}")
    return ("\n".join(lines) + "\n").encode()


def test_many_files_rules_of_one_spool_are_not_compared_pairwise():
    for same_pattern in (False, True):
        small, n = checks_for(files_rules(500, same_pattern))
        big, n4 = checks_for(files_rules(2000, same_pattern))
        pairs = n4 * (n4 - 1) // 2
        # distinct patterns: nothing to compare; one pattern: each rule meets the earlier ones of its media
        # type only, and of those only the first (the pairwise lint: 2 million pairs)
        assert big < 5 * max(small, n), (same_pattern, small, big)
        assert big < pairs // 100, (same_pattern, big, pairs)


def cameras_by_serial_range(n: int) -> bytes:
    """One city, n camera groups told apart only by serial range (as in policy/yiyang), one rule each."""
    lines = ["policy: city", "version: 1", "default: deny", "sources:"]
    for k in range(n):
        lines.append(f'  s{k}: {{kind: devices, match: [{{region: "4309", type: ["132"], '
                     f'serial: {{from: "{k * 1000:07d}", to: "{k * 1000 + 999:07d}"}}}}]}}')
    lines += ["destinations:", "  vms: {kind: vms}", "rules:"]
    for k in range(n):
        lines.append(f"  - {{id: r{k}, lane: video, from: s{k}, to: vms, video: {{codecs: [h264], "
                     f"max_width: {1000 + k}, max_height: 1080, max_frame_rate: 25, max_bitrate_kbps: 4000}}}}")
    return ("\n".join(lines) + "\n").encode()


def test_sources_of_one_region_told_apart_by_serial_range_are_not_compared_pairwise():
    small, n = checks_for(cameras_by_serial_range(300))
    big, n4 = checks_for(cameras_by_serial_range(1200))
    # the pairwise lint compared all 720,000 pairs of the 1,200 (each a source check); the serial
    # ranges are disjoint, so the index offers no candidate at all
    assert big <= 4 * small + n4, (small, big)
    assert big < n4, big
