import pytest

from ferry.crypto import SM2PrivateKey


@pytest.fixture(scope="session")
def keys():
    """(outer private key, inner private key)."""
    return SM2PrivateKey.generate(), SM2PrivateKey.generate()


@pytest.fixture(scope="session")
def other_key():
    return SM2PrivateKey.generate()
