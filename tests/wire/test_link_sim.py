"""The whole link in one process: sender -> lossy channel -> receiver, with real crypto."""

from __future__ import annotations

import random

from ferry.pb import ferry_pb2
from ferry.wire import (
    AnnouncementRefused,
    BlockLost,
    BlockRefused,
    KeyAccepted,
    KeyRotated,
    LinkDown,
    LinkSender,
    LinkUp,
    ObjectLost,
    ObjectReceived,
)
from .wire_sim import Channel, Link, block_of, object_sizes


def run_objects(link: Link, rng: random.Random, n: int, first_id: int = 0, per_step: int = 4) -> list[int]:
    ids = []
    sizes = object_sizes(rng, n)
    for i, size in enumerate(sizes):
        oid = first_id + i
        link.submit(oid, rng.randbytes(size))
        ids.append(oid)
        if i % per_step == per_step - 1:
            link.step()
    link.step()
    return ids


def test_loss_within_fec_reorder_and_duplication_deliver_everything(keys):
    rng = random.Random(3)  # a run where some blocks also arrive with all source symbols first
    ch = Channel(rng, drop_symbols=lambda key, k, m: rng.randint(0, m), control_loss=0.2, dup=0.05, reorder=30)
    link = Link(keys, ch)
    run_objects(link, rng, 160)
    link.idle(12)
    acc = link.account()
    assert acc["delivered"] == set(link.sent)
    assert not link.of(BlockLost) and not link.of(ObjectLost)
    c = link.receiver.counters
    assert c.blocks_repaired > 0 and c.blocks_ok > 0
    assert c.dropped_by_reason.get("internal_error", 0) == 0
    assert not link.of(BlockRefused)  # network duplication is not a replay
    sizes = sorted(len(p) for p in link.sent.values())
    assert sizes[0] <= 64 and sizes[-1] >= 1 << 20


def test_loss_beyond_fec_is_reported_and_accounted(keys):
    rng = random.Random(2)
    doomed = set()

    def drop(key, k, m):
        if rng.random() < 0.08:
            doomed.add(key)
            return rng.choice([m + 1, k + m])  # partial (too few symbols) or the whole block
        return rng.randint(0, m)

    ch = Channel(rng, drop_symbols=drop, reorder=20, dup=0.02)
    link = Link(keys, ch)
    run_objects(link, rng, 160)
    link.idle(15)
    acc = link.account()
    # every doomed block is reported: by a block_lost, or (a gap inside one object the receiver
    # saw on both sides of it) by that object's object_lost alone
    inside = {(e.epoch, b) for e in link.of(ObjectLost) for b in range(e.blocks[0] + 1, e.blocks[1])}
    assert acc["lost_blocks"] <= doomed & set(link.sealed) <= acc["lost_blocks"] | inside
    reasons = {e.reason for e in link.of(BlockLost)}
    assert reasons <= {"missing", "timeout"}
    assert acc["delivered"] and acc["lost_objects"]
    assert link.receiver.counters.dropped_by_reason.get("internal_error", 0) == 0
    assert link.receiver.pending_sizes()["objects"] == 0
    assert link.receiver.pending_sizes()["blocks"] == 0


def test_last_blocks_dropped_whole_are_detected_by_heartbeats(keys):
    rng = random.Random(3)
    link = Link(keys, Channel(rng))
    ids = run_objects(link, rng, 20)
    last_block = max(link.sealed)
    # now the next blocks vanish entirely: only heartbeats (sealed after them) can prove they were sent
    link.channel.drop_symbols = lambda key, k, m: k + m
    for i in range(3):
        link.submit(1000 + i, rng.randbytes(30_000))
    link.step()
    gone = {b for b in link.sealed if b > last_block}
    assert gone
    link.channel.drop_symbols = lambda key, k, m: 0
    link.idle(4)
    lost = {(e.epoch, b) for e in link.of(BlockLost) for b in range(e.block_no, e.block_no + e.count)}
    assert lost == gone and len(link.of(BlockLost)) == 1  # one gap, one record
    acc = link.account()
    assert acc["delivered"] == set(ids)


def test_replayed_blocks_are_refused(keys):
    rng = random.Random(4)
    ch = Channel(rng)
    link = Link(keys, ch)
    run_objects(link, rng, 30)
    link.idle(1)
    delivered_before = len(link.of(ObjectReceived))
    old = [d for d in ch.log if block_of(d) is not None][:200]
    link.deliver(old)  # an attacker replays recorded datagrams
    link.idle(1)
    assert len(link.of(ObjectReceived)) == delivered_before
    refused = link.of(BlockRefused)
    assert refused and all(e.reason == "replay" for e in refused)
    link.account()


def test_replay_beyond_the_recent_memory_is_refused(keys):
    rng = random.Random(5)
    ch = Channel(rng)
    link = Link(keys, ch)
    run_objects(link, rng, 10)
    first = [d for d in ch.log if (h := block_of(d)) and h[1] == 0]
    link.receiver.assembly._done.clear()  # as if it had long been forgotten: only the replay window remains
    link.deliver(first)
    assert [(e.block_no, e.reason) for e in link.of(BlockRefused)] == [(0, "replay")]
    assert link.receiver.counters.dropped_by_reason["replay"] >= 1


def test_forged_and_foreign_blocks_are_refused(keys):
    rng = random.Random(6)
    link = Link(keys, Channel(rng))
    run_objects(link, rng, 10)
    n_delivered = len(link.of(ObjectReceived))
    s = link.sender
    # a block with a flipped byte in a source symbol
    s.submit(500, b"A" * 5000, link.now)
    s.flush(link.now)
    ds = s.datagrams_to_send(link.now)
    link.sent[500] = b"A" * 5000
    forged = []
    for d in ds:
        h = block_of(d)
        if h and h[2] == 0:
            d = d[:40] + bytes([d[40] ^ 1]) + d[41:]   # a symbol byte (the authenticator covers the header)
        forged.append(d)
    link.deliver(forged)
    while (e := s.next_event()) is not None:
        if hasattr(e, "object_ids"):
            link.sealed[(e.epoch, e.block_no)] = e.object_ids
    assert [e.reason for e in link.of(BlockRefused)] == ["auth"]
    # a block sealed with another key, same epoch and a fresh block number
    other = link.new_sender(epoch=s.epoch)
    target = link.sender.counters.blocks + 5  # a block number ours has not used yet
    for _ in range(target + 1):
        other.submit(900, b"x", link.now)
        other.flush(link.now)
    junk = [d for d in other.datagrams_to_send(link.now) if block_of(d) and block_of(d)[1] == target]
    forged_before = link.receiver.counters.dropped_by_reason.get("bad_symbol_auth", 0)
    link.deliver(junk)
    # its symbols' authenticators do not verify under our key: dropped one by one, never a block
    assert link.receiver.counters.dropped_by_reason["bad_symbol_auth"] == forged_before + len(junk) > 0
    assert [e.reason for e in link.of(BlockRefused)] == ["auth"]
    link.idle(4)
    assert len(link.of(ObjectReceived)) == n_delivered
    lost = {(e.block_no, e.reason) for e in link.of(BlockLost)}
    assert any(r == "auth" for _, r in lost)
    link.account()


def test_bad_announcements_are_refused(keys, other_key):
    rng = random.Random(7)
    outer, inner = keys
    link = Link(keys, Channel(rng))
    link.step()
    # signed by another outer key (which also names itself)
    wrong_signer = LinkSender(outer_key=other_key, inner_public=inner.public_key(), policy_hash=bytes(32),
                              name="x", now=link.now, wall=link.wall, epoch=link.sender.epoch + 5)
    # for another inner key
    wrong_inner = LinkSender(outer_key=outer, inner_public=other_key.public_key(), policy_hash=bytes(32),
                             name="x", now=link.now, wall=link.wall, epoch=link.sender.epoch + 6)
    link.deliver([wrong_signer.announcement, wrong_inner.announcement])
    reasons = [e.reason for e in link.of(AnnouncementRefused)]
    assert reasons == ["wrong_outer_key", "wrong_inner_key"]
    # right key id, wrong signature
    msg = ferry_pb2.KeyAnnouncement.FromString(link.sender.announcement[4:])
    msg.signature = other_key.sign(msg.body)
    link.deliver([link.sender.announcement[:4] + msg.SerializeToString()])
    assert link.of(AnnouncementRefused)[-1].reason == "bad_signature"
    assert link.receiver.current_epoch == link.sender.epoch


def test_rotation_by_bytes_loses_nothing_and_old_announcements_are_refused(keys):
    rng = random.Random(8)
    ch = Channel(rng, drop_symbols=lambda key, k, m: rng.randint(0, m), reorder=10)
    link = Link(keys, ch, key_bytes_max=400_000)
    first_announcement = link.sender.announcement
    for oid, size in enumerate(object_sizes(rng, 60, big=1 << 20)):
        link.submit(oid, rng.randbytes(min(size, 300_000)))
        link.step(0.3)  # rotations stay below the receiver's SM2 verification rate
    link.idle(12)
    rotations = [e for e in link.sender_events if isinstance(e, KeyRotated)]
    assert len(rotations) >= 3 and all(e.reason == "bytes" for e in rotations)
    assert len({e.epoch for e in link.of(KeyAccepted)}) == len(rotations) + 1
    acc = link.account()
    assert acc["delivered"] == set(link.sent)
    assert not link.of(BlockLost)
    link.deliver([first_announcement])  # while the old epoch is kept (KEY_OVERLAP) a repeat is harmless
    assert not link.of(AnnouncementRefused)
    link.idle(31)
    assert link.receiver.epochs == (link.sender.epoch,)
    link.deliver([first_announcement])  # a replay of a retired epoch's announcement
    assert link.of(AnnouncementRefused)[-1].reason == "old_epoch"


def test_receiver_restart_recovers_at_next_announcement(keys):
    rng = random.Random(9)
    link = Link(keys, Channel(rng))
    run_objects(link, rng, 20)
    link.idle(5)
    link.receiver = link.new_receiver()
    link.events.clear()
    later = run_objects(link, rng, 30, first_id=1000)
    link.idle(12)
    delivered = {e.object_id for e in link.of(ObjectReceived)}
    # objects sealed after the restarted receiver had the key all arrive
    assert len(delivered & set(later)) >= len(later) - 4
    assert not link.of(BlockLost)  # a late joiner does not report what it never could see
    assert link.receiver.counters.dropped_by_reason.get("internal_error", 0) == 0


def test_receiver_starting_with_held_blocks_opens_them_when_key_arrives(keys):
    rng = random.Random(10)
    ch = Channel(rng)
    link = Link(keys, ch)
    # the initial announcements are lost: blocks wait for the next one
    link.sender.datagrams_to_send(link.now)
    for i in range(5):
        link.submit(i, rng.randbytes(3000))
    link.step(0.1)
    assert link.receiver.current_epoch is None
    assert link.receiver.pending_sizes()["blocks"] > 0
    link.idle(1.5)
    assert {e.object_id for e in link.of(ObjectReceived)} == set(range(5))


def test_sender_restart_new_epoch_recovers(keys):
    rng = random.Random(11)
    link = Link(keys, Channel(rng))
    run_objects(link, rng, 20)
    old_epoch = link.sender.epoch
    link.now += 5
    link.sender = link.new_sender()  # epoch = int(wall): newer
    assert link.sender.epoch > old_epoch
    later = run_objects(link, rng, 20, first_id=2000)
    link.idle(12)
    assert link.receiver.current_epoch == link.sender.epoch
    acc = link.account()
    assert set(later) <= acc["delivered"]


def test_link_down_and_up(keys):
    rng = random.Random(12)
    link = Link(keys, Channel(rng))
    link.idle(2)
    assert link.of(LinkUp)
    link.channel.control_loss = 1.0
    link.idle(7)
    assert link.of(LinkDown)
    link.channel.control_loss = 0.0
    link.idle(2)
    assert isinstance([e for e in link.events if isinstance(e, (LinkUp, LinkDown))][-1], LinkUp)


def test_policy_hash_change_is_announced_under_the_same_key(keys):
    rng = random.Random(13)
    link = Link(keys, Channel(rng))
    link.step()
    link.sender.set_policy_hash(b"\x07" * 32, link.now)
    link.step()
    accepted = link.of(KeyAccepted)
    assert [e.policy_hash for e in accepted] == [bytes(range(32)), b"\x07" * 32]
    assert len({e.epoch for e in accepted}) == 1


def test_gro_batch_of_segments(keys):
    rng = random.Random(14)
    link = Link(keys, Channel(rng))
    link.step()
    s, r = link.sender, link.receiver
    payload = rng.randbytes(60_000)
    s.submit(77, payload, link.now)
    s.flush(link.now)
    ds = [d for d in s.datagrams_to_send(link.now) if block_of(d)]
    size = len(ds[0])
    batch = bytearray(b"".join(ds))  # the last block's symbols are shorter: last segment shorter
    same = [d for d in ds if len(d) == size]
    r.receive_segments(memoryview(batch)[: size * len(same)], size, link.now, link.wall)
    for d in ds[len(same):]:
        r.receive_datagram(memoryview(bytearray(d)), link.now, link.wall)
    batch[:] = bytes(len(batch))  # the caller reuses its buffer: nothing may refer to it
    link.idle(1)
    got = [e.payload for e in link.of(ObjectReceived) if e.object_id == 77]
    assert got == [payload]
