"""ferry.wire: the sans-IO ferry link (proto/WIRE.md).

No networking code at all: LinkSender turns objects into datagrams, LinkReceiver turns
datagrams into objects and events. Both take `now` and never read a clock or a socket.
"""

from ferry.wire.errors import WireError
from ferry.wire.events import (
    AnnouncementRefused,
    BlockLost,
    BlockRefused,
    BlockSealed,
    DatagramsDropped,
    HeartbeatReceived,
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
from ferry.wire.sender import LinkSender, SenderCounters

__all__ = [
    "AnnouncementRefused",
    "BlockLost",
    "BlockRefused",
    "BlockSealed",
    "DatagramsDropped",
    "HeartbeatReceived",
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
    "SenderCounters",
    "SenderEvent",
    "WireError",
]
