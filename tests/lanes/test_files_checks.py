"""The files lane: sniffing, name rules, output names, object round trip."""

from __future__ import annotations

import itertools

import pytest

from ferry import limits
from ferry.crypto import sm3
from ferry.lanes import files
from ferry.lanes.files import (
    check_file_name, check_file_object, make_file_object, output_name_candidates,
    sniff_media_type,
)


# --- sniffing ------------------------------------------------------------------------

@pytest.mark.parametrize("data, expected", [
    (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n", "application/pdf"),
    (b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", "image/png"),
    (b"\xff\xd8\xff\xe0\0\x10JFIF\0", "image/jpeg"),
    (b"GIF89a\x01\0\x01\0", "image/gif"),
    (b"GIF87a\x01\0\x01\0", "image/gif"),
    (b"PK\x03\x04\x14\0\0\0", "application/zip"),
    (b"PK\x05\x06" + b"\0" * 18, "application/zip"),
    (b"\x1f\x8b\x08\0\0\0\0\0", "application/gzip"),
    (b"\x7fELF\x02\x01\x01\0", "application/x-executable"),
    (b"MZ\x90\0\x03\0\0\0", "application/x-dosexec"),
    (b"#!/bin/sh\nrm -rf /\n", "application/x-sh"),
    (b"hello\tworld\r\n", "text/plain"),
    ("\u4e2d\u6587\u6587\u672c\n".encode(), "text/plain"),
    (b"", "text/plain"),
    (b"\0\x01\x02\x03", "application/octet-stream"),
    (b"abc\xff", "application/octet-stream"),
])
def test_sniff(data, expected):
    assert sniff_media_type(data) == expected


def test_every_sniffed_type_is_listed():
    assert set(files.MEDIA_TYPES) >= {
        sniff_media_type(d) for d in [b"%PDF-", b"MZ", b"", b"\0", b"\x7fELF", b"#!"]}


def test_elf_named_txt_is_executable():
    obj = make_file_object(object_id=1, name="readme.txt", content=b"\x7fELF" + b"\0" * 60,
                           source="s", destination="d", now=0.0)
    assert obj.file.media_type == "application/x-executable"


@pytest.mark.parametrize("data", [
    b"hello\0world",                        # NUL
    b"plain text\x1b[31m",                  # escape
    b"text\x7f",                            # DEL
    "text\u0085".encode(),                  # C1 control (NEL)
    b"text\x0c",                            # form feed
])
def test_text_with_control_characters_is_not_text(data):
    assert sniff_media_type(data) == "application/octet-stream"


def test_text_head_cannot_hide_binary_tail():
    clean_head = b"a" * (limits.FILE_SNIFF_HEAD * 4)
    assert sniff_media_type(clean_head) == "text/plain"
    assert sniff_media_type(clean_head + b"\x7fELF\0") == "application/octet-stream"
    assert sniff_media_type(clean_head + b"\xff") == "application/octet-stream"


def test_magic_only_at_start():
    assert sniff_media_type(b"see %PDF-1.4") == "text/plain"


# --- names ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", [
    "report.pdf", "a", "IMG_0001.JPG", "\u62a5\u544a.pdf", "a b.txt", "x.tar.gz",
    "CONSOLE.txt", "nul-terminated.txt", "e\u0301".replace("e\u0301", "\u00e9") + ".pdf",
    "a" * limits.FILE_NAME_MAX,
])
def test_good_names(name):
    assert check_file_name(name) is None


@pytest.mark.parametrize("name, fragment", [
    ("", "empty"),
    ("../x", "path separator"),
    ("a/b", "path separator"),
    ("a\\b", "path separator"),
    ("..", "not a file name"),
    (".", "not a file name"),
    (".hidden", "hidden"),
    ("-rf", "starts with '-'"),
    (" x", "starts with a space"),
    ("x ", "ends with a space or dot"),
    ("x.", "ends with a space or dot"),
    ("CON", "reserved"),
    ("con.txt", "reserved"),
    ("Com1.log", "reserved"),
    ("LPT9", "reserved"),
    ("nul .txt", "reserved"),
    ("a\0b", "control"),
    ("a\nb", "control"),
    ("a\x7fb", "control"),
    ("a\u0085b", "control"),
    ("invoice\u202efdp.exe", "U+202E"),
    ("a\u200bb", "U+200B"),
    ("a\u2028b", "U+2028"),
    ("a:b", "not allowed"),
    ("a*b", "not allowed"),
    ("e\u0301.pdf", "NFC"),
    ("\u212b.txt", "NFC"),                   # ANGSTROM SIGN normalizes to U+00C5
    ("a\u2215b", "U+2215"),
    ("a\u2044b", "U+2044"),
    ("a\uff0fb", "U+FF0F"),
    ("a\uff3cb", "U+FF3C"),
    ("\u2215..\u2215etc\u2215passwd", "U+2215"),
    ("a" * (limits.FILE_NAME_MAX + 1), "bytes"),
    ("\u4e2d" * 67, "bytes"),               # 201 bytes of UTF-8
    ("a\ud800b", "UTF-8"),
])
def test_bad_names(name, fragment):
    reason = check_file_name(name)
    assert reason is not None and fragment in reason, reason


def test_non_string_name():
    assert check_file_name(b"x") is not None  # type: ignore[arg-type]


# --- output names -----------------------------------------------------------------------

def test_output_candidates():
    got = list(itertools.islice(output_name_candidates("report.pdf"), 4))
    assert got == ["report.pdf", "report (1).pdf", "report (2).pdf", "report (3).pdf"]


def test_output_candidates_without_extension_and_with_two():
    assert list(itertools.islice(output_name_candidates("README"), 2)) == ["README", "README (1)"]
    assert list(itertools.islice(output_name_candidates("a.tar.gz"), 2)) == ["a.tar.gz", "a.tar (1).gz"]


def test_output_candidates_bounded_distinct_and_valid():
    got = list(output_name_candidates("report.pdf"))
    assert len(got) == limits.OUTPUT_NAME_CANDIDATES_MAX
    assert len(set(got)) == len(got)
    assert all(check_file_name(c) is None for c in got)


def test_output_candidates_stay_within_name_limit():
    name = "\u62a5" * 60 + ".pdf"                 # 184 bytes
    for c in itertools.islice(output_name_candidates(name), 200):
        assert check_file_name(c) is None, c
    assert list(itertools.islice(output_name_candidates(name), 2))[1].endswith(" (1).pdf")


# --- canonical objects ------------------------------------------------------------------

def make(name="report.pdf", content=b"%PDF-1.4\nbody"):
    return make_file_object(object_id=(3 << 32) | 5, name=name, content=content,
                            source="outer-spool", destination="inner-spool", now=1700000000.5)


def test_make_file_object():
    o = make()
    assert (o.lane, o.source.name, o.destination, o.object_id, o.created) == (
        "files", "outer-spool", "inner-spool", (3 << 32) | 5, 1700000000.5)
    assert (o.file.name, o.file.size, o.file.media_type) == ("report.pdf", 13, "application/pdf")
    assert o.file.sm3 == sm3(b"%PDF-1.4\nbody") and len(o.file.sm3) == 32
    assert o.rule == ""


def test_round_trip_through_the_wire_encoding():
    o = make()
    again = type(o).FromString(o.SerializeToString())
    assert again == o
    assert check_file_object(again) is None


def test_tampered_sm3_detected():
    o = make()
    o.file.sm3 = bytes(32)
    assert check_file_object(o) == "sm3 does not match content"


def test_tampered_content_detected():
    o = make()
    o.file.content = b"%PDF-1.4\nbodY"
    assert check_file_object(o) == "sm3 does not match content"


def test_tampered_size_detected():
    o = make()
    o.file.size += 1
    assert check_file_object(o) == "declared size 14 but content is 13 bytes"


def test_tampered_media_type_detected():
    o = make(content=b"MZ\x90\0")
    o.file.media_type = "text/plain"
    assert check_file_object(o) == "declared media type text/plain but content is application/x-dosexec"


def test_bad_name_detected():
    o = make()
    o.file.name = "../../etc/passwd"
    assert "path separator" in check_file_object(o)


def test_wrong_lane_or_body_detected():
    o = make()
    o.lane = "video"
    assert "lane" in check_file_object(o)
    o = make()
    o.ClearField("file")
    assert check_file_object(o) == "object has no file body"


def test_oversized_file_detected():
    o = make(content=b"a" * (limits.FILE_MAX + 1))
    assert "FILE_MAX" in check_file_object(o)
