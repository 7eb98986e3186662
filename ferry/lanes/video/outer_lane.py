"""The outer side of the video lane, whole and pure: what the agent reads in, work out.

`OuterVideoLane` takes what the outer agent's video endpoints read, each with `now`
(monotonic: timers, idle, rates) and `wall` (the wall clock: `created`, audit times):
- a UDP datagram of an entry: `datagram(entry, data, addr, now, wall)` (`data` may be a view
  of the agent's receive buffer, valid until the call returns);
- a TCP connection of an entry: `tcp_opened(entry, address, port, ...)` -> its connection id
  (or None: refused), `tcp_data(conn_id, bytes, ...)` (RFC 4571 frames, resynchronising),
  `tcp_closed(conn_id, ...)`; `is_open(conn_id)` says whether to keep reading, `tcp_deadline`
  until when and `tcp_expired` whether it timed out. A connection is pending, not a stream, until
  its first valid RTP packet (at most VIDEO_TCP_PENDING_PER_ENTRY / _PER_ADDRESS at once);
- a transcoder's answer: `transcoded` / `transcode_failed` (and `transcode_skip`,
  `transcode_abandon` for what will never be run);
- its timer: `handle_timer(now, wall)` at `next_timer()` (reorder timeouts, idle streams);
- the end: `close(now, wall)`.
It returns work (ferry.lanes.work): `SealObject` (object ID set, `sent` None: video is
accounted per stream), `AuditIntent`, and `TranscodeRequest` / `TranscodeEnd` for the agent's
transcode threads.

It owns the stream table (streams by id, each entry's current UDP stream, per-entry numbering,
at most VIDEO_STREAMS_MAX streams), the source-address check (one refusal record per address,
at most VIDEO_REFUSED_ADDRESSES_MAX remembered), refused TCP connections (aggregated: one
stream_refused per entry, address and code per VIDEO_REFUSAL_AUDIT_INTERVAL, with
`detail.connections`), the RTP fast path (a plain RTP header of the entry's current stream goes
to `OuterStream.push_fields`: one struct unpack, no RtpPacket), and the audit records of a
stream: stream_started, stream_refused (first refusal, rule and reason; a stream that ends
without a picture gets one too, code `no_picture`), stream_anomaly (bulk drops, another SSRC or
source: at most one per code every VIDEO_ANOMALY_INTERVAL), stream_loss (at most every
VIDEO_LOSS_AUDIT_INTERVAL), stream_ended (counts).
No audit, no transfer: while the agent says the trail is down (`audit_available = False`),
access units are dropped and counted (`dropped_no_audit`), not sealed.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from ferry import limits
from ferry.codecs.errors import CodecError
from ferry.codecs.rfc4571 import Deframer
from ferry.codecs.rtp import HEADER, HEADER_SIZE, parse_rtp
from ferry.lanes.video.events import (INGEST_RULE, AccessUnitReady, Event, StreamAnomaly, StreamEnded, StreamLoss,
                                      StreamRefused, StreamStarted, TranscodeEnd, TranscodeRequest)
from ferry.lanes.video.ended import outer_fields, pictures_line
from ferry.lanes.video.stream import OuterStream
from ferry.lanes.video.transcode_flow import TranscoderFactory
from ferry.lanes.work import AuditIntent, SealObject
from ferry.pb import ferry_pb2
from ferry.reasons import Reason
from ferry.policy.plan import Plan

__all__ = ["INGEST_RULE", "IdSource", "OuterVideoLane", "OuterWork", "VideoEntry"]

OuterWork = AuditIntent | SealObject | TranscodeRequest | TranscodeEnd
_NOTHING: tuple[OuterWork, ...] = ()
_unpack = HEADER.unpack_from


class VideoEntry(Protocol):
    """What the lane reads of one `[[video]]` entry (ferry.config.OuterVideo)."""

    @property
    def name(self) -> str: ...

    @property
    def transport(self) -> str: ...

    @property
    def device_id(self) -> str: ...

    @property
    def ssrc(self) -> int: ...

    @property
    def source_address(self) -> str: ...

    @property
    def payload(self) -> str: ...

    @property
    def destination(self) -> str: ...


class IdSource(Protocol):
    """Object IDs of the agent's run (ferry.lanes.work.ObjectIds)."""

    @property
    def run_id(self) -> int: ...

    def next(self) -> int: ...


class _Endpoint:
    """One entry and its current UDP stream."""

    __slots__ = ("entry", "stream", "number", "connections")

    def __init__(self, entry: VideoEntry) -> None:
        self.entry = entry
        self.stream: OuterStream | None = None
        self.number = 0
        self.connections = 0           # TCP connections numbered so far


class _Connection:
    """A TCP connection of an entry: pending (no stream) until its first valid RTP packet."""

    __slots__ = ("endpoint", "address", "port", "opened", "deframer", "stream", "bytes", "pending", "refused")

    def __init__(self, endpoint: _Endpoint, address: str, port: int, opened: float, deframer: Deframer) -> None:
        self.endpoint, self.address, self.port, self.opened = endpoint, address, port, opened
        self.deframer = deframer
        self.stream: OuterStream | None = None
        self.bytes = 0                 # bytes read so far
        self.pending = True            # counted against the pending limits (no stream yet)
        self.refused = False           # closed by the lane (no stream could be opened)


class _Refusals:
    """Ingest refusals of one kind (entry, source address, code), recorded at most every
    VIDEO_REFUSAL_AUDIT_INTERVAL: the first at once, the rest summed up in the next record."""

    __slots__ = ("endpoint", "address", "code", "reason", "count", "total", "last")

    def __init__(self, endpoint: _Endpoint, address: str, code: Reason) -> None:
        self.endpoint, self.address, self.code = endpoint, address, code
        self.reason = ""
        self.count = 0                 # refused since the last record
        self.total = 0
        self.last: float | None = None     # when the last record was made

    def due(self) -> float | None:
        if not self.count or self.last is None:
            return None
        return self.last + limits.VIDEO_REFUSAL_AUDIT_INTERVAL


class OuterVideoLane:
    """The outer agent's video streams (see the module doc)."""

    def __init__(self, entries: Sequence[VideoEntry], plan_getter: Callable[[], Plan], ids: IdSource, *,
                 offload_transcode: bool = False, transcoder_factory: TranscoderFactory | None = None) -> None:
        self.endpoints = {e.name: _Endpoint(e) for e in entries}
        self.plan_getter = plan_getter
        self.ids = ids
        self.offload_transcode = offload_transcode
        self.transcoder_factory = transcoder_factory     # in process (tests, tools)
        self.audit_available = True       # the agent says whether the trail can be written
        self.streams: dict[str, OuterStream] = {}
        self._entry_of: dict[str, _Endpoint] = {}         # stream id -> its endpoint
        self.connections: dict[str, _Connection] = {}     # connection id -> its TCP connection
        self._pending_entry: dict[str, int] = {}          # entry name -> pending connections
        self._pending_address: dict[tuple[str, str], int] = {}   # (entry, address) -> pending connections
        self._refusals: dict[tuple[str, str, Reason], _Refusals] = {}
        self.refused_addresses: set[tuple[str, str]] = set()
        self.loss_audited: dict[str, float] = {}
        self._soonest: float | None = None
        self.stats = {"video_streams": 0, "video_access_units": 0, "video_refused_packets": 0,
                      "video_dropped_no_audit": 0, "video_refused_connections": 0}

    # -- dynamic endpoints (issue 13 "media-outer": a SIP dialog's ingest port) -------------------
    def add_endpoint(self, entry: VideoEntry) -> None:
        """An entry made at run time (its name unique among the entries)."""
        if entry.name in self.endpoints:
            raise ValueError(f"video entry {entry.name} exists")
        self.endpoints[entry.name] = _Endpoint(entry)

    def remove_endpoint(self, name: str, now: float, wall: float) -> list[OuterWork]:
        """The entry goes: its streams end (UDP and TCP), its pending connections are refused."""
        ep = self.endpoints.pop(name, None)
        work: list[OuterWork] = []
        if ep is None:
            return work
        for sid, owner in list(self._entry_of.items()):
            stream = self.streams.get(sid)
            if owner is ep and stream is not None and not stream.closed:
                work.extend(self._handle(stream, stream.close(now, wall), now, wall))
        for conn in self.connections.values():
            if conn.endpoint is ep and conn.stream is None:
                conn.refused = True
        return work

    # -- UDP -----------------------------------------------------------------------------------
    def datagram(self, entry: str, data: memoryview | bytes, addr: tuple[Any, ...], now: float,
                 wall: float) -> Sequence[OuterWork]:
        """One datagram of an entry. The common one (the current stream's source, a plain RTP
        header: version 2, no padding, extension or CSRC) goes straight to its stream."""
        ep = self.endpoints[entry]
        stream = ep.stream
        if stream is not None and len(data) >= HEADER_SIZE and data[0] == 0x80 and addr[0] == stream.address:
            _b0, b1, seq, _ts, ssrc = _unpack(data)
            events = stream.push_fields(ssrc, seq, b1 >= 0x80, data[HEADER_SIZE:], now, data, wall)
            if events or stream.rearm or stream.closed:
                return self._handle(stream, events, now, wall)
            return _NOTHING
        return self._datagram(ep, data, addr, now, wall)

    def _datagram(self, ep: _Endpoint, data: memoryview | bytes, addr: tuple[Any, ...], now: float,
                  wall: float) -> Sequence[OuterWork]:
        address, port = addr[0], addr[1]
        work: list[OuterWork] = []
        if not self._allowed_peer(ep, address, work):
            return work
        stream = ep.stream
        if stream is not None and stream.address != address:
            stream.counts["foreign_source_packets"] = stream.counts.get("foreign_source_packets", 0) + 1
            events: list[Event] = []
            stream.foreign(now, events, address=address)
            if events:
                work.extend(self._handle(stream, events, now, wall))
            return work
        try:
            packet = parse_rtp(data)
        except CodecError:
            if stream is not None:
                work.extend(self._handle(stream, stream.push_malformed(data, now, wall), now, wall))
            return work
        if stream is None:
            stream = self._new_stream(ep, address, port, now, wall, work)
            if stream is None:
                return work
            ep.stream = stream
        work.extend(self._handle(stream, stream.push_rtp(packet, now, wall), now, wall))
        return work

    # -- TCP -----------------------------------------------------------------------------------
    def tcp_opened(self, entry: str, address: str, port: int, now: float,
                   wall: float) -> tuple[str | None, list[OuterWork]]:
        """A connection of an entry (accepted or made): its connection id, or None if it is refused.

        It is pending, not a stream, until it carries a valid RTP packet: at most
        VIDEO_TCP_PENDING_PER_ENTRY such connections per entry and VIDEO_TCP_PENDING_PER_ADDRESS
        per source address; more are refused at once (recorded aggregated, `too_many_connections`)."""
        ep = self.endpoints.get(entry)
        work: list[OuterWork] = []
        if ep is None:                 # a dynamic entry removed meanwhile
            return None, work
        if not self._allowed_peer(ep, address, work):
            return None, work
        name = ep.entry.name
        per_entry = self._pending_entry.get(name, 0)
        per_address = self._pending_address.get((name, address), 0)
        if per_entry >= limits.VIDEO_TCP_PENDING_PER_ENTRY:
            self._refusal(ep, address, Reason.TOO_MANY_CONNECTIONS,
                          f"more than {limits.VIDEO_TCP_PENDING_PER_ENTRY} connections of the entry wait for "
                          "their first RTP packet", now, work)
            return None, work
        if per_address >= limits.VIDEO_TCP_PENDING_PER_ADDRESS:
            self._refusal(ep, address, Reason.TOO_MANY_CONNECTIONS,
                          f"more than {limits.VIDEO_TCP_PENDING_PER_ADDRESS} connections from {address} wait for "
                          "their first RTP packet", now, work)
            return None, work
        self._pending_entry[name] = per_entry + 1
        self._pending_address[(name, address)] = per_address + 1
        ep.connections += 1
        cid = f"{name}-{self.ids.run_id:08x}-c{ep.connections}"
        ssrc = ep.entry.ssrc
        self.connections[cid] = _Connection(ep, address, port, now, Deframer(resync=True, ssrc=ssrc or None))
        return cid, work

    def tcp_data(self, conn_id: str, data: bytes, now: float, wall: float) -> Sequence[OuterWork]:
        """Bytes read from a connection: RFC 4571 frames, resynchronising over garbage. Its first
        valid RTP packet makes it a stream (refused over VIDEO_STREAMS_MAX: see `is_open`)."""
        conn = self.connections.get(conn_id)
        if conn is None or conn.refused:
            return _NOTHING
        conn.bytes += len(data)
        stream, deframer = conn.stream, conn.deframer
        deframer.receive(data)
        events: list[Event] = []
        work: list[OuterWork] = []
        while (frame := deframer.next_packet()) is not None:
            try:
                packet = parse_rtp(frame)
            except CodecError:
                if stream is not None:
                    events.extend(stream.push_malformed(frame, now, wall))
                continue
            if stream is None:
                self._unpend(conn)
                stream = self._new_stream(conn.endpoint, conn.address, conn.port, now, wall, work)
                if stream is None:
                    conn.refused = True
                    return work
                conn.stream = stream
            events.extend(stream.push_rtp(packet, now, wall))
        if stream is not None:
            work.extend(self._handle(stream, events, now, wall))
        return work

    def tcp_deadline(self, conn_id: str) -> float | None:
        """When the connection times out (None: it is gone): pending, VIDEO_TCP_FIRST_BYTE after it
        opened while it sent nothing, else VIDEO_TCP_FIRST_PACKET; a stream, VIDEO_TCP_IDLE after its
        last valid RTP packet. The agent reads until then, then asks `tcp_expired`."""
        conn = self.connections.get(conn_id)
        if conn is None:
            return None
        if conn.stream is None:
            return conn.opened + (limits.VIDEO_TCP_FIRST_BYTE if not conn.bytes else limits.VIDEO_TCP_FIRST_PACKET)
        return conn.stream.last_packet + limits.VIDEO_TCP_IDLE

    def tcp_expired(self, conn_id: str, now: float) -> bool:
        """The connection timed out: the agent closes it (then `tcp_closed`)."""
        d = self.tcp_deadline(conn_id)
        return d is not None and now >= d

    def is_open(self, conn_id: str) -> bool:
        """Keep reading this connection (not refused, its stream has not ended)."""
        conn = self.connections.get(conn_id)
        return conn is not None and not conn.refused and (conn.stream is None or not conn.stream.closed)

    def tcp_closed(self, conn_id: str, now: float, wall: float) -> Sequence[OuterWork]:
        """The connection is closed (by the peer, or by the agent: expired, refused, stopping). One
        that never carried a valid RTP packet is refused (`no_rtp`, recorded aggregated)."""
        conn = self.connections.pop(conn_id, None)
        if conn is None:
            return _NOTHING
        stream = conn.stream
        if stream is None:
            self._unpend(conn)
            if conn.refused:
                return _NOTHING
            work: list[OuterWork] = []
            if not conn.bytes and now - conn.opened >= limits.VIDEO_TCP_FIRST_BYTE:
                why = f"silent for {limits.VIDEO_TCP_FIRST_BYTE:g} s"
            elif now - conn.opened >= limits.VIDEO_TCP_FIRST_PACKET:
                why = f"no valid RTP packet within {limits.VIDEO_TCP_FIRST_PACKET:g} s"
            else:
                why = "closed before a valid RTP packet"
            self._refusal(conn.endpoint, conn.address, Reason.NO_RTP, why, now, work)
            return work
        stream.counts["skipped_bytes"] += conn.deframer.skipped_bytes
        return self._handle(stream, stream.close(now, wall), now, wall)

    def _unpend(self, conn: _Connection) -> None:
        if not conn.pending:
            return
        conn.pending = False
        name, key = conn.endpoint.entry.name, (conn.endpoint.entry.name, conn.address)
        if self._pending_entry[name] > 1:
            self._pending_entry[name] -= 1
        else:
            del self._pending_entry[name]
        if self._pending_address[key] > 1:
            self._pending_address[key] -= 1
        else:
            del self._pending_address[key]

    def _refusal(self, ep: _Endpoint, address: str, code: Reason, reason: str, now: float,
                 work: list[OuterWork]) -> None:
        """One refused connection: a stream_refused record at once if none was made for this
        (entry, address, code) in the last VIDEO_REFUSAL_AUDIT_INTERVAL, else counted for the next."""
        self.stats["video_refused_connections"] += 1
        key = (ep.entry.name, address, code)
        agg = self._refusals.get(key)
        if agg is None:
            if len(self._refusals) >= limits.VIDEO_REFUSED_ADDRESSES_MAX:
                key = (ep.entry.name, "*", code)          # a table full of addresses: one for the rest
                agg = self._refusals.get(key)
            if agg is None:
                agg = self._refusals[key] = _Refusals(ep, key[1], code)
        agg.count += 1
        agg.total += 1
        agg.reason = reason
        if agg.last is None or now - agg.last >= limits.VIDEO_REFUSAL_AUDIT_INTERVAL:
            work.append(self._refusal_record(agg, now))
        else:
            due = agg.due()
            if due is not None and (self._soonest is None or due < self._soonest):
                self._soonest = due

    @staticmethod
    def _refusal_record(agg: _Refusals, now: float) -> AuditIntent:
        e = agg.endpoint.entry
        n, agg.count, agg.last = agg.count, 0, now
        what = "1 connection" if n == 1 else f"{n} connections"
        return AuditIntent(dict(
            event="stream_refused", verdict="refused", lane="video", flow=e.name,
            source={"device_id": e.device_id, "address": agg.address}, destination=e.destination,
            rule=INGEST_RULE, reason=f"{what} refused: {agg.reason}", code=agg.code,
            detail={"connections": n, "total": agg.total, "transport": e.transport}))

    def _refusals_due(self, now: float, final: bool = False) -> list[OuterWork]:
        """The aggregated refusal records that are due (all of them at the end); forget quiet ones."""
        work: list[OuterWork] = []
        for key, agg in list(self._refusals.items()):
            due = agg.due()
            if due is not None and (final or due <= now):
                work.append(self._refusal_record(agg, now))
            elif not agg.count and agg.last is not None and now - agg.last >= limits.VIDEO_REFUSAL_AUDIT_INTERVAL:
                del self._refusals[key]
        return work

    # -- transcoder answers --------------------------------------------------------------------
    def transcoded(self, stream_id: str, aus: list[ferry_pb2.AccessUnit], now: float,
                   wall: float) -> Sequence[OuterWork]:
        stream = self.streams.get(stream_id)
        if stream is None:
            return _NOTHING
        return self._handle(stream, stream.transcoded(aus, now, wall), now, wall)

    def transcode_failed(self, stream_id: str, reason: str, now: float, wall: float) -> Sequence[OuterWork]:
        stream = self.streams.get(stream_id)
        if stream is None:
            return _NOTHING
        return self._handle(stream, stream.transcode_failed(reason, now, wall), now, wall)

    def transcode_skip(self, stream_id: str, now: float, wall: float) -> Sequence[OuterWork] | None:
        """A queued request of a refused stream is not worth running: its answer, empty (None: run it)."""
        stream = self.streams.get(stream_id)
        if stream is None or stream.refused is None:
            return None
        stream.counts["refused_aus"] += 1
        return self._handle(stream, stream.transcoded([], now, wall), now, wall)

    def transcode_abandon(self, stream_id: str, now: float, wall: float) -> Sequence[OuterWork]:
        """The agent stops and the transcoder did not finish in time: end the stream without it."""
        stream = self.streams.get(stream_id)
        if stream is None:
            return _NOTHING
        events: list[Event] = []
        while stream.transcode_pending > 1:   # pictures never transcoded: dropped, not a refusal
            stream.counts["dropped_aus"] += 1
            events.extend(stream.transcoded([], now, wall))
        events.extend(stream.transcode_failed("agent stopping", now, wall))   # the end: StreamEnded
        return self._handle(stream, events, now, wall)

    # -- time ----------------------------------------------------------------------------------
    def next_timer(self) -> float | None:
        """When `handle_timer` should run next (None: no stream waits for time). May be early."""
        return self._soonest

    def handle_timer(self, now: float, wall: float) -> list[OuterWork]:
        """Release packets whose gaps timed out; end the streams silent for their idle time."""
        work: list[OuterWork] = []
        for stream in list(self.streams.values()):
            d = stream.deadline()
            if d is not None and d <= now:
                work.extend(self._handle(stream, stream.poll(now, wall), now, wall))
        if self._refusals:
            work.extend(self._refusals_due(now))
        soonest = None
        for stream in self.streams.values():
            d = stream.deadline()
            if d is not None and (soonest is None or d < soonest):
                soonest = d
            stream.rearm = False
        for agg in self._refusals.values():
            d = agg.due()
            if d is not None and (soonest is None or d < soonest):
                soonest = d
        self._soonest = soonest
        return work

    def close(self, now: float, wall: float) -> list[OuterWork]:
        """The agent stops: every stream ends (a transcoded one once its transcoder answers the end)."""
        work: list[OuterWork] = []
        for stream in list(self.streams.values()):
            work.extend(self._handle(stream, stream.close(now, wall), now, wall))
        work.extend(self._refusals_due(now, final=True))
        return work

    def unsent(self, obj: ferry_pb2.CanonicalObject) -> None:
        """The agent could not seal this object (the trail went down while it carried out work)."""
        sid = obj.access_unit.stream_id if obj.HasField("access_unit") else obj.audio.stream_id
        stream = self.streams.get(sid)
        if stream is not None:
            stream.counts["dropped_no_audit"] += 1
        self.stats["video_dropped_no_audit"] += 1
        self.stats["video_access_units"] -= 1

    # -- streams -------------------------------------------------------------------------------
    def _new_stream(self, ep: _Endpoint, address: str, port: int, now: float, wall: float,
                    work: list[OuterWork]) -> OuterStream | None:
        """A stream of an entry (UDP: silence ends it; TCP: the connection does)."""
        e = ep.entry
        if len(self.streams) >= limits.VIDEO_STREAMS_MAX:
            self._refuse_address(ep, address, f"more than {limits.VIDEO_STREAMS_MAX} video streams",
                                 Reason.TOO_MANY_STREAMS, work)
            return None
        ep.number += 1
        sid = f"{e.name}-{self.ids.run_id:08x}-{ep.number}"
        stream = OuterStream(sid, e.device_id, address, e.payload, e.destination, self.plan_getter, now,
                             ssrc=e.ssrc, port=port, offload_transcode=self.offload_transcode,
                             transcoder_factory=self.transcoder_factory, wall=wall,
                             idle=limits.VIDEO_STREAM_IDLE if e.transport == "udp" else None)
        stream.counts["dropped_no_audit"] = 0
        self.streams[sid] = stream
        self._entry_of[sid] = ep
        self.stats["video_streams"] += 1
        self._timer_for(stream)
        return stream

    def _timer_for(self, stream: OuterStream) -> None:
        stream.rearm = False
        d = stream.deadline()
        if d is not None and (self._soonest is None or d < self._soonest):
            self._soonest = d

    def _refuse_address(self, ep: _Endpoint, address: str, reason: str, code: Reason,
                        work: list[OuterWork]) -> None:
        self.stats["video_refused_packets"] += 1
        e = ep.entry
        key = (e.name, address)
        if key in self.refused_addresses or len(self.refused_addresses) >= limits.VIDEO_REFUSED_ADDRESSES_MAX:
            return
        self.refused_addresses.add(key)
        work.append(AuditIntent(dict(
            event="stream_refused", verdict="refused", lane="video", flow=e.name,
            source={"device_id": e.device_id, "address": address}, destination=e.destination,
            rule=INGEST_RULE, reason=reason, code=code)))

    def _allowed_peer(self, ep: _Endpoint, address: str, work: list[OuterWork]) -> bool:
        src = ep.entry.source_address
        if src and address != src:
            self._refuse_address(ep, address, f"source address {address} is not {src}", Reason.SOURCE_ADDRESS, work)
            return False
        return True

    def _handle(self, stream: OuterStream, events: list[Event], now: float, wall: float) -> list[OuterWork]:
        """A stream's events as work: objects to seal, audit records, transcode requests."""
        work: list[OuterWork] = []
        sid = stream.stream_id
        ep = self._entry_of.get(sid)
        if ep is None:                 # ended already (e.g. its connection closes after the end)
            return work
        for ev in events:
            if isinstance(ev, AccessUnitReady):
                if not self.audit_available:
                    stream.counts["dropped_no_audit"] += 1
                    self.stats["video_dropped_no_audit"] += 1
                    continue
                ev.obj.object_id = self.ids.next()
                work.append(SealObject(ev.obj))
                self.stats["video_access_units"] += 1
            elif isinstance(ev, (TranscodeRequest, TranscodeEnd)):
                work.append(ev)
            elif isinstance(ev, StreamStarted):
                e = ep.entry
                work.append(self._record(stream, "stream_started", "info", f"video stream {e.name} started",
                                         detail={"ssrc": ev.ssrc, "transport": e.transport, "payload": e.payload,
                                                 "port": stream.port}))
            elif isinstance(ev, StreamRefused):
                work.append(self._record(stream, "stream_refused", "refused", ev.reason, rule=ev.rule,
                                         detail=ev.detail, code=ev.code))
            elif isinstance(ev, StreamAnomaly):
                work.append(self._record(stream, "stream_anomaly", "refused", ev.reason, detail=ev.detail,
                                         code=ev.code))
            elif isinstance(ev, StreamLoss):
                last = self.loss_audited.get(sid)
                if last is None or now - last >= limits.VIDEO_LOSS_AUDIT_INTERVAL:
                    self.loss_audited[sid] = now
                    work.append(self._record(stream, "stream_loss", "lost",
                                             f"{ev.total} RTP packets lost on ingest so far",
                                             detail={"lost_packets": ev.total}, code=Reason.RTP_LOSS))
            elif isinstance(ev, StreamEnded):
                c = ev.counts
                c["dropped_no_audit"] = stream.counts.get("dropped_no_audit", 0)
                c.update(outer_fields(stream, c))
                refused = stream.refused
                work.append(self._record(
                    stream, "stream_ended", "info",
                    (f"refused: {refused.reason}" if refused else
                     f"{c['access_units']} access units sent, {c['lost_packets']} packets lost; {pictures_line(c)}"),
                    rule=stream.rule_id or (refused.rule if refused else None), size=c["au_bytes"], detail=c))
                self.streams.pop(sid, None)
                self._entry_of.pop(sid, None)
                self.loss_audited.pop(sid, None)
                if ep.stream is stream:
                    ep.stream = None
        if stream.closed and ep.stream is stream:
            ep.stream = None   # ending (its transcoder still flushing): new packets start anew
        if stream.rearm:
            self._timer_for(stream)
        return work

    @staticmethod
    def _record(stream: OuterStream, event: str, verdict: str, reason: str, **fields: Any) -> AuditIntent:
        return AuditIntent(dict(event=event, verdict=verdict, lane="video", flow=stream.stream_id,
                                source={"device_id": stream.device_id, "address": stream.address},
                                destination=stream.destination, reason=reason, **fields))
