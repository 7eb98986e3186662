"""Pictures decoded and re-encoded (ferry.lanes.cdr) and the files lane's hook (reencode_images)."""
from __future__ import annotations

import io
import random
import struct
import zlib

import pytest
from PIL import ExifTags, Image, ImageCms, PngImagePlugin

from ferry import limits
from ferry.crypto import sm3
from ferry.lanes import cdr
from ferry.lanes.files import MoveAside, OuterFilesLane, SpoolFile, WriteFile, inner_write, make_file_object
from ferry.lanes.inner import InnerDispatch
from ferry.lanes.work import AuditIntent, ObjectIds, SealObject
from ferry.policy import compile_policy, parse_policy, policy_hash
from ferry.reasons import Reason
from ferry.wire import events as ev

PNG, JPEG, GIF = "image/png", "image/jpeg", "image/gif"


def picture(mode="RGB", size=(40, 30)) -> Image.Image:
    rgb = Image.new("RGB", size)
    rgb.putdata([((x * 7) % 256, (y * 9) % 256, (x * y) % 256) for y in range(size[1]) for x in range(size[0])])
    if mode == "RGB":
        return rgb
    if mode == "P":
        return rgb.quantize(64)
    if mode == "I;16":
        im = Image.new("I;16", size)
        im.putdata([(x * 1500 + y * 7) % 65536 for y in range(size[1]) for x in range(size[0])])
        return im
    return rgb.convert(mode)


def encoded(im: Image.Image, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **options)
    return buf.getvalue()


def decoded(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


def gps_exif() -> Image.Exif:
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "SpyCam"
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef] = "N"
    gps[ExifTags.GPS.GPSLatitude] = (28.0, 33.0, 15.5)
    return exif


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_declaring(width: int, height: int) -> bytes:
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + png_chunk(b"IDAT", zlib.compress(b"\0" * 4096)) + png_chunk(b"IEND", b""))


def ok(result) -> cdr.Reencoded:
    assert isinstance(result, cdr.Reencoded), result
    assert isinstance(cdr.check_reencoded(result.data, {"PNG": PNG, "JPEG": JPEG, "GIF": GIF}[result.format]),
                      cdr.Reencoded)
    return result


# --- metadata is gone, pictures stay ----------------------------------------------------------

def test_jpeg_exif_gps_xmp_icc_and_comment_are_dropped():
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    src = encoded(picture(), "JPEG", exif=gps_exif(), comment=b"secret-comment", icc_profile=icc,
                  xmp=b"<x:xmpmeta>secret-xmp</x:xmpmeta>", quality=95)
    before = decoded(src)
    assert before.getexif().get_ifd(ExifTags.IFD.GPSInfo)
    assert before.info.get("comment") and before.info.get("icc_profile")
    out = ok(cdr.reencode(src, JPEG))
    after = decoded(out.data)
    assert after.format == "JPEG" and after.size == (40, 30) and after.mode == "RGB"
    assert not after.getexif() and "comment" not in after.info and "icc_profile" not in after.info
    assert "xmp" not in after.info
    for secret in (b"Exif", b"SpyCam", b"secret", b"ICC_PROFILE", b"http://ns.adobe.com"):
        assert secret not in out.data
    assert [m for m, _ in after.applist] == ["APP0"]
    # pixels close to the source's (one generation of JPEG loss)
    diff = sum(abs(a - b) for a, b in zip(before.tobytes(), after.tobytes())) / len(after.tobytes())
    assert diff < 8


def test_jpeg_orientation_goes_into_the_pixels():
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6          # rotated 90 degrees: a phone held upright
    out = ok(cdr.reencode(encoded(picture(), "JPEG", exif=exif), JPEG))
    assert decoded(out.data).size == (30, 40) and b"Exif" not in out.data


def test_cmyk_jpeg_becomes_rgb():
    out = ok(cdr.reencode(encoded(picture("CMYK"), "JPEG"), JPEG))
    assert out.mode == "RGB" and decoded(out.data).mode == "RGB"


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "RGB", "RGBA", "I;16"])
def test_png_text_chunks_and_icc_are_dropped_pixels_equal(mode):
    src_im = picture(mode)
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "secret-text")
    info.add_text("Big", "secret-ztxt" * 50, zip=True)
    info.add_itxt("Author", "secret-itxt")
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    src = encoded(src_im, "PNG", pnginfo=info, icc_profile=icc, dpi=(300, 300), exif=gps_exif())
    assert b"tEXt" in src and b"iCCP" in src and b"eXIf" in src
    out = ok(cdr.reencode(src, PNG))
    assert b"secret" not in out.data and b"iCCP" not in out.data and b"pHYs" not in out.data
    assert b"eXIf" not in out.data and b"SpyCam" not in out.data
    after = decoded(out.data)
    assert after.mode == decoded(src).mode and after.tobytes() == decoded(src).tobytes()   # lossless: equal pixels
    if mode == "P":
        assert after.getpalette() == decoded(src).getpalette()


def test_png_transparency_is_kept():
    im = picture("P")
    src = encoded(im, "PNG", transparency=3)
    after = decoded(ok(cdr.reencode(src, PNG)).data)
    assert after.info["transparency"] == decoded(src).info["transparency"]
    assert after.convert("RGBA").tobytes() == decoded(src).convert("RGBA").tobytes()


def test_png_trailing_bytes_and_unknown_chunks_are_dropped():
    src = encoded(picture(), "PNG")
    iend = src.rindex(b"IEND") - 4
    stuffed = src[:iend] + png_chunk(b"zzZz", b"hidden") + src[iend:] + b"PK\x03\x04appended zip"
    out = ok(cdr.reencode(stuffed, PNG))
    assert b"hidden" not in out.data and b"PK" not in out.data and out.data.endswith(png_chunk(b"IEND", b""))


def test_gif_keeps_the_first_frame_only_without_comments():
    frames = [picture("P"), picture("P").transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    src = encoded(frames[0], "GIF", save_all=True, append_images=frames[1:], comment=b"secret-comment", loop=0,
                  duration=100)
    assert decoded(src).n_frames == 2 and b"NETSCAPE2.0" in src
    out = ok(cdr.reencode(src, GIF))
    after = decoded(out.data)
    assert after.n_frames == 1 and b"secret" not in out.data and b"NETSCAPE" not in out.data
    first = Image.open(io.BytesIO(src))
    first.load()
    assert after.convert("RGB").tobytes() == first.convert("RGB").tobytes()


def test_reencoding_is_stable():
    """What the outer agent wrote, written again, is the same (PNG, GIF) and still passes the inner check."""
    for mt, fmt in ((PNG, "PNG"), (GIF, "GIF")):
        once = ok(cdr.reencode(encoded(picture("P"), fmt), mt)).data
        assert ok(cdr.reencode(once, mt)).data == once


# --- bombs and broken pictures ----------------------------------------------------------------

def _no_decoding(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("decoded a picture over the pixel limit")
    monkeypatch.setattr(cdr.Image, "open", refuse)


def test_a_png_bomb_is_refused_from_its_header(monkeypatch):
    _no_decoding(monkeypatch)
    r = cdr.reencode(png_declaring(100_000, 100_000), PNG)
    assert isinstance(r, cdr.ImageRefusal) and r.code == Reason.IMAGE_TOO_LARGE and "100000x100000" in r.reason
    r = cdr.check_reencoded(png_declaring(100_000, 100_000), PNG)
    assert isinstance(r, cdr.ImageRefusal) and r.code == Reason.IMAGE_TOO_LARGE


def test_jpeg_and_gif_bombs_are_refused_from_their_headers(monkeypatch):
    jpg = bytearray(encoded(picture(), "JPEG", exif=gps_exif()))       # SOF after an APP1
    sof = jpg.index(b"\xff\xc0")
    jpg[sof + 5:sof + 9] = struct.pack(">HH", 60000, 60000)
    gif = bytearray(encoded(picture("P"), "GIF"))
    gif[6:10] = struct.pack("<HH", 65535, 65535)
    _no_decoding(monkeypatch)
    for data, mt, size in ((bytes(jpg), JPEG, "60000x60000"), (bytes(gif), GIF, "65535x65535")):
        r = cdr.reencode(data, mt)
        assert isinstance(r, cdr.ImageRefusal) and r.code == Reason.IMAGE_TOO_LARGE and size in r.reason


def test_pillows_own_bomb_check_is_a_refusal(monkeypatch):
    """A second net: where Pillow finds more pixels than the header reader did, its warning refuses."""
    assert Image.MAX_IMAGE_PIXELS == limits.IMAGE_PIXELS_MAX
    monkeypatch.setattr(cdr, "header_size", lambda data, mt: (1, 1))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    r = cdr.reencode(encoded(picture(size=(40, 30)), "PNG"), PNG)       # 1200 pixels: over 1000, under 2000
    assert isinstance(r, cdr.ImageRefusal) and r.code == Reason.IMAGE_TOO_LARGE
    r = cdr.reencode(encoded(picture(size=(100, 30)), "PNG"), PNG)      # over 2000: Pillow's error
    assert isinstance(r, cdr.ImageRefusal) and r.code == Reason.IMAGE_TOO_LARGE


@pytest.mark.parametrize("data,mt", [
    (b"\x89PNG\r\n\x1a\n" + b"\0" * 40, PNG),
    (encoded(picture(), "PNG")[:-30], PNG),
    (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\0" * 50, JPEG),
    (encoded(picture(), "JPEG")[:200], JPEG),
    (b"GIF89a\x10\x00\x10\x00" + b"\0" * 20, GIF),
    (b"%PDF-1.4", "application/pdf"),
])
def test_what_does_not_decode_is_refused(data, mt):
    r = cdr.reencode(data, mt)
    assert isinstance(r, cdr.ImageRefusal) and r.code == Reason.IMAGE_UNDECODABLE and r.reason


# --- the inner check --------------------------------------------------------------------------

def test_the_inner_check_refuses_what_the_encoder_never_writes():
    clean_png = ok(cdr.reencode(encoded(picture(), "PNG"), PNG)).data
    clean_jpg = ok(cdr.reencode(encoded(picture(), "JPEG"), JPEG)).data
    clean_gif = ok(cdr.reencode(encoded(picture("P"), "GIF"), GIF)).data
    iend = clean_png.rindex(b"IEND") - 4
    bad = {
        "png text": (clean_png[:iend] + png_chunk(b"tEXt", b"k\0v") + clean_png[iend:], PNG),
        "png trailing": (clean_png + b"PK\x03\x04", PNG),
        "jpeg exif": (encoded(picture(), "JPEG", exif=gps_exif()), JPEG),
        "jpeg comment": (clean_jpg[:2] + b"\xff\xfe\x00\x06hey!" + clean_jpg[2:], JPEG),
        "jpeg trailing": (clean_jpg + b"junk", JPEG),
        "gif comment": (encoded(picture("P"), "GIF", comment=b"hi"), GIF),
        "gif trailing": (clean_gif + b"x", GIF),
        "gif two frames": (encoded(picture("P"), "GIF", save_all=True,
                                    append_images=[picture("P").transpose(Image.Transpose.FLIP_TOP_BOTTOM)]), GIF),
        "not a picture": (b"%PDF-1.4", "application/pdf"),
    }
    for what, (data, mt) in bad.items():
        r = cdr.check_reencoded(data, mt)
        assert isinstance(r, cdr.ImageRefusal) and r.code == Reason.IMAGE_NOT_REENCODED, what
    broken = clean_png[:40] + bytes(len(clean_png) - 40)       # the structure of a PNG, garbage data
    r = cdr.check_reencoded(clean_png[:33] + png_chunk(b"IDAT", b"garbage") + png_chunk(b"IEND", b""), PNG)
    assert isinstance(r, cdr.ImageRefusal) and r.code == Reason.IMAGE_UNDECODABLE, r
    assert isinstance(cdr.check_reencoded(broken, PNG), cdr.ImageRefusal)


# --- the files lane's hook --------------------------------------------------------------------

def _plan(reencode: bool, max_size: int = 100000):
    text = f"""
policy: t
version: 1
default: deny
sources:
  outer-spool: {{kind: spool}}
destinations:
  inner-spool: {{kind: spool}}
rules:
  - id: pictures
    lane: files
    from: outer-spool
    to: inner-spool
    files: {{max_size: {max_size}, media_types: [image/png, image/jpeg, text/plain], name_pattern: "[a-z0-9.]+",
             reencode_images: {str(reencode).lower()}}}
""".encode()
    files = {"policy.yaml": text}
    return compile_policy(parse_policy(files), policy_hash(files))


def _take(plan, name, content):
    lane = OuterFilesLane(source="outer-spool", destination="inner-spool", ids=ObjectIds(7))
    return lane.take(SpoolFile(name, f"/spool/{name}", "file", len(content), content), plan, 1.0, 1_800_000_000.0)


def test_the_outer_lane_sends_the_reencoded_picture():
    src = encoded(picture(), "JPEG", exif=gps_exif(), comment=b"secret")
    [w] = _take(_plan(True), "a.jpg", src)
    assert isinstance(w, SealObject)
    f = w.obj.file
    assert f.content != src and b"SpyCam" not in f.content and b"secret" not in f.content
    assert f.size == len(f.content) and f.sm3 == sm3(f.content) and f.media_type == JPEG
    assert w.sent["size"] == f.size and w.sent["sm3"] == f.sm3.hex() and w.sent["rule"] == "pictures"
    assert w.sent["detail"]["reencoded"] == {"original_size": len(src), "original_sm3": sm3(src).hex(),
                                             "image": "jpeg 40x30 RGB"}
    # text under the same rule, and pictures under a rule without the option, cross as they are
    [t] = _take(_plan(True), "a.txt", b"hello\n")
    assert t.obj.file.content == b"hello\n" and "reencoded" not in t.sent["detail"]
    [p] = _take(_plan(False), "a.jpg", src)
    assert p.obj.file.content == src and "reencoded" not in p.sent["detail"]


def test_the_outer_lane_refuses_a_bomb_with_its_code():
    audit, move = _take(_plan(True), "b.png", png_declaring(100_000, 100_000))
    assert isinstance(audit, AuditIntent) and isinstance(move, MoveAside)
    f = audit.fields
    assert (f["event"], f["code"], f["rule"]) == ("object_refused", Reason.IMAGE_TOO_LARGE, "pictures")
    assert "100000x100000" in f["reason"]


def test_a_reencoded_picture_is_decided_again():
    """A JPEG that grows when re-encoded (quality 90) past max_size is refused by the rule's limit."""
    rnd = random.Random(1)
    noise = Image.frombytes("RGB", (200, 200), bytes(rnd.randrange(256) for _ in range(200 * 200 * 3)))
    src = encoded(noise, "JPEG", quality=10)
    again = ok(cdr.reencode(src, JPEG)).data
    assert len(src) < 10000 < len(again)
    out = _take(_plan(True, max_size=10000), "big.jpg", src)
    assert isinstance(out[0], AuditIntent) and out[0].fields["code"] == Reason.CONTENT_LIMIT
    assert "max_size" in out[0].fields["reason"]
    assert out[0].fields["detail"]["reencoded"]["original_size"] == len(src)


def test_the_inner_write_checks_pictures_its_rule_wants_reencoded():
    plan = _plan(True)
    src = encoded(picture(), "JPEG", exif=gps_exif())
    raw = make_file_object(object_id=1, name="a.jpg", content=src, source="outer-spool",
                           destination="inner-spool", now=1_800_000_000.0)
    decision = plan.decide(raw)
    refusal = inner_write(raw, decision, 1, (0,), plan)
    assert not isinstance(refusal, (WriteFile, str))
    assert refusal.code == Reason.IMAGE_NOT_REENCODED and refusal.rule == "pictures" and not refusal.allowed
    assert isinstance(inner_write(raw, _plan(False).decide(raw), 1, (0,), _plan(False)), WriteFile)
    [w] = _take(plan, "a.jpg", src)
    write = inner_write(w.obj, plan.decide(w.obj), 1, (0,), plan)
    assert isinstance(write, WriteFile) and write.content == w.obj.file.content
    assert write.delivered["detail"]["image_checked"] == "jpeg 40x30 RGB"


def test_the_inner_dispatcher_refuses_a_picture_the_outer_side_did_not_reencode():
    """A compromised outer host sends a picture with its EXIF under a reencode_images rule: the inner
    agent refuses it with the rule and code, and takes the re-encoded one."""
    plan = _plan(True)
    wall = 1_800_000_000.0
    d = InnerDispatch(_NoVideo(), files_output=True)
    d.handle(ev.KeyAccepted(3, plan.hash, "outer", 0.0, 2e9), plan, 1.0, wall)
    raw = make_file_object(object_id=9, name="a.jpg", content=encoded(picture(), "JPEG", exif=gps_exif()),
                           source="outer-spool", destination="inner-spool", now=wall)
    [rec] = d.handle(ev.ObjectReceived(9, raw.SerializeToString(), 3, (1,)), plan, 1.0, wall)
    f = rec.fields
    assert (f["event"], f["code"], f["rule"]) == ("object_refused", Reason.IMAGE_NOT_REENCODED, "pictures")
    assert "0xe1" in f["reason"]                          # the APP1 (EXIF) segment
    [w] = _take(plan, "a.jpg", raw.file.content)
    w.obj.object_id = 10
    [write] = d.handle(ev.ObjectReceived(10, w.obj.SerializeToString(), 3, (2,)), plan, 1.0, wall)
    assert isinstance(write, WriteFile) and write.content == w.obj.file.content


class _NoVideo:
    def deliver(self, *a):
        raise AssertionError("no video here")

    refuse = deliver
