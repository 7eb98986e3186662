"""Heartbeats and link liveness.

A heartbeat is opened with its epoch's key (sequence numbers only increase, per epoch); an
authenticated one brings the link up and tells loss accounting which blocks were sent. The
link is down after LINK_DEAD_AFTER (monotonic) without one.
"""

from __future__ import annotations

from google.protobuf.message import DecodeError

from ferry.reasons import Reason
from ferry import limits
from ferry.crypto import CryptoError
from ferry.pb import ferry_pb2
from ferry.wire.epochs import Epoch, KeyEpochs
from ferry.wire.errors import WireError
from ferry.wire.events import HeartbeatReceived, LinkDown, LinkUp
from ferry.wire.frame import BLOCK_NO_MAX, heartbeat_nonce, parse_heartbeat
from ferry.wire.report import Report


def open_heartbeat(
    data: bytes | memoryview, epochs: KeyEpochs, report: Report, now: float
) -> tuple[Epoch, ferry_pb2.Heartbeat] | None:
    """Parse, authenticate and decode a heartbeat datagram; None (dropped, counted) if it fails."""
    try:
        epoch, seq, header, sealed = parse_heartbeat(data)
    except WireError:
        report.drop(Reason.BAD_HEARTBEAT, now)
        return None
    ep = epochs.epochs.get(epoch)
    if ep is None:
        report.drop(Reason.HEARTBEAT_UNKNOWN_EPOCH, now)
        return None
    if seq <= ep.hb_seq:
        report.drop(Reason.HEARTBEAT_REPLAY, now)
        return None
    try:
        body = ep.aead.open(heartbeat_nonce(epoch, seq), sealed, header)
    except CryptoError:
        report.drop(Reason.HEARTBEAT_AUTH, now)
        return None
    ep.hb_seq = seq
    try:
        hb = ferry_pb2.Heartbeat.FromString(body)
    except DecodeError:
        report.drop(Reason.HEARTBEAT_BODY, now)
        return None
    if hb.epoch != epoch or hb.seq != seq or hb.next_block > BLOCK_NO_MAX + 1:
        report.drop(Reason.HEARTBEAT_BODY, now)
        return None
    return ep, hb


def heartbeat_event(epoch: int, hb: ferry_pb2.Heartbeat) -> HeartbeatReceived:
    return HeartbeatReceived(
        epoch,
        hb.seq,
        {
            "sent_at": hb.sent_at,
            "blocks_sent": hb.blocks_sent,
            "next_block": hb.next_block,
            "objects_sent": hb.objects_sent,
            "bytes_sent": hb.bytes_sent,
            "datagrams_sent": hb.datagrams_sent,
        },
    )


class Liveness:
    """Link up on an authenticated heartbeat, down LINK_DEAD_AFTER after the last one."""

    __slots__ = ("up", "last", "last_wall", "_report")

    def __init__(self, report: Report) -> None:
        self._report = report
        self.up = False
        self.last: float | None = None  # monotonic time of the last authenticated heartbeat
        self.last_wall = 0.0  # the same on the wall clock (LinkDown.since)

    def heartbeat(self, now: float, wall: float) -> None:
        self.last = now
        self.last_wall = wall
        if not self.up:
            self.up = True
            self._report.events.append(LinkUp())

    def next_timer(self) -> float | None:
        if self.up and self.last is not None:
            return self.last + limits.LINK_DEAD_AFTER
        return None

    def handle_timer(self, now: float) -> None:
        if self.up and self.last is not None and now >= self.last + limits.LINK_DEAD_AFTER:
            self.up = False
            self._report.events.append(LinkDown(self.last_wall))
