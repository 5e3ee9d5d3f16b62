"""Real H.264/H.265 for recorder tests: clips encoded once with PyAV (cached on disk), published as ingest would.

A clip is a whole number of GOPs, so it loops seamlessly; its keyframes carry their parameter sets in band (as
cameras send them) and its `extradata` holds them too (Annex B), or an avcC/hvcC record with length-prefixed
access units when asked for (what FFmpeg's MP4 demuxer gives).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import msgspec
from av.video.frame import PictureType

from argus_core.bus import Bus
from argus_core.bus import subjects as s
from argus_core.bus.messages import Codec, CodecConfig, MediaBatch, MediaPacket
from argus_ingest.batch import Batcher
from argus_ingest.camera import PullSettings

TB = 90_000
CACHE = Path(tempfile.gettempdir()) / "argus-test-media"


class Clip(msgspec.Struct, frozen=True):
    codec: Codec
    width: int
    height: int
    fps: int
    gop: int
    extradata: bytes
    packets: list[tuple[bytes, bool]]  # (access unit, keyframe)
    length_prefixed: bool = False

    @property
    def config(self) -> CodecConfig:
        return CodecConfig(codec=self.codec, width=self.width, height=self.height, extradata=self.extradata)

    @property
    def frame_ticks(self) -> int:
        return TB // self.fps


def _encode(codec: Codec, width: int, height: int, fps: int, seconds: int, gop: int, bitrate: int) -> Clip:
    frames = fps * seconds
    src = av.open(f"testsrc2=size={width}x{height}:rate={fps}", format="lavfi")
    name = "libx264" if codec == "h264" else "libx265"
    enc = av.CodecContext.create(name, "w")
    assert isinstance(enc, av.VideoCodecContext)
    enc.width = width
    enc.height = height
    enc.pix_fmt = "yuv420p"
    enc.time_base = Fraction(1, fps)
    enc.framerate = Fraction(fps, 1)
    enc.bit_rate = bitrate
    enc.gop_size = gop
    enc.max_b_frames = 0
    if codec == "h264":
        enc.options = {"preset": "veryfast", "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes=0"}
    else:
        enc.options = {
            "preset": "ultrafast",
            "x265-params": f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes=0:log-level=error:repeat-headers=1",
        }
    packets: list[tuple[bytes, bool]] = []
    try:
        for index, frame in enumerate(src.decode(video=0)):
            if index >= frames:
                break
            out = frame.reformat(format="yuv420p")
            out.pts = index
            out.pict_type = PictureType.NONE  # a decoded frame says I: the encoder would make every frame an IDR
            packets += [(bytes(p), p.is_keyframe) for p in enc.encode(out)]
        packets += [(bytes(p), p.is_keyframe) for p in enc.encode(None)]
    finally:
        src.close()
    assert len(packets) == frames, (len(packets), frames)
    assert packets[0][1]
    return Clip(codec, width, height, fps, gop, _parameter_sets(codec, packets[0][0]), packets)


def _parameter_sets(codec: Codec, keyframe: bytes) -> bytes:
    wanted = {32, 33, 34} if codec == "h265" else {7, 8}
    out = []
    for unit in keyframe.split(b"\x00\x00\x01")[1:]:
        unit = unit.rstrip(b"\x00")
        kind = (unit[0] >> 1) & 0x3F if codec == "h265" else unit[0] & 0x1F
        if kind in wanted:
            out.append(b"\x00\x00\x00\x01" + unit)
    return b"".join(out)


def clip(
    codec: Codec = "h264",
    width: int = 640,
    height: int = 360,
    *,
    fps: int = 25,
    seconds: int = 4,
    gop: int = 50,
    bitrate: int = 800_000,
) -> Clip:
    """A clip, encoded on first use and cached on disk (shared by parallel test workers)."""
    key = hashlib.sha256(f"v2|{codec}|{width}|{height}|{fps}|{seconds}|{gop}|{bitrate}".encode()).hexdigest()[:16]
    path = CACHE / f"{key}.msgpack"
    if path.exists():
        return msgspec.msgpack.decode(path.read_bytes(), type=Clip)
    made = _encode(codec, width, height, fps, seconds, gop, bitrate)
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_bytes(msgspec.msgpack.encode(made))
    tmp.replace(path)
    return made


def length_prefixed(c: Clip) -> Clip:
    """The same clip as the MP4 demuxer would give it: an avcC/hvcC record and length-prefixed access units."""
    path = CACHE / f"lp-{os.getpid()}-{id(c)}.mp4"
    CACHE.mkdir(parents=True, exist_ok=True)
    try:
        with av.open(str(path), "w", format="mp4") as out:
            stream = out.add_mux_stream("h264" if c.codec == "h264" else "hevc", width=c.width, height=c.height)
            stream.time_base = Fraction(1, TB)
            for i, (data, key) in enumerate(c.packets):
                p = av.Packet(c.extradata + data if i == 0 else data)
                p.stream = stream
                p.time_base = Fraction(1, TB)
                p.pts = p.dts = i * c.frame_ticks
                p.duration = c.frame_ticks
                p.is_keyframe = key
                out.mux(p)
        with av.open(str(path)) as inp:
            vs = inp.streams.video[0]
            extradata = bytes(vs.codec_context.extradata or b"")
            packets = [(bytes(p), p.is_keyframe) for p in inp.demux(vs) if p.size]
    finally:
        path.unlink(missing_ok=True)
    assert extradata[:1] == b"\x01"
    return msgspec.structs.replace(c, extradata=extradata, packets=packets, length_prefixed=True)


T0_NS = 1_763_700_000_000_000_000


@dataclass
class Camera:
    """One published camera stream: frame i of its timeline is captured at `t0_ns + i * frame`."""

    camera: str
    clip: Clip
    session: str = "s1"
    t0_ns: int = T0_NS
    frame: int = 0
    seq: int = 0
    pts_base: int = 0
    sent: list[MediaPacket] = field(default_factory=list)

    def packet(self, **override: object) -> MediaPacket:
        c = self.clip
        data, key = c.packets[self.frame % len(c.packets)]
        ticks = self.pts_base + self.frame * c.frame_ticks
        pkt = MediaPacket(
            camera=self.camera,
            stream="main",
            session=self.session,
            seq=self.seq,
            pts=ticks,
            dts=ticks,
            duration=c.frame_ticks,
            keyframe=key,
            capture_ns=self.t0_ns + self.frame * 1_000_000_000 // c.fps,
            time_trusted=True,
            data=data,
            config=c.config if key else None,
        )
        if override:
            pkt = msgspec.structs.replace(pkt, **override)
        self.frame += 1
        self.seq += 1
        return pkt

    def new_session(self, session: str, *, skip_frames: int = 0) -> None:
        """Ingest reconnected: a new session, seq from 0, after `skip_frames` frames of silence."""
        self.session = session
        self.seq = 0
        self.frame += skip_frames

    def packets(self, count: int) -> Iterator[MediaPacket]:
        for _ in range(count):
            yield self.packet()


INGEST = PullSettings()  # ingest's default batch limits


class Batches:
    """Packets into `MediaBatch`es by ingest's own rules (`argus_ingest.batch`), a new batch at a session change."""

    def __init__(self) -> None:
        self._batcher: Batcher | None = None

    def add(self, pkt: MediaPacket) -> list[MediaBatch]:
        out: list[MediaBatch] = []
        batcher = self._batcher
        same = batcher is not None and (batcher.camera, batcher.stream, batcher.session) == (
            pkt.camera,
            pkt.stream,
            pkt.session,
        )
        if batcher is None or not same:
            out.extend(self.flush())
            batcher = self._batcher = Batcher(
                pkt.camera, pkt.stream, pkt.session, max_s=INGEST.batch_max_s, max_bytes=INGEST.batch_max_bytes
            )
        batch = batcher.add(pkt)
        if batch is not None:
            out.append(batch)
        return out

    def flush(self) -> list[MediaBatch]:
        rest = self._batcher.take() if self._batcher is not None else None
        return [rest] if rest is not None else []


async def persist(bus: Bus, batch: MediaBatch) -> None:
    """Store one batch in the MEDIA stream as ingest does (the msg id names the camera too: tests reuse sessions)."""
    first = batch.packets[0]
    await bus.persist(
        s.RECORD,
        batch,
        msg_id=f"{batch.camera}.{batch.stream}.{batch.session}.{first.seq}",
        camera=batch.camera,
        stream=batch.stream,
    )


async def publish(bus: Bus, packets: list[MediaPacket] | Iterator[MediaPacket], *, sent: list[MediaPacket]) -> None:
    """Publish to JetStream in batches as ingest does (the last one whatever it holds), fast."""
    batches = Batches()
    pending: list[asyncio.Future[object]] = []
    for pkt in packets:
        sent.append(pkt)
        for batch in batches.add(pkt):
            pending.append(asyncio.ensure_future(persist(bus, batch)))
        if len(pending) >= 16:
            await asyncio.gather(*pending)
            pending.clear()
    pending.extend(asyncio.ensure_future(persist(bus, batch)) for batch in batches.flush())
    await asyncio.gather(*pending)


async def publish_paced(
    bus: Bus,
    cameras: list[Camera],
    frames: int,
    *,
    speed: float = 1.0,
    before_frame: Callable[[int], object] | None = None,
) -> None:
    """Publish `frames` frames of each camera at `speed` x real time (capture times stay the cameras' own), each
    camera's packets in batches as ingest makes them; what a camera's last batch holds at the end is published."""
    fps = cameras[0].clip.fps
    started = time.monotonic()
    batches = {cam.camera: Batches() for cam in cameras}
    for i in range(frames):
        if before_frame is not None:
            result = before_frame(i)
            if asyncio.iscoroutine(result):
                await result
        due = started + i / fps / speed
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        for cam in cameras:
            pkt = cam.packet()
            cam.sent.append(pkt)
            for batch in batches[cam.camera].add(pkt):
                await persist(bus, batch)
    for cam in cameras:
        for batch in batches[cam.camera].flush():
            await persist(bus, batch)
