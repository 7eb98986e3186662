"""A real appliance for end-to-end tests: keys, policy, configs, two agent processes."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from waiting import wait_until

from ferry.reasons import Reason
from ferry.crypto import SM2PrivateKey
from ferry.crypto.keys import init_keys

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_trail(directory: Path) -> list[dict]:
    path = directory / "audit.jsonl"
    if not path.exists():
        return []
    lines = path.read_bytes().split(b"\n")
    return [json.loads(x) for x in lines[:-1] if x.strip()]


def uncoded(records: list[dict]) -> list[dict]:
    """The refused or lost records without a reason code (ferry.reasons.Reason): every such
    record must carry one, so the e2e tests check every trail they make."""
    codes = {r.value for r in Reason}
    return [r for r in records if r.get("verdict") in ("refused", "lost") and r.get("code") not in codes]


def check_trails(outer_audit: Path, inner_audit: Path, timeout: float) -> None:
    """`ferry audit verify` accepts each trail and `ferry audit reconcile` the two (each run within `timeout` s)."""
    def ferry(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "ferry", *args], capture_output=True, text=True, timeout=timeout)

    for d in (outer_audit, inner_audit):
        v = ferry("audit", "verify", str(d))
        assert v.returncode == 0, v.stdout + v.stderr
    r = ferry("audit", "reconcile", str(outer_audit), str(inner_audit))
    assert r.returncode == 0, r.stdout + r.stderr


class Appliance:
    def __init__(self, work: Path, *, outer_host="127.0.0.1", inner_host="127.0.0.1", port=None,
                 bind_host="127.0.0.1", fec_m=4, rate_mbps=200.0, outer_netns=None, inner_netns=None,
                 outer_audit=None, outer_iface="", inner_iface="", management=False, policy_dir=None) -> None:
        self.work = work
        self.port = port or free_udp_port()
        self.outer_netns, self.inner_netns = outer_netns, inner_netns
        init_keys(work / "keys")
        shutil.copytree(Path(policy_dir) if policy_dir else ROOT / "policy" / "demo", work / "policy")
        self.outer_spool = work / "spool" / "outer"
        self.inner_spool = work / "spool" / "inner"
        self.outer_audit = Path(outer_audit) if outer_audit else work / "audit" / "outer"
        self.inner_audit = work / "audit" / "inner"
        for d in (self.outer_spool, self.inner_spool, self.outer_audit, self.inner_audit, work / "logs"):
            d.mkdir(parents=True, exist_ok=True)
        (work / "outer.toml").write_text(f"""
[agent]
name = "test-outer"
key = "keys/outer.key"
peer_public = "keys/inner.pub"
policy = "policy"
audit_dir = "{self.outer_audit}"
[link]
peer_host = "{inner_host}"
peer_port = {self.port}
bind_host = "{bind_host}"
rate_mbps = {rate_mbps}
fec_m = {fec_m}
interface = "{outer_iface}"
[files]
spool = "spool/outer"
settle = 0.2
scan_interval = 0.1
""")
        (work / "inner.toml").write_text(f"""
[agent]
name = "test-inner"
key = "keys/inner.key"
peer_public = "keys/outer.pub"
policy = "policy"
audit_dir = "audit/inner"
[link]
listen_host = "{inner_host}"
listen_port = {self.port}
interface = "{inner_iface}"
[files]
spool = "spool/inner"
""")
        self.admin_key = self.admin_pub = self.outer_socket = self.inner_socket = None
        if management:
            self._add_management()
        self.procs: dict[str, subprocess.Popen] = {}

    def _add_management(self) -> None:
        """Management sockets on both agents, trusting one administrator key (keys/admin.key)."""
        admin = SM2PrivateKey.generate()
        self.admin_key, self.admin_pub = self.work / "keys" / "admin.key", self.work / "keys" / "admin.pub"
        self.admin_key.write_bytes(admin.to_pem())
        self.admin_key.chmod(0o600)
        self.admin_pub.write_bytes(admin.public_key().to_pem())
        self.outer_socket, self.inner_socket = self.work / "mgmt" / "outer.sock", self.work / "mgmt" / "inner.sock"
        assert len(str(self.outer_socket)) < 100, "Unix socket path too long"
        for role in ("outer", "inner"):
            with open(self.work / f"{role}.toml", "a") as f:
                f.write(f'[management]\nsocket = "mgmt/{role}.sock"\npolicy_signers = ["keys/admin.pub"]\n')

    def append_config(self, role: str, text: str) -> None:
        with open(self.work / f"{role}.toml", "a") as f:
            f.write("\n" + text.strip() + "\n")

    def start(self) -> "Appliance":
        for role in ("inner", "outer"):
            self.start_role(role)
        return self

    def start_role(self, role: str) -> None:
        """Start one agent (again) and wait for its agent_started record."""
        ns = self.inner_netns if role == "inner" else self.outer_netns
        trail = self.inner_audit if role == "inner" else self.outer_audit
        started = sum(r["event"] == "agent_started" for r in read_trail(trail))
        cmd = [sys.executable, "-m", "ferry", role, "--config", str(self.work / f"{role}.toml")]
        if ns:
            cmd = ["ip", "netns", "exec", ns] + cmd
        log = open(self.work / "logs" / f"{role}.log", "ab")
        self.procs[role] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=self.work,
                                            env={**os.environ, "PYTHONUNBUFFERED": "1", "FERRY_STRICT": "1"})
        log.close()
        self.wait_for(lambda: sum(r["event"] == "agent_started" for r in read_trail(trail)) > started, 20,
                      f"{role} agent start")

    def kill(self, role: str) -> None:
        """kill -9 one agent."""
        p = self.procs.pop(role)
        p.send_signal(signal.SIGKILL)
        p.wait()

    def log(self, role: str) -> str:
        return (self.work / "logs" / f"{role}.log").read_text(errors="replace")

    def wait_for(self, cond: Callable[[], T], timeout: float, what: str, interval: float = 0.1) -> T:
        """wait_until(cond), failing at once if an agent exits; a timeout shows both agents' logs.
        (The conditions read audit trails: 0.1 s between polls keeps that cheap.)"""
        def alive() -> None:
            for role, p in self.procs.items():
                if p.poll() is not None:
                    raise AssertionError(f"{role} agent exited ({p.returncode}) waiting for {what}:\n{self.log(role)}")

        def logs() -> str:
            return f"--- outer:\n{self.log('outer')[-3000:]}\n--- inner:\n{self.log('inner')[-3000:]}"

        return wait_until(cond, timeout, what, interval, check=alive, details=logs)

    def drop(self, name: str, content: bytes) -> None:
        staging = self.work / "staging"
        staging.mkdir(exist_ok=True)
        (staging / name).write_bytes(content)
        os.rename(staging / name, self.outer_spool / name)

    def outcomes(self) -> dict[str, str]:
        """File name -> 'delivered' / 'refused' / 'lost', from both trails. A file is 'delivered' once
        its record is written and the file it names is in the inner spool: the inner agent renames
        it into place right after the record is on disk, so a trail may show it a moment before."""
        names = {}
        out: dict[str, str] = {}
        for r in read_trail(self.outer_audit):
            d = r.get("detail") or {}
            if r["event"] == "object_sent":
                names[r["object_id"]] = d.get("name")
            elif r["event"] == "object_refused":
                out[d.get("name")] = "refused"
        for r in read_trail(self.inner_audit):
            if r["event"] == "object_delivered" and not (self.inner_spool / r["detail"]["written_as"]).exists():
                continue
            if r["event"] in ("object_delivered", "object_refused", "object_lost"):
                out[names.get(r.get("object_id"), (r.get("detail") or {}).get("name"))] = r["event"][7:]
        return out

    def trails(self) -> list[dict]:
        """Both agents' audit records (the outer's, then the inner's)."""
        return read_trail(self.outer_audit) + read_trail(self.inner_audit)

    def stop(self) -> None:
        for role in ("outer", "inner"):
            p = self.procs.get(role)
            if p and p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


