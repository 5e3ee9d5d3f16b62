"""H.265 (ITU-T H.265) NAL unit helpers: types and parameter sets. Slices are never rewritten (CABAC only)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

__all__ = [
    "NAL_AUD",
    "NAL_PPS",
    "NAL_SPS",
    "NAL_VPS",
    "is_irap",
    "is_parameter_set",
    "is_vcl",
    "nal_type",
    "parameter_sets",
]

NAL_VPS: Final = 32
NAL_SPS: Final = 33
NAL_PPS: Final = 34
NAL_AUD: Final = 35
NAL_SEI_PREFIX: Final = 39
NAL_SEI_SUFFIX: Final = 40


def nal_type(nal: bytes) -> int:
    return (nal[0] >> 1) & 0x3F


def is_vcl(nal: bytes) -> bool:
    return nal_type(nal) < 32


def is_irap(nal: bytes) -> bool:
    """BLA, IDR or CRA picture (types 16-23)."""
    return 16 <= nal_type(nal) <= 23


def is_parameter_set(nal: bytes) -> bool:
    return nal_type(nal) in (NAL_VPS, NAL_SPS, NAL_PPS)


def parameter_sets(nals: Sequence[bytes]) -> tuple[bytes, ...]:
    """VPS, SPS and PPS of `nals`, in that order (the last of each kind wins)."""
    found: dict[int, bytes] = {}
    for nal in nals:
        kind = nal_type(nal)
        if kind in (NAL_VPS, NAL_SPS, NAL_PPS):
            found[kind] = nal
    return tuple(found[k] for k in (NAL_VPS, NAL_SPS, NAL_PPS) if k in found)
