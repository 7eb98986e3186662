"""Run ``python -m MODULE ARGS...`` under the agents' units' system-call filter and with
memory that cannot be made executable.

    python sandbox_run.py MODULE ARGS...     run the module under both
    python sandbox_run.py --exec PROG ARGS...  run a program under both (they survive execve)
    python sandbox_run.py --check            exit 0 if all hold: a writable+executable mapping, a
                                             filtered system call (sched_setaffinity) and a socket
                                             of another address family (AF_NETLINK) are refused

The system-call filter is the units' (SystemCallFilter=@system-service, then
~@privileged @resources, SystemCallErrorNumber=EPERM): the groups are expanded from
`systemd-analyze syscall-filter` and loaded with libseccomp, as systemd does (needs
no_new_privs: run under `setpriv --no-new-privs`). SANDBOX_DENY replaces the groups taken out.
socket() may create only the address families of RestrictAddressFamilies= (SANDBOX_FAMILIES,
default AF_UNIX AF_INET AF_INET6), as systemd enforces it, with seccomp.

systemd's MemoryDenyWriteExecute=yes refuses writable-and-executable mappings and making
memory executable later (systemd 252 with a seccomp filter; 256 and later with this same
prctl where the kernel has it, Linux 6.3+). Without systemd as PID 1 here, the tests run the
agents under the prctl to show they work with it: the interpreter, its C extensions
(cryptography's cffi, gmssl-pyx, Pillow, PyAV) and ctypes (libffi's static trampolines) need
no writable executable memory.
"""
from __future__ import annotations

import ctypes
import errno
import mmap
import os
import runpy
import socket
import subprocess
import sys

PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1
SCMP_ACT_ALLOW = 0x7FFF0000
ALLOW = ["@system-service"]
DENY = os.environ.get("SANDBOX_DENY", "@privileged @resources").split()   # ferry-provision@: @resources
FAMILIES = os.environ.get("SANDBOX_FAMILIES", "AF_UNIX AF_INET AF_INET6").split()   # socket() may make these only
SCMP_CMP_EQ = 4


class ArgCmp(ctypes.Structure):
    """libseccomp's struct scmp_arg_cmp."""
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("datum_a", ctypes.c_uint64),
                ("datum_b", ctypes.c_uint64)]


def syscall_groups() -> dict[str, list[str]]:
    """systemd's groups: "@name" -> its members (system calls and other groups)."""
    text = subprocess.run(["systemd-analyze", "syscall-filter", "--no-pager"], capture_output=True, text=True,
                          check=True).stdout
    groups: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        word = line.strip()
        if not word or word.startswith("#"):
            continue
        if not line.startswith(" ") and word.startswith("@"):
            current = groups.setdefault(word, [])
        elif current is not None and line.startswith(" "):
            current.append(word)
    return groups


def expand(names: list[str], groups: dict[str, list[str]]) -> set[str]:
    out: set[str] = set()
    for n in names:
        out |= expand(groups[n], groups) if n.startswith("@") else {n}
    return out


def filter_system_calls() -> int:
    """Load the units' filter; returns how many system calls it allows."""
    groups = syscall_groups()
    allowed = sorted(expand(ALLOW, groups) - expand(DENY, groups))
    lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_rule_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint,
                                           ctypes.POINTER(ArgCmp)]
    ctx = lib.seccomp_init(0x00050000 | errno.EPERM)          # SCMP_ACT_ERRNO(EPERM)
    n = 0
    for name in allowed:
        nr = lib.seccomp_syscall_resolve_name(name.encode())
        if nr < 0:
            continue                                          # not a system call of this architecture
        if name == "socket":                                  # RestrictAddressFamilies=
            for family in FAMILIES:
                cmp = ArgCmp(0, SCMP_CMP_EQ, getattr(socket, family), 0)
                if lib.seccomp_rule_add_array(ctx, SCMP_ACT_ALLOW, nr, 1, ctypes.byref(cmp)) != 0:
                    sys.exit(f"sandbox_run: cannot add the {family} rule")
            n += 1
        elif lib.seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 0) == 0:
            n += 1
    rc = lib.seccomp_load(ctx)
    if rc != 0:
        sys.exit(f"sandbox_run: seccomp_load failed ({rc}): run under setpriv --no-new-privs")
    return n


def deny_write_execute() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
        sys.exit(f"sandbox_run: PR_SET_MDWE refused (errno {ctypes.get_errno()}): the kernel is older than 6.3")


def main() -> None:
    deny_write_execute()
    filter_system_calls()
    if sys.argv[1:] == ["--check"]:
        try:
            mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
            sys.exit("sandbox_run: a writable and executable mapping was allowed")
        except OSError:
            pass
        try:
            os.sched_setaffinity(0, os.sched_getaffinity(0))
            sys.exit("sandbox_run: sched_setaffinity (@resources) was allowed")
        except OSError as e:
            if e.errno != errno.EPERM:
                raise
        try:
            socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0).close()
            if "AF_NETLINK" not in FAMILIES:
                sys.exit("sandbox_run: a netlink socket was allowed")
        except OSError as e:
            if e.errno != errno.EPERM:
                raise
        sys.exit(0)
    if sys.argv[1] == "--exec":
        os.execvp(sys.argv[2], sys.argv[2:])
    module = sys.argv[1]
    sys.argv = [module, *sys.argv[2:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
