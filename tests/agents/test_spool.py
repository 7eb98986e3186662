import os

import pytest

from ferry.agents.spool import SpoolWatcher, move_aside, read_whole_file, write_atomically


def test_watcher_waits_for_a_settled_file(tmp_path):
    w = SpoolWatcher(tmp_path, settle=1.0)
    (tmp_path / "a.txt").write_bytes(b"1")
    (tmp_path / "b.part").write_bytes(b"1")
    (tmp_path / ".hidden").write_bytes(b"1")
    assert w.scan(0.0) == []
    assert w.scan(0.5) == []
    (tmp_path / "a.txt").write_bytes(b"12")          # still being written
    os.utime(tmp_path / "a.txt", ns=(1, 1))
    assert w.scan(0.9) == []
    assert w.scan(1.5) == []
    ready = w.scan(2.0)
    assert [e.name for e in ready] == ["a.txt"] and ready[0].regular and ready[0].size == 2


def test_watcher_reports_special_files(tmp_path):
    os.mkfifo(tmp_path / "pipe")
    os.symlink("/etc/passwd", tmp_path / "link")
    w = SpoolWatcher(tmp_path, settle=0)
    w.scan(0)
    kinds = {e.name: e.kind for e in w.scan(1)}
    assert kinds == {"pipe": "fifo", "link": "symlink"}


def test_read_whole_file_limits_and_no_symlinks(tmp_path):
    (tmp_path / "f").write_bytes(b"x" * 100)
    assert read_whole_file(tmp_path / "f", 100) == b"x" * 100
    assert read_whole_file(tmp_path / "f", 99) is None
    os.symlink(tmp_path / "f", tmp_path / "l")
    with pytest.raises(OSError):
        read_whole_file(tmp_path / "l", 1000)


def test_write_atomically_never_overwrites(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"old")
    p = write_atomically(tmp_path, ["a.txt", "a (1).txt"], b"new")
    assert p.name == "a (1).txt" and p.read_bytes() == b"new"
    assert (tmp_path / "a.txt").read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path)) == ["a (1).txt", "a.txt"]      # no temporary left
    with pytest.raises(FileExistsError):
        write_atomically(tmp_path, ["a.txt"], b"x")
    assert sorted(os.listdir(tmp_path)) == ["a (1).txt", "a.txt"]


def test_move_aside(tmp_path):
    (tmp_path / "x").write_bytes(b"1")
    q = tmp_path / "q"
    assert move_aside(tmp_path / "x", q) == q / "x"
    (tmp_path / "x").write_bytes(b"2")
    assert move_aside(tmp_path / "x", q) == q / "x.1"
