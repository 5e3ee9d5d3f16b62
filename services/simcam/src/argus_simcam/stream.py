"""Access units, the frame clock, and the per-stream fan-out to consumers (RTSP sessions, tests).

A `StreamSource` stands for one stream of one camera (`main` or `sub`). Producers (a live encoder thread, or the
pre-encoded splicer driven by a frame ticker) `publish()` access units on the event loop; the source applies the
bitstream faults (dropped or corrupted NAL units), keeps the current GOP (from its keyframe) so a new consumer
starts at once with a decodable picture, and hands each unit to every `Subscription`.

Each subscription is a bounded queue: when a consumer falls behind and its queue is full, the queue is emptied and
the consumer waits for the next keyframe (it never blocks the producer or the other consumers).

`FrameClock` fixes the timing of frame n for a frame rate: due at `mono0 + n/fps` on the monotonic clock, captured
at `wall0 + n/fps` of true wall time (a camera adds its clock skew), pts `n * 90000 / fps`. Every camera of a
process shares `mono0`/`wall0`, so frame numbers line up across cameras.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal, TypeAlias

__all__ = [
    "AccessUnit",
    "Codec",
    "FrameClock",
    "RtpTail",
    "StreamClosed",
    "StreamSource",
    "StreamSpec",
    "Subscription",
]

_log = logging.getLogger(__name__)

Codec: TypeAlias = Literal["h264", "h265"]
VIDEO_CLOCK: Final = 90_000
_NS: Final = 1_000_000_000


@dataclass(frozen=True, slots=True)
class RtpTail:
    """RTP payloads made in advance for `nals[start:]` of an access unit (for payloads of `max_payload` bytes)."""

    start: int
    max_payload: int
    payloads: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class AccessUnit:
    """One coded picture: NAL units without start codes, 90 kHz pts, the camera clock's capture time (ns)."""

    nals: tuple[bytes, ...]
    pts: int
    capture_ns: int
    keyframe: bool
    rtp_tail: RtpTail | None = None

    @property
    def size(self) -> int:
        return sum(len(n) for n in self.nals)


@dataclass(frozen=True)
class StreamSpec:
    """What one stream of a camera sends."""

    width: int
    height: int
    fps: int = 25
    bitrate: int = 2_000_000
    gop_s: float = 2.0
    preset: str = "veryfast"  # libx264 preset for live encoding
    preset_h265: str = "ultrafast"  # libx265 preset for live encoding

    def __post_init__(self) -> None:
        if self.width % 2 or self.height % 2 or self.width < 64 or self.height < 64:
            raise ValueError(f"bad stream size {self.width}x{self.height}")
        if not 1 <= self.fps <= 120:
            raise ValueError(f"bad frame rate {self.fps}")

    @property
    def gop(self) -> int:
        """Frames per GOP (keyframe interval)."""
        return max(1, round(self.gop_s * self.fps))


class FrameClock:
    """Timing of the frames of every stream at `fps` in this process."""

    def __init__(self, fps: int, mono0_ns: int, wall0_ns: int) -> None:
        self.fps = fps
        self.mono0_ns = mono0_ns
        self.wall0_ns = wall0_ns

    def offset_ns(self, n: int) -> int:
        return n * _NS // self.fps

    def due_ns(self, n: int) -> int:
        """When frame n is due, on `time.monotonic_ns()`."""
        return self.mono0_ns + self.offset_ns(n)

    def index_at(self, mono_ns: int) -> int:
        """The last frame due at or before `mono_ns`."""
        return (mono_ns - self.mono0_ns) * self.fps // _NS

    def now_index(self) -> int:
        return self.index_at(time.monotonic_ns())

    def capture_ns(self, n: int) -> int:
        """True wall time of frame n's capture (add the camera's clock skew for its own idea of it)."""
        return self.wall0_ns + self.offset_ns(n)

    def pts(self, n: int) -> int:
        return n * VIDEO_CLOCK // self.fps

    def scene_time(self, n: int) -> float:
        return n / self.fps


class StreamClosed(Exception):
    """The stream or the subscription was closed."""


class Subscription:
    """One consumer's bounded queue of access units, starting at a keyframe. Async iterator."""

    def __init__(self, source: StreamSource, maxsize: int) -> None:
        self._source = source
        self._maxsize = maxsize
        self._queue: deque[AccessUnit] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._waiting_key = True
        self._closed = False
        self.overflows = 0

    @property
    def source(self) -> StreamSource:
        return self._source

    def _push(self, au: AccessUnit) -> None:
        if self._closed:
            return
        if self._waiting_key:
            if not au.keyframe:
                return
            self._waiting_key = False
        if len(self._queue) >= self._maxsize:
            self._queue.clear()
            self.overflows += 1
            # Reported once at warning level (then at debug): a stuck consumer must not flood the log.
            _log.log(
                logging.WARNING if self.overflows == 1 else logging.DEBUG,
                "%s/%s: consumer too slow, dropped %d queued frames (overflow %d); resuming at a keyframe",
                self._source.camera,
                self._source.name,
                self._maxsize,
                self.overflows,
            )
            if not au.keyframe:
                self._waiting_key = True
                return
        self._queue.append(au)
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def resync(self) -> None:
        """Drop what is queued and skip ahead to the next keyframe (after a stall, for example)."""
        self._queue.clear()
        self._waiting_key = True

    def pending(self) -> int:
        return len(self._queue)

    def peek(self) -> AccessUnit | None:
        return self._queue[0] if self._queue else None

    async def next(self) -> AccessUnit:
        """The next access unit; raises `StreamClosed` once closed."""
        while not self._queue:
            if self._closed:
                raise StreamClosed(f"{self._source.camera}/{self._source.name}")
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._queue.popleft()

    async def first(self) -> AccessUnit:
        """Wait until a unit is queued and return it without taking it."""
        while not self._queue:
            if self._closed:
                raise StreamClosed(f"{self._source.camera}/{self._source.name}")
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._queue[0]

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> AccessUnit:
        try:
            return await self.next()
        except StreamClosed:
            raise StopAsyncIteration from None

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._queue.clear()
        self._source._unsubscribe(self)
        self._wake()


class StreamSource:
    """One (camera, stream): parameter sets, the current GOP, fan-out to subscriptions, bitstream faults."""

    def __init__(
        self,
        camera: str,
        name: str,
        codec: Codec,
        spec: StreamSpec,
        *,
        corrupt_rate: Callable[[], float] = lambda: 0.0,
        drop_rate: Callable[[], float] = lambda: 0.0,
        rng: random.Random | None = None,
        gop_cache_limit: int = 300,
        queue_size: int = 150,
    ) -> None:
        self.camera = camera
        self.name = name
        self.codec: Codec = codec
        self.spec = spec
        self.parameter_sets: tuple[bytes, ...] = ()
        self.width, self.height = spec.width, spec.height
        self._corrupt_rate = corrupt_rate
        self._drop_rate = drop_rate
        self._rng = rng or random.Random()
        self._gop: list[AccessUnit] = []
        self._gop_limit = gop_cache_limit
        self._queue_size = queue_size
        self._subs: list[Subscription] = []
        self._ready = asyncio.Event()
        self._closed = False
        self._last_pts: int | None = None
        self.on_demand: Callable[[StreamSource], None] | None = None
        self.published = 0

    @property
    def subscriber_count(self) -> int:
        return len(self._subs)

    @property
    def closed(self) -> bool:
        return self._closed

    def set_parameter_sets(self, nals: tuple[bytes, ...], width: int, height: int) -> None:
        self.parameter_sets = nals
        self.width, self.height = width, height
        self._ready.set()

    async def wait_ready(self) -> None:
        """Wait until the parameter sets (for SDP) are known."""
        await self._ready.wait()

    def reset_timeline(self) -> None:
        """Forget the GOP and the last pts (a producer switch); consumers resume at the next keyframe."""
        self._gop.clear()
        self._last_pts = None

    def publish(self, au: AccessUnit) -> None:
        """Hand an access unit to every consumer (event loop thread only)."""
        if self._closed:
            return
        if self._last_pts is not None and au.pts <= self._last_pts:
            return
        self._last_pts = au.pts
        au = self._apply_faults(au)
        self.published += 1
        if au.keyframe:
            self._gop.clear()
        if self._gop or au.keyframe:
            if len(self._gop) >= self._gop_limit:
                self._gop.clear()
            else:
                self._gop.append(au)
        for sub in self._subs:
            sub._push(au)

    def _apply_faults(self, au: AccessUnit) -> AccessUnit:
        drop, corrupt = self._drop_rate(), self._corrupt_rate()
        if not drop and not corrupt:
            return au
        rng = self._rng
        nals: list[bytes] = []
        for nal in au.nals:
            if not _is_vcl(self.codec, nal):
                nals.append(nal)
                continue
            if drop and rng.random() < drop:
                continue
            if corrupt and rng.random() < corrupt and len(nal) > 8:
                buf = bytearray(nal)
                start = 3 if self.codec == "h265" else 2
                for _ in range(max(1, len(buf) // 200)):
                    buf[rng.randrange(start, len(buf))] ^= rng.randrange(1, 256)
                nals.append(bytes(buf))
                continue
            nals.append(nal)
        return AccessUnit(tuple(nals), au.pts, au.capture_ns, au.keyframe)

    def subscribe(self, maxsize: int | None = None) -> Subscription:
        """A new consumer; it starts with the current GOP if there is one, else at the next keyframe."""
        if self._closed:
            raise StreamClosed(f"{self.camera}/{self.name}")
        if self.on_demand is not None:
            self.on_demand(self)  # a lazy producer fills the GOP now
        sub = Subscription(self, maxsize or self._queue_size)
        for au in self._gop[-sub._maxsize :] if len(self._gop) <= sub._maxsize else ():
            sub._push(au)
        self._subs.append(sub)
        return sub

    def __aiter__(self) -> Subscription:
        return self.subscribe()

    def _unsubscribe(self, sub: Subscription) -> None:
        if sub in self._subs:
            self._subs.remove(sub)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for sub in tuple(self._subs):
            sub.close()
        self._gop.clear()


def _is_vcl(codec: Codec, nal: bytes) -> bool:
    if codec == "h264":
        return (nal[0] & 0x1F) in (1, 5)
    return ((nal[0] >> 1) & 0x3F) < 32
