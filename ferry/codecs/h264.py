"""H.264 (ITU-T H.264 / ISO/IEC 14496-10): NAL unit classes and the sequence parameter set.

`parse_sps` reads profile, level, coded size with frame cropping (§7.4.2.1.1) and the VUI
timing info (Annex E) for the frame rate. Sizes beyond ferry.limits raise NalError.
"""

from __future__ import annotations

from dataclasses import dataclass

from ferry import limits
from ferry.codecs.bitreader import BitReader, unescape_rbsp
from ferry.codecs.nal import NalError, NalKind, h264_nal_type

# nal_unit_type (Table 7-1)
SLICE = 1
SLICE_DPA = 2
SLICE_DPB = 3
SLICE_DPC = 4
IDR = 5
SEI = 6
SPS = 7
PPS = 8
AUD = 9
END_OF_SEQUENCE = 10
END_OF_STREAM = 11
FILLER = 12
SPS_EXTENSION = 13
PREFIX = 14
SUBSET_SPS = 15
DPS = 16
AUXILIARY_SLICE = 19
SLICE_EXTENSION = 20
SLICE_EXTENSION_DEPTH = 21

_KIND = {
    SLICE: NalKind.SLICE, SLICE_DPA: NalKind.SLICE, SLICE_DPB: NalKind.SLICE, SLICE_DPC: NalKind.SLICE,
    IDR: NalKind.KEY_SLICE, SEI: NalKind.SEI, SPS: NalKind.PARAMETER_SET, PPS: NalKind.PARAMETER_SET,
    AUD: NalKind.AUD, END_OF_SEQUENCE: NalKind.END, END_OF_STREAM: NalKind.END, FILLER: NalKind.FILLER,
    SPS_EXTENSION: NalKind.PARAMETER_SET, PREFIX: NalKind.OTHER, SUBSET_SPS: NalKind.PARAMETER_SET,
    DPS: NalKind.OTHER, 17: NalKind.RESERVED, 18: NalKind.RESERVED, AUXILIARY_SLICE: NalKind.OTHER,
    SLICE_EXTENSION: NalKind.OTHER, SLICE_EXTENSION_DEPTH: NalKind.OTHER,
    22: NalKind.RESERVED, 23: NalKind.RESERVED,
}

# types that, after a VCL NAL unit of a primary picture, begin a new access unit (§7.4.1.2.3)
AU_START_TYPES = frozenset({SEI, SPS, PPS, AUD, PREFIX, SUBSET_SPS, DPS, 17, 18})
# VCL NAL units of the primary coded picture (first_mb_in_slice is their first field)
PRIMARY_VCL_TYPES = frozenset({SLICE, SLICE_DPA, IDR})

# profile_idc values whose SPS carries chroma_format_idc etc. (§7.3.2.1.1)
_HIGH_PROFILES = frozenset({100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135})


def nal_kind(nal_type: int) -> NalKind:
    """Class of an H.264 nal_unit_type (Table 7-1); 0 and 24..31 are unspecified."""
    return _KIND.get(nal_type, NalKind.UNSPECIFIED)


def classify(nal: bytes) -> NalKind:
    """Class of an H.264 NAL unit (raises NalError on an empty unit or a forbidden bit)."""
    return nal_kind(h264_nal_type(nal))


def is_keyframe_type(nal_type: int) -> bool:
    return nal_type == IDR


@dataclass(frozen=True, slots=True)
class Sps:
    """The fields of an H.264 SPS that ferry uses."""

    profile_idc: int
    constraint_flags: int
    level_idc: int
    sps_id: int
    chroma_format_idc: int
    bit_depth_luma: int
    bit_depth_chroma: int
    frame_mbs_only: bool
    width: int
    height: int
    num_units_in_tick: int
    time_scale: int
    fixed_frame_rate: bool

    @property
    def frame_rate(self) -> float:
        """Frames per second from the VUI timing info (time_scale / (2 * num_units_in_tick)), 0.0 if absent."""
        if not self.num_units_in_tick or not self.time_scale:
            return 0.0
        rate = self.time_scale / (2 * self.num_units_in_tick)
        return rate if rate <= limits.VIDEO_MAX_FRAME_RATE else 0.0


def _scaling_list(r: BitReader, size: int) -> None:
    last = next_ = 8
    for _ in range(size):
        if next_ != 0:
            delta = r.se(128)
            next_ = (last + delta + 256) % 256
        last = next_ if next_ != 0 else last


def parse_sps(nal: bytes) -> Sps:
    """Parse an H.264 SPS NAL unit (header included; §7.3.2.1.1)."""
    if len(nal) > limits.PARAMETER_SET_MAX:
        raise NalError("SPS too long")
    if h264_nal_type(nal) != SPS:
        raise NalError("not an SPS")
    r = BitReader(unescape_rbsp(nal[1:]))
    profile_idc = r.u(8)
    constraint_flags = r.u(8)
    level_idc = r.u(8)
    sps_id = r.ue(31)
    chroma_format_idc = 1
    separate_colour_plane = False
    bit_depth_luma = bit_depth_chroma = 8
    if profile_idc in _HIGH_PROFILES:
        chroma_format_idc = r.ue(3)
        if chroma_format_idc == 3:
            separate_colour_plane = r.flag()
        bit_depth_luma = 8 + r.ue(6)
        bit_depth_chroma = 8 + r.ue(6)
        r.skip(1)  # qpprime_y_zero_transform_bypass_flag
        if r.flag():  # seq_scaling_matrix_present_flag
            for i in range(8 if chroma_format_idc != 3 else 12):
                if r.flag():
                    _scaling_list(r, 16 if i < 6 else 64)
    r.ue(12)  # log2_max_frame_num_minus4
    poc_type = r.ue(2)
    if poc_type == 0:
        r.ue(12)  # log2_max_pic_order_cnt_lsb_minus4
    elif poc_type == 1:
        r.skip(1)  # delta_pic_order_always_zero_flag
        r.se()  # offset_for_non_ref_pic
        r.se()  # offset_for_top_to_bottom_field
        for _ in range(r.ue(255)):
            r.se()  # offset_for_ref_frame
    r.ue(32)  # max_num_ref_frames (MaxDpbFrames <= 16; generous)
    r.skip(1)  # gaps_in_frame_num_value_allowed_flag
    width_mbs = r.ue() + 1
    height_map_units = r.ue() + 1
    frame_mbs_only = r.flag()
    if not frame_mbs_only:
        r.skip(1)  # mb_adaptive_frame_field_flag
    r.skip(1)  # direct_8x8_inference_flag
    width = width_mbs * 16
    height = height_map_units * 16 * (2 - frame_mbs_only)
    if width > limits.VIDEO_MAX_WIDTH + 16 or height > limits.VIDEO_MAX_HEIGHT + 32:
        raise NalError(f"SPS size {width}x{height} beyond the limits "
                       f"({limits.VIDEO_MAX_WIDTH}x{limits.VIDEO_MAX_HEIGHT})")
    if r.flag():  # frame_cropping_flag
        left, right, top, bottom = (r.ue() for _ in range(4))
        chroma_array_type = 0 if separate_colour_plane else chroma_format_idc
        if chroma_array_type == 0:
            crop_x, crop_y = 1, 2 - frame_mbs_only
        else:
            sub_w = 1 if chroma_format_idc == 3 else 2
            sub_h = 2 if chroma_format_idc == 1 else 1
            crop_x, crop_y = sub_w, sub_h * (2 - frame_mbs_only)
        width -= crop_x * (left + right)
        height -= crop_y * (top + bottom)
    if not (0 < width <= limits.VIDEO_MAX_WIDTH and 0 < height <= limits.VIDEO_MAX_HEIGHT):
        raise NalError(f"SPS size {width}x{height} beyond the limits "
                       f"({limits.VIDEO_MAX_WIDTH}x{limits.VIDEO_MAX_HEIGHT})")
    num_units_in_tick = time_scale = 0
    fixed_frame_rate = False
    if r.flag():  # vui_parameters_present_flag (Annex E.1.1)
        if r.flag():  # aspect_ratio_info_present_flag
            if r.u(8) == 255:  # Extended_SAR
                r.skip(32)
        if r.flag():  # overscan_info_present_flag
            r.skip(1)
        if r.flag():  # video_signal_type_present_flag
            r.skip(4)
            if r.flag():  # colour_description_present_flag
                r.skip(24)
        if r.flag():  # chroma_loc_info_present_flag
            r.ue(5)
            r.ue(5)
        if r.flag():  # timing_info_present_flag
            num_units_in_tick = r.u(32)
            time_scale = r.u(32)
            fixed_frame_rate = r.flag()
    return Sps(profile_idc, constraint_flags, level_idc, sps_id, chroma_format_idc, bit_depth_luma,
               bit_depth_chroma, frame_mbs_only, width, height, num_units_in_tick, time_scale, fixed_frame_rate)


def first_mb_in_slice(nal: bytes) -> int:
    """first_mb_in_slice of a slice NAL unit (§7.3.3): 0 for the first slice of a picture."""
    r = BitReader(unescape_rbsp(nal[1:16]))
    return r.ue()
