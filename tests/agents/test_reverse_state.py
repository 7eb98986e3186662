"""The outer agent keeps the reverse lane's floor across its restarts (``<state_dir>/reverse-floor``):
written before a request is served, atomically, so that a kill -9 at any point leaves a usable file;
a torn or corrupt one is a problem to record and a safe floor."""
from __future__ import annotations

import asyncio
import math
import os
import random
import signal
import subprocess
import sys
import threading
import time

import pytest

from appliance import free_udp_port
from ferry import limits
from ferry.agents.reverse_receiver import STATE_FILE, ReverseReceiver, ReverseState
from ferry.config import OuterReverse
from ferry.crypto.keys import init_keys
from ferry.lanes.reverse import ReverseAction, ReverseFloor, decode_floor, encode_floor
from ferry.pb import ferry_pb2
from ferry.policy import load_plan
from reverse import CAMERA, reverse_policy

WALL = 1_800_000_000.0


def test_no_file_is_a_first_start_and_a_saved_floor_comes_back(tmp_path):
    store = ReverseState(tmp_path / "state")
    assert store.load(WALL) == (ReverseFloor(), None)
    store.save(ReverseFloor(42 << 32 | 7, 0))
    assert (tmp_path / "state").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "state" / STATE_FILE).stat().st_mode & 0o777 == 0o600
    assert ReverseState(tmp_path / "state").load(WALL) == (ReverseFloor(42 << 32 | 7, 0), None)


@pytest.mark.parametrize("damage", [b"", b"ferry-reverse-floor 1 12", b"\0" * 40, "bitflip"])
def test_a_torn_or_corrupt_file_refuses_what_came_before_the_start_plus_skew(tmp_path, damage):
    store = ReverseState(tmp_path)
    store.save(ReverseFloor(99, 0))
    path = tmp_path / STATE_FILE
    if damage == "bitflip":
        b = bytearray(path.read_bytes())
        b[23] ^= 0x01                          # a digit of the object ID
        path.write_bytes(bytes(b))
    else:
        path.write_bytes(damage)
    floor, problem = store.load(WALL)
    assert floor == ReverseFloor(0, math.ceil(WALL + limits.CLOCK_SKEW))
    assert problem is not None and str(path) in problem and "clock skew" in problem
    # the safe floor was kept: a second restart within the window refuses the same, without alarm
    assert ReverseState(tmp_path).load(WALL + 10) == (floor, None)


def test_a_write_cut_short_leaves_only_a_temporary_file_that_the_next_start_removes(tmp_path):
    store = ReverseState(tmp_path)
    store.save(ReverseFloor(5, 0))
    torn = tmp_path / f".{STATE_FILE}.12345.tmp"
    torn.write_bytes(encode_floor(ReverseFloor(6, 0))[:10])
    assert store.load(WALL) == (ReverseFloor(5, 0), None)
    assert not torn.exists()


WRITER = """
import sys
from pathlib import Path
from ferry.agents.reverse_receiver import ReverseState
from ferry.lanes.reverse import ReverseFloor
store = ReverseState(Path(sys.argv[1]))
i = int(sys.argv[2])
print("ready", flush=True)
while True:
    i += 1
    store.save(ReverseFloor(i, 0))
"""


def test_kill_9_while_writing_never_leaves_an_unusable_floor(tmp_path):
    """A real kill -9 of a process replacing the file as fast as it can, at random moments: each
    next start reads a floor (never a problem) and never a lower one than an earlier start read."""
    rng = random.Random(13)
    last = 0
    for _ in range(6):
        p = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), str(last)], stdout=subprocess.PIPE,
                             env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
        assert p.stdout is not None and p.stdout.readline() == b"ready\n"
        time.sleep(rng.uniform(0.05, 0.4))
        p.send_signal(signal.SIGKILL)
        p.wait()
        floor, problem = ReverseState(tmp_path).load(WALL)
        assert problem is None
        assert floor.object_id >= last and floor.not_before == 0
        last = floor.object_id
        assert not list(tmp_path.glob(".*.tmp"))
    assert last > 0


@pytest.fixture
def receiver(tmp_path):
    init_keys(tmp_path / "keys", ("outer-reverse", "inner-reverse"))
    plan = load_plan(reverse_policy(tmp_path / "policy"))
    cfg = OuterReverse(listen_host="127.0.0.1", listen_port=free_udp_port(),
                       key=str(tmp_path / "keys" / "outer-reverse.key"),
                       peer_public=str(tmp_path / "keys" / "inner-reverse.pub"))
    records: list[dict] = []
    r = ReverseReceiver(cfg, lambda: plan, records.append, tmp_path / "state")
    yield r, records, plan
    r.sock.close()


def _request(oid: int) -> ferry_pb2.CanonicalObject:
    o = ferry_pb2.CanonicalObject(object_id=oid, lane="reverse", destination="outer-platform", created=time.time())
    o.source.address = "127.0.0.1"
    o.reverse.request, o.reverse.device_id, o.reverse.operator = "start_stream", CAMERA, "alice"
    return o


def test_the_floor_is_on_disk_before_the_request_is_served(receiver, tmp_path):
    r, records, plan = receiver
    oid = int(time.time()) << 32 | 1
    on_disk: list[ReverseFloor] = []
    r.register("start_stream", lambda a: on_disk.append(decode_floor((tmp_path / "state" / STATE_FILE).read_bytes())))
    r.act(r.lane.take_object(_request(oid), plan, 0.0, time.time()))
    assert on_disk == [ReverseFloor(oid, 0)]
    assert [x["event"] for x in records] == ["request_received", "request_served"]


def test_a_floor_that_cannot_be_written_costs_the_request_never_a_replay(receiver, monkeypatch):
    r, records, plan = receiver
    served: list[ReverseAction] = []
    r.register("start_stream", served.append)

    def broken(self, floor):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ReverseState, "save", broken)
    oid = int(time.time()) << 32 | 1
    r.act(r.lane.take_object(_request(oid), plan, 0.0, time.time()))
    assert served == []
    assert [(x["event"], x.get("code")) for x in records] == [("request_received", None),
                                                              ("request_unserved", "output_failed")]
    assert "No space left on device" in records[1]["reason"]
    monkeypatch.undo()       # the disk is back: the next request is kept and served
    r.act(r.lane.take_object(_request(oid + 1), plan, 0.0, time.time()))
    assert [a.object_id for a in served] == [oid + 1]
    assert r.saved == oid + 1


def test_the_start_records_the_floor_and_any_problem(receiver, tmp_path):
    r, records, _ = receiver
    r.started()
    assert [x["event"] for x in records] == ["reverse_state_loaded"]
    assert records[0]["detail"] == {"state_file": str(tmp_path / "state" / STATE_FILE), "floor": 0, "not_before": 0}


def test_on_the_loop_the_floor_is_written_by_a_thread_and_the_request_waits_for_it(receiver, tmp_path,
                                                                                     monkeypatch):
    """The write's fsyncs never stall the agent's loop (its forward lanes): the loop runs on while
    the floor is written, and the request is served only once it is on disk."""
    r, records, plan = receiver
    order: list[str] = []
    real = ReverseState.save

    def slow(self, floor):
        assert threading.current_thread() is not threading.main_thread()
        time.sleep(0.3)
        real(self, floor)
        order.append("saved")

    monkeypatch.setattr(ReverseState, "save", slow)
    r.register("start_stream", lambda a: order.append("served"))

    async def main() -> int:
        stop = asyncio.Event()
        task = asyncio.create_task(r.run(stop))
        await asyncio.sleep(0.05)
        oid = int(time.time()) << 32 | 1
        r.act(r.lane.take_object(_request(oid), plan, 0.0, time.time()))
        assert order == [] and not records[1:]          # held: nothing recorded or served yet
        ticks = 0
        while "served" not in order:
            await asyncio.sleep(0.01)
            ticks += 1
        stop.set()
        r.wake.set()
        await task
        return ticks

    ticks = asyncio.run(main())
    assert order == ["saved", "served"]
    assert ticks >= 10, "the loop stalled while the floor was written"
    assert [x["event"] for x in records] == ["reverse_state_loaded", "request_received", "request_served"]
    assert decode_floor((tmp_path / "state" / STATE_FILE).read_bytes()).object_id == r.saved
