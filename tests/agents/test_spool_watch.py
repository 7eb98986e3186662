"""SpoolWatcher on a real folder: a settled file is read only if it is still the file that settled
(before, during and after the read, and just before sealing), never while another process has it
open for writing; names writers are still using are reported once."""
from __future__ import annotations

import errno
import fcntl
import logging
import os
import signal

import pytest

from ferry.agents import spool as spool_mod
from ferry.agents.spool import SpoolWatcher, StillWriting, open_for_writing


@pytest.fixture(autouse=True)
def _restore_sigio():
    before = signal.getsignal(signal.SIGIO)
    yield
    signal.signal(signal.SIGIO, before)


def _settled(w: SpoolWatcher, name: str):
    w.scan(0.0)
    ready = {e.name: e for e in w.scan(10.0)}
    return ready[name]


def test_an_unchanged_file_is_read_and_rechecked(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"hello\n")
    w = SpoolWatcher(tmp_path, settle=1.0)
    e = _settled(w, "a.txt")
    assert e.stat is not None and e.stat.size == 6
    assert w.read(e, 100) == b"hello\n"
    w.recheck(e)
    assert w.read(e, 5) is None                                    # over the limit: refused as too large


def test_a_file_appended_after_it_settled_is_not_read(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"first half\n")
    w = SpoolWatcher(tmp_path, settle=1.0)
    e = _settled(w, "a.txt")
    with open(tmp_path / "a.txt", "ab") as f:
        f.write(b"second half\n")
    with pytest.raises(StillWriting, match="size 11 -> 23 bytes since it settled"):
        w.read(e, 100)


@pytest.mark.parametrize("during, message", [
    ("truncate", "size 12 -> 4 bytes while it was read"),
    ("append", "size 12 -> 20 bytes while it was read"),
    # renamed over: the file read lost its name (its ctime moves), the name is another inode
    ("rename", r"(changed \(ctime\)|replaced by another file).* while it was read"),
])
def test_a_file_changed_during_the_read_is_not_taken(tmp_path, monkeypatch, during, message):
    path = tmp_path / "a.txt"
    path.write_bytes(b"whole file!\n")
    w = SpoolWatcher(tmp_path, settle=1.0)
    e = _settled(w, "a.txt")
    real = spool_mod._read_to_end

    def racing(fd, max_size):                # the writer acts between the checks and the read
        if during == "truncate":
            os.truncate(path, 4)
        elif during == "append":
            with open(path, "ab") as f:
                f.write(b"and more")
        else:
            (tmp_path / "new").write_bytes(b"whole file!\n")
            os.rename(tmp_path / "new", path)
        return real(fd, max_size)

    monkeypatch.setattr(spool_mod, "_read_to_end", racing)
    with pytest.raises(StillWriting, match=message):
        w.read(e, 100)


def test_a_file_rewritten_with_its_mtime_set_back_is_caught_by_ctime(tmp_path):
    path = tmp_path / "a.txt"
    path.write_bytes(b"version 1\n")
    os.utime(path, ns=(10**18, 10**18))
    w = SpoolWatcher(tmp_path, settle=1.0)
    e = _settled(w, "a.txt")
    path.write_bytes(b"version 2\n")                              # same size ...
    os.utime(path, ns=(10**18, 10**18))                          # ... and the old mtime
    with pytest.raises(StillWriting, match="changed \\(ctime\\)"):
        w.read(e, 100)


def test_a_file_open_for_writing_is_not_taken(tmp_path):
    path = tmp_path / "a.txt"
    path.write_bytes(b"half")
    w = SpoolWatcher(tmp_path, settle=1.0)
    e = _settled(w, "a.txt")
    fd = os.open(path, os.O_WRONLY)                               # a writer pausing with the file open
    try:
        with pytest.raises(StillWriting, match="open for writing"):
            w.read(e, 100)
        with pytest.raises(StillWriting, match="open for writing"):
            w.recheck(e)
    finally:
        os.close(fd)
    assert w.read(e, 100) == b"half"                              # closed: the same file, taken
    assert signal.getsignal(signal.SIGIO) == signal.SIG_IGN       # a lease broken while held cannot kill us


def test_open_for_writing_lets_the_lease_go(tmp_path):
    path = tmp_path / "a"
    path.write_bytes(b"x")
    fd = os.open(path, os.O_RDONLY)
    try:
        assert open_for_writing(fd) is False
        assert fcntl.fcntl(fd, fcntl.F_GETLEASE) == fcntl.F_UNLCK
    finally:
        os.close(fd)


def test_without_leases_only_the_stat_is_checked_and_that_is_logged_once(tmp_path, monkeypatch, caplog):
    real = fcntl.fcntl

    def no_leases(fd, cmd, *args):
        if cmd == fcntl.F_SETLEASE:
            raise OSError(errno.EACCES, "Permission denied")
        return real(fd, cmd, *args)

    monkeypatch.setattr(spool_mod.fcntl, "fcntl", no_leases)
    for name in ("a.txt", "b.txt"):
        (tmp_path / name).write_bytes(b"x")
    w = SpoolWatcher(tmp_path, settle=1.0)
    w.scan(0.0)
    ready = w.scan(10.0)
    with caplog.at_level(logging.WARNING, logger="ferry.spool"):
        assert [w.read(e, 10) for e in ready] == [b"x", b"x"]
    assert w.leases is False
    assert len([r for r in caplog.records if "CAP_LEASE" in r.getMessage()]) == 1


def test_recheck_before_sealing(tmp_path):
    path = tmp_path / "a.txt"
    path.write_bytes(b"abc")
    w = SpoolWatcher(tmp_path, settle=1.0)
    e = _settled(w, "a.txt")
    assert w.read(e, 10) == b"abc"
    path.write_bytes(b"abcdef")
    with pytest.raises(StillWriting, match="size 3 -> 6 bytes before it was sealed"):
        w.recheck(e)
    path.unlink()
    with pytest.raises(FileNotFoundError):
        w.recheck(e)


def test_a_symlink_swapped_in_is_neither_followed_nor_taken(tmp_path):
    path = tmp_path / "a.txt"
    path.write_bytes(b"abc")
    w = SpoolWatcher(tmp_path, settle=1.0)
    e = _settled(w, "a.txt")
    path.unlink()
    os.symlink("/etc/hostname", path)
    with pytest.raises(OSError):
        w.read(e, 100)
    with pytest.raises(StillWriting, match="replaced by another file|mode 100644 -> 120777"):   # inode reused or not
        w.recheck(e)


def test_a_busy_file_is_not_ready_again_before_its_wait(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"abc")
    w = SpoolWatcher(tmp_path, settle=0.2)
    w.scan(0.0)
    assert [e.name for e in w.scan(0.3)] == ["a.txt"]
    assert w.busy("a.txt", 0.3) == 0.5
    assert w.scan(0.5) == [] and w.scan(0.7) == []
    assert [e.name for e in w.scan(0.9)] == ["a.txt"]
    assert w.first_busy("a.txt") and not w.first_busy("a.txt")


def test_partial_names_are_reported_once_and_a_rename_makes_them_candidates(tmp_path):
    for name in (".hidden", "x.part", "y.tmp", "ok.txt"):
        (tmp_path / name).write_bytes(b"1")
    w = SpoolWatcher(tmp_path, settle=0.5)
    w.scan(0.0)
    assert w.partial_names() == [".hidden", "x.part", "y.tmp"]
    for t in range(1, 20):                                        # many scans: nothing more to record
        ready = w.scan(t / 10)
        assert w.partial_names() == []
        assert {e.name for e in ready} <= {"ok.txt"}
    os.rename(tmp_path / "x.part", tmp_path / "x.txt")
    w.scan(3.0)
    assert [e.name for e in w.scan(4.0)] == ["ok.txt", "x.txt"]
    assert w.partial_names() == []


def test_recheck_of_an_unreadable_file_relies_on_its_stat(tmp_path, monkeypatch):
    path = tmp_path / "a.txt"
    path.write_bytes(b"abc")
    w = SpoolWatcher(tmp_path, settle=1.0)
    e = _settled(w, "a.txt")
    real = os.open

    def denied(p, flags, *args):
        if str(p) == str(path):
            raise PermissionError(errno.EACCES, "Permission denied", str(p))
        return real(p, flags, *args)

    monkeypatch.setattr(os, "open", denied)
    with pytest.raises(PermissionError):
        w.read(e, 10)                      # the agent refuses it as unreadable ...
    w.recheck(e)                           # ... after checking it is still the entry that settled


def test_a_file_held_open_forever_is_looked_at_ever_less_often_and_never_read(tmp_path, monkeypatch):
    path = tmp_path / "log.txt"
    path.write_bytes(b"line\n")
    reads = []
    real = spool_mod._read_to_end
    monkeypatch.setattr(spool_mod, "_read_to_end", lambda fd, n: reads.append(fd) or real(fd, n))
    w = SpoolWatcher(tmp_path, settle=0.2)
    fd = os.open(path, os.O_WRONLY)
    looks = []
    try:
        for tick in range(1200):                                  # 120 s of scans every 0.1 s
            now = tick / 10
            for e in w.scan(now):
                looks.append(now)
                with pytest.raises(StillWriting):
                    w.read(e, 100)
                w.busy(e.name, now)
    finally:
        os.close(fd)
    assert reads == []
    # waits of 0.5, 1, 2 ... 30 s: 7 looks to reach the cap, then one each 30 s
    assert 8 <= len(looks) <= 12, looks
    assert looks[-1] - looks[-2] >= 30.0
