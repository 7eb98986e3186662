"""Hot reload of a signed policy under traffic, with real agent processes on loopback."""
from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time

import pytest

from appliance import check_trails, read_trail
from ferry.crypto import SM2PrivateKey
from ferry.mgmt.client import ManagementClient
from ferry.policy import load_plan
from ferry.policy.bundle import make_bundle

pytestmark = pytest.mark.e2e

PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\n%%EOF\n"
V1_TYPES = "media_types: [application/pdf, image/png, image/jpeg, text/plain]"
V2_TYPES = "media_types: [application/pdf]"
FEED_MAX = 600          # pairs of files the feeder drops at most (60 s of traffic)


def _policy(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ferry", "policy", *args], capture_output=True, text=True,
                          timeout=120)


def _running_hash(sock) -> bytes:
    with ManagementClient(sock) as c:
        return c.get_policy().hash


def test_reload_under_traffic(appliance_factory):
    a = appliance_factory(management=True).start()
    v1 = load_plan(a.work / "policy")
    v2_dir = a.work / "policy-v2"
    shutil.copytree(a.work / "policy", v2_dir)
    text = (v2_dir / "policy.yaml").read_text()
    assert V1_TYPES in text
    (v2_dir / "policy.yaml").write_text(text.replace(V1_TYPES, V2_TYPES))
    v2 = load_plan(v2_dir)
    bundle = a.work / "v2.ferrypolicy"
    r = _policy("sign", str(v2_dir), "--key", str(a.admin_key), "-o", str(bundle))
    assert r.returncode == 0, r.stderr
    assert _running_hash(a.inner_socket) == _running_hash(a.outer_socket) == v1.hash

    dropped: dict[str, tuple[float, bytes]] = {}
    stop = threading.Event()

    def feeder():
        for i in range(FEED_MAX):                         # a PDF and a text file every 0.1 s until told to stop
            pad = b"%" + bytes([65 + i % 26]) * (1000 + i) + b"\n"     # a comment inside the PDF, before %%EOF
            for name, content in ((f"doc{i:03d}.pdf", PDF[:9] + pad + PDF[9:]),
                                  (f"note{i:03d}.txt", f"note {i}\n".encode() * 50)):
                dropped[name] = (time.monotonic(), content)
                a.drop(name, content)
            if stop.wait(0.1):                            # the traffic's pace (scenario), not a wait for an event
                return

    def texts_dropped(since: float = 0.0) -> set[str]:
        return {n for n, (t0, _) in list(dropped.items()) if n.endswith(".txt") and t0 > since}

    t = threading.Thread(target=feeder)
    t.start()
    try:
        # traffic flows under v1: five text files crossed before the reload begins
        a.wait_for(lambda: sum(a.outcomes().get(n) == "delivered" for n in texts_dropped()) >= 5, 60,
                   "five text files delivered under v1")
        delivered_before = {n for n, o in a.outcomes().items() if o == "delivered" and n.endswith(".txt")}
        t_begin = time.monotonic()   # (for the failure message)
        # inner first, then outer. In between, objects the outer still seals under v1 reach the inner
        # after its switch (taken within the grace period, re-checked under v2): wait until that
        # happened once, so the switch window is exercised, then switch the outer.
        r_inner = _policy("apply", str(bundle), "--socket", str(a.inner_socket))
        assert r_inner.returncode == 0, r_inner.stdout + r_inner.stderr
        a.wait_for(lambda: any(r["event"] == "object_refused" for r in read_trail(a.inner_audit)), 30,
                   "the inner agent refusing a text file the outer sealed under v1")
        r_outer = _policy("apply", str(bundle), "--socket", str(a.outer_socket))
        t_end = time.monotonic()
        # traffic goes on after the reload until five more text files were dropped under v2
        a.wait_for(lambda: len(texts_dropped(since=t_end)) >= 5, 60, "five text files dropped after the reload")
    finally:
        stop.set()
        t.join()
    for r in (r_inner, r_outer):
        assert r.returncode == 0, r.stdout + r.stderr
        assert f"-> {v2.hash.hex()}" in r.stdout

    a.wait_for(lambda: set(dropped) <= set(a.outcomes()), 60, "every file accounted for")
    out = a.outcomes()
    pdfs = {n for n in dropped if n.endswith(".pdf")}
    texts = {n for n in dropped if n.endswith(".txt")}
    assert {n: out[n] for n in pdfs} == {n: "delivered" for n in pdfs}        # none lost, none refused
    for n in pdfs:
        assert (a.inner_spool / n).read_bytes() == dropped[n][1]
    before = delivered_before                     # crossed under v1, before the reload began
    after = texts_dropped(since=t_end)
    assert len(before) >= 5 and len(after) >= 5, (t_begin, t_end)
    assert {out[n] for n in before} == {"delivered"}
    assert {out[n] for n in after} == {"refused"}
    assert {out[n] for n in texts} <= {"delivered", "refused"}                # in the switch: either, never lost

    outer = read_trail(a.outer_audit)
    inner = read_trail(a.inner_audit)
    refusals = [r for r in outer + inner if r["event"] == "object_refused"]
    by_name = {}
    for rec in outer:
        if rec["event"] == "object_sent":
            by_name[rec["object_id"]] = rec["detail"]["name"]
    for rec in refusals:
        name = rec.get("detail", {}).get("name") or by_name.get(rec.get("object_id"))
        assert name in texts
        assert rec["rule"] == "files-documents" and "text/plain" in rec["reason"], rec
        assert rec["policy_hash"] == v2.hash.hex()
    assert {r["detail"]["name"] for r in outer if r["event"] == "object_refused"} >= after
    # texts the outer allowed under v1 but the inner got after its own switch: refused there
    assert [r for r in inner if r["event"] == "object_refused"], "the switch window was not exercised"

    signer = SM2PrivateKey.from_pem(a.admin_key.read_bytes()).public_key().key_id().hex()
    for trail in (outer, inner):
        [rec] = [r for r in trail if r["event"] == "policy_applied"]
        assert rec["detail"]["old_hash"] == v1.hash.hex() and rec["detail"]["new_hash"] == v2.hash.hex()
        assert rec["detail"]["signer_key_id"] == signer
    # inner first, then outer: the grace period means no mismatch alarm
    assert not [r for r in inner if r["event"] == "policy_mismatch"]

    # an unsigned bundle and one signed by another key are refused; v2 keeps running
    unsigned = make_bundle({"policy.yaml": (a.work / "policy" / "policy.yaml").read_bytes()},
                           SM2PrivateKey.generate(), time.time())
    unsigned.signature = b""
    (a.work / "unsigned.ferrypolicy").write_bytes(unsigned.SerializeToString())
    other_key = a.work / "other.key"
    other_key.write_bytes(SM2PrivateKey.generate().to_pem())
    r = _policy("sign", str(a.work / "policy"), "--key", str(other_key), "-o", str(a.work / "other.ferrypolicy"))
    assert r.returncode == 0, r.stderr
    for name, code in (("unsigned", "unsigned"), ("other", "unknown_signer")):
        r = _policy("apply", str(a.work / f"{name}.ferrypolicy"), "--socket", str(a.inner_socket),
                    "--socket", str(a.outer_socket))
        assert r.returncode == 1 and code in r.stderr, r.stdout + r.stderr
    assert _running_hash(a.inner_socket) == _running_hash(a.outer_socket) == v2.hash
    refused = [r for r in read_trail(a.inner_audit) if r["event"] == "policy_refused"]
    assert [r["detail"]["code"] for r in refused] == ["unsigned", "unknown_signer"]
    assert not [r for r in read_trail(a.outer_audit) if r["event"] == "policy_refused"]   # stopped at the inner

    a.stop()
    check_trails(a.outer_audit, a.inner_audit, timeout=120)


def test_outer_alone_reloaded_is_a_mismatch_on_the_inner(appliance_factory):
    """Applied to the outer agent only: the inner refuses its objects and raises an alarm."""
    a = appliance_factory(management=True).start()
    v2_dir = a.work / "policy-v2"
    shutil.copytree(a.work / "policy", v2_dir)
    (v2_dir / "policy.yaml").write_text((v2_dir / "policy.yaml").read_text().replace(V1_TYPES, V2_TYPES))
    bundle = a.work / "v2.ferrypolicy"
    assert _policy("sign", str(v2_dir), "--key", str(a.admin_key), "-o", str(bundle)).returncode == 0
    r = _policy("apply", str(bundle), "--socket", str(a.outer_socket))
    assert r.returncode == 0, r.stderr
    a.wait_for(lambda: any(r["event"] == "policy_applied" for r in read_trail(a.outer_audit)), 10,
               "the outer agent's policy_applied record")
    a.drop("late.pdf", PDF)
    a.wait_for(lambda: "late.pdf" in a.outcomes(), 30, "late.pdf")
    assert a.outcomes()["late.pdf"] == "refused"
    inner = read_trail(a.inner_audit)
    assert any(r["event"] == "policy_mismatch" and r["verdict"] == "alarm" for r in inner)
    [rec] = [r for r in inner if r["event"] == "object_refused"]
    assert rec["rule"] == "policy-hash"
