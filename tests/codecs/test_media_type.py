"""ferry.codecs.media_type: the type comes from the bytes; the lane and the policy use this one sniffer."""
from __future__ import annotations

import pytest

from ferry import limits
from ferry.codecs import media_type
from ferry.codecs.media_type import MEDIA_TYPES, sniff_media_type
from ferry.lanes import files


@pytest.mark.parametrize("data, expected", [
    (b"%PDF-1.7", "application/pdf"), (b"MZ\x90\0", "application/x-dosexec"), (b"#!/bin/sh\n", "application/x-sh"),
    (b"plain text\r\n\ttab", "text/plain"), ("中文\n".encode(), "text/plain"), (b"", "text/plain"),
    (b"a\x00b", "application/octet-stream"), (b"\xc2\x85", "application/octet-stream"),   # C1 control NEL
    (b"\xff\xfe", "application/octet-stream")])
def test_sniff(data, expected):
    assert sniff_media_type(data) == expected in MEDIA_TYPES


def test_magic_is_looked_for_in_the_head_only_and_text_in_the_whole():
    assert sniff_media_type(b"x" * limits.FILE_SNIFF_HEAD + b"%PDF-") == "text/plain"
    assert sniff_media_type(b"x" * 10_000 + b"\x01") == "application/octet-stream"


def test_the_files_lane_and_the_policy_share_it():
    assert files.sniff_media_type is media_type.sniff_media_type and files.MEDIA_TYPES is MEDIA_TYPES
