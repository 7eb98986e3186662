"""Run ``python -m MODULE ARGS...`` with memory that cannot be made executable.

    python sandbox_run.py MODULE ARGS...     run the module under PR_SET_MDWE
    python sandbox_run.py --check            exit 0 if a writable+executable mapping is refused

systemd's MemoryDenyWriteExecute=yes refuses writable-and-executable mappings and making
memory executable later (systemd 252 with a seccomp filter; 256 and later with this same
prctl where the kernel has it, Linux 6.3+). Without systemd as PID 1 here, the tests run the
agents under the prctl to show they work with it: the interpreter, its C extensions
(cryptography's cffi, gmssl-pyx, Pillow, PyAV) and ctypes (libffi's static trampolines) need
no writable executable memory.
"""
from __future__ import annotations

import ctypes
import mmap
import runpy
import sys

PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1


def deny_write_execute() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
        sys.exit(f"sandbox_run: PR_SET_MDWE refused (errno {ctypes.get_errno()}): the kernel is older than 6.3")


def main() -> None:
    deny_write_execute()
    if sys.argv[1:] == ["--check"]:
        try:
            mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        except OSError:
            sys.exit(0)
        sys.exit("sandbox_run: a writable and executable mapping was allowed")
    module = sys.argv[1]
    sys.argv = [module, *sys.argv[2:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
