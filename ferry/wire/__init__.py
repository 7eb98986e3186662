"""ferry.wire: the sans-IO ferry link (proto/WIRE.md).

No networking code at all: LinkSender turns objects into datagrams, LinkReceiver turns
datagrams into objects and events. Both take `now` (monotonic: timers) and, where validity
matters, `wall` (the wall clock), and never read a clock or a socket. A sender made with
seal=False leaves blocks as `UnsealedBlock` values for the caller to `seal` where it likes.
"""

from ferry.wire.errors import WireError
from ferry.wire.events import (
    AnnouncementRefused,
    BlockLost,
    BlockRefused,
    BlockSealed,
    DatagramsDropped,
    HeartbeatReceived,
    InternalError,
    KeyAccepted,
    KeyAnnounced,
    KeyRotated,
    LinkDown,
    LinkUp,
    ObjectLost,
    ObjectReceived,
    ReceiverEvent,
    SenderEvent,
)
from ferry.wire.receiver import LinkReceiver, ReceiverCounters
from ferry.wire.replay import ReplayWindow
from ferry.wire.seal import UnsealedBlock, seal
from ferry.wire.sender import LinkSender, SenderCounters, SendItem

__all__ = [
    "AnnouncementRefused",
    "BlockLost",
    "BlockRefused",
    "BlockSealed",
    "DatagramsDropped",
    "HeartbeatReceived",
    "InternalError",
    "KeyAccepted",
    "KeyAnnounced",
    "KeyRotated",
    "LinkDown",
    "LinkReceiver",
    "LinkSender",
    "LinkUp",
    "ObjectLost",
    "ObjectReceived",
    "ReceiverCounters",
    "ReceiverEvent",
    "ReplayWindow",
    "SendItem",
    "SenderCounters",
    "SenderEvent",
    "UnsealedBlock",
    "WireError",
    "seal",
]
