"""H.265 (ITU-T H.265 / ISO/IEC 23008-2): NAL unit classes, VPS and SPS.

`parse_sps` reads profile_tier_level, the coded size with the conformance window (§7.4.3.2.1)
and the VUI timing info (Annex E) for the frame rate; `parse_vps` the VPS timing info.
Sizes beyond ferry.limits raise NalError.
"""

from __future__ import annotations

from dataclasses import dataclass

from ferry import limits
from ferry.codecs.bitreader import BitReader, unescape_rbsp
from ferry.codecs.nal import NalError, NalKind, h265_nal_header

# nal_unit_type (Table 7-1)
TRAIL_N, TRAIL_R = 0, 1
BLA_W_LP, BLA_W_RADL, BLA_N_LP, IDR_W_RADL, IDR_N_LP, CRA_NUT = 16, 17, 18, 19, 20, 21
VPS, SPS, PPS, AUD, EOS, EOB, FD, PREFIX_SEI, SUFFIX_SEI = 32, 33, 34, 35, 36, 37, 38, 39, 40

# types that begin a new access unit when they follow a VCL NAL unit (§7.4.2.4.4)
AU_START_TYPES = frozenset({VPS, SPS, PPS, AUD, PREFIX_SEI, 41, 42, 43, 44} | set(range(48, 56)))


def nal_kind(nal_type: int) -> NalKind:
    """Class of an H.265 nal_unit_type (Table 7-1)."""
    if nal_type <= 9:
        return NalKind.SLICE
    if nal_type <= 15:
        return NalKind.RESERVED      # RSV_VCL_N10..RSV_VCL_R15
    if nal_type <= 21:
        return NalKind.KEY_SLICE     # IRAP: BLA, IDR, CRA
    if nal_type <= 31:
        return NalKind.RESERVED      # RSV_IRAP_VCL22/23, RSV_VCL24..31
    if nal_type <= SPS + 1:
        return NalKind.PARAMETER_SET
    if nal_type == AUD:
        return NalKind.AUD
    if nal_type in (EOS, EOB):
        return NalKind.END
    if nal_type == FD:
        return NalKind.FILLER
    if nal_type in (PREFIX_SEI, SUFFIX_SEI):
        return NalKind.SEI
    if nal_type <= 47:
        return NalKind.RESERVED
    return NalKind.UNSPECIFIED


def classify(nal: bytes) -> NalKind:
    """Class of an H.265 NAL unit (raises NalError on a malformed header)."""
    return nal_kind(h265_nal_header(nal)[0])


def is_vcl_type(nal_type: int) -> bool:
    return nal_type < 32


def is_keyframe_type(nal_type: int) -> bool:
    """IRAP picture (BLA, IDR, CRA; reserved IRAP 22-23 included) (§7.4.2.2)."""
    return 16 <= nal_type <= 23


@dataclass(frozen=True, slots=True)
class ProfileTierLevel:
    profile_space: int
    tier: int
    profile_idc: int
    compatibility_flags: int
    level_idc: int


@dataclass(frozen=True, slots=True)
class Vps:
    vps_id: int
    max_sub_layers: int
    profile: ProfileTierLevel
    num_units_in_tick: int
    time_scale: int


@dataclass(frozen=True, slots=True)
class Sps:
    """The fields of an H.265 SPS that ferry uses."""

    vps_id: int
    sps_id: int
    max_sub_layers: int
    profile: ProfileTierLevel
    chroma_format_idc: int
    bit_depth_luma: int
    bit_depth_chroma: int
    width: int
    height: int
    num_units_in_tick: int
    time_scale: int

    @property
    def profile_idc(self) -> int:
        return self.profile.profile_idc

    @property
    def level_idc(self) -> int:
        return self.profile.level_idc

    @property
    def frame_rate(self) -> float:
        """Pictures per second from the VUI timing info (time_scale / num_units_in_tick), 0.0 if absent."""
        if not self.num_units_in_tick or not self.time_scale:
            return 0.0
        rate = self.time_scale / self.num_units_in_tick
        return rate if rate <= limits.VIDEO_MAX_FRAME_RATE else 0.0


def _profile_tier_level(r: BitReader, max_sub_layers_minus1: int) -> ProfileTierLevel:
    """profile_tier_level(1, sps_max_sub_layers_minus1) (§7.3.3)."""
    profile_space = r.u(2)
    tier = r.u(1)
    profile_idc = r.u(5)
    compatibility = r.u(32)
    r.skip(48)  # progressive/interlaced/non_packed/frame_only + 43 + 1 constraint bits
    level_idc = r.u(8)
    present = [(r.flag(), r.flag()) for _ in range(max_sub_layers_minus1)]
    if max_sub_layers_minus1 > 0:
        r.skip(2 * (8 - max_sub_layers_minus1))  # reserved_zero_2bits
    for profile_present, level_present in present:
        if profile_present:
            r.skip(88)
        if level_present:
            r.skip(8)
    return ProfileTierLevel(profile_space, tier, profile_idc, compatibility, level_idc)


def _rbsp(nal: bytes, expected: int, what: str) -> BitReader:
    if len(nal) > limits.PARAMETER_SET_MAX:
        raise NalError(f"{what} too long")
    if h265_nal_header(nal)[0] != expected:
        raise NalError(f"not a {what}")
    return BitReader(unescape_rbsp(nal[2:]))


def parse_vps(nal: bytes) -> Vps:
    """Parse an H.265 VPS NAL unit up to its timing info (§7.3.2.1)."""
    r = _rbsp(nal, VPS, "VPS")
    vps_id = r.u(4)
    r.skip(2)  # vps_base_layer_internal_flag, vps_base_layer_available_flag
    r.skip(6)  # vps_max_layers_minus1
    max_sub_layers_minus1 = r.u(3)
    if max_sub_layers_minus1 > 6:
        raise NalError("vps_max_sub_layers_minus1 > 6")
    r.skip(1 + 16)  # vps_temporal_id_nesting_flag, vps_reserved_0xffff_16bits
    ptl = _profile_tier_level(r, max_sub_layers_minus1)
    ordering_all = r.flag()
    for _ in range(0 if ordering_all else max_sub_layers_minus1, max_sub_layers_minus1 + 1):
        r.ue()
        r.ue()
        r.ue()
    max_layer_id = r.u(6)
    num_layer_sets = r.ue(1023) + 1
    r.skip((num_layer_sets - 1) * (max_layer_id + 1))  # layer_id_included_flag
    num_units_in_tick = time_scale = 0
    if r.flag():  # vps_timing_info_present_flag
        num_units_in_tick = r.u(32)
        time_scale = r.u(32)
    return Vps(vps_id, max_sub_layers_minus1 + 1, ptl, num_units_in_tick, time_scale)


def _st_ref_pic_set(r: BitReader, idx: int, sets: list[tuple[list[int], list[int]]]) -> None:
    """st_ref_pic_set(stRpsIdx) in an SPS (§7.3.7, derivation §7.4.8); appends (S0, S1) delta POCs."""
    if idx != 0 and r.flag():  # inter_ref_pic_set_prediction_flag
        ref_s0, ref_s1 = sets[idx - 1]   # delta_idx_minus1 is 0 in an SPS
        sign = r.u(1)
        delta_rps = (1 - 2 * sign) * (r.ue(1 << 15) + 1)
        n = len(ref_s0) + len(ref_s1)
        used = []
        for _ in range(n + 1):
            used_by_curr = r.flag()
            used.append(used_by_curr or r.flag())  # use_delta_flag (inferred 1 when used)
        ref_all = [*ref_s0, *ref_s1]
        dpocs = [d + delta_rps for d, u in zip(ref_all, used) if u]
        if used[n]:
            dpocs.append(delta_rps)
        s0 = sorted((d for d in dpocs if d < 0), reverse=True)
        s1 = sorted(d for d in dpocs if d > 0)
    else:
        num_negative = r.ue(16)
        num_positive = r.ue(16)
        s0, s1, poc = [], [], 0
        for _ in range(num_negative):
            poc -= r.ue(1 << 15) + 1
            r.skip(1)
            s0.append(poc)
        poc = 0
        for _ in range(num_positive):
            poc += r.ue(1 << 15) + 1
            r.skip(1)
            s1.append(poc)
    if len(s0) + len(s1) > 32:
        raise NalError("short-term reference picture set too large")
    sets.append((s0, s1))


def _scaling_list_data(r: BitReader) -> None:
    """scaling_list_data() (§7.3.4)."""
    for size_id in range(4):
        for _ in range(0, 6, 3 if size_id == 3 else 1):
            if not r.flag():  # scaling_list_pred_mode_flag
                r.ue(5)  # scaling_list_pred_matrix_id_delta
            else:
                if size_id > 1:
                    r.se(128)  # scaling_list_dc_coef_minus8
                for _ in range(min(64, 1 << (4 + (size_id << 1)))):
                    r.se(128)


def parse_sps(nal: bytes) -> Sps:
    """Parse an H.265 SPS NAL unit (header included; §7.3.2.2.1) up to the VUI timing info."""
    r = _rbsp(nal, SPS, "SPS")
    vps_id = r.u(4)
    max_sub_layers_minus1 = r.u(3)
    if max_sub_layers_minus1 > 6:
        raise NalError("sps_max_sub_layers_minus1 > 6")
    r.skip(1)  # sps_temporal_id_nesting_flag
    ptl = _profile_tier_level(r, max_sub_layers_minus1)
    sps_id = r.ue(15)
    chroma_format_idc = r.ue(3)
    separate_colour_plane = chroma_format_idc == 3 and r.flag()
    coded_width = r.ue()
    coded_height = r.ue()
    if not (0 < coded_width <= limits.VIDEO_MAX_WIDTH + 64 and 0 < coded_height <= limits.VIDEO_MAX_HEIGHT + 64):
        raise NalError(f"SPS size {coded_width}x{coded_height} beyond the limits "
                       f"({limits.VIDEO_MAX_WIDTH}x{limits.VIDEO_MAX_HEIGHT})")
    width, height = coded_width, coded_height
    if r.flag():  # conformance_window_flag
        left, right, top, bottom = (r.ue() for _ in range(4))
        chroma_array_type = 0 if separate_colour_plane else chroma_format_idc
        sub_w = 2 if chroma_array_type in (1, 2) else 1
        sub_h = 2 if chroma_array_type == 1 else 1
        width -= sub_w * (left + right)
        height -= sub_h * (top + bottom)
    if not (0 < width <= limits.VIDEO_MAX_WIDTH and 0 < height <= limits.VIDEO_MAX_HEIGHT):
        raise NalError(f"SPS size {width}x{height} beyond the limits "
                       f"({limits.VIDEO_MAX_WIDTH}x{limits.VIDEO_MAX_HEIGHT})")
    bit_depth_luma = 8 + r.ue(8)
    bit_depth_chroma = 8 + r.ue(8)
    log2_max_poc_lsb = 4 + r.ue(12)
    ordering_all = r.flag()
    for _ in range(0 if ordering_all else max_sub_layers_minus1, max_sub_layers_minus1 + 1):
        r.ue()  # sps_max_dec_pic_buffering_minus1
        r.ue()  # sps_max_num_reorder_pics
        r.ue()  # sps_max_latency_increase_plus1
    for _ in range(6):  # coding/transform block sizes and hierarchy depths
        r.ue(32)
    if r.flag() and r.flag():  # scaling_list_enabled_flag, sps_scaling_list_data_present_flag
        _scaling_list_data(r)
    r.skip(2)  # amp_enabled_flag, sample_adaptive_offset_enabled_flag
    if r.flag():  # pcm_enabled_flag
        r.skip(8)
        r.ue(32)
        r.ue(32)
        r.skip(1)
    num_sets = r.ue(64)
    sets: list[tuple[list[int], list[int]]] = []
    for i in range(num_sets):
        _st_ref_pic_set(r, i, sets)
    if r.flag():  # long_term_ref_pics_present_flag
        for _ in range(r.ue(32)):
            r.skip(log2_max_poc_lsb + 1)
    r.skip(2)  # sps_temporal_mvp_enabled_flag, strong_intra_smoothing_enabled_flag
    num_units_in_tick = time_scale = 0
    if r.flag():  # vui_parameters_present_flag (Annex E.2.1)
        if r.flag():  # aspect_ratio_info_present_flag
            if r.u(8) == 255:
                r.skip(32)
        if r.flag():  # overscan_info_present_flag
            r.skip(1)
        if r.flag():  # video_signal_type_present_flag
            r.skip(4)
            if r.flag():
                r.skip(24)
        if r.flag():  # chroma_loc_info_present_flag
            r.ue(5)
            r.ue(5)
        r.skip(3)  # neutral_chroma_indication, field_seq, frame_field_info_present
        if r.flag():  # default_display_window_flag
            for _ in range(4):
                r.ue()
        if r.flag():  # vui_timing_info_present_flag
            num_units_in_tick = r.u(32)
            time_scale = r.u(32)
    return Sps(vps_id, sps_id, max_sub_layers_minus1 + 1, ptl, chroma_format_idc, bit_depth_luma,
               bit_depth_chroma, width, height, num_units_in_tick, time_scale)


def first_slice_segment_in_pic(nal: bytes) -> bool:
    """first_slice_segment_in_pic_flag of a VCL NAL unit (§7.3.6.1)."""
    if len(nal) < 3:
        raise NalError("slice segment too short")
    return bool(nal[2] & 0x80)
