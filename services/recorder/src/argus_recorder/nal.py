"""H.264 and H.265 bitstream framing: Annex B start codes versus length-prefixed NAL units (avcC / hvcC).

Ingest forwards access units exactly as FFmpeg's demuxer gave them: Annex B with start codes (the RTSP demuxer's
usual output, parameter sets in `extradata` as Annex B too), or NAL units prefixed by their length when `extradata`
is an `avcC`/`hvcC` record (its first byte is the record version, 1). The muxer is fed Annex B only, with the
parameter sets in front of the first keyframe of each segment, from which FFmpeg's MP4 muxer builds the sample
entry (`avcC`/`hvcC`); nothing here decodes a picture.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from argus_core.bitstream import (
    H264_PPS,
    H264_SPS,
    H265_PPS,
    H265_SPS,
    H265_VPS,
    START_CODE,
    BitstreamError,
    config_record,
    is_annexb,
    iter_length_prefixed,
    nal_type,
)

H264_AUD = 9
H265_AUD = 35


@dataclass(frozen=True, slots=True)
class Framing:
    """How the access units of one codec configuration are framed, and its parameter sets in Annex B."""

    codec: str
    length_size: int  # 0: Annex B; 1, 2 or 4: length-prefixed NAL units
    parameter_sets: bytes  # Annex B, possibly empty


def iter_annexb(data: bytes) -> Iterator[memoryview]:
    """The NAL units of an Annex B buffer (without start codes); trailing zero bytes of a unit are kept."""
    view = memoryview(data)
    n = len(data)
    pos = data.find(b"\x00\x00\x01")
    while pos != -1:
        begin = pos + 3
        nxt = data.find(b"\x00\x00\x01", begin)
        end = n if nxt == -1 else nxt
        # A four-byte start code leaves its leading zero on the previous unit: drop it.
        if nxt != -1 and end > begin and data[end - 1] == 0:
            end -= 1
        if end > begin:
            yield view[begin:end]
        pos = nxt


def length_prefixed_to_annexb(data: bytes, length_size: int) -> bytes:
    return b"".join(START_CODE + bytes(unit) for unit in iter_length_prefixed(data, length_size))


def _parameter_set_types(codec: str) -> frozenset[int]:
    return frozenset({H265_VPS, H265_SPS, H265_PPS}) if codec == "h265" else frozenset({H264_SPS, H264_PPS})


def has_parameter_sets(codec: str, annexb: bytes) -> bool:
    """Whether an Annex B access unit carries its sequence parameter set in band."""
    sps = H265_SPS if codec == "h265" else H264_SPS
    return any(nal_type(codec, unit) == sps for unit in iter_annexb(annexb))


def framing(codec: str, extradata: bytes) -> Framing:
    """Read a codec configuration's `extradata`: Annex B parameter sets, or an avcC/hvcC record."""
    if not extradata:
        return Framing(codec, 0, b"")
    if extradata[0] == 1:
        length_size, units = config_record(codec, extradata)
        if length_size not in (1, 2, 4):
            raise BitstreamError(f"NAL length size {length_size} is not 1, 2 or 4")
        return Framing(codec, length_size, b"".join(START_CODE + unit for unit in units if unit))
    if not is_annexb(extradata):
        raise BitstreamError("extradata is neither Annex B nor an avcC/hvcC record")
    wanted = _parameter_set_types(codec)
    units_b = [bytes(u) for u in iter_annexb(extradata) if nal_type(codec, u) in wanted]
    return Framing(codec, 0, b"".join(START_CODE + u for u in units_b))


def to_annexb(f: Framing, data: bytes) -> bytes:
    """One access unit in Annex B, whichever framing it came in.

    The framing is the configuration's (a 4-byte length of 256-511 bytes looks like a start code, so the bytes
    themselves cannot tell); a unit that does not parse as length-prefixed but starts with a start code is taken
    as Annex B, as some sources mix them.
    """
    if not f.length_size:
        return data
    try:
        return length_prefixed_to_annexb(data, f.length_size)
    except BitstreamError:
        if is_annexb(data):
            return data
        raise


def with_parameter_sets(f: Framing, annexb: bytes) -> bytes:
    """The first access unit of a segment, carrying exactly the configuration's parameter sets.

    FFmpeg's MP4 muxer builds the sample entry (`avcC`/`hvcC`) from the parameter sets in the first access unit, so
    putting the configuration's there (in place of in-band copies of them) makes the init segment depend on the
    configuration alone. In-band parameter sets that the configuration does not hold are left alone: they describe
    this keyframe, so the sample entry is built from them.
    """
    if not f.parameter_sets:
        return annexb
    kinds = _parameter_set_types(f.codec)
    units = [bytes(u) for u in iter_annexb(annexb)]
    inband = [u for u in units if nal_type(f.codec, u) in kinds]
    configured = {bytes(u) for u in iter_annexb(f.parameter_sets)}
    if any(u not in configured for u in inband):
        return annexb
    rest = [u for u in units if nal_type(f.codec, u) not in kinds]
    aud = H265_AUD if f.codec == "h265" else H264_AUD
    head = [rest.pop(0)] if rest and nal_type(f.codec, rest[0]) == aud else []
    return b"".join(START_CODE + u for u in head) + f.parameter_sets + b"".join(START_CODE + u for u in rest)
