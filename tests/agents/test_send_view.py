"""The outer agent's view of the link for `ferry policy status`: what it sends (it hears nothing back)."""
from __future__ import annotations

from ferry.agents.outer import SendView


def test_down_while_held_failed_or_failing_and_up_again_when_a_send_works():
    v = SendView("10.99.0.2:47000", 100.0)
    assert (v.view.state, v.view.since, v.view.detail) == ("up", 100.0, "sending to 10.99.0.2:47000")
    v.update(False, None, sent=10, errors=0, wall=101.0)
    assert (v.view.state, v.view.since) == ("up", 100.0)                     # no change: since stays
    v.update(True, None, sent=10, errors=0, wall=102.0)                      # the trail is down
    assert (v.view.state, v.view.since) == ("down", 102.0) and "audit trail" in v.view.detail
    v.update(False, None, sent=10, errors=0, wall=103.0)                      # the trail is back
    assert (v.view.state, v.view.since) == ("up", 103.0)
    v.update(False, None, sent=10, errors=3, wall=104.0)                      # sends fail, none works
    assert (v.view.state, v.view.since) == ("down", 104.0) and "3 failed so far" in v.view.detail
    v.update(False, None, sent=10, errors=3, wall=105.0)                      # quiet: still down
    assert (v.view.state, v.view.since) == ("down", 104.0)
    v.update(False, None, sent=12, errors=3, wall=106.0)                      # a send works
    assert (v.view.state, v.view.since) == ("up", 106.0)
    v.update(False, OSError("EPERM"), sent=12, errors=3, wall=107.0)
    assert v.view.state == "down" and "link writer failed: OSError: EPERM" in v.view.detail
