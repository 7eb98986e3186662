"""The inner agent bounds time: an object whose `created` is far from the inner wall clock is
refused with a reason naming both times, before the policy sees it (a real inner agent; the
objects come from a sender holding the outer key and announcing the running policy)."""
from __future__ import annotations

import os
import time

import pytest

from appliance import read_trail
from link_sender import send_sealed
from ferry import limits
from ferry.lanes.files import make_file_object

pytestmark = pytest.mark.e2e


def test_a_forged_created_is_refused_and_an_honest_one_delivered(appliance_factory):
    a = appliance_factory().start()
    a.wait_for(lambda: any(r["event"] == "key_accepted" for r in read_trail(a.inner_audit)), 10, "key")
    now = time.time()
    objs = {oid: make_file_object(object_id=oid, name=name, content=b"hello\n", source="outer-spool",
                                  destination="inner-spool", now=created)
            for oid, name, created in ((901, "forged.txt", now - 3600),
                                       (902, "future.txt", now + 2 * limits.CLOCK_SKEW), (903, "honest.txt", now))}
    for obj in objs.values():
        obj.rule = "files-documents"
    send_sealed(a, objs.values(), now)

    def done():
        return {r.get("object_id"): r for r in read_trail(a.inner_audit)
                if r["event"] in ("object_refused", "object_delivered")}

    a.wait_for(lambda: set(objs) <= set(done()), 15, "the three objects accounted for")
    recs = done()
    for oid in (901, 902):
        r = recs[oid]
        assert r["event"] == "object_refused" and r["rule"] == "ferry-canonical", r
        assert "from the inner clock" in r["reason"] and "allowed skew" in r["reason"]
    assert recs[903]["event"] == "object_delivered"
    # the record is on disk a moment before the file is renamed into place
    a.wait_for(lambda: sorted(os.listdir(a.inner_spool)) == ["honest.txt"], 10, "honest.txt in place, alone")
