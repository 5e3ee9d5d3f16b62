"""Just enough H.264/H.265 bitstream reading for ingest: parameter sets and picture size, never a decode.

FFmpeg's RTSP demuxer hands out access units in Annex B (start codes) and the stream's extradata as the SDP's
`sprop-parameter-sets` in Annex B too; avcC/hvcC extradata (from other sources) is read as well. Ingest looks at
the parameter sets of each keyframe, so that a camera that changes resolution or bitrate profile in band gets a
new `CodecConfig` at once, and reads the picture size from the SPS (cropping applied).
"""

from __future__ import annotations

from typing import Final, Literal

from argus_core.bitstream import H264_PPS, H264_SPS, H265_PPS, H265_SPS, H265_VPS, START_CODE, config_record, is_annexb
from argus_core.bitstream import BitstreamError as BitstreamError
from argus_core.bitstream import nal_type as nal_type
from argus_core.bitstream import split_annexb as split_annexb

Codec = Literal["h264", "h265"]


def annexb(nals: tuple[bytes, ...]) -> bytes:
    return b"".join(START_CODE + nal for nal in nals)


def _parameter_types(codec: Codec) -> tuple[int, ...]:
    return (H264_SPS, H264_PPS) if codec == "h264" else (H265_VPS, H265_SPS, H265_PPS)


def parameter_sets(codec: Codec, nals: list[bytes]) -> tuple[bytes, ...]:
    """The parameter set NAL units among `nals`, in stream order, each once."""
    wanted = _parameter_types(codec)
    out: list[bytes] = []
    for nal in nals:
        if nal and nal_type(codec, nal) in wanted and nal not in out:
            out.append(nal)
    return tuple(out)


def extradata_parameter_sets(codec: Codec, extradata: bytes) -> tuple[bytes, ...]:
    """Parameter sets carried by a stream's extradata, whether Annex B, avcC or hvcC; () if none are readable."""
    if not extradata:
        return ()
    if is_annexb(extradata):
        return parameter_sets(codec, split_annexb(extradata))
    try:
        return tuple(config_record(codec, extradata)[1])
    except BitstreamError:
        return ()


def _rbsp(nal: bytes) -> bytes:
    """Drop emulation prevention bytes (00 00 03 -> 00 00)."""
    if b"\x00\x00\x03" not in nal:
        return nal
    out = bytearray()
    zeros = 0
    for byte in nal:
        if zeros >= 2 and byte == 3:
            zeros = 0
            continue
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)


class _Bits:
    def __init__(self, data: bytes) -> None:
        self._value = int.from_bytes(data, "big")
        self._size = len(data) * 8
        self._pos = 0

    def u(self, n: int) -> int:
        if n == 0:
            return 0
        if self._pos + n > self._size:
            raise BitstreamError("parameter set ends early")
        self._pos += n
        return (self._value >> (self._size - self._pos)) & ((1 << n) - 1)

    def ue(self) -> int:
        zeros = 0
        while self.u(1) == 0:
            zeros += 1
            if zeros > 31:
                raise BitstreamError("bad exp-Golomb code")
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:
        k = self.ue()
        return (k + 1) // 2 if k % 2 else -(k // 2)


def picture_size(codec: Codec, sps: bytes) -> tuple[int, int]:
    """Width and height (after cropping) of an SPS NAL unit (with its header); `BitstreamError` if unreadable."""
    try:
        return _h264_size(sps) if codec == "h264" else _h265_size(sps)
    except IndexError as exc:
        raise BitstreamError("parameter set too short") from exc


def size_from_parameter_sets(codec: Codec, params: tuple[bytes, ...]) -> tuple[int, int] | None:
    wanted = H264_SPS if codec == "h264" else H265_SPS
    for nal in params:
        if nal_type(codec, nal) == wanted:
            try:
                return picture_size(codec, nal)
            except BitstreamError:
                return None
    return None


_HIGH_PROFILES: Final = frozenset({100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135})


def _skip_scaling_list(r: _Bits, size: int) -> None:
    last = nxt = 8
    for _ in range(size):
        if nxt != 0:
            nxt = (last + r.se() + 256) % 256
        last = last if nxt == 0 else nxt


def _h264_size(nal: bytes) -> tuple[int, int]:
    r = _Bits(_rbsp(nal[1:]))
    profile = r.u(8)
    r.u(16)  # constraint flags, level
    r.ue()  # seq_parameter_set_id
    chroma_format = 1
    separate_planes = 0
    if profile in _HIGH_PROFILES:
        chroma_format = r.ue()
        if chroma_format == 3:
            separate_planes = r.u(1)
        r.ue()  # bit_depth_luma_minus8
        r.ue()  # bit_depth_chroma_minus8
        r.u(1)  # qpprime_y_zero_transform_bypass_flag
        if r.u(1):  # seq_scaling_matrix_present_flag
            for i in range(8 if chroma_format != 3 else 12):
                if r.u(1):
                    _skip_scaling_list(r, 16 if i < 6 else 64)
    r.ue()  # log2_max_frame_num_minus4
    poc_type = r.ue()
    if poc_type == 0:
        r.ue()
    elif poc_type == 1:
        r.u(1)
        r.se()
        r.se()
        for _ in range(r.ue()):
            r.se()
    r.ue()  # max_num_ref_frames
    r.u(1)  # gaps_in_frame_num_value_allowed_flag
    width_mbs = r.ue() + 1
    height_units = r.ue() + 1
    frame_mbs_only = r.u(1)
    if not frame_mbs_only:
        r.u(1)  # mb_adaptive_frame_field_flag
    r.u(1)  # direct_8x8_inference_flag
    width = width_mbs * 16
    height = height_units * 16 * (2 - frame_mbs_only)
    if r.u(1):  # frame_cropping_flag
        left, right, top, bottom = r.ue(), r.ue(), r.ue(), r.ue()
        array_type = 0 if separate_planes else chroma_format
        crop_x = 1 if array_type == 0 else (2 if chroma_format in (1, 2) else 1)
        crop_y = (2 - frame_mbs_only) * (1 if array_type == 0 else (2 if chroma_format == 1 else 1))
        width -= crop_x * (left + right)
        height -= crop_y * (top + bottom)
    if width <= 0 or height <= 0:
        raise BitstreamError(f"implausible picture size {width}x{height}")
    return width, height


def _h265_size(nal: bytes) -> tuple[int, int]:
    r = _Bits(_rbsp(nal[2:]))
    r.u(4)  # sps_video_parameter_set_id
    max_sub_layers_minus1 = r.u(3)
    r.u(1)  # temporal_id_nesting
    # profile_tier_level(1, max_sub_layers_minus1)
    r.u(8)  # profile space, tier, profile idc
    r.u(32)  # compatibility flags
    r.u(48)  # progressive/interlaced/non-packed/frame-only + 43 reserved/constraint bits + 1
    r.u(8)  # general_level_idc
    present: list[tuple[int, int]] = []
    for _ in range(max_sub_layers_minus1):
        present.append((r.u(1), r.u(1)))
    if max_sub_layers_minus1 > 0:
        for _ in range(max_sub_layers_minus1, 8):
            r.u(2)
    for profile_present, level_present in present:
        if profile_present:
            r.u(88)
        if level_present:
            r.u(8)
    r.ue()  # sps_seq_parameter_set_id
    chroma_format = r.ue()
    if chroma_format == 3:
        r.u(1)  # separate_colour_plane_flag
    width = r.ue()
    height = r.ue()
    if r.u(1):  # conformance_window_flag
        left, right, top, bottom = r.ue(), r.ue(), r.ue(), r.ue()
        sub_w = 2 if chroma_format in (1, 2) else 1
        sub_h = 2 if chroma_format == 1 else 1
        width -= sub_w * (left + right)
        height -= sub_h * (top + bottom)
    if width <= 0 or height <= 0:
        raise BitstreamError(f"implausible picture size {width}x{height}")
    return width, height
