"""What an `OuterStream` returns: stream events, and the transcode requests it asks the caller to run."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ferry.pb import ferry_pb2
from ferry.reasons import Reason

PAYLOADS = ("ps", "h264", "h265")     # what an outer stream ingests
FORMS = ("ps", "h264", "h265")        # what an inner stream writes
CLOCK = 90_000                        # RTP video clock (Hz)
BUILTIN_RULE = "ferry-video-lane"     # refusals by the lane itself (e.g. a codec the output cannot carry)
INGEST_RULE = "ferry-video-ingest"    # refusals of what the source sends: a peer before any stream (address,
                                      # stream count, connections), a parameter set beyond the limits, no picture


@dataclass(frozen=True, slots=True)
class StreamStarted:
    ssrc: int


@dataclass(frozen=True, slots=True)
class AccessUnitReady:
    obj: ferry_pb2.CanonicalObject


@dataclass(frozen=True, slots=True)
class StreamRefused:
    rule: str
    reason: str
    detail: dict[str, Any] = field(default_factory=dict)
    code: Reason | None = None


@dataclass(frozen=True, slots=True)
class StreamAnomaly:
    """What the stream dropped in bulk since the last such event of its code (at most one per
    VIDEO_ANOMALY_INTERVAL): bytes skipped, stripped or dropped, packets of another SSRC or source."""
    code: Reason
    reason: str
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StreamLoss:
    count: int          # packets lost in this gap
    total: int          # packets lost in the stream so far


@dataclass(frozen=True, slots=True)
class StreamEnded:
    counts: dict[str, Any]


@dataclass(frozen=True, slots=True)
class TranscodeCaps:
    """The transcoder's constructor arguments (ferry.lanes.transcode.Transcoder)."""
    in_codec: str
    out_codec: str
    max_width: int
    max_height: int
    max_bitrate_kbps: int
    frame_rate: float

    def args(self) -> tuple[str, str, int, int, int, float]:
        return (self.in_codec, self.out_codec, self.max_width, self.max_height, self.max_bitrate_kbps,
                self.frame_rate)


@dataclass(frozen=True, slots=True)
class TranscodeRequest:
    """Transcode one access unit; answer with `transcoded` or `transcode_failed`, in order."""
    stream_id: str
    access_unit: ferry_pb2.AccessUnit
    caps: TranscodeCaps


@dataclass(frozen=True, slots=True)
class TranscodeEnd:
    """The stream ended: flush the transcoder and close it; answer like a request."""
    stream_id: str


Event = (StreamStarted | AccessUnitReady | StreamRefused | StreamAnomaly | StreamLoss | StreamEnded
         | TranscodeRequest | TranscodeEnd)
