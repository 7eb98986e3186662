"""The outer devices registered with ferry (GB/T 28181 §9.1): pure, bounded state.

One `Device` per configured device that has registered at least once (the lane refuses every
other ID before any state is made, so the registry never holds more than the configured devices,
and never more than SIGNALING_DEVICES_MAX). A device is *online* from a successful REGISTER until
it unregisters (Expires 0), its registration expires without a refresh, or it misses its
keepalives (``keepalive_timeout``, by default SIGNALING_KEEPALIVE_MISSED x its interval).

Deadlines are monotonic (``now``); `next_timer()` is the earliest, `due(now)` takes the devices
whose deadline passed (each marked offline, with why). A heap with lazy entries keeps both cheap
for ten thousand devices.

For the media part (``media-outer``): `contact(device_id) -> (peer, SipUri) | None` (the
transport peer the device registered from and its Contact URI, while online) and
`online(device_id)`.
"""
from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ferry import limits
from ferry.codecs.manscdp import Item, Manscdp
from ferry.codecs.sip import SipUri


@dataclass(slots=True)
class Device:
    device_id: str
    online: bool = False
    peer: Any = None                     # the transport peer it registered from (the agent's Peer)
    contact: SipUri | None = None        # its Contact URI
    registered_wall: float = 0.0         # when it last registered (wall clock, for people)
    expires_at: float = 0.0              # monotonic end of its registration
    keepalive_at: float = 0.0            # monotonic: last keepalive (or the registration)
    keepalive_deadline: float = 0.0      # monotonic: offline if no keepalive before
    keepalives: int = 0
    messages: int = 0
    catalog: dict[str, Item] = field(default_factory=dict)   # channel ID -> its latest catalog item
    catalog_sum: int | None = None       # SumNum of the last Response Catalog
    catalog_sn: int | None = None        # SN of the catalog round being received
    catalog_round: set[str] = field(default_factory=set)     # channel IDs received in that round
    catalog_complete: bool = False
    info: tuple[tuple[str, str], ...] = ()      # Response DeviceInfo fields
    status: tuple[tuple[str, str], ...] = ()    # Response DeviceStatus fields

    def deadline(self) -> float:
        return min(self.expires_at, self.keepalive_deadline)


class Registry:
    """Registered devices; `timeout` is the keepalive timeout in seconds."""

    def __init__(self, keepalive_timeout: float, max_devices: int = limits.SIGNALING_DEVICES_MAX) -> None:
        self.keepalive_timeout = keepalive_timeout
        self.max_devices = max_devices
        self._devices: dict[str, Device] = {}
        self._heap: list[tuple[float, str]] = []
        self.changes = 0        # counts what a saved copy of the registrations would miss

    def __len__(self) -> int:
        return len(self._devices)

    def __iter__(self) -> Iterator[Device]:
        return iter(self._devices.values())

    def get(self, device_id: str) -> Device | None:
        return self._devices.get(device_id)

    # -- what the media part asks ---------------------------------------------------------------
    def online(self, device_id: str) -> bool:
        d = self._devices.get(device_id)
        return d is not None and d.online

    def contact(self, device_id: str) -> tuple[Any, SipUri] | None:
        """The peer and Contact URI of an online device, else None."""
        d = self._devices.get(device_id)
        if d is None or not d.online or d.contact is None:
            return None
        return d.peer, d.contact

    def online_count(self) -> int:
        return sum(1 for d in self._devices.values() if d.online)

    # -- changes -------------------------------------------------------------------------------
    def register(self, device_id: str, peer: Any, contact: SipUri, expires: int, now: float,
                 wall: float) -> bool | None:
        """A successful REGISTER; True if the device came online, False for a refresh, None when
        the registry is full (a configured device beyond SIGNALING_DEVICES_MAX)."""
        d = self._devices.get(device_id)
        if d is None:
            if len(self._devices) >= self.max_devices:
                return None
            d = self._devices[device_id] = Device(device_id)
        came = not d.online
        self.changes += 1
        d.online = True
        d.peer, d.contact = peer, contact
        d.expires_at = now + expires
        if came:
            d.registered_wall = wall
            d.keepalive_at = now
            d.keepalive_deadline = now + self.keepalive_timeout
            d.catalog_complete = False
        self._push(d)
        return came

    def unregister(self, device_id: str) -> bool:
        """Expires 0: True if it was online."""
        d = self._devices.get(device_id)
        if d is None or not d.online:
            return False
        d.online = False
        self.changes += 1
        return True

    def restore(self, device_id: str, peer: Any, contact: SipUri, expires: float, registered_wall: float,
                catalog: tuple[Item, ...], now: float) -> Device | None:
        """A device a run before this one left online (ferry.lanes.signaling.registrations): online
        for what its registration had left, with a fresh keepalive window from now."""
        came = self.register(device_id, peer, contact, 0, now, registered_wall)
        if came is None:
            return None
        d = self._devices[device_id]
        d.expires_at = now + expires
        for item in catalog[:limits.SIGNALING_CATALOG_ITEMS_MAX]:
            if item.device_id is not None:
                d.catalog[item.device_id] = item
        d.catalog_complete = bool(d.catalog)
        self._push(d)
        return d

    def keepalive(self, d: Device, now: float) -> None:
        d.keepalives += 1
        d.keepalive_at = now
        d.keepalive_deadline = now + self.keepalive_timeout
        self._push(d)

    def learn_catalog(self, d: Device, msg: Manscdp) -> tuple[int, bool]:
        """A Response Catalog page: its items kept (bounded), the round tallied by SN.
        Returns (new channels, whether the round now holds SumNum items)."""
        if d.catalog_sn != msg.sn:
            d.catalog_sn = msg.sn
            d.catalog_round = set()
            d.catalog_complete = False
        d.catalog_sum = msg.sum_num
        self.changes += 1
        new = 0
        for item in msg.items:
            cid = item.device_id
            if cid is None:
                continue
            if cid not in d.catalog:
                if len(d.catalog) >= limits.SIGNALING_CATALOG_ITEMS_MAX:
                    continue
                new += 1
            d.catalog[cid] = item
            if len(d.catalog_round) < limits.SIGNALING_CATALOG_ITEMS_MAX:
                d.catalog_round.add(cid)
        total = msg.sum_num if msg.sum_num is not None else len(d.catalog_round)
        d.catalog_complete = len(d.catalog_round) >= total
        return new, d.catalog_complete

    # -- timers --------------------------------------------------------------------------------
    def _push(self, d: Device) -> None:
        heapq.heappush(self._heap, (d.deadline(), d.device_id))
        if len(self._heap) > 4 * max(len(self._devices), 64):   # stale entries: rebuild
            self._heap = [(x.deadline(), x.device_id) for x in self._devices.values() if x.online]
            heapq.heapify(self._heap)

    def next_timer(self) -> float | None:
        heap = self._heap
        while heap:
            t, did = heap[0]
            d = self._devices.get(did)
            if d is not None and d.online and d.deadline() == t:
                return t
            heapq.heappop(heap)       # stale: the device refreshed or went offline
        return None

    def due(self, now: float) -> list[tuple[Device, str]]:
        """Devices whose registration expired or whose keepalives stopped: marked offline."""
        out: list[tuple[Device, str]] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            t, did = heapq.heappop(heap)
            d = self._devices.get(did)
            if d is None or not d.online or d.deadline() != t:
                continue
            d.online = False
            self.changes += 1
            if d.expires_at <= d.keepalive_deadline:
                why = "registration expired without a refresh"
            else:
                why = (f"no keepalive for {now - d.keepalive_at:.0f} s "
                       f"(keepalive timeout {self.keepalive_timeout:g} s)")
            out.append((d, why))
        return out
