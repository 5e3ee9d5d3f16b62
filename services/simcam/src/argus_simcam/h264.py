"""H.264 (ITU-T H.264 / ISO 14496-10) bitstream helpers: NAL units, Exp-Golomb bits, SPS/PPS/slice headers, and a
writer for the one kind of slice simcam makes itself.

`StripSliceWriter` builds the slice that covers the OSD strip (the top macroblock rows) of a pre-encoded picture,
with the current timecode and text (see `preencoded` for why). It writes CAVLC slices with three macroblock kinds:

- P_Skip (P slices only): copy the co-located macroblock of the previous picture. Every motion vector in the
  strip slice is zero, so every P_Skip predictor is zero too and the copy is exact.
- I_16x16, DC prediction, no AC, one DC coefficient of +/-20 at QP 51 (the slice QP): the inverse transforms
  add +/-280 to every predicted sample, so the macroblock is 255 or 0 whatever its neighbours were (clipping).
  42 to 44 bits each.
- I_PCM: 384 raw bytes (luma 16x16 raster, then Cb and Cr 8x8 at 128), for text.

Deblocking is off in the strip slice (disable_deblocking_filter_idc = 1) and must be off in the encoder's slices
too, so neither side's pixels change at the boundary.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Final, TypeAlias

__all__ = [
    "NAL_IDR",
    "NAL_PPS",
    "NAL_SEI",
    "NAL_SLICE",
    "NAL_SPS",
    "BitReader",
    "BitWriter",
    "H264Error",
    "MbKind",
    "Pps",
    "SliceHeader",
    "Sps",
    "StripSliceWriter",
    "escape_rbsp",
    "nal_type",
    "parse_pps",
    "parse_slice_header",
    "parse_sps",
    "split_annexb",
    "unescape_rbsp",
]

NAL_SLICE: Final = 1
NAL_IDR: Final = 5
NAL_SEI: Final = 6
NAL_SPS: Final = 7
NAL_PPS: Final = 8
NAL_AUD: Final = 9

SLICE_P: Final = 0
SLICE_I: Final = 2

_START_CODE = re.compile(rb"\x00\x00\x01")
_EPB = re.compile(rb"\x00\x00\x03")
_NEEDS_EPB = re.compile(rb"\x00\x00(?=[\x00-\x03])")


class H264Error(ValueError):
    """A bitstream simcam cannot parse or does not support."""


def split_annexb(data: bytes) -> list[bytes]:
    """The NAL units of an Annex B byte stream (start codes and trailing zero bytes removed)."""
    nals: list[bytes] = []
    starts = [m.end() for m in _START_CODE.finditer(data)]
    for i, start in enumerate(starts):
        end = starts[i + 1] - 3 if i + 1 < len(starts) else len(data)
        nal = data[start:end].rstrip(b"\x00")
        if nal:
            nals.append(nal)
    return nals


def nal_type(nal: bytes) -> int:
    return nal[0] & 0x1F


def unescape_rbsp(data: bytes) -> bytes:
    """Remove emulation-prevention bytes (00 00 03 -> 00 00)."""
    return _EPB.sub(b"\x00\x00", data)


def escape_rbsp(data: bytes) -> bytes:
    """Insert emulation-prevention bytes where 00 00 is followed by 00..03."""
    return _NEEDS_EPB.sub(b"\x00\x00\x03", data)


class BitReader:
    """MSB-first bit reader over an RBSP (emulation prevention already removed)."""

    def __init__(self, data: bytes, bit_offset: int = 0) -> None:
        self._value = int.from_bytes(data, "big")
        self._size = len(data) * 8
        self.pos = bit_offset

    @property
    def bits_left(self) -> int:
        return self._size - self.pos

    def u(self, n: int) -> int:
        if n == 0:
            return 0
        if self.pos + n > self._size:
            raise H264Error("read past the end of the bitstream")
        self.pos += n
        return (self._value >> (self._size - self.pos)) & ((1 << n) - 1)

    def flag(self) -> bool:
        return bool(self.u(1))

    def ue(self) -> int:
        zeros = 0
        while self.u(1) == 0:
            zeros += 1
            if zeros > 31:
                raise H264Error("bad Exp-Golomb code")
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:
        k = self.ue()
        return (k + 1) // 2 if k & 1 else -(k // 2)

    def more_rbsp_data(self) -> bool:
        if self.bits_left <= 0:
            return False
        rest = self._value & ((1 << self.bits_left) - 1)
        # Only the stop bit (a 1 followed by zeros) left?
        return rest != 1 << (rest.bit_length() - 1) if rest else False


class BitWriter:
    """MSB-first bit writer building an RBSP."""

    __slots__ = ("_acc", "_n", "_out")

    def __init__(self) -> None:
        self._out = bytearray()
        self._acc = 0
        self._n = 0

    def u(self, value: int, n: int) -> None:
        if n == 0:
            return
        acc = (self._acc << n) | (value & ((1 << n) - 1))
        count = self._n + n
        out = self._out
        while count >= 8:
            count -= 8
            out.append((acc >> count) & 0xFF)
        self._acc = acc & ((1 << count) - 1)
        self._n = count

    def flag(self, value: bool) -> None:
        self.u(1 if value else 0, 1)

    def ue(self, value: int) -> None:
        v = value + 1
        self.u(v, 2 * v.bit_length() - 1)

    def se(self, value: int) -> None:
        self.ue(2 * value - 1 if value > 0 else -2 * value)

    @property
    def byte_aligned(self) -> bool:
        return self._n == 0

    def align_zero(self) -> None:
        if self._n:
            self.u(0, 8 - self._n)

    def raw(self, data: bytes) -> None:
        """Append whole bytes; the writer must be byte aligned."""
        if self._n:
            raise H264Error("raw bytes need byte alignment")
        self._out += data

    def trailing_bits(self) -> None:
        self.u(1, 1)
        self.align_zero()

    def getvalue(self) -> bytes:
        if self._n:
            raise H264Error("bitstream not byte aligned")
        return bytes(self._out)


@dataclass(frozen=True)
class Sps:
    sps_id: int
    profile_idc: int
    constraint_flags: int
    level_idc: int
    chroma_format_idc: int
    log2_max_frame_num: int
    poc_type: int
    log2_max_poc_lsb: int
    delta_pic_order_always_zero: bool
    num_ref_frames: int
    width_mbs: int
    height_mbs: int
    frame_mbs_only: bool
    width: int
    height: int

    @property
    def profile_level_id(self) -> str:
        return f"{self.profile_idc:02x}{self.constraint_flags:02x}{self.level_idc:02x}"


@dataclass(frozen=True)
class Pps:
    pps_id: int
    sps_id: int
    entropy_coding_mode: bool
    bottom_field_pic_order_in_frame_present: bool
    num_slice_groups: int
    num_ref_idx_l0_default_active_minus1: int
    weighted_pred: bool
    weighted_bipred_idc: int
    pic_init_qp_minus26: int
    deblocking_filter_control_present: bool
    constrained_intra_pred: bool
    redundant_pic_cnt_present: bool
    transform_8x8_mode: bool


_HIGH_PROFILES: Final = frozenset((100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135))


def _skip_scaling_list(r: BitReader, size: int) -> None:
    last, nxt = 8, 8
    for _ in range(size):
        if nxt:
            nxt = (last + r.se() + 256) % 256
        last = nxt or last


def parse_sps(nal: bytes) -> Sps:
    if nal_type(nal) != NAL_SPS:
        raise H264Error("not an SPS")
    r = BitReader(unescape_rbsp(nal[1:]))
    profile_idc, constraint_flags, level_idc = r.u(8), r.u(8), r.u(8)
    sps_id = r.ue()
    chroma_format_idc = 1
    if profile_idc in _HIGH_PROFILES:
        chroma_format_idc = r.ue()
        if chroma_format_idc == 3:
            r.u(1)  # separate_colour_plane_flag
        r.ue()  # bit_depth_luma_minus8
        r.ue()  # bit_depth_chroma_minus8
        r.u(1)  # qpprime_y_zero_transform_bypass_flag
        if r.flag():  # seq_scaling_matrix_present_flag
            for i in range(8 if chroma_format_idc != 3 else 12):
                if r.flag():
                    _skip_scaling_list(r, 16 if i < 6 else 64)
    log2_max_frame_num = r.ue() + 4
    poc_type = r.ue()
    log2_max_poc_lsb = 0
    delta_pic_order_always_zero = False
    if poc_type == 0:
        log2_max_poc_lsb = r.ue() + 4
    elif poc_type == 1:
        delta_pic_order_always_zero = r.flag()
        r.se()
        r.se()
        for _ in range(r.ue()):
            r.se()
    num_ref_frames = r.ue()
    r.u(1)  # gaps_in_frame_num_value_allowed_flag
    width_mbs = r.ue() + 1
    height_map_units = r.ue() + 1
    frame_mbs_only = r.flag()
    if not frame_mbs_only:
        r.u(1)  # mb_adaptive_frame_field_flag
    r.u(1)  # direct_8x8_inference_flag
    height_mbs = height_map_units * (1 if frame_mbs_only else 2)
    width, height = width_mbs * 16, height_mbs * 16
    if r.flag():  # frame_cropping_flag
        left, right, top, bottom = r.ue(), r.ue(), r.ue(), r.ue()
        crop_x = 2 if chroma_format_idc in (1, 2) else 1
        crop_y = (2 if chroma_format_idc == 1 else 1) * (1 if frame_mbs_only else 2)
        width -= crop_x * (left + right)
        height -= crop_y * (top + bottom)
    return Sps(
        sps_id=sps_id,
        profile_idc=profile_idc,
        constraint_flags=constraint_flags,
        level_idc=level_idc,
        chroma_format_idc=chroma_format_idc,
        log2_max_frame_num=log2_max_frame_num,
        poc_type=poc_type,
        log2_max_poc_lsb=log2_max_poc_lsb,
        delta_pic_order_always_zero=delta_pic_order_always_zero,
        num_ref_frames=num_ref_frames,
        width_mbs=width_mbs,
        height_mbs=height_mbs,
        frame_mbs_only=frame_mbs_only,
        width=width,
        height=height,
    )


def parse_pps(nal: bytes) -> Pps:
    if nal_type(nal) != NAL_PPS:
        raise H264Error("not a PPS")
    r = BitReader(unescape_rbsp(nal[1:]))
    pps_id, sps_id = r.ue(), r.ue()
    entropy_coding_mode = r.flag()
    bottom_field = r.flag()
    num_slice_groups = r.ue() + 1
    if num_slice_groups > 1:
        raise H264Error("slice groups are not supported")
    l0 = r.ue()
    r.ue()  # num_ref_idx_l1_default_active_minus1
    weighted_pred = r.flag()
    weighted_bipred_idc = r.u(2)
    pic_init_qp_minus26 = r.se()
    r.se()  # pic_init_qs_minus26
    r.se()  # chroma_qp_index_offset
    deblocking_present = r.flag()
    constrained_intra_pred = r.flag()
    redundant_present = r.flag()
    transform_8x8 = r.flag() if r.more_rbsp_data() else False
    return Pps(
        pps_id=pps_id,
        sps_id=sps_id,
        entropy_coding_mode=entropy_coding_mode,
        bottom_field_pic_order_in_frame_present=bottom_field,
        num_slice_groups=num_slice_groups,
        num_ref_idx_l0_default_active_minus1=l0,
        weighted_pred=weighted_pred,
        weighted_bipred_idc=weighted_bipred_idc,
        pic_init_qp_minus26=pic_init_qp_minus26,
        deblocking_filter_control_present=deblocking_present,
        constrained_intra_pred=constrained_intra_pred,
        redundant_pic_cnt_present=redundant_present,
        transform_8x8_mode=transform_8x8,
    )


@dataclass(frozen=True)
class SliceHeader:
    """The slice header fields simcam reads and writes (frame pictures, I and P slices only)."""

    nal_unit_type: int
    nal_ref_idc: int
    first_mb: int
    slice_type: int
    pps_id: int
    frame_num: int
    idr_pic_id: int = 0
    poc_lsb: int = 0
    delta_poc_bottom: int = 0
    delta_poc: tuple[int, int] = (0, 0)
    redundant_pic_cnt: int = 0
    num_ref_idx_override: bool = False
    num_ref_idx_l0_active_minus1: int = 0
    no_output_of_prior_pics: bool = False
    long_term_reference: bool = False
    mmco: tuple[tuple[int, ...], ...] | None = None
    slice_qp_delta: int = 0
    disable_deblocking_filter_idc: int = 0
    alpha_offset_div2: int = 0
    beta_offset_div2: int = 0

    @property
    def is_idr(self) -> bool:
        return self.nal_unit_type == NAL_IDR

    @property
    def base_type(self) -> int:
        return self.slice_type % 5


def parse_slice_header(nal: bytes, sps: Sps, pps: Pps) -> SliceHeader:
    """Parse a slice header (I or P slice of a frame picture); raises `H264Error` for anything else."""
    kind = nal_type(nal)
    if kind not in (NAL_SLICE, NAL_IDR):
        raise H264Error(f"NAL type {kind} is not a slice")
    r = BitReader(unescape_rbsp(nal[1:160]))
    first_mb, slice_type, pps_id = r.ue(), r.ue(), r.ue()
    base = slice_type % 5
    if base not in (SLICE_P, SLICE_I):
        raise H264Error(f"slice type {slice_type} is not supported")
    if not sps.frame_mbs_only:
        raise H264Error("field coding is not supported")
    frame_num = r.u(sps.log2_max_frame_num)
    idr_pic_id = r.ue() if kind == NAL_IDR else 0
    poc_lsb = delta_bottom = 0
    delta_poc = (0, 0)
    if sps.poc_type == 0:
        poc_lsb = r.u(sps.log2_max_poc_lsb)
        if pps.bottom_field_pic_order_in_frame_present:
            delta_bottom = r.se()
    elif sps.poc_type == 1 and not sps.delta_pic_order_always_zero:
        first = r.se()
        delta_poc = (first, r.se() if pps.bottom_field_pic_order_in_frame_present else 0)
    redundant = r.ue() if pps.redundant_pic_cnt_present else 0
    override, l0 = False, pps.num_ref_idx_l0_default_active_minus1
    if base == SLICE_P:
        override = r.flag()
        if override:
            l0 = r.ue()
        if r.flag():  # ref_pic_list_modification_flag_l0
            while r.ue() != 3:
                r.ue()
    if pps.weighted_pred and base == SLICE_P:
        raise H264Error("weighted prediction is not supported")
    no_output = long_term = False
    mmco: tuple[tuple[int, ...], ...] | None = None
    nal_ref_idc = (nal[0] >> 5) & 3
    if nal_ref_idc:
        if kind == NAL_IDR:
            no_output, long_term = r.flag(), r.flag()
        elif r.flag():
            ops: list[tuple[int, ...]] = []
            while (op := r.ue()) != 0:
                args: list[int] = []
                if op in (1, 3):
                    args.append(r.ue())
                if op == 2:
                    args.append(r.ue())
                if op in (3, 6):
                    args.append(r.ue())
                if op == 4:
                    args.append(r.ue())
                ops.append((op, *args))
            mmco = tuple(ops)
    if pps.entropy_coding_mode and base != SLICE_I:
        r.ue()  # cabac_init_idc
    qp_delta = r.se()
    idc = alpha = beta = 0
    if pps.deblocking_filter_control_present:
        idc = r.ue()
        if idc != 1:
            alpha, beta = r.se(), r.se()
    return SliceHeader(
        nal_unit_type=kind,
        nal_ref_idc=nal_ref_idc,
        first_mb=first_mb,
        slice_type=slice_type,
        pps_id=pps_id,
        frame_num=frame_num,
        idr_pic_id=idr_pic_id,
        poc_lsb=poc_lsb,
        delta_poc_bottom=delta_bottom,
        delta_poc=delta_poc,
        redundant_pic_cnt=redundant,
        num_ref_idx_override=override,
        num_ref_idx_l0_active_minus1=l0,
        no_output_of_prior_pics=no_output,
        long_term_reference=long_term,
        mmco=mmco,
        slice_qp_delta=qp_delta,
        disable_deblocking_filter_idc=idc,
        alpha_offset_div2=alpha,
        beta_offset_div2=beta,
    )


def write_slice_header(w: BitWriter, h: SliceHeader, sps: Sps, pps: Pps) -> None:
    """Write `h` (CAVLC, no reference list modification, no weighted prediction)."""
    w.ue(h.first_mb)
    w.ue(h.slice_type)
    w.ue(h.pps_id)
    w.u(h.frame_num, sps.log2_max_frame_num)
    if h.is_idr:
        w.ue(h.idr_pic_id)
    if sps.poc_type == 0:
        w.u(h.poc_lsb, sps.log2_max_poc_lsb)
        if pps.bottom_field_pic_order_in_frame_present:
            w.se(h.delta_poc_bottom)
    elif sps.poc_type == 1 and not sps.delta_pic_order_always_zero:
        w.se(h.delta_poc[0])
        if pps.bottom_field_pic_order_in_frame_present:
            w.se(h.delta_poc[1])
    if pps.redundant_pic_cnt_present:
        w.ue(h.redundant_pic_cnt)
    if h.base_type == SLICE_P:
        w.flag(h.num_ref_idx_override)
        if h.num_ref_idx_override:
            w.ue(h.num_ref_idx_l0_active_minus1)
        w.flag(False)  # ref_pic_list_modification_flag_l0
    if h.nal_ref_idc:
        if h.is_idr:
            w.flag(h.no_output_of_prior_pics)
            w.flag(h.long_term_reference)
        elif h.mmco is None:
            w.flag(False)
        else:
            w.flag(True)
            for op, *args in h.mmco:
                w.ue(op)
                for a in args:
                    w.ue(a)
            w.ue(0)
    w.se(h.slice_qp_delta)
    if pps.deblocking_filter_control_present:
        w.ue(h.disable_deblocking_filter_idc)
        if h.disable_deblocking_filter_idc != 1:
            w.se(h.alpha_offset_div2)
            w.se(h.beta_offset_div2)


# A strip macroblock: 0 = black (I_16x16 saturated down), 1 = white (saturated up), bytes = I_PCM samples (384).
MbKind: TypeAlias = int | bytes

PCM_BYTES: Final = 384


def _bits(text: str) -> tuple[int, int]:
    return int(text, 2), len(text)


def _ue_bits(value: int) -> str:
    v = value + 1
    return "0" * (v.bit_length() - 1) + format(v, "b")


def _dc_macroblock(slice_base: int, white: bool, nc_high: bool) -> tuple[int, int]:
    """Bits of an I_16x16 DC-predicted macroblock with a single +/-20 DC coefficient (after mb_skip_run)."""
    mb_type = 3 + (5 if slice_base == SLICE_P else 0)  # I_16x16_2_0_0: DC prediction, no coded AC or chroma
    coeff_token = "000000" if nc_high else "000101"  # TotalCoeff 1, TrailingOnes 0; nC >= 8 or 0 <= nC < 2
    # Level 20 (+) or -20 (-): levelCode 38/39, minus 2 for the first non-trailing-one level -> 36/37,
    # level_prefix 15 (suffixLength 0) adds 30, so the 12-bit suffix is 6 or 7.
    level = "0" * 15 + "1" + format(6 if white else 7, "012b")
    total_zeros = "1"
    body = _ue_bits(mb_type) + "1" + "1" + coeff_token + level + total_zeros  # chroma pred DC, mb_qp_delta 0
    return _bits(body)


_STRIP_QP: Final = 51


@dataclass(frozen=True)
class _MbCodes:
    dc: dict[tuple[bool, bool], tuple[int, int]]
    pcm_type: tuple[int, int]


class StripSliceWriter:
    """Writes the strip slice for one (SPS, PPS): macroblock rows `0 .. rows-1` of a picture."""

    def __init__(self, sps: Sps, pps: Pps, rows: int) -> None:
        if pps.entropy_coding_mode:
            raise H264Error("the strip slice needs CAVLC (entropy_coding_mode_flag = 0)")
        if not pps.deblocking_filter_control_present:
            raise H264Error("the PPS cannot turn deblocking off per slice")
        if sps.chroma_format_idc != 1:
            raise H264Error("only 4:2:0 is supported")
        self.sps, self.pps = sps, pps
        self.rows = rows
        self.cols = sps.width_mbs
        self.count = rows * self.cols
        self._codes = {
            base: _MbCodes(
                dc={
                    (white, high): _dc_macroblock(base, white, high)
                    for white in (False, True)
                    for high in (False, True)
                },
                pcm_type=_bits(_ue_bits(25 + (5 if base == SLICE_P else 0))),
            )
            for base in (SLICE_P, SLICE_I)
        }
        self._qp_delta = _STRIP_QP - 26 - pps.pic_init_qp_minus26

    def header_for(self, picture: SliceHeader) -> SliceHeader:
        """The strip slice's header for a picture whose first encoder slice header is `picture`."""
        return replace(
            picture,
            first_mb=0,
            slice_qp_delta=self._qp_delta,
            disable_deblocking_filter_idc=1,
            alpha_offset_div2=0,
            beta_offset_div2=0,
        )

    def write(self, header: SliceHeader, mbs: Sequence[MbKind | None]) -> bytes:
        """The slice NAL unit. `mbs` has one entry per strip macroblock in raster order; None is P_Skip."""
        if len(mbs) != self.count:
            raise H264Error(f"expected {self.count} macroblocks, got {len(mbs)}")
        return self._write(header, [(i, mb) for i, mb in enumerate(mbs) if mb is not None])

    def write_changes(self, header: SliceHeader, changes: Mapping[int, MbKind]) -> bytes:
        """A P slice NAL unit coding only the macroblocks in `changes` (index -> kind); the rest are P_Skip."""
        if header.base_type != SLICE_P:
            raise H264Error("only a P slice can skip macroblocks")
        return self._write(header, sorted(changes.items()))

    def _write(self, header: SliceHeader, coded: list[tuple[int, MbKind]]) -> bytes:
        base = header.base_type
        if base == SLICE_I and len(coded) != self.count:
            raise H264Error("an I slice must code every macroblock")
        codes = self._codes[base]
        w = BitWriter()
        w.u((header.nal_ref_idc << 5) | header.nal_unit_type, 8)
        write_slice_header(w, header, self.sps, self.pps)
        cols = self.cols
        pcm: set[int] = set()
        last = -1
        for i, mb in coded:
            if not 0 <= i < self.count or i <= last:
                raise H264Error(f"macroblock {i} out of order or range")
            if base == SLICE_P:
                w.ue(i - last - 1)
            last = i
            if isinstance(mb, bytes):
                pcm.add(i)
                w.u(*codes.pcm_type)
                w.align_zero()
                w.raw(mb)
                continue
            # nC of the DC block: neighbours A (left) and B (above); only I_PCM neighbours count (16 each).
            x = i % cols
            left = 16 if x and (i - 1) in pcm else 0
            above = 16 if i >= cols and (i - cols) in pcm else 0
            if x and i >= cols:
                nc = (left + above + 1) >> 1
            else:
                nc = left + above
            w.u(*codes.dc[(bool(mb), nc >= 8)])
        if base == SLICE_P and last < self.count - 1:
            w.ue(self.count - 1 - last)
        w.trailing_bits()
        data = w.getvalue()
        return data[:1] + escape_rbsp(data[1:])
