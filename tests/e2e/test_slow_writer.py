"""Slow writers and dot-names on the outer spool, with real agent processes: a file is taken only
whole (a writer that pauses longer than `settle`, a file rewritten in place while the agent reads
it), and a name a writer is still using (`.name`, `name.part`) is never taken and recorded once."""
from __future__ import annotations

import ctypes
import os
import random
import struct
import threading
import time

import pytest

from appliance import Appliance, read_trail
from ferry.crypto import sm3

pytestmark = pytest.mark.e2e


def _text(size: int, seed: int) -> bytes:
    """Plain text (any prefix of it is text too): the policy's files rule takes .txt up to 1 MiB."""
    rng = random.Random(seed)
    out = b"".join(b"record %08d %016x\n" % (i, rng.getrandbits(64)) for i in range(size // 32 + 1))
    return out[:size - 1] + b"\n"


def _outer(a: Appliance, event: str) -> list[dict]:
    return [r for r in read_trail(a.outer_audit) if r["event"] == event]


def _inner(a: Appliance, event: str) -> list[dict]:
    return [r for r in read_trail(a.inner_audit) if r["event"] == event]


def _delivered_whole(a: Appliance, name: str, content: bytes) -> bool:
    p = a.inner_spool / name
    return p.exists() and p.read_bytes() == content


def _crossed_once_and_whole(a: Appliance, name: str, content: bytes) -> None:
    """The inner spool holds exactly `content` under `name`, sent once, and nothing else of it."""
    sent = [r for r in _outer(a, "object_sent") if r["detail"]["name"] == name]
    assert len(sent) == 1, f"{name} sent {len(sent)} times"
    assert sent[0]["sm3"] == sm3(content).hex() and sent[0]["size"] == len(content)
    delivered = _inner(a, "object_delivered")
    assert [r["sm3"] for r in delivered if r["detail"]["name"] == name] == [sm3(content).hex()]
    assert sorted(os.listdir(a.inner_spool)) == [name]                # no truncated copy under another name
    assert not _outer(a, "object_refused") and not _inner(a, "object_refused")
    assert not _inner(a, "object_lost") and not _inner(a, "block_lost")


def test_a_writer_pausing_longer_than_settle_gets_its_whole_file_across_once(appliance_factory):
    a = appliance_factory().start()
    content = _text(300_000, 1)
    half = len(content) // 2
    fd = os.open(a.outer_spool / "slow.txt", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(fd, content[:half])
        # the writer pauses: 7 settle times (0.2 s) and many scans (0.1 s); time is the scenario
        time.sleep(1.4)
        os.write(fd, content[half:])
    finally:
        os.close(fd)
    a.wait_for(lambda: [r for r in _inner(a, "object_delivered") if r["detail"]["name"] == "slow.txt"], 30,
               "slow.txt delivered")
    a.wait_for(lambda: not (a.outer_spool / "slow.txt").exists(), 10, "slow.txt removed from the spool")
    _crossed_once_and_whole(a, "slow.txt", content)
    waiting = [r for r in _outer(a, "spool_waiting") if r["detail"]["name"] == "slow.txt"]
    assert len(waiting) == 1 and waiting[0]["code"] == "still_writing" and waiting[0]["verdict"] == "info"
    assert "open for writing" in waiting[0]["reason"]


# --- a writer rewriting the file in place while the agent reads it -------------------------------
# fanotify permission events stop the agent's read() until this test answers: the test rewrites the
# file in place (truncate, first half) inside the agent's first read, answers, and writes the rest
# once the agent has read to the end. Nothing in the agent knows about the test.

_FAN_CLASS_CONTENT, _FAN_CLOEXEC, _FAN_MARK_ADD, _FAN_ACCESS_PERM, _FAN_ALLOW = 0x4, 0x1, 0x1, 0x20000, 0x1
_EVENT = struct.Struct("IBBHQii")        # fanotify_event_metadata
_RESPONSE = struct.Struct("iI")          # fanotify_response


class ReadInterceptor:
    """Answers every read of one file (by inode): calls `on_read(n)` before answering the n-th
    read (n = 1, 2, ...), `after_read(n)` after."""

    def __init__(self, path, on_read, after_read) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.fanotify_mark.argtypes = [ctypes.c_int, ctypes.c_uint, ctypes.c_uint64, ctypes.c_int, ctypes.c_char_p]
        self.fd = libc.fanotify_init(_FAN_CLASS_CONTENT | _FAN_CLOEXEC, os.O_RDONLY)
        if self.fd < 0:
            pytest.skip(f"fanotify permission events unavailable: {os.strerror(ctypes.get_errno())}")
        if libc.fanotify_mark(self.fd, _FAN_MARK_ADD, _FAN_ACCESS_PERM, -100, os.fsencode(path)) != 0:
            os.close(self.fd)
            pytest.skip(f"fanotify_mark: {os.strerror(ctypes.get_errno())}")
        self.on_read, self.after_read = on_read, after_read
        self.reads = 0
        self.stopping = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopping:
            try:
                buf = os.read(self.fd, 4096)
            except OSError:
                return
            for off in range(0, len(buf), _EVENT.size):
                _, _, _, _, mask, fd, _ = _EVENT.unpack_from(buf, off)
                if not mask & _FAN_ACCESS_PERM:
                    os.close(fd)
                    continue
                self.reads += 1
                try:
                    self.on_read(self.reads)
                finally:
                    os.write(self.fd, _RESPONSE.pack(fd, _FAN_ALLOW))
                    os.close(fd)
                self.after_read(self.reads)

    def close(self) -> None:
        self.stopping = True
        os.close(self.fd)         # answers anything pending with "allow"


def test_a_file_rewritten_in_place_during_the_read_is_not_sent_truncated(appliance_factory):
    a = appliance_factory().start()
    content = _text(200_000, 2)
    half = len(content) // 2
    staging = a.work / "staging"
    staging.mkdir()
    (staging / "rewritten.txt").write_bytes(content)
    target = a.outer_spool / "rewritten.txt"
    rest_written = threading.Event()

    def on_read(n: int) -> None:
        if n == 1:        # the agent's first read(): the writer starts over in place, first half
            with open(target, "r+b") as f:
                f.truncate(0)
                f.write(content[:half])

    def after_read(n: int) -> None:
        if n == 2:        # the agent has read to the end of the shorter file: the writer goes on
            fd = os.open(target, os.O_WRONLY | os.O_CREAT, 0o644)
            try:
                os.pwrite(fd, content[half:], half)
            finally:
                os.close(fd)
            rest_written.set()

    spy = ReadInterceptor(staging / "rewritten.txt", on_read, after_read)   # marks the inode: follows the rename
    try:
        os.rename(staging / "rewritten.txt", target)
        a.wait_for(rest_written.is_set, 30, "the agent reading the file")
        a.wait_for(lambda: [r for r in _inner(a, "object_delivered") if r["detail"]["name"] == "rewritten.txt"],
                   30, "rewritten.txt delivered")
        a.wait_for(lambda: not target.exists(), 10, "rewritten.txt removed from the spool")
    finally:
        spy.close()
    _crossed_once_and_whole(a, "rewritten.txt", content)
    assert spy.reads >= 4            # read twice: the rewritten first version, then the whole file
    waiting = [r for r in _outer(a, "spool_waiting") if r["detail"]["name"] == "rewritten.txt"]
    assert len(waiting) == 1 and waiting[0]["code"] == "still_writing"
    assert "while it was read" in waiting[0]["reason"]          # found by the check after reading


def test_dot_names_and_partial_names_are_never_sent_and_recorded_once(appliance_factory):
    a = appliance_factory().start()
    names = {".hidden": b"secret\n", "x.part": b"half", ".upload.pdf": b"%PDF-1.4\nabc"}
    for name, content in names.items():
        (a.outer_spool / name).write_bytes(content)
    a.wait_for(lambda: {r["detail"]["name"] for r in _outer(a, "spool_waiting")} >= set(names), 20,
               "the waiting names recorded")
    # many scans (scan_interval 0.1 s) go by: time is the scenario
    time.sleep(1.5)
    a.drop("after.txt", b"later\n")
    a.wait_for(lambda: (a.inner_spool / "after.txt").exists(), 30, "after.txt delivered")
    waiting = _outer(a, "spool_waiting")
    assert sorted(r["detail"]["name"] for r in waiting) == sorted(names)      # each exactly once
    assert all(r["verdict"] == "info" and r["code"] == "partial_name" and r["lane"] == "files" for r in waiting)
    assert sorted(os.listdir(a.outer_spool)) == sorted(names)                 # left alone
    assert sorted(os.listdir(a.inner_spool)) == ["after.txt"]
    assert not _outer(a, "object_refused")
    # the writer's last step: the rename makes it an ordinary spool file, taken as usual
    full = b"half and the rest\n"
    (a.outer_spool / "x.part").write_bytes(full)
    os.rename(a.outer_spool / "x.part", a.outer_spool / "x.txt")
    a.wait_for(lambda: _delivered_whole(a, "x.txt", full), 30, "x.txt delivered")
    assert len(_outer(a, "spool_waiting")) == len(names)
