"""The consumer between the AUDIT stream and the chain, in process: once each, acked after commit, nothing dropped."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest

from argus_audit.appender import ChainAppender
from argus_audit.consumer import AuditConsumer
from argus_core.audit.emitter import AuditEmitter
from argus_core.audit.verify import verify_log
from argus_core.bus import Bus, encode, topology
from argus_core.bus import subjects as s
from argus_core.bus.jetstream import AUDIT_CONSUMER, AUDIT_STREAM
from argus_core.db import DatabaseConfig, create_pool, migrate
from argus_devstack.pytest_plugin import PostgresFactory
from tests.audit.support import events


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[Bus]:
    bus = await Bus.connect(nats_url, name="consumer-test")
    try:
        await bus.ensure(topology())
        yield bus
    finally:
        await bus.drain()


@contextlib.asynccontextmanager
async def consuming(bus: Bus, pool: asyncpg.Pool, batch: int = 100) -> AsyncIterator[AuditConsumer]:
    stopping = asyncio.Event()
    subscription = await bus.js.pull_subscribe_bind(durable=AUDIT_CONSUMER, stream=AUDIT_STREAM)
    consumer = AuditConsumer(subscription, ChainAppender(pool), stopping, batch=batch, fetch_wait_s=0.2)
    task = asyncio.create_task(consumer.run())
    try:
        yield consumer
    finally:
        stopping.set()
        await asyncio.wait_for(task, 10)


async def until(check: Callable[[], Awaitable[bool]], within_s: float = 20.0) -> None:
    deadline = time.monotonic() + within_s
    while not await check():
        if time.monotonic() > deadline:
            pytest.fail("condition not met in time")
        await asyncio.sleep(0.05)


async def count(pool: asyncpg.Pool) -> int:
    value: int = await pool.fetchval("SELECT count(*) FROM audit_log")
    return value


async def test_events_are_appended_and_acked_after_commit(bus: Bus, pool: asyncpg.Pool) -> None:
    emitter = AuditEmitter(bus, "api")
    sent = [await emitter.emit("live.view.start", actor="api", camera=f"cam-{i}") for i in range(250)]
    async with consuming(bus, pool, batch=40):
        await until(lambda: _equals(count(pool), 250))
        await until(lambda: _acked(bus))
    ids = [r["event_id"] for r in await pool.fetch("SELECT event_id FROM audit_log ORDER BY seq")]
    assert ids == [e.id for e in sent]  # one consumer: the stream's order
    assert (await verify_log(pool)).ok


async def _equals(value: Awaitable[int], expected: int) -> bool:
    return await value == expected


async def _acked(bus: Bus) -> bool:
    info = await bus.js.consumer_info(AUDIT_STREAM, AUDIT_CONSUMER)
    return bool(info.num_ack_pending == 0 and info.num_pending == 0)


async def test_a_duplicated_delivery_is_stored_once(bus: Bus, pool: asyncpg.Pool) -> None:
    event = events(1)[0]
    data = encode(s.AUDIT, event)
    subject = s.AUDIT.format(service="liveview")
    # Published twice under different message ids, so JetStream's own de-duplication does not catch it.
    await bus.js.publish(subject, data, headers={"Nats-Msg-Id": "first"})
    await bus.js.publish(subject, data, headers={"Nats-Msg-Id": "second"})
    async with consuming(bus, pool, batch=1):
        await until(lambda: _acked(bus))
        await bus.js.publish(subject, data, headers={"Nats-Msg-Id": "third"})  # and again, later
        await until(lambda: _acked(bus))
    assert await count(pool) == 1
    assert await pool.fetchval("SELECT event_id FROM audit_log") == event.id


async def test_a_message_that_is_not_an_event_is_kept_as_malformed(bus: Bus, pool: asyncpg.Pool) -> None:
    subject = s.AUDIT.format(service="ptz")
    await bus.js.publish(subject, b'{"not": "an event"}', headers={"Nats-Msg-Id": "m1"})
    await bus.js.publish(subject, b'{"not": "an event"}', headers={"Nats-Msg-Id": "m2"})
    async with consuming(bus, pool):
        await until(lambda: _acked(bus))
    row = await pool.fetchrow("SELECT action, body::jsonb -> 'details' ->> 'subject' AS subject FROM audit_log")
    assert row is not None
    assert (row["action"], row["subject"]) == ("audit.malformed", subject)
    assert await count(pool) == 1


@pytest.mark.slow
async def test_a_database_outage_is_ridden_out(bus: Bus, postgres_factory: PostgresFactory) -> None:
    server = postgres_factory()
    server.create_database("audit")
    pool = await create_pool(DatabaseConfig(url=server.dsn("audit"), command_timeout_s=5))
    try:
        await migrate(pool)
        emitter = AuditEmitter(bus, "recorder")
        async with consuming(bus, pool, batch=10):
            for i in range(20):
                await emitter.emit("recording.gap", actor="recorder", camera=f"cam-{i}")
            await until(lambda: _equals(count(pool), 20))
            await asyncio.to_thread(server.stop)
            for i in range(30):
                await emitter.emit("recording.gap", actor="recorder", camera=f"cam-{i}")
            await asyncio.sleep(1.5)  # the consumer is retrying; nothing is acked meanwhile
            info = await bus.js.consumer_info(AUDIT_STREAM, AUDIT_CONSUMER)
            assert info.num_ack_pending + info.num_pending == 30
            await asyncio.to_thread(server.start)
            await until(lambda: _equals(count(pool), 50), within_s=40)
            await until(lambda: _acked(bus))
        assert (await verify_log(pool)).ok
    finally:
        await pool.close()
