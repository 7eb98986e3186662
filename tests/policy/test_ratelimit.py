"""RateLimiter: token bucket per (rule, source), pure given now, bounded state."""

from __future__ import annotations

from pathlib import Path

from ferry.reasons import Reason
from ferry.pb import ferry_pb2
from ferry.policy import Decision, load_plan
from ferry.policy.ratelimit import RateLimiter

PLAN = load_plan(Path(__file__).resolve().parents[2] / "policy" / "yiyang")
PLATFORM = "43090000002000000001"


def keepalive(device_id=PLATFORM):
    return ferry_pb2.CanonicalObject(
        lane="signaling", destination="police-sip", source=ferry_pb2.Source(device_id=device_id, address="10.20.5.20"),
        signaling=ferry_pb2.SignalingMessage(root="Notify", cmd_type="Keepalive", xml="<x/>"))


def run(limiter, now, n, obj=None):
    obj = obj or keepalive()
    return [limiter.check(PLAN.decide(obj), obj, now) for _ in range(n)]


def test_burst_then_refused_with_reason():
    rl = RateLimiter(PLAN)
    out = run(rl, 1000.0, 51)
    assert all(d.allowed for d in out[:50])
    assert out[50] == Decision(False, "signaling-catalog",
                               f"rate limit 20/s (burst 50) exceeded for device '{PLATFORM}' address '10.20.5.20'",
                               Reason.RATE_LIMITED)


def test_refills_at_the_rate():
    rl = RateLimiter(PLAN)
    run(rl, 0.0, 50)
    assert [d.allowed for d in run(rl, 0.5, 11)] == [True] * 10 + [False]     # 0.5 s * 20/s = 10 tokens
    assert sum(d.allowed for d in run(rl, 100.0, 60)) == 50                    # never more than the burst


def test_clock_going_back_refills_nothing():
    rl = RateLimiter(PLAN)
    run(rl, 100.0, 50)
    assert not run(rl, 50.0, 1)[0].allowed
    assert not run(rl, 100.0, 1)[0].allowed


def test_same_inputs_same_outputs():
    a, b = RateLimiter(PLAN), RateLimiter(PLAN)
    times = [0.0, 0.01, 0.02, 0.5, 0.51, 3.0] * 20
    assert [a.check(PLAN.decide(keepalive()), keepalive(), t) for t in times] == \
           [b.check(PLAN.decide(keepalive()), keepalive(), t) for t in times]


def test_refusals_and_unlimited_rules_pass_through_untouched():
    rl = RateLimiter(PLAN)
    refused = Decision(False, "default-deny", "x", Reason.DEFAULT_DENY)
    assert rl.check(refused, keepalive(), 0.0) is refused
    video = Decision(True, "video-social", "allowed by video-social")
    for _ in range(1000):
        assert rl.check(video, keepalive(), 0.0) is video
    assert len(rl) == 0


def test_sources_have_their_own_buckets_and_state_is_bounded():
    rl = RateLimiter(PLAN, max_entries=3)
    allowed = Decision(True, "signaling-catalog", "allowed by signaling-catalog")
    for i in range(10):
        o = keepalive(f"4309000000200000000{i}")
        assert all(rl.check(allowed, o, 0.0).allowed for _ in range(50))
        assert not rl.check(allowed, o, 0.0).allowed
    assert len(rl) == 3
