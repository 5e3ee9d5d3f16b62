"""The fan-out: one bus subscription per watched camera stream, its current GOP, and its viewers.

`CameraFeed` is one stream of one camera (`argus.media.{camera}.{stream}`) as liveview sees it: a single core NATS
subscription however many viewers watch, the frames since the latest keyframe (so that a new viewer starts there at
once), and the viewers' queues, each fed without waiting (`ViewerQueue.push`). A hole in the feed (a `seq` skipped
within an ingest session, or a bus that dropped messages for a slow consumer) voids the cached GOP and makes every
viewer wait for the next keyframe; a new ingest session (`MediaPacket.session`) is a new stream for the decoder,
which starts at its first keyframe anyway.

Ingest publishes a camera stream on its live subject only while some live view pod asks for it: a feed sends a
`LiveDemand` (`argus.live.demand.{camera}.{stream}`, naming this pod as `viewer`) when it starts, renews it every
`demand_interval_s` for `demand_ttl_s` while it is open, and withdraws it (`ttl_s=0`) when it closes; ingest stops
publishing once no pod's demand holds. So that the first viewer need not wait a GOP for a keyframe, the first
demand is a request with `catchup`: the ingest pod that pulls the camera answers with a `LiveCatchup`, the packets
of the current GOP from its keyframe up to the last one it published, and publishes live from then on. The feed
subscribes before it asks, takes the catch-up first and then what the subscription received meanwhile (a packet
that came both ways is taken once). No answer within `catchup_timeout_s` (no pod pulls the camera yet), or an empty
one: the first viewer waits for the next live keyframe, and the demand still stands, so packets flow as soon as a
pod takes the camera.

`FeedHub` owns the feeds: `acquire()` returns the running feed of a camera stream (starting it if needed) and
`release()` hands it back; a feed nobody holds is unsubscribed (and its demand withdrawn) after `idle_grace_s`, so
a viewer that reloads its page finds it still warm.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import nats.errors
from nats.aio.subscription import Subscription

from argus_core.bus import Bus
from argus_core.bus import messages as m
from argus_core.bus import subjects as s
from argus_core.bus.codec import DecodeError
from argus_liveview import bitstream
from argus_liveview.config import LiveviewSettings
from argus_liveview.metrics import Metrics
from argus_liveview.viewer import Frame, ViewerQueue

log = logging.getLogger(__name__)


class FeedError(Exception):
    """A feed could not start (the bus refused the subscription)."""


class CameraFeed:
    """One camera stream's live frames, its current GOP and the queues of its viewers."""

    def __init__(
        self,
        bus: Bus,
        camera: str,
        stream: m.StreamName,
        settings: LiveviewSettings,
        metrics: Metrics,
        *,
        viewer: str,
    ) -> None:
        self.camera = camera
        self.stream = stream
        self.viewer = viewer  # this pod's name in its demands
        self._bus = bus
        self._settings = settings
        self._metrics = metrics
        self._sub: Subscription | None = None
        self._viewers: set[ViewerQueue] = set()
        self._gop: list[Frame] = []
        self._gop_bytes = 0
        self._last: tuple[str, int] | None = None
        self._buffer: list[tuple[m.MediaPacket, float]] | None = None  # live packets held while catching up
        self._renewal: asyncio.Task[None] | None = None
        self._demanded = False
        self._params: tuple[bytes, ...] = ()
        self._length_size = 0
        self._bad_warned = False
        self.config: m.CodecConfig | None = None
        self.users = 0
        self.received = 0
        self.holes = 0
        self.started = asyncio.Event()
        self.closed = False

    def __repr__(self) -> str:
        return f"CameraFeed({self.camera}/{self.stream}, viewers={len(self._viewers)}, gop={len(self._gop)})"

    @property
    def codec(self) -> m.Codec | None:
        return self.config.codec if self.config is not None else None

    @property
    def viewers(self) -> int:
        return len(self._viewers)

    @property
    def gop(self) -> list[Frame]:
        return list(self._gop)

    # --- lifecycle -------------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Subscribe, ask ingest for the stream (with the current GOP so far), and keep asking while open; `started`
        is set either way."""
        try:
            self._buffer = []
            self._sub = await self._bus.subscribe(
                s.MEDIA,
                self._on_packet,
                pending_msgs_limit=max(256, self._settings.gop_max_frames * 2),
                camera=self.camera,
                stream=self.stream,
            )
            catchup: list[tuple[m.MediaPacket, float]] = []
            if self._settings.catchup_timeout_s > 0:
                catchup = await self._catchup()
            else:
                try:
                    await self._demand(self._settings.demand_ttl_s)
                except nats.errors.Error as exc:
                    self._demand_failed(exc)
            if not self.closed:
                self._renewal = asyncio.create_task(self._renew(), name=f"liveview.demand.{self.camera}.{self.stream}")
            buffered, self._buffer = self._buffer, None
            # The catch-up first, then what arrived live meanwhile; `_accept` drops what both hold and notices a gap.
            for packet, arrived in [*catchup, *buffered]:
                self._accept(packet, arrived)
        finally:
            self._buffer = None
            self.started.set()

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for viewer in list(self._viewers):
            viewer.close()
        self._viewers.clear()
        self._gop.clear()
        renewal, self._renewal = self._renewal, None
        try:
            if renewal is not None:
                renewal.cancel()
                try:
                    await renewal
                except asyncio.CancelledError:
                    current = asyncio.current_task()
                    if current is not None and current.cancelling():
                        raise
        finally:
            sub, self._sub = self._sub, None
            if sub is not None:
                with contextlib.suppress(nats.errors.Error):
                    await sub.unsubscribe()
            if self._demanded:
                # Withdrawn at once rather than left to run out; best effort (on a closed or draining connection the
                # demand runs out on its own within `demand_ttl_s`).
                with contextlib.suppress(nats.errors.Error):
                    await self._demand(0.0)

    # --- viewers ---------------------------------------------------------------------------------------------------

    def attach(self, viewer: ViewerQueue) -> None:
        """Start `viewer` at the cached GOP's keyframe (or at the next keyframe if none is cached)."""
        viewer.prime(self._gop)
        self._viewers.add(viewer)

    def detach(self, viewer: ViewerQueue) -> None:
        self._viewers.discard(viewer)

    # --- packets ---------------------------------------------------------------------------------------------------

    async def _on_packet(self, packet: m.MediaPacket, subject: str) -> None:
        if self.closed:
            return
        now = asyncio.get_running_loop().time()
        self._metrics.relay_delay.observe(max(0.0, time.time_ns() - packet.capture_ns) / 1e9)
        if self._buffer is not None:
            self._buffer.append((packet, now))
            return
        self._accept(packet, now)

    def _accept(self, packet: m.MediaPacket, arrived: float) -> None:
        self.received += 1
        last = self._last
        self._last = (packet.session, packet.seq)
        if last is not None and last[0] == packet.session and packet.seq != last[1] + 1:
            if packet.seq <= last[1]:
                self._last = last  # a repeat: already sent
                return
            self._hole(packet.seq - last[1] - 1)
        if packet.config is not None and packet.config != self.config:
            self._configure(packet.config)
        if self.config is None or self.config.codec != "h264":
            # Not for browsers over WebRTC (H.265): the feed still tells sessions the codec, and keeps nothing.
            return
        try:
            data = bitstream.for_rtp(
                packet.data,
                packet.keyframe,
                self._params,
                self._length_size,
                strip_filler=self._settings.strip_filler,
            )
        except bitstream.BitstreamError as exc:
            if not self._bad_warned:
                self._bad_warned = True
                log.warning(
                    "%s/%s: unreadable access unit (%s): treated as lost",
                    self.camera,
                    self.stream,
                    exc,
                    extra={"camera": self.camera, "stream": self.stream},
                )
            self._hole(1)
            return
        frame = Frame(
            data=data,
            pts=packet.pts,
            duration=packet.duration,
            keyframe=packet.keyframe,
            session=packet.session,
            seq=packet.seq,
            capture_ns=packet.capture_ns,
            arrived=arrived,
        )
        self._cache(frame)
        for viewer in self._viewers:
            viewer.push(frame)

    def _configure(self, config: m.CodecConfig) -> None:
        self.config = config
        self._params, self._length_size = (), 0
        if config.codec == "h264":
            try:
                self._params, self._length_size = bitstream.config_parameter_sets(config.extradata)
            except bitstream.BitstreamError as exc:
                log.warning("%s/%s: unreadable codec configuration: %s", self.camera, self.stream, exc)

    def _cache(self, frame: Frame) -> None:
        if frame.keyframe:
            self._gop = [frame]
            self._gop_bytes = len(frame.data)
            return
        if not self._gop:
            return
        self._gop.append(frame)
        self._gop_bytes += len(frame.data)
        if len(self._gop) > self._settings.gop_max_frames or self._gop_bytes > self._settings.gop_max_bytes:
            # A GOP longer than we keep: new viewers wait for the next keyframe.
            self._gop = []
            self._gop_bytes = 0

    def _hole(self, lost: int) -> None:
        self.holes += 1
        self._metrics.feed_lost.labels(stream=self.stream).inc(lost)
        self._gop = []
        self._gop_bytes = 0
        for viewer in self._viewers:
            viewer.hole()

    # --- demand ----------------------------------------------------------------------------------------------------

    def _demand_message(self, ttl_s: float, *, catchup: bool = False) -> m.LiveDemand:
        return m.LiveDemand(camera=self.camera, stream=self.stream, viewer=self.viewer, ttl_s=ttl_s, catchup=catchup)

    async def _demand(self, ttl_s: float) -> None:
        self._demanded = True
        await self._bus.publish(s.LIVE_DEMAND, self._demand_message(ttl_s), camera=self.camera, stream=self.stream)

    async def _renew(self) -> None:
        """Renew the demand every `demand_interval_s` while the feed is open; a failed renewal is tried again at the
        next interval (the demand outlives two missed ones)."""
        while True:
            await asyncio.sleep(self._settings.demand_interval_s)
            try:
                await self._demand(self._settings.demand_ttl_s)
            except nats.errors.Error as exc:
                self._demand_failed(exc)

    def _demand_failed(self, exc: nats.errors.Error) -> None:
        log.debug(
            "%s/%s: demand not sent (%s), trying again in %.1f s",
            self.camera,
            self.stream,
            exc or type(exc).__name__,
            self._settings.demand_interval_s,
            extra={"camera": self.camera, "stream": self.stream},
        )

    async def _catchup(self) -> list[tuple[m.MediaPacket, float]]:
        """Demand the stream with a catch-up: the pulling ingest pod's current GOP from its keyframe, each packet with
        the loop time it would have arrived live (so that a viewer knows how late it is); empty if there is none."""
        demand = self._demand_message(self._settings.demand_ttl_s, catchup=True)
        self._demanded = True
        try:
            reply = await self._bus.request(
                s.LIVE_DEMAND,
                demand,
                s.LIVE_CATCHUP,
                reply_timeout_s=self._settings.catchup_timeout_s,
                camera=self.camera,
                stream=self.stream,
            )
        except (nats.errors.Error, TimeoutError) as exc:
            # No responders, a timeout: no ingest pod pulls the camera yet; the demand stands all the same.
            log.info(
                "no catch-up for %s/%s (%s): the first viewer waits for a live keyframe",
                self.camera,
                self.stream,
                exc or type(exc).__name__,
                extra={"camera": self.camera, "stream": self.stream},
            )
            return []
        except DecodeError as exc:
            log.warning(
                "%s/%s: unreadable catch-up (%s): the first viewer waits for a live keyframe",
                self.camera,
                self.stream,
                exc,
                extra={"camera": self.camera, "stream": self.stream},
            )
            return []
        packets = list(reply.packets)
        first_key = next((i for i, packet in enumerate(packets) if packet.keyframe), len(packets))
        packets = packets[first_key:]  # from a keyframe, as promised; what comes before one is of no use
        if not packets:
            log.info(
                "%s/%s: ingest pod %s has no GOP to give: the first viewer waits for a live keyframe",
                self.camera,
                self.stream,
                reply.pod or "?",
                extra={"camera": self.camera, "stream": self.stream},
            )
            return []
        loop_now = asyncio.get_running_loop().time()
        wall_now = time.time()
        log.debug(
            "%s/%s: caught up with %d packets from ingest pod %s",
            self.camera,
            self.stream,
            len(packets),
            reply.pod,
            extra={"camera": self.camera, "stream": self.stream},
        )
        return [(packet, loop_now - max(0.0, wall_now - packet.capture_ns / 1e9)) for packet in packets]


class FeedHub:
    """The running feeds of this process, by (camera, stream); unwatched feeds stop after a grace period."""

    def __init__(self, bus: Bus, settings: LiveviewSettings, metrics: Metrics, *, viewer: str) -> None:
        self._bus = bus
        self._viewer = viewer
        self._settings = settings
        self._metrics = metrics
        self._feeds: dict[tuple[str, m.StreamName], CameraFeed] = {}
        self._starting: dict[CameraFeed, asyncio.Task[None]] = {}
        self._reapers: dict[CameraFeed, asyncio.Task[None]] = {}
        self._closed = False

    def __len__(self) -> int:
        return len(self._feeds)

    def get(self, camera: str, stream: m.StreamName) -> CameraFeed | None:
        return self._feeds.get((camera, stream))

    async def acquire(self, camera: str, stream: m.StreamName) -> CameraFeed:
        """The camera stream's feed, started and caught up; hand it back with `release()`."""
        if self._closed:
            raise RuntimeError("the feed hub is closed")
        key = (camera, stream)
        feed = self._feeds.get(key)
        if feed is None:
            feed = CameraFeed(self._bus, camera, stream, self._settings, self._metrics, viewer=self._viewer)
            self._feeds[key] = feed
            self._starting[feed] = asyncio.create_task(feed.start(), name=f"liveview.feed.{camera}.{stream}")
            self._metrics.feeds.set(len(self._feeds))
            log.info("watching %s/%s", camera, stream, extra={"camera": camera, "stream": stream})
        feed.users += 1
        reaper = self._reapers.pop(feed, None)
        if reaper is not None:
            reaper.cancel()
        starting = self._starting.get(feed)
        if starting is not None:
            try:
                await asyncio.shield(starting)
            except asyncio.CancelledError:
                self.release(feed)
                raise
            except Exception as exc:
                feed.users -= 1
                if self._feeds.get(key) is feed:
                    del self._feeds[key]
                    self._metrics.feeds.set(len(self._feeds))
                await feed.close()
                raise FeedError(f"cannot watch {camera}/{stream}: {exc}") from exc
            finally:
                if starting.done():
                    self._starting.pop(feed, None)
        return feed

    def release(self, feed: CameraFeed) -> None:
        feed.users -= 1
        if feed.users > 0 or self._closed or feed.closed or feed in self._reapers:
            return
        self._reapers[feed] = asyncio.create_task(self._reap(feed), name=f"liveview.reap.{feed.camera}")

    async def _reap(self, feed: CameraFeed) -> None:
        try:
            await asyncio.sleep(self._settings.idle_grace_s)
        finally:
            if self._reapers.get(feed) is asyncio.current_task():
                del self._reapers[feed]
        if feed.users > 0:
            return
        if self._feeds.get((feed.camera, feed.stream)) is feed:
            del self._feeds[(feed.camera, feed.stream)]
        self._metrics.feeds.set(len(self._feeds))
        starting = self._starting.pop(feed, None)
        if starting is not None:
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await starting
        await feed.close()
        log.info("no longer watching %s/%s", feed.camera, feed.stream, extra={"camera": feed.camera})

    async def close(self) -> None:
        """Stop every feed (their viewers' queues close) and every pending task."""
        if self._closed:
            return
        self._closed = True
        tasks = [*self._reapers.values(), *self._starting.values()]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._reapers.clear()
        self._starting.clear()
        feeds = list(self._feeds.values())
        self._feeds.clear()
        for feed in feeds:
            await feed.close()
        self._metrics.feeds.set(0)
