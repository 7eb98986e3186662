"""Objects sealed and sent on an appliance's link as its outer agent would send them (or a
compromised outer agent: one holding the outer key and announcing the running policy)."""
from __future__ import annotations

import socket
import time
from collections.abc import Iterable

from ferry.crypto.keys import load_private_key, load_public_key
from ferry.pb import ferry_pb2
from ferry.policy import load_plan
from ferry.wire import LinkSender


def send_sealed(a, objects: Iterable[ferry_pb2.CanonicalObject], now: float | None = None) -> None:
    """Seal `objects` with the outer agent's key of appliance `a` and send them to its inner agent;
    the sender's clock reads `now` (the wall clock when not given) + 5 s."""
    keys = a.work / "keys"
    plan = load_plan(a.work / "policy")
    now = time.time() if now is None else now
    sender = LinkSender(outer_key=load_private_key(keys / "outer.key"),
                        inner_public=load_public_key(keys / "inner.pub"), policy_hash=plan.hash, name="test",
                        now=now + 5)
    for obj in objects:
        sender.submit(obj.object_id, obj.SerializeToString(), now + 5)
    sender.flush(now + 5)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for d in sender.datagrams_to_send(now + 5):
            s.sendto(d, ("127.0.0.1", a.port))
            time.sleep(0.0005)
