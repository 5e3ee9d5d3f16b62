"""One viewer's side of the fan-out: a bounded frame queue, and the aiortc track that reads it.

`Frame` is one access unit made ready for RTP once per camera (Annex B, parameter sets in band) and shared by every
viewer. `ViewerQueue` holds the frames waiting for one viewer. Its policy: a viewer more than `limit` frames behind
drops what waits and skips to the next keyframe (a passthrough relay cannot ask the camera for one), so a slow viewer
never delays the feed or the others; after a hole in the feed (lost packets) it also waits for a keyframe.

`PassthroughTrack` is the `MediaStreamTrack` aiortc's sender pulls from: each `recv()` returns an encoded `av.Packet`
(aiortc packetises it into RTP without decoding). Its timestamps start at 0 and follow the camera's, except for
frames that reach the viewer late (the cached GOP a new viewer starts with, or a backlog after a stall): those are
released at up to `catchup_speed` times real time with timestamps that follow their release, so that the player
shows the latest keyframe at once and is live within a fraction of a GOP instead of lagging by one.
"""

from __future__ import annotations

import asyncio
import collections
import fractions
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

log = logging.getLogger(__name__)

CLOCK = 90_000
TIME_BASE = fractions.Fraction(1, CLOCK)
_MIN_STEP = CLOCK // 1000  # 1 ms
_MAX_STEP = 10 * CLOCK  # a larger jump in pts is a discontinuity, not elapsed time


@dataclass(frozen=True, slots=True)
class Frame:
    """One access unit ready for RTP; `arrived` is the loop time it reached liveview (or would have, live)."""

    data: bytes
    pts: int  # 90 kHz, the camera's
    duration: int
    keyframe: bool
    session: str
    seq: int
    capture_ns: int
    arrived: float


class QueueClosed(Exception):
    """The viewer's queue was closed: its session is over."""


DropCallback = Callable[[int, str], None]


class ViewerQueue:
    """Frames waiting for one viewer; `push` never blocks and never waits for the viewer."""

    def __init__(self, limit: int, on_drop: DropCallback | None = None) -> None:
        self._limit = limit
        self._cap = limit
        self._frames: collections.deque[Frame] = collections.deque()
        self._need_key = True
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False
        self._on_drop = on_drop
        self.dropped = 0
        self.skips = 0
        self.delivered = 0

    def __len__(self) -> int:
        return len(self._frames)

    @property
    def closed(self) -> bool:
        return self._closed

    def prime(self, gop: Sequence[Frame]) -> None:
        """Start with the camera's current GOP (a keyframe first), above the usual limit until it drains."""
        if gop and gop[0].keyframe:
            self._cap = self._limit + len(gop)
            for frame in gop:
                self.push(frame)

    def push(self, frame: Frame) -> None:
        if self._closed:
            return
        if self._need_key:
            if not frame.keyframe:
                self._drop(1, "waiting_keyframe")
                return
            self._need_key = False
        elif len(self._frames) >= self._cap:
            self.skips += 1
            self._drop(len(self._frames), "slow_viewer")
            self._frames.clear()
            self._cap = self._limit
            if not frame.keyframe:
                self._need_key = True
                self._drop(1, "slow_viewer")
                return
        self._frames.append(frame)
        self._wake()

    def hole(self) -> None:
        """The feed lost packets: what waits is still good, what follows needs a keyframe first."""
        self._need_key = True

    async def get(self) -> Frame:
        while not self._frames:
            if self._closed:
                raise QueueClosed
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        frame = self._frames.popleft()
        if len(self._frames) <= self._limit:
            self._cap = self._limit
        self.delivered += 1
        return frame

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._frames.clear()
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _drop(self, count: int, reason: str) -> None:
        self.dropped += count
        if self._on_drop is not None and count:
            self._on_drop(count, reason)


class PassthroughTrack(MediaStreamTrack):
    """A video track whose `recv()` returns the camera's own H.264 access units as `av.Packet`s."""

    kind = "video"

    def __init__(
        self,
        queue: ViewerQueue,
        *,
        catchup_speed: float,
        catchup_after_s: float,
        on_first_frame: Callable[[Frame], None] | None = None,
    ) -> None:
        super().__init__()
        self._queue = queue
        self._speed = catchup_speed
        self._late_s = catchup_after_s
        self._on_first_frame = on_first_frame
        self._prev: Frame | None = None
        self._prev_out = 0
        self._prev_release = 0.0
        self.frames_sent = 0
        self.bytes_sent = 0
        self.last_sent: float | None = None  # loop time

    async def recv(self) -> av.Packet[Any]:
        if self.readyState != "live":
            raise MediaStreamError
        try:
            frame = await self._queue.get()
        except QueueClosed:
            self.stop()
            raise MediaStreamError from None
        loop = asyncio.get_running_loop()
        now = loop.time()
        prev = self._prev
        if prev is None:
            out = 0
            release = now
        else:
            elapsed = (now - self._prev_release) * CLOCK
            delta = frame.pts - prev.pts if frame.session == prev.session else 0
            if not 0 < delta <= _MAX_STEP:
                delta = max(_MIN_STEP, min(int(elapsed), _MAX_STEP))
            if now - frame.arrived > self._late_s:
                # Late: release no faster than `speed` times real time, and stamp it with when it really goes.
                release = max(now, self._prev_release + delta / CLOCK / self._speed)
                if release > now:
                    await asyncio.sleep(release - now)
                step = int((release - self._prev_release) * CLOCK)
                out = self._prev_out + max(_MIN_STEP, min(step, delta))
            else:
                release = now
                out = self._prev_out + delta
        self._prev = frame
        self._prev_out = out
        self._prev_release = release
        packet = av.Packet(frame.data)
        packet.pts = out
        packet.dts = out
        packet.time_base = TIME_BASE
        if self.frames_sent == 0 and self._on_first_frame is not None:
            self._on_first_frame(frame)
        self.frames_sent += 1
        self.bytes_sent += len(frame.data)
        self.last_sent = loop.time()
        return packet

    def stop(self) -> None:
        self._queue.close()
        super().stop()
