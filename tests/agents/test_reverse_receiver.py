"""The outer agent's reverse receiver: handlers registered per request; unserved and failed requests
recorded with their codes; a private reverse key others may read stops the start."""
from __future__ import annotations

import pytest

from appliance import free_udp_port
from ferry.agents.reverse_receiver import ReverseReceiver
from ferry.config import ConfigError, OuterReverse
from ferry.crypto.keys import init_keys
from ferry.lanes.reverse import ReverseAction
from ferry.policy import load_plan
from reverse import CAMERA, reverse_policy


@pytest.fixture
def made(tmp_path):
    init_keys(tmp_path / "keys", ("outer-reverse", "inner-reverse"))
    plan = load_plan(reverse_policy(tmp_path / "policy"))
    cfg = OuterReverse(listen_host="127.0.0.1", listen_port=free_udp_port(),
                       key=str(tmp_path / "keys" / "outer-reverse.key"),
                       peer_public=str(tmp_path / "keys" / "inner-reverse.pub"))
    records: list[dict] = []
    r = ReverseReceiver(cfg, lambda: plan, records.append)
    yield r, records, cfg
    r.sock.close()


ACTION = ReverseAction("start_stream", CAMERA, {"transport": "udp"}, "alice", 42, "outer-platform")


def test_no_handler_is_unserved(made):
    r, records, _ = made
    r.serve(ACTION)
    assert [(x["event"], x["verdict"], x["code"], x["object_id"]) for x in records] == \
        [("request_unserved", "refused", "unserved", 42)]


def test_a_registered_handler_serves_its_request_only(made):
    r, records, _ = made
    got: list[ReverseAction] = []
    r.register("start_stream", lambda a: got.append(a) or "inviting the camera")
    r.serve(ACTION)
    r.serve(ReverseAction("catalog_query", CAMERA, {}, "alice", 43))
    assert got == [ACTION]
    assert [(x["event"], x.get("code")) for x in records] == [("request_served", None),
                                                              ("request_unserved", "unserved")]
    assert records[0]["reason"].endswith("inviting the camera")
    assert r.counts == {"served": 1, "unserved": 1, "handler_failed": 0}


def test_a_failing_handler_costs_its_request_only(made):
    r, records, _ = made

    def broken(a: ReverseAction) -> None:
        raise ValueError("camera said no")
    r.register("start_stream", broken)
    r.serve(ACTION)
    assert records[0]["event"] == "request_unserved" and records[0]["code"] == "handler_failed"
    assert "camera said no" in records[0]["reason"]


def test_the_socket_only_receives(made):
    r, _, _ = made
    assert r.sock.check_receive_only()


def test_a_reverse_key_others_may_read_stops_the_start(made, tmp_path):
    _, _, cfg = made
    (tmp_path / "keys" / "outer-reverse.key").chmod(0o644)
    with pytest.raises(ConfigError, match=r"\[reverse\] key.*chmod 600"):
        ReverseReceiver(cfg, lambda: None, print)     # type: ignore[arg-type,return-value]


def test_a_port_in_use_names_the_key(made):
    r, _, cfg = made
    with pytest.raises(ConfigError, match=r"\[reverse\] listen_host/listen_port 127\.0\.0\.1:\d+: cannot listen"):
        ReverseReceiver(cfg, lambda: None, print)     # type: ignore[arg-type,return-value]
