"""What a lane's pure pipeline returns to its agent: work to carry out.

Every lane is one pure object per side. It takes inputs (datagrams, file bytes, link
objects) with two clocks, ``now`` (monotonic: timers, timeouts, rates) and ``wall`` (the
wall clock: validity, ``created``, the time an auditor reads), and returns a list of work
items. The agent only carries them out: it writes audit records, puts objects on the link,
sends or writes outputs, and arms its timers from the lane's ``next_timer()``.

A lane may add work types of its own (e.g. an output for one of its sinks); the two every
lane shares are here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ferry.pb import ferry_pb2


@dataclass(frozen=True, slots=True)
class AuditIntent:
    """One audit record to write: the fields that `AuditTrail.append` takes (no time: the
    agent stamps it when it writes). A refusal is an audit intent with verdict "refused",
    a rule and a reason."""

    fields: dict[str, Any]


@dataclass(frozen=True, slots=True)
class SealObject:
    """Outer side: a canonical object (its ``object_id`` set) to seal onto the link.

    ``sent`` is the record the agent writes once the object's blocks are known
    (``object_sent``; the agent adds ``epoch`` and ``blocks``); None where the lane
    accounts per stream instead (video)."""

    obj: ferry_pb2.CanonicalObject
    sent: dict[str, Any] | None = None


class ObjectIds:
    """Object IDs of one agent run: the run id (its start second) in the top 32 bits, a counter
    below, so that IDs of two runs never collide (the outer agent starts on a whole second, so
    a restart gets a larger run id) and the inner agent can tell a replay by its ID."""

    __slots__ = ("run_id", "count")

    def __init__(self, run_id: int) -> None:
        self.run_id = run_id & 0xFFFFFFFF
        self.count = 0

    def next(self) -> int:
        """The next ID; never 0 (lanes/delivered.py reserves it), the counter wraps at 2**32."""
        self.count = (self.count + 1) & 0xFFFFFFFF or 1
        return (self.run_id << 32) | self.count
