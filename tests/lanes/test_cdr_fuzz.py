"""Hypothesis: picture re-encoding (ferry.lanes.cdr) on mutated PNG, JPEG and GIF bytes never crashes.

Every input ends as a clean refusal (a reason code and a sentence) or as a picture that the inner
check accepts and that decodes again; the header and structure readers never raise."""
from __future__ import annotations

import io

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, PngImagePlugin

from ferry.lanes import cdr
from ferry.reasons import Reason

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CODES = {Reason.IMAGE_TOO_LARGE, Reason.IMAGE_UNDECODABLE}


def _seed(fmt: str, mode: str, **options) -> bytes:
    im = Image.new("RGB", (12, 9))
    im.putdata([(x * 20, y * 25, (x + y) * 10) for y in range(9) for x in range(12)])
    if mode != "RGB":
        im = im.quantize(16) if mode == "P" else im.convert(mode)
    buf = io.BytesIO()
    im.save(buf, fmt, **options)
    return buf.getvalue()


_text = PngImagePlugin.PngInfo()
_text.add_text("Comment", "x")
SEEDS = [
    ("image/png", _seed("PNG", "RGB", pnginfo=_text)),
    ("image/png", _seed("PNG", "P", transparency=2)),
    ("image/png", _seed("PNG", "LA")),
    ("image/jpeg", _seed("JPEG", "RGB", comment=b"c")),
    ("image/jpeg", _seed("JPEG", "L", progressive=True)),
    ("image/jpeg", _seed("JPEG", "CMYK")),
    ("image/gif", _seed("GIF", "P", comment=b"c")),
    ("image/gif", _seed("GIF", "L", transparency=0)),
]


@st.composite
def mutated(draw):
    media_type, data = draw(st.sampled_from(SEEDS))
    buf = bytearray(data)
    for _ in range(draw(st.integers(0, 6))):
        op = draw(st.sampled_from(["set", "insert", "delete", "truncate", "append"]))
        at = draw(st.integers(0, max(0, len(buf) - 1)))
        if op == "set" and buf:
            buf[at] = draw(st.integers(0, 255))
        elif op == "insert":
            buf[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del buf[at:at + draw(st.integers(1, 16))]
        elif op == "truncate":
            del buf[at:]
        else:
            buf += draw(st.binary(min_size=1, max_size=32))
    return media_type, bytes(buf)


def _clean(result) -> None:
    if isinstance(result, cdr.ImageRefusal):
        assert result.code in CODES and result.reason
        return
    assert isinstance(result, cdr.Reencoded)
    mt = {"PNG": "image/png", "JPEG": "image/jpeg", "GIF": "image/gif"}[result.format]
    checked = cdr.check_reencoded(result.data, mt)     # what the outer agent writes, the inner agent takes
    assert isinstance(checked, cdr.Reencoded), checked
    im = Image.open(io.BytesIO(result.data), formats=[result.format])
    im.load()
    assert im.size == (result.width, result.height)


@FAST
@given(mutated())
def test_mutated_pictures_are_refused_or_rebuilt(case):
    media_type, data = case
    _clean(cdr.reencode(data, media_type))
    checked = cdr.check_reencoded(data, media_type)
    assert isinstance(checked, (cdr.Reencoded, cdr.ImageRefusal))
    if isinstance(checked, cdr.ImageRefusal):
        assert checked.code in CODES | {Reason.IMAGE_NOT_REENCODED}


@FAST
@given(st.sampled_from(["image/png", "image/jpeg", "image/gif"]), st.binary(max_size=300))
def test_arbitrary_bytes_are_refused_or_rebuilt(media_type, data):
    magic = {"image/png": b"\x89PNG\r\n\x1a\n", "image/jpeg": b"\xff\xd8\xff", "image/gif": b"GIF89a"}[media_type]
    for candidate in (data, magic + data):
        size = cdr.header_size(candidate, media_type)
        assert isinstance(size, str) or (isinstance(size, tuple) and len(size) == 2)
        _clean(cdr.reencode(candidate, media_type))
        assert isinstance(cdr.check_reencoded(candidate, media_type), (cdr.Reencoded, cdr.ImageRefusal))


@FAST
@given(mutated())
def test_the_structure_readers_fed_one_prefix_at_a_time_never_raise(case):
    media_type, data = case
    for end in range(0, len(data), max(1, len(data) // 40)):
        cdr.header_size(data[:end], media_type)
        result = cdr._EXTRA[media_type](data[:end])
        assert result is None or isinstance(result, str)
