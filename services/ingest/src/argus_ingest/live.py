"""Live view's demand for camera streams, and what the pulling pod gives it: one message per access unit on the
live subject, and the current GOP at once for a new watcher.

Recording takes packets in batches from the durable MEDIA stream (`batch`); live view needs each access unit the
moment it is read, and only for the cameras someone watches. So a live view pod sends a `LiveDemand` for each
camera stream it relays, renewed well within its `ttl_s`, and withdrawn (`ttl_s=0`) when it stops. Every ingest
pod keeps every demand (`LiveDemands`), so that a pod that takes a camera over serves its watchers from its first
packet; the pod that pulls the camera publishes each packet on `argus.media.{camera}.{stream}` (core NATS: at most
once, nothing stored) while any watcher's demand holds, and nothing at all for a camera nobody watches.

A demand with `catchup` is a request: the pulling pod answers with the packets of the current GOP so far (a
`LiveCatchup`, which `LiveTap` keeps for that purpose), so the first viewer of an unwatched camera starts at once
from a keyframe instead of waiting for the next one; from that moment every packet goes out live as well. A packet
can come both ways (the watcher drops the repeat by its session and seq); none falls between the two, since the
demand is set and the GOP copied in one step of the event loop, between two packets.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable

import nats.errors
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from argus_core.bus import Bus
from argus_core.bus import subjects as s
from argus_core.bus.codec import DecodeError, decode, encode
from argus_core.bus.messages import LiveCatchup, MediaPacket, StreamName

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (camera, stream)

_REPLY_MARGIN = 4096  # room for the reply's own framing under the server's message limit


class LiveTap:
    """One pulled camera stream's live side: its current GOP, and whether to publish each packet."""

    def __init__(
        self,
        bus: Bus,
        camera: str,
        stream: StreamName,
        pod: str,
        *,
        gop_max_bytes: int,
        gop_max_frames: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.camera = camera
        self.stream: StreamName = stream
        self._bus = bus
        self._pod = pod
        self._subject = s.MEDIA.format(camera=camera, stream=stream)
        self._gop_max_bytes = gop_max_bytes
        self._gop_max_frames = gop_max_frames
        self._clock = clock
        self.until = 0.0  # monotonic time the newest demand runs out (0: nobody wants it)
        self.session = ""
        self._gop: list[MediaPacket] = []
        self._gop_bytes = 0
        self.published = 0

    def reset(self, session: str) -> None:
        """A new session (connection) begins: its GOP starts empty."""
        self.session = session
        self._gop = []
        self._gop_bytes = 0

    def keep(self, packet: MediaPacket) -> bool:
        """Keep `packet` in the current GOP; True if someone wants it live now (then `publish` it)."""
        if packet.keyframe:
            self._gop = [packet]
            self._gop_bytes = len(packet.data)
        elif self._gop:
            self._gop.append(packet)
            self._gop_bytes += len(packet.data)
            if self._gop_bytes > self._gop_max_bytes or len(self._gop) > self._gop_max_frames:
                self._gop = []  # a GOP longer than kept: a new watcher waits for the next keyframe
                self._gop_bytes = 0
        return self.until > self._clock()

    async def publish(self, packet: MediaPacket) -> None:
        self.published += 1
        await self._bus.nc.publish(self._subject, encode(s.MEDIA, packet))

    def catchup(self, max_bytes: int) -> bytes:
        """The encoded `LiveCatchup`: the current GOP, or no packets if it would not fit in `max_bytes`."""
        reply = LiveCatchup(
            camera=self.camera, stream=self.stream, pod=self._pod, session=self.session, packets=tuple(self._gop)
        )
        data = encode(s.LIVE_CATCHUP, reply)
        if len(data) <= max_bytes:
            return data
        log.info(
            "%s/%s: the current GOP (%d bytes) is more than one message: the watcher waits for a keyframe",
            self.camera,
            self.stream,
            len(data),
            extra={"camera": self.camera, "stream": self.stream},
        )
        return encode(s.LIVE_CATCHUP, LiveCatchup(camera=self.camera, stream=self.stream, pod=self._pod))


class LiveDemands:
    """Every live view pod's demand for every camera stream, and the taps of the streams this pod pulls.

    `start()` subscribes, `close()` ends; `tap()` / `untap()` as pullers start and stop."""

    def __init__(
        self,
        bus: Bus,
        pod: str,
        *,
        gop_max_bytes: int = 16 * 1024 * 1024,
        gop_max_frames: int = 600,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._bus = bus
        self._pod = pod
        self._gop_max_bytes = gop_max_bytes
        self._gop_max_frames = gop_max_frames
        self._clock = clock
        self._wanted: dict[Key, dict[str, float]] = {}  # (camera, stream) -> viewer pod -> until
        self._taps: dict[Key, LiveTap] = {}
        self._sub: Subscription | None = None

    async def start(self) -> None:
        if self._sub is None:
            self._sub = await self._bus.nc.subscribe(
                s.LIVE_DEMAND.wildcard(), cb=self._on_demand, pending_msgs_limit=100_000
            )

    async def close(self) -> None:
        sub, self._sub = self._sub, None
        if sub is not None and not self._bus.nc.is_closed:
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()

    def tap(self, camera: str, stream: StreamName) -> LiveTap:
        tap = LiveTap(
            self._bus,
            camera,
            stream,
            self._pod,
            gop_max_bytes=self._gop_max_bytes,
            gop_max_frames=self._gop_max_frames,
            clock=self._clock,
        )
        self._taps[(camera, stream)] = tap
        tap.until = self._until((camera, stream))
        return tap

    def untap(self, tap: LiveTap) -> None:
        key = (tap.camera, tap.stream)
        if self._taps.get(key) is tap:
            del self._taps[key]

    def watched(self) -> int:
        """Camera streams this pod pulls that someone watches now."""
        now = self._clock()
        return sum(1 for tap in self._taps.values() if tap.until > now)

    # --- demands ----------------------------------------------------------------------------------------------

    def _until(self, key: Key) -> float:
        viewers = self._wanted.get(key)
        if not viewers:
            return 0.0
        now = self._clock()
        for viewer in [v for v, until in viewers.items() if until <= now]:
            del viewers[viewer]
        if not viewers:
            del self._wanted[key]
            return 0.0
        return max(viewers.values())

    async def _on_demand(self, msg: Msg) -> None:
        try:
            demand = decode(s.LIVE_DEMAND, msg.data, msg.subject)
        except DecodeError as exc:
            log.warning("%s", exc)
            return
        key = (demand.camera, demand.stream)
        if demand.ttl_s > 0:
            self._wanted.setdefault(key, {})[demand.viewer] = self._clock() + demand.ttl_s
        else:
            self._wanted.get(key, {}).pop(demand.viewer, None)
        tap = self._taps.get(key)
        if tap is None:
            return
        tap.until = self._until(key)
        if demand.catchup and msg.reply and tap.until:
            limit = max(0, self._bus.nc.max_payload - _REPLY_MARGIN)
            try:
                await self._bus.nc.publish(msg.reply, tap.catchup(limit))
            except nats.errors.Error as exc:
                log.debug("catch-up for %s/%s not sent: %r", demand.camera, demand.stream, exc)
