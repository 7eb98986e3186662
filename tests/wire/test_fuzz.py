"""Hypothesis: parsers of link bytes raise only WireError; the receiver never raises and stays bounded."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ferry import limits
from ferry.wire import LinkReceiver, LinkSender, WireError
from ferry.wire.announce import parse_announcement
from ferry.wire.block import fragment_header, parse_fragments
from ferry.wire.frame import parse_heartbeat, parse_symbol, parse_symbol_header

PARSERS = [parse_symbol, parse_symbol_header, parse_fragments, parse_announcement, parse_heartbeat]
# the drop reasons the receiver's data path takes from parse_symbol_header's WireError
SYMBOL_DROP_REASONS = {"bad_length", "bad_magic", "bad_header"}
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def only_wire_error(parser, data) -> None:
    try:
        parser(data)
    except WireError:
        pass


@pytest.mark.parametrize("parser", PARSERS, ids=lambda p: p.__name__)
@SETTINGS
@given(data=st.binary(max_size=2000))
def test_parsers_on_arbitrary_bytes(parser, data):
    only_wire_error(parser, data)
    only_wire_error(parser, memoryview(data))


@pytest.mark.parametrize("parser", PARSERS, ids=lambda p: p.__name__)
@SETTINGS
@given(data=st.binary(max_size=400))
def test_parsers_on_prefixed_bytes(parser, data):
    for t in (1, 2, 3):
        only_wire_error(parser, b"\xfeR\x02" + bytes([t]) + data)


@SETTINGS
@given(st.lists(st.tuples(st.integers(0, 2**64 - 1), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1),
                          st.integers(0, 2**32 - 1), st.binary(max_size=40)), max_size=6), st.binary(max_size=30))
def test_fragments_built_from_fields(frags, tail):
    pt = b"".join(fragment_header(o, t, off, n) + d for o, t, off, n, d in frags) + tail
    try:
        out = parse_fragments(pt)
    except WireError:
        return
    for f in out:
        assert f.offset + len(f.data) <= f.total_len <= limits.OBJECT_MAX


@pytest.fixture(scope="module")
def valid_datagrams(keys):
    outer, inner = keys
    s = LinkSender(outer_key=outer, inner_public=inner.public_key(), policy_hash=bytes(32), name="f", now=100.0)
    s.submit(1, b"a" * 5000, 100.0)
    s.submit(2, b"b" * 30000, 100.0)
    s.flush(100.0)
    s.heartbeat(100.0, 100.0)
    return s.datagrams_to_send(100.0)


@SETTINGS
@given(st.data())
def test_symbol_header_fast_parse_agrees_with_parse_symbol(valid_datagrams, data):
    """The data path's parser (one unpack) and the full parser accept and refuse the same bytes."""
    for d in valid_datagrams:
        if d[3] != 1:
            continue
        if data.draw(st.booleans()):
            pos = data.draw(st.integers(0, min(len(d), 40) - 1))
            d = d[:pos] + bytes([d[pos] ^ data.draw(st.integers(1, 255))]) + d[pos + 1 :]
        if data.draw(st.integers(0, 5)) == 0:
            d = d[: data.draw(st.integers(0, len(d)))] if data.draw(st.booleans()) else d + b"\0"
        for view in (d, memoryview(d)):
            try:
                f = parse_symbol_header(view)
            except WireError as e:
                assert e.args[0] in SYMBOL_DROP_REASONS
                with pytest.raises(WireError):
                    parse_symbol(view)
                continue
            h, sym = parse_symbol(view)
            assert f[1:] == (h.epoch, h.block_no, h.index, h.k, h.m, h.flags, h.sealed_len, h.auth)
            assert bytes(sym) == d[32:]


def check_bounded(r: LinkReceiver) -> None:
    sizes = r.pending_sizes()
    assert sizes["blocks"] <= limits.PENDING_BLOCKS_MAX
    assert sizes["block_bytes"] <= limits.PENDING_SYMBOL_BYTES_MAX
    assert sizes["unknown_epoch_blocks"] <= limits.PENDING_UNKNOWN_EPOCH_MAX
    assert sizes["unknown_epoch_bytes"] <= limits.PENDING_UNKNOWN_EPOCH_BYTES_MAX
    assert sizes["objects"] <= limits.PENDING_OBJECTS_MAX
    assert r.counters.dropped_by_reason.get("internal_error", 0) == 0


@SETTINGS
@given(st.lists(st.binary(max_size=1600), max_size=30), st.floats(0, 100))
def test_receiver_on_arbitrary_datagrams(keys, datagrams, dt):
    outer, inner = keys
    r = LinkReceiver(inner_key=inner, outer_public=outer.public_key(), now=100.0, strict=True)
    for d in datagrams:
        r.receive_datagram(d, 100.0, 100.0)
        r.receive_datagram(b"\xfeR\x02\x01" + d, 100.0, 100.0)
    r.receive_segments(b"".join(datagrams), 37, 100.0, 100.0)
    r.handle_timer(100.0 + dt)
    while r.next_event() is not None:
        pass
    check_bounded(r)
    assert r.current_epoch is None  # nothing unauthenticated made a key


@SETTINGS
@given(st.data())
def test_receiver_on_mutated_datagrams(keys, valid_datagrams, data):
    outer, inner = keys
    r = LinkReceiver(inner_key=inner, outer_public=outer.public_key(), now=100.0, strict=True)
    delivered = set()
    for d in valid_datagrams:
        if data.draw(st.booleans()):
            pos = data.draw(st.integers(0, len(d) - 1))
            d = d[:pos] + bytes([d[pos] ^ data.draw(st.integers(1, 255))]) + d[pos + 1 :]
        if data.draw(st.integers(0, 9)) == 0:
            d = d[: data.draw(st.integers(0, len(d)))]
        r.receive_datagram(d, 100.0, 100.0)
    r.handle_timer(130.0)
    while (e := r.next_event()) is not None:
        if type(e).__name__ == "ObjectReceived":
            assert e.payload in (b"a" * 5000, b"b" * 30000)  # nothing forged is ever delivered
            assert e.object_id not in delivered
            delivered.add(e.object_id)
    check_bounded(r)


def test_receiver_flood_of_distinct_blocks_stays_bounded(keys):
    outer, inner = keys
    r = LinkReceiver(inner_key=inner, outer_public=outer.public_key(), now=0.0, strict=True)
    head = bytearray(b"\xfeR\x02\x01" + bytes(28))
    sym = bytes(1448)
    for i in range(5000):
        head[4:8] = (1 + i % 7).to_bytes(4, "big")
        head[8:16] = i.to_bytes(8, "big")
        head[17], head[18], head[20:24] = 16, 4, (23168).to_bytes(4, "big")
        r.receive_datagram(bytes(head) + sym, 0.0, 1e9)
    check_bounded(r)
    assert r.counters.dropped_by_reason["pending_full"] > 0
    events = []
    while (e := r.next_event()) is not None:
        events.append(e)
    assert len(events) < 10  # aggregated, not one per datagram
    r.handle_timer(10.0)
    assert r.pending_sizes()["blocks"] == 0


BLOCK_NUMBERS = st.one_of(st.integers(0, 10_000), st.integers(0, 2**62), st.sampled_from([10**6, 2**40, 2**62]))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(["block", "heartbeat"]), BLOCK_NUMBERS, st.floats(0, 5)),
                min_size=1, max_size=8),
       st.booleans())
@example([("block", 20_000, 0.0), ("block", 20_001, 0.0)], True)  # an inner restart after 20,000 blocks
@example([("block", 10**6, 0.0)], False)
@example([("heartbeat", 2**40, 0.0)], False)
@example([("block", 17, 0.0)], False)            # a short gap: one record (found by CI when it was one per block)
def test_receiver_on_authenticated_huge_block_numbers(keys, steps, restarted):
    """Issue 15: authenticated blocks and heartbeats with any block number (a receiver keyed from
    the start, or restarted mid-epoch): the work and the loss records stay bounded; no block is
    reported lost twice."""
    outer, inner = keys
    now = 100.0
    s = LinkSender(outer_key=outer, inner_public=inner.public_key(), policy_hash=bytes(32), name="f", now=now,
                   wall=now)
    if restarted:
        now += 10.0
    r = LinkReceiver(inner_key=inner, outer_public=outer.public_key(), now=now, strict=True)
    if not restarted:
        s.heartbeat(now, now)
    lost: list[tuple[int, int]] = []

    def pump() -> None:
        for d in s.datagrams_to_send(now):
            r.receive_datagram(d, now, now)
        r.handle_timer(now)
        while (e := r.next_event()) is not None:
            if type(e).__name__ == "BlockLost":
                lost.append((e.block_no, e.block_no + getattr(e, "count", 1)))

    pump()
    for i, (kind, n, dt) in enumerate(steps):
        s._next_block = max(n, s._next_block)
        if kind == "block":
            s.submit(i, b"z" * 100, now)
            s.flush(now)
        else:
            s.heartbeat(now, now)
        pump()
        now += dt
        for _ in range(3):  # the timers the receiver asks for
            now += limits.BLOCK_TIMEOUT
            pump()
        check_bounded(r)
        # records per step stay bounded whatever the numbers: one record per gap (issue 10 item 4),
        # and a step (a block or a heartbeat) makes at most one new gap and ends at most one open
        # at the frontier (reported in parts while only heartbeats prove it)
        assert len(lost) <= 2 * (i + 2)
    lost.sort()
    assert all(a[1] <= b[0] for a, b in zip(lost, lost[1:]))  # disjoint: nothing reported twice
    assert len(r.loss.lost) <= limits.RECENT_MAX
    if restarted:  # a late joiner reports nothing below the first block it saw
        assert not lost or lost[0][0] >= min(n for _, n, _ in steps)
