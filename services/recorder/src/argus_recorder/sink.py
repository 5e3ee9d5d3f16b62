"""Where a finished segment goes: S3 then the index, else the local spool; and the spool drained when they return.

`store_segment()` returns once the segment is safely somewhere (in S3 and indexed, or in the spool), which is when
the camera worker acks its packets. An outage is detected by a failed call and remembered for `retry_s`, during
which new segments go straight to the spool instead of each waiting for a timeout; the drainer probes and, once
the store or the database answers again, writes back what waits, oldest first. A segment that is already indexed
with at least as many frames (a replacement recorder stored it again) is not uploaded a second time.

Outages, their end and a full spool are said loudly: a log line, a metric and a `ServiceEvent` on the bus.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, get_args

from argus_core.bus import Bus
from argus_core.bus import messages as m
from argus_core.bus import subjects as s
from argus_core.storage import ObjectNotFound, ObjectStore, StorageError
from argus_recorder.errors import SpoolError
from argus_recorder.index import GapRow, Index, IndexRejected, IndexUnavailable, SegmentRow
from argus_recorder.keys import init_key, segment_key
from argus_recorder.metrics import Metrics
from argus_recorder.muxer import MuxedSegment
from argus_recorder.segmenter import GapFound, SegmentCut
from argus_recorder.spool import Spool, SpooledSegment

log = logging.getLogger(__name__)

SERVICE = "recorder"
_CAUSES = frozenset(get_args(m.GapCause))
_EVENT_TIMEOUT_S = 2.0
_SPOOL_FULL_EVERY_S = 60.0


class _Dependency:
    """Up or down, with a back-off before the next try after a failure."""

    def __init__(self, name: str, retry_s: float) -> None:
        self.name = name
        self.retry_s = retry_s
        self.down_since: float | None = None
        self.error = ""
        self._retry_at = 0.0

    def available(self) -> bool:
        return self.down_since is None or time.monotonic() >= self._retry_at

    def failed(self, error: str) -> bool:
        """Record a failure; True if it just went down."""
        self.error = error
        self._retry_at = time.monotonic() + self.retry_s
        if self.down_since is None:
            self.down_since = time.monotonic()
            return True
        return False

    def succeeded(self) -> float | None:
        """Record a success; the outage's length if it just came back."""
        if self.down_since is None:
            return None
        outage = time.monotonic() - self.down_since
        self.down_since = None
        return outage


class Sink:
    def __init__(
        self,
        *,
        store: ObjectStore,
        bucket: str,
        index: Index,
        spool: Spool,
        bus: Bus,
        metrics: Metrics,
        pod: str,
        upload_timeout_s: float,
        retry_s: float,
    ) -> None:
        self._store = store
        self._bucket = bucket
        self._index = index
        self._spool = spool
        self._bus = bus
        self._metrics = metrics
        self._pod = pod
        self._upload_timeout_s = upload_timeout_s
        self._s3 = _Dependency("object store", retry_s)
        self._db = _Dependency("database", retry_s)
        self._inits: set[str] = set()  # init segments known to be in S3
        self._init_bytes: dict[str, bytes] = {}  # the latest init segments made, to restore them if S3 lost them
        self._last_spool_full = -_SPOOL_FULL_EVERY_S
        self._wake = asyncio.Event()
        metrics.spool_capacity.set(spool.max_bytes)
        metrics.dependency_up.labels("s3").set(1)
        metrics.dependency_up.labels("postgres").set(1)

    async def start(self) -> None:
        state = await asyncio.to_thread(self._spool.load)
        if state.segments or state.rows or state.gaps or state.inits:
            log.warning(
                "spool holds %d segments, %d rows and %d gaps from an earlier run (%d bytes): writing them back",
                state.segments,
                state.rows,
                state.gaps,
                state.used_bytes,
            )
        self._update_spool_metrics()

    # --- segments -------------------------------------------------------------------------------------------------

    def row_for(self, cut: SegmentCut[Any], muxed: MuxedSegment) -> SegmentRow:
        return SegmentRow(
            camera=cut.camera,
            stream=cut.stream,
            start_ns=cut.start_ns,
            end_ns=cut.end_ns,
            duration_ms=cut.duration_ns // 1_000_000,
            frames=cut.frames,
            keyframes=cut.keyframes,
            bytes=len(muxed.media),
            sha256=muxed.sha256,
            codec=cut.config.codec,
            width=cut.config.width,
            height=cut.config.height,
            object_key=segment_key(cut.camera, cut.stream, cut.start_ns, cut.session, cut.first_seq),
            init_key=init_key(cut.camera, cut.stream, cut.config),
            time_trusted=cut.time_trusted,
            session=cut.session,
            first_seq=cut.first_seq,
            last_seq=cut.last_seq,
            repaired_timestamps=cut.repaired_timestamps,
            recorder=self._pod,
            last_capture_ns=cut.last_capture_ns,
        )

    async def store_segment(self, cut: SegmentCut[Any], muxed: MuxedSegment) -> str:
        """Store a muxed segment in S3 and the index, or in the spool. Returns where it went."""
        row = self.row_for(cut, muxed)
        self._init_bytes[row.init_key] = muxed.init
        while len(self._init_bytes) > 1024:
            del self._init_bytes[next(iter(self._init_bytes))]
        self._metrics.frames.inc(row.frames)
        self._metrics.segment_bytes.inc(row.bytes)
        if not await self._upload(row, muxed.media, muxed.init, hashed=True):
            await self._spool_segment(row, muxed.media, muxed.init)
            return "spooled"
        return await self._index_segment(row)

    async def _upload(self, row: SegmentRow, media: bytes, init: bytes | None, *, hashed: bool = False) -> bool:
        """`hashed`: `row.sha256` was computed from these very bytes (just muxed, not read back from the spool)."""
        if not self._s3.available():
            return False
        started = time.monotonic()
        try:
            async with asyncio.timeout(self._upload_timeout_s):
                if init is not None:
                    await self._put_init(row.init_key, init)
                await self._put(row.object_key, media, "video/iso.segment", sha256=row.sha256 if hashed else None)
        except (StorageError, TimeoutError) as exc:
            await self._failed(self._s3, "s3", f"upload of {row.object_key}: {exc or type(exc).__name__}")
            return False
        self._metrics.upload_seconds.observe(time.monotonic() - started)
        await self._succeeded(self._s3, "s3")
        return True

    async def _put(self, key: str, data: bytes, content_type: str, *, sha256: str | None = None) -> None:
        try:
            await self._store.put(self._bucket, key, data, content_type=content_type, sha256=sha256)
        except ObjectNotFound:
            # The bucket is gone (a store rebuilt empty): make it again, and the init segments with it.
            log.warning("bucket %s is missing: creating it", self._bucket)
            self._inits.clear()
            await self._store.ensure_bucket(self._bucket)
            await self._store.put(self._bucket, key, data, content_type=content_type, sha256=sha256)

    async def _put_init(self, key: str, data: bytes) -> None:
        if key in self._inits:
            return
        await self._put(key, data, "video/mp4")
        self._inits.add(key)

    async def _index_segment(self, row: SegmentRow) -> str:
        if self._db.available():
            try:
                await self._index.insert_segment(row)
            except IndexUnavailable as exc:
                await self._failed(self._db, "postgres", str(exc))
            except IndexRejected as exc:
                log.error("index refused segment %s: %s (the object stays in S3)", row.object_key, exc)  # noqa: TRY400
                self._metrics.segments.labels("rejected").inc()
                return "rejected"
            else:
                await self._succeeded(self._db, "postgres")
                self._indexed(row)
                await self._announce_segment(row)
                return "indexed"
        await self._spool_segment(row, None, None)
        return "spooled"

    def _indexed(self, row: SegmentRow) -> None:
        self._metrics.segments.labels("indexed").inc()
        if row.last_capture_ns:
            self._metrics.lag_seconds.observe(max(0.0, (time.time_ns() - row.last_capture_ns) / 1e9))

    async def _spool_segment(self, row: SegmentRow, media: bytes | None, init: bytes | None) -> None:
        try:
            if init is not None and row.init_key not in self._inits:
                await asyncio.to_thread(self._spool.add_init, row.init_key, init)
            dropped = await asyncio.to_thread(self._spool.add_segment, row, media)
        except SpoolError:
            log.exception("cannot spool segment %s", row.object_key)
            raise
        if media is not None:
            self._metrics.segments.labels("spooled").inc()
        self._update_spool_metrics()
        if dropped:
            await self._spool_overflow(dropped, row)

    async def _spool_overflow(self, dropped: list[SegmentRow], newest: SegmentRow) -> None:
        state = self._spool.state()
        why = f"object store unavailable ({self._s3.error})" if self._s3.down_since is not None else "storage backlog"
        for lost in dropped:
            self._metrics.spool_dropped.inc()
            self._metrics.segments.labels("dropped").inc()
            what = "the new segment did not fit" if lost is newest else "dropped the oldest spooled segment"
            log.error(
                "SPOOL FULL (%d of %d bytes): %s %s of %s: %d frames lost",
                state.used_bytes,
                self._spool.max_bytes,
                what,
                lost.object_key,
                lost.camera,
                lost.frames,
                extra={"camera": lost.camera},
            )
            await self.store_gap_row(
                GapRow(
                    camera=lost.camera,
                    stream=lost.stream,
                    start_ns=lost.start_ns,
                    end_ns=lost.end_ns,
                    cause="spool_overflow",
                    detail=f"{why}; the spool was full ({self._spool.max_bytes} bytes): {what}",
                    session=None,
                    last_seq=None,
                    recorder=self._pod,
                )
            )
        now = time.monotonic()
        if now - self._last_spool_full >= _SPOOL_FULL_EVERY_S:
            self._last_spool_full = now
            await self._service_event(
                "spool_full",
                "critical",
                f"recorder spool full ({state.used_bytes} of {self._spool.max_bytes} bytes) while {why}: "
                f"dropping the oldest spooled footage to keep the newest",
                camera=dropped[0].camera,
                details={"dropped": str(len(dropped)), "spooled_segments": str(state.segments)},
            )

    # --- gaps -----------------------------------------------------------------------------------------------------

    def gap_row(self, gap: GapFound[Any]) -> GapRow:
        return GapRow(
            camera=gap.camera,
            stream=gap.stream,
            start_ns=gap.start_ns,
            end_ns=gap.end_ns,
            cause=gap.cause,
            detail=gap.detail,
            session=gap.session,
            last_seq=gap.last_seq,
            recorder=self._pod,
        )

    async def store_gap(self, gap: GapFound[Any]) -> str:
        return await self.store_gap_row(self.gap_row(gap))

    async def store_gap_row(self, row: GapRow) -> str:
        log.info(
            "gap %s on %s/%s: %.3f s (%s)",
            row.cause,
            row.camera,
            row.stream,
            (row.end_ns - row.start_ns) / 1e9,
            row.detail,
            extra={"camera": row.camera},
        )
        if self._db.available():
            try:
                await self._index.insert_gap(row)
            except IndexUnavailable as exc:
                await self._failed(self._db, "postgres", str(exc))
            except IndexRejected as exc:
                log.error("index refused a gap of %s: %s", row.camera, exc)  # noqa: TRY400
                return "rejected"
            else:
                await self._succeeded(self._db, "postgres")
                self._metrics.gaps.labels(row.cause).inc()
                await self._announce_gap(row)
                return "indexed"
        await asyncio.to_thread(self._spool.add_gap, row)
        self._update_spool_metrics()
        return "spooled"

    # --- draining the spool ---------------------------------------------------------------------------------------

    def wake(self) -> None:
        self._wake.set()

    async def run_drain(self, stopping: asyncio.Event, interval_s: float) -> None:
        """Write back what the spool holds whenever the store and the database answer, until stopping."""
        while not stopping.is_set():
            try:
                await self.drain_once()
            except SpoolError:
                log.exception("spool: drain failed; retrying")
            self._wake.clear()
            waiters = {asyncio.ensure_future(stopping.wait()), asyncio.ensure_future(self._wake.wait())}
            try:
                await asyncio.wait(waiters, timeout=interval_s, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
                await asyncio.gather(*waiters, return_exceptions=True)

    async def drain_once(self) -> None:
        if self._spool.empty:
            return
        for name, key in await asyncio.to_thread(self._spool.inits):
            if not self._s3.available():
                break
            data = await asyncio.to_thread(self._spool.read_init, name)
            try:
                async with asyncio.timeout(self._upload_timeout_s):
                    await self._put(key, data, "video/mp4")
            except (StorageError, TimeoutError) as exc:
                await self._failed(self._s3, "s3", f"upload of {key}: {exc or type(exc).__name__}")
                break
            await self._succeeded(self._s3, "s3")
            self._inits.add(key)
            await asyncio.to_thread(self._spool.remove_init, name)
        for item in await asyncio.to_thread(self._spool.segments):
            needs = self._db if item.uploaded else self._s3
            if needs.available():
                await self._drain_segment(item)
        for gap in await asyncio.to_thread(self._spool.gaps):
            if not self._db.available():
                break
            try:
                await self._index.insert_gap(gap.row)
            except IndexUnavailable as exc:
                await self._failed(self._db, "postgres", str(exc))
                break
            except IndexRejected as exc:
                log.error("index refused a spooled gap of %s: %s (dropped)", gap.row.camera, exc)  # noqa: TRY400
            else:
                await self._succeeded(self._db, "postgres")
                self._metrics.gaps.labels(gap.row.cause).inc()
                await self._announce_gap(gap.row)
            await asyncio.to_thread(self._spool.remove_gap, gap)
        self._update_spool_metrics()

    async def _drain_segment(self, item: SpooledSegment) -> None:
        row = item.row
        if not item.uploaded:
            if self._db.available():
                try:
                    stored = await self._index.stored_frames(row)
                except IndexUnavailable:
                    stored = None
                if stored is not None and stored >= row.frames:
                    log.info("spool: %s is already stored and indexed: dropping the spooled copy", row.object_key)
                    await asyncio.to_thread(self._spool.remove_segment, item)
                    return
            media = await asyncio.to_thread(self._spool.read_media, item)
            if not await self._upload(row, media, self._init_bytes.get(row.init_key)):
                return
            await asyncio.to_thread(self._spool.mark_uploaded, item)
        if not self._db.available():
            return
        try:
            await self._index.insert_segment(row)
        except IndexUnavailable as exc:
            await self._failed(self._db, "postgres", str(exc))
            return
        except IndexRejected as exc:
            log.error("index refused spooled segment %s: %s (the object stays in S3)", row.object_key, exc)  # noqa: TRY400
        else:
            await self._succeeded(self._db, "postgres")
            self._indexed(row)
            await self._announce_segment(row)
            log.info("spool: %s written back", row.object_key, extra={"camera": row.camera})
        await asyncio.to_thread(self._spool.remove_segment, item)

    def _update_spool_metrics(self) -> None:
        state = self._spool.state()
        self._metrics.spool_bytes.set(state.used_bytes)
        self._metrics.spool_items.labels("segment").set(state.segments)
        self._metrics.spool_items.labels("row").set(state.rows)
        self._metrics.spool_items.labels("gap").set(state.gaps)
        self._metrics.spool_items.labels("init").set(state.inits)

    # --- outages --------------------------------------------------------------------------------------------------

    async def _failed(self, dep: _Dependency, label: str, error: str) -> None:
        if dep.failed(error):
            self._metrics.dependency_up.labels(label).set(0)
            log.error("%s unavailable: %s; spooling locally until it answers", dep.name, error)
            await self._service_event(
                f"{label}_unavailable",
                "error",
                f"recorder cannot reach the {dep.name}: spooling locally ({error})",
            )
        else:
            log.debug("%s still unavailable: %s", dep.name, error)

    async def _succeeded(self, dep: _Dependency, label: str) -> None:
        outage = dep.succeeded()
        if outage is None:
            return
        self._metrics.dependency_up.labels(label).set(1)
        log.warning("%s reachable again after %.1f s: writing back the spool", dep.name, outage)
        self._wake.set()
        await self._service_event(
            f"{label}_recovered", "info", f"recorder reaches the {dep.name} again after {outage:.0f} s"
        )

    # --- bus ------------------------------------------------------------------------------------------------------

    async def _announce_segment(self, row: SegmentRow) -> None:
        message = m.SegmentRecorded(
            camera=row.camera,
            stream=row.stream,  # type: ignore[arg-type]
            start_ns=row.start_ns,
            end_ns=row.end_ns,
            object_key=row.object_key,
            bytes=row.bytes,
            sha256=row.sha256,
            frames=row.frames,
            keyframes=row.keyframes,
            codec=row.codec,  # type: ignore[arg-type]
            width=row.width,
            height=row.height,
            time_trusted=row.time_trusted,
        )
        await self._persist(s.SEGMENT_RECORDED, message, f"segment:{row.object_key}", camera=row.camera)

    async def _announce_gap(self, row: GapRow) -> None:
        cause = row.cause if row.cause in _CAUSES else "unknown"
        message = m.RecordingGap(
            camera=row.camera,
            stream=row.stream,  # type: ignore[arg-type]
            start_ns=row.start_ns,
            end_ns=row.end_ns,
            cause=cause,  # type: ignore[arg-type]
            detail=row.detail,
        )
        msg_id = f"gap:{row.camera}:{row.stream}:{row.start_ns}:{row.cause}"
        await self._persist(s.RECORDING_GAP, message, msg_id, camera=row.camera)

    async def _service_event(
        self, kind: str, level: str, message: str, *, camera: str = "", details: dict[str, str] | None = None
    ) -> None:
        event = m.ServiceEvent(
            service=SERVICE,
            pod=self._pod,
            kind=kind,
            level=level,  # type: ignore[arg-type]
            message=message,
            at_ns=time.time_ns(),
            camera=camera,
            details=details or {},
        )
        await self._persist(s.SERVICE_EVENT, event, None, service=SERVICE, kind=kind)

    async def _persist(self, subject: s.Subject[Any], message: Any, msg_id: str | None, **tokens: str) -> None:
        try:
            await self._bus.persist(subject, message, msg_id=msg_id, ack_timeout_s=_EVENT_TIMEOUT_S, **tokens)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - an event lost is logged; the index is the record
            log.warning("could not publish %s: %s", subject.template, exc)
