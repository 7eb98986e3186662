"""Viewers of the inner video lane: a platform that asked for a device's live video (issue 13 item 3).

A viewer is not configured: the inner signaling (ferry.lanes.signaling.inner_media) adds one when
the inner GB/T 28181 platform INVITEs a camera, and removes it on BYE. It names the device (the
outer device ID the access units carry in `source.device_id`; or one stream), where the RTP goes
(address, UDP or TCP with `setup` active/passive: the agent's sink) and the SSRC the platform
asked for (its SDP `y=`).

Every viewer of a device shares the one stream crossing for it and the one PS build of each access
unit (`InnerStream` in the ps form, per stream); each viewer numbers its own RTP: its SSRC,
sequence numbers from a random start, timestamps from a random start and running on from its
first key frame. A viewer that joins mid-stream waits for the next key frame (its first packets
carry pack header, system header and PSM, so the platform can decode from the first one).

Work the lane returns for viewers: `ViewerPackets` (RTP for the viewer's sink), `ViewerStarted`
(its first key frame went out: the signaling answers 200 OK then) and `ViewerLost` (the stream it
watched ended: the signaling sends BYE).
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

from ferry import limits
from ferry.codecs.rtp import RtpPacketWriter

TRANSPORTS = ("udp", "tcp")
SETUPS = ("", "active", "passive")    # tcp: active = ferry connects, passive = the platform connects


@dataclass(slots=True)
class ViewerPackets:
    """RTP packets of one access unit (or audio frame) for viewer `viewer`'s sink."""
    viewer: str
    packets: list[bytes]
    keyframe: bool


@dataclass(frozen=True, slots=True)
class ViewerStarted:
    """Viewer `viewer`'s first key frame (of stream `stream_id`) went out."""
    viewer: str
    device_id: str
    stream_id: str


@dataclass(frozen=True, slots=True)
class ViewerLost:
    """The stream viewer `viewer` watched ended (`why`); it gets nothing more until a new one starts."""
    viewer: str
    device_id: str
    stream_id: str
    why: str


@dataclass(slots=True)
class Viewer:
    """One viewer: where its stream goes and its own RTP numbering."""
    id: str
    device_id: str
    address: str                  # "host:port" of the platform's media receiver (SDP c= and m=)
    ssrc: int
    transport: str = "udp"
    setup: str = ""
    stream: str = ""              # only this stream of the device ("" any)
    payload_type: int = 96
    added: float = 0.0
    writer: RtpPacketWriter = field(init=False)
    ts_base: int = 0
    ts0: int | None = None        # the shared build's RTP timestamp at this viewer's first key frame
    stream_id: str = ""           # the stream it is on (set at its first key frame)
    packets: int = 0
    access_units: int = 0
    sent_bytes: int = 0
    rng: random.Random | None = None

    def __post_init__(self) -> None:
        if self.transport not in TRANSPORTS:
            raise ValueError(f"viewer transport must be one of {TRANSPORTS}, not {self.transport!r}")
        if self.setup not in SETUPS or (self.transport == "udp") != (self.setup == ""):
            raise ValueError(f"viewer setup {self.setup!r} does not fit transport {self.transport!r}")
        if not 0 <= self.ssrc <= 0xFFFFFFFF:
            raise ValueError(f"viewer SSRC {self.ssrc} is not 32 bits")
        rng = self.rng or random.SystemRandom()
        self.writer = RtpPacketWriter(self.payload_type, self.ssrc, rng.getrandbits(16))
        self.ts_base = rng.getrandbits(32)
        self.rng = None

    @property
    def started(self) -> bool:
        return self.ts0 is not None

    def wants(self, device_id: str, stream_id: str) -> bool:
        if self.stream:
            return self.stream == stream_id
        return self.device_id == device_id and (not self.stream_id or self.stream_id == stream_id)

    def push(self, data: bytes, ts: int, mtu: int = limits.VIDEO_RTP_PAYLOAD_MAX) -> list[bytes]:
        """RTP packets of one object's PS bytes `data`, whose shared timestamp is `ts` (started viewers only)."""
        assert self.ts0 is not None
        view = memoryview(data)
        packets = self.writer.write([view[i:i + mtu] for i in range(0, len(data), mtu)],
                                    (self.ts_base + ts - self.ts0) & 0xFFFFFFFF, marker_last=True)
        self.packets += len(packets)
        self.sent_bytes += len(data)
        return packets

    def counts(self) -> dict[str, int]:
        return {"packets": self.packets, "access_units": self.access_units, "bytes": self.sent_bytes}
