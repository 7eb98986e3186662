"""ferry.codecs.file_name: base names safe on the inner side, and the names tried when one is taken."""
from __future__ import annotations

import itertools

from ferry import limits
from ferry.codecs.file_name import check_file_name, output_name_candidates


def test_good_and_bad_names():
    assert check_file_name("report-2026.pdf") is None and check_file_name("中文.txt") is None
    for bad in ("", ".", "..", ".x", "-x", "a/b", "a\\b", "a\u2215b", "a:b", "a\u202eb", "CON", "lpt1.txt",
                "x ", "x.", "e\u0301", "a" * (limits.FILE_NAME_MAX + 1)):
        assert check_file_name(bad), bad


def test_candidates_stay_valid_and_bounded():
    long = "a" * (limits.FILE_NAME_MAX - 4) + ".txt"
    names = list(itertools.islice(output_name_candidates(long), 3))
    assert names[0] == long and names[1].endswith(" (1).txt") and names[2].endswith(" (2).txt")
    assert all(check_file_name(n) is None for n in names)
    assert len(list(output_name_candidates("a.txt"))) == limits.OUTPUT_NAME_CANDIDATES_MAX
