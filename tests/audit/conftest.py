"""Fixtures of the audit tests: a migrated database, a checkpoint key pair, an object-locked audit bucket."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from argus_audit.appender import ChainAppender
from argus_core.audit.checkpoints import CheckpointKeys, CheckpointSigner, CheckpointStore, generate_signing_key
from argus_core.db import DatabaseConfig, create_pool, migrate
from argus_core.storage import ObjectStore, S3Config
from argus_devstack.backends import S3Handle
from argus_devstack.pytest_plugin import bucket_name_for
from tests.audit.support import Clock


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(DatabaseConfig(url=database_url, pool_min=1, pool_max=4))
    await migrate(pool)
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def appender(pool: asyncpg.Pool, clock: Clock) -> ChainAppender:
    return ChainAppender(pool, clock=clock)


@pytest.fixture
def key_files(tmp_path: Path) -> tuple[Path, Path]:
    private, public = generate_signing_key()
    key = tmp_path / "audit-k1.key"
    pub = tmp_path / "audit-k1.pem"
    key.write_bytes(private)
    pub.write_bytes(public)
    return key, pub


@pytest.fixture
def signer(key_files: tuple[Path, Path]) -> CheckpointSigner:
    return CheckpointSigner.from_file(str(key_files[0]))


@pytest.fixture
def keys(key_files: tuple[Path, Path]) -> CheckpointKeys:
    return CheckpointKeys.from_files([str(key_files[1])])


@pytest.fixture
async def object_store(s3_server: S3Handle, request: pytest.FixtureRequest) -> AsyncIterator[ObjectStore]:
    """A store whose audit bucket is fresh and made with object lock (its objects stay with the server)."""
    bucket = bucket_name_for(request.node.nodeid)
    store = ObjectStore(
        S3Config(
            endpoint=s3_server.endpoint,
            access_key=s3_server.access_key,
            secret_key=s3_server.secret_key,
            region=s3_server.region,
            secure=s3_server.secure,
            audit_bucket=bucket,
        )
    )
    try:
        await store.ensure_bucket(bucket, object_lock=True)
        yield store
    finally:
        await store.close()


@pytest.fixture
def checkpoints(object_store: ObjectStore) -> CheckpointStore:
    return CheckpointStore(object_store, object_store.config.audit_bucket)
