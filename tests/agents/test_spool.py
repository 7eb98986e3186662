import os

import pytest

from ferry.agents import spool
from ferry.agents.spool import (SpoolWatcher, discard, free_name, leftovers, move_aside, publish, read_whole_file,
                                write_temporary)
from ferry.lanes.delivered import is_leftover, temp_name


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


def test_a_file_is_written_under_its_temporary_name_and_put_in_place_without_overwriting(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"old")
    temp = temp_name(7, "ab12")
    write_temporary(tmp_path, temp, b"new")
    assert (tmp_path / temp).read_bytes() == b"new"
    with pytest.raises(FileExistsError):           # a temporary name is never reused
        write_temporary(tmp_path, temp, b"other")
    assert (tmp_path / temp).read_bytes() == b"new"
    name = free_name(tmp_path, ["a.txt", "a (1).txt", "a (2).txt"], claimed={"a (1).txt"})
    assert name == "a (2).txt"                      # taken on disk, claimed by a file waiting for its record
    with pytest.raises(FileExistsError):
        publish(tmp_path, temp, "a.txt")
    assert (tmp_path / "a.txt").read_bytes() == b"old" and (tmp_path / temp).exists()
    assert publish(tmp_path, temp, name) == tmp_path / name
    assert sorted(os.listdir(tmp_path)) == ["a (2).txt", "a.txt"] and (tmp_path / name).read_bytes() == b"new"
    assert free_name(tmp_path, ["a.txt"]) is None and free_name(tmp_path, ["../x"]) is None


def test_publishing_without_renameat2_links_and_finishes_an_interrupted_link(tmp_path, monkeypatch):
    monkeypatch.setattr(spool, "_renameat2", None)    # a file system or libc without RENAME_NOREPLACE
    temp = temp_name(8, "cd")
    write_temporary(tmp_path, temp, b"x")
    (tmp_path / "b.txt").write_bytes(b"other")
    with pytest.raises(FileExistsError):
        publish(tmp_path, temp, "b.txt")
    assert (tmp_path / "b.txt").read_bytes() == b"other"
    os.link(tmp_path / temp, tmp_path / "c.txt")    # a crash between link and unlink
    publish(tmp_path, temp, "c.txt")
    assert sorted(os.listdir(tmp_path)) == ["b.txt", "c.txt"]


def test_a_failed_temporary_write_leaves_nothing(tmp_path, monkeypatch):
    def fail(fd):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(OSError, match="No space"):
        write_temporary(tmp_path, temp_name(9, "ef"), b"x" * 1000)
    assert os.listdir(tmp_path) == []


def test_leftovers_are_ferry_temporary_regular_files(tmp_path):
    mine, legacy = temp_name(10, "0a"), ".ferry-1234-abcdef.tmp"
    for n in (mine, legacy, ".hidden.tmp", "a.txt", ".ferry-x"):
        (tmp_path / n).write_bytes(b"1")
    os.symlink("/etc/passwd", tmp_path / temp_name(11, "0b"))
    assert [n for n, _ in leftovers(tmp_path, is_leftover)] == sorted([mine, legacy])
    discard(tmp_path, mine)
    discard(tmp_path, mine)                          # gone already is fine
    assert [n for n, _ in leftovers(tmp_path, is_leftover)] == [legacy]
    assert leftovers(tmp_path / "none", is_leftover) == []


def test_move_aside(tmp_path):
    (tmp_path / "x").write_bytes(b"1")
    q = tmp_path / "q"
    assert move_aside(tmp_path / "x", q) == q / "x"
    (tmp_path / "x").write_bytes(b"2")
    assert move_aside(tmp_path / "x", q) == q / "x.1"
