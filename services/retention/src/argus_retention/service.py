"""The retention service: deletes expired footage, never what an evidence hold covers.

Its jobs run on their own schedules, each in a task of its own, so a long sweep delays nothing else:

- sweep (`ARGUS_RETENTION_SWEEP_INTERVAL_S`): `Sweeper.sweep()`, then the storage-use figures of past days;
- legal holds (`..._LEGAL_HOLD_INTERVAL_S`), where the recordings bucket has object lock;
- hold reviews (`..._NOTICE_INTERVAL_S`): a notice for every hold whose review date passed;
- reconcile (`..._RECONCILE_INTERVAL_S`, 0: never): objects without rows and rows without objects.

Any number of pods may run: the sweep and reconcile take the retention lock in Postgres (the others skip that
round), and every step is safe to repeat. On SIGTERM readiness goes false and the sweep stops after the batch in
hand (recorded as `stopped`; the next sweep carries on).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from argus_core.audit.emitter import AuditEmitter
from argus_core.bus import Bus
from argus_core.bus import messages as m
from argus_core.bus import subjects as s
from argus_core.runtime import Runtime
from argus_retention.config import Config
from argus_retention.errors import LegalHoldUnavailable, SweepBusy
from argus_retention.legalholds import legal_holds_for
from argus_retention.metrics import RetentionMetrics
from argus_retention.notices import HoldReviews
from argus_retention.objects import RecordingObjects
from argus_retention.reconcile import Reconciler, ReconcileReport
from argus_retention.sweep import Sweeper
from argus_retention.times import Clock, system_clock
from argus_retention.usage import UsageCache

SERVICE = "retention"

log = logging.getLogger(__name__)


async def every(
    name: str, interval_s: float, job: Callable[[], Awaitable[object]], stopping: asyncio.Event, *, first_s: float = 0
) -> None:
    """Run `job` every `interval_s` until `stopping`; a failure is logged and the job runs again next time."""
    delay = first_s
    while not stopping.is_set():
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await stopping.wait()
        if stopping.is_set():
            return
        try:
            await job()
        except SweepBusy:
            log.debug("%s: another pod is running it", name)
        except Exception:
            log.exception("%s failed; it runs again in %.0f s", name, interval_s)
        delay = interval_s


def reconcile_notice(bus: Bus, pod: str, clock: Clock) -> Callable[[ReconcileReport], Awaitable[None]]:
    async def notify(report: ReconcileReport) -> None:
        event = m.ServiceEvent(
            service=SERVICE,
            pod=pod,
            kind="reconcile_orphans",
            level="warning",
            message=report.summary(),
            at_ns=clock(),
            details={
                "objects_without_rows": str(report.objects_without_rows.count),
                "rows_without_objects": str(report.rows_without_objects.count),
                "unreferenced_inits": str(report.unreferenced_inits.count),
                "missing_inits": str(report.missing_inits.count),
                "unknown_objects": str(report.unknown_objects.count),
                "held": str(report.held.count),
                "repaired_objects": str(report.repaired_objects),
                "repaired_rows": str(report.repaired_rows),
            },
        )
        await bus.persist(s.SERVICE_EVENT, event, service=SERVICE, kind="reconcile_orphans")

    return notify


async def run(config: Config, *, clock: Clock = system_clock) -> int:
    settings = config.retention
    async with Runtime(SERVICE, config) as rt:
        metrics = RetentionMetrics(rt.registry)
        bus = await rt.connect_bus()
        pool = await rt.open_db(config.db)
        store = await rt.open_store(config.s3)
        bucket = config.s3.recordings_bucket
        objects = await RecordingObjects.open(store, bucket)
        try:
            legal = await legal_holds_for(settings.legal_holds, pool, store, bucket, metrics=metrics)
        except LegalHoldUnavailable as exc:
            log.error("invalid configuration: %s", exc, extra={"variable": "ARGUS_RETENTION_LEGAL_HOLDS"})  # noqa: TRY400
            return 2
        emitter = AuditEmitter(bus, SERVICE)
        sweeper = Sweeper(
            pool,
            objects,
            clock=clock,
            emitter=emitter,
            pod=config.pod_name,
            batch=settings.batch,
            parallel=settings.parallel,
            drop_days=settings.drop_days,
            legal_holds=legal,
            metrics=metrics,
            stopping=rt.stopping,
        )
        usage = UsageCache(pool, clock=clock)
        reviews = HoldReviews(pool, bus, service=SERVICE, pod=config.pod_name, clock=clock, metrics=metrics)
        reconciler = Reconciler(
            pool,
            objects,
            emitter=emitter,
            grace_s=settings.reconcile_grace_s,
            metrics=metrics,
            notify=reconcile_notice(bus, config.pod_name, clock),
        )

        async def sweep() -> None:
            await sweeper.sweep()
            await usage.refresh()

        async def reconcile() -> None:
            await reconciler.run(repair=settings.reconcile_repair)

        async def main() -> None:
            stopping = rt.stopping
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(
                    every("sweep", settings.sweep_interval_s, sweep, stopping, first_s=settings.first_sweep_after_s),
                    name="retention.sweep",
                )
                tasks.create_task(
                    every("hold reviews", settings.notice_interval_s, reviews.check, stopping), name="retention.notices"
                )
                if legal is not None:
                    tasks.create_task(
                        every("legal holds", settings.legal_hold_interval_s, legal.sync, stopping),
                        name="retention.legal-holds",
                    )
                if settings.reconcile_interval_s > 0:
                    tasks.create_task(
                        every(
                            "reconcile",
                            settings.reconcile_interval_s,
                            reconcile,
                            stopping,
                            first_s=settings.reconcile_interval_s,
                        ),
                        name="retention.reconcile",
                    )

        rt.set_ready()
        return await rt.serve(main())
