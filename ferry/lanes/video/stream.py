"""One outer ingest stream: RTP packets in, policy-checked canonical access units out.

`OuterStream` takes the RTP packets of one stream (GB/T 28181 RTP/PS, or RFC 6184/7798) with
`now` (monotonic: reorder timeouts, idle end, bitrate) and optionally `wall` (the wall clock:
the objects' `created`; `now` when not given), and returns events (`ferry.lanes.video.events`):
`StreamStarted`, `AccessUnitReady(obj)` for each access unit the policy allows, `StreamRefused`
once per stream (its later access units are dropped and counted), `StreamLoss`,
`StreamEnded(counts)`, and in transcode mode `TranscodeRequest` / `TranscodeEnd`.

Pipeline: SSRC binding -> ReorderBuffer -> front end (`front`: PS demux or RTP depacketize ->
access units) -> gate (`gate`: keyframe wait, NAL stripping, bitrate, policy) -> transcode flow
(`transcode_flow`, transcode mode only). Losses reset the front end and make the gate wait for a
keyframe.

`push_fields` is the ingest's fast path: the header fields of a plain RTP packet and a view of
its payload; no RtpPacket is built for an in-order PS packet.
"""
from __future__ import annotations

from collections.abc import Callable

from ferry import limits
from ferry.codecs.rtp import Lost, Malformed, Released, ReorderBuffer, RtpPacket, parse_rtp, sequence_of, timestamp_of
from ferry.lanes.video.events import (INGEST_RULE, PAYLOADS, Event, StreamAnomaly, StreamEnded, StreamLoss,
                                      StreamRefused, StreamStarted)
from ferry.lanes.video.front import PsFront, RtpFront
from ferry.lanes.video.gate import Gate
from ferry.lanes.video.transcode_flow import TranscodeFlow, TranscoderFactory, TranscoderRunner
from ferry.pb import ferry_pb2
from ferry.policy.plan import Plan
from ferry.reasons import Reason

TRANSCODE_QUEUE = limits.VIDEO_TRANSCODE_QUEUE
_BULK = ("skipped_bytes", "stripped_bytes", "dropped_bytes", "unaccounted_bytes")   # what a bulk anomaly sums


class OuterStream:
    """One ingest stream (see the module doc)."""

    def __init__(self, stream_id: str, device_id: str, address: str, payload: str, destination: str,
                 plan_getter: Callable[[], Plan], now: float, *, ssrc: int = 0, port: int = 0,
                 transcoder_factory: TranscoderFactory | None = None, offload_transcode: bool = False,
                 transcode_queue: int = TRANSCODE_QUEUE, idle: float | None = limits.VIDEO_STREAM_IDLE,
                 wall: float | None = None) -> None:
        if payload not in PAYLOADS:
            raise ValueError(f"payload must be one of {PAYLOADS}, not {payload!r}")
        self.stream_id = stream_id
        self.idle = idle              # seconds of silence that end the stream (None: never, e.g. TCP)
        self.device_id = device_id
        self.address = address
        self.port = port
        self.payload = payload
        self.destination = destination
        self.ssrc: int | None = ssrc or None
        self.started_at = now
        self.last_packet = now
        self.closed = False
        self.rearm = False            # its deadline may have moved earlier (a packet waits in order)
        self._closed_at = now
        self._ended = False
        self.counts = {
            "packets": 0, "bytes": 0, "access_units": 0, "au_bytes": 0, "refused_aus": 0,
            "dropped_aus": 0, "lost_packets": 0, "late_packets": 0, "duplicate_packets": 0,
            "foreign_ssrc_packets": 0, "stripped_nal_units": 0, "audio_frames": 0, "dropped_audio": 0,
            "skipped_bytes": 0, "transcode_dropped_aus": 0, "stripped_bytes": 0, "dropped_bytes": 0,
            "malformed_packets": 0, "foreign_source_packets": 0, "unaccounted_bytes": 0,
        }
        # stream anomalies: what was counted at the last record (or window start) of each kind
        self._bulk_mark = (now, 0, 0)        # (when, bad bytes, payload bytes)
        self._bulk_last: float | None = None
        self._bulk_base: dict[str, int] = {}
        self._foreign_mark: dict[str, tuple[float, int]] = {}   # counter -> (when, count)
        self._reorder = ReorderBuffer()
        self._last_ts: int | None = None  # RTP timestamp of the last packet given to the front, in order
        # malformed packets released in order (one RTP timestamp) whose fate the next item decides
        self._pending: list[Malformed] = []
        self.gate = Gate(stream_id, (device_id, address, port), destination, plan_getter, self.counts,
                         now if wall is None else wall)
        self._ps: PsFront | None = PsFront(self.gate, self.counts) if payload == "ps" else None
        self.front: PsFront | RtpFront = self._ps or RtpFront(payload, self.gate, self.counts)
        runner = TranscoderRunner(transcoder_factory) if transcoder_factory is not None else None
        self.transcode_queue = transcode_queue
        self.flow = TranscodeFlow(stream_id, self.gate, self.counts, transcode_queue, self._end, runner)
        if runner is not None or offload_transcode:
            self.gate.transcoding = self.flow

    # -- what the stream knows -----------------------------------------------------------------
    @property
    def refused(self) -> StreamRefused | None:
        return self.gate.refused

    @property
    def rule_id(self) -> str | None:
        return self.gate.rule_id

    @property
    def codec(self) -> str | None:
        return self.front.codec

    @property
    def width(self) -> int:
        return self.gate.width

    @property
    def height(self) -> int:
        return self.gate.height

    @property
    def frame_rate(self) -> float:
        return self.gate.frame_rate

    @property
    def transcode_pending(self) -> int:
        """Requests (and the end) not answered yet."""
        return self.flow.in_flight

    # -- input ---------------------------------------------------------------------------------
    def push_rtp(self, packet: RtpPacket, now: float, wall: float | None = None) -> list[Event]:
        if self.closed:
            return []
        self.gate.wall = now if wall is None else wall
        out: list[Event] = []
        if self.ssrc is None:
            self.ssrc = packet.ssrc
        if packet.ssrc != self.ssrc:
            self.counts["foreign_ssrc_packets"] += 1
            self.foreign(now, out, packet.ssrc)
            return out
        if self.counts["packets"] == 0:
            out.append(StreamStarted(packet.ssrc))
        self.counts["packets"] += 1
        self.counts["bytes"] += len(packet.payload)
        self.last_packet = now
        # the payload is a view into the caller's buffer: keep a copy while it waits in order
        packet = RtpPacket(packet.version, packet.padding, packet.marker, packet.payload_type,
                           packet.sequence, packet.timestamp, packet.ssrc, (), None, bytes(packet.payload))
        self._released(self._reorder.push(packet, now), now, out)
        if self._reorder._held:
            self.rearm = True
        self.bulk(now, out)
        return out

    def push_fields(self, ssrc: int, sequence: int, marker: bool, payload: memoryview | bytes, now: float,
                    data: memoryview | bytes, wall: float | None = None) -> list[Event]:
        """`push_rtp` without an RtpPacket: the header fields, the payload (a view is fine: it is
        used or copied at once) and the whole packet `data` (parsed only if the packet must wait
        in the reorder buffer or the payload is not PS). Same events as `push_rtp(parse_rtp(data))`."""
        ps = self._ps
        if ps is None or self.closed or self._reorder._held or self._pending:
            return self.push_rtp(parse_rtp(data), now, wall)
        if self.ssrc is None:
            self.ssrc = ssrc
        counts = self.counts
        if ssrc != self.ssrc:
            counts["foreign_ssrc_packets"] += 1
            out: list[Event] = []
            self.foreign(now, out, ssrc)
            return out
        if not self._reorder.advance(sequence):
            return self.push_rtp(parse_rtp(data), now, wall)
        self.gate.wall = now if wall is None else wall
        out = []
        if counts["packets"] == 0:
            out.append(StreamStarted(ssrc))
        counts["packets"] += 1
        counts["bytes"] += len(payload)
        self.last_packet = now
        self._last_ts = int.from_bytes(data[4:8], "big")
        ps.gathered(payload, marker, now, out)
        if not counts["packets"] & 63 or (counts["skipped_bytes"] + counts["stripped_bytes"] + counts["dropped_bytes"]
                                          - self._bulk_mark[1] >= limits.VIDEO_ANOMALY_BYTES):
            self.bulk(now, out)
        return out

    def push_malformed(self, data: memoryview | bytes, now: float, wall: float | None = None) -> list[Event]:
        """A datagram of this stream's source that `parse_rtp` refused: counted as malformed; if
        its sequence number can be read it takes its place in the order (no gap, not lost), and
        the next packet in order and the front end decide whether what follows still continues
        what came before (`_released`)."""
        self.counts["malformed_packets"] = self.counts.get("malformed_packets", 0) + 1
        seq = sequence_of(data)
        if self.closed or seq is None or self.counts["packets"] == 0:
            return []
        self.gate.wall = now if wall is None else wall
        out: list[Event] = []
        self._released(self._reorder.skip(seq, now, timestamp_of(data)), now, out)
        if self._reorder._held:
            self.rearm = True
        return out

    def deadline(self) -> float | None:
        """When `poll` should run next (reorder timeouts and the idle end)."""
        if self.closed:
            return None
        d = self._reorder.deadline()
        if self.idle is None:
            return d
        idle = self.last_packet + self.idle
        return idle if d is None else min(d, idle)

    def poll(self, now: float, wall: float | None = None) -> list[Event]:
        """Release packets whose gaps timed out; end the stream after `idle` seconds of silence."""
        if self.closed:
            return []
        self.gate.wall = now if wall is None else wall
        out: list[Event] = []
        self._released(self._reorder.poll(now), now, out)
        self.bulk(now, out)
        if self.idle is not None and now - self.last_packet >= self.idle:
            out.extend(self.close(now, wall))
        return out

    def close(self, now: float, wall: float | None = None) -> list[Event]:
        """End of stream (connection closed, idle, agent stopping): flush and count."""
        if self.closed:
            return []
        self.gate.wall = now if wall is None else wall
        out: list[Event] = []
        self._released(self._reorder.flush(), now, out)
        if self._pending:                 # malformed last packets: nothing after them shows what they held
            self._malformed_lost(now, out)
        self.front.close(now, out)
        self.unaccounted(slack=False)
        self.closed = True
        self._closed_at = now
        c = self.counts
        c["late_packets"], c["duplicate_packets"] = self._reorder.late, self._reorder.duplicates
        if not self.flow.end(now, out):   # a transcoder ran: its end (and StreamEnded) comes back later
            self._end(out)
        return out

    def _end(self, out: list[Event]) -> None:
        self._ended = self.flow.ended = True
        gate = self.gate
        if not self.counts["access_units"] and gate.refused is None:
            # a stream that sent nothing says why, once (the parser's reason where there is one)
            gate.refuse(INGEST_RULE, gate.no_picture_reason(self.codec),
                        {"packets": self.counts["packets"], "bytes": self.counts["bytes"], "drops": dict(gate.drops)},
                        out, Reason.NO_PICTURE)
        out.append(StreamEnded(dict(self.counts, codec=self.codec or "", width=self.width, height=self.height,
                                    duration=round(self._closed_at - self.started_at, 3))))

    # -- anomalies -----------------------------------------------------------------------------
    def unaccounted(self, slack: bool = True) -> int:
        """Payload bytes that reached no access unit, audio frame or counted skip or drop:
        container headers and start codes (a few %), and what no parser counts (runs of start
        codes, empty NAL units; the assembler's drops where the front end does not count them as
        `dropped_bytes`). Monotonic: with `slack`, what the front end may still hold (the largest
        access unit, a gathered picture, a partial PES) is not counted yet; at the end it is exact."""
        c = self.counts
        held = (self.gate.largest + limits.VIDEO_GATHER_MAX + 0x10000) if slack else 0
        est = c["bytes"] - self.gate.seen_bytes - c["skipped_bytes"] - c["dropped_bytes"] - held
        if est > c["unaccounted_bytes"]:
            c["unaccounted_bytes"] = est
        return c["unaccounted_bytes"]

    def bulk(self, now: float, out: list[Event]) -> None:
        """A StreamAnomaly (`skipped_bytes`) when the bytes skipped, stripped, dropped or
        unaccounted since the last one reach VIDEO_ANOMALY_BYTES and VIDEO_ANOMALY_SHARE of the
        payload meanwhile, at most one per VIDEO_ANOMALY_INTERVAL; a window that does not qualify
        is restarted then."""
        c = self.counts
        self.unaccounted()
        bad = c["skipped_bytes"] + c["stripped_bytes"] + c["dropped_bytes"] + c["unaccounted_bytes"]
        since, bad0, got0 = self._bulk_mark
        new, got = bad - bad0, c["bytes"] - got0
        interval = limits.VIDEO_ANOMALY_INTERVAL
        if new >= limits.VIDEO_ANOMALY_BYTES and new >= limits.VIDEO_ANOMALY_SHARE * got:
            if self._bulk_last is not None and now - self._bulk_last < interval:
                return
            self._bulk_last = now
            self._bulk_mark = (now, bad, c["bytes"])
            parts = {k: c[k] - self._bulk_base.get(k, 0) for k in _BULK}
            self._bulk_base = {k: c[k] for k in parts}
            share = round(100 * new / got) if got else 100
            out.append(StreamAnomaly(Reason.SKIPPED_BYTES,
                                     f"{new} bytes skipped, stripped or dropped in {now - since:.1f} s "
                                     f"({share}% of the {got} payload bytes received)",
                                     {"bytes": new, "payload_bytes": got, "seconds": round(now - since, 3), **parts}))
        elif now - since >= interval:
            self._bulk_mark = (now, bad, c["bytes"])
            self._bulk_base = {k: c[k] for k in _BULK}

    def foreign(self, now: float, out: list[Event], ssrc: int | None = None, address: str | None = None) -> None:
        """A StreamAnomaly (`foreign_ssrc` / `foreign_source`) when VIDEO_ANOMALY_PACKETS packets of
        another SSRC (or, UDP, from another address) came since the last one, at most one per
        VIDEO_ANOMALY_INTERVAL."""
        key = "foreign_ssrc_packets" if address is None else "foreign_source_packets"
        count = self.counts[key]
        since, count0 = self._foreign_mark.get(key, (self.started_at - limits.VIDEO_ANOMALY_INTERVAL, 0))
        if count - count0 < limits.VIDEO_ANOMALY_PACKETS or now - since < limits.VIDEO_ANOMALY_INTERVAL:
            return
        self._foreign_mark[key] = (now, count)
        n = count - count0
        if address is None:
            out.append(StreamAnomaly(Reason.FOREIGN_SSRC,
                                     f"{n} packets of another SSRC (last 0x{ssrc or 0:08x}) dropped; the stream's "
                                     f"is 0x{self.ssrc or 0:08x}", {"packets": n, "ssrc": ssrc or 0}))
        else:
            out.append(StreamAnomaly(Reason.FOREIGN_SOURCE,
                                     f"{n} packets from another address (last {address}) dropped; the stream's "
                                     f"source is {self.address}", {"packets": n, "address": address}))

    # -- transcode answers ---------------------------------------------------------------------
    def transcoded(self, aus: list[ferry_pb2.AccessUnit], now: float, wall: float | None = None) -> list[Event]:
        """The answer to the oldest outstanding request: the access units the transcoder made."""
        self.gate.wall = now if wall is None else wall
        out: list[Event] = []
        self.flow.answered(aus, now, out)
        return out

    def transcode_failed(self, reason: str, now: float, wall: float | None = None) -> list[Event]:
        """The oldest outstanding request failed: the stream is refused (once); a failed end is counted."""
        self.gate.wall = now if wall is None else wall
        out: list[Event] = []
        self.flow.failed(reason, now, out)
        return out

    # -- stages --------------------------------------------------------------------------------
    def _released(self, items: list[Released], now: float, out: list[Event]) -> None:
        front = self.front
        front.flush_gathered(now, out)    # what was gathered comes first
        pending = self._pending
        for item in items:
            if isinstance(item, Lost):
                if pending:
                    self._malformed_lost(now, out)
                self.counts["lost_packets"] += item.count
                out.append(StreamLoss(item.count, self.counts["lost_packets"]))
                front.discontinuity(now, out)     # (what it finds whole goes out first)
                self.gate.need_key = True
            elif isinstance(item, Malformed):
                # its fate waits for the next packet in order (a run with one timestamp waits together)
                if pending and item.timestamp != pending[0].timestamp:
                    self._malformed_lost(now, out)
                pending.append(item)
                if item.timestamp is None:        # nothing to compare: a loss of what it held
                    self._malformed_lost(now, out)
            else:
                if pending:
                    if item.timestamp == pending[0].timestamp:
                        # the next packet has its timestamp: at most a part of the start of the picture
                        # that packet is in; the front end decides whether that packet opens it anew
                        for bad in pending:
                            front.malformed(now, out, bad.timestamp == self._last_ts)
                        pending.clear()
                    else:
                        self._malformed_lost(now, out)
                self._last_ts = item.timestamp
                front.packet(item, now, out)

    def _malformed_lost(self, now: float, out: list[Event]) -> None:
        """The pending malformed packets carried a picture, or part of one, that no later packet
        starts over (the next packet has another timestamp, is lost, or never comes): a
        discontinuity, as after a loss (counted as malformed, not lost). With the timestamp of the
        packet before them they were part of its picture (and a marker before them lied)."""
        pending = self._pending
        ts = pending[0].timestamp
        pending.clear()
        if ts is not None and ts == self._last_ts:
            self.front.malformed(now, out, True)
        else:
            self.front.discontinuity(now, out)
        self.gate.need_key = True
