"""Clips: an MP4 of any range, remuxed from the stored segments with PyAV (packets copied, never decoded).

The clip starts on the keyframe at or before the requested start (the first frame a player can show without
earlier ones) and ends with the last packet whose decode time is before the requested end. Timestamps follow the
wall clock: a packet is placed at its segment's indexed start plus its time within the segment, so a gap inside
the range shows as a held frame and the clip's length is the range's (give or take a GOP at the start).

The output is fragmented MP4 (`frag_keyframe+empty_moov+default_base_moof`, one fragment per GOP, an `mfra`
index at the end), written to a non-seekable sink: bytes leave as each GOP is complete, so a clip of hours is
never whole in memory. `ClipJob` drives it: a fetch task reads segments from S3 one ahead of the remuxer (a
queue of two), the remuxer runs in the playback executor, and each produced chunk is hashed and written to the
client before the next segment is taken.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, TypeVar

import av
import av.error

from argus_api.playback.delivery import SegmentSource
from argus_api.playback.index import Segment, iso
from argus_core.errors import ArgusError

log = logging.getLogger(__name__)

T = TypeVar("T")

MOVFLAGS = "frag_keyframe+empty_moov+default_base_moof"


class ClipError(ArgusError):
    """A clip could not be cut from what is stored."""


class CodecChange(ClipError):
    def __init__(self, at_ms: int) -> None:
        super().__init__(f"the codec or picture size changes at {iso(at_ms)}")
        self.at_ms = at_ms


class NothingToClip(ClipError):
    """No keyframe in the range (or in the part of it the caller may see)."""


@dataclass(frozen=True, slots=True)
class ClipResult:
    size: int
    sha256: bytes
    packets: int
    segments: int
    start_ms: int  # wall-clock time of the first packet (a keyframe)
    end_ms: int  # wall-clock end of the last packet


def check_one_configuration(segments: Sequence[Segment]) -> None:
    """A clip is one track with one sample description: refuse a range over a change of init segment."""
    for prev, seg in zip(segments, segments[1:], strict=False):
        if seg.init_key != prev.init_key:
            raise CodecChange(seg.start_ms)


class _Sink:
    """The muxer's output: a write-only, non-seekable file whose bytes are taken away as they come."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def write(self, data: bytes | memoryview) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def seekable(self) -> bool:
        return False

    def take(self) -> bytes:
        data = b"".join(self._parts)
        self._parts.clear()
        return data


class Remuxer:
    """One clip's muxer. Blocking: call it from one thread at a time (the playback executor), in segment order."""

    def __init__(self, *, from_ms: int, until_ms: int, not_before_ms: int | None, title: str) -> None:
        self._from = from_ms
        self._until = until_ms
        self._floor = not_before_ms
        self._title = title
        self._sink = _Sink()
        self._out: av.container.OutputContainer | None = None
        self._stream: Any = None
        self._zero: Fraction | None = None  # wall time (s) of the first packet kept: the clip's time 0
        self._last_dts = -1
        self._shift = 0
        self.done = False
        self.packets = 0
        self.segments = 0
        self.start_ms: int | None = None
        self.end_ms: int | None = None

    def add(self, init: bytes, media: bytes, seg: Segment) -> bytes:
        """Remux the wanted packets of one stored segment; the output bytes produced so far."""
        if self.done:
            return b""
        try:
            with av.open(io.BytesIO(init + media), "r", format="mp4") as inp:
                stream = inp.streams.video[0]
                tb = stream.time_base
                if tb is None:
                    raise ClipError(f"{seg.object_key}: the track has no time base")
                packets: list[tuple[int, int, av.Packet[Any]]] = []
                for p in inp.demux(stream):
                    if p.dts is not None and p.pts is not None and p.size:  # skip the demuxer's flush packet
                        packets.append((p.dts, p.pts, p))
                if not packets:
                    return b""
                base_dts = packets[0][0]
                start_s = Fraction(seg.start_ms, 1000)

                def wall(ticks: int) -> Fraction:
                    return start_s + (ticks - base_dts) * tb

                first = 0
                if self._zero is None:
                    chosen = self._first_keyframe([(wall(d), p.is_keyframe) for d, _, p in packets])
                    if chosen is None:
                        return b""
                    first = chosen
                kept = 0
                for dts, pts, packet in packets[first:]:
                    if wall(dts) >= Fraction(self._until, 1000):
                        self.done = True
                        break
                    if self._zero is None:
                        self._zero = wall(dts)
                        self.start_ms = int(self._zero * 1000)
                        self._open(stream)
                    out_dts = round((wall(dts) - self._zero) / tb) + self._shift
                    if out_dts <= self._last_dts:  # media clock ran ahead of the wall clock: keep decode order
                        self._shift += self._last_dts + 1 - out_dts
                        out_dts = self._last_dts + 1
                    out_pts = out_dts + (pts - dts)
                    packet.stream = self._stream
                    packet.dts = out_dts
                    packet.pts = out_pts
                    assert self._out is not None
                    self._out.mux(packet)
                    self._last_dts = out_dts
                    duration = packet.duration or 0
                    self.end_ms = int((wall(dts) + duration * tb) * 1000)
                    self.packets += 1
                    kept += 1
                if kept:
                    self.segments += 1
        except av.error.FFmpegError as exc:
            raise ClipError(f"remuxing {seg.object_key}: {exc}") from exc
        return self._sink.take()

    def _first_keyframe(self, packets: list[tuple[Fraction, bool]]) -> int | None:
        """Index of the packet the clip starts on in this segment, or None if it starts in a later one."""
        target = Fraction(self._from, 1000)
        floor = Fraction(self._floor, 1000) if self._floor is not None else None
        keys = [(i, t) for i, (t, key) in enumerate(packets) if key and (floor is None or t >= floor)]
        before = [i for i, t in keys if t <= target]
        if before:
            return before[-1]
        after = [i for i, t in keys if t > target]
        return after[0] if after else None

    def _open(self, template: Any) -> None:
        self._out = av.open(self._sink, "w", format="mp4", options={"movflags": MOVFLAGS})
        self._out.metadata["title"] = self._title
        if self._zero is not None:
            self._out.metadata["creation_time"] = iso(int(self._zero * 1000))
        self._stream = self._out.add_stream_from_template(template)

    def finish(self) -> bytes:
        """Close the container (the last fragment and the mfra index); the remaining bytes."""
        if self._out is None:
            raise NothingToClip("no keyframe in the range")
        try:
            self._out.close()
        except av.error.FFmpegError as exc:
            raise ClipError(f"closing the clip: {exc}") from exc
        finally:
            self._out = None
        return self._sink.take()

    def abort(self) -> None:
        if self._out is not None:
            try:
                self._out.close()
            except av.error.FFmpegError:
                pass
            self._out = None
        self._sink.take()


async def blocking(executor: Executor, fn: Callable[..., T], *args: Any) -> T:
    """Run `fn` in `executor`; if the caller is cancelled meanwhile, wait for `fn` to finish before going on, so
    that nothing else touches its state while it runs."""
    future = asyncio.get_running_loop().run_in_executor(executor, fn, *args)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        await asyncio.wait([future])
        raise


class ClipJob:
    """Fetch, remux and hand out one clip's bytes."""

    def __init__(
        self,
        source: SegmentSource,
        segments: Sequence[Segment],
        *,
        from_ms: int,
        until_ms: int,
        not_before_ms: int | None,
        title: str,
        executor: Executor,
    ) -> None:
        self._source = source
        self._segments = list(segments)
        self._executor = executor
        self._remuxer = Remuxer(from_ms=from_ms, until_ms=until_ms, not_before_ms=not_before_ms, title=title)

    async def _fetch(self, queue: asyncio.Queue[tuple[Segment, bytes, bytes] | None]) -> None:
        for seg in self._segments:
            init = await self._source.init(seg.init_key)
            media = await self._source.read(seg.object_key)
            await queue.put((seg, init.data, media))
        await queue.put(None)

    async def run(self, write: Callable[[bytes], Awaitable[None]]) -> ClipResult:
        """Stream the clip through `write`; its size and SHA-256 once the last byte is written."""
        digest = hashlib.sha256()
        size = 0

        async def emit(data: bytes) -> None:
            nonlocal size
            if data:
                digest.update(data)
                size += len(data)
                await write(data)

        queue: asyncio.Queue[tuple[Segment, bytes, bytes] | None] = asyncio.Queue(maxsize=2)
        finished = False
        try:
            try:
                async with asyncio.TaskGroup() as tasks:
                    fetcher = tasks.create_task(self._fetch(queue), name="clip-fetch")
                    while (item := await queue.get()) is not None:
                        seg, init, media = item
                        await emit(await blocking(self._executor, self._remuxer.add, init, media, seg))
                        if self._remuxer.done:
                            break
                    fetcher.cancel()
            except BaseExceptionGroup as group:  # the fetcher's error, or the remuxer's or the client's
                first = next((e for e in group.exceptions if not isinstance(e, asyncio.CancelledError)), None)
                if first is None:
                    raise
                raise first from None
            await emit(await blocking(self._executor, self._remuxer.finish))
            finished = True
        finally:
            if not finished:
                await blocking(self._executor, self._remuxer.abort)
        r = self._remuxer
        assert r.start_ms is not None
        assert r.end_ms is not None
        return ClipResult(size, digest.digest(), r.packets, r.segments, r.start_ms, r.end_ms)
