"""The management service on real agents (issue 14 item 1): `ferry status` and `ferry flows` show a
running transfer (a file crossing a slow link, a camera's stream); the standard health service
goes NOT_SERVING when the link dies (the outer agent killed -9) and SERVING when it is back, and
NOT_SERVING while the audit trail cannot be written; the inner agent answers on TCP with mutual
TLS as well."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

import gb28181
from appliance import free_udp_port, read_trail
from disk_full import fill
from tests.mgmt.certs import make_certs

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

CAMERA = "43090000001320000001"          # region 4309, type 132: the demo policy's cameras
needs_ffmpeg = pytest.mark.skipif(not shutil.which("ffmpeg"), reason="ffmpeg not installed")


def ferry(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ferry", *map(str, args)], capture_output=True, text=True,
                          timeout=120)


def as_json(*args) -> list[dict]:
    r = ferry(*args, "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def health(socket: Path, service: str = "") -> str:
    """The standard health service's answer on an agent's Unix socket ("" = the whole server)."""
    with grpc.insecure_channel(f"unix:{socket}") as ch:
        try:
            r = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
        except grpc.RpcError as e:
            return e.code().name
    return health_pb2.HealthCheckResponse.ServingStatus.Name(r.status)


def events(trail: Path, event: str) -> list[dict]:
    return [r for r in read_trail(trail) if r["event"] == event]


def test_status_and_flows_show_a_file_crossing_a_slow_link(appliance_factory, tmp_path):
    # 0.5 Mbit/s: the first MiB leaves at once (the pacer's burst), the rest of fourteen files of
    # 150 kB takes 20 s and more, each about 3 s (an incomplete object may wait OBJECT_TIMEOUT, 10 s)
    a = appliance_factory(management=True, rate_mbps=0.5)
    certs = make_certs(tmp_path / "certs")
    port = free_udp_port()       # a free port number (TCP is the same range; nothing listens on it)
    text = (a.work / "inner.toml").read_text().replace(
        "[management]\n", f'[management]\nlisten = "127.0.0.1:{port}"\ntls_cert = "{certs.server_cert}"\n'
        f'tls_key = "{certs.server_key}"\ntls_client_ca = "{certs.ca}"\n')
    (a.work / "inner.toml").write_text(text)
    a.start()
    names = [f"big-{n:02d}.txt" for n in range(14)]
    for name in names:
        a.drop(name, name.encode() * (150_000 // len(name)) + b"\n")
    sockets = ("--socket", a.outer_socket, "--socket", a.inner_socket)

    def in_flight():
        outer, inner = as_json("flows", *sockets)
        sending = [f for f in outer["files"] if f["state"] == "sending"]
        return (outer, inner, sending) if sending and inner["files"] else None

    outer, inner, sending = a.wait_for(in_flight, 60, "files in flight on both agents")
    assert {f["name"] for f in outer["files"]} <= set(names)
    assert all(f["size"] > 150_000 - 20 for f in outer["files"])
    g = inner["files"][0]
    assert all(x["state"] == "receiving" and 0 < x["received"] < x["size"] for x in inner["files"])
    assert g["object_id"] in {f["object_id"] for f in outer["files"]}
    assert any(v != "delivered" for v in (a.outcomes().get(n) for n in names))     # still crossing

    table = ferry("flows", *sockets)
    assert table.returncode == 0, table.stderr
    assert "files in flight: " in table.stdout and "big-" in table.stdout and "test-outer" in table.stdout

    o, i = as_json("status", *sockets)
    assert (o["role"], i["role"]) == ("outer", "inner")
    for s in (o, i):
        assert s["health"] == "SERVING" and s["link"]["state"] == "up" and s["audit"] == "ok"
        assert s["key_epoch"] > 0 and s["policy"]["name"] == "demo" and len(s["policy"]["sm3"]) == 64
    assert o["key_epoch"] == i["key_epoch"]                      # the inner agent accepted the outer's epoch
    assert o["counters"]["bytes"] > 0
    table = ferry("status", *sockets)
    assert table.returncode == 0 and table.stdout.count("SERVING") == 2, table.stdout

    # the inner agent on TCP with mutual TLS: the same answers for a client with the right certificate
    tls = ("--tls-ca", certs.ca, "--tls-cert", certs.client_cert, "--tls-key", certs.client_key)
    (t,) = as_json("status", "--address", f"127.0.0.1:{port}", *tls)
    assert t["role"] == "inner" and t["key_epoch"] == i["key_epoch"]
    wrong = ferry("status", "--address", f"127.0.0.1:{port}", "--tls-ca", certs.ca, "--tls-cert", certs.wrong_cert,
                  "--tls-key", certs.wrong_key, "--timeout", "5")
    assert wrong.returncode == 2 and "cannot reach" in wrong.stderr, wrong.stderr

    a.wait_for(lambda: all(a.outcomes().get(n) == "delivered" for n in names), 120, "every file delivered")
    a.wait_for(lambda: not as_json("flows", "--socket", a.inner_socket)[0]["files"], 30, "nothing in flight")

    # the audit tail: the last records, the delivery among them
    r = ferry("tail", "--socket", a.inner_socket, "-n", "5")
    assert r.returncode == 0, r.stderr
    tail = [json.loads(x) for x in r.stdout.splitlines()]
    trail = read_trail(a.inner_audit)            # a checkpoint may have come since: a slice of it
    assert len(tail) == 5 and tail == trail[trail.index(tail[0]):][:5]
    assert any(r["event"] == "object_delivered" for r in trail[trail.index(tail[0]) - 20:])


@needs_ffmpeg
def test_flows_show_a_camera_stream_on_both_agents(appliance_factory, tmp_path):
    a = appliance_factory(management=True)
    port = free_udp_port()
    a.append_config("outer", "\n".join(["[[video]]", 'name = "gate-cam"', 'transport = "udp"',
                                        f'device_id = "{CAMERA}"', 'payload = "ps"', 'destination = "police-vms"',
                                        f'listen = "127.0.0.1:{port}"']))
    a.append_config("inner", "\n".join(["[[video_output]]", 'destination = "police-vms"', 'form = "ps"',
                                        'transport = "file"', f'path = "{a.work / "rec" / "{stream}.ps"}"']))
    a.start()
    src = gb28181.make_source(None, "h264", size="320x240", seconds=20)
    cam = gb28181.Camera(gb28181.ps_packets(src, "h264", ssrc=0x400), ("127.0.0.1", port), realtime=1.0).start()
    try:
        def streaming():
            outer, inner = as_json("flows", "--socket", a.outer_socket, "--socket", a.inner_socket)
            ok = (outer["streams"] and inner["streams"] and outer["streams"][0]["access_units"] > 0
                  and inner["streams"][0]["access_units"] > 0)
            return (outer, inner) if ok else None

        outer, inner = a.wait_for(streaming, 60, "the stream on both agents")
        (s,) = outer["streams"]
        assert s["name"] == "gate-cam" and s["device_id"] == CAMERA and s["source"].startswith("127.0.0.1:")
        assert s["destination"] == "police-vms" and s["bytes"] > 0 and s["started"].endswith("Z")
        (t,) = inner["streams"]
        assert t["device_id"] == CAMERA and t["stream_id"] == s["stream_id"] and t["destination"] == "police-vms"
        table = ferry("flows", "--socket", a.outer_socket)
        assert "video streams: 1" in table.stdout and "gate-cam" in table.stdout and CAMERA in table.stdout
    finally:
        cam.join(60)


def test_health_not_serving_while_the_link_is_dead_and_back(appliance_factory):
    a = appliance_factory(management=True).start()
    a.wait_for(lambda: health(a.inner_socket) == "SERVING", 30, "inner SERVING (heartbeats come)")
    assert health(a.inner_socket, "ferry.mgmt.v1.Management") == "SERVING"
    assert health(a.outer_socket) == "SERVING"
    assert health(a.inner_socket, "no.such.Service") == "NOT_FOUND"
    a.kill("outer")                                            # kill -9: no goodbye on the link
    a.wait_for(lambda: health(a.inner_socket) == "NOT_SERVING", 30, "inner NOT_SERVING after the link died")
    assert health(a.inner_socket, "ferry.mgmt.v1.Management") == "NOT_SERVING"
    (s,) = as_json_any("status", "--socket", a.inner_socket)
    assert s["health"] == "NOT_SERVING" and s["link"]["state"] == "down"
    a.start_role("outer")
    a.wait_for(lambda: health(a.inner_socket) == "SERVING", 30, "inner SERVING again")
    a.drop("after.txt", b"the link is back\n")
    a.wait_for(lambda: a.outcomes().get("after.txt") == "delivered", 30, "after.txt delivered")


def as_json_any(*args) -> list[dict]:
    r = ferry(*args, "--json")
    return json.loads(r.stdout)


@pytest.mark.root
def test_health_not_serving_while_the_audit_trail_cannot_be_written(appliance_factory, small_disk):
    a = appliance_factory(management=True, outer_audit=small_disk / "outer").start()
    a.wait_for(lambda: health(a.outer_socket) == "SERVING", 30, "outer SERVING")
    filler = small_disk / "filler"
    fill(filler)
    n = 0

    def down() -> bool:
        nonlocal n
        n += 1
        a.drop(f"during-{n:03d}.txt", b"waits for the audit trail\n")     # records the trail cannot take
        return health(a.outer_socket) == "NOT_SERVING"

    a.wait_for(down, 60, "outer NOT_SERVING while its trail is full", interval=0.3)
    filler.unlink()
    a.wait_for(lambda: health(a.outer_socket) == "SERVING", 60, "outer SERVING once the trail has room")
    a.wait_for(lambda: events(a.outer_audit, "audit_resumed"), 30, "audit_resumed on the outer trail")
