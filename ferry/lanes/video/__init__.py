"""The video lane, pure: outer RTP -> canonical access units, canonical access units -> inner RTP.

One module per concept:
- `events`: what an outer stream returns (stream events, transcode requests);
- `front`: RTP/PS and plain RTP H.264/H.265 depacketisation -> access units;
- `gate`: keyframe wait, NAL unit stripping, bitrate, policy decision, refusal;
- `transcode_flow`: transcode requests and answers, bounded, in order;
- `stream`: `OuterStream`, one ingest stream (SSRC, reorder, front -> gate -> transcode);
- `outer_lane`: `OuterVideoLane`, the outer agent's streams: datagrams/connections in, work out;
- `inner_stream`: `InnerStream`, fresh RTP/PS (or Annex B) of one stream for one output;
- `inner_lane`: `InnerVideoLane`, the inner agent's streams: decided objects in, work out;
- `viewers`: `Viewer`, a platform's INVITEd session of a device's stream (its own SSRC and numbering).

No sockets, no clocks, no threads: the agents (ferry.agents.video_ingest / video_emit) own the I/O.
"""
from ferry.lanes.video.events import (BUILTIN_RULE, CLOCK, FORMS, INGEST_RULE, PAYLOADS, AccessUnitReady, Event,
                                      StreamAnomaly, StreamEnded, StreamLoss, StreamRefused, StreamStarted,
                                      TranscodeCaps, TranscodeEnd, TranscodeRequest)
from ferry.lanes.video.gate import BitrateMeter, strip_nal_units
from ferry.lanes.video.inner_lane import AppendBytes, Emit, EndOutput, InnerVideoLane, SendPackets
from ferry.lanes.video.inner_stream import InnerStream
from ferry.lanes.video.outer_lane import OuterVideoLane
from ferry.lanes.video.stream import TRANSCODE_QUEUE, OuterStream
from ferry.lanes.video.transcode_flow import TranscoderRunner
from ferry.lanes.video.viewers import Viewer, ViewerLost, ViewerPackets, ViewerStarted

__all__ = [
    "BUILTIN_RULE", "CLOCK", "FORMS", "PAYLOADS", "AccessUnitReady", "Event", "StreamEnded", "StreamLoss",
    "StreamRefused", "StreamAnomaly", "StreamStarted", "TranscodeCaps", "TranscodeEnd", "TranscodeRequest",
    "BitrateMeter",
    "strip_nal_units", "AppendBytes", "Emit", "EndOutput", "InnerVideoLane", "SendPackets", "InnerStream",
    "INGEST_RULE", "OuterVideoLane", "TRANSCODE_QUEUE", "OuterStream", "TranscoderRunner",
    "Viewer", "ViewerLost", "ViewerPackets", "ViewerStarted",
]
