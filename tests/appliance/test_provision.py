"""First-boot provisioning (`ferry provision`), and the agents running the way the units run
them: from the provisioned files, as their own users, with no capability but the outer's
CAP_LEASE, no new privileges, the units' system-call filter and no writable executable
memory (sandbox_run.py).

Everything happens under temporary roots (`--root`); the host's users and /etc stay as they were.
"""
from __future__ import annotations

import os
import pwd
import re
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from appliance import free_udp_port, read_trail
from rootcheck import need_root
from waiting import wait_until

from ferry.config import InnerConfig, OuterConfig, load_config, mode_problems
from ferry.provision import ProvisionError, Provisioner, layout, provision

pytestmark = pytest.mark.root
REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent


def _provision(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ferry", "provision", "--root", str(root), *args],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})


def _users(root: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for line in (root / "etc/passwd").read_text().splitlines():
        name, _, uid, gid, *_ = line.split(":")
        out[name] = (int(uid), int(gid))
    out["root"] = (0, 0)
    return out


@pytest.fixture
def world_tmp() -> Iterator[Path]:
    """A temporary folder other users can traverse (pytest's tmp_path is under a 0700 folder)."""
    need_root("systemd-sysusers")
    d = Path(tempfile.mkdtemp(prefix="ferry-root-", dir="/tmp"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _host_users() -> set[str]:
    return {p.pw_name for p in pwd.getpwall()}


def test_provision_creates_users_dirs_keys_with_owners_and_modes(world_tmp: Path) -> None:
    """--role both under --root: the service users in the root's /etc/passwd (not the host's),
    each directory of the layout with its owner and mode, each private key 0600 owned by its
    agent's user, the sample configs 0640 root:ferry-ROLE that load and pass the agents' own
    start-up mode checks."""
    root = world_tmp / "root"
    root.mkdir()
    before = _host_users()
    done = _provision(root, "--role", "both", "--policy", str(REPO / "policy/demo"))
    assert done.returncode == 0, done.stderr
    assert _host_users() == before and "ferry-outer" not in before
    users = _users(root)
    for role in ("outer", "inner"):
        assert f"ferry-{role}" in users
        for e in layout(role):
            st = (root / e.path.lstrip("/")).stat()
            assert stat.S_ISDIR(st.st_mode), e.path
            assert (st.st_uid, st.st_gid) == (users[e.user][0], users[e.group][1]), e.path
            assert stat.S_IMODE(st.st_mode) == e.mode, f"{e.path}: {stat.S_IMODE(st.st_mode):04o}"
        agent = users[f"ferry-{role}"]
        key = (root / f"etc/ferry/keys/{role}.key").stat()
        assert (key.st_uid, key.st_gid, stat.S_IMODE(key.st_mode)) == (*agent, 0o600)
        pub = (root / f"etc/ferry/keys/{role}.pub").stat()
        assert (pub.st_uid, stat.S_IMODE(pub.st_mode)) == (0, 0o644)
        conf = root / f"etc/ferry/{role}.toml"
        st = conf.stat()
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, agent[1], 0o640)
        cfg = load_config(conf, OuterConfig if role == "outer" else InnerConfig)
        assert cfg.agent.key == f"/etc/ferry/keys/{role}.key" and cfg.agent.audit_dir == f"/var/log/ferry/{role}"
        assert cfg.kernel is not None and not cfg.kernel.apply     # ferry-link@ applies the rules
        rooted = _rooted(cfg.agent, root)
        assert mode_problems(rooted) == []
        env = (root / f"etc/ferry/link-{role}.env").read_text()
        assert "FERRY_NFT_BASE=" in env and "FERRY_LINK_UP=" in env
    assert (root / "etc/ferry/policy/policy.yaml").exists()


def _rooted(agent, root: Path):
    return agent.model_copy(update={k: str(root) + getattr(agent, k)
                                    for k in ("key", "peer_public", "policy", "audit_dir", "state_dir")})


def test_provision_is_idempotent_and_repairs_modes(world_tmp: Path) -> None:
    """A second run writes nothing and keeps the keys; a key or folder whose mode or owner an
    admin changed is set back, and the run says so."""
    root = world_tmp / "root"
    root.mkdir()
    assert _provision(root, "--role", "outer").returncode == 0
    key = root / "etc/ferry/keys/outer.key"
    pem = key.read_bytes()
    again = _provision(root, "--role", "outer")
    assert again.returncode == 0, again.stderr
    assert "wrote" not in again.stdout and "created" not in again.stdout and "mode of" not in again.stdout
    assert key.read_bytes() == pem
    key.chmod(0o644)
    os.chown(key, 0, 0)
    state = root / "var/lib/ferry/outer/state"
    state.chmod(0o777)
    fixed = _provision(root, "--role", "outer")
    assert fixed.returncode == 0, fixed.stderr
    assert f"mode of {key}: 0600" in fixed.stdout and f"owner of {key}: ferry-outer" in fixed.stdout
    assert f"mode of {state}: 0700" in fixed.stdout
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and stat.S_IMODE(state.stat().st_mode) == 0o700
    assert key.read_bytes() == pem


def test_image_build_leaves_the_keys_to_first_boot(world_tmp: Path) -> None:
    """--no-keys (an image build) makes everything but the key pair; the first boot's run
    (ferry-provision@ROLE, the same command without --no-keys) makes it, 0600 for the agent."""
    root = world_tmp / "root"
    root.mkdir()
    done = _provision(root, "--role", "inner", "--no-keys")
    assert done.returncode == 0, done.stderr
    assert (root / "etc/ferry/inner.toml").exists() and not list((root / "etc/ferry/keys").iterdir())
    done = _provision(root, "--role", "inner")
    assert done.returncode == 0, done.stderr
    key = (root / "etc/ferry/keys/inner.key").stat()
    assert (key.st_uid, stat.S_IMODE(key.st_mode)) == (_users(root)["ferry-inner"][0], 0o600)
    unit = (REPO / "appliance/systemd/ferry-provision@.service").read_text()
    assert "ConditionPathExists=!/etc/ferry/keys/%i.key" in unit and "provision --role %i\n" in unit


def test_provision_refusals_name_the_file(world_tmp: Path) -> None:
    """Errors name the file and the option; the exit status is 2."""
    missing = world_tmp / "nope"
    done = _provision(missing, "--role", "outer")
    assert done.returncode == 2 and f"{missing} (--root): not a directory" in done.stderr
    root = world_tmp / "root"
    root.mkdir()
    bad = world_tmp / "inner.pub"
    bad.write_text("not a key\n")
    done = _provision(root, "--role", "outer", "--peer-public", str(bad))
    assert done.returncode == 2 and f"{bad} (--peer-public): not a PEM public key" in done.stderr
    (root / "etc/ferry").mkdir(parents=True)
    (root / "etc/ferry/keys").write_text("a file where the keys folder belongs")
    done = _provision(root, "--role", "outer")
    assert done.returncode == 2 and "etc/ferry/keys: exists and is not a directory" in done.stderr


# -- the agents as the units run them -------------------------------------------------------

def _sandboxed(root: Path, role: str, uid: int, gid: int, umask: str) -> list[str]:
    """The agent as its unit starts it: its own user and group, no supplementary groups, no new
    privileges, no capability (the outer: CAP_LEASE only), the unit's UMask, its system-call
    filter, no writable executable memory (sandbox_run.py), and only its three folders
    writable."""
    writable = tuple(root / d for d in (f"var/lib/ferry/{role}", f"var/log/ferry/{role}", f"run/ferry/{role}"))
    return _as_unit(root, uid, gid, "lease" if role == "outer" else None, umask,
                    ["ferry", role, "--config", str(root / f"etc/ferry/{role}.toml")], writable=writable)


# ProtectSystem=strict and ProtectHome, as far as a mount namespace shows them: every mount but
# the API file systems read-only, the unit's own folders (bound on themselves) writable, /home empty.
_PROTECT = ("for m in $(findmnt -rno TARGET | grep -Ev '^/(proc|sys|dev|run/netns)(/|$)'); do "
            "case \" $WRITABLE \" in *\" $m \"*) ;; *) mount -o remount,bind,ro \"$m\" 2>/dev/null || true ;; esac; "
            "done; "
            "if [ -d /home ]; then mount -t tmpfs -o ro,mode=0755 tmpfs /home; fi; ")


def _as_unit(root: Path, uid: int, gid: int, cap: str | None, umask: str, argv: list[str],
             netns: str | None = None, writable: tuple[Path, ...] = ()) -> list[str]:
    """``python sandbox_run.py ARGV`` as a unit runs it (see _sandboxed), keeping only ``cap``
    (ambient), optionally in network namespace ``netns``, in a private mount namespace where,
    as with ProtectSystem=strict, ProtectHome and PrivateTmp, everything but ``writable`` and
    a new /tmp is read-only and /root and /home are empty: only the interpreter (under /root
    here) and the test's folder (under /tmp) are bound back in. The host does not change."""
    python = Path(sys.executable).resolve()
    world = root.parent                      # the test's folder, /tmp/ferry-root-*
    q = shlex.quote
    steps = []
    if python.is_relative_to("/root"):
        top = Path("/root") / python.relative_to("/root").parts[0]
        stage = root / ".python"
        stage.mkdir(exist_ok=True)
        steps += [f"mount --bind {q(str(top))} {q(str(stage))}", "mount -t tmpfs -o mode=0755 tmpfs /root",
                  f"mkdir -p {q(str(top))}", f"mount --bind {q(str(stage))} {q(str(top))}"]
    else:
        steps += ["mount -t tmpfs -o mode=0755 tmpfs /root"]
    # what the new /tmp hides and the agent needs back: the test's folder, and the checkout and
    # its virtualenv when they lie under /tmp too (a CI clone)
    keep = [world] + [p for p in (REPO.resolve(), Path(sys.prefix).resolve()) if p.is_relative_to("/tmp")]
    keep = sorted({p for p in keep if not any(p != o and p.is_relative_to(o) for o in keep)})
    for i, p in enumerate(keep):
        steps += [f"mkdir /root/.keep{i}", f"mount --bind {q(str(p))} /root/.keep{i}"]
    steps += ["mount -t tmpfs -o mode=1777 tmpfs /tmp"]
    for i, p in enumerate(keep):
        steps += [f"mkdir -p {q(str(p))}", f"mount --bind /root/.keep{i} {q(str(p))}"]
    steps += [f"mount --bind {q(str(w))} {q(str(w))}" for w in writable]
    caps = f"-all,+{cap}" if cap else "-all"
    ambient = [f"--ambient-caps=+{cap}"] if cap else []
    setpriv = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--no-new-privs",
               f"--inh-caps={caps}", *ambient, f"--bounding-set={caps}"]
    inns = ["ip", "netns", "exec", netns] if netns else []
    cmd = [*inns, *setpriv, sys.executable, str(HERE / "sandbox_run.py"), *argv]
    protect = f"WRITABLE={q(' '.join(['/tmp', *map(str, writable)]))}; {_PROTECT}"
    script = "set -e; " + "; ".join(steps) + "; " + protect + f"umask {umask}; exec " + " ".join(q(x) for x in cmd)
    return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script]


def _rehome(root: Path, role: str, port: int) -> None:
    """Point the provisioned config at the root's folders and at loopback (no ferry0 here)."""
    conf = root / f"etc/ferry/{role}.toml"
    text = conf.read_text()
    for top in ("/etc/ferry", "/var/lib/ferry", "/var/log/ferry", "/run/ferry"):
        text = text.replace(f'"{top}', f'"{root}{top}')
    text = text.replace('"10.0.9.2"', '"127.0.0.1"').replace("= 47000", f"= {port}")
    text = text.replace('interface = "ferry0"\n', "")
    if role == "outer":
        text = text.replace("[files]\n", "[files]\nsettle = 0.3\nscan_interval = 0.2\n")
    conf.write_text(text)


def _need_sandbox() -> None:
    """Skip unless the units' sandbox can be emulated here (sandbox_run.py --check, without new privileges)."""
    check = subprocess.run(["setpriv", "--no-new-privs", sys.executable, str(HERE / "sandbox_run.py"), "--check"],
                           capture_output=True, text=True, timeout=60)
    if check.returncode != 0:
        pytest.skip(f"cannot emulate the units' sandbox here: {check.stderr.strip()}")


def test_agents_run_sandboxed_from_provisioned_roots(world_tmp: Path) -> None:
    """Two hosts provisioned apart (outer, inner), their public keys exchanged with
    --peer-public; each agent started as its unit starts it (its user, no capability, no new
    privileges, the units' system-call filter, no writable executable memory, its UMask) from
    the provisioned files. A file
    dropped in the outer spool (by root: the outer agent checks it with a read lease, which needs
    CAP_LEASE) is delivered into the inner spool, owned by ferry-inner and
    readable by its group (0640); both trails are in /var/log/ferry/ROLE."""
    need_root("unshare", "setpriv", "mount")
    _need_sandbox()
    outer, inner = world_tmp / "outer", world_tmp / "inner"
    outer.mkdir()
    inner.mkdir()
    policy = str(REPO / "policy/demo")
    assert _provision(inner, "--role", "inner", "--policy", policy).returncode == 0
    done = _provision(outer, "--role", "outer", "--policy", policy,
                      "--peer-public", str(inner / "etc/ferry/keys/inner.pub"))
    assert done.returncode == 0, done.stderr
    done = _provision(inner, "--role", "inner", "--peer-public", str(outer / "etc/ferry/keys/outer.pub"))
    assert done.returncode == 0, done.stderr
    port = free_udp_port()
    procs: dict[str, subprocess.Popen] = {}
    logs: dict[str, Path] = {}
    try:
        for root, role, umask in ((inner, "inner", "0027"), (outer, "outer", "0077")):
            _rehome(root, role, port)
            uid, gid = _users(root)[f"ferry-{role}"]
            for sub in ("run", "run/ferry", f"run/ferry/{role}"):      # systemd's RuntimeDirectory=
                (root / sub).mkdir(exist_ok=True)
            os.chown(root / f"run/ferry/{role}", uid, gid)
            logs[role] = world_tmp / f"{role}.log"
            with open(logs[role], "wb") as log:
                procs[role] = subprocess.Popen(_sandboxed(root, role, uid, gid, umask), stdout=log,
                                               stderr=subprocess.STDOUT, start_new_session=True,
                                               env={**os.environ, "PYTHONPATH": str(REPO)})

        def alive() -> None:
            for role, p in procs.items():
                if p.poll() is not None:
                    raise AssertionError(f"{role} exited {p.returncode}:\n{logs[role].read_text()[-3000:]}")

        def logs_text() -> str:
            return "\n".join(f"--- {r}\n{p.read_text()[-2000:]}" for r, p in logs.items())

        outer_trail, inner_trail = outer / "var/log/ferry/outer", inner / "var/log/ferry/inner"
        wait_until(lambda: any(r["event"] == "agent_started" for r in read_trail(outer_trail))
                   and any(r["event"] == "agent_started" for r in read_trail(inner_trail)),
                   60, "both agents started", interval=0.2, check=alive, details=logs_text)
        for role, root in (("outer", outer), ("inner", inner)):
            status = _proc_status(procs[role])
            uid = _users(root)[f"ferry-{role}"][0]
            assert status["Uid"].split()[:2] == [str(uid)] * 2, status["Uid"]
            assert status["NoNewPrivs"] == "1"
            assert int(status["CapEff"], 16) == (1 << 28 if role == "outer" else 0)     # CAP_LEASE is 28
            assert int(status["CapBnd"], 16) == (1 << 28 if role == "outer" else 0)
        # the emulated ProtectSystem=strict holds: /var/tmp (mode 1777) is read-only, the state folder is not
        uid, gid = _users(outer)["ferry-outer"]
        writable = (outer / "var/lib/ferry/outer",)
        probe = f"touch {outer}/var/lib/ferry/outer/probe && touch /var/tmp/ferry-probe-{os.getpid()}"
        done = subprocess.run(_as_unit(outer, uid, gid, None, "0077", ["--exec", "sh", "-c", probe],
                                       writable=writable), capture_output=True, text=True, timeout=60,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
        assert done.returncode != 0 and "Read-only file system" in done.stderr, done.stderr
        assert (outer / "var/lib/ferry/outer/probe").exists()
        (outer / "var/lib/ferry/outer/probe").unlink()
        spool = outer / "var/lib/ferry/outer/spool"
        (spool / ".note.txt.part").write_bytes(b"across the sandboxed link\n")
        os.rename(spool / ".note.txt.part", spool / "note.txt")
        delivered = inner / "var/lib/ferry/inner/spool/note.txt"
        wait_until(delivered.exists, 60, "note.txt delivered", interval=0.2, check=alive, details=logs_text)
        assert delivered.read_bytes() == b"across the sandboxed link\n"
        st = delivered.stat()
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (_users(inner)["ferry-inner"][0], 0o640)
        assert any(r["event"] == "object_delivered" for r in read_trail(inner_trail))
        assert stat.S_IMODE((outer_trail / "audit.jsonl").stat().st_mode) & 0o077 == 0
        # the spool file is root's: only CAP_LEASE lets the outer agent ask whether it is still open
        assert "still open for writing" not in logs["outer"].read_text()
    finally:
        for p in procs.values():
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs.values():
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=10)


def _proc_status(p: subprocess.Popen) -> dict[str, str]:
    """/proc status of the agent: the python process under unshare/sh/setpriv (exec'd: same pid)."""
    out = {}
    for line in Path(f"/proc/{p.pid}/status").read_text().splitlines():
        k, _, v = line.partition(":")
        out[k] = v.strip()
    return out


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.one_of(st.binary(max_size=600),
                      st.text(max_size=300).map(lambda t: f"-----BEGIN PUBLIC KEY-----\n{t}\n-----END PUBLIC KEY-----\n"
                                                .encode("utf-8", "surrogatepass"))))
def test_peer_public_garbage_is_refused_before_anything_changes(world_tmp: Path, data: bytes) -> None:
    """Whatever the file given as --peer-public holds (it comes from the other host), provision
    either takes it as an SM2 public key or refuses it with ProvisionError naming the file, and
    then has changed nothing under the root."""
    root = world_tmp / "garbage-root"
    root.mkdir(exist_ok=True)
    peer = world_tmp / "peer.pub"
    peer.write_bytes(data)
    with pytest.raises(ProvisionError, match=re.escape(f"{peer} (--peer-public)")):
        provision(root, ("outer",), peer_public=peer, say=lambda _msg: None)
    assert not any(root.iterdir())


def test_passwd_lines_that_do_not_parse_are_an_error(world_tmp: Path) -> None:
    """A user line whose uid is not a number names the file (not a traceback)."""
    (world_tmp / "etc").mkdir()
    (world_tmp / "etc/passwd").write_text("ferry-outer:x:abc:999::/:/usr/sbin/nologin\n")
    message = f"{world_tmp}/etc/passwd, line 1: uid or gid of ferry-outer is not a number"
    with pytest.raises(ProvisionError, match=re.escape(message)):
        Provisioner(world_tmp).ids("ferry-outer")


def test_native_code_runs_under_the_units_filters() -> None:
    """What MemoryDenyWriteExecute and the system-call filter could break, run under both:
    gmssl-pyx SM2, cryptography SM3/SM4-GCM, Pillow, a PyAV libx264 encode and decode, and a
    ctypes callback. (The --check beside it shows the filters are really on.)"""
    need_root("setpriv")
    base = ["setpriv", "--no-new-privs", sys.executable, str(HERE / "sandbox_run.py")]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    check = subprocess.run([*base, "--check"], capture_output=True, text=True, timeout=60, env=env)
    if check.returncode != 0:
        pytest.skip(f"cannot emulate the units' sandbox here: {check.stderr.strip()}")
    done = subprocess.run([*base, "tests.appliance.native_work"], capture_output=True, text=True, timeout=300,
                          env=env, cwd=REPO)
    assert done.returncode == 0 and done.stdout.strip() == "native ok", done.stderr[-3000:]


def test_link_setup_runs_with_cap_net_admin_alone(world_tmp: Path) -> None:
    """ferry-link@outer's three commands, as the unit runs them (user ferry-outer, CAP_NET_ADMIN
    alone, no new privileges, its system-call filter and address families (netlink too), no
    writable executable memory), from a
    provisioned root, in a network namespace with a ferry0: the base ruleset is loaded, the link
    is up with its address, a permanent neighbour entry and IPv6 off, and the policy's table
    is applied. And the agent's own capabilities cannot do it (nft is refused)."""
    need_root("unshare", "setpriv", "ip", "nft")
    _need_sandbox()
    root = world_tmp / "outer"
    root.mkdir()
    assert _provision(root, "--role", "outer", "--policy", str(REPO / "policy/demo")).returncode == 0
    conf = root / "etc/ferry/outer.toml"
    conf.write_text(conf.read_text().replace('"/etc/ferry', f'"{root}/etc/ferry'))
    env = {}
    for line in (root / "etc/ferry/link-outer.env").read_text().splitlines():
        if line and not line.startswith("#"):
            k, _, v = line.partition("=")
            env[k] = shlex.split(v)[0].split()          # systemd splits an unquoted $VAR on spaces
    uid, gid = _users(root)["ferry-outer"]
    ns = f"ferry-lk{os.getpid() % 100000}"
    run_env = {**os.environ, "PYTHONPATH": str(REPO), "SANDBOX_FAMILIES": "AF_UNIX AF_NETLINK AF_INET AF_INET6"}

    def unit(cap: str | None, *argv: str) -> subprocess.CompletedProcess:
        return subprocess.run(_as_unit(root, uid, gid, cap, "0077", list(argv), netns=ns), capture_output=True,
                              text=True, timeout=120, env=run_env)
    base = str(REPO / "appliance/nftables/base.nft")
    try:
        subprocess.run(["ip", "netns", "add", ns], check=True, timeout=60)
        subprocess.run(["ip", "-n", ns, "link", "add", "ferry0", "type", "veth", "peer", "name", "fpeer"],
                       check=True, timeout=60)
        refused = unit(None, "--exec", "nft", *env["FERRY_NFT_BASE"], "-f", base)
        assert refused.returncode != 0 and "Operation not permitted" in refused.stderr
        for argv in (("--exec", "nft", *env["FERRY_NFT_BASE"], "-f", base),
                     ("ferry", "kernel", "link-up", "--role", "outer", *env["FERRY_LINK_UP"]),
                     ("ferry", "kernel", "rules", "--config", str(conf), "--apply")):
            done = unit("net_admin", *argv)
            assert done.returncode == 0, f"{argv}: {done.stderr}"
        tables = subprocess.run(["ip", "netns", "exec", ns, "nft", "list", "tables"], capture_output=True,
                                text=True, timeout=60).stdout
        assert "table inet ferry_base" in tables and "table inet ferry\n" in tables + "\n"
        addr = subprocess.run(["ip", "-n", ns, "addr", "show", "ferry0"], capture_output=True, text=True,
                              timeout=60).stdout
        assert "inet 10.0.9.1/30" in addr and "UP" in addr and "inet6" not in addr
        neigh = subprocess.run(["ip", "-n", ns, "neigh", "show", "dev", "ferry0"], capture_output=True, text=True,
                               timeout=60).stdout
        assert "10.0.9.2 lladdr 02:00:00:00:09:02 PERMANENT" in neigh
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=60)


def test_first_boot_unit_runs_with_its_capabilities_alone(world_tmp: Path) -> None:
    """ferry-provision@'s command as the unit runs it: root with CAP_CHOWN, CAP_FOWNER and
    CAP_DAC_OVERRIDE alone, no new privileges, its system-call filter (@system-service
    ~@resources, AF_UNIX sockets only) and no writable executable memory: users, folders and
    keys are made (with
    systemd-sysusers run under the same filters). Without CAP_CHOWN it stops, naming the file."""
    need_root("setpriv", "systemd-sysusers")
    env = {**os.environ, "PYTHONPATH": str(REPO), "SANDBOX_DENY": "@resources", "SANDBOX_FAMILIES": "AF_UNIX"}

    def run(caps: str, root: Path) -> subprocess.CompletedProcess:
        return subprocess.run(["setpriv", "--no-new-privs", f"--bounding-set=-all,{caps}", sys.executable,
                               str(HERE / "sandbox_run.py"), "ferry", "provision", "--root", str(root),
                               "--role", "outer"], capture_output=True, text=True, timeout=120, env=env)
    _need_sandbox()
    root = world_tmp / "root"
    root.mkdir()
    done = run("+chown,+fowner,+dac_override", root)
    assert done.returncode == 0, done.stderr
    key = (root / "etc/ferry/keys/outer.key").stat()
    assert (key.st_uid, stat.S_IMODE(key.st_mode)) == (_users(root)["ferry-outer"][0], 0o600)
    bare = world_tmp / "bare"
    bare.mkdir()
    done = run("+fowner,+dac_override", bare)
    assert done.returncode == 2 and "Operation not permitted" in done.stderr and str(bare) in done.stderr


def test_outer_agent_needs_cap_lease_for_files_of_other_users(world_tmp: Path) -> None:
    """Why the outer unit keeps CAP_LEASE: without it (and the rest of its sandbox unchanged), a
    spool file another user wrote cannot be asked about with a read lease, and the agent says
    so (it then checks only size, times and inode)."""
    need_root("unshare", "setpriv", "mount")
    _need_sandbox()
    root = world_tmp / "both"
    root.mkdir()
    assert _provision(root, "--role", "both", "--policy", str(REPO / "policy/demo")).returncode == 0
    _rehome(root, "outer", free_udp_port())
    uid, gid = _users(root)["ferry-outer"]
    (root / "run/ferry/outer").mkdir(parents=True)
    os.chown(root / "run/ferry/outer", uid, gid)
    writable = tuple(root / d for d in ("var/lib/ferry/outer", "var/log/ferry/outer", "run/ferry/outer"))
    log = world_tmp / "outer.log"
    with open(log, "wb") as out:
        p = subprocess.Popen(_as_unit(root, uid, gid, None, "0077",
                                      ["ferry", "outer", "--config", str(root / "etc/ferry/outer.toml")],
                                      writable=writable),
                             stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                             env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        (root / "var/lib/ferry/outer/spool/note.txt").write_bytes(b"written by root\n")

        def alive() -> None:
            if p.poll() is not None:
                raise AssertionError(f"outer exited {p.returncode}:\n{log.read_text()[-3000:]}")
        wait_until(lambda: "still open for writing" in log.read_text(), 60, "the lease warning", interval=0.2,
                   check=alive, details=lambda: log.read_text()[-3000:])
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=10)


def test_provision_does_not_follow_a_link_out_of_the_root(world_tmp: Path) -> None:
    """An image root whose var/log is a link to the host's /var/log: provision refuses to
    follow it (exit 2, naming it) instead of writing onto the build host."""
    root = world_tmp / "root"
    (root / "var").mkdir(parents=True)
    outside = world_tmp / "host-log"
    outside.mkdir()
    (root / "var/log").symlink_to(outside)
    done = _provision(root, "--role", "outer")
    assert done.returncode == 2 and f"{root}/var/log: a symbolic link, refusing to follow it" in done.stderr
    assert not any(outside.iterdir())
