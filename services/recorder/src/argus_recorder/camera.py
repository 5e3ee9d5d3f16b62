"""One camera stream recorded by this pod: pull its batches, cut segments, mux them off the loop, store, ack.

The worker owns the camera's durable consumer (`recorder-{camera}`) while this pod holds the lease. On start it
makes delivery resume right after the consumer's ack floor: if the previous owner fetched packets it did not store
(it died, or handed over mid-GOP), the consumer is re-created at the floor, so those packets come now and in order
rather than after the ack wait. The index's newest row for the camera tells the segmenter what is stored already.

Acks use AckAll on the newest message a stored segment or gap accounts for in full; nothing is acked before it is
in S3 and indexed, or in the spool. A message is a `MediaBatch` of many packets and a segment can end inside one
(a batch ends after a keyframe, or at ingest's batch age or size limit), so each packet carries as its ack token
its batch's message if it is the batch's last packet, else the newest message before it all of whose packets were
taken (None at first): a segment that ends inside a batch acks the batches before it, and that batch is delivered
again to a next owner, which skips the packets the index holds.

Stopping has two modes: `handover` stores the open segment's complete GOPs and acks them (the rest is left for the
next owner), `abandon` (the lease was lost) stops at once and acks nothing more.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Literal

import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api
from nats.js.errors import KeyNotFoundError, NotFoundError
from nats.js.kv import KeyValue

from argus_core.bus import messages as m
from argus_core.bus import subjects as s
from argus_core.bus.codec import DecodeError, decode
from argus_core.bus.jetstream import MEDIA_STREAM, ConsumerSpec, recorder_consumer
from argus_recorder.config import RecorderSettings
from argus_recorder.errors import MuxError
from argus_recorder.index import Index, IndexRejected, IndexUnavailable
from argus_recorder.metrics import Metrics
from argus_recorder.muxer import mux_segment
from argus_recorder.pull import ConsumerGone, Pull
from argus_recorder.segmenter import Event, GapFound, SegmentCut, Segmenter
from argus_recorder.sink import Sink
from argus_recorder.status import StatusBook

log = logging.getLogger(__name__)

StopMode = Literal["handover", "abandon"]
_FETCH_TIMEOUT_S = 1.0


@dataclass(frozen=True)
class WorkerContext:
    """What every camera worker of a pod shares."""

    js: JetStreamContext
    nc: NATS
    sink: Sink
    index: Index
    statuses: StatusBook
    status_kv: KeyValue | None
    mux_pool: Executor
    metrics: Metrics
    settings: RecorderSettings


class CameraWorker:
    def __init__(self, camera: str, ctx: WorkerContext) -> None:
        self.camera = camera
        self.stream: m.StreamName = ctx.settings.stream
        self._ctx = ctx
        self._stop: StopMode | None = None
        self._stop_event = asyncio.Event()
        self._log_extra = {"camera": camera, "stream": self.stream}
        self._bad_messages = 0

    @property
    def stop_mode(self) -> StopMode | None:
        return self._stop

    def stop(self, mode: StopMode) -> None:
        if self._stop is None or mode == "abandon":
            self._stop = mode
        self._stop_event.set()

    def _abandoned(self) -> bool:
        return self._stop == "abandon"

    async def wait_stopped(self, seconds: float) -> bool:
        """Sleep up to `seconds` unless asked to stop; True if asked."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stop_event.wait()
        return self._stop is not None

    # --- life -----------------------------------------------------------------------------------------------------

    async def run(self) -> None:
        settings = self._ctx.settings
        spec = recorder_consumer(
            self.camera,
            self.stream,
            ack_wait_s=settings.ack_wait_s,
            max_ack_pending=settings.max_ack_pending,
            idle_s=settings.consumer_idle_s,
        )
        await self._prepare_consumer(spec)
        sub = Pull(self._ctx.nc, MEDIA_STREAM, spec.durable)
        await sub.start()
        try:
            await self._seed_status()
            checkpoint = None
            try:
                checkpoint = await self._ctx.index.checkpoint(self.camera, self.stream, time.time_ns())
            except (IndexUnavailable, IndexRejected) as exc:
                log.warning("%s: no checkpoint from the index (%s)", self.camera, exc, extra=self._log_extra)
            segmenter: Segmenter[Msg | None] = Segmenter(
                self.camera, self.stream, settings.policy(), self._ctx.statuses.cause, checkpoint
            )
            log.info(
                "recording %s/%s from %s",
                self.camera,
                self.stream,
                f"{checkpoint.session}#{checkpoint.last_seq}" if checkpoint else "the start of its media on the bus",
                extra=self._log_extra,
            )
            await self._loop(sub, segmenter)
        finally:
            await sub.stop()

    async def _loop(self, sub: Pull, segmenter: Segmenter[Msg | None]) -> None:
        settings = self._ctx.settings
        last_packet = time.monotonic()
        seen = _Counts()
        done: Msg | None = None  # the newest message all of whose packets went to the segmenter
        while self._stop is None:
            msgs = await self._fetch(sub, settings.fetch_batch)
            for msg in msgs:
                if self._abandoned():
                    break
                batch = self._decode(msg, segmenter)
                if batch is not None:
                    last = len(batch.packets) - 1
                    for i, packet in enumerate(batch.packets):
                        events = segmenter.push(packet, msg if i == last else done)
                        if events:
                            await self._handle(events)
                done = msg
            now = time.monotonic()
            if msgs:
                last_packet = now
            await self._handle(segmenter.tick(now - last_packet))
            seen.report(segmenter, self._ctx.metrics)
            if self._stop is None and len(msgs) < settings.fetch_batch:
                await self.wait_stopped(settings.fetch_interval_s)
        if self._stop == "handover":
            await self._handle(segmenter.handover())
        seen.report(segmenter, self._ctx.metrics)
        log.info("stopped recording %s/%s (%s)", self.camera, self.stream, self._stop, extra=self._log_extra)

    async def _fetch(self, sub: Pull, batch: int) -> list[Msg]:
        try:
            return await sub.fetch(batch, _FETCH_TIMEOUT_S)
        except ConsumerGone:
            # Pulling on would record nothing, silently. The worker starts again (the pod's supervisor): the
            # consumer is made anew at the camera's oldest media on the bus, and what the index holds is skipped.
            log.warning(
                "%s: its consumer is gone from the server; recording starts again from the index",
                self.camera,
                extra=self._log_extra,
            )
            raise
        except nats.errors.Error as exc:
            log.warning("%s: fetch failed (%s); retrying", self.camera, exc, extra=self._log_extra)
            await self.wait_stopped(1.0)
            return []

    def _decode(self, msg: Msg, segmenter: Segmenter[Msg | None]) -> m.MediaBatch | None:
        try:
            batch = decode(s.RECORD, msg.data, msg.subject)
        except DecodeError as exc:
            self._bad_messages += 1
            self._ctx.metrics.packets.labels("undecodable").inc()
            if self._bad_messages <= 10 or self._bad_messages % 1000 == 0:
                log.warning("%s: %s (%d so far)", self.camera, exc, self._bad_messages, extra=self._log_extra)
            segmenter.corrupt()
            return None
        if (
            batch.camera != self.camera
            or batch.stream != self.stream
            or any(p.camera != self.camera or p.stream != self.stream for p in batch.packets)
        ):
            log.warning("%s: a batch of %s/%s on %s: skipped", self.camera, batch.camera, batch.stream, msg.subject)
            segmenter.corrupt()
            return None
        return batch

    # --- storing --------------------------------------------------------------------------------------------------

    async def _handle(self, events: list[Event[Msg | None]]) -> None:
        for event in events:
            if isinstance(event, SegmentCut):
                await self._store(event)
            else:
                await self._ctx.sink.store_gap(event)
                if event.ack is not None:
                    await self._ack(event.ack)

    async def _store(self, cut: SegmentCut[Msg | None]) -> None:
        metrics = self._ctx.metrics
        started = time.monotonic()
        loop = asyncio.get_running_loop()
        try:
            muxed = await loop.run_in_executor(self._ctx.mux_pool, mux_segment, cut.config, cut.packets)
        except MuxError as exc:
            log.error(  # noqa: TRY400 - corrupt media is news, its traceback is not
                "%s: a segment of %d frames cannot be muxed: %s", self.camera, cut.frames, exc
            )
            metrics.segments.labels("unmuxable").inc()
            gap = GapFound(
                cut.camera,
                cut.stream,
                cut.start_ns,
                cut.end_ns,
                "corrupt_data",
                f"{cut.frames} frames could not be muxed: {exc}",
                cut.session,
                cut.last_seq,
                cut.ack,
            )
            await self._ctx.sink.store_gap(gap)
            await self._ack(cut.ack)
            return
        metrics.mux_seconds.observe(time.monotonic() - started)
        metrics.repaired.inc(cut.repaired_timestamps)
        where = await self._ctx.sink.store_segment(cut, muxed)
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "%s: segment %d frames %.3f s %d bytes: %s",
                self.camera,
                cut.frames,
                cut.duration_ns / 1e9,
                len(muxed.media),
                where,
                extra=self._log_extra,
            )
        await self._ack(cut.ack)

    async def _ack(self, msg: Msg | None) -> None:
        if msg is None:  # nothing the segment or gap holds ends a message: a later one acks it
            return
        try:
            await msg.ack()
        except nats.errors.Error as exc:
            log.warning("%s: ack failed (%s): the bus will deliver again", self.camera, exc, extra=self._log_extra)

    # --- setup ----------------------------------------------------------------------------------------------------

    async def _prepare_consumer(self, spec: ConsumerSpec) -> None:
        js = self._ctx.js
        config = spec.config()
        try:
            info = await js.consumer_info(MEDIA_STREAM, spec.durable)
        except NotFoundError:
            await js.add_consumer(MEDIA_STREAM, config)
            return
        delivered = info.delivered.stream_seq if info.delivered else 0
        floor = info.ack_floor.stream_seq if info.ack_floor else 0
        same = (
            info.config.ack_policy == config.ack_policy
            and info.config.filter_subject == config.filter_subject
            and info.config.inactive_threshold == config.inactive_threshold
        )
        if same and not info.num_ack_pending and delivered <= floor:
            return
        if info.config.filter_subject != config.filter_subject:
            # Made for another subject (media of an earlier version of the bus contract): start on the new one.
            await js.delete_consumer(MEDIA_STREAM, spec.durable)
            await js.add_consumer(MEDIA_STREAM, config)
            log.info("%s: consumer re-made for %s", self.camera, config.filter_subject, extra=self._log_extra)
            return
        # Someone fetched packets and did not store them (or the consumer was made with other settings): deliver
        # from the ack floor, in order, now.
        await js.delete_consumer(MEDIA_STREAM, spec.durable)
        if floor > 0:
            config.deliver_policy = api.DeliverPolicy.BY_START_SEQUENCE
            config.opt_start_seq = floor + 1
        await js.add_consumer(MEDIA_STREAM, config)
        log.info(
            "%s: resuming after stream sequence %d (%d packets were delivered but not stored)",
            self.camera,
            floor,
            info.num_ack_pending or 0,
            extra=self._log_extra,
        )

    async def _seed_status(self) -> None:
        kv = self._ctx.status_kv
        if kv is None:
            return
        try:
            entry = await kv.get(self.camera)
        except (KeyNotFoundError, NotFoundError):
            return
        except (nats.errors.Error, TimeoutError) as exc:
            log.debug("%s: no status from KV: %s", self.camera, exc)
            return
        try:
            self._ctx.statuses.add(decode(s.CAMERA_STATUS, entry.value or b""))
        except DecodeError:
            return


class _Counts:
    """Segmenter counters reported to Prometheus as deltas."""

    def __init__(self) -> None:
        self._last: dict[str, int] = {}

    def report(self, segmenter: Segmenter[Msg | None], metrics: Metrics) -> None:
        stats = segmenter.stats
        for label, value in (
            ("duplicate", stats.duplicates),
            ("stale_session", stats.stale),
            ("dropped", stats.dropped),
            ("empty", stats.empty),
        ):
            delta = value - self._last.get(label, 0)
            if delta:
                metrics.packets.labels(label).inc(delta)
                self._last[label] = value
