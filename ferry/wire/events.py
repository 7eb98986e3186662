"""Events of the link sender and receiver: small frozen dataclasses."""

from __future__ import annotations

from dataclasses import dataclass, field

from ferry.reasons import Reason


# --- sender ---------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class BlockSealed:
    """A block was sealed; object_ids are the objects with any byte in it."""

    epoch: int
    block_no: int
    object_ids: tuple[int, ...]
    size: int


@dataclass(frozen=True, slots=True)
class KeyRotated:
    """A new session key (epoch) replaced the old one; reason is "time", "bytes" or "clock" (the
    wall clock stepped by `clock_step` seconds against the monotonic clock: sender.py)."""

    epoch: int
    reason: str
    clock_step: float = 0.0


@dataclass(frozen=True, slots=True)
class KeyAnnounced:
    """The first announcement of an epoch was queued."""

    epoch: int


SenderEvent = BlockSealed | KeyRotated | KeyAnnounced


# --- receiver -------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ObjectReceived:
    """A whole object arrived intact; blocks are the block numbers that carried it."""

    object_id: int
    payload: bytes = field(repr=False)
    epoch: int
    blocks: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class BlockLost:
    """A gap: blocks block_no .. block_no + count - 1 that authenticated data proves were sent can
    never be rebuilt. One event per gap whatever its length (a gap still open at the frontier may
    go on in a later event); none for a gap inside one object the receiver saw on both sides of
    it (that object's ObjectLost is the record)."""

    epoch: int
    block_no: int
    reason: Reason
    count: int = 1


@dataclass(frozen=True, slots=True)
class ObjectLost:
    """An object the receiver knows of that will never be complete (once per object, never for one
    delivered); blocks: (first, last), the range of blocks known to carry it (those that did
    and the neighbours it needed)."""

    object_id: int
    epoch: int
    blocks: tuple[int, int]
    reason: Reason


@dataclass(frozen=True, slots=True)
class KeyAccepted:
    """A verified key announcement was accepted (new epoch or new policy hash)."""

    epoch: int
    policy_hash: bytes
    sender: str
    not_before: float
    not_after: float


@dataclass(frozen=True, slots=True)
class AnnouncementRefused:
    """A key announcement was refused."""

    reason: Reason
    epoch: int | None


@dataclass(frozen=True, slots=True)
class BlockRefused:
    """A block failed authentication or was replayed."""

    epoch: int
    block_no: int
    reason: Reason


@dataclass(frozen=True, slots=True)
class DatagramsDropped:
    """Datagrams dropped for one reason since the last such event (at most one per reason per second)."""

    reason: Reason
    count: int


@dataclass(frozen=True, slots=True)
class HeartbeatReceived:
    """An authenticated heartbeat with the sender's counters."""

    epoch: int
    seq: int
    counters: dict[str, float] = field(hash=False, compare=False)


@dataclass(frozen=True, slots=True)
class LinkDown:
    """No authenticated heartbeat for LINK_DEAD_AFTER seconds; `since`: the last one's wall-clock time."""

    since: float


@dataclass(frozen=True, slots=True)
class LinkUp:
    """An authenticated heartbeat arrived while the link was down (or for the first time)."""


@dataclass(frozen=True, slots=True)
class InternalError:
    """A bug in the receiver (not an input problem): the datagram or timer call that hit it was
    dropped; the traceback was logged (logger "ferry.wire"). One event per place in the code
    where it happened (later ones only count as the drop "internal_error"). An alarm."""

    error: str  # "ExceptionType: message"


ReceiverEvent = (
    ObjectReceived
    | BlockLost
    | ObjectLost
    | KeyAccepted
    | AnnouncementRefused
    | BlockRefused
    | DatagramsDropped
    | HeartbeatReceived
    | LinkDown
    | LinkUp
    | InternalError
)
