"""Prometheus metrics on an optional HTTP port (`[management] metrics = "127.0.0.1:9464"`).

Nothing is counted here: every value is read, at scrape time, from what the agent already keeps
for GetStatus (``status_counters()``, ``lane_counters()``, ``link_view()``, ``audit_available()``,
``uptime()``, ``policy_info()``). prometheus_client serves HTTP in its own thread, which never
touches the agent: a scrape asks the event loop for a ``Snapshot`` (``call_soon_threadsafe``) and
waits at most ``METRICS_SNAPSHOT_TIMEOUT``; a loop too busy to answer in time gets the last
snapshot served again (``ferry_metrics_snapshot_age_seconds`` says how old it is), so a scrape can
neither block the loop nor read half-updated state.

``METRICS`` lists every metric the collector can emit (README's Metrics table, kept in step by
tests/agents/test_metrics.py); prometheus_client's standard ``process_*`` metrics come on top.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.exposition import start_http_server
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import CollectorRegistry

from ferry import limits
from ferry.config import split_host_port

log = logging.getLogger("ferry")

COUNTER, GAUGE, INFO = "counter", "gauge", "info"


@dataclass(frozen=True)
class MetricDef:
    name: str                     # without the _total / _info suffix the exposition adds
    kind: str                     # counter, gauge or info
    help: str
    labels: tuple[str, ...] = ()  # besides role and agent, which every metric has

    @property
    def exposed(self) -> str:
        """The name a scrape shows."""
        return self.name + {COUNTER: "_total", INFO: "_info", GAUGE: ""}[self.kind]


_DEFS = [
    MetricDef("ferry_uptime_seconds", GAUGE, "Seconds since the agent started (monotonic clock)."),
    MetricDef("ferry_start_time_seconds", GAUGE, "When the agent started, seconds since the Unix epoch."),
    MetricDef("ferry_link_up", GAUGE, "1 while the link is up as this agent sees it, 0 while down "
              "(inner: authenticated heartbeats arrive; outer: its datagrams leave)."),
    MetricDef("ferry_link_since_timestamp_seconds", GAUGE, "When the link took its current state, seconds since "
              "the Unix epoch."),
    MetricDef("ferry_audit_available", GAUGE, "1 while the audit trail can be written, 0 while not (objects are "
              "held or refused)."),
    MetricDef("ferry_policy", INFO, "The running policy: name, hash (hex SM3) and source (config, bundle, stored).",
              ("name", "hash", "source")),
    MetricDef("ferry_policy_signed_timestamp_seconds", GAUGE, "The running bundle's serial (signed_at), seconds "
              "since the Unix epoch; 0 for the configured folder."),
    MetricDef("ferry_policy_applied_timestamp_seconds", GAUGE, "When the running bundle was applied, seconds since "
              "the Unix epoch; 0 for the configured folder."),
    MetricDef("ferry_policy_reloads", COUNTER, "Policies swapped in while running."),
    MetricDef("ferry_key_epoch", GAUGE, "The current link key epoch (outer: sending; inner: receiving; absent "
              "before the first)."),
    MetricDef("ferry_key_announcements", COUNTER, "Inner: key announcements received, by outcome "
              "(accepted, repeated, refused).", ("outcome",)),
    MetricDef("ferry_objects_sent", COUNTER, "Outer: files sent over the link."),
    MetricDef("ferry_objects_delivered", COUNTER, "Inner: objects delivered (all lanes)."),
    MetricDef("ferry_objects_refused", COUNTER, "Objects refused (outer: files at ingest; inner: objects at "
              "rebuild, all lanes)."),
    MetricDef("ferry_objects_lost", COUNTER, "Inner: objects recorded lost (all lanes)."),
    MetricDef("ferry_objects_replayed", COUNTER, "Inner: replayed objects refused (already delivered)."),
    MetricDef("ferry_objects_duplicate", COUNTER, "Inner: duplicate copies of an object in flight, ignored."),
    MetricDef("ferry_link_datagrams", COUNTER, "Link datagrams (outer: sent; inner: received)."),
    MetricDef("ferry_link_bytes", COUNTER, "Link bytes (outer: sent; inner: received)."),
    MetricDef("ferry_link_objects", COUNTER, "Objects on the link (outer: queued to send; inner: reassembled whole)."),
    MetricDef("ferry_link_objects_lost", COUNTER, "Inner: objects lost on the link (blocks not repaired)."),
    MetricDef("ferry_link_blocks_sent", COUNTER, "Outer: FEC blocks sent."),
    MetricDef("ferry_link_blocks_received", COUNTER, "Inner: FEC blocks, by outcome (ok, repaired, lost, "
              "refused).", ("outcome",)),
    MetricDef("ferry_link_datagrams_dropped", COUNTER, "Inner: link datagrams dropped, by reason code "
              "(README's Audit section, WIRE.md §8).", ("reason",)),
    MetricDef("ferry_link_symbols_late", COUNTER, "Inner: symbols that came after their block was done."),
    MetricDef("ferry_link_heartbeats", COUNTER, "Inner: authenticated heartbeats received."),
    MetricDef("ferry_link_send_errors", COUNTER, "Outer: link sends that failed (those datagrams are lost)."),
    MetricDef("ferry_link_outbox", GAUGE, "Outer: datagrams and blocks made and not sent yet."),
    MetricDef("ferry_internal_errors", COUNTER, "Inner: unexpected errors while receiving (a bug; see the log)."),
    MetricDef("ferry_lane_sent", COUNTER, "Outer: objects sent, per lane.", ("lane",)),
    MetricDef("ferry_lane_delivered", COUNTER, "Inner: objects delivered per lane (video: access units and "
              "audio frames).", ("lane",)),
    MetricDef("ferry_lane_refused", COUNTER, "Objects refused per lane (video: refused streams and connections).",
              ("lane",)),
    MetricDef("ferry_lane_lost", COUNTER, "Inner: objects lost per lane.", ("lane",)),
    MetricDef("ferry_lane_dropped", COUNTER, "Inner video: access units and audio frames dropped.", ("lane",)),
    MetricDef("ferry_lane_streams", COUNTER, "Video streams started.", ("lane",)),
    MetricDef("ferry_lane_active_streams", GAUGE, "Video streams now running.", ("lane",)),
    MetricDef("ferry_lane_transcoding_streams", GAUGE, "Outer video: streams now transcoded.", ("lane",)),
    MetricDef("ferry_lane_access_units", COUNTER, "Outer video: access units sent.", ("lane",)),
    MetricDef("ferry_lane_refused_streams", COUNTER, "Video streams refused (policy, checks, transcoder).",
              ("lane",)),
    MetricDef("ferry_lane_refused_connections", COUNTER, "Outer video: TCP connections refused.", ("lane",)),
    MetricDef("ferry_lane_refused_packets", COUNTER, "Outer video: packets from an address not taken.",
              ("lane",)),
    MetricDef("ferry_lane_refused_access_units", COUNTER, "Inner video: access units refused.", ("lane",)),
    MetricDef("ferry_lane_dropped_no_audit", COUNTER, "Outer video: access units dropped while the audit trail "
              "was unavailable.", ("lane",)),
    MetricDef("ferry_status_counter", GAUGE, "A status counter without a metric of its own (by name; a newer "
              "counter than this table).", ("name",)),
    MetricDef("ferry_metrics_snapshot_age_seconds", GAUGE, "Age of the state this scrape shows (above "
              f"{limits.METRICS_SNAPSHOT_TIMEOUT:g} s: the event loop was busy and the last snapshot was served)."),
]
METRICS: dict[str, MetricDef] = {d.name: d for d in _DEFS}

# status_counters() key -> (metric, extra labels). The video_* keys are in the video lane's metrics.
STATUS_COUNTERS: dict[str, tuple[str, dict[str, str]]] = {
    "policy_reloads": ("ferry_policy_reloads", {}),
    "sent": ("ferry_objects_sent", {}),
    "delivered": ("ferry_objects_delivered", {}),
    "refused": ("ferry_objects_refused", {}),
    "lost": ("ferry_objects_lost", {}),
    "replays": ("ferry_objects_replayed", {}),
    "duplicates": ("ferry_objects_duplicate", {}),
    "datagrams": ("ferry_link_datagrams", {}),
    "bytes": ("ferry_link_bytes", {}),
    "objects": ("ferry_link_objects", {}),
    "objects_lost": ("ferry_link_objects_lost", {}),
    "blocks": ("ferry_link_blocks_sent", {}),
    "blocks_ok": ("ferry_link_blocks_received", {"outcome": "ok"}),
    "blocks_repaired": ("ferry_link_blocks_received", {"outcome": "repaired"}),
    "blocks_lost": ("ferry_link_blocks_received", {"outcome": "lost"}),
    "blocks_refused": ("ferry_link_blocks_received", {"outcome": "refused"}),
    "symbols_late": ("ferry_link_symbols_late", {}),
    "heartbeats": ("ferry_link_heartbeats", {}),
    "send_errors": ("ferry_link_send_errors", {}),
    "outbox": ("ferry_link_outbox", {}),
    "internal_errors": ("ferry_internal_errors", {}),
    "announcements_accepted": ("ferry_key_announcements", {"outcome": "accepted"}),
    "announcements_repeated": ("ferry_key_announcements", {"outcome": "repeated"}),
    "announcements_refused": ("ferry_key_announcements", {"outcome": "refused"}),
}
SKIPPED_COUNTERS = frozenset({"epoch"})        # ferry_key_epoch
LANE_COUNTERS: dict[str, str] = {
    "sent": "ferry_lane_sent", "delivered": "ferry_lane_delivered", "refused": "ferry_lane_refused",
    "lost": "ferry_lane_lost", "dropped": "ferry_lane_dropped", "streams": "ferry_lane_streams",
    "active": "ferry_lane_active_streams", "transcoding": "ferry_lane_transcoding_streams",
    "access_units": "ferry_lane_access_units", "refused_streams": "ferry_lane_refused_streams",
    "refused_connections": "ferry_lane_refused_connections", "refused_packets": "ferry_lane_refused_packets",
    "refused_access_units": "ferry_lane_refused_access_units", "dropped_no_audit": "ferry_lane_dropped_no_audit",
}


@dataclass(frozen=True)
class Snapshot:
    """The agent's state at one moment, copied on the event loop; plain values only."""
    role: str
    agent: str
    taken: float                  # monotonic
    started_at: float
    audit_available: bool
    policy_name: str
    policy_hash: str
    policy_source: str
    signed_at: float
    applied_at: float
    uptime: float | None = None
    link_up: bool | None = None
    link_since: float | None = None
    key_epoch: int | None = None
    counters: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)      # inner: link datagrams dropped, by reason
    lanes: dict[str, dict[str, int]] = field(default_factory=dict)


def _ints(values: dict[str, Any]) -> dict[str, int]:
    return {str(k): int(v) for k, v in values.items() if isinstance(v, int) and not isinstance(v, bool) and v >= 0}


def take_snapshot(agent: Any, now: float) -> Snapshot:
    """Copy what the metrics show from ``agent`` (on its event loop). Optional parts (uptime,
    link_view, lane_counters) are left out for an agent without them, as GetStatus does."""
    counters = _ints(agent.status_counters())
    epoch: int | None = counters.get("epoch")
    receiver = getattr(agent, "receiver", None)         # the inner agent: its epoch and drops by reason
    receiving = getattr(receiver, "current_epoch", None)
    if epoch is None and isinstance(receiving, int):
        epoch = receiving
    dropped = getattr(getattr(receiver, "counters", None), "dropped_by_reason", None)
    p = agent.policy_info()
    uptime = agent.uptime() if hasattr(agent, "uptime") else None
    link_up = link_since = None
    if hasattr(agent, "link_view"):
        v = agent.link_view()
        link_up, link_since = v.state == "up", float(v.since)
    lanes = {str(k): _ints(v) for k, v in agent.lane_counters().items()} if hasattr(agent, "lane_counters") else {}
    return Snapshot(role=agent.role, agent=agent.name, taken=now, started_at=float(agent.started_at),
                    audit_available=bool(agent.audit_available()), policy_name=p.name, policy_hash=p.hash.hex(),
                    policy_source=p.source, signed_at=p.signed_at, applied_at=p.applied_at,
                    uptime=None if uptime is None else max(0.0, float(uptime)), link_up=link_up,
                    link_since=link_since, key_epoch=epoch, counters=counters,
                    dropped=_ints(dropped) if isinstance(dropped, dict) else {}, lanes=lanes)


def families(s: Snapshot, now: float) -> list[Metric]:
    """The metric families of one snapshot (``now``: monotonic, for the snapshot's age)."""
    made: dict[str, CounterMetricFamily | GaugeMetricFamily] = {}

    def add(metric: str, value: float, labels: dict[str, str] | None = None) -> None:
        d = METRICS[metric]
        if metric not in made:
            cls = CounterMetricFamily if d.kind == COUNTER else GaugeMetricFamily
            made[metric] = cls(metric, d.help, labels=["role", "agent", *d.labels])
        made[metric].add_metric([s.role, s.agent, *((labels or {})[k] for k in d.labels)], value)

    if s.uptime is not None:
        add("ferry_uptime_seconds", s.uptime)
    add("ferry_start_time_seconds", s.started_at)
    if s.link_up is not None and s.link_since is not None:
        add("ferry_link_up", 1 if s.link_up else 0)
        add("ferry_link_since_timestamp_seconds", s.link_since)
    add("ferry_audit_available", 1 if s.audit_available else 0)
    info = InfoMetricFamily("ferry_policy", METRICS["ferry_policy"].help, labels=["role", "agent"])
    info.add_metric([s.role, s.agent], {"name": s.policy_name, "hash": s.policy_hash, "source": s.policy_source})
    add("ferry_policy_signed_timestamp_seconds", s.signed_at)
    add("ferry_policy_applied_timestamp_seconds", s.applied_at)
    if s.key_epoch is not None:
        add("ferry_key_epoch", s.key_epoch)
    for key, v in sorted(s.counters.items()):
        if key in STATUS_COUNTERS:
            metric, labels = STATUS_COUNTERS[key]
            add(metric, v, labels)
        elif key not in SKIPPED_COUNTERS and not key.startswith("video_"):
            add("ferry_status_counter", v, {"name": key})
    for reason, v in sorted(s.dropped.items()):
        add("ferry_link_datagrams_dropped", v, {"reason": reason})
    for lane, values in sorted(s.lanes.items()):
        for key, v in sorted(values.items()):
            if key in LANE_COUNTERS:
                add(LANE_COUNTERS[key], v, {"lane": lane})
            else:
                add("ferry_status_counter", v, {"name": f"{lane}.{key}"})
    add("ferry_metrics_snapshot_age_seconds", max(0.0, now - s.taken))
    return [info, *made.values()]


class AgentCollector:
    """A prometheus_client collector over one agent, called from the HTTP server's thread."""

    def __init__(self, agent: Any, loop: asyncio.AbstractEventLoop,
                 timeout: float = limits.METRICS_SNAPSHOT_TIMEOUT) -> None:
        self.agent, self.loop, self.timeout = agent, loop, timeout
        self.last: Snapshot | None = None

    def snapshot(self) -> Snapshot | None:
        """A fresh snapshot taken on the loop, or the last one if the loop does not answer in time."""
        fut: concurrent.futures.Future[Snapshot] = concurrent.futures.Future()

        def take() -> None:
            if not fut.set_running_or_notify_cancel():
                return
            try:
                fut.set_result(take_snapshot(self.agent, time.monotonic()))
            except Exception as e:                      # reported in the scrape's thread
                fut.set_exception(e)

        try:
            self.loop.call_soon_threadsafe(take)
            self.last = fut.result(self.timeout)
        except concurrent.futures.TimeoutError:
            fut.cancel()
            log.warning("metrics: the event loop did not answer in %.1f s; serving the last snapshot", self.timeout)
        except RuntimeError:                            # the loop is closed: the agent is stopping
            pass
        return self.last

    def describe(self) -> Iterable[Metric]:
        return []                                       # no scrape at registration

    def collect(self) -> Iterator[Metric]:
        s = self.snapshot()
        if s is not None:
            yield from families(s, time.monotonic())


class MetricsServer:
    """The HTTP listener (a prometheus_client thread) for one agent."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.server: Any = None
        self.thread: Any = None

    def start(self, agent: Any, loop: asyncio.AbstractEventLoop) -> None:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(AgentCollector(agent, loop))
        ProcessCollector(registry=registry)
        host, port = split_host_port(self.address)
        try:
            self.server, self.thread = start_http_server(port, addr=host, registry=registry)
        except OSError as e:
            raise OSError(f"[management] metrics = {self.address!r}: cannot listen: {e.strerror or e}") from None
        log.info("metrics on http://%s/metrics", self.address)

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.thread.join(timeout=5)
            self.server = None
