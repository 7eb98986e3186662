"""Key announcement datagrams: prefix (4 bytes) then a serialized KeyAnnouncement.

Building signs the KeyAnnouncementBody with the outer key; parsing only decodes (no SM2 work):
the receiver decides when the expensive checks run.
"""

from __future__ import annotations

from typing import NamedTuple

from google.protobuf.message import Error as ProtobufError

from ferry import limits
from ferry.crypto import SM2PrivateKey
from ferry.pb import ferry_pb2
from ferry.wire.errors import WireError
from ferry.wire.frame import ANNOUNCEMENT_PREFIX

KEY_ID_SIZE = 32
POLICY_HASH_SIZE = 32
SIGNATURE_MAX = 80
ENVELOPE_MAX = 256
SENDER_MAX = 128


class Announcement(NamedTuple):
    """A decoded (not yet verified) key announcement."""

    body_bytes: bytes
    signature: bytes
    epoch: int
    envelope: bytes
    not_before: float
    not_after: float
    policy_hash: bytes
    outer_key_id: bytes
    inner_key_id: bytes
    first_block: int
    sender: str


def build_announcement(
    *,
    outer_key: SM2PrivateKey,
    envelope: bytes,
    epoch: int,
    not_before: float,
    not_after: float,
    policy_hash: bytes,
    outer_key_id: bytes,
    inner_key_id: bytes,
    first_block: int,
    sender: str,
) -> bytes:
    """A signed key announcement datagram."""
    body = ferry_pb2.KeyAnnouncementBody(
        epoch=epoch,
        envelope=envelope,
        not_before=not_before,
        not_after=not_after,
        policy_hash=policy_hash,
        outer_key_id=outer_key_id,
        inner_key_id=inner_key_id,
        first_block=first_block,
        sender=sender,
    ).SerializeToString(deterministic=True)
    msg = ferry_pb2.KeyAnnouncement(body=body, signature=outer_key.sign(body))
    data: bytes = ANNOUNCEMENT_PREFIX + msg.SerializeToString(deterministic=True)
    if len(data) > limits.ANNOUNCEMENT_MAX:
        raise ValueError("announcement too large (sender name?)")
    return data


def parse_announcement(data: bytes | memoryview) -> Announcement:
    """Decode an announcement datagram; WireError if malformed. Does not verify anything cryptographic."""
    n = len(data)
    if n <= len(ANNOUNCEMENT_PREFIX) or n > limits.ANNOUNCEMENT_MAX:
        raise WireError("bad announcement length")
    data = bytes(data)
    if data[:4] != ANNOUNCEMENT_PREFIX:
        raise WireError("not an announcement datagram")
    try:
        msg = ferry_pb2.KeyAnnouncement.FromString(data[4:])
        body = ferry_pb2.KeyAnnouncementBody.FromString(msg.body)
    except (ProtobufError, ValueError, TypeError, RuntimeError) as exc:
        raise WireError(f"announcement does not decode: {type(exc).__name__}") from None
    if not msg.body or not 8 <= len(msg.signature) <= SIGNATURE_MAX:
        raise WireError("bad announcement signature field")
    if len(body.outer_key_id) != KEY_ID_SIZE or len(body.inner_key_id) != KEY_ID_SIZE:
        raise WireError("bad key id")
    if len(body.policy_hash) != POLICY_HASH_SIZE:
        raise WireError("bad policy hash")
    if not 1 <= len(body.envelope) <= ENVELOPE_MAX:
        raise WireError("bad envelope")
    if not body.not_before <= body.not_after:  # also refuses NaN
        raise WireError("bad validity")
    if body.first_block >= 1 << 63:
        raise WireError("bad first_block")
    if len(body.sender) > SENDER_MAX:
        raise WireError("sender name too long")
    return Announcement(
        msg.body,
        msg.signature,
        body.epoch,
        body.envelope,
        body.not_before,
        body.not_after,
        body.policy_hash,
        body.outer_key_id,
        body.inner_key_id,
        body.first_block,
        body.sender,
    )
