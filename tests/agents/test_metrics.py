"""The metrics collector over a fake agent: names, types and values as Prometheus parses them; a
busy or closed event loop gets the last snapshot, never a blocked scrape; the HTTP listener starts
and stops; README's Metrics table lists every metric the collector can emit."""
from __future__ import annotations

import asyncio
import re
import socket
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

from ferry.agents.metrics import (LANE_COUNTERS, METRICS, STATUS_COUNTERS, AgentCollector, MetricsServer,
                                  families, take_snapshot)
from ferry.config import ManagementSection
from ferry.mgmt.host import LinkView
from ferry.pb import mgmt_pb2
from ferry.reasons import Reason

README = Path(__file__).resolve().parents[2] / "README.md"


class FakeAgent:
    role = "inner"
    name = "gate-in"
    started_at = 1_700_000_000.0

    def __init__(self) -> None:
        self.counters = {"datagrams": 120, "bytes": 96_000, "blocks_ok": 10, "blocks_repaired": 2,
                         "blocks_lost": 1, "blocks_refused": 0, "heartbeats": 7, "delivered": 3,
                         "refused": 1, "lost": 0, "policy_reloads": 2, "video_streams": 1,
                         "dropped_by_reason": {"bad_tag": 4}}
        self.lanes = {"files": {"delivered": 3, "refused": 1, "lost": 0},
                      "video": {"streams": 1, "active": 1, "delivered": 50}}
        self.link = LinkView("up", 1_700_000_100.0, "heartbeats arrive")
        self.writable = True
        self.calls_from: list[str] = []

    def status_counters(self) -> dict:
        self.calls_from.append(threading.current_thread().name)
        return dict(self.counters)

    def lane_counters(self) -> dict:
        return {k: dict(v) for k, v in self.lanes.items()}

    def link_view(self) -> LinkView:
        return self.link

    def audit_available(self) -> bool:
        return self.writable

    def uptime(self) -> float:
        return 42.5

    def policy_info(self) -> mgmt_pb2.PolicyInfo:
        return mgmt_pb2.PolicyInfo(name="demo", hash=bytes(range(32)), source="bundle", signed_at=1_700_000_050.0,
                                   applied_at=1_700_000_060.0)


class Receiver:
    current_epoch = 5

    class counters:
        dropped_by_reason = {Reason.BAD_MAGIC: 4, Reason.BAD_SYMBOL_AUTH: 1}


def exposition(agent, now: float | None = None) -> dict[str, tuple[str, list]]:
    """name -> (type, [(sample, labels, value)]) as a Prometheus server would parse them."""
    class One:
        def collect(self):
            t = time.monotonic() if now is None else now
            return families(take_snapshot(agent, t), t)

    reg = CollectorRegistry(auto_describe=False)
    reg.register(One())
    text = generate_latest(reg).decode()
    return {f.name: (f.type, [(s.name, s.labels, s.value) for s in f.samples])
            for f in text_string_to_metric_families(text)}


def sample(got: dict, family: str, **labels: str) -> float:
    hits = [v for _, lab, v in got[family][1] if labels.items() <= lab.items()]
    assert len(hits) == 1, (family, labels, got.get(family))
    return hits[0]


def test_names_types_and_values():
    agent = FakeAgent()
    agent.receiver = Receiver()
    got = exposition(agent)
    base = {"role": "inner", "agent": "gate-in"}
    assert got["ferry_uptime_seconds"] == ("gauge", [("ferry_uptime_seconds", base, 42.5)])
    assert got["ferry_link_up"] == ("gauge", [("ferry_link_up", base, 1.0)])
    assert sample(got, "ferry_link_since_timestamp_seconds") == 1_700_000_100.0
    assert sample(got, "ferry_audit_available") == 1
    assert sample(got, "ferry_start_time_seconds") == 1_700_000_000.0
    assert got["ferry_link_bytes"][0] == "counter"
    assert got["ferry_link_bytes"][1] == [("ferry_link_bytes_total", base, 96_000.0)]
    assert sample(got, "ferry_link_blocks_received", outcome="repaired") == 2
    assert sample(got, "ferry_link_blocks_received", outcome="lost") == 1
    assert sample(got, "ferry_objects_delivered") == 3
    assert sample(got, "ferry_policy_reloads") == 2
    assert sample(got, "ferry_key_epoch") == 5
    assert sample(got, "ferry_link_datagrams_dropped", reason="bad_magic") == 4
    assert sample(got, "ferry_link_datagrams_dropped", reason="bad_symbol_auth") == 1
    assert sample(got, "ferry_lane_delivered", lane="files") == 3
    assert sample(got, "ferry_lane_delivered", lane="video") == 50
    assert got["ferry_lane_active_streams"][0] == "gauge"
    assert sample(got, "ferry_lane_active_streams", lane="video") == 1
    info = got["ferry_policy_info"][1]
    assert info == [("ferry_policy_info", {**base, "name": "demo", "hash": bytes(range(32)).hex(),
                                           "source": "bundle"}, 1.0)]
    assert sample(got, "ferry_policy_signed_timestamp_seconds") == 1_700_000_050.0
    # video_* flat counters are the video lane's metrics; a dict counter is no sample
    assert "ferry_status_counter" not in got
    assert not any("video_streams" in str(v) for v in got.values())


def test_the_link_down_and_the_trail_unwritable_read_0():
    agent = FakeAgent()
    agent.link, agent.writable = LinkView("down", 1_700_000_200.0, "no heartbeat for 5 s"), False
    got = exposition(agent)
    assert sample(got, "ferry_link_up") == 0
    assert sample(got, "ferry_link_since_timestamp_seconds") == 1_700_000_200.0
    assert sample(got, "ferry_audit_available") == 0


def test_the_outer_epoch_comes_from_its_counters():
    agent = FakeAgent()
    agent.role, agent.counters = "outer", {"epoch": 3, "blocks": 9, "outbox": 4, "sent": 2}
    got = exposition(agent)
    assert sample(got, "ferry_key_epoch", role="outer") == 3
    assert sample(got, "ferry_link_blocks_sent") == 9
    assert got["ferry_link_outbox"] == ("gauge", [("ferry_link_outbox", {"role": "outer", "agent": "gate-in"}, 4.0)])
    assert "ferry_status_counter" not in got


def test_a_counter_without_a_metric_is_still_shown_by_name():
    agent = FakeAgent()
    agent.counters = {"brand_new": 6}
    agent.lanes = {"files": {"weird": 2}}
    got = exposition(agent)
    assert sample(got, "ferry_status_counter", name="brand_new") == 6
    assert sample(got, "ferry_status_counter", name="files.weird") == 2


def test_an_agent_without_the_optional_parts():
    class Bare:
        role, name, started_at = "outer", "bare", 1.0

        def status_counters(self):
            return {}

        def audit_available(self):
            return True

        def policy_info(self):
            return mgmt_pb2.PolicyInfo(name="p", hash=b"\x01" * 32, source="config")

    got = exposition(Bare())
    assert "ferry_link_up" not in got and "ferry_uptime_seconds" not in got and "ferry_key_epoch" not in got
    assert sample(got, "ferry_audit_available") == 1


@settings(max_examples=60, deadline=None)
@given(agent_name=st.text(max_size=40), policy_name=st.text(max_size=40), lane=st.text(min_size=1, max_size=20))
def test_any_label_text_survives_the_exposition(agent_name, policy_name, lane):
    """Names come from config, policies and the peer (a lane name): escaped, never a broken scrape."""
    agent = FakeAgent()
    agent.name = agent_name
    agent.lanes = {lane: {"delivered": 1}}
    agent.policy_info = lambda: mgmt_pb2.PolicyInfo(name=policy_name, hash=b"\x02" * 32, source="config")
    got = exposition(agent)
    assert sample(got, "ferry_lane_delivered", lane=lane) == 1
    assert got["ferry_policy_info"][1][0][1]["name"] == policy_name
    assert got["ferry_link_up"][1][0][1]["agent"] == agent_name


@pytest.fixture
def loop_thread():
    loop = asyncio.new_event_loop()
    t = threading.Thread(target=loop.run_forever, name="agent-loop", daemon=True)
    t.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    t.join(5)
    loop.close()


def test_the_snapshot_is_taken_on_the_agent_loop(loop_thread):
    agent = FakeAgent()
    c = AgentCollector(agent, loop_thread, timeout=5)
    names = {m.name for m in c.collect()}
    assert "ferry_link_up" in names and "ferry_policy" in names
    assert agent.calls_from == ["agent-loop"]


def test_a_busy_loop_gets_the_last_snapshot_not_a_blocked_scrape(loop_thread):
    agent = FakeAgent()
    c = AgentCollector(agent, loop_thread, timeout=0.3)
    first = c.snapshot()
    assert first is not None
    agent.counters["bytes"] = 1
    loop_thread.call_soon_threadsafe(time.sleep, 1.5)      # the loop is busy for 1.5 s
    t0 = time.monotonic()
    again = c.snapshot()
    assert time.monotonic() - t0 < 1.2
    assert again is first
    age = [m for m in c.collect() if m.name == "ferry_metrics_snapshot_age_seconds"]
    assert age and age[0].samples[0].value >= 0.3
    # once free, the loop answers again with the new value
    deadline = time.monotonic() + 10
    while (s := c.snapshot()) is first and time.monotonic() < deadline:
        pass
    assert s is not None and s.counters["bytes"] == 1


def test_a_closed_loop_serves_the_last_snapshot():
    loop = asyncio.new_event_loop()
    c = AgentCollector(FakeAgent(), loop, timeout=0.2)
    assert c.snapshot() is None          # never answered, nothing to serve yet
    loop.close()
    assert list(c.collect()) == []


@pytest.mark.parametrize("host", ["127.0.0.1", "[::1]"])
def test_the_http_listener_serves_and_stops(loop_thread, host):
    family = socket.AF_INET6 if host.startswith("[") else socket.AF_INET
    with socket.socket(family) as s:
        s.bind((host.strip("[]"), 0))
        port = s.getsockname()[1]
    server = MetricsServer(f"{host}:{port}")
    server.start(FakeAgent(), loop_thread)
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
        names = {f.name for f in text_string_to_metric_families(text)}
        assert {"ferry_link_up", "ferry_policy_info", "process_cpu_seconds"} <= names
    finally:
        server.stop()
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5)


def test_a_busy_port_names_the_key(loop_thread):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(OSError, match=rf"\[management\] metrics = '127.0.0.1:{port}': cannot listen"):
            MetricsServer(f"127.0.0.1:{port}").start(FakeAgent(), loop_thread)


@pytest.mark.parametrize("value", ["127.0.0.1:9464", "[::1]:9464", "0.0.0.0:1", ""])
def test_the_metrics_key_takes_a_literal_address_and_port(value):
    assert ManagementSection(metrics=value).metrics == value


@pytest.mark.parametrize("value", ["localhost:9464", "127.0.0.1", "127.0.0.1:0", "127.0.0.1:65536", ":9464",
                                   "127.0.0.1:x"])
def test_the_metrics_key_refuses_anything_else(value):
    with pytest.raises(ValueError, match="metrics"):
        ManagementSection(metrics=value)


def test_the_tables_name_only_defined_metrics():
    for metric, _ in STATUS_COUNTERS.values():
        assert metric in METRICS
    for metric in LANE_COUNTERS.values():
        assert METRICS[metric].labels == ("lane",)
    for d in METRICS.values():
        assert d.name.startswith("ferry_")
        assert not d.name.endswith("_total"), "the exposition adds _total"


def test_readme_lists_every_metric_with_its_type():
    """README's Metrics table: one row per metric the collector can emit, with its type."""
    text = README.read_text()
    section = text.split("\n## Metrics\n", 1)[1].split("\n## ", 1)[0]
    rows = dict(re.findall(r"^\| `(ferry_[a-z_]+)(?:\{[^`]*\})?` \| (counter|gauge|info) \|", section, re.M))
    assert rows == {d.exposed: d.kind for d in METRICS.values()}
