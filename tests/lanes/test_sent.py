"""ferry.lanes.sent: object_sent records wait for the blocks that carry their object."""
from __future__ import annotations

from ferry.lanes.sent import SentRecords
from ferry.lanes.work import SealObject
from ferry.pb import ferry_pb2
from ferry.wire.events import BlockSealed


def _seal(oid, sent=True):
    return SealObject(ferry_pb2.CanonicalObject(object_id=oid), {"event": "object_sent", "object_id": oid}
                      if sent else None)


def test_records_complete_with_epoch_and_blocks():
    s: SentRecords[str] = SentRecords()
    s.add(_seal(1), "a")
    s.add(_seal(2), "b")
    s.add(_seal(3, sent=False), "video")          # accounted per stream: not tracked
    assert len(s) == 2
    s.block_sealed(BlockSealed(4, 10, (1,), 100))
    s.block_sealed(BlockSealed(4, 11, (1, 2), 100))
    s.block_sealed(BlockSealed(5, 12, (2, 99), 100))
    done = {token: r.fields for r, token, _ in s.complete()}
    assert done == {"a": {"event": "object_sent", "object_id": 1, "epoch": 4, "blocks": [10, 11]},
                    "b": {"event": "object_sent", "object_id": 2, "epoch": 5, "blocks": [11, 12]}}
    assert len(s) == 0 and s.complete() == []


def test_an_object_in_no_block_yet_has_no_blocks():
    s: SentRecords[int] = SentRecords()
    s.add(_seal(7), 0)
    [(r, _, _)] = s.complete()
    assert r.fields["blocks"] == [] and r.fields["epoch"] == 0
