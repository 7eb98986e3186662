"""The outer agent's reverse receiver: handlers registered per request; unserved and failed requests
recorded with their codes; a private reverse key others may read stops the start."""
from __future__ import annotations

import json

import pytest

from appliance import free_udp_port
from ferry import limits
from ferry.agents import reverse_receiver
from ferry.agents.reverse_receiver import ReverseReceiver
from ferry.config import ConfigError, OuterReverse
from ferry.crypto.keys import init_keys
from ferry.lanes.reverse import ReverseAction
from ferry.policy import load_plan
from ferry.reasons import Reason
from ferry.wire import events as ev
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


def test_the_reverse_links_refusals_are_capped_and_named_apart(made):
    """A flood of bad blocks on the reverse link: as on the forward link, at most
    AUDIT_REFUSALS_PER_REASON_PER_HOUR records per (event, code), then one summary; all reverse_*."""
    r, records, _ = made
    events = [ev.BlockRefused(5, n, Reason.AUTH) for n in range(limits.AUDIT_REFUSALS_PER_REASON_PER_HOUR + 40)]
    events.append(ev.LinkUp())
    feed = iter(events)
    r.receiver.next_event = lambda: next(feed, None)     # type: ignore[method-assign]
    r.drain(0.0, 1_800_000_000.0)
    names = [x["event"] for x in records]
    assert names.count("reverse_block_refused") == limits.AUDIT_REFUSALS_PER_REASON_PER_HOUR
    assert names[-1] == "reverse_link_up" and r.link.state == "up"
    assert all(x["reason"].startswith("reverse link: ") for x in records)
    assert not any(n in ("block_refused", "link_up") for n in names)
    summary = [_reverse(x) for x in r.budget.close()]
    assert [x["event"] for x in summary] == ["reverse_audit_suppressed"]
    assert "40" in json.dumps(summary[0])


def _reverse(fields: dict) -> dict:
    return reverse_receiver._reverse_record(fields)
