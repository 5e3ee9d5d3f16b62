"""H.264 access units as aiortc's RTP packetiser wants them: Annex B, parameter sets in band before each IDR.

aiortc's H.264 packetiser splits what it is given at Annex B start codes, so an access unit that arrives
length-prefixed (AVCC, as from an MP4 demuxer) is rewritten with start codes. A browser decoder needs the SPS and
PPS before the first IDR it sees; a camera that sends them only out of band (the SDP's `sprop-parameter-sets`,
carried in `CodecConfig.extradata`) gets them put in front of every keyframe. Nothing is decoded or re-encoded.
Filler data NAL units (type 12, padding of constant bit rate cameras) carry no picture and are left out (a setting).
"""

from __future__ import annotations

from typing import Final

from argus_core.bitstream import H264_PPS as NAL_PPS
from argus_core.bitstream import H264_SPS as NAL_SPS
from argus_core.bitstream import START_CODE, config_record, nal_type, split_annexb, split_length_prefixed
from argus_core.bitstream import BitstreamError as BitstreamError
from argus_core.bitstream import is_annexb as is_annexb

NAL_FILLER: Final = 12


def config_parameter_sets(extradata: bytes) -> tuple[tuple[bytes, ...], int]:
    """(SPS and PPS NAL units, NAL length size) of a stream's extradata: an avcC record's length size, or 0 when
    the extradata is Annex B or empty (the stream's access units are Annex B then)."""
    if not extradata:
        return (), 0
    if is_annexb(extradata):
        return tuple(n for n in split_annexb(extradata) if nal_type("h264", n) in (NAL_SPS, NAL_PPS)), 0
    if extradata[0] != 1:
        raise BitstreamError("extradata is neither Annex B nor an avcC record")
    length_size, units = config_record("h264", extradata)
    if not all(units):
        raise BitstreamError("avcC record holds an empty parameter set")
    return tuple(units), length_size


def for_rtp(
    data: bytes,
    keyframe: bool,
    parameter_sets: tuple[bytes, ...] = (),
    length_size: int = 0,
    *,
    strip_filler: bool = True,
) -> bytes:
    """The access unit in Annex B, filler data removed (unless `strip_filler` is false), with `parameter_sets` in
    front of a keyframe that lacks an SPS or a PPS. Returns `data` itself when nothing needs changing.

    `length_size` is the stream's framing from its configuration: an avcC record's NAL length size, 0 for Annex B.
    The bytes cannot tell (a 4-byte length of 256-511, or of 1, starts like a start code); a unit that does not
    parse as length-prefixed but starts with a start code is taken as Annex B, as some sources mix them."""
    annexb = not length_size
    if annexb:
        if not is_annexb(data):
            raise BitstreamError("the access unit does not start with a start code (the stream is Annex B)")
        nals = split_annexb(data)
    else:
        try:
            nals = split_length_prefixed(data, length_size)
        except BitstreamError:
            if not is_annexb(data):
                raise
            annexb = True
            nals = split_annexb(data)
    types = [nal_type("h264", n) for n in nals]
    missing = keyframe and bool(parameter_sets) and not (NAL_SPS in types and NAL_PPS in types)
    filler = strip_filler and NAL_FILLER in types
    if annexb and not missing and not filler:
        return data
    kept = [n for n, t in zip(nals, types, strict=True) if t != NAL_FILLER or not strip_filler]
    if missing:
        present = set(kept)
        kept = [p for p in parameter_sets if p not in present] + kept
    return b"".join(START_CODE + n for n in kept)
