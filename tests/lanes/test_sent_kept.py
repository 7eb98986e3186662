"""ferry.lanes.sent kept files: kept until their last block left plus keep_after_sent, journaled,
and after a restart re-sent, forgotten or named lost."""
from __future__ import annotations

import io

from hypothesis import given, settings, strategies as st

from ferry import limits
from PIL import Image, PngImagePlugin

from ferry.crypto import sm3
from ferry.lanes import cdr
from ferry.lanes.sent import Forget, Kept, KeptFiles, NotResent, Resend, after_restart, as_sent, parse_kept_journal
from ferry.reasons import Reason

WALL = 1_800_000_000.0
CONTENT = b"hello\n"


def _kept(oid=5, content=CONTENT, created=WALL, name="a.txt"):
    record = {"event": "object_sent", "object_id": oid, "sm3": sm3(content).hex(), "lane": "files",
              "detail": {"name": name, "media_type": "text/plain"}, "epoch": 3, "blocks": [10, 11]}
    return Kept(record, created, str(oid))


def test_a_kept_file_is_removed_only_after_its_last_block_left_and_the_keep_time():
    kept = KeptFiles(keep_after_sent=5.0)
    journal = kept.keep(_kept(5)) + kept.keep(_kept(6, name="b.txt"))
    kept.sealed(5, [10, 11])
    kept.sealed(6, [11, 12])
    assert kept.blocks_left(11, WALL) == b""                  # block 11 has not left: neither did
    journal += kept.blocks_left(12, WALL)                     # 5's last block (11) left, not 6's
    assert kept.entries[5].left_at == WALL and kept.entries[6].left_at is None
    assert kept.expired(WALL + 4.9) == []
    assert [k.object_id for k in kept.expired(WALL + 5.0)] == [5]
    journal += kept.gone(5)
    # the journal says the same after a restart
    live, bad = parse_kept_journal(journal)
    assert bad == 0 and sorted(live) == [6] and live[6].left_at is None and live[6].name == "b.txt"
    assert live[6].record == _kept(6, name="b.txt").record and live[6].created == WALL


def test_a_resent_object_is_tied_to_its_new_blocks():
    kept = KeptFiles(5.0)
    kept.keep(_kept(5))
    kept.sealed(5, [3])
    kept.blocks_left(4, WALL)
    kept.sealed(5, [40, 41])                                   # sealed again (a re-send): not left yet
    assert kept.entries[5].left_at is None and kept.blocks_left(41, WALL) == b""
    assert kept.blocks_left(42, WALL + 1) and kept.entries[5].left_at == WALL + 1


def test_after_a_restart():
    k = _kept()
    assert after_restart(k, CONTENT, WALL + 10, 5.0) == Resend()
    changed = after_restart(k, b"other\n", WALL + 10, 5.0)
    assert isinstance(changed, NotResent) and changed.code == Reason.RESEND_CHANGED and "changed" in changed.reason
    vanished = after_restart(k, None, WALL + 10, 5.0)
    assert isinstance(vanished, NotResent) and "vanished" in vanished.reason
    late = WALL + limits.CLOCK_SKEW - limits.RESEND_MARGIN
    assert isinstance(after_restart(k, CONTENT, late - 1, 5.0), Resend)
    too_late = after_restart(k, CONTENT, late, 5.0)
    assert isinstance(too_late, NotResent) and too_late.code == Reason.RESEND_TOO_LATE
    # it left: within its keep time it is re-sent (changed: named lost), after it forgotten;
    # too old: forgotten (the inner agent has had its blocks for long)
    k.left_at = WALL + 10
    assert after_restart(k, CONTENT, WALL + 14, 5.0) == Resend()
    assert isinstance(after_restart(k, CONTENT, WALL + 15, 5.0), Forget)
    assert isinstance(after_restart(k, None, WALL + 15, 5.0), Forget)
    assert isinstance(after_restart(k, None, WALL + 11, 5.0), NotResent)
    assert isinstance(after_restart(k, CONTENT, late, 1e9), Forget)


def test_a_torn_or_corrupt_journal_line_is_skipped_and_counted():
    kept = KeptFiles(5.0)
    good = kept.keep(_kept(5)) + kept.keep(_kept(6))
    flipped = bytearray(good)
    flipped[20] ^= 1                                             # corrupts the first line's JSON
    live, bad = parse_kept_journal(bytes(flipped))
    assert sorted(live) == [6] and bad == 1
    live, bad = parse_kept_journal(good[:-5])                    # torn last line
    assert sorted(live) == [5] and bad == 1
    live, bad = parse_kept_journal(good + b'00000000 {"op":"keep"}\n')
    assert sorted(live) == [5, 6] and bad == 1


def test_compaction_keeps_the_live_entries_only():
    kept = KeptFiles(5.0)
    for oid in range(1, 50):
        kept.keep(_kept(oid))
        kept.sealed(oid, [oid])
    kept.blocks_left(10, WALL)
    for oid in range(1, 40):
        kept.gone(oid)
    data = kept.compacted()
    live, bad = parse_kept_journal(data)
    assert bad == 0 and sorted(live) == list(range(40, 50)) and kept.lines == 10
    assert all(live[oid].left_at is None for oid in live)


def test_the_journal_is_compacted_when_it_grows():
    kept = KeptFiles(5.0)
    for oid in range(1, limits.KEPT_JOURNAL_SLACK + 2):
        kept.keep(_kept(oid))
        kept.gone(oid)
    assert kept.needs_compaction() and not kept.entries


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000))
def test_any_bytes_parse_or_are_skipped(data):
    live, bad = parse_kept_journal(data)
    assert bad >= 0
    for oid, k in live.items():
        assert oid == k.object_id > 0 and isinstance(k.name, str) and "/" not in k.file


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["keep", "left", "gone"]), st.integers(1, 8)), max_size=40),
       st.integers(0, 4000))
def test_a_journal_cut_anywhere_gives_a_prefix_of_its_entries(ops, cut):
    kept = KeptFiles(5.0)
    data = b""
    for op, oid in ops:
        if op == "keep":
            data += kept.keep(_kept(oid))
            kept.sealed(oid, [oid])
        elif op == "left":
            data += kept.blocks_left(oid + 1, WALL + oid)
        else:
            data += kept.gone(oid)
    live, bad = parse_kept_journal(data)
    assert bad == 0 and set(live) == set(kept.entries)
    assert {o: k.left_at for o, k in live.items()} == {o: k.left_at for o, k in kept.entries.items()}
    live, bad = parse_kept_journal(data[:cut])
    assert bad <= 1


def _png_with_text() -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "where it was taken")
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(out, "PNG", pnginfo=info)
    return out.getvalue()


def test_a_kept_picture_its_rule_had_re_encoded_is_re_sent_as_it_was_sent():
    """The kept file is the original picture; what crossed was its re-encoding (reencode_images).
    After a restart it is re-sent as sent (re-encoded again, the same bytes), not named changed."""
    original = _png_with_text()
    done = cdr.reencode(original, "image/png")
    assert isinstance(done, cdr.Reencoded) and done.data != original
    k = _kept(content=done.data, name="a.png")
    k.record["detail"]["reencoded"] = {"original_size": len(original), "original_sm3": sm3(original).hex()}
    content = as_sent(k.record, original)
    assert content == done.data
    assert isinstance(after_restart(k, content, WALL, 5.0), Resend)
    # a kept file that is neither what was sent nor its original is still changed
    other = _png_with_text().replace(b"where", b"WHERE")
    assert as_sent(k.record, other) == other
    assert isinstance(after_restart(k, as_sent(k.record, other), WALL, 5.0), NotResent)
    assert as_sent(k.record, None) is None
