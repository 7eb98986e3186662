"""The policy text of the video tests: cameras to the police VMS by one video rule, `video-cameras`.

The video tests' policies differ only in their name, which devices are the cameras and the rule's
video limits; the rest (deny by default, the police VMS, the rule) is written here once. The text
ends with the rules, so a test may append a rule of its own.
"""
from __future__ import annotations

CAMERAS = '{kind: devices, match: [{region: "4309", type: ["132"]}]}'
"""Yiyang (4309) network cameras (type 132), any serial."""
CAMERAS_0_999 = '{kind: devices, match: [{region: "4309", type: ["132"], serial: {from: "0000000", to: "0000999"}}]}'
"""The same cameras, serials 0000000 to 0000999 only."""


def _yaml(value: object) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def video_limits(*, codecs: str = "[h264, h265]", max_width: int = 1920, max_height: int = 1080,
                 max_frame_rate: int = 30, max_bitrate_kbps: int = 20000, **more: object) -> str:
    """A rule's `video:` limits as one YAML flow mapping; `more` adds keys (audio, keep_sei, mode...)."""
    fields = dict(codecs=codecs, max_width=max_width, max_height=max_height, max_frame_rate=max_frame_rate,
                  max_bitrate_kbps=max_bitrate_kbps, **more)
    return "{" + ", ".join(f"{k}: {_yaml(v)}" for k, v in fields.items()) + "}"


def video_rule(rule_id: str, source: str, video: str) -> str:
    """One video rule from `source` to the police VMS, as lines under `rules:`."""
    return f"""  - id: {rule_id}
    lane: video
    from: {source}
    to: police-vms
    video: {video}
"""


def video_policy(name: str, *, cameras: str = CAMERAS, video: str = "", spool: bool = False,
                 sources: str = "", rules: str = "") -> str:
    """The policy `name`: `cameras` (a source's YAML) to the police VMS under `video` limits
    (video_limits() when empty). `spool` adds the outer spool as a source (the agents' own);
    `sources` and `rules` are more lines under those sections."""
    spool_line = "  outer-spool: {kind: spool}\n" if spool else ""
    return f"""
policy: {name}
version: 1
default: deny
sources:
{spool_line}  cameras: {cameras}
{sources}destinations:
  police-vms: {{kind: vms}}
rules:
{video_rule("video-cameras", "cameras", video or video_limits())}{rules}"""
