"""The durable pull consumer `audit-store` on the AUDIT stream, feeding the chain in batches.

A batch is fetched (up to `batch` messages, waiting at most `fetch_wait_s` for the first), appended in one
transaction, and acknowledged only after the commit. A crash between commit and ack means a redelivery, which the
appender recognises by event id and stores nothing for. While Postgres is unreachable the same batch is retried with
backoff and its messages are kept in progress, so JetStream does not hand them to another pod meanwhile. On stop the
loop finishes the batch in hand; what was fetched but not committed is redelivered after the consumer's ack wait.

A message that is not an `AuditEvent` is not dropped: it is stored as an `audit.malformed` entry carrying its
subject and (up to 64 KiB of) its payload, with an id derived from its content so that a redelivery is stored once.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import time

import asyncpg
import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from argus_audit.appender import AppendResult, ChainAppender
from argus_audit.metrics import AuditMetrics
from argus_core.bus import DecodeError, decode
from argus_core.bus import messages as m
from argus_core.bus import subjects as s
from argus_core.bus.subjects import SubjectError

log = logging.getLogger(__name__)

MALFORMED_PAYLOAD_BYTES = 64 * 1024
PREFETCH = 2  # batches fetched and not yet stored, at most
_DB_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)


def malformed_event(subject: str, data: bytes, problem: str, at_ns: int) -> m.AuditEvent:
    """An entry recording a message that was not an audit event (so that nothing received is lost)."""
    try:
        service = s.AUDIT.parse(subject)["service"]
    except SubjectError:
        service = "unknown"
    return m.AuditEvent(
        id="malformed-" + hashlib.sha256(subject.encode() + b"\n" + data).hexdigest()[:40],
        at_ns=at_ns,
        service=service,
        actor=m.Actor(subject="unknown"),
        action="audit.malformed",
        outcome="failure",
        details={
            "subject": subject,
            "problem": problem[:1000],
            "payload_bytes": str(len(data)),
            "payload_b64": base64.b64encode(data[:MALFORMED_PAYLOAD_BYTES]).decode(),
        },
    )


class AuditConsumer:
    def __init__(
        self,
        subscription: JetStreamContext.PullSubscription,
        appender: ChainAppender,
        stopping: asyncio.Event,
        *,
        batch: int = 1000,
        fetch_wait_s: float = 1.0,
        metrics: AuditMetrics | None = None,
    ) -> None:
        self._sub = subscription
        self._appender = appender
        self._stopping = stopping
        self._batch = batch
        self._fetch_wait_s = fetch_wait_s
        self._metrics = metrics if metrics is not None else AuditMetrics()
        self.stored = 0

    async def run(self) -> None:
        """Fetch and store until stopping is set.

        Fetching and storing overlap: while one batch is being committed the next is fetched, so neither NATS nor
        Postgres waits for the other. At most two batches are fetched and not yet stored (`PREFETCH`), and they
        are stored in fetch order.
        """
        batches: asyncio.Queue[list[Msg] | None] = asyncio.Queue(maxsize=PREFETCH + 1)
        slots = asyncio.Semaphore(PREFETCH)
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._fetch(batches, slots), name="audit.fetch")
                tasks.create_task(self._store_all(batches, slots), name="audit.store")
        finally:
            with contextlib.suppress(nats.errors.Error):
                await self._sub.unsubscribe()

    async def _fetch(self, batches: asyncio.Queue[list[Msg] | None], slots: asyncio.Semaphore) -> None:
        while not self._stopping.is_set():
            await slots.acquire()  # given back once the batch is stored
            try:
                msgs = await self._sub.fetch(self._batch, timeout=self._fetch_wait_s)
            except TimeoutError:
                msgs = []
            except nats.errors.ConnectionClosedError:
                slots.release()
                if self._stopping.is_set():
                    break
                raise
            except nats.errors.Error as exc:
                log.warning("fetching audit events failed: %s", exc)
                msgs = []
                await self._pause(1.0)
            if msgs:
                batches.put_nowait(msgs)  # room: the queue holds more than the slots allow
            else:
                slots.release()
        batches.put_nowait(None)  # the storer finishes the batches in the queue, then ends

    async def _store_all(self, batches: asyncio.Queue[list[Msg] | None], slots: asyncio.Semaphore) -> None:
        while (msgs := await batches.get()) is not None:
            try:
                await self.store(msgs)
            finally:
                slots.release()

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    def _events(self, msgs: list[Msg]) -> list[m.AuditEvent]:
        events: list[m.AuditEvent] = []
        for msg in msgs:
            try:
                events.append(decode(s.AUDIT, msg.data, msg.subject))
            except DecodeError as exc:
                log.warning("not an audit event on %s: %s; stored as audit.malformed", msg.subject, exc.problem)
                self._metrics.malformed.inc()
                events.append(malformed_event(msg.subject, msg.data, exc.problem, time.time_ns()))
        return events

    async def store(self, msgs: list[Msg]) -> AppendResult | None:
        """Append the batch (retrying while the database is away), then acknowledge it; None if stopped first."""
        events = self._events(msgs)
        delay = 0.2
        while True:
            try:
                result = await self._appender.append(events)
                break
            except _DB_ERRORS as exc:
                log.error(  # noqa: TRY400 - an outage, not a bug: no traceback
                    "appending %d audit events failed (%s: %s); retrying in %.1f s",
                    len(events),
                    type(exc).__name__,
                    exc,
                    delay,
                )
                if self._stopping.is_set():
                    return None  # not acknowledged: redelivered to whoever consumes next
                for msg in msgs:
                    with contextlib.suppress(nats.errors.Error):
                        await msg.in_progress()
                await self._pause(delay)
                delay = min(delay * 2, 5.0)
        for msg in msgs:
            try:
                await msg.ack()
            except nats.errors.Error as exc:  # redelivered later, and then recognised as stored
                log.warning("ack failed after commit: %s", exc)
        self.stored += result.appended
        return result
