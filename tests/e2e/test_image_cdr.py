"""Image content disarm and reconstruction end to end (issue 11 item 4): under a files rule with
``reencode_images: true`` the outer agent decodes and re-encodes pictures (metadata and trailing
bytes gone), the inner agent checks them again, and a decompression bomb never crosses."""
from __future__ import annotations

import io
import os
import shutil
import struct
import subprocess
import sys
import zipfile
import zlib

import pytest
from PIL import ExifTags, Image, PngImagePlugin

from appliance import ROOT, read_trail
from ferry.crypto import sm3

pytestmark = pytest.mark.e2e


def _policy(tmp_path):
    pol = tmp_path / "cdr-policy"
    shutil.copytree(ROOT / "policy" / "demo", pol)
    text = (pol / "policy.yaml").read_text()
    text = text.replace("media_types: [application/pdf, image/png, image/jpeg, text/plain]",
                        "media_types: [application/pdf, image/png, image/jpeg, image/gif, text/plain]\n"
                        "      reencode_images: true", 1)
    text = text.replace("(?i:pdf|png|jpe?g|txt)", "(?i:pdf|png|jpe?g|gif|txt)", 1)
    assert "reencode_images" in text and "gif|txt" in text
    (pol / "policy.yaml").write_text(text)
    return pol


def _picture(mode="RGB", size=(64, 48)):
    im = Image.new(mode, size)
    im.putdata([((x * 4) % 256, (y * 5) % 256, (x * y) % 256) for y in range(size[1]) for x in range(size[0])])
    return im


def jpeg_with_gps() -> bytes:
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "SpyCam"
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef] = "N"
    gps[ExifTags.GPS.GPSLatitude] = (28.0, 33.0, 15.5)
    gps[ExifTags.GPS.GPSLongitudeRef] = "E"
    gps[ExifTags.GPS.GPSLongitude] = (112.0, 21.0, 7.25)
    buf = io.BytesIO()
    _picture().save(buf, "JPEG", exif=exif, comment=b"secret-jpeg-comment", quality=95)
    data = buf.getvalue()
    assert Image.open(io.BytesIO(data)).getexif().get_ifd(ExifTags.IFD.GPSInfo)   # the input really has GPS
    return data


def png_with_text() -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "secret-png-text")
    info.add_itxt("Author", "secret-itxt")
    buf = io.BytesIO()
    _picture().save(buf, "PNG", pnginfo=info)
    return buf.getvalue()


def zip_bytes() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("payload.sh", "#!/bin/sh\necho pwned\n")
    return buf.getvalue()


def gif_with_comment() -> bytes:
    buf = io.BytesIO()
    _picture().convert("P").save(buf, "GIF", comment=b"secret-gif-comment")
    return buf.getvalue()


def png_bomb(width=100_000, height=100_000) -> bytes:
    """A few hundred bytes of PNG declaring width x height (a decompression bomb's header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 65536, 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def png_undecodable() -> bytes:
    """A PNG whose structure is whole (the content check passes it) but whose IDAT is no zlib."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 16, 16, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", b"this is not a zlib stream at all") + chunk(b"IEND", b""))


def test_pictures_are_reencoded_and_bombs_refused(appliance_factory, tmp_path):
    a = appliance_factory(policy_dir=_policy(tmp_path)).start()
    files = {
        "gps.jpg": jpeg_with_gps(),
        "text.png": png_with_text(),
        "trailing.png": png_with_text() + zip_bytes(),
        "comment.gif": gif_with_comment(),
        "bomb.png": png_bomb(),
        "truncated.png": png_with_text()[:300],   # the content check: its chunks do not reach IEND
        "broken.png": png_undecodable(),           # whole chunks, valid CRCs, pixels that do not inflate
        "notes.txt": b"plain text crosses as it is\n",
    }
    for name, content in files.items():
        a.drop(name, content)
    a.wait_for(lambda: set(files) <= set(a.outcomes()), 60, "all files accounted for")
    out = a.outcomes()
    for name in ("gps.jpg", "text.png", "comment.gif", "notes.txt"):
        assert out[name] == "delivered", (name, out)
    assert out["bomb.png"] == out["broken.png"] == out["truncated.png"] == "refused", out
    assert not any((a.inner_spool / n).exists() for n in ("bomb.png", "broken.png", "truncated.png"))

    # the JPEG crossed without its EXIF (GPS) and comment, and is a valid JPEG
    jpg = (a.inner_spool / "gps.jpg").read_bytes()
    im = Image.open(io.BytesIO(jpg))
    im.load()
    assert im.format == "JPEG" and im.size == (64, 48)
    assert not im.getexif() and b"Exif" not in jpg and b"SpyCam" not in jpg
    assert "comment" not in im.info and b"secret-jpeg-comment" not in jpg
    # the PNG crossed without its text chunks, pixel for pixel
    png = (a.inner_spool / "text.png").read_bytes()
    im = Image.open(io.BytesIO(png))
    im.load()
    assert im.format == "PNG" and not getattr(im, "text", {}) and b"secret" not in png
    assert im.tobytes() == _picture().tobytes()
    gif = (a.inner_spool / "comment.gif").read_bytes()
    im = Image.open(io.BytesIO(gif))
    im.load()
    assert im.format == "GIF" and b"secret-gif-comment" not in gif and "comment" not in im.info
    assert (a.inner_spool / "notes.txt").read_bytes() == files["notes.txt"]
    # the appended ZIP never crosses: refused (trailing data) or re-encoded away
    if out["trailing.png"] == "delivered":
        t = (a.inner_spool / "trailing.png").read_bytes()
        assert b"PK\x03\x04" not in t and b"pwned" not in t and t == png

    outer = read_trail(a.outer_audit)
    inner = read_trail(a.inner_audit)
    refused = {r["detail"]["name"]: r for r in outer if r["event"] == "object_refused"}
    assert refused["bomb.png"]["code"] == "image_too_large"
    assert "100000x100000" in refused["bomb.png"]["reason"]
    assert refused["broken.png"]["code"] == "image_undecodable"
    assert refused["truncated.png"]["code"] == "malformed_content"   # before any decoding
    assert refused["bomb.png"]["rule"] == refused["broken.png"]["rule"] == "files-documents"
    sent = {r["detail"]["name"]: r for r in outer if r["event"] == "object_sent"}
    for name in ("gps.jpg", "text.png", "comment.gif"):
        r = sent[name]
        re_ = r["detail"]["reencoded"]
        assert re_["original_size"] == len(files[name]) and re_["original_sm3"] == sm3(files[name]).hex()
        delivered = (a.inner_spool / name).read_bytes()
        assert r["size"] == len(delivered) and r["sm3"] == sm3(delivered).hex()   # the object carries the new bytes
    assert "reencoded" not in sent["notes.txt"]["detail"]
    got = {r["object_id"]: r for r in inner if r["event"] == "object_delivered"}
    for name in ("gps.jpg", "text.png", "comment.gif"):
        d = got[sent[name]["object_id"]]
        assert d["sm3"] == sent[name]["sm3"] and d["detail"]["image_checked"]
    a.stop()
    r = subprocess.run([sys.executable, "-m", "ferry", "audit", "reconcile", str(a.outer_audit), str(a.inner_audit)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert os.listdir(a.outer_spool) == []
