"""Fixtures of the retention tests: a migrated database, a recordings bucket, the bus and an audit emitter."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from argus_core.audit.emitter import AuditEmitter
from argus_core.bus import Bus, topology
from argus_core.db import DatabaseConfig, create_pool, migrate
from argus_core.storage import ObjectStore, S3Config
from argus_devstack.backends import S3Handle
from argus_devstack.pytest_plugin import bucket_name_for
from argus_devstack.s3 import S3Target
from argus_retention.objects import RecordingObjects
from tests.retention.support import Clock


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(DatabaseConfig(url=database_url, pool_min=1, pool_max=8))
    await migrate(pool)
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def store_for(target: S3Target, **settings: object) -> ObjectStore:
    return ObjectStore(
        S3Config(
            endpoint=target.endpoint,
            access_key=target.access_key,
            secret_key=target.secret_key,
            region=target.region,
            secure=target.secure,
            recordings_bucket=target.bucket,
            **settings,  # type: ignore[arg-type]
        )
    )


@pytest.fixture
async def store(s3_bucket: S3Target) -> AsyncIterator[ObjectStore]:
    store = store_for(s3_bucket, workers=16)
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
def bucket(s3_bucket: S3Target) -> str:
    return s3_bucket.bucket


@pytest.fixture
async def objects(store: ObjectStore, bucket: str) -> RecordingObjects:
    return await RecordingObjects.open(store, bucket)


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[Bus]:
    bus = await Bus.connect(nats_url, name="retention-test")
    try:
        await bus.ensure(topology())
        yield bus
    finally:
        await bus.drain()


@pytest.fixture
def emitter(bus: Bus) -> AuditEmitter:
    return AuditEmitter(bus, "retention")


@pytest.fixture
async def locked(s3_server: S3Handle, request: pytest.FixtureRequest) -> AsyncIterator[ObjectStore]:
    """A store whose recordings bucket was made with object lock (so versioned, and legal holds work).
    Its objects stay with the server when the test ends (a locked object cannot be removed)."""
    bucket = bucket_name_for(request.node.nodeid)
    store = store_for(s3_server.target(bucket), workers=16, recordings_object_lock=True)
    try:
        await store.ensure_buckets()
        yield store
    finally:
        await store.close()
