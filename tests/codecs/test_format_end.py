"""ferry.codecs.format_end: where a PNG, JPEG, GIF, ZIP or PDF ends, walked through its structure."""
from __future__ import annotations

import io
import struct
import time
import zipfile
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from file_samples import GIF, JPEG, PDF, PNG, ZIP, png_chunk, zip_archive
from ferry import limits
from ferry.codecs import media_type as mt
from ferry.codecs.format_end import FormatError, format_end, has_format_end

SAMPLES = {mt.PNG: PNG, mt.JPEG: JPEG, mt.GIF: GIF, mt.ZIP: ZIP, mt.PDF: PDF}


@pytest.mark.parametrize("media_type", sorted(SAMPLES))
def test_a_whole_file_ends_at_its_last_byte_and_what_follows_is_trailing(media_type):
    data = SAMPLES[media_type]
    assert format_end(data, media_type) == len(data)
    for tail in (b"\0", b"PK\x03\x04" + b"x" * 100, ZIP, b"<script>alert(1)</script>"):
        assert format_end(data + tail, media_type) == len(data)


@pytest.mark.parametrize("media_type", sorted(set(SAMPLES) - {mt.PDF}))
def test_every_truncation_is_malformed(media_type):
    data = SAMPLES[media_type]
    for cut in range(len(data)):
        with pytest.raises(FormatError):
            format_end(data[:cut], media_type)


def test_types_without_an_end():
    for t in (mt.TEXT, mt.GZIP, mt.ELF, mt.DOSEXEC, mt.SHELL, mt.OCTET_STREAM):
        assert not has_format_end(t) and format_end(b"anything", t) is None
    assert all(has_format_end(t) for t in SAMPLES)


# --- PNG ------------------------------------------------------------------------------

def _png(*chunks: bytes) -> bytes:
    return b"\x89PNG\r\n\x1a\n" + b"".join(chunks)


IHDR = png_chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0))
IDAT = png_chunk(b"IDAT", zlib.compress(b"\0\0"))
IEND = png_chunk(b"IEND", b"")


def test_png_chunk_walk():
    assert format_end(_png(IHDR, IDAT, IEND) + b"junk", mt.PNG) == len(_png(IHDR, IDAT, IEND))
    # an "IEND" inside a text chunk is data, not the end
    text = png_chunk(b"tEXt", b"Comment\0" + IEND)
    assert format_end(_png(IHDR, text, IDAT, IEND), mt.PNG) == len(_png(IHDR, text, IDAT, IEND))
    bad_crc = IDAT[:-1] + bytes([IDAT[-1] ^ 1])
    for data, why in [(_png(IDAT, IHDR, IEND), "not IHDR"), (_png(IHDR, bad_crc, IEND), "CRC"),
                      (_png(IHDR, png_chunk(b"IEND", b"x")), "not empty"),
                      (_png(IHDR, struct.pack(">I", 1 << 31) + b"IDAT" + b"\0" * 4), r"2\^31"),
                      (_png(IHDR, png_chunk(b"ID1T", b"")), "ASCII letters"),
                      (b"\x89PNG\r\n\x1a", "signature")]:
        with pytest.raises(FormatError, match=why):
            format_end(data, mt.PNG)


# --- JPEG -----------------------------------------------------------------------------

def _segment(marker: int, body: bytes) -> bytes:
    return bytes((0xFF, marker)) + struct.pack(">H", len(body) + 2) + body


def test_jpeg_an_eoi_in_an_exif_thumbnail_is_not_the_end():
    thumbnail = b"\xff\xd8" + _segment(0xDB, b"\0" * 65) + b"\xff\xd9"
    app1 = _segment(0xE1, b"Exif\0\0" + thumbnail)
    data = JPEG[:2] + app1 + JPEG[2:]
    assert format_end(data, mt.JPEG) == len(data)
    assert format_end(data + b"\xff\xd9 more", mt.JPEG) == len(data)


def test_jpeg_scan_data_stuffing_restarts_and_fill_bytes():
    sos = _segment(0xDA, b"\x01\x01\x00\x00\x3f\x00")
    scan = b"\x12\xff\x00\x34\xff\xd0\x56\xff\xd7\x78"          # stuffed 0xFF, two restart markers
    data = b"\xff\xd8" + sos + scan + b"\xff\xff\xff\xd9"        # fill bytes before EOI
    assert format_end(data + b"tail", mt.JPEG) == len(data)
    # a second scan (progressive): tables between the scans
    two = b"\xff\xd8" + sos + scan + _segment(0xC4, b"\0" * 17) + sos + scan + b"\xff\xd9"
    assert format_end(two, mt.JPEG) == len(two)
    for bad, why in [(b"\xff\xd8\x00", "expected a marker"), (b"\xff\xd8\xff\xe0\x00\x01", "below 2"),
                     (b"\xff\xd8\xff\xd8", "unexpected marker"), (b"\xff\xd8" + sos + scan, "no EOI"),
                     (b"\xff\xd8\xff\xff", "fill bytes")]:
        with pytest.raises(FormatError, match=why):
            format_end(bad, mt.JPEG)


# --- GIF ------------------------------------------------------------------------------

def test_gif_blocks_and_extensions():
    header = b"GIF89a" + struct.pack("<HHBBB", 1, 1, 0x80, 0, 0) + b"\0" * 6    # 2-colour global table
    comment = b"\x21\xfe" + b"\x05;;;;;" + b"\x00"                               # trailer bytes as data
    image = b"\x2c" + struct.pack("<HHHHB", 0, 0, 1, 1, 0) + b"\x02" + b"\x02\x4c\x01" + b"\x00"
    data = header + comment + image + b"\x3b"
    assert format_end(data + b"PK\x05\x06", mt.GIF) == len(data)
    with pytest.raises(FormatError, match="unknown block 0x99"):
        format_end(header + b"\x99" + b"\x3b", mt.GIF)


# --- ZIP ------------------------------------------------------------------------------

def test_zip_comment_is_part_of_the_archive_and_a_nested_archive_is_data():
    z = zip_archive(comment=b"made by a test " * 10)
    assert format_end(z + b"\0" * 3, mt.ZIP) == len(z)
    outer = zip_archive({"inner.zip": ZIP, "b.txt": b"x"})       # deflated, but store one too
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("inner.zip", ZIP)
    for data in (outer, buf.getvalue()):
        assert format_end(data, mt.ZIP) == len(data)
    assert format_end(zip_archive({}), mt.ZIP) == 22               # the empty archive


def test_zip_trailing_data_that_holds_a_fake_end_record():
    fake = b"PK\x05\x06" + struct.pack("<HHHHIIH", 0, 0, 1, 1, 46, 0, 0)   # points at nothing valid
    assert format_end(ZIP + b"junk" + fake, mt.ZIP) == len(ZIP)


def test_zip64_end_records():
    z = ZIP
    eocd = z.rfind(b"PK\x05\x06")
    _sig, _d, _cd, here, total, cd_size, cd_offset, _c = struct.unpack_from("<4sHHHHIIH", z, eocd)
    rec = struct.pack("<4sQHHIIQQQQ", b"PK\x06\x06", 44, 45, 45, 0, 0, here, total, cd_size, cd_offset)
    loc = struct.pack("<4sIQI", b"PK\x06\x07", 0, eocd, 1)
    end = b"PK\x05\x06" + struct.pack("<HHHHIIH", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    data = z[:eocd] + rec + loc + end
    assert zipfile.ZipFile(io.BytesIO(data)).namelist() == ["a.txt"]          # a real ZIP64 reader agrees
    assert format_end(data + b"tail", mt.ZIP) == len(data)


def test_zip_too_many_end_signatures_is_malformed_and_quick():
    data = ZIP[:-22] + b"PK\x05\x06" * 200_000
    t = time.process_time()
    with pytest.raises(FormatError, match=f"last {limits.ZIP_END_CANDIDATES}"):
        format_end(data, mt.ZIP)
    assert time.process_time() - t < 2


@given(st.dictionaries(st.text("abcdefgh./", min_size=1, max_size=20), st.binary(max_size=300), max_size=6),
       st.binary(max_size=100), st.binary(max_size=50))
@settings(max_examples=100, deadline=None)
def test_zip_made_by_zipfile_ends_at_its_end(members, comment, tail):
    z = zip_archive(members, comment=comment)
    assert format_end(z, mt.ZIP) == len(z)
    assert format_end(z + tail, mt.ZIP) in (len(z), len(z + tail))   # a tail can end in a valid record


# --- PDF ------------------------------------------------------------------------------

def test_pdf_ends_at_the_last_eof_and_one_end_of_line():
    update = PDF + b"2 0 obj << >> endobj\nstartxref\n9\n%%EOF"
    for eol in (b"", b"\n", b"\r", b"\r\n"):
        assert format_end(update + eol, mt.PDF) == len(update + eol)
    assert format_end(update + b"\n\n", mt.PDF) == len(update) + 1
    assert format_end(PDF + b"<html><script>", mt.PDF) == len(PDF)
    with pytest.raises(FormatError, match="no %%EOF"):
        format_end(b"%PDF-1.7\n1 0 obj\n", mt.PDF)


# --- robustness: any bytes either walk to an end inside them or raise FormatError -----------

def _check(data: bytes, media_type: str) -> int | None:
    try:
        end = format_end(data, media_type)
    except FormatError:
        return None
    assert end is not None and 0 < end <= len(data)
    return end


@given(st.sampled_from(sorted(SAMPLES)), st.binary(max_size=2000))
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_fuzz_random_bytes_after_the_magic(media_type, body):
    magic = {mt.PNG: PNG[:8], mt.JPEG: b"\xff\xd8", mt.GIF: b"GIF89a", mt.ZIP: b"PK\x03\x04",
             mt.PDF: b"%PDF-"}[media_type]
    _check(magic + body, media_type)
    _check(body, media_type)


@given(st.sampled_from(sorted(SAMPLES)), st.data())
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_fuzz_mutated_samples(media_type, data):
    sample = bytearray(SAMPLES[media_type])
    for _ in range(data.draw(st.integers(1, 6))):
        op = data.draw(st.sampled_from(["flip", "cut", "insert", "delete"]))
        i = data.draw(st.integers(0, max(0, len(sample) - 1)))
        if op == "flip" and sample:
            sample[i] ^= data.draw(st.integers(1, 255))
        elif op == "cut":
            del sample[i:]
        elif op == "insert":
            sample[i:i] = data.draw(st.binary(min_size=1, max_size=40))
        elif sample:
            del sample[i:i + data.draw(st.integers(1, 40))]
    _check(bytes(sample), media_type)


HOSTILE = {   # 1 MiB each, built to make a walk take many small steps
    "png: empty chunks": (mt.PNG, _png(IHDR, png_chunk(b"tEXt", b"") * 80_000, IEND)),
    "jpeg: 4-byte segments": (mt.JPEG, b"\xff\xd8" + b"\xff\xfe\x00\x02" * 260_000 + b"\xff\xd9"),
    "jpeg: stuffed scan": (mt.JPEG, b"\xff\xd8" + _segment(0xDA, b"\0" * 6) + b"\xff\x00" * 520_000 + b"\xff\xd9"),
    "jpeg: fill bytes": (mt.JPEG, b"\xff\xd8" + b"\xff" * 1_000_000 + b"\xd9"),
    "jpeg: scan of 0xFF": (mt.JPEG, b"\xff\xd8" + _segment(0xDA, b"\0" * 6) + b"\xff" * 1_000_000 + b"\x00"),
    "gif: 1-byte sub-blocks": (mt.GIF, b"GIF89a" + struct.pack("<HHBBB", 1, 1, 0, 0, 0) + b"\x21\xfe"
                               + b"\x01x" * 520_000 + b"\x00\x3b"),
    "pdf: many markers": (mt.PDF, b"%PDF-" + b"%%EOF" * 200_000),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_input_takes_bounded_time(name):
    media_type, data = HOSTILE[name]
    t = time.process_time()
    end = _check(data, media_type)
    assert time.process_time() - t < 3, name        # CPU time: linear walks, a loaded machine
    assert end == len(data) or name == "jpeg: scan of 0xFF"   # each is well-formed but for the last
