"""Evidence hold reviews: a hold whose review date has passed raises a notice, once per review date.

The notice is a `ServiceEvent` (kind `hold_review_due`) persisted on the EVENTS stream, with the hold, its case
reference, owner and cameras; the gauge `argus_retention_holds_review_overdue` counts the holds overdue now; the api
lists them (`GET /api/v1/retention/holds?overdue=true`). Setting a new review date raises a new notice when that
one passes. The event is published before the hold is marked notified, so a crash between repeats it (its message
id de-duplicates a repeat within the stream's window).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import asyncpg

from argus_core.bus import Bus
from argus_core.bus import messages as m
from argus_core.bus import subjects as s
from argus_retention.metrics import RetentionMetrics
from argus_retention.times import Clock, iso, ns_of, system_clock, utc

log = logging.getLogger(__name__)

KIND = "hold_review_due"

_DUE = """
SELECT h.id, h.case_reference, h.owner, h.reason, h.review_at, h.start_time, h.end_time,
       array_agg(hc.camera ORDER BY hc.camera) AS cameras
FROM evidence_holds h JOIN evidence_hold_cameras hc ON hc.hold_id = h.id
WHERE h.released_at IS NULL AND h.review_at <= $1 AND h.review_notified_for IS DISTINCT FROM h.review_at
GROUP BY h.id
ORDER BY h.review_at
"""

_HELD = """
SELECT count(*) AS segments, coalesce(sum(bytes), 0)::bigint AS bytes FROM (
    SELECT DISTINCT s.camera, s.stream, s.start_time, s.object_key, s.bytes
    FROM retention_active_holds h
    JOIN segments s ON s.camera = h.camera AND s.start_time >= h.start_time - interval '10 minutes'
                   AND s.start_time < h.end_time AND s.end_time > h.start_time
) held
"""


@dataclass(frozen=True)
class ReviewCheck:
    notified: int
    overdue: int
    active: int


class HoldReviews:
    def __init__(
        self,
        pool: asyncpg.Pool,
        bus: Bus | None,
        *,
        service: str = "retention",
        pod: str = "",
        clock: Clock = system_clock,
        metrics: RetentionMetrics | None = None,
    ) -> None:
        self._pool = pool
        self._bus = bus
        self._service = service
        self._pod = pod
        self._clock = clock
        self._metrics = metrics

    async def check(self) -> ReviewCheck:
        now_ns = self._clock()
        now = utc(now_ns)
        notified = 0
        for hold in await self._pool.fetch(_DUE, now):
            cameras = list(hold["cameras"])
            event = m.ServiceEvent(
                service=self._service,
                pod=self._pod,
                kind=KIND,
                level="warning",
                message=(
                    f"evidence hold {hold['case_reference']} (owner {hold['owner']}) on {', '.join(cameras)} was due "
                    f"for review on {iso(hold['review_at'])}: extend it or release it"
                ),
                at_ns=now_ns,
                camera=cameras[0] if len(cameras) == 1 else "",
                details={
                    "hold": str(hold["id"]),
                    "case_reference": hold["case_reference"],
                    "owner": hold["owner"],
                    "review_at": iso(hold["review_at"]),
                    "cameras": ",".join(cameras),
                    "from": iso(hold["start_time"]),
                    "until": iso(hold["end_time"]),
                },
            )
            if self._bus is not None:
                await self._bus.persist(
                    s.SERVICE_EVENT,
                    event,
                    msg_id=f"hold-review-{hold['id']}-{ns_of(hold['review_at'])}",
                    service=self._service,
                    kind=KIND,
                )
            log.warning("%s", event.message, extra={"hold": str(hold["id"]), "case_reference": hold["case_reference"]})
            await self._pool.execute(
                "UPDATE evidence_holds SET review_notified_for = $2 WHERE id = $1", hold["id"], hold["review_at"]
            )
            notified += 1
        counts = await self._pool.fetchrow(
            "SELECT count(*) AS active, count(*) FILTER (WHERE review_at <= $1) AS overdue "
            "FROM evidence_holds WHERE released_at IS NULL",
            now,
        )
        assert counts is not None
        if self._metrics is not None:
            held = await self._pool.fetchrow(_HELD)
            assert held is not None
            self._metrics.review_notices.inc(notified)
            self._metrics.holds_review_overdue.set(counts["overdue"])
            self._metrics.holds_active.set(counts["active"])
            self._metrics.held_segments.set(held["segments"])
            self._metrics.held_bytes.set(held["bytes"])
        return ReviewCheck(notified, counts["overdue"], counts["active"])
