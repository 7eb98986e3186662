"""The audit trail's bound under attack: a flood of hostile datagrams of several kinds at a real
inner agent writes at most `[audit] refusals_per_reason_per_hour` link refusal records per
(event, code); the rest are counted and summed up in one `audit_suppressed` record, while
genuine files sent meanwhile are still delivered and each one recorded."""
from __future__ import annotations

import json
import os
import socket
import time
from collections import Counter

import pytest

from appliance import Appliance, read_trail
from ferry import limits
from ferry.agents.inner import InnerAgent
from ferry.audit import reconcile, verify_dir
from ferry.config import ConfigError, InnerConfig, load_config
from ferry.crypto import SM2PrivateKey
from ferry.crypto.keys import load_public_key
from ferry.reasons import Reason
from ferry.wire import LinkSender
from ferry.wire.frame import block_header, build_symbols

pytestmark = pytest.mark.e2e

CAP = 2                       # records per (event, code) per hour, lowered for the test
FLOOD = 6.0                   # seconds of flood: several DatagramsDropped per reason (one a second)
CAPPED = ("datagrams_dropped", "block_refused", "announcement_refused")
PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\n%%EOF\n"


def _garbage(n: int) -> bytes:
    """Random bytes that are not a ferry datagram (first byte is not the magic's): bad_magic."""
    d = os.urandom(n)
    return (b"\x00" + d[1:]) if d[0] == 0xFE else d


def _wrong_magic(n: int) -> bytes:
    """A well-formed symbol datagram but for its magic (b"\\xfeS"): bad_magic."""
    d = build_symbols(block_header(1, n, 1, 1, 64), [os.urandom(64)], os.urandom(16))[0]
    return b"\xfeS" + d[2:]


def _records(a, *events):
    return [r for r in read_trail(a.inner_audit) if r["event"] in events]


def test_a_flood_of_refusals_is_capped_per_reason_and_summarized(appliance_factory):
    a = appliance_factory()
    a.append_config("inner", f"[audit]\nrefusals_per_reason_per_hour = {CAP}")
    a.start()
    a.wait_for(lambda: _records(a, "key_accepted"), 10, "the real outer agent's key")
    current = _records(a, "key_accepted")[0]["epoch"]
    now = time.time()
    inner_pub = load_public_key(a.work / "keys" / "inner.pub")
    # forged announcements: impostors without the outer key, in this epoch and the next ones
    announcements = []
    for i in range(4):
        impostor = LinkSender(outer_key=SM2PrivateKey.generate(), inner_public=inner_pub, policy_hash=bytes(32),
                              name=f"impostor-{i}", now=now, epoch=current + i)
        announcements += [d for d in impostor.datagrams_to_send(now) if d[3] == 2]
    assert announcements
    # genuine files, more of them than the cap: each must still be delivered and recorded
    genuine = {f"doc-{i}.txt": f"genuine file {i}\n".encode() * 50 for i in range(CAP + 4)}
    refused = {f"tool-{i}.pdf": b"MZ\x90\x00" + os.urandom(2000) for i in range(CAP + 1)}   # refused by policy
    files = list(genuine.items()) + list(refused.items())
    sent_bad_magic = 0
    block_no = 1000            # forged blocks far ahead of the genuine ones (within the replay window)
    start = time.monotonic()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        rounds = 0
        while time.monotonic() - start < FLOOD:
            if rounds % 40 == 0 and files:
                a.drop(*files.pop())
            batch = [_garbage(n) for n in (1, 3, 40, 700, 1400)] + [_wrong_magic(rounds), _wrong_magic(rounds + 1)]
            sent_bad_magic += len(batch)
            # forged symbol datagrams of the current epoch (each a complete block, k=1): their
            # authenticators do not verify (wire v2), so they are dropped one by one
            batch += build_symbols(block_header(current, block_no, 1, 1, 64), [os.urandom(64)], os.urandom(16))
            batch += build_symbols(block_header(current, block_no + 1, 1, 1, 64), [os.urandom(64)], os.urandom(16))
            block_no += 2
            batch.append(announcements[rounds % len(announcements)])
            for d in batch:
                s.sendto(d, ("127.0.0.1", a.port))
            rounds += 1
            time.sleep(0.01)     # the send pace (scenario): ~1000 datagrams/s, which the agent keeps up with
    for f in files:
        a.drop(*f)
    # a last genuine file after the flood: once it is delivered, the agent has read every hostile
    # datagram before it (one socket, in order)
    genuine["last.txt"] = b"sent after the flood\n"
    a.drop("last.txt", genuine["last.txt"])
    a.wait_for(lambda: set(genuine) | set(refused) <= set(a.outcomes()), 30, "every genuine file accounted for")
    # the receiver reports a reason's last drops one DROP_EVENT_INTERVAL after the previous report,
    # and nothing in the trail shows when (those records are withheld by design): time is the scenario
    time.sleep(2.5)
    a.stop()

    inner = read_trail(a.inner_audit)
    capped = [r for r in inner if r["event"] in CAPPED]
    per_reason = Counter((r["event"], r["code"]) for r in capped)
    assert per_reason, "the flood left no refusal record"
    # 1. the trail's growth is bounded: at most CAP records per (event, code)
    assert max(per_reason.values()) <= CAP, per_reason
    # 2. one record says how many were not written, per reason, with the counts they stood for
    summaries = [r for r in inner if r["event"] == "audit_suppressed"]
    assert len(summaries) == 1, summaries
    summary = summaries[0]
    assert summary["verdict"] == "info" and summary["detail"]["cap"] == CAP
    withheld = {(w["event"], w["code"]): w for w in summary["detail"]["withheld"]}
    assert all(w["records"] >= 1 and w["count"] >= w["records"] for w in withheld.values())
    assert all(per_reason[k] == CAP for k in withheld)       # only a reason at its cap is withheld
    assert ("datagrams_dropped", "bad_magic") in withheld
    assert ("datagrams_dropped", "bad_symbol_auth") in withheld   # 200 forged symbols/s
    # counts conserved: every bad_magic datagram sent is in a written record's count or in the summary
    magic = ("datagrams_dropped", Reason.BAD_MAGIC.value)
    written = sum(r["detail"]["count"] for r in capped if (r["event"], r["code"]) == magic)
    assert written + withheld[magic]["count"] == sent_bad_magic
    # the summary is written before the agent's stop record, and lands within the chain
    events = [r["event"] for r in inner]
    assert events.index("audit_suppressed") < events.index("agent_stopped")
    # 3. real objects are not capped: every genuine file delivered and recorded, every refusal recorded
    out = a.outcomes()
    assert {n for n in genuine if out[n] == "delivered"} == set(genuine)
    assert {n for n in refused if out[n] == "refused"} == set(refused)
    for name, content in genuine.items():
        assert (a.inner_spool / name).read_bytes() == content
    assert len([r for r in inner if r["event"] == "object_delivered"]) == len(genuine) > CAP
    # 4. the trails with the new record verify and reconcile
    for d in (a.outer_audit, a.inner_audit):
        v = verify_dir(d)
        assert v.ok, v.reason
    report = reconcile(read_trail(a.outer_audit), inner)
    assert report.ok and len(report.delivered) == len(genuine)
    lines = [(json.loads(x)["event"], len(x) + 1) for x in (a.inner_audit / "audit.jsonl").read_bytes().splitlines()]
    sizes = {e: max(n for ev, n in lines if ev == e) for e in {r["event"] for r in capped} | {"audit_suppressed"}}
    print(f"offered={sum(per_reason.values()) + sum(w['records'] for w in withheld.values())} "
          f"written={sum(per_reason.values())} reasons={len(per_reason)} line_bytes_max={sizes} "
          f"capped_bytes={sum(n for ev, n in lines if ev in CAPPED)} trail_bytes={sum(n for _, n in lines)}")


def test_the_inner_agents_timer_writes_the_summary_when_the_hour_ends(tmp_path):
    """In process: the inner agent's own timer (on_timer), not a thread or a stop, writes the summary."""
    a = Appliance(tmp_path)
    a.append_config("inner", "[audit]\nrefusals_per_reason_per_hour = 1")
    agent = InnerAgent(load_config(a.work / "inner.toml", InnerConfig))
    try:
        for n in (5, 6, 7):
            agent.audit(event="datagrams_dropped", verdict="refused", code=Reason.BAD_LENGTH, reason="bad_length",
                        detail={"count": n})
        agent.audit(event="block_refused", verdict="refused", code=Reason.AUTH, reason="auth", epoch=1, blocks=[2])
        now = time.monotonic()
        assert agent.on_timer(now, time.time()) <= limits.INNER_TIMER_MAX
        assert not _records(a, "audit_suppressed")
        end = agent.records.budget.next_timer()
        assert end is not None and end - now > limits.AUDIT_REFUSAL_WINDOW - 60
        agent.on_timer(end, time.time())
        [s] = _records(a, "audit_suppressed")
        assert s["detail"]["withheld"] == [{"event": "datagrams_dropped", "code": "bad_length", "records": 2,
                                            "count": 13}]
        assert [r["detail"]["count"] for r in _records(a, "datagrams_dropped")] == [5]
        assert len(_records(a, "block_refused")) == 1
    finally:
        agent.sock.close()
        agent.id.audit.close(time.time())


def test_the_cap_is_an_inner_config_key_checked_strictly(tmp_path):
    a = Appliance(tmp_path)
    assert load_config(a.work / "inner.toml", InnerConfig).audit.refusals_per_reason_per_hour == \
        limits.AUDIT_REFUSALS_PER_REASON_PER_HOUR
    for bad in ("-1", '"60"', str(limits.AUDIT_REFUSALS_PER_REASON_PER_HOUR_MAX + 1)):
        (a.work / "bad.toml").write_text((a.work / "inner.toml").read_text() +
                                         f"[audit]\nrefusals_per_reason_per_hour = {bad}\n")
        with pytest.raises(ConfigError, match="audit.refusals_per_reason_per_hour"):
            load_config(a.work / "bad.toml", InnerConfig)
