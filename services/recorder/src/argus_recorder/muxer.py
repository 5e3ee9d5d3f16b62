"""One segment of access units into fragmented MP4 (CMAF) with PyAV, without decoding: a blocking call for a thread.

The output stream is built from the codec configuration with `add_mux_stream` (no codec context, no template
stream of another container), and fed Annex B access units, the first one carrying the configuration's parameter
sets; FFmpeg's MP4 muxer derives the sample entry (`avcC`/`hvcC`) from them. With
`frag_keyframe+empty_moov+default_base_moof` the output is `ftyp` + `moov` (the init segment: it depends only on
the configuration, so it is the same bytes for every segment of that configuration) followed by one `moof`+`mdat`
fragment per GOP (the media segment). `skip_trailer` leaves out the `mfra` index, `cmaf` sets the CMAF brands.
Every media segment's decode time starts at 0; its place on the wall clock is the index row's.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import av
import av.error

from argus_core.bus.messages import CodecConfig
from argus_recorder.errors import BitstreamError, MuxError
from argus_recorder.nal import Framing, framing, to_annexb, with_parameter_sets

MOVFLAGS = "frag_keyframe+empty_moov+default_base_moof+skip_trailer+cmaf"
_CODEC_NAMES = {"h264": "h264", "h265": "hevc"}


@dataclass(frozen=True, slots=True)
class MuxPacket:
    """One access unit as the muxer takes it: times in the configuration's time base, from the segment's start."""

    data: bytes
    pts: int
    dts: int
    duration: int
    keyframe: bool


@dataclass(frozen=True, slots=True)
class MuxedSegment:
    init: bytes
    media: bytes
    sha256: str  # of `media`, hex


class _Sink:
    """A write-only, non-seekable file for the muxer: fragments are produced in order, nothing is rewritten."""

    def __init__(self) -> None:
        self.buffer = bytearray()  # one growing buffer: the muxer's writes are copied once, not kept as pieces

    def write(self, data: bytes | memoryview) -> int:
        self.buffer += data
        return len(data)

    def seekable(self) -> bool:
        return False


def split_init(data: bytes | memoryview) -> int:
    """The length of the init segment (`ftyp` and `moov`) at the start of a fragmented MP4."""
    pos = 0
    while pos + 8 <= len(data):
        raw_size, kind = struct.unpack_from(">I4s", data, pos)
        size = int(raw_size)
        if size == 1:
            if pos + 16 > len(data):
                break
            size = int(struct.unpack_from(">Q", data, pos + 8)[0])
        if size < 8:
            break
        pos += size
        if kind == b"moov":
            return pos
    raise MuxError("the muxer's output has no moov box")


def config_framing(config: CodecConfig) -> Framing:
    try:
        return framing(config.codec, config.extradata)
    except BitstreamError as exc:
        raise MuxError(f"codec configuration: {exc}") from exc


def mux_segment(config: CodecConfig, packets: Sequence[MuxPacket]) -> MuxedSegment:
    """Mux `packets` (the first a keyframe, decode times increasing) into an init and a media segment. Blocking."""
    if not packets:
        raise MuxError("no packets to mux")
    if not packets[0].keyframe:
        raise MuxError("a segment must start with a keyframe")
    f = config_framing(config)
    time_base = Fraction(config.time_base_num, config.time_base_den)
    sink = _Sink()
    try:
        with av.open(sink, "w", format="mp4", options={"movflags": MOVFLAGS}) as out:
            stream = out.add_mux_stream(_CODEC_NAMES[config.codec], width=config.width, height=config.height)
            stream.time_base = time_base
            for index, p in enumerate(packets):
                data = to_annexb(f, p.data)
                if index == 0:
                    data = with_parameter_sets(f, data)
                packet = av.Packet(data)
                packet.stream = stream
                packet.time_base = time_base
                packet.pts = p.pts
                packet.dts = p.dts
                packet.duration = p.duration
                packet.is_keyframe = p.keyframe
                out.mux(packet)
    except (av.error.FFmpegError, BitstreamError, ValueError) as exc:
        raise MuxError(f"muxing {len(packets)} packets failed: {exc}") from exc
    written = memoryview(sink.buffer)
    cut = split_init(written)
    media = bytes(written[cut:])
    if not media:
        raise MuxError("the muxer wrote no media fragment")
    return MuxedSegment(bytes(written[:cut]), media, hashlib.sha256(media).hexdigest())
