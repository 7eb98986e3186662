"""The one error family of ferry.wire."""


class WireError(Exception):
    """Malformed or refused link bytes; the message is a short reason."""
