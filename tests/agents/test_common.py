"""ferry.agents.common.AuditQueue: no audit, no transfer — records wait in order while the trail is down."""
from __future__ import annotations

import asyncio

import time
from types import SimpleNamespace

from ferry.agents.common import AuditQueue, run_agent
from ferry.audit import AuditUnavailable


class Trail:
    def __init__(self) -> None:
        self.up, self.written = True, []

    def append(self, t, **fields) -> None:
        if not self.up:
            raise AuditUnavailable("disk full")
        self.written.append(fields)


def test_records_wait_in_order_while_the_trail_is_down():
    trail = Trail()
    q = AuditQueue(trail, lambda: SimpleNamespace(hash=b"\x01" * 32), "lane")
    assert q.append({"event": "a", "rule": None}) and not q.down
    assert trail.written == [{"policy_hash": "01" * 32, "event": "a"}]      # None values left out
    trail.up = False
    assert not q.append({"event": "b", "policy_hash": "ff"}) and q.down
    assert not q.append({"event": "c"}) and not q.flush()
    trail.up = True
    assert q.flush() and not q.down
    assert [(r["event"], r["policy_hash"]) for r in trail.written[1:]] == [("b", "ff"), ("c", "01" * 32)]


def test_a_bounded_queue_drops_past_its_limit():
    trail = Trail()
    trail.up = False
    q = AuditQueue(trail, lambda: SimpleNamespace(hash=b"\0" * 32), "delivery", limit=2)
    for e in "abc":
        q.append({"event": e})
    trail.up = True
    assert q.flush() and [r["event"] for r in trail.written] == ["a", "b"]


def _dropped(code="bad_magic", count=3):
    return {"event": "datagrams_dropped", "verdict": "refused", "code": code, "reason": code,
            "detail": {"count": count}, "rule": None}


def test_with_a_refusal_cap_link_refusals_beyond_it_are_summed_up_not_queued():
    trail = Trail()
    q = AuditQueue(trail, lambda: SimpleNamespace(hash=b"\0" * 32), "delivery", refusal_cap=2)
    for _ in range(5):
        q.append(_dropped())
    q.append({"event": "object_delivered", "verdict": "delivered", "object_id": 1})
    assert [r["event"] for r in trail.written] == ["datagrams_dropped"] * 2 + ["object_delivered"]
    assert "rule" not in trail.written[0]                                   # None values still left out
    assert q.tick(time.monotonic()) == q.budget.next_timer() > time.monotonic()   # the agent's next timer
    assert q.tick(q.budget.next_timer()) is None                            # the hour ends: the summary
    s = trail.written[-1]
    assert s["event"] == "audit_suppressed" and s["policy_hash"] == "00" * 32
    assert s["detail"]["withheld"] == [{"event": "datagrams_dropped", "code": "bad_magic", "records": 3, "count": 9}]


def test_close_budget_writes_the_summary_while_the_trail_may_be_down():
    trail = Trail()
    q = AuditQueue(trail, lambda: SimpleNamespace(hash=b"\0" * 32), "delivery", refusal_cap=0)
    q.append(_dropped())
    assert trail.written == []
    trail.up = False
    assert not q.close_budget() and q.down                 # queued, in order, like every record
    trail.up = True
    assert q.flush() and [r["event"] for r in trail.written] == ["audit_suppressed"]
    assert q.close_budget() and len(trail.written) == 1    # nothing more withheld: nothing written


def test_without_a_cap_nothing_is_withheld():
    trail = Trail()
    q = AuditQueue(trail, lambda: SimpleNamespace(hash=b"\0" * 32), "lane")
    for _ in range(100):
        q.append(_dropped())
    assert len(trail.written) == 100 and q.tick(time.monotonic()) is None and q.close_budget()


def test_an_exception_in_a_loop_callback_stops_the_agent_with_an_alarm_and_exit_1(caplog):
    """A bug in a timer callback (the spool scan, say) must not leave a lane silently stopped
    while the agent runs on: the agent records an alarm and stops, exit code 1 (its service
    manager restarts it; the outer agent re-sends what it kept)."""
    class Agent:
        records: list = []

        def __init__(self, cfg) -> None:
            pass

        def audit(self, **fields) -> None:
            self.records.append(fields)

        async def run(self, stop) -> int:
            loop = asyncio.get_running_loop()
            # what is not a bug of ours does not stop it: a transport's error, an OSError
            loop.call_exception_handler({"message": "Fatal read error", "exception": ConnectionResetError(),
                                         "transport": None})
            loop.call_soon(self.system_error)
            await asyncio.sleep(0.05)
            assert not stop.is_set()
            loop.call_soon(self.broken)
            await asyncio.wait_for(stop.wait(), 10)
            return 0

        def system_error(self) -> None:
            raise BlockingIOError(11, "Resource temporarily unavailable")

        def broken(self) -> None:
            raise RuntimeError("a bug in a lane")

    assert run_agent(Agent, None) == 1
    [alarm] = Agent.records
    assert alarm["event"] == "agent_failed" and alarm["verdict"] == "alarm"
    assert "RuntimeError: a bug in a lane" in alarm["reason"]
    assert "a bug in a lane" in caplog.text
