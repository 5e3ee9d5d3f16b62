"""H.264 access units as aiortc's RTP packetiser wants them: Annex B, parameter sets in band before each IDR.

aiortc's H.264 packetiser splits what it is given at Annex B start codes, so an access unit that arrives
length-prefixed (AVCC, as from an MP4 demuxer) is rewritten with start codes. A browser decoder needs the SPS and
PPS before the first IDR it sees; a camera that sends them only out of band (the SDP's `sprop-parameter-sets`,
carried in `CodecConfig.extradata`) gets them put in front of every keyframe. Nothing is decoded or re-encoded.
Filler data NAL units (type 12, padding of constant bit rate cameras) carry no picture and are left out (a setting).
"""

from __future__ import annotations

from typing import Final

START: Final = b"\x00\x00\x00\x01"
_START3: Final = b"\x00\x00\x01"
NAL_IDR: Final = 5
NAL_SPS: Final = 7
NAL_PPS: Final = 8
NAL_FILLER: Final = 12


class BitstreamError(ValueError):
    """An access unit or a configuration that is neither Annex B nor well-formed AVCC."""


def is_annexb(data: bytes) -> bool:
    return data.startswith(_START3) or data.startswith(START)


def split_annexb(data: bytes) -> list[bytes]:
    """The NAL units of an Annex B byte stream, without start codes (trailing zero bytes dropped)."""
    nals: list[bytes] = []
    start = data.find(_START3)
    while start >= 0:
        begin = start + 3
        nxt = data.find(_START3, begin)
        end = len(data) if nxt < 0 else nxt
        nal = data[begin:end].rstrip(b"\x00")
        if nal:
            nals.append(nal)
        start = nxt
    return nals


def split_avcc(data: bytes, length_size: int = 4) -> list[bytes]:
    """The NAL units of a length-prefixed access unit; `BitstreamError` if the lengths do not add up."""
    nals: list[bytes] = []
    pos = 0
    while pos < len(data):
        if pos + length_size > len(data):
            raise BitstreamError("AVCC access unit ends inside a NAL unit length")
        size = int.from_bytes(data[pos : pos + length_size], "big")
        pos += length_size
        if size == 0 or pos + size > len(data):
            raise BitstreamError("AVCC NAL unit length runs past the access unit")
        nals.append(data[pos : pos + size])
        pos += size
    return nals


def nal_units(data: bytes, length_size: int = 4) -> list[bytes]:
    """The NAL units of an access unit in either framing."""
    return split_annexb(data) if is_annexb(data) else split_avcc(data, length_size)


def nal_type(nal: bytes) -> int:
    return nal[0] & 0x1F


def config_parameter_sets(extradata: bytes) -> tuple[tuple[bytes, ...], int]:
    """(SPS and PPS NAL units, AVCC length size) of a stream's extradata, Annex B or avcC; ((), 4) if none."""
    if not extradata:
        return (), 4
    if is_annexb(extradata):
        return tuple(n for n in split_annexb(extradata) if nal_type(n) in (NAL_SPS, NAL_PPS)), 4
    if extradata[0] != 1 or len(extradata) < 7:
        raise BitstreamError("extradata is neither Annex B nor an avcC record")
    length_size = (extradata[4] & 0x03) + 1
    out: list[bytes] = []
    pos = 5
    try:
        for count_mask in (0x1F, 0xFF):
            count = extradata[pos] & count_mask
            pos += 1
            for _ in range(count):
                size = int.from_bytes(extradata[pos : pos + 2], "big")
                nal = extradata[pos + 2 : pos + 2 + size]
                if len(nal) != size or not size:
                    raise BitstreamError("avcC parameter set runs past the record")
                out.append(nal)
                pos += 2 + size
    except IndexError as exc:
        raise BitstreamError("avcC record ends early") from exc
    return tuple(out), length_size


def for_rtp(
    data: bytes,
    keyframe: bool,
    parameter_sets: tuple[bytes, ...] = (),
    length_size: int = 4,
    *,
    strip_filler: bool = True,
) -> bytes:
    """The access unit in Annex B, filler data removed (unless `strip_filler` is false), with `parameter_sets` in
    front of a keyframe that lacks an SPS or a PPS. Returns `data` itself when nothing needs changing."""
    annexb = is_annexb(data)
    nals = split_annexb(data) if annexb else split_avcc(data, length_size)
    types = [nal_type(n) for n in nals]
    missing = keyframe and bool(parameter_sets) and not (NAL_SPS in types and NAL_PPS in types)
    filler = strip_filler and NAL_FILLER in types
    if annexb and not missing and not filler:
        return data
    kept = [n for n, t in zip(nals, types, strict=True) if t != NAL_FILLER or not strip_filler]
    if missing:
        present = set(kept)
        kept = [p for p in parameter_sets if p not in present] + kept
    return b"".join(START + n for n in kept)
