"""Key epochs of the receiver: announcements accepted, the epoch table, overlap and retirement.

An announcement is checked cheapest first (a repeat of known bytes; decoding; key IDs; epoch
order; a rate-limited SM2 signature check; validity against the wall clock; the SM2 envelope).
An accepted epoch becomes current; the one before stays usable for KEY_OVERLAP (monotonic),
and no epoch outlives its not_after (+ CLOCK_SKEW): checked on the wall clock when the
announcement is accepted, then kept as a monotonic deadline so that a wall-clock step does
not retire a key (nor keep one).

Rotation and continuation: a new epoch of the sender run the receiver follows carries on its
block numbers (one lineage). The next epoch (+1) with a first_block not below the current one's
is a rotation. An epoch further on is a continuation when every announcement of the epochs
between was lost (a link cut spanning rotations, or a clock step's jump in epoch numbers): same
sender, its first_block above the previous epoch's first block and not below what that epoch
proved sent or opened. The previous epoch (the newest accepted, even if it retired meanwhile)
then knows that every block below the new first_block was sent: those it never opened are
reported lost (receiver.py), so a cut across rotations leaves no block unaccounted.

An epoch whose announcement was verified but refused for its validity (`not_yet_valid`,
`expired`: the sender's clock was wrong when it began) is remembered (the newest one): it is
the sender's, and its blocks were sent. When a later epoch of the same sender is accepted (the
sender's clock was corrected and it rotated, sender.py), that refused epoch is its predecessor:
if it continued the epoch before it, so does the new one; if it began a new run (a sender
restarted with a wrong clock), the new epoch continues that run's block numbers, and the blocks
from the refused epoch's first block up to the new first block, which no key ever opened, are
reported lost in the refused epoch's name (`Accepted.unkeyed`). A sender
that restarted begins again at block 0: a new lineage. (A restarted sender whose first epoch was
lost entirely and which had sent more blocks than the previous run when the link came back
cannot be told from a continuation: its blocks are then reported in the previous run's
lineage, and its first epoch's blocks are not accounted, as before.)
"""

from __future__ import annotations

from dataclasses import dataclass

from ferry.reasons import Reason
from ferry import limits
from ferry.crypto import CryptoError, SM2PrivateKey, SM2PublicKey, SM4GCM
from ferry.wire.announce import Announcement, parse_announcement
from ferry.wire.bounded import Recent, TokenBucket
from ferry.wire.errors import WireError
from ferry.wire.loss import Ledger
from ferry.wire.replay import ReplayWindow
from ferry.wire.symtag import SymbolAuth
from ferry.wire.report import Report

KEY_SIZE = 16  # SM4


class Epoch:
    """Receiver state of one accepted key epoch."""

    __slots__ = (
        "epoch", "key", "aead", "auth", "envelope", "announcements", "policy_hash", "sender", "not_before",
        "not_after", "first_block", "lineage", "replay", "ledger", "expires", "retire_at", "hb_seq",
    )

    def __init__(self, a: Announcement, key: bytes, lineage: int, start: int | None, expires: float) -> None:
        self.epoch = a.epoch
        self.key = key
        self.aead = SM4GCM(key)
        self.auth = SymbolAuth(key)  # symbol authenticators (symtag.py)
        self.envelope = a.envelope
        self.announcements: list[bytes] = []
        self.policy_hash = a.policy_hash
        self.sender = a.sender
        self.not_before = a.not_before  # wall clock (the sender's)
        self.not_after = a.not_after
        self.first_block = a.first_block
        self.lineage = lineage
        self.replay = ReplayWindow()
        self.ledger = Ledger(a.epoch, lineage, a.first_block, self.replay, start)
        self.expires = expires  # monotonic: not_after + CLOCK_SKEW on our clock
        self.retire_at: float | None = None  # monotonic: end of the overlap after a newer epoch
        self.hb_seq = -1

    def retire_due(self, now: float) -> bool:
        return (self.retire_at is not None and now >= self.retire_at) or now > self.expires


@dataclass(frozen=True, slots=True)
class Accepted:
    """An announcement accepted: its epoch, whether the epoch is new (else refreshed: a new
    policy hash), and on a rotation the epoch it continues (whose blocks below first_block are
    now proven sent)."""

    epoch: Epoch
    announcement: Announcement
    new: bool
    rotated_from: Epoch | None
    # blocks [first, end) of an epoch this receiver never keyed (refused for its validity), which
    # the new epoch continues: (epoch, lineage, first, end); they were sent and cannot be opened
    unkeyed: tuple[int, int, int, int] | None = None


class KeyEpochs:
    """The epoch table: which keys open blocks and heartbeats now."""

    __slots__ = (
        "_inner_key", "_outer_public", "_inner_key_id", "_outer_key_id", "_report", "_verify",
        "epochs", "current", "newest", "_ever_keyed", "floor", "resumed", "_old_refused", "_final", "_unkeyed",
    )

    def __init__(self, inner_key: SM2PrivateKey, outer_public: SM2PublicKey, report: Report, now: float) -> None:
        self._inner_key = inner_key
        self._outer_public = outer_public
        self._inner_key_id = inner_key.public_key().key_id()
        self._outer_key_id = outer_public.key_id()
        self._report = report
        self._verify = TokenBucket(limits.ANNOUNCE_VERIFY_RATE, now)
        self.epochs: dict[int, Epoch] = {}
        self.current: Epoch | None = None
        self.newest: Epoch | None = None  # the newest epoch accepted, kept after it retires (continuation)
        self._unkeyed: Announcement | None = None  # the newest verified announcement refused for its validity
        self._ever_keyed = False
        self.floor = -1  # the newest epoch ever accepted (kept across restarts: resume.py)
        self.resumed: dict[int, int] = {}  # epoch -> highest block opened before a restart
        self._old_refused: Recent[int, None] = Recent(limits.REFUSED_RECENT_MAX)
        # signed announcements refused for good (expired, envelope, epoch changed): a repeat
        # (a replayed capture) is counted, not checked or recorded again
        self._final: Recent[bytes, None] = Recent(limits.REFUSED_RECENT_MAX)

    def accept(self, data: bytes | memoryview, now: float, wall: float) -> Accepted | None:
        """Check an announcement datagram; None if it was a repeat, dropped or refused."""
        report = self._report
        raw = bytes(data)
        for known in self.epochs.values():  # cheap check first: a repeat of a known announcement
            if raw in known.announcements:
                report.counters.announcements_repeated += 1
                return None
        if raw in self._final:
            report.counters.announcements_refused += 1
            return None
        try:
            a = parse_announcement(raw)
        except WireError:
            report.drop(Reason.BAD_ANNOUNCEMENT, now)
            return None
        if a.outer_key_id != self._outer_key_id:
            report.refuse_announcement(Reason.WRONG_OUTER_KEY, a.epoch, now)
            return None
        if a.inner_key_id != self._inner_key_id:
            report.refuse_announcement(Reason.WRONG_INNER_KEY, a.epoch, now)
            return None
        cur = self.current
        if (cur is not None and a.epoch < cur.epoch) or a.epoch < self.floor:
            if a.epoch in self._old_refused:  # a replay repeats its announcement: refused, recorded once
                report.counters.announcements_refused += 1
            else:
                self._old_refused.put(a.epoch, None)
                report.refuse_announcement(Reason.OLD_EPOCH, a.epoch, now)
            return None
        if not self._verify.take(now):
            report.drop(Reason.ANNOUNCEMENT_RATE_LIMITED, now)
            return None
        try:
            self._outer_public.verify(a.body_bytes, a.signature)
        except CryptoError:
            report.refuse_announcement(Reason.BAD_SIGNATURE, a.epoch, now)
            return None
        if wall < a.not_before - limits.CLOCK_SKEW:
            self._note_unkeyed(a)
            report.refuse_announcement(Reason.NOT_YET_VALID, a.epoch, now)
            return None
        if wall > a.not_after + limits.CLOCK_SKEW:
            self._note_unkeyed(a)
            self._refuse_for_good(raw, Reason.EXPIRED, a.epoch, now)
            return None
        expires = now + (a.not_after + limits.CLOCK_SKEW - wall)
        ep = self.epochs.get(a.epoch)
        if ep is not None and a.envelope == ep.envelope:
            key = ep.key
        else:
            try:
                key = self._inner_key.decrypt(a.envelope)
            except CryptoError:
                self._refuse_for_good(raw, Reason.ENVELOPE, a.epoch, now)
                return None
            if len(key) != KEY_SIZE:
                self._refuse_for_good(raw, Reason.ENVELOPE, a.epoch, now)
                return None
        rotated_from = None
        new = ep is None
        if ep is not None:
            if key != ep.key or a.first_block != ep.first_block:
                self._refuse_for_good(raw, Reason.EPOCH_CHANGED, a.epoch, now)
                return None
            ep.policy_hash, ep.sender = a.policy_hash, a.sender
            ep.not_before, ep.not_after, ep.expires = a.not_before, a.not_after, expires
        else:
            ep, rotated_from, unkeyed = self._new_epoch(a, key, now, expires)
        ep.announcements.append(raw)
        del ep.announcements[: -limits.ANNOUNCEMENTS_KEPT]
        report.counters.announcements_accepted += 1
        return Accepted(ep, a, new, rotated_from, unkeyed if new else None)

    def _note_unkeyed(self, a: Announcement) -> None:
        """A verified announcement refused for its validity: its epoch existed (module docstring).
        Only above an epoch floor (a receiver keyed before, or with a stored state): a fresh
        receiver could be shown an old capture, expired, that names blocks of a run long gone."""
        u = self._unkeyed
        if 0 <= self.floor < a.epoch and (u is None or a.epoch >= u.epoch):
            self._unkeyed = a

    def _refuse_for_good(self, raw: bytes, reason: Reason, epoch: int, now: float) -> None:
        self._final.put(raw, None)
        self._report.refuse_announcement(reason, epoch, now)

    def _new_epoch(self, a: Announcement, key: bytes, now: float,
                   expires: float) -> tuple[Epoch, Epoch | None, tuple[int, int, int, int] | None]:
        cur = self.current
        rotated_from = None
        unkeyed = None
        prev = self.newest
        u = self._unkeyed
        if u is not None and not (u.epoch < a.epoch and (prev is None or u.epoch > prev.epoch)
                                  and u.sender == a.sender and u.first_block <= a.first_block):
            u = None  # not this epoch's predecessor
        if u is not None and (prev is None or not self._continues(prev, u)):
            # the predecessor began a run this receiver never keyed: the new epoch continues it
            ep = Epoch(a, key, u.epoch, a.first_block, expires)
            if a.first_block > u.first_block:
                unkeyed = (u.epoch, u.epoch, u.first_block, a.first_block)
        elif prev is not None and self._continues(prev, a if u is None else u):
            ep = Epoch(a, key, prev.lineage, a.first_block, expires)  # rotation: block numbers continue
            rotated_from = prev
        elif a.epoch in self.resumed:  # the epoch this receiver ran before a restart: go on from there
            opened = self.resumed.pop(a.epoch)
            ep = Epoch(a, key, a.epoch, max(opened + 1, a.first_block), expires)
            ep.replay.close_through(opened)
        else:
            ep = Epoch(a, key, a.epoch, a.first_block if self._ever_keyed else None, expires)
        self.floor = max(self.floor, a.epoch)
        if cur is not None:
            cur.retire_at = now + limits.KEY_OVERLAP
        self.epochs[a.epoch] = ep
        self.current = self.newest = ep
        self._ever_keyed = True
        if self._unkeyed is not None and self._unkeyed.epoch <= a.epoch:
            self._unkeyed = None
        return ep, rotated_from, unkeyed

    @staticmethod
    def _continues(prev: Epoch, a: Announcement) -> bool:
        """True if the announced epoch carries on the block numbers of `prev` (module docstring):
        the next epoch (a rotation), or one further on whose predecessors were never heard of."""
        if a.epoch == prev.epoch + 1 and a.first_block >= prev.first_block:
            return True
        return (a.epoch > prev.epoch + 1 and a.sender == prev.sender and a.first_block > prev.first_block
                and a.first_block >= prev.ledger.frontier and a.first_block > prev.replay.last)

    def retire(self, ep: Epoch) -> None:
        """Forget an epoch; the newest left becomes current if it was."""
        del self.epochs[ep.epoch]
        if self.current is ep:
            self.current = None if not self.epochs else self.epochs[max(self.epochs)]

    def next_timer(self) -> float | None:
        times = [ep.expires for ep in self.epochs.values()]
        times += [ep.retire_at for ep in self.epochs.values() if ep.retire_at is not None]
        return min(times) if times else None
