"""The one error family of ferry.crypto."""


class CryptoError(Exception):
    """Any failure in ferry.crypto: bad key, bad encoding, failed authentication."""
