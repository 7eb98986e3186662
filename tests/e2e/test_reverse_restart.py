"""The reverse ferry's replay refusal survives the outer agent's restarts (issue 13 leftover): a
captured reverse request replayed after a kill -9 of the outer agent is refused, not served again;
a torn or corrupt state file is an alarm and a safe default, never a refusal of everything forever."""
from __future__ import annotations

import random
import time

import pytest

from appliance import read_trail
from reverse import CAMERA, add_reverse, ask, reverse_policy
from tests.e2e.test_replay_restart import Tap, replay

pytestmark = pytest.mark.e2e

STATE_FILE = "reverse-floor"


def _requests(a, event: str) -> list[dict]:
    return [r for r in read_trail(a.outer_audit) if r["event"] == event]


@pytest.fixture
def tapped_reverse(appliance_factory, tmp_path):
    """An appliance whose reverse ferry goes through a tap (the attacker's capture)."""
    a = appliance_factory(management=True, policy_dir=reverse_policy(tmp_path / "policy-src"))
    port = add_reverse(a)
    tap = Tap(port)
    text = (a.work / "inner.toml").read_text()
    assert text.count(f"peer_port = {port}\n") == 1
    (a.work / "inner.toml").write_text(text.replace(f"peer_port = {port}\n", f"peer_port = {tap.port}\n"))
    yield a, tap
    tap.close()


def _cross(a, operator: str, n: int) -> int:
    """One start_stream request; waits until the outer agent has taken ``n`` in all. Its object ID."""
    r = ask(a, "start_stream", CAMERA, operator)
    assert r.returncode == 0, r.stdout + r.stderr
    got = a.wait_for(lambda: (x := _requests(a, "request_received")) and len(x) >= n and x, 60,
                     f"request {n} on the outer agent")
    assert len(got) == n
    return got[-1]["object_id"]


def test_a_reverse_request_replayed_after_an_outer_restart_is_refused(tapped_reverse):
    a, tap = tapped_reverse
    a.start()
    oid = _cross(a, "alice", 1)
    a.wait_for(lambda: _requests(a, "request_unserved"), 30, "the request's unserved record")
    captured = tap.take()          # the inner run's announcement, heartbeats and the request
    assert captured
    a.kill("outer")
    a.start_role("outer")
    replay(a.reverse_port, captured)
    replay(a.reverse_port, captured)
    a.wait_for(lambda: [r for r in _requests(a, "request_refused") if r["object_id"] == oid]
               or len(_requests(a, "request_received")) > 1, 30, "the replayed request")
    time.sleep(1.0)
    assert [r["object_id"] for r in _requests(a, "request_received")] == [oid]     # taken once, served once
    assert len(_requests(a, "request_unserved")) == 1
    refused = [r for r in _requests(a, "request_refused") if r["object_id"] == oid]
    assert refused[0]["code"] == "replayed_object", refused[0]
    loaded = [r for r in read_trail(a.outer_audit) if r["event"] == "reverse_state_loaded"]
    assert len(loaded) == 2 and loaded[-1]["detail"]["floor"] >= oid
    # the same inner run's next request still crosses: the restart refuses only what came before it
    assert _cross(a, "bob", 2) > oid
    assert not [r for r in read_trail(a.outer_audit) if r["event"] == "reverse_state_problem"]


def test_a_corrupt_state_file_is_an_alarm_and_refuses_only_what_came_before(tapped_reverse):
    a, tap = tapped_reverse
    a.start()
    oid = _cross(a, "alice", 1)
    captured = tap.take()
    a.kill("outer")
    state = a.work / "audit" / "outer-state" / STATE_FILE
    assert state.exists()
    state.write_bytes(state.read_bytes()[:3] + b"\x00garbage")     # torn / corrupted on disk
    a.start_role("outer")
    problems = a.wait_for(lambda: [r for r in read_trail(a.outer_audit) if r["event"] == "reverse_state_problem"],
                          30, "the alarm")
    assert len(problems) == 1 and problems[0]["verdict"] == "alarm", problems
    assert STATE_FILE in problems[0]["reason"] and "clock skew" in problems[0]["reason"]
    loaded = a.wait_for(lambda: [r for r in read_trail(a.outer_audit) if r["event"] == "reverse_state_loaded"][1:],
                        30, "the state loaded")
    # refused until the start plus the skew, not forever
    assert time.time() < loaded[0]["detail"]["not_before"] <= time.time() + 300 + 1
    replay(a.reverse_port, captured)
    refused = a.wait_for(lambda: [r for r in _requests(a, "request_refused") if r["object_id"] == oid], 30,
                         "the replayed request refused")
    assert refused[0]["code"] == "replayed_object"
    assert [r["object_id"] for r in _requests(a, "request_received")] == [oid]
    # the agent runs on, the forward link too; a file still crosses
    a.drop("after.pdf", b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\n%%EOF\n")
    a.wait_for(lambda: a.outcomes().get("after.pdf") == "delivered", 60, "a file after the restart")


def test_kill_9_around_the_floors_write_never_breaks_a_start_nor_serves_twice(tapped_reverse):
    """The outer agent killed -9 at random moments after a request was asked (before, during or after
    the floor's write): every start reads a usable floor, and replaying everything the tap saw
    serves no request twice."""
    a, tap = tapped_reverse
    a.start()
    rng = random.Random(28181)
    for n in range(3):
        assert ask(a, "start_stream", CAMERA, f"op{n}").returncode == 0
        time.sleep(rng.uniform(0.0, 0.4))
        a.kill("outer")
        a.start_role("outer")
    captured = tap.take()
    replay(a.reverse_port, captured)
    time.sleep(2.0)
    assert _cross(a, "last", len(_requests(a, "request_received")) + 1)      # still takes what follows
    records = read_trail(a.outer_audit)
    assert not [r for r in records if r["event"] == "reverse_state_problem"]
    assert len([r for r in records if r["event"] == "reverse_state_loaded"]) == 4
    received = [r["object_id"] for r in _requests(a, "request_received")]
    assert len(received) == len(set(received)), received
    served = [r["object_id"] for r in _requests(a, "request_unserved")]
    assert len(served) == len(set(served)), served
