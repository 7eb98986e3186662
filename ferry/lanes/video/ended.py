"""What a `stream_ended` record says of the pictures, on both sides: how the stream crossed
(`mode`: remux or transcode), what left (`out_codec`, `out_width` x `out_height` as `out_size`,
`out_bitrate_kbps`: their bytes over their playing time, pictures out / frame rate, or the
stream's duration where the frame rate is not known) and the pictures in, out and dropped.

Pure: counts in, record fields out. `pictures_dropped` is in - out: every picture that came in
and did not leave (waiting for a keyframe, stripped empty, refused, the transcoder behind or
thinning the frame rate, the trail down, an output that took nothing).
"""
from __future__ import annotations

from typing import Any, Protocol


class _Flow(Protocol):
    @property
    def caps(self) -> Any: ...

    @property
    def out_size(self) -> tuple[int, int]: ...


def picture_fields(mode: str, codec: str, width: int, height: int, frame_rate: float, out_bytes: int,
                   duration: float, pictures_in: int, pictures_out: int) -> dict[str, Any]:
    """The fields both agents add to a stream_ended record's detail."""
    if not pictures_out:
        codec, width, height = "", 0, 0
    seconds = pictures_out / frame_rate if frame_rate > 0 else duration
    kbps = round(out_bytes * 8 / seconds / 1000) if seconds > 0 and pictures_out else 0
    return {"mode": mode, "out_codec": codec, "out_width": width, "out_height": height,
            "out_size": f"{width}x{height}" if pictures_out else "", "out_bitrate_kbps": kbps,
            "pictures_in": pictures_in, "pictures_out": pictures_out,
            "pictures_dropped": max(0, pictures_in - pictures_out)}


def pictures_line(c: dict[str, Any]) -> str:
    """The same fields in words, for the record's reason (and the agents' log)."""
    out = (f"{c['out_codec']} {c['out_size']} ~{c['out_bitrate_kbps']} kbit/s" if c["pictures_out"]
           else "nothing out")
    return (f"{c['mode']} -> {out}; pictures {c['pictures_in']} in, {c['pictures_out']} out, "
            f"{c['pictures_dropped']} dropped")


def outer_fields(stream: Any, c: dict[str, Any]) -> dict[str, Any]:
    """An outer stream (ferry.lanes.video.stream.OuterStream) at its end, `c` its final counts.

    In: the camera's access units that reached the gate. Out: those sealed for the link (in
    transcode mode, the transcoder's pictures), less what the trail being down kept back."""
    flow = stream.flow
    out = max(0, c["access_units"] - c.get("dropped_no_audit", 0))
    if flow.caps is not None:
        mode, codec, (width, height), rate = "transcode", flow.caps.out_codec, flow.out_size, flow.caps.frame_rate
    else:
        mode, codec, width, height, rate = "remux", stream.codec or "", stream.width, stream.height, stream.frame_rate
    return picture_fields(mode, codec, width, height, rate, c["au_bytes"], c["duration"], stream.gate.pictures, out)
