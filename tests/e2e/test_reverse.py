"""The reverse lane end to end (issue 13 items 3 and 4): real agent processes on loopback, a second
ferry from the inner agent to the outer, ``ferry ask`` and the management Ask RPC."""
from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time

import pytest

import gb28181
from appliance import free_udp_port, read_trail
from ferry.audit import reconcile, verify_dir
from ferry.crypto.keys import load_private_key, load_public_key
from ferry.mgmt.client import ManagementClient
from ferry.pb import ferry_pb2
from ferry.policy import load_plan
from ferry.wire import LinkSender
from reverse import CAMERA, OTHER_CAMERA, add_reverse, ask, ptz_cmd, reverse_policy

pytestmark = pytest.mark.e2e

PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\n%%EOF\n"


def _requests(records: list[dict], event: str | None = None) -> list[dict]:
    return [r for r in records if r["event"].startswith("request_") and (event is None or r["event"] == event)]


def _appliance(appliance_factory, tmp_path, **policy):
    a = appliance_factory(management=True, policy_dir=reverse_policy(tmp_path / "policy-src", **policy))
    return a


def test_ask_start_stream_is_audited_on_both_sides(appliance_factory, tmp_path):
    a = _appliance(appliance_factory, tmp_path)
    add_reverse(a)
    a.start()
    r = ask(a, "start_stream", CAMERA, "alice", "transport=tcp")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "accepted" in r.stdout
    sent = a.wait_for(lambda: _requests(read_trail(a.inner_audit), "request_sent"), 20, "request_sent")
    assert len(sent) == 1
    s = sent[0]
    assert s["verdict"] == "sent" and s["rule"] == "reverse-operators" and s["lane"] == "reverse"
    assert s["detail"] == {"request": "start_stream", "device_id": CAMERA, "operator": "alice",
                           "params": {"transport": "tcp"}}
    oid = s["object_id"]
    got = a.wait_for(lambda: _requests(read_trail(a.outer_audit), "request_unserved"), 30,
                     "the outer agent receives the request")
    outer = _requests(read_trail(a.outer_audit))
    assert [r["event"] for r in outer] == ["request_received", "request_unserved"]
    assert outer[0]["object_id"] == oid and outer[0]["verdict"] == "delivered"
    assert outer[0]["detail"]["operator"] == "alice" and outer[0]["detail"]["params"] == {"transport": "tcp"}
    assert got[0]["code"] == "unserved" and got[0]["object_id"] == oid
    # the reverse link's key came with the wire, recorded apart from the forward link's
    assert any(r["event"] == "reverse_key_accepted" for r in read_trail(a.outer_audit))
    assert not any(r["event"] == "key_accepted" for r in read_trail(a.outer_audit))
    # ... and the status shows it
    with ManagementClient(a.outer_socket) as c:
        lanes = c.get_status().lanes
    assert lanes["reverse"].counters["received"] == 1
    a.wait_for(lambda: ManagementClient(a.outer_socket).get_status().lanes["reverse"].counters["link_up"] == 1,
               20, "reverse link up on the outer agent")
    # the outer agent sends no reverse requests: asking it is a usage error, not a refusal
    r = subprocess.run([sys.executable, "-m", "ferry", "ask", "start_stream", CAMERA, "--operator", "alice",
                        "--socket", str(a.outer_socket)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "sends no reverse requests" in r.stderr, r.stderr
    a.stop()
    for d in (a.outer_audit, a.inner_audit):
        v = verify_dir(d)
        assert v.ok, v.reason


def test_refused_on_the_inner_with_its_reason_never_reaches_the_link(appliance_factory, tmp_path):
    a = _appliance(appliance_factory, tmp_path)
    add_reverse(a)
    a.start()
    cases = [
        (("ptz", CAMERA, "alice", f"cmd={ptz_cmd(0x01, h=10)}"), "content_limit"),   # not in the rule's requests
        (("start_stream", OTHER_CAMERA, "alice"), "unknown_device"),
        (("start_stream", CAMERA, "alice", "transport=sctp"), "bad_request"),
        (("start_stream", CAMERA, "alice", "url=rtsp://x"), "bad_request"),
        (("start_stream", CAMERA, "bad operator!"), "bad_request"),
    ]
    for args, code in cases:
        r = ask(a, *args)
        assert r.returncode == 1, (args, r.stdout, r.stderr)
        assert f"refused ({code}" in r.stdout, r.stdout
    r = ask(a, "start_stream", CAMERA, "alice", source="10.9.9.9")     # not an operator's workstation
    assert r.returncode == 1 and "refused (default_deny" in r.stdout, r.stdout
    r = ask(a, "start_stream", "123", "alice")
    assert r.returncode == 1 and "bad_request" in r.stdout
    r = ask(a, "start_stream", CAMERA, "alice", "novalue")
    assert r.returncode == 2 and "KEY=VALUE" in r.stderr
    refused = _requests(read_trail(a.inner_audit), "request_refused")
    assert [x["code"] for x in refused] == [c for _, c in cases] + ["default_deny", "bad_request"]
    assert all(x["verdict"] == "refused" and x["reason"] for x in refused)
    # one allowed request last: it crosses, and it alone
    assert ask(a, "stop_stream", CAMERA, "bob", "stream=s1").returncode == 0
    a.wait_for(lambda: _requests(read_trail(a.outer_audit), "request_unserved"), 30, "the allowed request")
    outer = _requests(read_trail(a.outer_audit))
    assert [r["event"] for r in outer] == ["request_received", "request_unserved"]
    assert outer[0]["detail"]["request"] == "stop_stream"


def test_a_flood_from_one_operator_is_cut_at_the_rate(appliance_factory, tmp_path):
    a = _appliance(appliance_factory, tmp_path, rate=(0.001, 3))
    add_reverse(a)
    a.start()
    with ManagementClient(a.inner_socket) as c:
        replies = [c.ask("start_stream", CAMERA, {}, "mallory", address="127.0.0.1") for _ in range(12)]
        # another operator, but the device's bucket is empty
        other = c.ask("catalog_query", CAMERA, {}, "alice", address="127.0.0.1")
    assert [(r.accepted, r.code) for r in replies] == [(True, "")] * 3 + [(False, "rate_limited")] * 9, replies[0]
    assert {r.code for r in replies[3:]} == {"rate_limited"}
    assert "operator 'mallory'" in replies[3].reason
    assert not other.accepted and other.code == "rate_limited" and f"device {CAMERA}" in other.reason
    inner = read_trail(a.inner_audit)
    assert len(_requests(inner, "request_sent")) == 3
    assert [r["code"] for r in _requests(inner, "request_refused")] == ["rate_limited"] * 10
    a.wait_for(lambda: len(_requests(read_trail(a.outer_audit), "request_unserved")) == 3, 30, "3 requests")
    time.sleep(1.0)
    assert len(_requests(read_trail(a.outer_audit), "request_received")) == 3


def test_a_policy_without_reverse_rules_refuses_everything(appliance_factory, tmp_path):
    a = _appliance(appliance_factory, tmp_path, rules=False)
    add_reverse(a)
    a.start()
    for request, params in (("start_stream", ()), ("stop_stream", ("stream=s1",)), ("catalog_query", ())):
        r = ask(a, request, CAMERA, "alice", *params)
        assert r.returncode == 1 and "refused (default_deny, rule default-deny)" in r.stdout, r.stdout
    assert len(_requests(read_trail(a.inner_audit), "request_refused")) == 3
    # the reverse link itself is up (heartbeats): only the requests are refused
    a.wait_for(lambda: any(r["event"] == "reverse_link_up" for r in read_trail(a.outer_audit)), 30,
               "reverse link up")
    assert _requests(read_trail(a.outer_audit)) == []


def _forge(a, obj: ferry_pb2.CanonicalObject, sender: LinkSender) -> None:
    """A compromised inner host: its own reverse key seals what its agent would have refused."""
    now = time.monotonic()
    sender.submit(obj.object_id, obj.SerializeToString(), now, time.time())
    sender.flush(now, time.time())
    out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for d in sender.datagrams_to_send(now):
        out.sendto(d, ("127.0.0.1", a.reverse_port))
        time.sleep(0.001)
    out.close()


def test_the_outer_refuses_what_the_inner_should_have_refused(appliance_factory, tmp_path):
    a = _appliance(appliance_factory, tmp_path)
    add_reverse(a)
    a.start()
    key = load_private_key(a.work / "keys" / "inner-reverse.key")
    peer = load_public_key(a.work / "keys" / "outer-reverse.pub")
    plan = load_plan(a.work / "policy")
    sender = LinkSender(outer_key=key, inner_public=peer, policy_hash=plan.hash, name="forger",
                        now=time.monotonic(), wall=time.time())

    def request(oid: int, req: str, device: str, operator: str = "eve", address: str = "127.0.0.1",
                **params: str) -> ferry_pb2.CanonicalObject:
        o = ferry_pb2.CanonicalObject(object_id=oid, lane="reverse", destination="outer-platform",
                                      created=time.time())
        o.source.address = address
        o.reverse.request, o.reverse.device_id, o.reverse.operator = req, device, operator
        o.reverse.params.update(params)
        return o

    forged = [request(1, "ptz", CAMERA, cmd=ptz_cmd(0x02, h=5)),            # not in the rule's requests
              request(2, "start_stream", OTHER_CAMERA),                     # a device the policy names not
              request(3, "start_stream", CAMERA, address="10.9.9.9"),       # not from the operators
              request(4, "start_stream", CAMERA, url="rtsp://evil"),         # outside the schema
              request(5, "reboot", CAMERA)]
    for o in forged:
        _forge(a, o, sender)
    want = ["content_limit", "unknown_device", "default_deny", "bad_request", "bad_request"]
    got = a.wait_for(lambda: (r := _requests(read_trail(a.outer_audit), "request_refused")) and len(r) >= 5 and r,
                     30, "the outer agent refuses the forged requests")
    assert [r["code"] for r in got] == want
    assert [r["object_id"] for r in got] == [1, 2, 3, 4, 5]
    assert not _requests(read_trail(a.outer_audit), "request_received")
    # the same object replayed is refused as a replay; an allowed one crosses once
    _forge(a, request(6, "start_stream", CAMERA), sender)
    a.wait_for(lambda: _requests(read_trail(a.outer_audit), "request_unserved"), 30, "the allowed forged request")
    # a replay of it, even under a new epoch the forger starts, is dropped by the wire (the object
    # ID was reassembled already: stale_fragment); the lane would refuse it too (tests/lanes)
    again = LinkSender(outer_key=key, inner_public=peer, policy_hash=plan.hash, name="forger",
                       now=time.monotonic(), wall=time.time(), epoch=sender.epoch + 1)
    _forge(a, request(6, "start_stream", CAMERA), again)
    a.wait_for(lambda: any(r["event"] == "reverse_datagrams_dropped" and r["code"] == "stale_fragment"
                           for r in read_trail(a.outer_audit)), 30, "the replay dropped")
    assert len(_requests(read_trail(a.outer_audit), "request_received")) == 1


@pytest.mark.parametrize("fault", ["dead_port", "wrong_key"])
def test_files_keep_crossing_whatever_the_reverse_link(appliance_factory, tmp_path, fault):
    """Item 4: the forward lanes never depend on the reverse one."""
    a = _appliance(appliance_factory, tmp_path)
    if fault == "dead_port":
        add_reverse(a, peer_port=free_udp_port())          # nobody listens there
    else:
        add_reverse(a)
        # the inner seals for a key the outer does not hold: every announcement is refused there
        (a.work / "keys" / "outer-reverse.pub").write_bytes((a.work / "keys" / "outer.pub").read_bytes())
    a.start()
    for i in range(3):
        assert ask(a, "start_stream", CAMERA, "alice").returncode == 0
    names = [f"doc{i}.pdf" for i in range(5)]
    for n in names:
        a.drop(n, PDF)
    a.wait_for(lambda: all(a.outcomes().get(n) == "delivered" for n in names), 60, "files delivered")
    for n in names:
        assert (a.inner_spool / n).read_bytes() == PDF
    assert not _requests(read_trail(a.outer_audit))
    if fault == "wrong_key":
        a.wait_for(lambda: any(r["event"] == "reverse_announcement_refused" for r in read_trail(a.outer_audit)),
                   30, "the outer refuses the reverse announcements")
    a.stop()
    report = reconcile(read_trail(a.outer_audit), read_trail(a.inner_audit))
    assert not report.unaccounted and len(report.delivered) == len(names)
    # the requests never reached the outer agent: reconcile names each, it does not pass them over
    assert len(report.reverse_unaccounted) == report.reverse_sent == 3 and not report.ok


def test_requests_cross_again_after_either_agent_is_killed(appliance_factory, tmp_path):
    a = _appliance(appliance_factory, tmp_path)
    add_reverse(a)
    a.start()

    def crosses(n: int) -> None:
        assert ask(a, "start_stream", CAMERA, f"op{n}").returncode == 0
        a.wait_for(lambda: len(_requests(read_trail(a.outer_audit), "request_received")) == n, 60,
                   f"request {n} on the outer agent")

    crosses(1)
    a.kill("inner")                     # kill -9: the reverse sender starts again with a new epoch
    a.start_role("inner")
    crosses(2)
    a.kill("outer")                     # kill -9: the reverse receiver starts again with no state
    a.start_role("outer")
    crosses(3)
    a.drop("after.pdf", PDF)
    a.wait_for(lambda: a.outcomes().get("after.pdf") == "delivered", 60, "a file after the restarts")
    ids = [r["object_id"] for r in _requests(read_trail(a.outer_audit), "request_received")]
    assert len(set(ids)) == 3


@pytest.mark.skipif(not shutil.which("ffmpeg"), reason="ffmpeg not installed (the test camera's source)")
def test_video_keeps_crossing_with_the_reverse_link_dead(appliance_factory, tmp_path):
    """Item 4, video: a camera's stream crosses whole while the reverse ferry sends into a dead port."""
    a = _appliance(appliance_factory, tmp_path)
    add_reverse(a, peer_port=free_udp_port())
    port = free_udp_port()
    a.append_config("outer", f"""
[[video]]
name = "cam1"
transport = "udp"
listen = "127.0.0.1:{port}"
device_id = "{CAMERA}"
destination = "police-vms"
""")
    a.append_config("inner", f"""
[[video_output]]
destination = "police-vms"
transport = "file"
path = "{a.work / 'recordings' / '{stream}.ps'}"
""")
    src = gb28181.make_source(None, "h264", seconds=4)
    camera = gb28181.Camera(gb28181.ps_packets(src, "h264", ssrc=0x0BEBC201), ("127.0.0.1", port),
                            transport="udp", realtime=4.0)
    a.start()
    assert ask(a, "start_stream", CAMERA, "alice").returncode == 0     # into the dead port
    camera.start()
    camera.join(60)
    a.wait_for(lambda: [r for r in read_trail(a.outer_audit) if r["event"] == "stream_ended"], 30, "outer end")
    a.stop()                                         # ends the inner stream too
    outer = [r for r in read_trail(a.outer_audit) if r["event"] == "stream_ended"][0]["detail"]
    inner = [r for r in read_trail(a.inner_audit) if r["event"] == "stream_ended"][0]["detail"]
    assert outer["pictures_out"] == inner["pictures_out"] == 100, (outer, inner)
    report = reconcile(read_trail(a.outer_audit), read_trail(a.inner_audit))
    assert not report.unaccounted and not report.streams_not_reconciled
    assert len(report.reverse_unaccounted) == report.reverse_sent == 1     # the request into the dead port
