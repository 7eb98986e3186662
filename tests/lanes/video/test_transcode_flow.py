"""The transcode flow of an outer stream: requests out, answers back in order, bounded."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from ferry.reasons import Reason
from ferry.codecs.errors import CodecError
from ferry.lanes.video import AccessUnitReady, StreamRefused, TranscodeCaps, TranscodeEnd, TranscodeRequest
from ferry.lanes.video.transcode_flow import TranscodeFlow, TranscoderRunner
from ferry.pb import ferry_pb2

VIDEO = SimpleNamespace(codecs=["h265", "h264"], max_width=320, max_height=180, max_bitrate_kbps=500,
                        max_frame_rate=15.0)


class Gate:
    """A gate that allows everything it is asked to decide, and records refusals."""

    def __init__(self) -> None:
        self.refused = None
        self.decided: list = []

    def decide(self, pb, now, out, transcoded=False, raw=(), stripped=0) -> None:
        assert transcoded
        self.decided.append(pb)
        out.append(AccessUnitReady(ferry_pb2.CanonicalObject(access_unit=pb)))

    def refuse(self, rule, reason, detail, out, code) -> None:
        if self.refused is None:
            self.refused = StreamRefused(rule, reason, detail, code)
            out.append(self.refused)


def pb(n: int, key: bool = False) -> ferry_pb2.AccessUnit:
    return ferry_pb2.AccessUnit(stream_id="cam-1", codec="h264", keyframe=key, pts=n * 3600, width=640,
                                height=360, frame_rate=25.0, nal_units=[bytes([n])])


def flow_of(queue=3, runner=None):
    gate, ends = Gate(), []
    counts = {"transcode_dropped_aus": 0, "refused_aus": 0, "dropped_aus": 0}
    flow = TranscodeFlow("cam-1", gate, counts, queue, lambda out: ends.append(out) or out.append("end"), runner)
    return flow, gate, counts, ends


def test_requests_carry_the_rules_caps_and_are_bounded_up_to_the_next_keyframe():
    flow, gate, counts, _ = flow_of(queue=3)
    out: list = []
    flow.request(pb(0, key=True), VIDEO, 0.0, out)
    assert out[0] == TranscodeRequest("cam-1", pb(0, key=True), TranscodeCaps("h264", "h264", 320, 180, 500, 15.0))
    for n in range(1, 6):
        flow.request(pb(n), VIDEO, 0.0, out)
    assert len(out) == 3 and flow.in_flight == 3 and counts["transcode_dropped_aus"] == 3
    flow.answered([], 0.0, [])                 # one answered: room again, but only from a keyframe
    flow.request(pb(6), VIDEO, 0.0, out)
    assert len(out) == 3 and counts["transcode_dropped_aus"] == 4
    flow.request(pb(7, key=True), VIDEO, 0.0, out)
    assert len(out) == 4 and out[-1].access_unit.pts == 7 * 3600 and not flow.behind


def test_answers_are_decided_afresh_and_the_end_ends_the_stream():
    flow, gate, counts, ends = flow_of()
    out: list = []
    flow.request(pb(0, key=True), VIDEO, 0.0, out)
    made = pb(0, key=True)
    made.stream_id, made.bitrate_kbps = "", 999
    got: list = []
    flow.answered([made], 1.0, got)
    assert [type(e) for e in got] == [AccessUnitReady]
    assert gate.decided[0].stream_id == "cam-1" and gate.decided[0].bitrate_kbps == 0
    assert flow.end(2.0, got) and got[-1] == TranscodeEnd("cam-1") and ends == []
    flow.answered([], 3.0, got)
    assert len(ends) == 1 and got[-1] == "end"
    flow.ended = True                          # the stream ended: late answers are ignored
    assert flow.in_flight == 0
    late: list = []
    flow.answered([made], 4.0, late)
    flow.failed("late", 4.0, late)
    assert late == []


def test_a_failure_refuses_the_stream_once_and_a_failed_end_is_counted():
    flow, gate, counts, ends = flow_of()
    out: list = []
    for n in range(3):
        flow.request(pb(n, key=n == 0), VIDEO, 0.0, out)
    got: list = []
    flow.failed("decoder: invalid data", 1.0, got)
    [refused] = got
    assert refused.reason == "transcoder: decoder: invalid data" and refused.detail["width"] == 640
    assert refused.code == Reason.TRANSCODE_FAILED
    flow.answered([pb(1)], 1.0, got)           # in flight before the refusal: not sent
    assert len(got) == 1 and counts["refused_aus"] == 1
    flow.failed("again", 1.0, got)
    assert len(got) == 1                       # once per stream
    flow.end(2.0, got)
    flow.failed("flush failed", 3.0, got)
    assert counts["dropped_aus"] == 1 and len(ends) == 1


def test_without_a_request_the_end_asks_nothing():
    flow, *_ = flow_of()
    out: list = []
    assert not flow.end(0.0, out) and out == []


class Doubler:
    """A transcoder that makes two pictures of each (and one at the flush)."""

    def __init__(self, *caps) -> None:
        self.caps = caps

    def push(self, au):
        return [au, au]

    def flush(self):
        return [pb(99)]


def test_in_process_the_runner_answers_at_once():
    flow, gate, counts, ends = flow_of(runner=TranscoderRunner(Doubler))
    out: list = []
    flow.request(pb(0, key=True), VIDEO, 0.0, out)
    assert [type(e) for e in out] == [AccessUnitReady, AccessUnitReady] and flow.in_flight == 0
    assert flow.runner is not None and flow.runner.transcoder.caps == ("h264", "h264", 320, 180, 500, 15.0)
    flow.end(1.0, out)
    assert len(out) == 4 and out[-1] == "end" and len(ends) == 1


def test_a_transcoder_that_cannot_be_built_is_a_codec_error():
    def refuse(*caps):
        raise ValueError("no encoder")
    runner = TranscoderRunner(refuse)
    with pytest.raises(CodecError, match="no encoder"):
        runner.run(TranscodeRequest("cam-1", pb(0), TranscodeCaps("h264", "h264", 1, 1, 1, 1.0)))
    assert runner.run(TranscodeEnd("cam-1")) == []
