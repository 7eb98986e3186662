"""Hypothesis: the files lane never raises on arbitrary input."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from ferry.lanes.files import (
    MEDIA_TYPES, check_file_name, check_file_object, make_file_object,
    output_name_candidates, sniff_media_type,
)
from ferry.pb import ferry_pb2

FAST = settings(max_examples=400, deadline=None)


@FAST
@given(st.binary(max_size=5000))
def test_sniff_never_raises(data):
    assert sniff_media_type(data) in MEDIA_TYPES


@FAST
@given(st.text(max_size=300))
def test_check_file_name_never_raises(name):
    reason = check_file_name(name)
    assert reason is None or isinstance(reason, str)
    if reason is None:
        assert "/" not in name and "\\" not in name and name not in (".", "..")


@FAST
@given(st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=80))
def test_output_candidates_are_valid_and_distinct(name):
    if check_file_name(name) is not None:
        return
    got = list(itertools.islice(output_name_candidates(name), 20))
    assert got[0] == name
    assert len(set(got)) == len(got)
    assert all(check_file_name(c) is None for c in got)


@FAST
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=40), st.binary(max_size=200))
def test_make_then_check_round_trip(name, content):
    obj = make_file_object(object_id=1, name=name, content=content, source="s", destination="d", now=0.0)
    obj = ferry_pb2.CanonicalObject.FromString(obj.SerializeToString())
    assert check_file_object(obj) == check_file_name(name)


@FAST
@given(st.text(max_size=20), st.integers(0, 2**64 - 1), st.text(max_size=20), st.binary(max_size=32),
       st.binary(max_size=64))
def test_check_file_object_never_raises(name, size, media_type, digest, content):
    obj = ferry_pb2.CanonicalObject(lane="files", file=ferry_pb2.FileObject(
        name=name, size=size, media_type=media_type, sm3=digest, content=content))
    reason = check_file_object(obj)
    assert reason is None or isinstance(reason, str)
