"""BlockAssembly: pending blocks of unauthenticated symbols, bounded, timed out."""

from __future__ import annotations

import pytest

from ferry import limits
from ferry.wire.assembly import BlockAssembly, rebuild
from ferry.wire.epochs import KeyEpochs
from ferry.wire.report import Report

from .wire_helpers import announcement, fields, symbols

WALL = 1.7e9 + 1


@pytest.fixture
def parts(keys):
    outer, inner = keys
    report = Report(0.0)
    epochs = KeyEpochs(inner, outer.public_key(), report, 0.0)
    return BlockAssembly(epochs, report), epochs, report


def _add(asm: BlockAssembly, d: bytes, now: float = 0.0):
    return asm.add(fields(d), d, now)


def _key(keys, epochs, epoch: int = 7) -> None:
    outer, inner = keys
    assert epochs.accept(announcement(outer, inner, epoch=epoch), 0.0, WALL) is not None


def test_a_block_is_ready_with_k_symbols_of_a_known_epoch(keys, parts):
    asm, epochs, report = parts
    _key(keys, epochs)
    ds = symbols(7, 0)
    assert [_add(asm, d) for d in ds[:3]] == [None] * 3
    p = _add(asm, ds[4])  # a repair symbol is the 4th
    assert p is not None and p.count == 4
    assert asm.nbytes == 4 * p.symsize and asm.unknown == 0
    taken = asm.take((7, 0))
    assert taken is p and asm.nbytes == 0 and not asm.pending
    sealed, repaired = rebuild(p)
    assert repaired and len(sealed) == 100


def test_unknown_epoch_blocks_are_held_then_released(keys, parts):
    asm, epochs, report = parts
    for d in symbols(7, 0)[:4]:
        assert _add(asm, d) is None  # complete, but no key yet
    assert asm.unknown == 1 and asm.pending[(7, 0)].complete
    _add(asm, symbols(7, 0)[5])
    assert report.counters.symbols_late == 1
    _key(keys, epochs)
    assert asm.held_keys(7) == [(7, 0)]
    p = asm.release((7, 0), 0.0)
    assert p is not None and not p.complete and asm.unknown == 0


def test_inconsistent_duplicate_and_late_symbols(keys, parts):
    asm, epochs, report = parts
    _key(keys, epochs)
    ds = symbols(7, 1)
    _add(asm, ds[0])
    _add(asm, ds[0])
    _add(asm, symbols(7, 1, sealed_len=120)[1])
    assert report.counters.dropped_by_reason == {"duplicate_symbol": 1, "inconsistent_header": 1}
    for d in ds[1:4]:
        p = _add(asm, d)
    assert p is not None
    asm.take((7, 1))
    asm.opened((7, 1), p)
    _add(asm, ds[4])  # a late repair symbol of an opened block: counted, not held
    assert report.counters.symbols_late == 1 and not asm.pending
    for d in ds[:4]:  # the whole block again: a replay
        _add(asm, d)
    assert report.counters.blocks_refused == 1


def test_admission_by_epoch_and_replay_window(keys, parts):
    outer, inner = keys
    asm, epochs, report = parts
    epochs.accept(announcement(outer, inner, epoch=7, first_block=10), 0.0, WALL)
    _add(asm, symbols(7, 9)[0])
    _add(asm, symbols(5, 0)[0])  # older than the current epoch and unknown
    epochs.epochs[7].replay.mark(20)
    _add(asm, symbols(7, 20)[0])
    _add(asm, symbols(7, 20 + limits.REPLAY_WINDOW + 1)[0])
    asm.failed((7, 30), "auth")
    _add(asm, symbols(7, 30)[0])
    assert report.counters.dropped_by_reason == {
        "before_first_block": 1, "unknown_epoch": 1, "replay": 1, "too_far_ahead": 1, "after_failure": 1}
    assert not asm.pending and report.counters.blocks_refused == 1


def test_bounds_hold(keys, parts, monkeypatch):
    asm, epochs, report = parts
    monkeypatch.setattr(limits, "PENDING_UNKNOWN_EPOCH_MAX", 3)
    for b in range(5):
        _add(asm, symbols(9, b)[0])
    assert len(asm.pending) == 3 and asm.unknown == 3
    _key(keys, epochs, 7)
    _add(asm, symbols(7, 0)[0])  # epoch 9, newer than the current 7, stays held
    # unverified blocks of unknown epochs do not take the room of authenticated ones
    monkeypatch.setattr(limits, "PENDING_BLOCKS_MAX", 2)
    _add(asm, symbols(7, 1)[0])
    _add(asm, symbols(7, 2)[0])
    monkeypatch.setattr(limits, "PENDING_SYMBOL_BYTES_MAX", asm.nbytes)
    _add(asm, symbols(7, 0)[1])
    assert report.counters.dropped_by_reason["pending_full"] == 4
    assert len(asm.pending) == 5 and asm.unknown == 3
    monkeypatch.setattr(limits, "PENDING_UNKNOWN_EPOCH_BYTES_MAX", asm.unknown_nbytes)
    _add(asm, symbols(9, 0)[1])
    assert report.counters.dropped_by_reason["pending_full"] == 5


def test_timeouts_block_and_key_wait(keys, parts):
    asm, epochs, report = parts
    _key(keys, epochs)
    _add(asm, symbols(7, 0)[0], now=1.0)
    _add(asm, symbols(8, 0)[0], now=1.5)  # unknown epoch: waits KEY_WAIT
    assert asm.next_timer() == 1.0 + limits.BLOCK_TIMEOUT
    asm.handle_timer(1.0 + limits.BLOCK_TIMEOUT)
    assert list(asm.pending) == [(8, 0)] and asm.failure((7, 0)) == "timeout"
    assert asm.next_timer() == 1.5 + limits.KEY_WAIT
    asm.handle_timer(1.5 + limits.KEY_WAIT)
    assert not asm.pending and asm.unknown == 0 and asm.nbytes == 0
    assert report.counters.dropped_by_reason == {"key_never_came": 1}


def test_loss_accounting_view(keys, parts):
    asm, epochs, _ = parts
    _key(keys, epochs)
    _add(asm, symbols(7, 3)[0], now=4.0)
    assert asm.first_seen((7, 3)) == 4.0 and asm.first_seen((7, 4)) is None
    assert asm.abandon((7, 3)) and not asm.abandon((7, 3))
    assert asm.nbytes == 0
    _add(asm, symbols(7, 5)[0])
    asm.discard_epoch(7)
    assert not asm.pending


def test_forged_symbols_are_dropped_before_they_are_kept(keys, parts):
    """Without the key a symbol cannot start a block, fix its parameters or take a symbol's place."""
    asm, epochs, report = parts
    _key(keys, epochs)
    forged = symbols(7, 3, sealed_len=120, key=None)
    _add(asm, forged[0])                    # would start block 3 with wrong parameters
    assert not asm.pending and asm.nbytes == 0
    ds = symbols(7, 3)
    _add(asm, ds[0])
    _add(asm, forged[1])                    # a forged symbol of a pending block
    _add(asm, symbols(7, 3, key=None)[2])   # right parameters, forged authenticator
    assert asm.pending[(7, 3)].count == 1
    p = None
    for d in ds[1:4]:
        p = _add(asm, d)
    assert p is not None and rebuild(p) == (b"".join(ds[i][32:] for i in range(4))[:100], False)
    assert report.counters.dropped_by_reason == {"inconsistent_header": 1, "bad_symbol_auth": 2}
    asm.take((7, 3))
    asm.opened((7, 3), p)
    _add(asm, forged[4])                    # nor is a forged late symbol counted as one
    _add(asm, symbols(7, 3, key=None)[4])
    assert report.counters.dropped_by_reason["bad_symbol_auth"] == 4 and report.counters.symbols_late == 0


def test_a_copy_with_other_bytes_erases_the_symbol_it_copies(keys, parts):
    """A genuine datagram's header and authenticator on other bytes: neither copy is kept, so
    the block still opens from its other symbols."""
    asm, epochs, report = parts
    _key(keys, epochs)
    ds = symbols(7, 4)
    copy = ds[1][:32] + bytes(len(ds[1]) - 32)
    _add(asm, copy)
    _add(asm, ds[0])
    _add(asm, ds[1])                        # the genuine one after the copy: index 1 is contested
    _add(asm, ds[1])
    assert asm.pending[(7, 4)].count == 1 and asm.nbytes == asm.pending[(7, 4)].symsize
    assert report.counters.dropped_by_reason == {"conflicting_symbol": 2}
    p = None
    for d in ds[2:5]:
        p = _add(asm, d)
    assert p is not None and p.mask() == 0b11101
    _add(asm, ds[0])                        # a network duplicate is not a conflict
    assert report.counters.dropped_by_reason["duplicate_symbol"] == 1


def test_held_symbols_are_verified_when_the_key_arrives(keys, parts):
    asm, epochs, report = parts
    _add(asm, symbols(7, 0, key=None)[0])   # unverified: held
    for d in symbols(7, 0)[1:4]:
        _add(asm, d)
    _add(asm, symbols(7, 1, key=None)[0])   # a block made of forged symbols only
    assert asm.unknown == 2 and asm.pending[(7, 0)].complete
    _key(keys, epochs)
    assert asm.release((7, 0), 0.0) is None  # the forged symbol is dropped: 3 of 4 left
    assert asm.release((7, 1), 0.0) is None and (7, 1) not in asm.pending
    assert report.counters.dropped_by_reason == {"bad_symbol_auth": 2}
    assert asm.unknown == 0 and asm.unknown_nbytes == 0 and asm.nbytes == 3 * asm.pending[(7, 0)].symsize
    p = _add(asm, symbols(7, 0)[5])
    assert p is not None and p.count == 4
