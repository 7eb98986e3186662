"""The standard health service on the management server: SERVING while the link is up and the
trail writable, NOT_SERVING when either fails (for "" and "ferry.mgmt.v1.Management"), back when
they recover; Watch streams the changes; GetStatus says the same. Also Flows and TailAudit, and a
property test of the trail tail reader."""
from __future__ import annotations

import json
import queue
import threading
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import given, settings
from hypothesis import strategies as st
from waiting import wait_until

from ferry.mgmt.client import ManagementClient, ManagementError
from ferry.mgmt.host import LinkView
from ferry.mgmt.server import read_new, read_tail

from .served import Served

NAME = health_pb2.HealthCheckResponse.ServingStatus.Name


@pytest.fixture
def served():
    s = Served()
    yield s
    s.close()


def check(s: Served, service: str = "") -> str:
    with grpc.insecure_channel(f"unix:{s.socket}") as ch:
        return NAME(health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=service),
                                                          timeout=10).status)


def test_health_follows_the_link_and_the_trail(served):
    assert check(served) == check(served, "ferry.mgmt.v1.Management") == "SERVING"
    served.agent.link = LinkView("down", 200.0, "no heartbeat for 5 s")
    wait_until(lambda: check(served) == "NOT_SERVING", 10, "NOT_SERVING with the link down")
    assert check(served, "ferry.mgmt.v1.Management") == "NOT_SERVING"
    with ManagementClient(served.socket) as c:
        assert c.get_status().health == "NOT_SERVING"
    served.agent.link = LinkView("up", 210.0, "heartbeats again")
    wait_until(lambda: check(served) == "SERVING", 10, "SERVING with the link back")
    served.agent.trail_up = False
    wait_until(lambda: check(served) == "NOT_SERVING", 10, "NOT_SERVING with the trail down")
    served.agent.trail_up = True
    wait_until(lambda: check(served) == "SERVING", 10, "SERVING with the trail back")
    with ManagementClient(served.socket) as c:
        s = c.get_status()
    assert s.health == "SERVING" and s.key_epoch == 42


def test_health_watch_streams_the_changes(served):
    seen: queue.Queue[str] = queue.Queue()
    ch = grpc.insecure_channel(f"unix:{served.socket}")
    call = health_pb2_grpc.HealthStub(ch).Watch(health_pb2.HealthCheckRequest(service=""))

    def read() -> None:
        try:
            for r in call:
                seen.put(NAME(r.status))
        except grpc.RpcError:
            pass

    t = threading.Thread(target=read, daemon=True)
    t.start()
    try:
        assert seen.get(timeout=10) == "SERVING"
        served.agent.link = LinkView("down", 1.0, "gone")
        assert seen.get(timeout=10) == "NOT_SERVING"
        served.agent.link = LinkView("up", 2.0, "back")
        assert seen.get(timeout=10) == "SERVING"
    finally:
        call.cancel()
        ch.close()
        t.join(10)


def test_unknown_service_is_not_found(served):
    with pytest.raises(grpc.RpcError) as e:
        check(served, "no.such.Service")
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


def test_flows_and_tail_audit(served):
    lines = [json.dumps({"seq": n, "event": "x"}) for n in range(30)]
    served.agent.trail.write_text("\n".join(lines) + "\n")
    with ManagementClient(served.socket) as c:
        f = c.flows()
        assert [(s.name, s.device_id, s.access_units, s.bytes) for s in f.streams] == [("cam", "4" * 20, 3, 999)]
        assert [(x.name, x.object_id, x.state) for x in f.files] == [("a.txt", 5, "sending")]
        assert list(c.tail_audit(5)) == lines[-5:]
        assert list(c.tail_audit(0)) == []
        assert list(c.tail_audit(10_000)) == lines            # at most AUDIT_TAIL_MAX; all 30 here
        follow = c.tail_audit(2, follow=True)
        assert [next(follow), next(follow)] == lines[-2:]
        with open(served.agent.trail, "a") as t:
            t.write('{"seq": 30, "ev')                         # a record being written: not yet
            t.flush()
            t.write('ent": "y"}\n')
        assert next(follow) == '{"seq": 30, "event": "y"}'
        follow.close()


def test_followers_are_bounded(served, monkeypatch):
    served.agent.trail.write_text('{"seq": 0}\n')
    monkeypatch.setattr("ferry.limits.AUDIT_TAIL_FOLLOWERS_MAX", 2)
    clients = [ManagementClient(served.socket) for _ in range(3)]
    try:
        follows = [c.tail_audit(1, follow=True) for c in clients[:2]]
        assert [next(f) for f in follows] == ['{"seq": 0}'] * 2
        with pytest.raises(ManagementError) as e:
            next(clients[2].tail_audit(1, follow=True))
        assert e.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED and "at most 2" in str(e.value)
        assert list(clients[2].tail_audit(1)) == ['{"seq": 0}']        # a tail without follow still works
        follows[0].close()
        wait_until(lambda: _one_more(clients[2]), 10, "a follower's place freed")
    finally:
        for c in clients:
            c.close()


def _one_more(c: ManagementClient) -> bool:
    try:
        f = c.tail_audit(1, follow=True)
        next(f)
        f.close()
        return True
    except ManagementError:
        return False


def test_tail_of_a_missing_trail_says_so(served):
    with ManagementClient(served.socket) as c, pytest.raises(ManagementError) as e:
        list(c.tail_audit(3))
    assert e.value.refused and "cannot read the audit trail" in str(e.value) and "audit.jsonl" in str(e.value)


@settings(max_examples=200, deadline=None)
@given(chunks=st.lists(st.binary(max_size=64), max_size=12), last=st.integers(0, 40), split=st.integers(0, 12))
def test_tail_then_follow_gives_every_whole_line_once(tmp_path_factory, chunks, last, split):
    """Whatever bytes the trail holds (torn lines, no newline, empty lines), tail + follow yield exactly
    the whole lines, in order, each once; a line is given only once its newline is written."""
    path: Path = tmp_path_factory.mktemp("tail") / "audit.jsonl"
    head, rest = chunks[:split], chunks[split:]
    path.write_bytes(b"".join(head))
    got, offset = read_tail(path, last)
    whole_head = b"".join(head).split(b"\n")[:-1]
    assert got == ([x.decode("utf-8", "replace") for x in whole_head][max(0, len(whole_head) - last):] if last else [])
    for c in rest:
        with open(path, "ab") as f:
            f.write(c)
        more, offset = read_new(path, offset)
        got += more
    everything = b"".join(chunks).split(b"\n")[:-1]
    expect = [x.decode("utf-8", "replace") for x in everything]
    skipped = max(0, len(whole_head) - last) if last else len(whole_head)
    assert got == expect[skipped:]
