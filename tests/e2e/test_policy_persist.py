"""Issue 11, items 1 and 6 (event loop): a policy applied at run time survives restarts (kill -9),
an older bundle is refused unless the administrator asks for a rollback, a stored bundle that no
longer verifies stops the agent, and a large policy compiles off the agent's event loop."""
from __future__ import annotations

import shutil
import struct
import subprocess
import sys
import threading
import time
import zlib

import pytest
import yaml

from appliance import read_trail
from ferry.mgmt.client import ManagementClient
from ferry.policy import compile_policy, load_plan, parse_policy, policy_hash
from ferry.policy.bundle import parse_bundle

pytestmark = pytest.mark.e2e

PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\n%%EOF\n"
V1_TYPES = "media_types: [application/pdf, image/png, image/jpeg, text/plain]"
B_TYPES = "media_types: [application/pdf]"
STORED = "policy.ferrypolicy"


def _png() -> bytes:
    """A complete, valid 1x1 grey PNG (signature, IHDR, IDAT, IEND)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00\x80")) + chunk(b"IEND", b""))


PNG = _png()


def _ferry(*args, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ferry", *args], capture_output=True, text=True, timeout=timeout)


def _sign(a, directory, name: str):
    out = a.work / f"{name}.ferrypolicy"
    r = _ferry("policy", "sign", str(directory), "--key", str(a.admin_key), "-o", str(out))
    assert r.returncode == 0, r.stdout + r.stderr
    return out


def _apply(a, bundle, *extra, roles=("inner", "outer")) -> subprocess.CompletedProcess:
    socks = []
    for role in roles:
        socks += ["--socket", str(a.inner_socket if role == "inner" else a.outer_socket)]
    return _ferry("policy", "apply", str(bundle), *socks, *extra)


def _policy_b(a):
    """Bundle B: the demo policy tightened to PDF only (a PNG is refused)."""
    d = a.work / "policy-b"
    shutil.copytree(a.work / "policy", d)
    text = (d / "policy.yaml").read_text()
    assert V1_TYPES in text
    (d / "policy.yaml").write_text(text.replace(V1_TYPES, B_TYPES))
    return d


def _info(sock):
    with ManagementClient(sock) as c:
        return c.get_policy()


def _outcome(a, name: str, content: bytes, timeout: float = 60) -> str:
    a.drop(name, content)
    a.wait_for(lambda: name in a.outcomes(), timeout, name)
    return a.outcomes()[name]


def test_applied_bundle_survives_restarts(appliance_factory):
    a = appliance_factory(management=True).start()
    v1 = load_plan(a.work / "policy")
    b_dir = _policy_b(a)
    b = load_plan(b_dir)
    bundle = _sign(a, b_dir, "b")
    r = _apply(a, bundle)
    assert r.returncode == 0, r.stdout + r.stderr
    assert _outcome(a, "before.png", PNG) == "refused"

    # one agent alone restarted (kill -9): it comes back on B, not on the folder; the lane keeps working
    a.kill("inner")
    a.start_role("inner")
    assert _info(a.inner_socket).hash == b.hash
    assert _outcome(a, "one.pdf", PDF) == "delivered"
    assert not [r for r in read_trail(a.inner_audit) if r["event"] == "policy_mismatch"]

    # both restarted (kill -9): B still rules, the folder's older policy does not come back
    a.kill("outer")
    a.kill("inner")
    a.start_role("inner")
    a.start_role("outer")
    for sock in (a.inner_socket, a.outer_socket):
        info = _info(sock)
        assert info.hash == b.hash != v1.hash
        assert info.source == "stored" and info.signed_at > 0
    assert _outcome(a, "after.png", PNG) == "refused"
    assert _outcome(a, "after.pdf", PDF) == "delivered"
    assert not (a.inner_spool / "after.png").exists()
    for trail in (a.outer_audit, a.inner_audit):
        restored = [r for r in read_trail(trail) if r["event"] == "policy_restored"]
        assert len(restored) == (2 if trail == a.inner_audit else 1)
        assert restored[-1]["detail"]["new_hash"] == b.hash.hex()
        assert restored[-1]["policy_hash"] == b.hash.hex()
    assert not [r for r in a.trails() if r["event"] == "policy_mismatch"]

    st = _ferry("policy", "status", "--socket", str(a.outer_socket))
    assert st.returncode == 0 and "source stored" in st.stdout and "signed 20" in st.stdout, st.stdout


def test_older_bundle_refused_unless_rollback(appliance_factory):
    a = appliance_factory(management=True).start()
    v1 = load_plan(a.work / "policy")
    older = _sign(a, a.work / "policy", "a")          # A: the folder's policy, signed first
    b_dir = _policy_b(a)
    b = load_plan(b_dir)
    newer = _sign(a, b_dir, "b")                       # B: signed after A
    assert _apply(a, newer).returncode == 0

    r = _apply(a, older)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "older_bundle" in r.stderr and "--rollback" in r.stderr, r.stderr
    [rec] = [x for x in read_trail(a.inner_audit) if x["event"] == "policy_refused"]
    assert rec["code"] == "older_bundle" and rec["verdict"] == "refused"
    assert _info(a.inner_socket).hash == _info(a.outer_socket).hash == b.hash

    # the same bundle again is not a rollback
    again = _apply(a, newer)
    assert again.returncode == 0 and "already running" in again.stdout, again.stdout + again.stderr

    r = _apply(a, older, "--rollback")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "rolled back" in r.stdout
    for trail in (a.inner_audit, a.outer_audit):
        [rb] = [x for x in read_trail(trail) if x["event"] == "policy_applied" and x["detail"].get("rollback")]
        assert rb["detail"]["new_hash"] == v1.hash.hex() and rb["detail"]["old_hash"] == b.hash.hex()
        assert rb["detail"]["previous_signed_at"] > rb["detail"]["signed_at"]
        assert "rollback" in rb["reason"]
    assert _outcome(a, "rolled.png", PNG) == "delivered"

    # the rollback is what a restart comes back to
    a.kill("outer")
    a.kill("inner")
    a.start_role("inner")
    a.start_role("outer")
    assert _info(a.inner_socket).hash == _info(a.outer_socket).hash == v1.hash
    assert _outcome(a, "again.png", PNG) == "delivered"


def test_stored_bundle_that_no_longer_verifies_stops_the_agent(appliance_factory):
    a = appliance_factory(management=True).start()
    bundle = _sign(a, _policy_b(a), "b")
    assert _apply(a, bundle, roles=("inner",)).returncode == 0
    a.stop()
    stored = a.work / "audit" / "inner-state" / STORED
    assert stored.read_bytes() == bundle.read_bytes()
    data = bytearray(stored.read_bytes())
    i = data.index(b"application/pdf")
    data[i] ^= 0x20                                  # one flipped bit in the signed policy text
    stored.write_bytes(bytes(data))
    started = sum(x["event"] == "agent_started" for x in read_trail(a.inner_audit))
    r = _ferry("inner", "--config", str(a.work / "inner.toml"), timeout=60)
    assert r.returncode == 2, r.stderr
    assert str(stored) in r.stderr and "does not verify" in r.stderr, r.stderr
    assert sum(x["event"] == "agent_started" for x in read_trail(a.inner_audit)) == started


VIDEO = {"codecs": ["h264", "h265"], "max_width": 1920, "max_height": 1080, "max_frame_rate": 30,
         "max_bitrate_kbps": 8000}


def _big_policy(base: bytes, n: int) -> bytes:
    doc = yaml.safe_load(base)
    for i in range(n):
        region8 = f"43{(i // 100) % 100:02d}{i % 100:02d}{i // 10000:02d}"   # 8 digits, unique below 1,000,000
        doc["sources"][f"src-{i:05d}"] = {"kind": "devices", "match": [{"region": region8, "type": ["131", "132"]}]}
        doc["rules"].append({"id": f"video-{i:05d}", "lane": "video", "from": f"src-{i:05d}", "to": "police-vms",
                             "video": {**VIDEO, "codecs": list(VIDEO["codecs"])}})
    return yaml.safe_dump(doc, sort_keys=False).encode()


def test_status_answers_while_a_large_policy_compiles(appliance_factory):
    """Item 6: the apply verifies and compiles in a worker thread; the loop keeps answering."""
    a = appliance_factory(management=True).start()
    big = a.work / "policy-big"
    big.mkdir()
    base = (a.work / "policy" / "policy.yaml").read_bytes()
    n = 4000                 # rules; more if compiling got so fast that a blocked loop would go unseen
    while True:
        raw = _big_policy(base, n)
        t0 = time.monotonic()
        compile_policy(parse_policy({"policy.yaml": raw}), policy_hash({"policy.yaml": raw}))
        if time.monotonic() - t0 >= 1.0 or n >= 12000:       # 12,000 rules: about 3.7 MB, under POLICY_FILE_MAX
            break
        n *= 3
    (big / "policy.yaml").write_bytes(raw)
    bundle = _sign(a, big, "big")
    pb = parse_bundle(bundle.read_bytes())

    latencies: list[tuple[float, float]] = []       # (start, seconds) of each GetStatus during the apply
    done = threading.Event()

    def poll() -> None:
        with ManagementClient(a.inner_socket, timeout=120) as c:
            while not done.is_set():
                t0 = time.monotonic()
                c.get_status()
                latencies.append((t0, time.monotonic() - t0))

    t = threading.Thread(target=poll)
    t.start()
    try:
        a.wait_for(lambda: len(latencies) >= 3, 30, "status answers before the apply")
        t_apply = time.monotonic()
        with ManagementClient(a.inner_socket, timeout=300) as c:
            r = c.apply_policy(pb)
        apply_s = time.monotonic() - t_apply
    finally:
        done.set()
        t.join(120)
    assert r.changed
    during = [s for t0, s in latencies if t_apply <= t0 < t_apply + apply_s]
    assert apply_s > 0.5, f"the apply took {apply_s:.2f} s: too fast to tell"
    assert len(during) >= 5, (apply_s, during)
    assert max(during) < apply_s / 3, f"a status call took {max(during):.2f} s during a {apply_s:.2f} s apply"
    print(f"{n} rules: apply {apply_s:.2f} s, {len(during)} status calls during it, "
          f"slowest {max(during) * 1000:.0f} ms")
