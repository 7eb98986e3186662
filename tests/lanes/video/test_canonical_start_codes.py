"""Issue 12 item 7, documented rather than changed: every rebuilt elementary stream uses 4-byte
start codes (the source's framing does not cross, as nothing else of its framing does). What a
`keep_sei` stream delivers is byte-identical to the source in that canonical form."""
from __future__ import annotations

import random
import shutil

import pytest

import gb28181
from ferry.codecs.mpeg_ps import VIDEO, PsDemuxer, PsMuxer, VideoPes, pack_header
from ferry.codecs.nal import canonical_annexb
from ferry.codecs.rtp import build_rtp
from ferry.lanes.video import InnerStream
from .test_stream import SSRC, outer, ready, run, source

pytestmark = pytest.mark.skipif(not shutil.which("ffmpeg"), reason="ffmpeg not installed")


def mixed_start_codes(nal_units) -> bytes:
    """An access unit as many encoders write it: a 4-byte start code first, 3-byte ones after."""
    return b"".join((b"\x00\x00\x00\x01" if i == 0 else b"\x00\x00\x01") + n for i, n in enumerate(nal_units))


def camera(frames, codec) -> tuple[bytes, list]:
    """(the elementary stream sent, RTP/PS packets carrying exactly those bytes)."""
    mux = PsMuxer(codec)
    es, packets, seq = b"", [], 7
    for f in frames:
        au = mixed_start_codes(f.nal_units)
        es += au
        head = pack_header(f.dts, 50_000) + (mux.system_header() + mux.program_stream_map() if f.keyframe else b"")
        ps = head + mux._pes(VIDEO, au, f.pts, f.dts)
        chunks = [ps[i:i + 1400] for i in range(0, len(ps), 1400)]
        for k, c in enumerate(chunks):
            packets.append((build_rtp(96, seq, f.pts, SSRC, c, marker=k == len(chunks) - 1), 0.0))
            seq += 1
    return es, packets


@pytest.mark.parametrize("codec", ["h264", "h265"])
def test_a_keep_sei_stream_is_the_canonical_form_of_its_source_byte_for_byte(plan_of, codec):
    frames = gb28181.access_units(source(codec), codec)
    sent, packets = camera(frames, codec)
    objs = ready(run(outer(plan_of(keep_sei=True)), packets))
    assert len(objs) == len(frames) == 50
    inner = InnerStream("ps", 0.0, rng=random.Random(1))
    demux = PsDemuxer()
    ps = b"".join(p[12:] for o in objs for p in inner.push(o))
    es = b"".join(ev.data for ev in demux.feed(ps) + demux.flush() if isinstance(ev, VideoPes))
    assert es != sent                                   # not the source's own bytes (its start codes)...
    assert es == canonical_annexb(sent)                 # ...but exactly its canonical form
    assert len(es) - len(sent) == sum(len(f.nal_units) - 1 for f in frames)   # one zero byte per 3-byte code
