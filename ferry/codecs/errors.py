"""The one error family of ferry.codecs.

Every parser of untrusted bytes in this package raises `CodecError` (or a subclass) and
nothing else; any other exception escaping a parser is a bug.
"""


class CodecError(Exception):
    """Malformed or refused media bytes; the message is a short reason."""


class RtpError(CodecError):
    """Malformed RTP packet (RFC 3550) or RTP payload (RFC 6184, RFC 7798)."""


class FramingError(CodecError):
    """Malformed RFC 4571 framing, or a frame larger than allowed."""
