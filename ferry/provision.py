"""``ferry provision``: first-boot set-up of a ferry appliance host (or of an image's root).

    ferry provision --role outer|inner|both [--root DIR] [--no-keys] [--policy DIR] [--peer-public FILE]

Creates the service users (``systemd-sysusers``, the lines of appliance/sysusers.d/ferry.conf),
the directories the units and the agents use with their owners and modes, this host's SM2
key pair if absent (private key 0600, owned by the agent's user), a sample configuration in
/etc/ferry and the link parameters of ferry-link@ROLE.service. Idempotent: a file that exists
is never overwritten (keys, configuration, policy); owners and modes of the directories and
keys are set again, and each change is printed. With ``--root DIR`` everything happens under
DIR (an image being built) and nothing on the host changes.

Exit status: 0 ok; 2 usage or I/O error (the message names the file).
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from ferry.crypto import CryptoError, SM2PublicKey
from ferry.crypto.keys import init_keys

EXIT_OK, EXIT_USAGE = 0, 2
ROLES = ("outer", "inner")
PEER = {"outer": "inner", "inner": "outer"}

# The same lines as appliance/sysusers.d/ferry.conf (a test keeps them in step).
SYSUSERS = """\
u ferry-outer - "ferry outer agent" /var/lib/ferry/outer /usr/sbin/nologin
u ferry-inner - "ferry inner agent" /var/lib/ferry/inner /usr/sbin/nologin
"""

# Sample link addresses: a /30 on the link interface, the outer host .1, the inner .2.
LINK_IF, LINK_PORT = "ferry0", 47000
LINK_ADDR = {"outer": "10.0.9.1", "inner": "10.0.9.2"}

_SAMPLE = {
    "outer": """\
# ferry outer agent, written by `ferry provision` (it never overwrites this file).
# Edit the link addresses, copy the inner host's /etc/ferry/keys/inner.pub here, put the policy
# in /etc/ferry/policy, then: systemctl enable --now ferry-outer.service
[agent]
name = "outer-1"
key = "/etc/ferry/keys/outer.key"
peer_public = "/etc/ferry/keys/inner.pub"
policy = "/etc/ferry/policy"
audit_dir = "/var/log/ferry/outer"
state_dir = "/var/lib/ferry/outer/state"

[link]
peer_host = "{inner_addr}"        # the inner agent's address on the link
peer_port = {port}
interface = "{link_if}"

[files]
spool = "/var/lib/ferry/outer/spool"   # writers: members of group ferry-outer

[management]
socket = "/run/ferry/outer/mgmt.sock"

[kernel]
# ferry-link@outer.service applies these rules (the agent itself has no CAP_NET_ADMIN)
link_if = "{link_if}"
""",
    "inner": """\
# ferry inner agent, written by `ferry provision` (it never overwrites this file).
# Edit the link addresses, copy the outer host's /etc/ferry/keys/outer.pub here, put the policy
# in /etc/ferry/policy, then: systemctl enable --now ferry-inner.service
[agent]
name = "inner-1"
key = "/etc/ferry/keys/inner.key"
peer_public = "/etc/ferry/keys/outer.pub"
policy = "/etc/ferry/policy"
audit_dir = "/var/log/ferry/inner"
state_dir = "/var/lib/ferry/inner/state"

[link]
listen_host = "{inner_addr}"
listen_port = {port}
interface = "{link_if}"

[files]
spool = "/var/lib/ferry/inner/spool"   # consumers: members of group ferry-inner

[management]
socket = "/run/ferry/inner/mgmt.sock"

[kernel]
# ferry-link@inner.service applies these rules (the agent itself has no CAP_NET_ADMIN)
link_if = "{link_if}"
peer_addr = "{outer_addr}"        # the outer agent's address on the link
""",
}

_LINK_ENV = {
    "outer": '# ferry-link@outer.service: the base ruleset\'s definitions (appliance/nftables/base.nft;\n'
             '# INGEST_*: the ports of [[video]] listen and SIP) and `ferry kernel link-up --role outer`\n'
             'FERRY_NFT_BASE="-D LINK_IF={link_if} -D LINK_PORT={port} -D ADMIN_IF=eth0 -D ADMIN_TCP={{22}} '
             '-D INGEST_IF=eth1 -D INGEST_UDP={{5060}} -D INGEST_TCP={{5060}}"\n'
             'FERRY_LINK_UP="--if {link_if} --address {outer_addr}/30 --peer-ip {inner_addr} '
             '--peer-mac 02:00:00:00:09:02"\n',
    "inner": '# ferry-link@inner.service: the base ruleset\'s definitions (appliance/nftables/base.nft;\n'
             '# no ingest on the inner host) and `ferry kernel link-up --role inner`\n'
             'FERRY_NFT_BASE="-D LINK_IF={link_if} -D LINK_PORT={port} -D ADMIN_IF=eth0 -D ADMIN_TCP={{22}} '
             '-D INGEST_IF=none -D INGEST_UDP={{9}} -D INGEST_TCP={{9}}"\n'
             'FERRY_LINK_UP="--if {link_if} --address {inner_addr}/30"\n',
}


_DESCRIPTION = """First-boot set-up of a ferry appliance host, or of an image's root with --root.

Creates the users ferry-outer and ferry-inner (systemd-sysusers), the folders under /etc/ferry,
/var/lib/ferry and /var/log/ferry with their owners and modes, this host's SM2 key pair if absent
(the private key 0600, owned by the agent's user), a sample configuration /etc/ferry/ROLE.toml
and the link parameters /etc/ferry/link-ROLE.env. Never overwrites a file; sets owners and modes
again and prints each change. With --root DIR nothing on this host changes; an image build adds
--no-keys, so that each host makes its own key pair at first boot (ferry-provision@ROLE.service).

Exit status: 0 ok; 2 usage or I/O error (the message names the file)."""


class ProvisionError(Exception):
    """A step failed; the message names the file."""


@dataclass(frozen=True)
class Entry:
    """One path the appliance needs: owner user/group names ('root' or a service user), mode."""
    path: str
    user: str
    group: str
    mode: int
    kind: str = "dir"            # dir | file


def layout(role: str) -> list[Entry]:
    """The directories of one role, in creation order (README "Operations" lists them)."""
    u = f"ferry-{role}"
    return [
        Entry("/etc/ferry", "root", "root", 0o755),
        Entry("/etc/ferry/keys", "root", "root", 0o755),
        Entry("/etc/ferry/policy", "root", "root", 0o755),
        Entry("/var/lib/ferry", "root", "root", 0o755),
        Entry(f"/var/lib/ferry/{role}", u, u, 0o750),
        Entry(f"/var/lib/ferry/{role}/state", u, u, 0o700),
        # outer: writers in group ferry-outer add files; inner: consumers in group ferry-inner take them
        Entry(f"/var/lib/ferry/{role}/spool", u, u, 0o770),
        Entry("/var/log/ferry", "root", "root", 0o755),
        Entry(f"/var/log/ferry/{role}", u, u, 0o750),
    ]


class Provisioner:
    def __init__(self, root: Path, say=print) -> None:
        self.root = root
        self.say = say

    def at(self, path: str) -> Path:
        """``path`` under the root; refuses a symbolic link on the way (under --root, an absolute
        link such as var/run -> /run would lead out of the image onto the build host)."""
        p = self.root
        for part in Path(path.lstrip("/")).parts:
            p = p / part
            if p.is_symlink():
                raise ProvisionError(f"{p}: a symbolic link, refusing to follow it")
        return p

    # -- users ---------------------------------------------------------------
    def users(self) -> None:
        args = ["systemd-sysusers", "--inline", *SYSUSERS.splitlines()]
        if self.root != Path("/"):
            args[1:1] = [f"--root={self.root}"]
            self.at("/etc").mkdir(parents=True, exist_ok=True)
        try:
            done = subprocess.run(args, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise ProvisionError(f"cannot run systemd-sysusers: {e}") from None
        if done.returncode != 0:
            raise ProvisionError(f"systemd-sysusers failed: {done.stderr.strip()}")

    def ids(self, name: str) -> tuple[int, int]:
        """(uid, gid) of user ``name`` in the root's /etc/passwd (root is 0, 0)."""
        if name == "root":
            return 0, 0
        passwd = self.at("/etc/passwd")
        try:
            lines = passwd.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise ProvisionError(f"{passwd}: cannot read: {e}") from None
        for number, line in enumerate(lines, 1):
            parts = line.split(":")
            if len(parts) >= 4 and parts[0] == name:
                if not (parts[2].isdigit() and parts[3].isdigit()):
                    raise ProvisionError(f"{passwd}, line {number}: uid or gid of {name} is not a number")
                return int(parts[2]), int(parts[3])
        raise ProvisionError(f"{passwd}: no user {name} (systemd-sysusers should have made it)")

    # -- paths ---------------------------------------------------------------
    def ensure(self, e: Entry) -> None:
        p = self.at(e.path)
        if e.kind == "dir":
            if p.is_symlink() or (p.exists() and not p.is_dir()):
                raise ProvisionError(f"{p}: exists and is not a directory")
            if not p.exists():
                p.mkdir(mode=0o700, parents=True)
                self.say(f"created {p}")
        uid, _ = self.ids(e.user)
        _, gid = self.ids(e.group)
        st = p.lstat()
        if (st.st_uid, st.st_gid) != (uid, gid):
            os.lchown(p, uid, gid)
            self.say(f"owner of {p}: {e.user}:{e.group}")
        if st.st_mode & 0o7777 != e.mode:
            os.chmod(p, e.mode)
            self.say(f"mode of {p}: {e.mode:04o}")

    def write_new(self, path: str, text: str, user: str, group: str, mode: int) -> None:
        """Write ``text`` unless the file exists; owner and mode are set either way."""
        p = self.at(path)
        if not p.exists():
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            self.say(f"wrote {p}")
        self.ensure(Entry(path, user, group, mode, kind="file"))

    # -- steps ---------------------------------------------------------------
    def keys(self, role: str) -> None:
        keydir = self.at("/etc/ferry/keys")
        if not (keydir / f"{role}.key").exists():
            try:
                written = init_keys(keydir, (role,))
            except CryptoError as e:
                raise ProvisionError(str(e)) from None
            for p in written:
                self.say(f"wrote {p}")
        self.ensure(Entry(f"/etc/ferry/keys/{role}.key", f"ferry-{role}", f"ferry-{role}", 0o600, "file"))
        self.ensure(Entry(f"/etc/ferry/keys/{role}.pub", "root", "root", 0o644, "file"))

    def peer_public(self, role: str, text: str | None) -> None:
        peer = PEER[role]
        dest = f"/etc/ferry/keys/{peer}.pub"
        if text is not None and not self.at(dest).exists():
            self.write_new(dest, text, "root", "root", 0o644)
        elif not self.at(dest).exists():
            self.say(f"note: copy the {peer} host's {dest} to {self.at(dest)} before starting ferry-{role}")

    def policy(self, source: Path | None) -> None:
        folder = self.at("/etc/ferry/policy")
        if source is None:
            if not any(folder.iterdir()):
                self.say(f"note: put the policy in {folder} (ferry policy check DIR first)")
            return
        if not source.is_dir():
            raise ProvisionError(f"{source} (--policy): not a directory")
        for src in sorted(source.rglob("*")):
            rel = src.relative_to(source)
            dest = folder / rel
            if src.is_dir():
                self.ensure(Entry(f"/etc/ferry/policy/{rel}", "root", "root", 0o755))
            elif src.suffix in (".yaml", ".yml") and not dest.exists():
                shutil.copyfile(src, dest)
                os.chmod(dest, 0o644)
                self.say(f"wrote {dest}")

    def role(self, role: str, peer_public: str | None, keys: bool = True) -> None:
        for e in layout(role):
            self.ensure(e)
        if keys:
            self.keys(role)
        self.peer_public(role, peer_public)
        values = {"link_if": LINK_IF, "port": LINK_PORT,
                  "outer_addr": LINK_ADDR["outer"], "inner_addr": LINK_ADDR["inner"]}
        self.write_new(f"/etc/ferry/{role}.toml", _SAMPLE[role].format(**values), "root", f"ferry-{role}", 0o640)
        self.write_new(f"/etc/ferry/link-{role}.env", _LINK_ENV[role].format(**values), "root", "root", 0o644)


def provision(root: Path, roles: tuple[str, ...], *, policy: Path | None = None,
              peer_public: Path | None = None, keys: bool = True, say=print) -> None:
    """Provision ``roles`` under ``root``; ProvisionError names what failed. ``keys=False`` (an
    image build) leaves the key pair to ferry-provision@ROLE.service at the host's first boot."""
    if not root.is_dir():
        raise ProvisionError(f"{root} (--root): not a directory")
    peer_text = None
    if peer_public is not None:          # checked before anything changes
        try:
            peer_text = peer_public.read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as e:
            raise ProvisionError(f"{peer_public} (--peer-public): cannot read: {e}") from None
        try:
            SM2PublicKey.from_pem(peer_text.encode("ascii"))
        except CryptoError as e:
            raise ProvisionError(f"{peer_public} (--peer-public): not a PEM public key: {e}") from None
    p = Provisioner(root, say)
    try:
        p.users()
        for role in roles:
            p.role(role, None if len(roles) > 1 else peer_text, keys)
        p.policy(policy)
    except OSError as e:
        raise ProvisionError(f"{e.filename or root}: {e.strerror}") from None


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Register ``provision`` on an argparse subparsers object."""
    p = subparsers.add_parser("provision", help="first-boot set-up: users, directories, keys, sample config",
                              description=_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--role", required=True, choices=("outer", "inner", "both"),
                   help="which agent this host runs (both: a test host running the two)")
    p.add_argument("--root", type=Path, default=Path("/"),
                   help="provision the root file system under DIR instead of this host (default /)")
    p.add_argument("--policy", type=Path, help="copy this policy folder to /etc/ferry/policy (files absent there)")
    p.add_argument("--peer-public", type=Path,
                   help="the other host's public key (outer: inner.pub; inner: outer.pub), copied if absent")
    p.add_argument("--no-keys", action="store_true",
                   help="no key pair (an image build: each host makes its own at first boot)")
    p.set_defaults(func=cmd_provision)
    return p


def cmd_provision(args: argparse.Namespace) -> int:
    roles = ROLES if args.role == "both" else (args.role,)
    try:
        provision(args.root, roles, policy=args.policy, peer_public=args.peer_public, keys=not args.no_keys)
    except ProvisionError as e:
        print(f"ferry provision: {e}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK
