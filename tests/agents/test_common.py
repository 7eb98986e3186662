"""ferry.agents.common.AuditQueue: no audit, no transfer — records wait in order while the trail is down."""
from __future__ import annotations

from types import SimpleNamespace

from ferry.agents.common import AuditQueue
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
