"""The outer agent's key epochs across restarts (ferry/agents/epoch_store.py): a run after one whose
clock was ahead starts above that run's epochs, not at int(wall) below the inner agent's floor."""

from __future__ import annotations

import logging

from ferry import limits
from ferry.agents.epoch_store import FILE_NAME, EpochStore

WALL = 1.7e9


def test_no_file_numbers_from_the_clock_and_save_keeps_the_highest(tmp_path):
    store = EpochStore(tmp_path / "state")
    assert store.first_epoch(WALL) == int(WALL)
    store.save(int(WALL) + 5)
    store.save(int(WALL) + 3)                     # never goes back
    assert (tmp_path / "state" / FILE_NAME).read_text() == f"{int(WALL) + 5}\n"


def test_a_run_after_a_clock_that_was_ahead_starts_above_its_epochs(tmp_path, caplog):
    EpochStore(tmp_path).save(int(WALL) + 3600)    # an earlier run, its clock an hour ahead
    with caplog.at_level(logging.WARNING, "ferry.outer"):
        first = EpochStore(tmp_path).first_epoch(WALL)
    assert first == int(WALL) + 3600 + limits.EPOCH_RESTART_GAP
    assert "ahead of the clock" in caplog.text


def test_a_clock_ahead_of_the_stored_epoch_wins(tmp_path):
    EpochStore(tmp_path).save(int(WALL) - 100)
    assert EpochStore(tmp_path).first_epoch(WALL) == int(WALL)


def test_an_unusable_file_is_named_and_ignored(tmp_path, caplog):
    (tmp_path / FILE_NAME).write_text("not a number\n")
    with caplog.at_level(logging.WARNING, "ferry.outer"):
        assert EpochStore(tmp_path).first_epoch(WALL) == int(WALL)
    assert f"{tmp_path / FILE_NAME}, line 1" in caplog.text and "not an epoch number" in caplog.text
    (tmp_path / FILE_NAME).write_text(f"{1 << 40}\n")
    stored, problem = EpochStore(tmp_path).load()
    assert stored is None and problem is not None and "out of range" in problem
