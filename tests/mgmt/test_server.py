"""The management service in-process: grpc.aio on a temporary Unix socket, a stand-in agent."""
from __future__ import annotations

import asyncio
import os
import shutil
import socket as so
import stat
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import grpc
import pytest
from waiting import wait_until

from ferry.agents.policy_host import PolicyHost
from ferry.crypto import SM2PrivateKey
from ferry.lanes.files import make_file_object
from ferry.mgmt.client import ManagementClient, ManagementError
from ferry.mgmt.host import PolicyOrigin
from ferry.mgmt.server import ManagementService, start_server, stop_server
from ferry.pb import mgmt_pb2, mgmt_pb2_grpc
from ferry.policy import compile_policy, parse_policy, policy_hash
from ferry.policy.bundle import make_bundle

ROOT = Path(__file__).resolve().parents[2]
V1 = (ROOT / "policy" / "demo" / "policy.yaml").read_bytes()
V2 = V1.replace(b"media_types: [application/pdf, image/png, image/jpeg, text/plain]",
                b"media_types: [application/pdf]")
assert V1 != V2
ADMIN = SM2PrivateKey.generate()
OTHER = SM2PrivateKey.generate()


def _plan(raw: bytes):
    files = {"policy.yaml": raw}
    return compile_policy(parse_policy(files), policy_hash(files))


class FakeAgent(PolicyHost):
    """An agent's policy side (ferry.agents.policy_host) with a recording audit trail."""

    role = "inner"
    name = "test-inner"

    def __init__(self) -> None:
        self.id = SimpleNamespace(plan=_plan(V1), origin=PolicyOrigin(applied_at=1.0),
                                  signers={ADMIN.public_key().key_id(): ADMIN.public_key()})
        self.records: list[dict] = []
        self.swaps: list[tuple] = []
        self.trail_up = True
        self.started_at = 123.0

    def audit(self, **fields) -> None:
        self.records.append(fields)

    def policy_swapped(self, old, new, now) -> None:
        self.swaps.append((old.hash, new.hash, now))

    def audit_available(self) -> bool:
        return self.trail_up

    def status_counters(self) -> dict[str, int]:
        return {"delivered": 3, "refused": 1}

    def events(self, name: str) -> list[dict]:
        return [r for r in self.records if r["event"] == name]


class Served:
    """A management server in a background event loop (as inside an agent)."""

    def __init__(self, agent: FakeAgent) -> None:
        self.agent = agent
        self.dir = Path(tempfile.mkdtemp(prefix="ferry-mgmt-", dir="/tmp"))
        self.socket = self.dir / "run" / "agent.sock"
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = self.call(start_server(self.socket, ManagementService(agent, clock=lambda: 1000.0)))

    def call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def close(self) -> None:
        self.call(stop_server(self.server, self.socket))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def served():
    s = Served(FakeAgent())
    yield s
    s.close()


def _v2(key=ADMIN, raw=V2) -> mgmt_pb2.PolicyBundle:
    return make_bundle({"policy.yaml": raw, "tests/t.yaml": b"tests: []\n"}, key, 999.0)


def test_socket_is_private(served):
    st = os.lstat(served.socket)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert stat.S_IMODE(os.stat(served.socket.parent).st_mode) == 0o700


def test_apply_swaps_the_plan_and_audits_old_new_and_signer(served):
    agent = served.agent
    old = agent.id.plan
    with ManagementClient(served.socket) as c:
        before = c.get_policy()
        r = c.apply_policy(_v2())
        after = c.get_policy()
    assert before.source == "config" and before.hash == old.hash and before.signer_key_id == b""
    new_hash = policy_hash({"policy.yaml": V2})
    assert r.changed and r.old_hash == old.hash and r.new_hash == new_hash
    assert r.role == "inner" and r.agent == "test-inner" and r.policy_name == "demo"
    assert r.signer_key_id == ADMIN.public_key().key_id()
    assert agent.id.plan.hash == new_hash
    assert agent.swaps == [(old.hash, new_hash, 1000.0)]
    assert after.hash == new_hash and after.source == "bundle" and after.applied_at == 1000.0
    assert after.signed_at == 999.0 and after.signer_key_id == ADMIN.public_key().key_id()
    [rec] = agent.events("policy_applied")
    assert rec["verdict"] == "info" and rec["policy_hash"] == new_hash.hex()
    d = rec["detail"]
    assert (d["old_hash"], d["new_hash"]) == (old.hash.hex(), new_hash.hex())
    assert d["signer_key_id"] == ADMIN.public_key().key_id().hex() and d["policy"] == "demo"


def test_the_new_plan_decides(served):
    obj = make_file_object(object_id=1, name="a.txt", content=b"hello\n", source="outer-spool",
                           destination="inner-spool", now=time.time())
    assert served.agent.id.plan.decide(obj).allowed
    with ManagementClient(served.socket) as c:
        c.apply_policy(_v2())
    d = served.agent.id.plan.decide(obj)
    assert not d.allowed and d.rule == "files-documents"


def test_reapplying_the_same_policy_is_not_a_swap(served):
    with ManagementClient(served.socket) as c:
        c.apply_policy(_v2())
        r = c.apply_policy(_v2())
    assert not r.changed and r.old_hash == r.new_hash
    assert len(served.agent.swaps) == 1
    assert [x["detail"]["changed"] for x in served.agent.events("policy_applied")] == [True, False]


@pytest.mark.parametrize("case", ["unsigned", "other key", "tampered", "invalid policy", "garbage name"])
def test_refused_bundles_leave_the_plan_and_are_audited(served, case):
    agent = served.agent
    old = agent.id.plan
    if case == "unsigned":
        b = _v2()
        b.signature = b""
        code, status = "unsigned", grpc.StatusCode.PERMISSION_DENIED
    elif case == "other key":
        b = _v2(OTHER)
        code, status = "unknown_signer", grpc.StatusCode.PERMISSION_DENIED
    elif case == "tampered":
        b = _v2()
        b.files[0].content = V1 + b"\n"
        code, status = "bad_signature", grpc.StatusCode.PERMISSION_DENIED
    elif case == "invalid policy":
        b = _v2(raw=V2 + b"bogus: 1\n")
        code, status = "invalid_policy", grpc.StatusCode.INVALID_ARGUMENT
    else:
        b = _v2()
        b.files[0].name = "../policy.yaml"
        code, status = "bad_name", grpc.StatusCode.INVALID_ARGUMENT
    with ManagementClient(served.socket) as c:
        with pytest.raises(ManagementError) as ei:
            c.apply_policy(b)
        assert c.get_policy().hash == old.hash
    assert ei.value.code == status and ei.value.refused and code in str(ei.value)
    assert agent.id.plan is old and agent.swaps == [] and agent.events("policy_applied") == []
    [rec] = agent.events("policy_refused")
    assert rec["verdict"] == "refused" and rec["detail"]["code"] == code and rec["reason"]


def test_no_audit_no_change(served):
    served.agent.trail_up = False
    old = served.agent.id.plan
    with ManagementClient(served.socket) as c:
        with pytest.raises(ManagementError) as ei:
            c.apply_policy(_v2())
    assert ei.value.code == grpc.StatusCode.UNAVAILABLE
    assert served.agent.id.plan is old and served.agent.swaps == []


def test_status(served):
    with ManagementClient(served.socket) as c:
        s = c.get_status()
    assert (s.role, s.name, s.started_at, s.audit_available) == ("inner", "test-inner", 123.0, True)
    assert dict(s.counters) == {"delivered": 3, "refused": 1}
    assert s.policy.hash == served.agent.id.plan.hash


def test_stale_socket_is_replaced_and_a_non_socket_is_not():
    d = Path(tempfile.mkdtemp(prefix="ferry-mgmt-", dir="/tmp"))
    try:
        stale = d / "s.sock"
        s = so.socket(so.AF_UNIX)
        s.bind(str(stale))
        s.close()                               # left behind by a crashed agent

        async def run():
            server = await start_server(stale, ManagementService(FakeAgent()))
            await stop_server(server, stale)
        asyncio.run(run())
        assert not stale.exists()
        (d / "f").write_text("not a socket")
        with pytest.raises(OSError):
            asyncio.run(start_server(d / "f", ManagementService(FakeAgent())))
        assert (d / "f").read_text() == "not a socket"
    finally:
        shutil.rmtree(d, ignore_errors=True)


# --- the command line against the served agent -------------------------------------

def _cli(*args):
    return subprocess.run([sys.executable, "-m", "ferry.mgmt.cli", "policy", *args], capture_output=True,
                          text=True, timeout=60)


def test_cli_sign_apply_status(served, tmp_path):
    pol = tmp_path / "pol"
    (pol / "tests").mkdir(parents=True)
    (pol / "policy.yaml").write_bytes(V2)
    (pol / "tests" / "t.yaml").write_bytes(b"tests: []\n")
    (tmp_path / "admin.key").write_bytes(ADMIN.to_pem())
    (tmp_path / "other.key").write_bytes(OTHER.to_pem())
    out = tmp_path / "v2.ferrypolicy"
    r = _cli("sign", str(pol), "--key", str(tmp_path / "admin.key"), "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert policy_hash({"policy.yaml": V2}).hex() in r.stdout
    bad = tmp_path / "bad.ferrypolicy"
    assert _cli("sign", str(pol), "--key", str(tmp_path / "other.key"), "-o", str(bad)).returncode == 0

    r = _cli("apply", str(bad), "--socket", str(served.socket), "--socket", "/nonexistent.sock")
    assert r.returncode == 1 and "unknown_signer" in r.stderr and "not tried: /nonexistent.sock" in r.stderr
    r = _cli("apply", str(out), "--socket", str(served.socket))
    assert r.returncode == 0, r.stderr
    assert served.agent.id.plan.hash == policy_hash({"policy.yaml": V2})
    r = _cli("status", "--socket", str(served.socket))
    assert r.returncode == 0 and "source bundle" in r.stdout and "delivered=3" in r.stdout
    r = _cli("status", "--socket", str(served.dir / "nobody.sock"), "--timeout", "2")
    assert r.returncode == 2


def test_cli_refuses_to_sign_an_invalid_policy(tmp_path):
    pol = tmp_path / "pol"
    pol.mkdir()
    (pol / "policy.yaml").write_bytes(V1 + b"bogus: 1\n")
    (tmp_path / "admin.key").write_bytes(ADMIN.to_pem())
    r = _cli("sign", str(pol), "--key", str(tmp_path / "admin.key"), "-o", str(tmp_path / "x.ferrypolicy"))
    assert r.returncode == 1 and "bogus" in r.stderr
    assert not (tmp_path / "x.ferrypolicy").exists()
    r = _cli("apply", str(tmp_path / "missing.ferrypolicy"), "--socket", "/x.sock")
    assert r.returncode == 2
    (tmp_path / "junk.ferrypolicy").write_bytes(b"\xff" * 10)
    assert _cli("apply", str(tmp_path / "junk.ferrypolicy"), "--socket", "/x.sock").returncode == 1


def test_socket_path_too_long_is_an_os_error():
    with pytest.raises(OSError, match="longer than"):
        asyncio.run(start_server("/tmp/" + "x" * 120, ManagementService(FakeAgent())))


# --- issue 11: rollback over gRPC, and the compile off the event loop ---------------------------

def _signed(raw: bytes, at: float) -> mgmt_pb2.PolicyBundle:
    return make_bundle({"policy.yaml": raw}, ADMIN, at)


def test_older_bundle_is_failed_precondition_unless_rollback(served):
    newer, older = _signed(V2, 2000.0), _signed(V1.replace(b"Demo appliance", b"Demo appliance v0"), 1000.0)
    with ManagementClient(served.socket) as c:
        c.apply_policy(newer)
        with pytest.raises(ManagementError) as ei:
            c.apply_policy(older)
        assert ei.value.code == grpc.StatusCode.FAILED_PRECONDITION and ei.value.refused
        assert "older_bundle" in str(ei.value) and "--rollback" in str(ei.value)
        r = c.apply_policy(older, rollback=True)
        assert r.rollback and r.changed and r.previous_signed_at == 2000.0 and r.signed_at == 1000.0
        assert c.get_policy().signed_at == 1000.0
    # the bare ApplyPolicy(PolicyBundle) of earlier clients still works, without rollback
    with grpc.insecure_channel(f"unix:{served.socket}") as ch:
        stub = mgmt_pb2_grpc.ManagementStub(ch)
        assert stub.ApplyPolicy(newer, timeout=30).changed
        with pytest.raises(grpc.RpcError) as ei:
            stub.ApplyPolicy(older, timeout=30)
        assert ei.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_prepare_runs_off_the_loop_and_commit_on_it(served):
    agent = served.agent
    seen: dict[str, str] = {}
    prepare, commit = agent.prepare_bundle, agent.commit_bundle
    gate = threading.Event()

    def slow_prepare(bundle):
        seen["prepare"] = threading.current_thread().name
        gate.wait(30)                              # a compile that takes as long as the test likes
        return prepare(bundle)

    def record_commit(prepared, now, rollback=False):
        seen["commit"] = threading.current_thread().name
        return commit(prepared, now, rollback)

    agent.prepare_bundle, agent.commit_bundle = slow_prepare, record_commit
    result: list = []

    def apply() -> None:
        with ManagementClient(served.socket) as c:
            result.append(c.apply_policy(_v2()))

    t = threading.Thread(target=apply)
    t.start()
    try:
        wait_until(lambda: "prepare" in seen, 30, "the apply reaching prepare")
        t0 = time.monotonic()
        with ManagementClient(served.socket, timeout=5) as c:   # the loop answers while the compile runs
            assert c.get_status().name == "test-inner"
        assert time.monotonic() - t0 < 5
        assert not result and agent.swaps == []
    finally:
        gate.set()
        t.join(30)
    assert result and result[0].changed
    assert seen["prepare"] != served.thread.name and seen["commit"] == served.thread.name
