"""ferry.agents.outer_state: the kept folder and the sent-file journal on disk."""
from __future__ import annotations

from pathlib import Path

from ferry.agents.outer_state import JOURNAL_FILE, OuterState
from ferry.agents.spool import remove_if_same, spool_stat
from ferry.crypto import sm3
from ferry.lanes.sent import Kept


def _kept(oid: int, content: bytes, name: str) -> Kept:
    record = {"event": "object_sent", "object_id": oid, "sm3": sm3(content).hex(),
              "detail": {"name": name}, "source": {"name": "outer-spool", "address": f"/spool/{name}"}}
    return Kept(record, 1_800_000_000.0, str(oid))


def _state(tmp_path: Path) -> OuterState:
    return OuterState(tmp_path / "state", tmp_path / "spool.sent", keep_after_sent=5.0)


def test_kept_files_are_moved_journaled_and_known_after_a_restart(tmp_path):
    spool = tmp_path / "spool"
    spool.mkdir()
    for name in ("a.txt", "b.txt"):
        (spool / name).write_bytes(name.encode())
    st = _state(tmp_path)
    assert st.load() == []
    st.compact()
    done = st.keep([(_kept(1, b"a.txt", "a.txt"), spool / "a.txt", None),
                    (_kept(2, b"b.txt", "b.txt"), spool / "b.txt", None),
                    (_kept(3, b"c", "c.txt"), spool / "c.txt", None)])    # c.txt is not there
    assert [(k.object_id, err is None) for k, _, err in done] == [(1, True), (2, True), (3, False)]
    assert sorted(p.name for p in spool.iterdir()) == []                   # the spool no longer shows them
    assert (tmp_path / "spool.sent" / "1").read_bytes() == b"a.txt"
    st.kept.sealed(1, [0])
    st.append(st.kept.blocks_left(1, 100.0))
    st.remove(st.kept.entries[2])
    st.close()                                                              # kill -9: nothing more
    again = _state(tmp_path)
    assert again.load() == []
    assert sorted(again.kept.entries) == [1] and again.kept.entries[1].left_at == 100.0
    assert again.read(again.kept.entries[1]) == b"a.txt"
    assert again.orphans() == []
    assert not (tmp_path / "spool.sent" / "2").exists()


def test_a_damaged_journal_is_named_and_the_rest_kept(tmp_path):
    st = _state(tmp_path)
    st.load()
    st.keep([])
    st.append(st.kept.keep(_kept(7, b"x", "x.txt")), sync=True)
    st.close()
    with open(tmp_path / "state" / JOURNAL_FILE, "ab") as f:
        f.write(b"garbage")
    again = _state(tmp_path)
    [problem] = again.load()
    assert JOURNAL_FILE in problem and "1 torn or corrupt line" in problem
    assert sorted(again.kept.entries) == [7]
    (tmp_path / "spool.sent" / "stray").write_bytes(b"?")
    assert [p.name for p in again.orphans()] == ["stray"]
    again.compact()
    assert _state(tmp_path).load() == []                                   # compacted: clean again


def test_a_sent_file_a_writer_replaced_since_it_was_read_stays_in_the_spool(tmp_path):
    """The settle saw one file; by the time its object is sealed a writer has renamed a new
    version over it. The new version is not what was sent: it must not be moved into the kept
    folder (to be deleted after keep_after_sent, unsent and unrecorded) nor removed."""
    spool = tmp_path / "spool"
    spool.mkdir()
    (spool / "a.txt").write_bytes(b"first version")
    (spool / "b.txt").write_bytes(b"kept as it was")
    seen_a, seen_b = spool_stat((spool / "a.txt").lstat()), spool_stat((spool / "b.txt").lstat())
    (spool / "a.new").write_bytes(b"second version, not sent yet")
    (spool / "a.new").rename(spool / "a.txt")
    st = _state(tmp_path)
    st.load()
    st.compact()
    done = st.keep([(_kept(1, b"first version", "a.txt"), spool / "a.txt", seen_a),
                    (_kept(2, b"kept as it was", "b.txt"), spool / "b.txt", seen_b)])
    assert [(k.object_id, err is None) for k, _, err in done] == [(1, False), (2, True)]
    assert (spool / "a.txt").read_bytes() == b"second version, not sent yet"
    assert 1 not in st.kept.entries and 2 in st.kept.entries
    # nor does removing a sent file (no state directory, or a file that could not be kept) take it
    assert remove_if_same(spool / "a.txt", seen_a) is not None
    assert (spool / "a.txt").exists()
    (spool / "c.txt").write_bytes(b"c")
    assert remove_if_same(spool / "c.txt", spool_stat((spool / "c.txt").lstat())) is None
    assert not (spool / "c.txt").exists()
