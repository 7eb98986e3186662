"""A link cut spanning key rotations (issue 14 item 5): every announcement of an epoch is lost, the
next epoch heard of is not the +1 of the receiver's current one. It continues the same block
numbers (same sender, first_block beyond what the receiver saw): the blocks never opened below its
first block are reported lost, so nothing the sender sealed is left unaccounted."""

from __future__ import annotations

import random

import pytest

from ferry import limits

from ferry.wire.events import BlockLost, HeartbeatReceived, KeyAccepted, KeyRotated, ObjectLost, ObjectReceived
from .wire_helpers import announcement
from .wire_sim import Channel, Link

LIFETIME = 10.0


class CutChannel(Channel):
    """A channel that drops everything while `cut` is set."""

    cut = False

    def __call__(self, datagrams: list[bytes]) -> list[bytes]:
        return [] if self.cut else super().__call__(datagrams)


def run_cut(keys, cut_s: float, *, load: bool = True, seed: int = 1, before: float = 3.0) -> Link:
    ch = CutChannel(random.Random(seed))
    link = Link(keys, ch, key_lifetime=LIFETIME)
    oid = 1

    def feed(seconds: float) -> None:
        nonlocal oid
        end = link.now + seconds
        while link.now < end:
            if load:
                link.submit(oid, bytes([oid % 251]) * 3000)
                oid += 1
            link.idle(0.5)

    feed(before)
    ch.cut = True
    feed(cut_s)
    ch.cut = False
    feed(3.0)
    link.idle(10.0)                       # grace times (BLOCK_TIMEOUT) and key overlap pass
    return link


def lost_block_numbers(link: Link) -> set[int]:
    """Block numbers named lost (one sender run: block numbers are unique across its epochs)."""
    return {b for e in link.of(BlockLost) for b in range(e.block_no, e.block_no + e.count)}


def check_accounted(link: Link) -> dict:
    delivered = {e.object_id for e in link.of(ObjectReceived)}
    lost_objects = {e.object_id for e in link.of(ObjectLost)}
    lost_blocks = lost_block_numbers(link)
    in_lost = {oid for (_, b), ids in link.sealed.items() if b in lost_blocks for oid in ids}
    assert not delivered & (lost_objects | in_lost), "delivered and lost"
    unaccounted = set(link.sent) - delivered - lost_objects - in_lost
    assert not unaccounted, f"{len(unaccounted)} objects unaccounted"
    sealed = {b for _, b in link.sealed}
    assert lost_blocks <= sealed, "a block reported lost that was never sealed"
    return {"delivered": delivered, "lost": lost_objects | in_lost, "lost_blocks": lost_blocks}


@pytest.mark.parametrize("cut_s", [2.5 * LIFETIME, 4.5 * LIFETIME])
def test_a_cut_across_rotations_leaves_nothing_unaccounted(keys, cut_s):
    link = run_cut(keys, cut_s)
    rotations = [e for e in link.sender_events if isinstance(e, KeyRotated)]
    accepted = [e.epoch for e in link.of(KeyAccepted)]
    missed = [e.epoch for e in rotations if e.epoch not in accepted]
    assert len(missed) >= int(cut_s / LIFETIME) - 1 >= 1, (rotations, accepted)   # whole epochs never heard of
    out = check_accounted(link)
    assert out["delivered"] and out["lost"]
    # the missed epochs' blocks are in the loss records, named in the receiver's last epoch before the cut
    missed_blocks = {b for (e, b) in link.sealed if e in missed}
    assert missed_blocks and missed_blocks <= out["lost_blocks"]
    assert link.receiver.link_up


def test_a_cut_before_the_first_heartbeat_across_rotations_leaves_nothing_unaccounted(keys):
    """The cut begins right after the first blocks, before any heartbeat of the first epoch came (the
    receiver had not decided where its accounting of that epoch starts): the continuation decides
    it (the receiver is as old as the epoch: from its first block) and the gap is reported."""
    link = run_cut(keys, 2.5 * LIFETIME, before=0.5)
    first = link.of(KeyAccepted)[0].epoch
    assert not [e for e in link.of(HeartbeatReceived) if e.epoch == first]
    out = check_accounted(link)
    assert out["lost_blocks"]


def test_an_idle_cut_across_rotations_reports_nothing(keys):
    link = run_cut(keys, 2.5 * LIFETIME, load=False)
    assert not link.of(BlockLost) and not link.of(ObjectLost)
    assert link.receiver.current_epoch == link.sender.epoch


def test_a_cut_longer_than_the_epoch_validity_still_accounts_the_gap(keys):
    """The epoch current before the cut expired (retired) during it: its lineage is continued all
    the same, and the gap reported at once (no block of a retired epoch can open any more)."""
    link = run_cut(keys, LIFETIME + limits.KEY_OVERLAP + limits.CLOCK_SKEW + 20.0)
    first = link.of(KeyAccepted)[0].epoch
    assert first not in link.receiver.key_epochs.epochs                 # retired
    lineages = {ep.lineage for ep in link.receiver.key_epochs.epochs.values()}
    assert lineages == {first}                                          # continued all the same
    out = check_accounted(link)
    assert out["lost_blocks"]


def test_a_restarted_sender_starts_a_new_lineage(keys):
    """A new sender run begins at block 0: not a continuation, even if its epoch is far on."""
    link = run_cut(keys, 0.0)
    r = link.receiver
    prev = r.key_epochs.current
    assert prev is not None and prev.first_block >= 0
    outer, inner = keys
    ann = announcement(outer, inner, epoch=prev.epoch + 5, first_block=0, not_before=link.wall, sender="outer-1")
    r.receive_datagram(ann, link.now, link.wall)
    cur = r.key_epochs.current
    assert cur is not None and cur.epoch == prev.epoch + 5 and cur.lineage != prev.lineage
    assert not [e for e in link.of(BlockLost)]


def test_another_sender_name_is_not_a_continuation(keys):
    link = run_cut(keys, 0.0)
    r = link.receiver
    prev = r.key_epochs.current
    assert prev is not None
    outer, inner = keys
    ann = announcement(outer, inner, epoch=prev.epoch + 5, first_block=prev.ledger.frontier + 100,
                       not_before=link.wall, sender="someone-else")
    r.receive_datagram(ann, link.now, link.wall)
    cur = r.key_epochs.current
    assert cur is not None and cur.lineage != prev.lineage
