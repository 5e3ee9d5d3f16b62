"""H.264 / H.265 framing shared by ingest, the recorder and live view: start codes, length prefixes, avcC/hvcC.

An access unit comes either in Annex B (NAL units after `00 00 01` or `00 00 00 01` start codes, as FFmpeg's RTSP
demuxer gives them) or length-prefixed (each NAL unit after its 1, 2 or 4 byte big-endian length, when the stream's
`extradata` is an `avcC`/`hvcC` record, whose first byte is the record version, 1). Only the framing is read here;
what each service does with the units (parameter sets, picture size, RTP, muxing) stays in the service.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

from argus_core.errors import ArgusError

START_CODE: Final = b"\x00\x00\x00\x01"
_START3: Final = b"\x00\x00\x01"

H264_SPS: Final = 7
H264_PPS: Final = 8
H265_VPS: Final = 32
H265_SPS: Final = 33
H265_PPS: Final = 34


class BitstreamError(ArgusError, ValueError):
    """An access unit or a codec configuration is not the H.264/H.265 framing it claims to be."""


def is_annexb(data: bytes) -> bool:
    return data.startswith(_START3) or data.startswith(START_CODE)


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


def iter_length_prefixed(data: bytes, length_size: int) -> Iterator[memoryview]:
    """The NAL units of a length-prefixed access unit, as views; `BitstreamError` if the lengths do not add up."""
    view = memoryview(data)
    pos = 0
    n = len(data)
    while pos < n:
        if pos + length_size > n:
            raise BitstreamError(f"truncated NAL length at byte {pos} of {n}")
        size = int.from_bytes(view[pos : pos + length_size], "big")
        pos += length_size
        if size == 0 or pos + size > n:
            raise BitstreamError(f"NAL unit of {size} bytes at byte {pos} overruns the {n}-byte access unit")
        yield view[pos : pos + size]
        pos += size


def split_length_prefixed(data: bytes, length_size: int = 4) -> list[bytes]:
    return [bytes(unit) for unit in iter_length_prefixed(data, length_size)]


def nal_type(codec: str, nal: bytes | memoryview) -> int:
    """The NAL unit type (-1 for an empty unit)."""
    if not nal:
        return -1
    return ((nal[0] >> 1) & 0x3F) if codec == "h265" else (nal[0] & 0x1F)


def config_record(codec: str, record: bytes) -> tuple[int, list[bytes]]:
    """(NAL length size, parameter set NAL units) of an avcC (`h264`) or hvcC (`h265`) record."""
    return _hvcc(record) if codec == "h265" else _avcc(record)


def _avcc(record: bytes) -> tuple[int, list[bytes]]:
    if len(record) < 7:
        raise BitstreamError("avcC record shorter than its header")
    length_size = (record[4] & 0x03) + 1
    units: list[bytes] = []
    pos = 5
    count = record[pos] & 0x1F  # sequence parameter sets, then a count byte of picture parameter sets
    pos += 1
    for _ in range(2):
        for _ in range(count):
            if pos + 2 > len(record):
                raise BitstreamError("truncated avcC parameter set")
            size = int.from_bytes(record[pos : pos + 2], "big")
            pos += 2
            if pos + size > len(record):
                raise BitstreamError("avcC parameter set runs past the record")
            units.append(record[pos : pos + size])
            pos += size
        if pos >= len(record):
            break
        count = record[pos]
        pos += 1
    return length_size, units


def _hvcc(record: bytes) -> tuple[int, list[bytes]]:
    if len(record) < 23:
        raise BitstreamError("hvcC record shorter than its header")
    length_size = (record[21] & 0x03) + 1
    units: list[bytes] = []
    arrays = record[22]
    pos = 23
    for _ in range(arrays):
        if pos + 3 > len(record):
            raise BitstreamError("truncated hvcC array")
        count = int.from_bytes(record[pos + 1 : pos + 3], "big")
        pos += 3
        for _ in range(count):
            if pos + 2 > len(record):
                raise BitstreamError("truncated hvcC parameter set")
            size = int.from_bytes(record[pos : pos + 2], "big")
            pos += 2
            if pos + size > len(record):
                raise BitstreamError("hvcC parameter set runs past the record")
            units.append(record[pos : pos + size])
            pos += size
    return length_size, units
