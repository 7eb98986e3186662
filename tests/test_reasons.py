"""The reason codes: one enumeration, each explained, each documented where operators look."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from ferry.audit.errors import RecordError
from ferry.audit.records import validate_fields
from ferry.reasons import LINK, MEANING, Reason

ROOT = Path(__file__).resolve().parents[1]
_ROW = re.compile(r"^\| `([a-z_]+)` \|", re.M)


def documented(path: Path) -> list[str]:
    return _ROW.findall(path.read_text(encoding="utf-8"))


def test_every_code_is_explained_and_unique():
    assert set(MEANING) == set(Reason)
    assert all(MEANING[r].strip() for r in Reason)
    assert len({r.value for r in Reason}) == len(Reason)
    assert all(re.fullmatch(r"[a-z][a-z0-9_]*", r.value) for r in Reason)


def test_the_readme_lists_every_code_once():
    rows = documented(ROOT / "README.md")
    assert sorted(rows) == sorted(r.value for r in Reason)


def test_wire_md_lists_the_link_codes():
    rows = documented(ROOT / "proto" / "WIRE.md")
    assert sorted(rows) == sorted(r.value for r in LINK)
    assert Reason.BAD_MAGIC in LINK and Reason.NOT_REGULAR_FILE not in LINK


def test_a_record_code_must_be_known():
    base = {"time": "2026-01-02T03:04:05.000006Z", "agent": "inner", "event": "object_refused",
            "verdict": "refused"}
    validate_fields({**base, "code": "clock_skew"})
    with pytest.raises(RecordError, match="reason code"):
        validate_fields({**base, "code": "made_up"})
    with pytest.raises(RecordError, match="reason code"):
        validate_fields({**base, "code": 3})
