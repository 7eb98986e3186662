"""Prometheus metrics on real agents: both agents serve `[management] metrics` over HTTP, a file
crosses and the counters say so, the link is up on both sides; the outer agent killed (-9), the
inner agent's ferry_link_up drops to 0 after the liveness timeout. A bad or busy metrics address
stops the agent at start (exit 2) naming the key."""
from __future__ import annotations

import socket
import subprocess
import sys
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from appliance import Appliance

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


def free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port: int) -> dict[str, dict]:
    """name -> {"type": ..., "samples": [(sample name, labels, value), ...]} from one scrape."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain")
        text = r.read().decode()
    return {f.name: {"type": f.type, "samples": [(s.name, s.labels, s.value) for s in f.samples]}
            for f in text_string_to_metric_families(text)}


def value(families: dict, sample: str, **labels: str) -> float:
    """The one sample called `sample` whose labels include `labels`."""
    family = sample.removesuffix("_total")
    got = [v for n, lab, v in families[family]["samples"] if n == sample and labels.items() <= lab.items()]
    assert len(got) == 1, f"{sample}{labels}: {got}"
    return got[0]


def dropped(families: dict) -> float:
    """Inner: link datagrams dropped, all reasons."""
    return sum(v for n, _, v in families.get("ferry_link_datagrams_dropped", {"samples": []})["samples"]
               if n == "ferry_link_datagrams_dropped_total")


def with_metrics(app: Appliance) -> dict[str, int]:
    ports = {role: free_tcp_port() for role in ("outer", "inner")}
    for role, port in ports.items():
        app.append_config(role, f'[management]\nmetrics = "127.0.0.1:{port}"')
    return ports


def test_metrics_follow_a_transfer_and_the_link(appliance_factory):
    app = appliance_factory()
    ports = with_metrics(app)
    app.start()
    app.drop("report.txt", b"quarterly figures\n" * 100)
    app.wait_for(lambda: app.outcomes().get("report.txt") == "delivered", 60, "report.txt delivered")

    inner = app.wait_for(lambda: (m := scrape(ports["inner"])) and
                         value(m, "ferry_link_up", role="inner") == 1 and m, 30, "inner link up in metrics")
    outer = scrape(ports["outer"])
    for role, m in (("outer", outer), ("inner", inner)):
        assert m["ferry_link_up"]["type"] == "gauge"
        assert value(m, "ferry_link_up", role=role, agent=f"test-{role}") == 1
        assert value(m, "ferry_audit_available", role=role) == 1
        assert value(m, "ferry_uptime_seconds", role=role) > 0
        assert value(m, "ferry_link_bytes_total", role=role) > 0
        assert m["ferry_link_bytes"]["type"] == "counter"
        assert value(m, "ferry_key_epoch", role=role) >= 1
        # every status counter of a real agent has a metric of its own
        assert not m.get("ferry_status_counter", {}).get("samples"), m["ferry_status_counter"]
        assert "process_resident_memory_bytes" in m
    assert value(outer, "ferry_lane_sent_total", lane="files") == 1
    assert value(inner, "ferry_lane_delivered_total", lane="files") == 1
    assert value(inner, "ferry_lane_refused_total", lane="files") == 0
    # both agents run the same policy: the info metric carries its name and hash
    policy = [lab for n, lab, _ in outer["ferry_policy_info"]["samples"]]
    assert len(policy) == 1 and len(policy[0]["hash"]) == 64
    assert [lab["hash"] for n, lab, _ in inner["ferry_policy_info"]["samples"]] == [policy[0]["hash"]]

    # a stranger's datagrams on the link port: dropped, and counted by reason
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _ in range(5):
            s.sendto(b"not ferry" * 10, ("127.0.0.1", app.port))
    app.wait_for(lambda: dropped(scrape(ports["inner"])) >= 5, 30, "dropped datagrams counted")

    app.kill("outer")       # kill -9: no more heartbeats
    app.wait_for(lambda: value(scrape(ports["inner"]), "ferry_link_up", role="inner") == 0, 60,
                 "inner ferry_link_up 0 after the outer agent died")
    after = scrape(ports["inner"])
    assert value(after, "ferry_link_since_timestamp_seconds", role="inner") > 0
    assert value(after, "ferry_lane_delivered_total", lane="files") == 1     # counters outlive the link


def run_inner(app: Appliance) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ferry", "inner", "--config", str(app.work / "inner.toml")],
                          cwd=app.work, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("address", ["localhost:9464", "127.0.0.1:99999", "127.0.0.1", "0.0.0.0:x"])
def test_a_bad_metrics_address_exits_2_naming_the_key(appliance_factory, address):
    app = appliance_factory()
    app.append_config("inner", f'[management]\nmetrics = "{address}"')
    done = run_inner(app)
    assert done.returncode == 2, done.stderr
    assert "management.metrics" in done.stderr and "inner.toml" in done.stderr, done.stderr
    assert "Extra inputs" not in done.stderr, done.stderr     # a known key with a bad value


def test_a_busy_metrics_port_exits_2_naming_the_key(appliance_factory):
    app = appliance_factory()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        app.append_config("inner", f'[management]\nmetrics = "127.0.0.1:{port}"')
        done = run_inner(app)
    assert done.returncode == 2, done.stderr
    assert "[management] metrics" in done.stderr and str(port) in done.stderr, done.stderr
