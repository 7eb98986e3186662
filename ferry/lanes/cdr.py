"""Content disarm and reconstruction of pictures (issue 11 item 4): decode, re-encode, keep only pixels.

Pure: bytes and a media type in, the rebuilt bytes or a refusal out. Used by the files lane
where a rule says ``reencode_images: true``.

Outer side, ``reencode``:

1. the width and height are read from the header by the small readers here (``header_size``),
   before Pillow sees a byte, and over ``limits.IMAGE_PIXELS_MAX`` the picture is refused
   (``image_too_large``): a decompression bomb is never decoded. Pillow's own
   ``MAX_IMAGE_PIXELS`` is set to the same limit and its ``DecompressionBombWarning`` /
   ``DecompressionBombError`` are refusals too (a second net, e.g. for a GIF frame larger
   than its screen);
2. only the one Pillow plugin the sniffed media type names is tried (PNG, JPEG, GIF: what
   ``ferry.codecs.media_type`` knows); any exception the decoder raises on these untrusted bytes
   is a refusal (``image_undecodable``): Pillow has no single error family;
3. the pixels are written again in the same format by a fresh encoder, with nothing else:
   no EXIF (its orientation is applied to the pixels first), XMP, ICC profile, PNG text chunks,
   JPEG comments or application segments, GIF comments or application extensions, and no bytes
   after the format's end. Modes: PNG keeps 1, L, LA, P, RGB, RGBA, I, I;16 (pixel for pixel),
   anything else becomes RGBA or RGB; JPEG keeps L and RGB (CMYK and others become RGB), quality
   ``JPEG_QUALITY``, baseline; PNG at zlib level ``PNG_COMPRESS_LEVEL``; GIF keeps the first frame
   only (an animation crosses as a still picture), in P or L.

Inner side, ``check_reencoded``: the picture must be exactly what that encoder writes (the
structure readers below: only IHDR, PLTE, tRNS, IDAT, IEND; only SOI, JFIF APP0, DQT, SOF, DHT,
DRI, SOS, EOI; one image with at most a graphic control extension; nothing after the end) and
must decode under the same bound. The inner agent does not re-encode again: a second JPEG
encoding would lose quality and cost a decode and an encode per picture; the check costs one
decode, and what it lets through holds no byte beyond the picture's own coding.
"""

from __future__ import annotations

import io
import struct
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps

from ferry import limits
from ferry.codecs.media_type import GIF, JPEG, PNG
from ferry.reasons import Reason

__all__ = ["FORMATS", "JPEG_QUALITY", "PNG_COMPRESS_LEVEL", "ImageRefusal", "Reencoded", "check_reencoded",
           "header_size", "reencode"]

# media type -> the one Pillow plugin tried for it
FORMATS: dict[str, str] = {PNG: "PNG", JPEG: "JPEG", GIF: "GIF"}
JPEG_QUALITY = 90
# zlib level of re-encoded PNGs: 1 costs about half the time of Pillow's default 6 on a 12-megapixel
# photo (the adaptive row filters remain) for about 12% more bytes
PNG_COMPRESS_LEVEL = 1

Image.MAX_IMAGE_PIXELS = limits.IMAGE_PIXELS_MAX

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_MODES = frozenset({"1", "L", "LA", "P", "RGB", "RGBA", "I", "I;16"})
_JPEG_MODES = frozenset({"L", "RGB"})
_GIF_MODES = frozenset({"P", "L"})
# JPEG markers the encoder writes before and between scans (besides APP0 "JFIF"): DQT, SOF0-2, DHT, DRI
_JPEG_TABLES = frozenset({0xDB, 0xC0, 0xC1, 0xC2, 0xC4, 0xDD})
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


@dataclass(frozen=True, slots=True)
class Reencoded:
    """A picture rebuilt (outer) or checked (inner)."""

    data: bytes
    format: str        # "PNG", "JPEG", "GIF"
    width: int
    height: int
    mode: str

    def describe(self) -> str:
        return f"{self.format.lower()} {self.width}x{self.height} {self.mode}"


@dataclass(frozen=True, slots=True)
class ImageRefusal:
    code: Reason
    reason: str


def _too_large(width: int, height: int) -> ImageRefusal | None:
    if width * height > limits.IMAGE_PIXELS_MAX:
        return ImageRefusal(Reason.IMAGE_TOO_LARGE, f"image {width}x{height} is {width * height} pixels, over the "
                                                    f"appliance limit of {limits.IMAGE_PIXELS_MAX} (not decoded)")
    if width < 1 or height < 1:
        return ImageRefusal(Reason.IMAGE_UNDECODABLE, f"image {width}x{height} has no pixels")
    return None


# --- header readers: width x height before any decoding -------------------------------------

def header_size(data: bytes, media_type: str) -> tuple[int, int] | str:
    """The picture's declared (width, height), or why its header cannot be read."""
    n = len(data)
    if media_type == PNG:
        if n < 24 or not data.startswith(_PNG_SIGNATURE) or data[12:16] != b"IHDR":
            return "PNG without an IHDR chunk first"
        w, h = struct.unpack_from(">II", data, 16)
        return w, h
    if media_type == GIF:
        if n < 10 or data[:6] not in (b"GIF87a", b"GIF89a"):
            return "GIF without a header"
        w, h = struct.unpack_from("<HH", data, 6)
        return w, h
    if media_type == JPEG:
        i = 2
        while i + 4 <= n:   # each step moves on at least 2 bytes
            if data[i] != 0xFF:
                return f"JPEG without a marker at byte {i}"
            marker = data[i + 1]
            if marker == 0xFF:                      # fill byte
                i += 1
                continue
            if marker == 0xD8 or 0xD0 <= marker <= 0xD7 or marker == 0x01:   # markers without a length
                i += 2
                continue
            length = (data[i + 2] << 8) | data[i + 3]
            if length < 2:
                return f"JPEG segment of length {length} at byte {i}"
            if marker in _JPEG_SOF:
                if i + 9 > n:
                    break
                h, w = struct.unpack_from(">HH", data, i + 5)
                return w, h
            if marker in (0xDA, 0xD9):
                return "JPEG without a frame header before its scan"
            i += 2 + length
        return "JPEG ends before its frame header"
    return f"{media_type} is not a picture ferry re-encodes"


# --- structure readers: what the encoder writes and nothing else (inner check) ---------------

def _png_extra(data: bytes) -> str | None:
    if not data.startswith(_PNG_SIGNATURE):
        return "no PNG signature"
    i, n, first = 8, len(data), True
    while True:
        if i + 12 > n:
            return "PNG ends without IEND"
        (length,) = struct.unpack_from(">I", data, i)
        kind = data[i + 4:i + 8]
        end = i + 12 + length
        if end > n:
            return f"PNG chunk {kind!r} runs past the end"
        if first != (kind == b"IHDR"):
            return "IHDR is not the first chunk" if first else "a second IHDR"
        first = False
        if kind == b"IEND":
            return None if end == n else f"{n - end} bytes after IEND"
        if kind not in (b"IHDR", b"PLTE", b"tRNS", b"IDAT"):
            return f"PNG chunk {kind.decode('latin-1')!r} (only IHDR, PLTE, tRNS, IDAT, IEND are written)"
        i = end


def _gif_subblocks(data: bytes, i: int) -> int | None:
    """Index after the sub-blocks starting at ``i`` (and their terminator), None if they run out."""
    n = len(data)
    while i < n:
        size = data[i]
        i += 1
        if size == 0:
            return i
        i += size
    return None


def _gif_extra(data: bytes) -> str | None:
    n = len(data)
    if n < 13 or data[:6] not in (b"GIF87a", b"GIF89a"):
        return "no GIF header"
    flags = data[10]
    i = 13 + (3 * (2 << (flags & 7)) if flags & 0x80 else 0)
    images = 0
    while True:
        if i >= n:
            return "GIF ends without its trailer"
        block = data[i]
        if block == 0x3B:
            return None if i + 1 == n else f"{n - i - 1} bytes after the GIF trailer"
        if block == 0x21:
            if i + 1 >= n:
                return "GIF ends in an extension"
            if data[i + 1] != 0xF9:
                return f"GIF extension 0x{data[i + 1]:02x} (only graphic control extensions are written)"
            after = _gif_subblocks(data, i + 2)
        elif block == 0x2C:
            images += 1
            if images > 1:
                return "a second GIF frame (the first frame only is written)"
            if i + 11 > n:
                return "GIF ends in an image descriptor"
            flags = data[i + 9]
            after = _gif_subblocks(data, i + 11 + (3 * (2 << (flags & 7)) if flags & 0x80 else 0))
        else:
            return f"GIF block 0x{block:02x} at byte {i}"
        if after is None:
            return "GIF ends inside a block"
        i = after


def _jpeg_extra(data: bytes) -> str | None:
    n = len(data)
    if not data.startswith(b"\xff\xd8"):
        return "no JPEG SOI"
    i = 2
    while True:
        if i + 4 > n:
            return "JPEG ends without EOI"
        if data[i] != 0xFF:
            return f"no JPEG marker at byte {i}"
        marker = data[i + 1]
        length = (data[i + 2] << 8) | data[i + 3]
        if length < 2 or i + 2 + length > n:
            return f"JPEG segment 0x{marker:02x} at byte {i} runs past the end"
        if marker == 0xE0:
            if data[i + 4:i + 9] != b"JFIF\x00":
                return "JPEG APP0 segment that is not JFIF"
        elif marker != 0xDA and marker not in _JPEG_TABLES:
            return f"JPEG marker 0x{marker:02x} (metadata, comment or a marker the encoder does not write)"
        i += 2 + length
        if marker != 0xDA:
            continue
        while True:   # entropy-coded data: up to a marker that is not byte stuffing or a restart
            i = data.find(b"\xff", i)
            if i < 0 or i + 1 >= n:
                return "JPEG ends inside a scan"
            following = data[i + 1]
            if following == 0 or 0xD0 <= following <= 0xD7:
                i += 2
                continue
            break
        if following == 0xD9:
            return None if i + 2 == n else f"{n - i - 2} bytes after the JPEG EOI"


_EXTRA = {PNG: _png_extra, JPEG: _jpeg_extra, GIF: _gif_extra}


# --- decoding and encoding (Pillow) -----------------------------------------------------

def _decode(data: bytes, media_type: str) -> Image.Image | ImageRefusal:
    """The picture's first frame decoded, its pixel count bounded before decoding."""
    size = header_size(data, media_type)
    if isinstance(size, str):
        return ImageRefusal(Reason.IMAGE_UNDECODABLE, size)
    refusal = _too_large(*size)
    if refusal is not None:
        return refusal
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            im = Image.open(io.BytesIO(data), formats=[FORMATS[media_type]])
            refusal = _too_large(*im.size)    # the size Pillow found (a GIF frame may widen its screen)
            if refusal is not None:
                return refusal
            im.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            return ImageRefusal(Reason.IMAGE_TOO_LARGE, f"decompression bomb: {e}")
        except Exception as e:   # noqa: BLE001 - any decoder error on untrusted bytes is a refusal
            return ImageRefusal(Reason.IMAGE_UNDECODABLE, f"{FORMATS[media_type]} does not decode: "
                                                          f"{type(e).__name__}: {e}"[:300])
    return im


def _rebuild(im: Image.Image, media_type: str) -> tuple[Image.Image, dict[str, object]]:
    """A metadata-free copy of ``im`` in a mode the format writes, and the encoder's options."""
    transparency = im.info.get("transparency")
    if media_type == JPEG:
        ImageOps.exif_transpose(im, in_place=True)   # the orientation goes into the pixels, the EXIF goes
        if im.mode not in _JPEG_MODES:
            im = im.convert("RGB")
        options: dict[str, object] = {"quality": JPEG_QUALITY, "optimize": False, "progressive": False}
        transparency = None
    elif media_type == PNG:
        options = {"optimize": False, "compress_level": PNG_COMPRESS_LEVEL}
        if im.mode not in _PNG_MODES:
            alpha = "A" in im.getbands() or transparency is not None
            im = im.convert("RGBA" if alpha else "RGB")
            transparency = None
    else:
        options = {"optimize": False}
        if im.mode not in _GIF_MODES:
            im = im.convert("RGB").quantize(256)
            transparency = None
    im.info = {}          # the decoded picture is ours: no copy of its pixels
    if transparency is not None:
        options["transparency"] = transparency
    return im, options


def reencode(data: bytes, media_type: str) -> Reencoded | ImageRefusal:
    """Outer side: the picture decoded and written again with nothing but its pixels."""
    if media_type not in FORMATS:
        return ImageRefusal(Reason.IMAGE_UNDECODABLE, f"{media_type} is not a picture ferry re-encodes")
    decoded = _decode(data, media_type)
    if isinstance(decoded, ImageRefusal):
        return decoded
    fmt = FORMATS[media_type]
    try:
        clean, options = _rebuild(decoded, media_type)
        out = io.BytesIO()
        clean.save(out, fmt, **options)
    except Exception as e:   # noqa: BLE001 - Pillow's conversions raise what they like on odd inputs
        return ImageRefusal(Reason.IMAGE_UNDECODABLE, f"{fmt} does not re-encode: {type(e).__name__}: {e}"[:300])
    return Reencoded(out.getvalue(), fmt, clean.width, clean.height, clean.mode)


def check_reencoded(data: bytes, media_type: str) -> Reencoded | ImageRefusal:
    """Inner side: ``data`` holds only what ``reencode`` writes, and decodes under the same bound."""
    if media_type not in FORMATS:
        return ImageRefusal(Reason.IMAGE_NOT_REENCODED, f"{media_type} is not a picture ferry re-encodes")
    extra = _EXTRA[media_type](data)
    if extra is not None:
        return ImageRefusal(Reason.IMAGE_NOT_REENCODED, f"not as re-encoded: {extra}")
    decoded = _decode(data, media_type)
    if isinstance(decoded, ImageRefusal):
        return decoded
    return Reencoded(data, FORMATS[media_type], decoded.width, decoded.height, decoded.mode)
