"""The files lane: whole files from the outer spool to the inner spool.

Pure. Outer side: ``SpoolSettle`` says when a spool entry is complete; ``OuterFilesLane.take``
turns one settled entry (what the agent saw and read) into work: a refusal (record + move
the entry aside) or the object to seal with its ``object_sent`` record. Inner side:
``check_file_object`` re-checks an object against its own content and ``inner_write`` says
what to write and what to record. The media type comes from the bytes
(``ferry.codecs.media_type``), names are checked by ``ferry.codecs.file_name``. Both sides
apply ``content_refusal`` to what the policy allows: the name's extension must agree with the
detected type, and a PNG, JPEG, GIF, ZIP or PDF must end where its format ends
(``ferry.codecs.format_end``)."""

from __future__ import annotations

from collections.abc import Container, Iterator
from dataclasses import dataclass
from typing import Any

from ferry import limits
from ferry.codecs.file_name import check_file_name, output_name_candidates
from ferry.codecs.format_end import FormatError, format_end
from ferry.codecs.media_type import MEDIA_TYPES, extension_refusal, sniff_media_type
from ferry.crypto import sm3
from ferry.lanes import cdr
from ferry.lanes.work import AuditIntent, ObjectIds, SealObject
from ferry.pb import ferry_pb2
from ferry.policy.models import FilesRule
from ferry.policy.plan import Decision, Plan
from ferry.reasons import Reason
from ferry.policy.ratelimit import RateLimiter

__all__ = [
    "BUILTIN_RULE", "LANE", "MEDIA_TYPES", "MoveAside", "OuterFilesLane", "PARTIAL_SUFFIXES", "SpoolFile",
    "SpoolSettle", "SpoolStat", "SpoolWaiting", "WriteFile", "spool_candidate", "spool_waiting",
    "check_file_name", "check_file_object", "content_refusal", "inner_write", "make_file_object",
    "output_name_candidates",
    "sniff_media_type",
]

LANE = "files"
BUILTIN_RULE = "ferry-files-lane"     # refusals by the lane's hard rules, before the policy


# --- canonical objects --------------------------------------------------------

def make_file_object(
    *,
    object_id: int,
    name: str,
    content: bytes,
    source: str,
    destination: str,
    now: float,
) -> ferry_pb2.CanonicalObject:
    """Build the canonical object for one spool file (outer side)."""
    obj = ferry_pb2.CanonicalObject(
        object_id=object_id,
        lane=LANE,
        source=ferry_pb2.Source(name=source),
        destination=destination,
        created=now,
        file=ferry_pb2.FileObject(
            name=name,
            size=len(content),
            media_type=sniff_media_type(content),
            sm3=sm3(content),
            content=content,
        ),
    )
    return obj


def check_file_object(obj: ferry_pb2.CanonicalObject) -> str | None:
    """Return why ``obj`` is not a consistent files-lane object, or None (inner side).

    Checks what the policy takes on trust: the name rules, the declared size
    and SM3 against the content, and the declared media type against the
    content sniffed again.
    """
    if obj.lane != LANE:
        return f"lane {obj.lane!r} is not {LANE!r}"
    if obj.WhichOneof("body") != "file":
        return "object has no file body"
    f = obj.file
    reason = check_file_name(f.name)
    if reason is not None:
        return reason
    length = len(f.content)
    if length > limits.FILE_MAX or f.size > limits.FILE_MAX:
        return f"size {max(length, f.size)} exceeds FILE_MAX {limits.FILE_MAX}"
    if f.size != length:
        return f"declared size {f.size} but content is {length} bytes"
    if f.sm3 != sm3(f.content):
        return "sm3 does not match content"
    sniffed = sniff_media_type(f.content)
    if f.media_type != sniffed:
        return f"declared media type {f.media_type} but content is {sniffed}"
    return None


def content_refusal(name: str, content: bytes, media_type: str) -> Decision | None:
    """Why the lane refuses a file the policy allowed, by its content, or None (both sides).

    The name's extension must not claim another type than ``media_type`` (detected from the
    content); a PNG, JPEG, GIF, ZIP or PDF must walk to its format's end, and end there. An
    empty file is the policy's to decide (``allow_empty``)."""
    if not content:
        return None
    bad = extension_refusal(name, media_type)
    if bad is not None:
        return Decision(False, BUILTIN_RULE, bad, Reason.EXTENSION_MISMATCH)
    try:
        end = format_end(content, media_type)
    except FormatError as e:
        return Decision(False, BUILTIN_RULE, f"content does not reach its end as {media_type}: {e}",
                        Reason.MALFORMED_CONTENT)
    if end is not None and end < len(content):
        return Decision(False, BUILTIN_RULE, f"{len(content) - end} bytes after the end of the {media_type} "
                        f"(which ends at byte {end} of {len(content)})", Reason.TRAILING_DATA)
    return None


# --- outer side: when a spool entry is complete ---------------------------------------

# Names a writer uses while a file is still being written: never picked up.
PARTIAL_SUFFIXES = (".part", ".tmp", ".partial", ".crdownload", ".filepart")


def spool_candidate(name: str) -> bool:
    """Not a partial name (``.part``, ``.tmp``...) nor a hidden one (writers that upload under a
    dot-name and rename on completion are picked up at the rename)."""
    return not name.startswith(".") and not name.endswith(PARTIAL_SUFFIXES)


@dataclass(frozen=True, slots=True)
class SpoolStat:
    """What a look at a spool entry saw (``lstat`` of its name or ``fstat`` of the open file): the
    same file, unchanged, as long as all of these are equal. ``ctime`` moves on any write, even one
    that sets ``mtime`` back."""

    size: int
    mtime_ns: int
    ctime_ns: int
    mode: int
    ino: int
    dev: int

    def change(self, later: SpoolStat) -> str | None:
        """What differs in ``later`` (a later look at the same name or open file), or None."""
        if (self.ino, self.dev) != (later.ino, later.dev):
            return "replaced by another file"
        if self.mode != later.mode:
            return f"mode {self.mode:o} -> {later.mode:o}"
        if self.size != later.size:
            return f"size {self.size} -> {later.size} bytes"
        if self.mtime_ns != later.mtime_ns:
            return "modified"
        if self.ctime_ns != later.ctime_ns:
            return "changed (ctime)"
        return None


@dataclass(slots=True)
class _Settling:
    sig: object         # the signature last seen (a SpoolStat in the agent)
    since: float        # monotonic: when it was first seen so
    quiet: float        # how long it must stay so
    busy: int = 0       # times it was found still being written after it had settled


class SpoolSettle:
    """A spool entry is complete when its signature (a ``SpoolStat``: size, mtime, ctime, mode,
    inode, device) is unchanged over two scans at least ``settle`` seconds (monotonic) apart.

    A settled file the agent then finds still being written (``busy``: changed while it was read or
    before it was sealed, or open for writing) settles again, and must stay unchanged longer each
    time: ``max(settle, busy_min)``, doubling, at most ``max(settle, busy_max)``. A file that never
    stops changing is looked at no more often than that, never read in a loop."""

    def __init__(self, settle: float, busy_min: float = limits.SPOOL_BUSY_WAIT_MIN,
                 busy_max: float = limits.SPOOL_BUSY_WAIT_MAX) -> None:
        self.settle = settle
        self.busy_min = busy_min
        self.busy_max = busy_max
        self._seen: dict[str, _Settling] = {}

    def observe(self, listing: dict[str, Any], now: float) -> list[str]:
        """One scan's candidates, name -> signature; returns the settled names, sorted."""
        ready = []
        for name, sig in listing.items():
            s = self._seen.get(name)
            if s is None:
                self._seen[name] = _Settling(sig, now, self.settle)
            elif s.sig != sig:
                s.sig, s.since = sig, now
            elif now - s.since >= s.quiet:
                ready.append(name)
        for name in [n for n in self._seen if n not in listing]:
            del self._seen[name]
        return sorted(ready)

    def busy(self, name: str, now: float) -> float:
        """``name`` settled but is still being written: it settles again from ``now``, over the
        returned time."""
        s = self._seen.get(name)
        if s is None:
            s = self._seen[name] = _Settling(None, now, self.settle)
        s.busy += 1
        s.since = now
        s.quiet = min(max(self.settle, self.busy_min) * 2.0 ** min(s.busy - 1, 32), max(self.settle, self.busy_max))
        return s.quiet

    def forget(self, name: str) -> None:
        self._seen.pop(name, None)

    def __len__(self) -> int:
        return len(self._seen)


class SpoolWaiting:
    """Which spool names to record as waiting (``spool_waiting``): each once per agent run.

    At most ``cap`` names are remembered. When that many are, the names no longer in the spool
    are forgotten (one that comes back is recorded again); while it is still full, a new name is
    not recorded, only counted in ``unrecorded``."""

    def __init__(self, cap: int = limits.SPOOL_WAITING_NAMES) -> None:
        self.cap = cap
        self.unrecorded = 0
        self._recorded: set[str] = set()

    def first(self, name: str, present: Container[str]) -> bool:
        """True the first time ``name`` is seen waiting; ``present``: the names in the spool now."""
        if name in self._recorded:
            return False
        if len(self._recorded) >= self.cap:
            self._recorded = {n for n in self._recorded if n in present}
            if len(self._recorded) >= self.cap:
                self.unrecorded += 1
                return False
        self._recorded.add(name)
        return True

    def __len__(self) -> int:
        return len(self._recorded)


def spool_waiting(*, source: str, address: str, name: str, code: Reason, reason: str) -> AuditIntent:
    """The record of a spool entry left waiting: not taken yet, not refused (verdict ``info``)."""
    return AuditIntent({"event": "spool_waiting", "verdict": "info", "lane": LANE,
                        "source": {"name": source, "address": address}, "code": code.value, "reason": reason,
                        "detail": {"name": name}})


# --- outer side: one settled spool entry -> work ----------------------------------

@dataclass(frozen=True, slots=True)
class SpoolFile:
    """A settled spool entry as the agent found it. The agent reads ``content`` only for a
    regular file (``kind == "file"``); None with no ``read_error`` means larger than FILE_MAX."""

    name: str
    address: str                  # where it lies (its spool path), for the record
    kind: str                     # "file", "symlink", "directory", "fifo", "device", "socket", "other"
    size: int                     # as the scan saw it
    content: bytes | None = None
    read_error: str | None = None


@dataclass(frozen=True, slots=True)
class MoveAside:
    """Outer side: move a refused spool entry into the refused folder."""

    address: str


_Work = AuditIntent | MoveAside | SealObject


class OuterFilesLane:
    """The outer files pipeline: builtin checks, canonical object, the policy's decision
    (rate limits included), and the records. Object IDs come from the agent's run."""

    def __init__(self, *, source: str, destination: str, ids: ObjectIds) -> None:
        self.source = source
        self.destination = destination
        self.ids = ids
        self._limiter: RateLimiter | None = None

    def rate_limiter(self, plan: Plan) -> RateLimiter:
        """Per-source token buckets of the rules of ``plan`` (new buckets after a reload)."""
        if self._limiter is None or self._limiter.plan is not plan:
            self._limiter = RateLimiter(plan)
        return self._limiter

    def take(self, entry: SpoolFile, plan: Plan, now: float, wall: float) -> list[AuditIntent | MoveAside | SealObject]:
        """``plan`` is read once by the agent: a reload between two objects never splits one.
        Every entry gets an object ID, also one the builtin rule refuses: reconcile counts it."""
        oid = self.ids.next()
        builtin = self._builtin_refusal(entry)
        if builtin is not None:
            return self._refuse(entry, entry.size, builtin, None, {"object_id": oid})
        assert entry.content is not None
        obj = make_file_object(object_id=oid, name=entry.name, content=entry.content, source=self.source,
                               destination=self.destination, now=wall)
        decision = self._decide(plan, obj)
        disarmed = self._disarm(entry, obj, decision, plan) if decision.allowed else None
        if isinstance(disarmed, list):
            return disarmed
        if disarmed is not None:
            obj, decision = disarmed[0], self._decide(plan, disarmed[0])   # the re-encoded picture, decided again
        f = obj.file
        decision = self.rate_limiter(plan).check(decision, obj, now)   # a refused file takes no token
        known = {"object_id": oid, "sm3": f.sm3.hex(), "policy_hash": plan.hash.hex()}
        extra = disarmed[1] if disarmed is not None else None
        if not decision.allowed:
            return self._refuse(entry, len(entry.content), decision, f.media_type, known, extra)
        obj.rule = decision.rule
        sent = self._record(entry, f.size, "object_sent", "sent", decision, f.media_type, known, extra)
        return [SealObject(obj, sent=sent)]

    @staticmethod
    def _decide(plan: Plan, obj: ferry_pb2.CanonicalObject) -> Decision:
        """The policy's decision, then (if allowed) the content checks."""
        decision = plan.decide(obj)
        if decision.allowed:
            f = obj.file
            decision = content_refusal(f.name, f.content, f.media_type) or decision
        return decision

    def _disarm(self, entry: SpoolFile, obj: ferry_pb2.CanonicalObject, decision: Decision, plan: Plan
                ) -> tuple[ferry_pb2.CanonicalObject, dict[str, Any]] | list[_Work] | None:
        """Under a ``reencode_images`` rule, a picture's object rebuilt from its re-encoded bytes
        (with the record's detail), or the refusal; None where nothing is re-encoded."""
        f = obj.file
        if f.media_type not in cdr.FORMATS or not reencodes_images(plan, decision.rule):
            return None
        original = {"original_size": f.size, "original_sm3": f.sm3.hex()}
        done = cdr.reencode(f.content, f.media_type)
        if isinstance(done, cdr.ImageRefusal):
            known = {"object_id": obj.object_id, "sm3": f.sm3.hex(), "policy_hash": plan.hash.hex()}
            return self._refuse(entry, f.size, Decision(False, decision.rule, done.reason, done.code), f.media_type,
                                known)
        rebuilt = make_file_object(object_id=obj.object_id, name=f.name, content=done.data, source=obj.source.name,
                                   destination=obj.destination, now=obj.created)
        return rebuilt, {"reencoded": {**original, "image": done.describe()}}

    @staticmethod
    def _builtin_refusal(entry: SpoolFile) -> Decision | None:
        """The lane's hard rules on the entry, before its content is looked at."""
        if entry.kind != "file":
            return Decision(False, BUILTIN_RULE, f"not a regular file ({entry.kind})", Reason.NOT_REGULAR_FILE)
        bad = check_file_name(entry.name)
        if bad:
            return Decision(False, BUILTIN_RULE, bad, Reason.BAD_FILE_NAME)
        if entry.read_error is not None:
            return Decision(False, BUILTIN_RULE, f"cannot read: {entry.read_error}", Reason.UNREADABLE)
        if entry.content is None or len(entry.content) > limits.FILE_MAX:
            return Decision(False, BUILTIN_RULE, f"size {entry.size} exceeds the appliance limit {limits.FILE_MAX}",
                            Reason.FILE_TOO_LARGE)
        return None

    def _record(self, entry: SpoolFile, size: int, event: str, verdict: str, decision: Decision,
                media_type: str | None, known: dict[str, Any], extra: dict[str, Any] | None = None) -> dict[str, Any]:
        return {"event": event, "verdict": verdict, "lane": LANE,
                "source": {"name": self.source, "address": entry.address}, "destination": self.destination,
                "object_type": "file", "size": size, "rule": decision.rule, "reason": decision.reason,
                "detail": {"name": entry.name, "media_type": media_type, **(extra or {})},
                **({"code": decision.code} if decision.code else {}), **known}

    def _refuse(self, entry: SpoolFile, size: int, decision: Decision, media_type: str | None = None,
                known: dict[str, Any] | None = None, extra: dict[str, Any] | None = None
                ) -> list[AuditIntent | MoveAside | SealObject]:
        fields = self._record(entry, size, "object_refused", "refused", decision, media_type, known or {}, extra)
        return [AuditIntent(fields), MoveAside(entry.address)]


# --- inner side: an allowed object -> what to write ------------------------------

@dataclass(frozen=True, slots=True)
class WriteFile:
    """Inner side: write ``content`` atomically under the first free of ``candidates()``;
    then record ``delivered`` (its detail gets ``written_as``), or on an I/O error
    ``lost`` (its reason gets the error)."""

    name: str
    content: bytes
    delivered: dict[str, Any]
    lost: dict[str, Any]
    created: float = 0.0  # the object's (for the replay window: lanes/delivered.py)

    def candidates(self) -> Iterator[str]:
        return output_name_candidates(self.name)

    def written(self, written_as: str) -> AuditIntent:
        detail = {**self.delivered["detail"], "written_as": written_as}
        return AuditIntent({**self.delivered, "detail": detail})

    def failed(self, error: str) -> AuditIntent:
        return AuditIntent({**self.lost, "reason": f"cannot write output: {error}", "code": Reason.OUTPUT_FAILED})


def reencodes_images(plan: Plan, rule_id: str) -> bool:
    """Whether the files rule ``rule_id`` of ``plan`` says ``reencode_images: true``."""
    rule = plan.rule(rule_id)
    if rule is None or rule.lane != LANE:
        return False
    spec = plan.policy.rules[rule.index]
    return isinstance(spec, FilesRule) and spec.files.reencode_images


def inner_write(obj: ferry_pb2.CanonicalObject, decision: Decision, epoch: int,
                blocks: tuple[int, ...], plan: Plan | None = None) -> WriteFile | Decision:
    """The write of an allowed files-lane object, or the lane's refusal: the object is not
    consistent with itself (``inconsistent_file``), its content fails ``content_refusal``, or
    it is a picture its rule wants re-encoded that is not as re-encoded (``plan``)."""
    bad = check_file_object(obj)
    if bad:
        return Decision(False, BUILTIN_RULE, bad, Reason.INCONSISTENT_FILE)
    f = obj.file
    refusal = content_refusal(f.name, f.content, f.media_type)
    if refusal is not None:
        return refusal
    image: dict[str, Any] = {}
    if plan is not None and f.media_type in cdr.FORMATS and reencodes_images(plan, decision.rule):
        checked = cdr.check_reencoded(f.content, f.media_type)
        if isinstance(checked, cdr.ImageRefusal):
            return Decision(False, decision.rule, checked.reason, checked.code)
        image = {"image_checked": checked.describe()}
    ids = {"lane": LANE, "object_id": obj.object_id, "epoch": epoch, "blocks": list(blocks)}
    delivered = {"event": "object_delivered", "verdict": "delivered", **ids, "rule": decision.rule,
                 "reason": decision.reason, "source": {"name": obj.source.name, "address": obj.source.address},
                 "destination": obj.destination, "object_type": "file", "size": f.size, "sm3": f.sm3.hex(),
                 "detail": {"name": f.name, "media_type": f.media_type, **image}}
    lost = {"event": "object_lost", "verdict": "lost", **ids, "object_type": "file", "size": f.size}
    return WriteFile(f.name, f.content, delivered, lost, obj.created)
