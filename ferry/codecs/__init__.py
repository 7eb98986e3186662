"""Sans-IO codecs of the video lane: RTP, RFC 4571 framing, RTP payload formats for H.264/H.265,
MPEG-2 program streams and NAL units.

No networking code at all: bytes (and a `now` where time matters) go in, values, events and bytes
come out. Every parser of untrusted bytes raises only `CodecError` (ferry.codecs.errors).
"""

from ferry.codecs.errors import CodecError

__all__ = ["CodecError"]
