"""Signed policy bundles (pure): make, parse and verify ``*.ferrypolicy``.

A bundle is a serialized ``ferry.mgmt.v1.PolicyBundle``: the files of a policy
folder (top-level ``*.yaml`` plus ``tests/*.yaml``), the policy hash of the
top-level files, and an SM2 signature by a security administrator's key.

The signature covers a canonical byte string, never the protobuf bytes (whose
field and repeated order a sender may vary)::

    b"ferry-policy-bundle\\0" || u32 format || policy_hash (32) || signer_key_id (32)
    || f64 signed_at || u32 n || n x (u16 len(name) || name || SM3(content))   names sorted

Verification recomputes every part from the files; one error type, BundleError.

``signed_at`` is the bundle's serial. It is covered by the signature, so nobody without an
administrator's key can make an old policy look new. An agent keeps the last bundle applied to
it and refuses one signed before it (``is_older``) unless the administrator asks for a rollback
(``ferry policy apply --rollback``). The same bundle again is not older. No field of its own and
no change of the signed string: every bundle ever signed keeps verifying, and its place in time
is the administrator's clock when signing (keep it right; ``policy status`` shows it).
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Iterable, Mapping

from google.protobuf.message import DecodeError

from ferry import limits
from ferry.crypto import CryptoError, SM2PrivateKey, SM2PublicKey, sm3
from ferry.pb import mgmt_pb2
from ferry.policy.load import policy_hash

PolicyBundle = mgmt_pb2.PolicyBundle

BUNDLE_SUFFIX = ".ferrypolicy"
BUNDLE_FORMAT = 1
SIGN_DOMAIN = b"ferry-policy-bundle\0"
TESTS_PREFIX = "tests/"
KEY_ID_SIZE = 32
HASH_SIZE = 32

_BASE_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}\.ya?ml"
_NAME = re.compile(rf"(?:tests/)?{_BASE_NAME}", re.ASCII)


class BundleError(Exception):
    """A bundle that cannot be trusted or used.

    ``code`` is a short machine name: malformed, unsigned, unknown_signer,
    bad_signature, hash_mismatch, too_large, bad_name.
    """

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(message)


def check_file_name(name: str) -> None:
    """A top-level ``x.yaml`` or ``tests/x.yaml``; nothing path-like, ASCII only."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or ".." in name:
        raise BundleError("bad_name", f"bad file name in bundle: {name!r} "
                                      "(expected NAME.yaml or tests/NAME.yaml)")


def policy_files(files: Mapping[str, bytes]) -> dict[str, bytes]:
    """The top-level files: what the policy hash and the engine see (tests excluded)."""
    return {n: c for n, c in files.items() if not n.startswith(TESTS_PREFIX)}


def suite_files(files: Mapping[str, bytes]) -> dict[str, bytes]:
    """The policy's own test suite files, named ``tests/x.yaml``."""
    return {n: c for n, c in files.items() if n.startswith(TESTS_PREFIX)}


def _check_files(files: Mapping[str, bytes]) -> None:
    if not files:
        raise BundleError("malformed", "bundle holds no files")
    if len(files) > limits.POLICY_BUNDLE_FILES_MAX:
        raise BundleError("too_large", f"more than {limits.POLICY_BUNDLE_FILES_MAX} files in bundle")
    total = 0
    for name, content in files.items():
        check_file_name(name)
        if len(content) > limits.POLICY_FILE_MAX:
            raise BundleError("too_large", f"{name}: larger than {limits.POLICY_FILE_MAX} bytes")
        total += len(content)
    if total > limits.POLICY_BUNDLE_MAX:
        raise BundleError("too_large", f"files total more than {limits.POLICY_BUNDLE_MAX} bytes")
    if not policy_files(files):
        raise BundleError("malformed", "bundle holds no top-level policy file")


def signing_message(fmt: int, p_hash: bytes, signer_key_id: bytes, signed_at: float,
                    files: Mapping[str, bytes]) -> bytes:
    """The canonical bytes an administrator's SM2 key signs."""
    parts = [SIGN_DOMAIN, struct.pack(">I", fmt), p_hash, signer_key_id, struct.pack(">d", signed_at),
             struct.pack(">I", len(files))]
    for name in sorted(files):
        raw = name.encode("ascii")
        parts += [struct.pack(">H", len(raw)), raw, sm3(files[name])]
    return b"".join(parts)


def make_bundle(files: Mapping[str, bytes], key: SM2PrivateKey, now: float) -> PolicyBundle:
    """Sign ``files`` (name -> bytes, names as in a bundle) with ``key`` at time ``now``."""
    files = {n: bytes(c) for n, c in files.items()}
    _check_files(files)
    if not math.isfinite(now) or now < 0:
        raise BundleError("malformed", "signing time must be a finite number of seconds >= 0")
    p_hash = policy_hash(policy_files(files))
    key_id = key.public_key().key_id()
    sig = key.sign(signing_message(BUNDLE_FORMAT, p_hash, key_id, now, files))
    return PolicyBundle(
        format=BUNDLE_FORMAT,
        files=[mgmt_pb2.PolicyFile(name=n, content=files[n]) for n in sorted(files)],
        policy_hash=p_hash, signer_key_id=key_id, signed_at=now, signature=sig)


def parse_bundle(data: bytes) -> PolicyBundle:
    """Bytes of a ``*.ferrypolicy`` file -> PolicyBundle (not yet verified)."""
    if len(data) > limits.POLICY_BUNDLE_MAX:
        raise BundleError("too_large", f"bundle larger than {limits.POLICY_BUNDLE_MAX} bytes")
    bundle = PolicyBundle()
    try:
        bundle.ParseFromString(bytes(data))
    except (DecodeError, ValueError, RecursionError) as e:
        raise BundleError("malformed", f"not a policy bundle: {e}") from None
    return bundle


def _trusted_by_id(trusted_keys: Iterable[SM2PublicKey] | Mapping[bytes, SM2PublicKey]
                   ) -> dict[bytes, SM2PublicKey]:
    if isinstance(trusted_keys, Mapping):
        return dict(trusted_keys)
    return {k.key_id(): k for k in trusted_keys}


def verify_bundle(bundle: PolicyBundle,
                  trusted_keys: Iterable[SM2PublicKey] | Mapping[bytes, SM2PublicKey]
                  ) -> tuple[dict[str, bytes], bytes]:
    """Check ``bundle`` against the trusted signer keys; returns (files, signer_key_id).

    Raises BundleError for an unsigned bundle, an unknown signer, a bad
    signature, a policy hash that does not match the files, an oversize bundle
    or a path-like file name.
    """
    if bundle.format != BUNDLE_FORMAT:
        raise BundleError("malformed", f"unknown bundle format {bundle.format} (expected {BUNDLE_FORMAT})")
    if not bundle.signature or not bundle.signer_key_id:
        raise BundleError("unsigned", "bundle is not signed")
    if len(bundle.signer_key_id) != KEY_ID_SIZE:
        raise BundleError("malformed", "signer key id must be 32 bytes")
    if len(bundle.policy_hash) != HASH_SIZE:
        raise BundleError("malformed", "policy hash must be 32 bytes")
    if not math.isfinite(bundle.signed_at) or bundle.signed_at < 0:
        raise BundleError("malformed", "signing time is not a finite number of seconds >= 0")
    if len(bundle.files) > limits.POLICY_BUNDLE_FILES_MAX:
        raise BundleError("too_large", f"more than {limits.POLICY_BUNDLE_FILES_MAX} files in bundle")
    files: dict[str, bytes] = {}
    for f in bundle.files:
        check_file_name(f.name)
        if f.name in files:
            raise BundleError("bad_name", f"file {f.name!r} appears twice in bundle")
        files[f.name] = bytes(f.content)
    _check_files(files)
    key = _trusted_by_id(trusted_keys).get(bytes(bundle.signer_key_id))
    if key is None:
        raise BundleError("unknown_signer", f"bundle signed by key {bundle.signer_key_id.hex()[:16]}, "
                          "which is not a trusted policy signer")
    message = signing_message(bundle.format, bytes(bundle.policy_hash), bytes(bundle.signer_key_id),
                              bundle.signed_at, files)
    try:
        key.verify(message, bytes(bundle.signature))
    except CryptoError:
        raise BundleError("bad_signature", "bundle signature does not verify") from None
    actual = policy_hash(policy_files(files))
    if actual != bundle.policy_hash:
        raise BundleError("hash_mismatch", f"policy hash {bundle.policy_hash.hex()[:16]} does not match "
                                           f"the files ({actual.hex()[:16]})")
    return files, bytes(bundle.signer_key_id)


def is_older(signed_at: float, p_hash: bytes, running_signed_at: float, running_hash: bytes) -> bool:
    """Whether a bundle (signed at ``signed_at``, policy ``p_hash``) goes back behind the bundle an
    agent runs: signed earlier, or at the same instant with another policy. The same bundle again
    (same time, same policy) is not older; nor is anything when the agent runs no bundle
    (``running_signed_at`` 0: the configured folder)."""
    if running_signed_at <= 0:
        return False
    if signed_at != running_signed_at:
        return signed_at < running_signed_at
    return bytes(p_hash) != bytes(running_hash)
