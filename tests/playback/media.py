"""Recordings for playback tests: real fMP4 segments made by the recorder's muxer, indexed by the recorder's Index.

Two kinds of footage:

* `StockSegment`: one short real segment (testsrc2, H.264 or H.265) muxed once and stored under as many keys as
  the index rows need: an hour of rows costs one encode.
* `simcam_segments`: simcam's scene, every frame carrying its capture time in the OSD time code
  (`argus_simcam.timecode`), encoded with simcam's encoder settings and cut into GOP-aligned segments: what the
  recorder would store from a simcam camera, with wall-clock times that the pictures themselves prove.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction

import av
import numpy as np

from argus_core.bus.messages import Codec, CodecConfig
from argus_core.storage import ObjectStore
from argus_recorder.index import GapRow, Index, SegmentRow
from argus_recorder.keys import init_key, segment_key
from argus_recorder.muxer import MuxedSegment, MuxPacket, mux_segment
from argus_simcam.encoder import open_encoder
from argus_simcam.scene import CameraScene, Panorama, ViewWindow
from argus_simcam.stream import StreamSpec
from tests.recorder.media import TB, clip

MS = 1_000_000  # ns per ms


@dataclass(frozen=True)
class StockSegment:
    """One real segment of `frames` frames at `fps`; its bytes are reused for every row that points at it."""

    config: CodecConfig
    muxed: MuxedSegment
    frames: int
    fps: int
    gop: int

    @property
    def duration_ms(self) -> int:
        return self.frames * 1000 // self.fps


def stock_segment(
    codec: Codec = "h264",
    width: int = 320,
    height: int = 180,
    *,
    fps: int = 5,
    seconds: int = 6,
    gop_s: int = 2,
    bitrate: int = 150_000,
) -> StockSegment:
    c = clip(codec, width, height, fps=fps, seconds=seconds, gop=fps * gop_s, bitrate=bitrate)
    ticks = TB // fps
    packets = [MuxPacket(d, i * ticks, i * ticks, ticks, k) for i, (d, k) in enumerate(c.packets)]
    return StockSegment(c.config, mux_segment(c.config, packets), len(packets), fps, fps * gop_s)


@dataclass(frozen=True)
class Stored:
    """A segment as stored: its index row, init and media bytes."""

    row: SegmentRow
    init: bytes
    media: bytes


@dataclass
class Recording:
    camera: str
    segments: list[Stored] = field(default_factory=list)
    gaps: list[GapRow] = field(default_factory=list)

    def frames(self) -> int:
        return sum(s.row.frames for s in self.segments)


def row_for(
    camera: str,
    start_ms: int,
    end_ms: int,
    config: CodecConfig,
    muxed: MuxedSegment,
    frames: int,
    keyframes: int,
    *,
    session: str = "s1",
    first_seq: int = 0,
    stream: str = "main",
) -> SegmentRow:
    return SegmentRow(
        camera=camera,
        stream=stream,
        start_ns=start_ms * MS,
        end_ns=end_ms * MS,
        duration_ms=end_ms - start_ms,
        frames=frames,
        keyframes=keyframes,
        bytes=len(muxed.media),
        sha256=muxed.sha256,
        codec=config.codec,
        width=config.width,
        height=config.height,
        object_key=segment_key(camera, stream, start_ms * MS, session, first_seq),
        init_key=init_key(camera, stream, config),
        time_trusted=True,
        session=session,
        first_seq=first_seq,
        last_seq=first_seq + frames - 1,
        repaired_timestamps=0,
        recorder="playback-test",
    )


def stock_rows(camera: str, stock: StockSegment, start_ms: int, count: int, *, seq: int = 0) -> list[Stored]:
    """`count` contiguous segments of `stock` from `start_ms`."""
    out = []
    d = stock.duration_ms
    for i in range(count):
        s = start_ms + i * d
        row = row_for(
            camera, s, s + d, stock.config, stock.muxed, stock.frames, stock.frames // stock.gop, first_seq=seq
        )
        seq += stock.frames
        out.append(Stored(row, stock.muxed.init, stock.muxed.media))
    return out


def gap_row(camera: str, start_ms: int, end_ms: int, cause: str, detail: str = "") -> GapRow:
    return GapRow(
        camera=camera,
        stream="main",
        start_ns=start_ms * MS,
        end_ns=end_ms * MS,
        cause=cause,
        detail=detail,
        session=None,
        last_seq=None,
        recorder="playback-test",
    )


async def store_recording(index: Index, store: ObjectStore, recording: Recording, *, upload: bool = True) -> None:
    """Upload every object (eight at a time) and write every row, as the recorder does: object first, then row."""
    bucket = store.config.recordings_bucket
    slots = asyncio.Semaphore(8)
    inits = {s.row.init_key: s.init for s in recording.segments}

    async def put(key: str, data: bytes) -> None:
        async with slots:
            await store.put(bucket, key, data, content_type="video/mp4")

    if upload:
        async with asyncio.TaskGroup() as tasks:
            for key, data in inits.items():
                tasks.create_task(put(key, data))
            for seg in recording.segments:
                tasks.create_task(put(seg.row.object_key, seg.media))
    for seg in recording.segments:
        await index.insert_segment(seg.row)
    for gap in recording.gaps:
        await index.insert_gap(gap)


# --- simcam footage ------------------------------------------------------------------------------------------------


def _parameter_sets(keyframe: bytes) -> bytes:
    out = []
    for unit in keyframe.split(b"\x00\x00\x01")[1:]:
        unit = unit.rstrip(b"\x00")
        if unit and unit[0] & 0x1F in (7, 8):
            out.append(b"\x00\x00\x00\x01" + unit)
    return b"".join(out)


def simcam_segments(
    camera: str,
    t0_ms: int,
    seconds: int,
    *,
    fps: int = 10,
    gop_s: int = 1,
    segment_s: int = 6,
    width: int = 640,
    height: int = 360,
) -> list[Stored]:
    """`seconds` of simcam footage from `t0_ms`, frame i captured (and time-coded) at `t0_ms + i * 1000 / fps`.

    Blocking (about a millisecond a frame): run it in a thread.
    """
    spec = StreamSpec(width, height, fps=fps, bitrate=400_000, gop_s=gop_s)
    scene = CameraScene(Panorama.build(), camera, width, height)
    enc = open_encoder("h264", width, height, spec, preset="ultrafast")
    frame_ms = 1000 // fps
    encoded: list[tuple[bytes, bool]] = []
    for i in range(seconds * fps):
        picture = scene.render(ViewWindow(), i / fps, capture_ms=t0_ms + i * frame_ms)
        frame = av.VideoFrame.from_ndarray(picture, format="yuv420p")
        frame.pts = i
        encoded += [(bytes(p), p.is_keyframe) for p in enc.encode(frame)]
    encoded += [(bytes(p), p.is_keyframe) for p in enc.encode(None)]
    assert len(encoded) == seconds * fps
    assert encoded[0][1]
    config = CodecConfig(codec="h264", width=width, height=height, extradata=_parameter_sets(encoded[0][0]))
    ticks = TB // fps
    per = segment_s * fps
    out: list[Stored] = []
    for first in range(0, len(encoded), per):
        chunk = encoded[first : first + per]
        packets = [MuxPacket(d, i * ticks, i * ticks, ticks, k) for i, (d, k) in enumerate(chunk)]
        muxed = mux_segment(config, packets)
        start = t0_ms + first * frame_ms
        row = row_for(
            camera,
            start,
            start + len(chunk) * frame_ms,
            config,
            muxed,
            len(chunk),
            sum(1 for _, k in chunk if k),
            first_seq=first,
        )
        out.append(Stored(row, muxed.init, muxed.media))
    return out


# --- reading media back -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Demuxed:
    data: bytes
    pts: int
    dts: int
    keyframe: bool


def demux(data: bytes) -> tuple[Fraction, list[Demuxed]]:
    """The time base and packets (payload, times, key flag) of an MP4 in memory."""
    with av.open(io.BytesIO(data), "r", format="mp4") as inp:
        stream = inp.streams.video[0]
        assert stream.time_base is not None
        packets = [
            Demuxed(bytes(p), p.pts, p.dts, p.is_keyframe)
            for p in inp.demux(stream)
            if p.size and p.pts is not None and p.dts is not None
        ]
        return stream.time_base, packets


def timecodes(data: bytes) -> list[tuple[float, int | None]]:
    """Each decoded frame of an MP4 in memory: (its time in s, the capture time its time code reads, ms)."""
    from argus_simcam.timecode import read_timecode

    out: list[tuple[float, int | None]] = []
    with av.open(io.BytesIO(data), "r", format="mp4") as inp:
        stream = inp.streams.video[0]
        for frame in inp.decode(stream):
            out.append((float(frame.time or 0.0), read_timecode(frame)))
    return out


def luma_timecode(width: int, height: int, luma: bytes) -> int | None:
    from argus_simcam.timecode import read_timecode

    return read_timecode(np.frombuffer(luma, dtype=np.uint8).reshape(height, width))


def stored_packets(segments: Sequence[Stored]) -> list[tuple[int, Demuxed]]:
    """Every stored packet in order, with its wall-clock capture time in ms."""
    out: list[tuple[int, Demuxed]] = []
    for seg in segments:
        tb, packets = demux(seg.init + seg.media)
        base = packets[0].dts
        for p in packets:
            out.append((seg.row.start_ns // MS + int((p.dts - base) * tb * 1000), p))
    return out


# --- a recorded hour -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HourLayout:
    """What `recorded_hour` lays down, for the tests to check against (times in ms from the hour's start)."""

    spans: tuple[tuple[int, int], ...]
    gaps: tuple[tuple[int, int, str], ...]  # recorder gap rows
    holes: tuple[tuple[int, int], ...]  # holes no gap row explains
    codec_change_ms: int


HOUR = HourLayout(
    spans=((0, 1_200_000), (1_320_000, 2_400_000), (2_412_000, 3_600_000)),
    gaps=((1_200_000, 1_320_000, "camera_offline"),),
    holes=((2_400_000, 2_412_000),),
    codec_change_ms=3_000_000,
)


def recorded_hour(camera: str, t0_ms: int, *, second: StockSegment, first: StockSegment) -> Recording:
    """An hour of 6 s segments with a 2-minute camera outage (a gap row), a 12 s hole (no gap row) and a change of
    codec or picture size at 50 minutes (`second` from then on)."""
    rec = Recording(camera)
    seq = 0
    for lo, hi in HOUR.spans:
        pos = lo
        while pos < hi:
            stock = first if pos < HOUR.codec_change_ms else second
            (stored,) = stock_rows(camera, stock, t0_ms + pos, 1, seq=seq)
            seq += stock.frames
            rec.segments.append(stored)
            pos += stock.duration_ms
        assert pos == hi, (lo, hi, pos)
    for lo, hi, cause in HOUR.gaps:
        rec.gaps.append(gap_row(camera, t0_ms + lo, t0_ms + hi, cause, "test outage"))
    return rec
