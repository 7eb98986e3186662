"""The transcode flow of an outer stream: requests out, results back, in order, bounded.

A rule in transcode mode never sends the camera's pictures: the gate hands each access unit
here, and the flow asks for it to be transcoded (`TranscodeRequest(stream_id, access_unit,
caps)`, the caps from the rule, fixed at the first request). The caller runs one transcoder
per stream (blocking work: a worker thread in the agent) and answers each request, in order:
`answered(aus)` or `failed(reason)`; the output is decided afresh by the gate. At most `queue`
requests are outstanding; beyond that access units are dropped up to the next keyframe and
counted (`transcode_dropped_aus`). When the stream ends, `TranscodeEnd` asks for the
transcoder's last pictures; its answer ends the stream. A failure refuses the stream (once);
a failed end is counted. With a `runner` the flow runs the transcoder itself, in process (for
tests and tools, not for an event loop).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from ferry.codecs.errors import CodecError
from ferry.lanes.video.events import BUILTIN_RULE, Event, TranscodeCaps, TranscodeEnd, TranscodeRequest
from ferry.lanes.video.gate import Gate, detail
from ferry.pb import ferry_pb2
from ferry.policy.models import VideoLimits
from ferry.reasons import Reason


class Transcoder(Protocol):
    """ferry.lanes.transcode.Transcoder, as the runner uses it."""

    def push(self, au: ferry_pb2.AccessUnit) -> list[ferry_pb2.AccessUnit]: ...

    def flush(self) -> list[ferry_pb2.AccessUnit]: ...


TranscoderFactory = Callable[..., Transcoder]


class TranscoderRunner:
    """One stream's transcoder driven by its requests: `run(request) -> [AccessUnit]`, raises CodecError.

    Blocking (decoding and encoding): the agent calls it on a worker thread, one request at a time.
    """

    def __init__(self, factory: TranscoderFactory) -> None:
        self.factory = factory
        self.transcoder: Transcoder | None = None

    def run(self, ev: TranscodeRequest | TranscodeEnd) -> list[ferry_pb2.AccessUnit]:
        if isinstance(ev, TranscodeEnd):
            t, self.transcoder = self.transcoder, None
            return t.flush() if t is not None else []
        if self.transcoder is None:
            try:
                self.transcoder = self.factory(*ev.caps.args())
            except ValueError as exc:
                raise CodecError(str(exc)) from None
        return self.transcoder.push(ev.access_unit)


class TranscodeFlow:
    """Request/result bookkeeping of one stream's transcoder (see the module doc)."""

    def __init__(self, stream_id: str, gate: Gate, counts: dict[str, int], queue: int,
                 on_end: Callable[[list[Event]], None], runner: TranscoderRunner | None = None) -> None:
        self.stream_id = stream_id
        self.gate = gate
        self.counts = counts
        self.queue = queue
        self.on_end = on_end          # the last answer after the end: the stream ends
        self.runner = runner
        self.caps: TranscodeCaps | None = None
        self.out_size = (0, 0)        # the transcoder's last picture (the stream_ended record)
        self.in_flight = 0            # requests (and the end) not answered yet
        self.behind = False           # the transcoder fell behind: drop up to the next keyframe
        self.ending = False           # the stream closed, waiting for the transcoder's last answers
        self.ended = False
        self._src: dict[str, Any] = {}  # what the last request's access unit claimed (a refusal's detail)

    # -- requests ------------------------------------------------------------------------------
    def request(self, pb: ferry_pb2.AccessUnit, video: VideoLimits, now: float, out: list[Event]) -> None:
        """An access unit of a transcode-mode rule: ask for it to be transcoded (or drop it)."""
        if self.caps is None:
            out_codec = "h264" if "h264" in video.codecs else "h265"
            rate = min(pb.frame_rate or 25.0, video.max_frame_rate)
            self.caps = TranscodeCaps(pb.codec, out_codec, video.max_width, video.max_height,
                                      video.max_bitrate_kbps, rate)
        if self.in_flight >= self.queue:
            self.behind = True        # the transcoder fell behind: resume on a keyframe
        if self.behind and (not pb.keyframe or self.in_flight >= self.queue):
            self.counts["transcode_dropped_aus"] += 1
            return
        self.behind = False
        self._src = detail(pb)
        self._ask(TranscodeRequest(self.stream_id, pb, self.caps), now, out)

    def end(self, now: float, out: list[Event]) -> bool:
        """The stream closed: ask for the transcoder's last pictures. False if none ever ran."""
        if self.caps is None:
            return False
        self.ending = True
        self._ask(TranscodeEnd(self.stream_id), now, out)
        return True

    def _ask(self, ev: TranscodeRequest | TranscodeEnd, now: float, out: list[Event]) -> None:
        self.in_flight += 1
        if self.runner is None:
            out.append(ev)
            return
        try:                          # in process (tests, tools): answer at once
            aus = self.runner.run(ev)
        except CodecError as exc:
            self.failed(str(exc), now, out)
        else:
            self.answered(aus, now, out)

    # -- answers -------------------------------------------------------------------------------
    def answered(self, aus: list[ferry_pb2.AccessUnit], now: float, out: list[Event]) -> None:
        """The answer to the oldest outstanding request: the access units the transcoder made."""
        if self.ended or self.in_flight <= 0:
            return
        self.in_flight -= 1
        gate = self.gate
        for au in aus:
            if gate.refused is not None:
                self.counts["refused_aus"] += 1
                continue
            au.stream_id = self.stream_id
            au.bitrate_kbps = 0   # capped by the encoder's rate control
            self.out_size = (au.width, au.height)
            gate.decide(au, now, out, transcoded=True)
        if self.ending and self.in_flight == 0:
            self.on_end(out)

    def failed(self, reason: str, now: float, out: list[Event]) -> None:
        """The oldest outstanding request failed: the stream is refused (once); a failed end is counted."""
        if self.ended or self.in_flight <= 0:
            return
        self.in_flight -= 1
        if self.ending and self.in_flight == 0:
            self.counts["dropped_aus"] += 1
            self.on_end(out)
        else:
            self.gate.refuse(BUILTIN_RULE, f"transcoder: {reason}", self._src, out, Reason.TRANSCODE_FAILED)
