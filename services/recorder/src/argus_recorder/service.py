"""The recorder service: camera media from the bus into GOP-aligned fMP4 segments in S3, indexed in Postgres.

`run(config)` wires the parts: the pod (leases and camera workers), the sink (S3, index, spool) and its drainer,
and the camera status subscription that names the cause of gaps. It needs NATS and Postgres to start; S3 may be
down (segments wait in the spool).
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date, timedelta
from pathlib import Path

import nats.errors
from nats.js.errors import APIError
from nats.js.kv import KeyValue

from argus_core.bus import messages as m
from argus_core.bus import subjects as s
from argus_core.bus.jetstream import CAMERA_STATUS_BUCKET, RECORDER_LEASES_BUCKET
from argus_core.runtime import Runtime, Stage
from argus_recorder.camera import WorkerContext
from argus_recorder.config import Config
from argus_recorder.index import Index, IndexUnavailable
from argus_recorder.keys import utc
from argus_recorder.leases import Leases
from argus_recorder.metrics import Metrics
from argus_recorder.pod import RecorderPod
from argus_recorder.sink import SERVICE, Sink
from argus_recorder.spool import Spool
from argus_recorder.status import StatusBook

log = logging.getLogger(__name__)

__all__ = ["SERVICE", "run"]

SETTLE_AFTER_NS = 30 * 60 * 1_000_000_000  # late segments of a day (a backlog, a spool) arrive in its first half hour


async def run(config: Config) -> int:
    settings = config.recorder
    if config.log_level != "debug":
        # One line of ours says the store is down; urllib3 would add one per retry of every request.
        logging.getLogger("urllib3").setLevel(logging.ERROR)
    async with Runtime(SERVICE, config) as rt:
        bus = await rt.connect_bus()
        pool = await rt.open_db(config.db)
        store = await rt.open_store(config.s3, bootstrap=False)
        metrics = Metrics(rt.registry)
        index = Index(pool, timeout_s=settings.db_timeout_s, lookback_s=config.media_max_age_s + 86_400)
        spool = Spool(Path(settings.spool_dir), settings.spool_max_bytes)
        sink = Sink(
            store=store,
            bucket=config.s3.recordings_bucket,
            index=index,
            spool=spool,
            bus=bus,
            metrics=metrics,
            pod=config.pod_name,
            upload_timeout_s=settings.upload_timeout_s,
            retry_s=settings.drain_interval_s,
        )
        statuses = StatusBook()

        async def on_status(status: m.CameraStatus, subject: str) -> None:
            statuses.add(status)

        await bus.subscribe(s.CAMERA_STATUS, on_status)  # drained with the connection
        status_kv: KeyValue | None = None
        try:
            status_kv = await bus.js.key_value(CAMERA_STATUS_BUCKET)
        except (nats.errors.Error, APIError) as exc:
            log.warning("camera-status bucket unavailable: %s", exc)
        mux_pool = ThreadPoolExecutor(max_workers=settings.mux_threads, thread_name_prefix="mux")

        async def close_mux_pool() -> None:
            await asyncio.to_thread(mux_pool.shutdown, wait=True)

        rt.on_stop(Stage.CLOSE, "mux threads", close_mux_pool)
        ctx = WorkerContext(
            js=bus.js,
            nc=bus.nc,
            sink=sink,
            index=index,
            statuses=statuses,
            status_kv=status_kv,
            mux_pool=mux_pool,
            metrics=metrics,
            settings=settings,
        )
        leases = Leases(bus.js, RECORDER_LEASES_BUCKET, config.pod_name, settings.stream, config.lease_ttl_s)
        pod = RecorderPod(
            ctx=ctx,
            leases=leases,
            index=index,
            metrics=metrics,
            static_cameras=settings.cameras,
            registry_refresh_s=settings.registry_refresh_s,
            stopping=rt.stopping,
            on_ready=rt.set_ready,
        )
        if not settings.cameras:

            async def on_change(change: m.CameraChanged, subject: str) -> None:
                pod.register_changed()

            await bus.subscribe(s.CAMERA_CHANGED, on_change)

        async def main() -> None:
            await sink.start()
            async with asyncio.TaskGroup() as tg:
                tg.create_task(sink.run_drain(rt.stopping, settings.drain_interval_s), name="recorder.drain")
                tg.create_task(_partitions(index, rt.stopping), name="recorder.partitions")
                await pod.run()

        return await rt.serve(main())


async def _partitions(index: Index, stopping: asyncio.Event) -> None:
    """Make today's and tomorrow's partitions ahead of the rows, and freeze yesterday's once it is over; hourly."""
    settled: set[date] = set()
    while not stopping.is_set():
        now_ns = time.time_ns()
        try:
            await index.ensure_around(now_ns)
            yesterday = utc(now_ns - SETTLE_AFTER_NS).date() - timedelta(days=1)
            if yesterday not in settled:
                await index.settle_day(yesterday)
                settled.add(yesterday)
        except IndexUnavailable as exc:
            log.warning("day partitions not prepared: %s", exc)
        try:
            async with asyncio.timeout(3600):
                await stopping.wait()
        except TimeoutError:
            continue
