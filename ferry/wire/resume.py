"""What the receiver keeps across a restart (the inner agent stores it; proto/WIRE.md §4.1).

Pure. `LinkReceiver.snapshot()` gives a `LinkState`; `LinkReceiver.resume(state, now, wall)`
starts from one:

- ``floor``: the newest epoch ever accepted. An announcement of an older epoch is refused
  (``old_epoch``) even when no epoch is current, so an old run's capture never gets a key.
- ``announcement``: the current epoch's announcement as received. On resume it is checked
  again like any other (signature, validity on the wall clock, envelope), so the restarted
  receiver has the key at once instead of after the next announcement.
- ``opened``: per epoch, the highest block number opened. After resume every block number
  at or below it is a replay, and loss accounting starts just above it (the blocks sent
  while the receiver was down are one gap).

Encoding: JSON (an operator can read it) with an SM3 checksum of its other fields; a file that
does not decode or check raises ResumeError, and the agent starts without it (and says so).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ferry.crypto import sm3

FORMAT = "ferry-link-state/1"


class ResumeError(Exception):
    """A stored link state that cannot be used."""


@dataclass(frozen=True, slots=True)
class LinkState:
    floor: int = -1
    announcement: bytes = b""
    opened: dict[int, int] = field(default_factory=dict)

    def merged(self, opened: dict[int, int]) -> "LinkState":
        """The same state with higher opened block numbers taken in (e.g. from a journal)."""
        both = dict(self.opened)
        for epoch, block in opened.items():
            if block > both.get(epoch, -1):
                both[epoch] = block
        return LinkState(self.floor, self.announcement, both)


def _body(state: LinkState) -> dict[str, Any]:
    return {"format": FORMAT, "floor": state.floor, "announcement": state.announcement.hex(),
            "opened": {str(e): b for e, b in sorted(state.opened.items())}}


def encode(state: LinkState) -> bytes:
    body = _body(state)
    text = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return json.dumps({**body, "sm3": sm3(text.encode()).hex()}, sort_keys=True, indent=1).encode() + b"\n"


def decode(data: bytes) -> LinkState:
    try:
        doc = json.loads(data)
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise ResumeError(f"not a {FORMAT} file")
        floor, ann, opened = doc["floor"], bytes.fromhex(doc["announcement"]), doc["opened"]
        if type(floor) is not int or not -1 <= floor < 1 << 32 or not isinstance(opened, dict):
            raise ResumeError("bad floor or opened")
        blocks = {int(e): b for e, b in opened.items()}
        if any(type(b) is not int or not -1 <= b < 1 << 63 or not 0 <= e < 1 << 32 for e, b in blocks.items()):
            raise ResumeError("bad opened block number")
        state = LinkState(floor, ann, blocks)
    except ResumeError:
        raise
    except (ValueError, KeyError, TypeError) as err:
        raise ResumeError(f"unreadable link state: {err}") from None
    text = json.dumps(_body(state), sort_keys=True, separators=(",", ":"))
    if doc.get("sm3") != sm3(text.encode()).hex():
        raise ResumeError("link state checksum does not match")
    return state
