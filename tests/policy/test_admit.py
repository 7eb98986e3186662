"""One decision for the agents, `ferry policy test` and `ferry policy diff` (issue 16 item 1).

The same objects go to the outer agent's video gate (what it does with an access unit as the
camera sends it), to a policy test case and to a policy diff; all three must agree. Before,
`policy test` and `policy diff` called a 1080p camera under a 720p transcode rule refused
while the agents transcoded and delivered it.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ferry.lanes.video import AccessUnitReady, StreamRefused
from ferry.lanes.video.gate import Gate
from ferry.pb import ferry_pb2
from ferry.policy import load_plan
from ferry.policy.diff import Sample, compare_plans
from ferry.policy.suite import SuiteCase, run_case

YIYANG = Path(__file__).resolve().parents[2] / "policy" / "yiyang"
SHOP = ("43090300001325000042", "10.21.3.4")      # a shop camera (transcode rule video-shops, <= 720p15)
SOCIAL = ("43090000001320000001", "10.20.1.1")    # a social camera (remux rule video-social, <= 1080p30)
THURSDAY_21H = 1795698000.0                        # 2026-11-26T21:00:00+08:00

# (camera, codec, width, height, fps, kbps) -> (allowed, transcoded, rule)
CASES = [
    (SHOP, "h264", 1920, 1080, 15, 2000, (True, True, "video-shops")),     # over the size: transcoded down
    (SHOP, "h264", 1280, 720, 16, 2000, (True, True, "video-shops")),      # over the frame rate
    (SHOP, "h264", 1280, 720, 15, 9000, (True, True, "video-shops")),      # over the bitrate
    (SHOP, "h264", 1280, 720, 15, 2000, (True, True, "video-shops")),      # within: transcoded all the same
    (SHOP, "h265", 1280, 720, 15, 2000, (False, False, "video-shops")),    # a codec it does not take
    (SOCIAL, "h264", 1920, 1080, 25, 4000, (True, False, "video-social")),  # remux: crosses as it is
    (SOCIAL, "h264", 1921, 1080, 25, 4000, (False, False, "video-social")),  # remux over the limit: refused
]


class Recorder:
    """The gate's transcode flow: records what it was asked to transcode."""

    def __init__(self) -> None:
        self.requests: list = []

    def request(self, pb, video, now, out) -> None:
        self.requests.append((pb.width, pb.height, video.max_width))


def _au(codec, w, h, fps, kbps) -> ferry_pb2.AccessUnit:
    return ferry_pb2.AccessUnit(stream_id="cam", codec=codec, keyframe=True, width=w, height=h, frame_rate=fps,
                                bitrate_kbps=kbps, pts=0, nal_units=[b"\x65\x88"])


def _object(camera, au) -> ferry_pb2.CanonicalObject:
    obj = ferry_pb2.CanonicalObject(lane="video", destination="police-vms", created=THURSDAY_21H)
    obj.source.device_id, obj.source.address = camera
    obj.access_unit.CopyFrom(au)
    return obj


def _gate_verdict(plan, camera, au) -> tuple[bool, bool, str]:
    gate = Gate("cam", (camera[0], camera[1], 5000), "police-vms", lambda: plan,
                dict.fromkeys(("access_units", "au_bytes", "refused_aus", "dropped_aus", "stripped_nal_units",
                               "audio_frames", "dropped_audio"), 0), THURSDAY_21H)
    gate.transcoding = rec = Recorder()
    out: list = []
    gate.decide(au, 0.0, out)
    if rec.requests:
        return True, True, gate.rule_id or ""
    ready = [e for e in out if isinstance(e, AccessUnitReady)]
    if ready:
        return True, False, ready[0].obj.rule
    [refused] = [e for e in out if isinstance(e, StreamRefused)]
    return False, False, refused.rule


@pytest.mark.parametrize("camera,codec,w,h,fps,kbps,expected", CASES)
def test_the_gate_policy_test_and_policy_diff_agree(camera, codec, w, h, fps, kbps, expected, tmp_path):
    plan = load_plan(YIYANG)
    au = _au(codec, w, h, fps, kbps)
    obj = _object(camera, au)
    # 1. the agent
    assert _gate_verdict(plan, camera, au) == expected
    # 2. `ferry policy test`: a case expecting what the agent does passes
    allowed, transcoded, rule = expected
    case = SuiteCase("t.yaml", 1, "case", obj, allowed, rule, None, transcoded)
    assert run_case(plan, case).problems == ()
    # 3. `ferry policy diff`: against a copy of the policy where the shop rule is remux with 1080p
    #    limits, a change is reported exactly where the agents' behaviour changes
    old_dir = tmp_path / "old"
    shutil.copytree(YIYANG, old_dir)
    text = (old_dir / "policy.yaml").read_text()
    shops = text.index("- id: video-shops")
    end = text.index("- id:", shops + 5)
    rule_text = text[shops:end].replace("max_width: 1280", "max_width: 1920").replace(
        "max_height: 720", "max_height: 1080").replace("mode: transcode", "mode: remux")
    (old_dir / "policy.yaml").write_text(text[:shops] + rule_text + text[end:])
    old = load_plan(old_dir)
    lines = [x for x in compare_plans(old, plan, [Sample(obj, "sample")]) if "[sample]" in x]
    before = old.admit(obj)
    if (before.allowed, before.transcode) == (allowed, transcoded):
        assert not lines
    else:
        [line] = lines
        now = f"transcoded by {rule}" if transcoded else (f"allowed by {rule}" if allowed else f"refused by {rule}")
        assert f"now {now}" in line, line
        assert not (transcoded and "now refused" in line)


def test_the_transcoders_output_is_decided_strictly():
    """What crosses the link is within the rule's limits: the transcoded output is decided with
    `decide`, never with `admit` (a 1080p output of a 720p rule is refused)."""
    plan = load_plan(YIYANG)
    big = _object(SHOP, _au("h264", 1920, 1080, 15, 2000))
    assert plan.admit(big).transcode and not plan.decide(big).allowed
    gate = Gate("cam", (SHOP[0], SHOP[1], 5000), "police-vms", lambda: plan,
                dict.fromkeys(("access_units", "au_bytes", "refused_aus", "dropped_aus", "stripped_nal_units",
                               "audio_frames", "dropped_audio"), 0), THURSDAY_21H)
    gate.transcoding = rec = Recorder()
    out: list = []
    gate.decide(big.access_unit, 0.0, out, transcoded=True)
    assert not rec.requests and not [e for e in out if isinstance(e, AccessUnitReady)]
